//! rctr-checkpoint
