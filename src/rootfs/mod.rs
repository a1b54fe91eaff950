//! rootfs layer.
