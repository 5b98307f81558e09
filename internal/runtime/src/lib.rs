//! rctr-runtime
