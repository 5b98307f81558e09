//! rctr-sif
