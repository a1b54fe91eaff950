//! output layer.
