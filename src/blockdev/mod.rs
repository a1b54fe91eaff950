//! blockdev layer.
