//! rctr-state
