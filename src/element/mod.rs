//! The element engine: discovery on ELEMENTS_PATH, dependency resolution,
//! merged hooks, environment.d capture, package-installs and pkg-map.
//!
//! Everything here is pure with respect to the build: it reads element
//! directories and (for environment.d) runs bash in a subprocess, nothing else.

pub mod discovery;
pub mod envd;
pub mod error;
pub mod hooks;
pub mod package_installs;
pub mod pkgmap;
pub mod resolve;

pub use discovery::{Element, ElementSet, discover, search_path};
pub use error::ElementError;
pub use hooks::{collect_environment, collect_hooks, sort_n_cmp};
pub use resolve::{Request, block_device_layouts, expand_dependencies, initial_elements, resolve};
