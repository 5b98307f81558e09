//! End-to-end test helpers: locate the built binary, build test images, skip without root.
