//! The build report: one self-contained HTML file beside the outputs (also
//! for a failed build) with a timeline of the hooks, the disk to scale, what
//! is in the image and what went into it.

pub mod model;

pub use model::*;
