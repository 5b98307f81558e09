//! rctr-image
