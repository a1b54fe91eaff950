//! blockdev layer.
pub mod yaml;
