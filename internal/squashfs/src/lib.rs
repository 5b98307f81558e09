//! rctr-squashfs
