//! hooks layer.
