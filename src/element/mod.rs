//! element layer.
