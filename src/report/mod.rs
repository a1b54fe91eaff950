//! The build report: one self-contained HTML file beside the outputs (also
//! for a failed build) with a timeline of the hooks, the disk to scale, what
//! is in the image and what went into it.

pub mod model;
pub mod render;
#[doc(hidden)]
pub mod sample;

pub use model::*;
pub use render::render;
#[doc(hidden)]
pub use sample::sample;
