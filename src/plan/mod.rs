//! The resolved, serialisable build plan: everything decided before any side
//! effect. `--dry-run` prints it; the executor consumes it.
//!
//! [`build`] runs the element engine over the command line and the caller's
//! environment: discovery, resolution, hooks, environment.d (sourced by bash in
//! a temporary directory), package-installs and the outputs.

mod env;
mod outputs;
mod render;

pub use env::{hook_env, search_dirs};
pub use outputs::outputs;
pub use render::render_text;

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::Cli;
use crate::element::package_installs;
use crate::element::{self, ElementError, envd};

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
    /// The block-device nodes in creation order and the image size, when a
    /// disk output is asked for (filled by the build layer, which owns the
    /// block-device config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_device: Option<serde_json::Value>,
}

/// The packages key holding the `-p` packages (installed after install.d).
pub const EXTRA_PACKAGES: &str = "extra";

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Element(#[from] ElementError),
    #[error("no output type given: -t needs at least one of qcow2, raw, tar, ...")]
    NoOutputTypes,
    #[error("creating a temporary directory for sourcing environment.d: {0}")]
    TempDir(#[source] std::io::Error),
}

impl PlanError {
    /// Bad input (exit code 2), as opposed to a host problem.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, PlanError::TempDir(_))
    }
}

/// Makes the plan for `cli`, reading the caller's environment.
pub fn build(cli: &Cli) -> Result<Plan, PlanError> {
    let caller: BTreeMap<String, String> = std::env::vars().collect();
    build_with_env(cli, &caller)
}

/// Makes the plan for `cli` with `caller` as the caller's environment.
pub fn build_with_env(cli: &Cli, caller: &BTreeMap<String, String>) -> Result<Plan, PlanError> {
    let arch = target_arch(cli);
    let dirs = search_dirs(caller);
    let set = element::discover(&dirs)?;
    let block_device_config_set = !cli.clear_env
        && caller
            .get("DIB_BLOCK_DEVICE_CONFIG")
            .is_some_and(|v| !v.is_empty());
    let elements = element::resolve(
        &set,
        &element::Request {
            user: &cli.elements,
            no_base: cli.no_base,
            arch: &arch,
            block_device_config_set,
        },
    )?;
    let element_list: Vec<(String, PathBuf)> = elements
        .iter()
        .filter_map(|n| set.get(n).map(|e| (n.clone(), e.path.clone())))
        .collect();
    let hooks = element::collect_hooks(&element_list)?;
    let environment = element::collect_environment(&element_list)?;
    let hook_env = hook_env(cli, caller, &arch, &element_list, &dirs);
    let resolved_env = source_on_host(&environment, &hook_env)?;
    let packages = packages(cli, &element_list, &resolved_env, &arch)?;
    let outputs = outputs(cli);
    if outputs.is_empty() {
        return Err(PlanError::NoOutputTypes);
    }
    Ok(Plan {
        element_paths: element_list.into_iter().collect(),
        elements,
        hooks,
        environment,
        packages,
        outputs,
        arch,
        image_name: cli.output.clone(),
        hook_env,
        resolved_env,
        block_device: None,
    })
}

/// `-a` (or ARCH), else the host's, in dpkg naming.
pub fn target_arch(cli: &Cli) -> String {
    let arch = cli
        .arch
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or(crate::cli::host_arch());
    crate::cli::dpkg_arch(arch).to_owned()
}

/// Sources environment.d in a throw-away directory, so nothing else is written.
fn source_on_host(
    files: &[PathBuf],
    base: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, PlanError> {
    let dir = tempfile::tempdir().map_err(PlanError::TempDir)?;
    Ok(envd::source_environment(files, base, dir.path())?)
}

/// package-installs per phase, plus the `-p` packages under [`EXTRA_PACKAGES`].
fn packages(
    cli: &Cli,
    elements: &[(String, PathBuf)],
    env: &BTreeMap<String, String>,
    arch: &str,
) -> Result<BTreeMap<String, PhasePackages>, PlanError> {
    let ctx = package_installs::Context { env, arch };
    let mut out: BTreeMap<String, PhasePackages> = package_installs::compute(elements, &ctx)?
        .into_iter()
        .map(|(phase, l)| {
            let p = PhasePackages {
                install: l.install,
                uninstall: l.uninstall,
            };
            (phase, p)
        })
        .collect();
    debug_assert!(crate::phase::package_phases().all(|p| out.contains_key(p)));
    let mut extra = PhasePackages::default();
    for p in cli.extra_packages() {
        if !extra.install.contains(&p) {
            extra.install.push(p);
        }
    }
    out.insert(EXTRA_PACKAGES.to_owned(), extra);
    Ok(out)
}
