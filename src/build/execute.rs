//! Executing a plan: the build directory, the phases in DIB's order, the
//! chroot around the chroot phases, and the outputs. Teardown always runs; the
//! original error is reported first, then any teardown error.

use anyhow::Context;
use std::time::Instant;

use super::UsageError;
use super::builddir::{self, BuildDir};
use crate::cli::Cli;
use crate::hooks::{BuildDirs, PhaseRunner};
use crate::host::{Journal, log};
use crate::output::container::{self, ImageMeta};
use crate::output::{self, Pending, convert, tarball};
use crate::plan::Plan;
use crate::rootfs::{binfmt, chroot};
use std::path::Path;

/// Output types that come straight from the tree.
const TREE_TYPES: &[&str] = &["tar", "tgz", "squashfs", "docker", "oci"];

/// Builds the image a plan describes.
pub fn execute(plan: &Plan, cli: &Cli) -> anyhow::Result<()> {
    check_can_build(plan)?;
    let started = Instant::now();
    let root = builddir::build_root();
    builddir::cleanup_stale(&root);
    let short_name = Path::new(&plan.image_name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let dir = BuildDir::create(&root, &short_name)?;
    log::open_file(&dir.log_path())?;
    if let Some(f) = &cli.logfile {
        log::open_file(f).with_context(|| format!("opening the log file {}", f.display()))?;
    }
    log::step(&format!("build directory {}", dir.path.display()));
    let mut journal = Journal::create(dir.journal_path())?;
    let dirs = BuildDirs {
        build: dir.path.clone(),
        target: dir.target(),
        hooks: dir.hooks(),
    };
    let mut runner = PhaseRunner::new(plan, dirs.clone());
    let result = run_stages(plan, cli, &dirs, &mut runner, &mut journal);
    let teardown = journal.close();
    log::info(&runner.timing_table());
    let outcome = combine(result, teardown);
    finish_build_dir(dir, &outcome, cli.keep_on_failure)?;
    if outcome.is_ok() {
        log::step(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    }
    outcome
}

/// Fails early, before anything is touched, on what cannot work.
fn check_can_build(plan: &Plan) -> anyhow::Result<()> {
    if !crate::host::is_root() {
        return Err(UsageError(
            "building needs root (it mounts and chroots); run it as root, or use --dry-run to see the plan"
                .into(),
        )
        .into());
    }
    for o in &plan.outputs {
        if !TREE_TYPES.contains(&o.kind.as_str()) {
            return Err(UsageError(format!(
                "output type {} is not implemented yet (available: {}); choose one with -t",
                o.kind,
                TREE_TYPES.join(", ")
            ))
            .into());
        }
    }
    binfmt::ensure(&plan.arch)
}

fn run_stages(
    plan: &Plan,
    cli: &Cli,
    dirs: &BuildDirs,
    runner: &mut PhaseRunner,
    journal: &mut Journal,
) -> anyhow::Result<()> {
    log::step("preparing the hooks tree");
    crate::hooks::tree::prepare(plan, &dirs.hooks)?;
    runner.run_phase("root.d")?;
    check_root_exists(&dirs.target)?;
    runner.run_phase("extra-data.d")?;

    let first = chroot::enter(journal, &dirs.target, &dirs.hooks)?;
    runner.run_phase("pre-install.d")?;
    runner.run_phase("install.d")?;
    runner.install_extra_packages(&cli.extra_packages())?;
    runner.run_phase("post-install.d")?;
    runner.run_phase("post-root.d")?;
    journal.undo_until(&first)?;
    log::info(
        "phases block-device.d and the block-device step do not run: no disk output was asked for",
    );

    let first = chroot::enter(journal, &dirs.target, &dirs.hooks)?;
    runner.run_phase("pre-finalise.d")?;
    runner.run_phase("finalise.d")?;
    runner.run_phase("cleanup.d")?;
    journal.undo_until(&first)?;

    check_no_leftovers(&dirs.target)?;
    write_tree_outputs(plan, cli, &dirs.target, &dirs.build)
}

/// root.d must have produced a tree; say which elements could have.
fn check_root_exists(target: &Path) -> anyhow::Result<()> {
    if target.join("bin").exists() || target.join("usr/bin").exists() {
        return Ok(());
    }
    anyhow::bail!(
        "root.d left {} empty: no element created the root filesystem; add an operating-system element such as debian-minimal or ubuntu-minimal",
        target.display()
    )
}

fn check_no_leftovers(target: &Path) -> anyhow::Result<()> {
    let left = chroot::leftover_markers(target);
    if left.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "build-time files are still in the tree: {}",
        left.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn write_tree_outputs(plan: &Plan, cli: &Cli, target: &Path, build: &Path) -> anyhow::Result<()> {
    for o in plan
        .outputs
        .iter()
        .filter(|o| TREE_TYPES.contains(&o.kind.as_str()))
    {
        log::step(&format!("writing {} output {}", o.kind, o.path.display()));
        let pending = Pending::new(&o.path);
        write_tree_output(plan, cli, &o.kind, target, build, &pending.tmp)?;
        let done = pending.commit()?;
        if cli.checksum {
            output::write_checksums(&done)?;
        }
        log::step(&format!("wrote {}", done.display()));
    }
    Ok(())
}

/// Writes one output made from the tree (no disk) to `dest`.
fn write_tree_output(
    plan: &Plan,
    cli: &Cli,
    kind: &str,
    tree: &Path,
    build: &Path,
    dest: &Path,
) -> anyhow::Result<()> {
    let clamp = source_date_epoch();
    match kind {
        "tar" => tarball::write(tree, dest, tarball::Compression::None, clamp),
        "tgz" => tarball::write(tree, dest, tarball::Compression::Gzip, clamp),
        "squashfs" => convert::squashfs(tree, dest, clamp),
        "docker" | "oci" => {
            let layer = build.join("layer.tar");
            tarball::write(tree, &layer, tarball::Compression::None, clamp)?;
            let target = cli
                .docker_target
                .clone()
                .unwrap_or_else(|| plan.image_name.clone());
            let meta = ImageMeta {
                arch: &plan.arch,
                target: &target,
                created: clamp.unwrap_or_else(now_secs),
            };
            let r = if kind == "docker" {
                container::write_docker(&layer, dest, &meta)
            } else {
                container::write_oci(&layer, dest, &meta)
            };
            let _ = std::fs::remove_file(&layer);
            r
        }
        other => anyhow::bail!("output type {other} cannot be made from a tree"),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()
}

/// The build's error first; a teardown error is attached, never hides it.
fn combine(result: anyhow::Result<()>, teardown: anyhow::Result<()>) -> anyhow::Result<()> {
    match (result, teardown) {
        (Ok(()), t) => t,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(t)) => Err(TeardownAfter {
            original: e,
            teardown: format!("{t:#}"),
        }
        .into()),
    }
}

fn finish_build_dir(dir: BuildDir, outcome: &anyhow::Result<()>, keep: bool) -> anyhow::Result<()> {
    log::close_file();
    if outcome.is_err() && keep {
        eprintln!(
            "keeping the build directory {} (--keep-on-failure)",
            dir.path.display()
        );
        return Ok(());
    }
    if outcome.is_err() {
        let log = dir.log_path();
        let kept = std::env::temp_dir().join(format!(
            "dib-create-failed-{}.log",
            dir.path.file_name().unwrap_or_default().to_string_lossy()
        ));
        if std::fs::copy(&log, &kept).is_ok() {
            eprintln!("the full build log is in {}", kept.display());
        }
    }
    dir.remove()
}

/// A build error followed by a teardown error; shows the build error first.
#[derive(Debug)]
struct TeardownAfter {
    original: anyhow::Error,
    teardown: String,
}

impl std::fmt::Display for TeardownAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#}\nthen teardown failed too: {}",
            self.original, self.teardown
        )
    }
}

impl std::error::Error for TeardownAfter {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.original.as_ref())
    }
}
