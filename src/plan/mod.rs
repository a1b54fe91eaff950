//! The resolved, serialisable build plan: every decision, made before any
//! side effect. `--dry-run` prints it; the executor carries it out and reads
//! nothing else (no command line, no environment).
//!
//! [`build`] runs the element engine over the command line and the caller's
//! environment: discovery, resolution, hooks, environment.d (sourced by bash in
//! a temporary directory), package-installs, the outputs, the disk, the
//! lockfile and dib-create's own settings, and checks every value a build
//! would refuse.

mod boot;
mod disk;
#[cfg(test)]
pub(crate) use disk::check_buildable;
mod env;
mod ostree;
mod outputs;
mod release;
mod render;
mod settings;
mod upstream;
pub mod validate;

pub use boot::BootPlan;
pub use disk::{DiskError, DiskPlan};
pub use env::{PROXY_ENV, element_info_script, hook_env, search_dirs};
pub use ostree::{DeployPlan, GpgSign, OstreeArgs, OstreePlan, Parent, REMOTE, is_repository};
pub use outputs::{KINDS, OutputError, OutputKind, Source, kind_at, outputs, wants_disk};
pub use render::render_text;
pub use settings::{EpochFrom, FinaliseOn, PhaseCacheSettings, Settings};

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli::Cli;
use crate::element::package_installs;
use crate::element::{self, ElementError, envd};
use crate::error::UsageError;

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
    pub kind: OutputKind,
    pub path: PathBuf,
}

/// How the outputs are written.
#[derive(Clone, Debug, Serialize)]
pub struct OutputOptions {
    /// qcow2 is compressed unless `-u`.
    pub compress_qcow2: bool,
    /// `--qemu-img-options`.
    pub qemu_img_options: Option<String>,
    /// Repository and tag of docker and OCI outputs (DIB's default: the
    /// image's name).
    pub docker_target: String,
    /// The ostree commit (`-t ostree`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ostree: Option<OstreePlan>,
}

/// The whole plan. Key names are a public contract (tests and later stages rely on them).
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Resolved element names, dependencies first.
    pub elements: Vec<String>,
    /// Element name → its directory.
    pub element_paths: BTreeMap<String, PathBuf>,
    /// The elements named on the command line (the rest are dependencies).
    pub requested_elements: Vec<String>,
    /// Element name → directories holding an element of that name which the
    /// chosen one shadows (later on ELEMENTS_PATH).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub element_overrides: BTreeMap<String, Vec<PathBuf>>,
    /// Where the build report goes (`--report`, default beside the outputs);
    /// none with `--no-report`.
    pub report: Option<PathBuf>,
    /// Phase directory name ("install.d") → ordered hook script paths.
    pub hooks: BTreeMap<String, Vec<PathBuf>>,
    /// environment.d files in sourcing order.
    pub environment: Vec<PathBuf>,
    /// Phase directory name → packages installed and removed at that phase.
    pub packages: BTreeMap<String, PhasePackages>,
    /// Files to produce.
    pub outputs: Vec<OutputSpec>,
    /// False when the `no-final-image` element is chosen: every phase runs
    /// (the disk too, for hooks that read it), but no image file is written;
    /// what the hooks themselves write beside it (kernel, initrd) is the result.
    pub final_image: bool,
    pub output_options: OutputOptions,
    /// Target architecture (dpkg naming).
    pub arch: String,
    /// The qemu-user emulator (`qemu-<name>`) the target's programs run
    /// through on this host; None when its kernel runs them itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emulator: Option<&'static str>,
    /// Image name (`-o`).
    pub image_name: String,
    /// The environment every hook starts from (DIB_*, ARCH, IMAGE_ELEMENT, ...),
    /// before environment.d is sourced.
    pub hook_env: BTreeMap<String, String>,
    /// Environment after sourcing environment.d on the host (what `when:` saw).
    pub resolved_env: BTreeMap<String, String>,
    /// The block-device nodes in creation order and the image size, when a
    /// disk output is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_device: Option<DiskPlan>,
    /// The boot test that follows the build (`--boot-test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootPlan>,
    /// Lockfile recording or enforcement.
    #[serde(serialize_with = "serialize_lock")]
    pub lock: crate::lock::Request,
    /// dib-create's own settings.
    pub settings: Settings,
    /// Hook variables that differ from build to build without changing what
    /// is built (host paths): left out of the phase cache's keys and of the
    /// image's record of its settings when the build is reproducible.
    pub per_build: Vec<String>,
}

fn serialize_lock<S: serde::Serializer>(r: &crate::lock::Request, s: S) -> Result<S::Ok, S::Error> {
    r.describe().serialize(s)
}

impl Plan {
    /// The image name's last component (the output's file name without extension).
    pub fn short_name(&self) -> String {
        Path::new(&self.image_name).file_name().map_or_else(
            || self.image_name.clone(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// The outputs the build writes: none under `no-final-image`.
    pub fn written_outputs(&self) -> impl Iterator<Item = &OutputSpec> {
        self.outputs.iter().filter(|_| self.final_image)
    }

    /// The block-device config, when the build makes a disk.
    pub fn disk(&self) -> Option<&DiskPlan> {
        self.block_device.as_ref()
    }
}

/// The element that asks for no image file (DIB checks IMAGE_ELEMENT for it).
pub const NO_FINAL_IMAGE: &str = "no-final-image";

/// The element that deploys the ostree commit into the disk image.
pub const OSTREE_DEPLOY: &str = "ostree-deploy";

/// The packages key holding the `-p` packages (installed after install.d).
pub const EXTRA_PACKAGES: &str = "extra";

/// Hook variables that name per-build host paths.
pub const PER_BUILD: &[&str] = &["DIB_IMAGE_CACHE", "DIB_LOCKFILES", "DIB_MANIFEST_SAVE_DIR"];

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Element(#[from] ElementError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Arch(#[from] crate::arch::UnknownArch),
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
    let arch = target_arch(cli)?;
    validate::output_name(&cli.output)?;
    if let Some(f) = &cli.logfile {
        validate::log_file(f)?;
    }
    let report = report_path(cli);
    if let Some(f) = &report {
        validate::report_file(f)?;
    }
    for p in cli.extra_packages() {
        validate::package_name(&p)?;
    }
    let mut outputs = outputs(&cli.output, &cli.output_types())?;
    let lock = crate::lock::Request::read(
        cli.lock.as_deref(),
        cli.lock_update.as_deref(),
        cli.lockfile.as_deref(),
        &arch,
    )?;
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
    upstream::check(
        &element_list,
        &set.overridden,
        &crate::paths::elements_dir(),
    )?;
    let hooks = element::collect_hooks(&element_list)?;
    let environment = element::collect_environment(&element_list)?;
    let mut hook_env = hook_env(cli, caller, &arch, &element_list, &dirs);
    let image_cache = PathBuf::from(&hook_env["DIB_IMAGE_CACHE"]);
    let settings = Settings::read(cli, caller, image_cache, &lock)?;
    if let (Some(t), Some(EpochFrom::Lockfile)) = (settings.source_date_epoch, settings.epoch_from)
    {
        // The tools hooks run read it too (mmdebstrap, mkinitramfs).
        hook_env.insert("SOURCE_DATE_EPOCH".into(), t.to_string());
    }
    hook_env.insert("DIB_CREATE_PER_BUILD".into(), PER_BUILD.join(" "));
    let resolved_env = source_on_host(&environment, &hook_env)?;
    release::check(&resolved_env, cli.offline)?;
    release::check_arch(&resolved_env, &arch)?;
    let packages = packages(cli, &element_list, &resolved_env, &arch)?;
    if elements.iter().any(|e| e == OSTREE_DEPLOY) {
        check_deployable(&outputs, &settings)?;
        if !outputs.iter().any(|o| o.kind == OutputKind::Ostree) {
            // The deployed commit is kept where updates are served from.
            outputs.push(OutputSpec {
                kind: OutputKind::Ostree,
                path: PathBuf::from(format!("{}.{}", cli.output, OutputKind::Ostree.extension())),
            });
        }
    }
    let block_device = if wants_disk(&outputs) {
        Some(disk::plan(&disk::DiskInputs {
            cli,
            hook_env: &hook_env,
            resolved_env: &resolved_env,
            elements: &element_list,
            arch: &arch,
        })?)
    } else {
        None
    };
    if let Some(d) = &block_device
        && elements.iter().any(|e| e == OSTREE_DEPLOY)
        && d.graph.mounts().any(|(_, m)| m.mount_point == "/boot")
    {
        return Err(UsageError(format!(
            "the {OSTREE_DEPLOY} element keeps the deployments' kernels in /boot of the root filesystem: a layout with a separate /boot partition is not supported yet; choose one without it (e.g. block-device-mbr or block-device-efi)"
        ))
        .into());
    }
    let short = image_short_name(&cli.output);
    let docker_target = cli.docker_target.clone().unwrap_or(short);
    if outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::Docker | OutputKind::Oci))
    {
        validate::docker_target(&docker_target)?;
    }
    let ostree = ostree_plan(
        cli,
        &outputs,
        &resolved_env,
        &arch,
        &elements,
        &lock,
        &settings,
    )?;
    if let Some(o) = &ostree {
        for spec in outputs.iter_mut().filter(|s| s.kind == OutputKind::Ostree) {
            spec.path = o.repo.clone();
        }
    }
    let boot = boot::plan(cli, &outputs, block_device.as_ref(), &elements, &arch)?;
    let final_image = !elements.iter().any(|e| e == NO_FINAL_IMAGE);
    let element_overrides = elements
        .iter()
        .filter_map(|n| Some((n.clone(), set.overridden.get(n)?.clone())))
        .collect();
    Ok(Plan {
        boot,
        element_paths: element_list.into_iter().collect(),
        requested_elements: cli.elements.clone(),
        element_overrides,
        report,
        elements,
        hooks,
        environment,
        packages,
        final_image,
        outputs,
        output_options: OutputOptions {
            compress_qcow2: !cli.uncompressed,
            qemu_img_options: cli
                .qemu_img_options
                .clone()
                .filter(|o| !o.trim().is_empty()),
            docker_target,
            ostree,
        },
        emulator: emulator(&arch),
        arch,
        image_name: cli.output.clone(),
        hook_env,
        resolved_env,
        block_device,
        lock,
        settings,
        per_build: PER_BUILD.iter().map(|s| s.to_string()).collect(),
    })
}

/// ostree-deploy fills the disk from a deployed sysroot instead of the tree.
/// It needs the disk even for an update commit: the commit's /etc/fstab is
/// the layout's, written when the disk is made, and a machine whose fstab
/// was never edited takes the new commit's at its upgrade.
fn check_deployable(outputs: &[OutputSpec], settings: &Settings) -> Result<(), UsageError> {
    if !wants_disk(outputs) {
        return Err(UsageError(format!(
            "the {OSTREE_DEPLOY} element needs a disk output, also for an update commit: the commit's /etc/fstab comes from the disk layout (without it the upgraded machine would boot with an empty fstab); add the image's disk type, e.g. -t qcow2,ostree (the disk can be discarded)"
        )));
    }
    if settings.finalise != FinaliseOn::Tree {
        return Err(UsageError(format!(
            "the {OSTREE_DEPLOY} element fills the disk from the deployed tree: it cannot run with DIB_CREATE_FINALISE=mounted"
        )));
    }
    Ok(())
}

/// The ostree output's plan, when `-t` has ostree.
fn ostree_plan(
    cli: &Cli,
    outputs: &[OutputSpec],
    env: &BTreeMap<String, String>,
    arch: &str,
    elements: &[String],
    lock: &crate::lock::Request,
    settings: &Settings,
) -> Result<Option<OstreePlan>, PlanError> {
    let spec = outputs.iter().find(|o| o.kind == OutputKind::Ostree);
    let default_repo = spec.map_or_else(PathBuf::new, |o| o.path.clone());
    let lockfile = match lock.locked() {
        Some((path, _)) => Some((
            path.to_path_buf(),
            crate::digest::sha256_of(path)
                .map_err(|e| UsageError(format!("--lockfile {}: {e:#}", path.display())))?,
        )),
        None => None,
    };
    let get = |k: &str, d: &'static str| env.get(k).map_or(d, String::as_str).to_string();
    let image = image_short_name(&cli.output);
    Ok(ostree::plan(&ostree::Inputs {
        args: &cli.ostree_args(),
        wanted: spec.is_some(),
        default_repo: &default_repo,
        distro: &get("DISTRO_NAME", "debian"),
        release: &get("DIB_RELEASE", "stable"),
        arch,
        image: &image,
        elements,
        lockfile,
        created: settings
            .source_date_epoch
            .unwrap_or_else(crate::cache::phase::now),
        deploy: elements.iter().any(|e| e == OSTREE_DEPLOY),
        remote_url: env.get("DIB_OSTREE_REMOTE_URL").map(String::as_str),
    })?)
}

/// `-o`'s last component (`image` for a name without one).
fn image_short_name(output: &str) -> String {
    Path::new(output)
        .file_name()
        .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned())
}

/// `--cache-prune`: the cache directory and what its phase cache keeps.
pub fn cache_settings(
    cli: &Cli,
    caller: &BTreeMap<String, String>,
) -> Result<(PathBuf, PhaseCacheSettings), PlanError> {
    let cache = PathBuf::from(env::image_cache(cli, caller));
    let settings = Settings::read(cli, caller, cache.clone(), &crate::lock::Request::Off)?;
    Ok((cache, settings.phase_cache))
}

/// `--report FILE`, else `<output>.report.html`; none with `--no-report`.
fn report_path(cli: &Cli) -> Option<PathBuf> {
    if cli.no_report {
        return None;
    }
    Some(
        cli.report
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.report.html", cli.output))),
    )
}

/// `-a` (or ARCH), else the host's, in dpkg naming; an unknown name is refused.
/// The emulator `arch` needs here (the host is asked whether its kernel runs
/// i386 itself).
fn emulator(arch: &str) -> Option<&'static str> {
    let a = crate::arch::Arch::parse(arch).ok()?;
    (!crate::host::runs_natively(a)).then_some(a.qemu_user)
}

pub fn target_arch(cli: &Cli) -> Result<String, crate::arch::UnknownArch> {
    match cli.arch.as_deref().filter(|a| !a.is_empty()) {
        None => Ok(crate::arch::Arch::host().dpkg.to_owned()),
        Some(a) => Ok(crate::arch::Arch::parse(a)?.dpkg.to_owned()),
    }
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
