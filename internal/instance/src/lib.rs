//! rctr-instance
