//! The resolved, serialisable build plan: everything decided before any side
//! effect. `--dry-run` prints it; the executor consumes it.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Packages a phase installs and removes (already pkg-mapped).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PhasePackages {
    pub install: Vec<String>,
    pub uninstall: Vec<String>,
}

/// One output file to produce.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OutputSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: PathBuf,
}

/// The whole plan. Key names are a public contract (tests and later stages rely on them).
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Resolved element names, dependencies first.
    pub elements: Vec<String>,
    /// Element name → its directory.
    pub element_paths: BTreeMap<String, PathBuf>,
    /// Phase directory name ("install.d") → ordered hook script paths.
    pub hooks: BTreeMap<String, Vec<PathBuf>>,
    /// environment.d files in sourcing order.
    pub environment: Vec<PathBuf>,
    /// Phase directory name → packages installed and removed at that phase.
    pub packages: BTreeMap<String, PhasePackages>,
    /// Files to produce.
    pub outputs: Vec<OutputSpec>,
    /// Target architecture (dpkg naming).
    pub arch: String,
    /// Image name (`-o`).
    pub image_name: String,
    /// The environment every hook starts from (DIB_*, ARCH, IMAGE_ELEMENT, ...),
    /// before environment.d is sourced.
    pub hook_env: BTreeMap<String, String>,
    /// Environment after sourcing environment.d on the host (what `when:` saw).
    pub resolved_env: BTreeMap<String, String>,
}
