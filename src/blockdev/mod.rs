//! blockdev layer.
pub mod fill;
