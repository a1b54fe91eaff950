//! cache layer.
