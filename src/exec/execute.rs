//! Executing a plan: the build directory, the phases in DIB's order, the
//! chroot around the chroot phases, and the outputs. Teardown always runs; the
//! original error is reported first, then any teardown error.

use anyhow::Context;
use std::time::Instant;

use super::builddir::{self, BuildDir};
use super::disk;
use super::phase_cache::{self, Done, PhaseCache, Sealer, Start};
use crate::blockdev::Graph;
use crate::blockdev::fill::Repro;
use crate::cli::Cli;
use crate::error::UsageError;
use crate::hooks::{BuildDirs, PhaseRunner, Place};
use crate::host::Journal;
use crate::log;
use crate::output::container::{self, ImageMeta};
use crate::output::{self, Pending, convert, manifest, tarball};
use crate::phase::{Phase, Stage};
use crate::plan::Plan;
use crate::rootfs::{binfmt, chroot};
use std::path::Path;

/// Output types that come straight from the tree.
const TREE_TYPES: &[&str] = &["tar", "tgz", "squashfs", "docker", "oci"];
use disk::DISK_TYPES;

/// Builds the image a plan describes.
pub fn execute(plan: &Plan, cli: &Cli) -> anyhow::Result<()> {
    let graph = check_can_build(plan, cli)?;
    let mut lock = crate::lock::Session::from_cli(cli, plan)?;
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
    let cache = open_phase_cache(plan, cli, &dirs);
    let mut build = Build {
        plan,
        cli,
        dirs: &dirs,
        runner: &mut runner,
        journal: &mut journal,
        graph: graph.as_ref(),
        lock: &mut lock,
        packages: Vec::new(),
        cache,
        chroot_up: false,
    };
    let result = build.run();
    let cache = build.cache.take();
    drop(build);
    lock.close();
    let teardown = journal.close();
    // After teardown: the sweep must not remove layers still mounted.
    if let Some(c) = cache {
        c.close();
    }
    log::info(&runner.timing_table());
    let teardown_failed = teardown.is_err();
    let outcome = combine(result, teardown);
    finish_build_dir(dir, &outcome, cli.keep_on_failure || teardown_failed)?;
    if outcome.is_ok() {
        log::step(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    }
    outcome
}

/// Fails early, before anything is touched, on what cannot work. Returns the
/// block-device graph when a disk output was asked for.
fn check_can_build(plan: &Plan, cli: &Cli) -> anyhow::Result<Option<Graph>> {
    if !crate::host::is_root() {
        return Err(UsageError(
            "building needs root (it mounts and chroots); run it as root, or use --dry-run to see the plan"
                .into(),
        )
        .into());
    }
    for o in &plan.outputs {
        let k = o.kind.as_str();
        if !TREE_TYPES.contains(&k) && !DISK_TYPES.contains(&k) {
            return Err(UsageError(format!(
                "output type {k} is not implemented yet (available: {}, {}); choose one with -t",
                TREE_TYPES.join(", "),
                DISK_TYPES.join(", ")
            ))
            .into());
        }
    }
    let graph = if wants_disk(plan) {
        disk::check_host()?;
        Some(disk::load_graph(plan, cli)?)
    } else {
        None
    };
    binfmt::ensure(&plan.arch)?;
    Ok(graph)
}

/// The phase cache, unless it is turned off or cannot be opened (then the
/// build runs every phase, as it would without it).
fn open_phase_cache(plan: &Plan, cli: &Cli, dirs: &BuildDirs) -> Option<PhaseCache> {
    if !phase_cache::wanted(cli) {
        return None;
    }
    match PhaseCache::open(plan, cli, dirs) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn(&format!("phase cache: off: {e:#}"));
            None
        }
    }
}

fn wants_disk(plan: &Plan) -> bool {
    plan.outputs
        .iter()
        .any(|o| DISK_TYPES.contains(&o.kind.as_str()))
}

/// One build in progress: what every stage needs.
struct Build<'a, 'r> {
    plan: &'a Plan,
    cli: &'a Cli,
    dirs: &'a BuildDirs,
    runner: &'r mut PhaseRunner<'a>,
    journal: &'r mut Journal,
    graph: Option<&'a Graph>,
    /// Lockfile recording or enforcement, called between the package phases.
    lock: &'r mut crate::lock::Session,
    /// What the tree holds after post-install.d, for the manifest and SBOM.
    packages: Vec<manifest::Package>,
    /// Snapshots of the tree between hooks, and the outputs of whole builds.
    cache: Option<PhaseCache>,
    /// Whether the chroot is set up on the tree (a seal takes it down and up).
    chroot_up: bool,
}

impl Build<'_, '_> {
    fn run(&mut self) -> anyhow::Result<()> {
        if let Some(g) = self.graph {
            for (k, v) in disk::config_env(g) {
                self.runner.set_env(k, v);
            }
        }
        log::step("preparing the hooks tree");
        crate::hooks::tree::prepare(self.plan, &self.dirs.hooks)?;
        self.lock.before_root(self.runner, &self.dirs.build)?;
        let start = self.start_cache()?;
        if let (Start::Outputs(out), Some(c)) = (&start, &self.cache) {
            let pending = c.load_outputs(out, self.plan)?;
            self.packages = out.packages.clone();
            return self.commit(pending, false);
        }
        self.root_phases(&start).map_err(|e| self.lock.explain(e))?;
        let Some(g) = self.graph else {
            log::info(
                "phases block-device.d and the block-device step do not run: no disk output was asked for",
            );
            self.finalise_phases(&self.dirs.target.clone())?;
            let pending = self.tree_outputs(&self.dirs.target.clone())?;
            return self.commit(pending, true);
        };
        let d = self.make_disk(g)?;
        let pending = match disk::finalise_on()? {
            disk::FinaliseOn::Tree => self.finalise_on_tree(g, &d)?,
            disk::FinaliseOn::Mounted => self.finalise_on_mounted(g, &d)?,
        };
        disk::detach(&d, self.journal)?;
        let mut pending = pending;
        pending.extend(write_disk_outputs(self.plan, self.cli, &d)?);
        self.commit(pending, true)
    }

    /// Where the build starts: walks the phase cache and mounts the
    /// (restored) layered tree. Without the cache: from root.d.
    fn start_cache(&mut self) -> anyhow::Result<Start> {
        let Some(c) = self.cache.as_mut() else {
            return Ok(Start::Cold);
        };
        let env = self.runner.base_env(Place::Outside);
        let start = c.start(self.plan, self.cli, self.graph, &env)?;
        if matches!(start, Start::Outputs(_)) {
            return Ok(start);
        }
        if let Err(e) = c.mount(self.journal) {
            log::warn(&format!(
                "phase cache: off for this build, the layered tree cannot be used here: {e:#}"
            ));
            c.reset_hooks()?;
            self.cache = None;
            return Ok(Start::Cold);
        }
        if matches!(start, Start::Resume { .. }) {
            self.lock.retarget(&self.dirs.target)?;
        }
        Ok(start)
    }

    /// Every output was finished under a temporary name; with the manifest
    /// and SBOM they are renamed into place together, only once all of them
    /// succeeded. `keep`: store them in the phase cache first.
    fn commit(&self, mut pending: Vec<Pending>, keep: bool) -> anyhow::Result<()> {
        if keep && let Some(c) = &self.cache {
            let kinds: Vec<(String, &Pending)> = pending
                .iter()
                .filter_map(|p| {
                    let o = self.plan.outputs.iter().find(|o| o.path == p.final_path)?;
                    Some((o.kind.clone(), p))
                })
                .collect();
            if let Err(e) = c.store_outputs(self.plan, &kinds, &self.packages) {
                log::warn(&format!("phase cache: could not keep the outputs: {e:#}"));
            }
        }
        pending.extend(write_manifests(self.plan, &self.packages, &pending)?);
        commit_outputs(pending, self.cli.checksum)
    }

    /// The default: finalise on the staging tree, then build each filesystem
    /// from it. Returns the pending tree outputs.
    fn finalise_on_tree(&mut self, g: &Graph, d: &disk::Disk) -> anyhow::Result<Vec<Pending>> {
        let tree = self.dirs.target.clone();
        self.finalise_phases(&tree)?;
        let pending = self.tree_outputs(&tree)?;
        disk::fill(g, d, &tree, &self.dirs.build, self.journal, repro())?;
        Ok(pending)
    }

    /// DIB's way: build the filesystems, mount them, finalise in a chroot of
    /// the mounted image.
    fn finalise_on_mounted(&mut self, g: &Graph, d: &disk::Disk) -> anyhow::Result<Vec<Pending>> {
        disk::fill(
            g,
            d,
            &self.dirs.target,
            &self.dirs.build,
            self.journal,
            repro(),
        )?;
        let mounted = self.dirs.build.join("image-mnt");
        let first = disk::mount_all(g, d, &mounted, self.journal)?;
        self.runner.set_target(&mounted);
        self.finalise_phases(&mounted)?;
        let pending = self.tree_outputs(&mounted)?;
        if let Some(first) = first {
            self.journal.undo_until(&first)?;
        }
        Ok(pending)
    }

    fn tree_outputs(&self, root: &Path) -> anyhow::Result<Vec<Pending>> {
        check_no_leftovers(root)?;
        write_tree_outputs(self.plan, self.cli, root, &self.dirs.build)
    }

    /// root.d to post-root.d: the tree is built (or restored from the
    /// phase cache up to `start`, then finished).
    fn root_phases(&mut self, start: &Start) -> anyhow::Result<()> {
        let mut chroot = None;
        for phase in crate::phase::stage(Stage::Tree) {
            // The chroot goes up before the first chroot phase and stays up
            // to the end of the tree stage (post-root.d hooks may use it).
            if phase.place() == Place::Chroot && chroot.is_none() {
                chroot = Some(chroot::enter(
                    self.journal,
                    &self.dirs.target,
                    &self.dirs.hooks,
                )?);
                self.chroot_up = true;
            }
            match phase {
                Phase::Extra => self.extra_packages(start)?,
                p => self.phase(p.name(), start)?,
            }
            if phase == Phase::Root {
                check_root_exists(&self.dirs.target)?;
            }
            self.lock.after_phase(phase, &self.dirs.target)?;
            if phase == Phase::PostInstall {
                self.capture_packages(start)?;
            }
        }
        if let Some(c) = &mut self.cache {
            c.finish_tree(self.journal, true, self.cli, self.graph)?;
        }
        self.chroot_up = false;
        match chroot {
            Some(first) => self.journal.undo_until(&first),
            None => Ok(()),
        }
    }

    /// The tree's packages, for the manifest and SBOM: read now, while the
    /// apt lists that carry each package's hash are there, or taken from
    /// the restored snapshot that already read them.
    fn capture_packages(&mut self, start: &Start) -> anyhow::Result<()> {
        self.packages = match start {
            Start::Resume {
                packages: Some(p), ..
            } if start.done_in("post-install.d") == Done::All => p.clone(),
            _ => manifest::capture(&self.dirs.target)?,
        };
        if let Some(c) = &mut self.cache {
            // Snapshots from here on carry the package list.
            c.packages = Some(self.packages.clone());
        }
        Ok(())
    }

    /// Runs the hooks of `phase` the restored tree does not hold yet; with
    /// the phase cache, each is keyed and the tree is sealed after slow
    /// hooks and at the end of the phase.
    fn phase(&mut self, phase: &str, start: &Start) -> anyhow::Result<()> {
        let Some(c) = self.cache.as_mut() else {
            return self.runner.run_phase(phase);
        };
        let skip = match start.done_in(phase) {
            Done::All => return Ok(()),
            Done::Some(n) => n,
            Done::None => {
                c.phase_started(phase);
                0
            }
        };
        let mut obs = Sealer {
            cache: c,
            journal: self.journal,
            chroot_up: self.chroot_up,
        };
        self.runner.run_phase_from(phase, skip, &mut obs)
    }

    /// The `-p` packages, after install.d.
    fn extra_packages(&mut self, start: &Start) -> anyhow::Result<()> {
        let pkgs = self.cli.extra_packages();
        if pkgs.is_empty() || start.done_in("extra") != Done::None {
            return Ok(());
        }
        if let Some(c) = &mut self.cache {
            c.extra_started(&pkgs);
        }
        self.runner.install_extra_packages(&pkgs)?;
        if let Some(c) = &mut self.cache {
            c.seal(self.journal, self.chroot_up, ("extra", 1, ""))?;
        }
        Ok(())
    }

    /// block-device.d, then the disk from the YAML config, then fstab.
    fn make_disk(&mut self, graph: &Graph) -> anyhow::Result<disk::Disk> {
        self.runner.run_phase("block-device.d")?;
        refuse_legacy_block_device(&self.runner.block_device_output)?;
        let size = disk::image_size(graph, self.cli, &self.dirs.target)?;
        let d = disk::create(graph, size, &self.dirs.build, self.journal, seed())?;
        for (k, v) in disk::block_device_env(graph, &d)? {
            self.runner.set_env(k, v);
        }
        disk::write_fstab(graph, &d, &self.dirs.target)?;
        Ok(d)
    }

    /// pre-finalise.d, finalise.d (chroot) and cleanup.d on the final tree.
    fn finalise_phases(&mut self, root: &Path) -> anyhow::Result<()> {
        // Now that no package changes any more: the initramfs is built here.
        crate::rootfs::native::prepare(root, &self.dirs.hooks, &self.plan.arch)?;
        let first = chroot::enter(self.journal, root, &self.dirs.hooks)?;
        self.runner.run_phase("pre-finalise.d")?;
        self.runner.run_phase("finalise.d")?;
        self.runner.run_phase("cleanup.d")?;
        self.journal.undo_until(&first)
    }
}

/// DIB lets a block-device.d hook print `IMAGE_BLOCK_DEVICE=<dev>` to replace
/// the YAML layer with a device it made itself. That pre-YAML path is not
/// supported: say so instead of silently building another disk.
fn refuse_legacy_block_device(output: &str) -> anyhow::Result<()> {
    match output.lines().find_map(|l| l.trim().strip_prefix("IMAGE_BLOCK_DEVICE=")) {
        Some(dev) => Err(UsageError(format!(
            "a block-device.d hook chose the block device itself (IMAGE_BLOCK_DEVICE={dev}); \
             dib-create does not support that legacy path: describe the disk with a block-device \
             YAML config (DIB_BLOCK_DEVICE_CONFIG or an element's block-device-default.yaml) instead"
        ))
        .into()),
        None => Ok(()),
    }
}

/// Seed for disk ids and UUIDs: SOURCE_DATE_EPOCH makes them reproducible.
fn seed() -> Option<u64> {
    source_date_epoch()
}

fn repro() -> Repro {
    Repro {
        epoch: source_date_epoch(),
    }
}

/// Converts the raw disk into each disk output; raw itself goes last,
/// because it is moved rather than copied.
fn write_disk_outputs(plan: &Plan, cli: &Cli, d: &disk::Disk) -> anyhow::Result<Vec<Pending>> {
    let mut outs: Vec<_> = plan
        .outputs
        .iter()
        .filter(|o| DISK_TYPES.contains(&o.kind.as_str()))
        .collect();
    outs.sort_by_key(|o| o.kind == "raw");
    let mut done = Vec::new();
    for o in outs {
        log::step(&format!("writing {} output {}", o.kind, o.path.display()));
        let pending = Pending::new(&o.path);
        if o.kind == "raw" {
            move_sparse(&d.raw, &pending.tmp)?;
        } else {
            let compress = !cli.uncompressed;
            convert::qemu_img(
                &d.raw,
                &pending.tmp,
                &o.kind,
                compress,
                cli.qemu_img_options.as_deref(),
            )?;
        }
        done.push(pending);
    }
    Ok(done)
}

/// `<name>.manifest.json` (packages and output hashes) and `<name>.spdx.json`.
fn write_manifests(
    plan: &Plan,
    packages: &[manifest::Package],
    outputs: &[Pending],
) -> anyhow::Result<Vec<Pending>> {
    let mut files = Vec::new();
    for p in outputs {
        let kind = plan
            .outputs
            .iter()
            .find(|o| o.path == p.final_path)
            .map_or("?", |o| o.kind.as_str());
        files.push(manifest::OutputFile::hashed(kind, &p.tmp, &p.final_path)?);
    }
    let name = Path::new(&plan.image_name).file_name().map_or_else(
        || plan.image_name.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    let distro = plan
        .resolved_env
        .get("DISTRO_NAME")
        .map_or("debian", String::as_str);
    let created = source_date_epoch().unwrap_or_else(now_secs);
    let texts = [
        (
            "manifest.json",
            manifest::manifest_json(&name, &plan.arch, packages, &files),
        ),
        (
            "spdx.json",
            manifest::spdx_json(&name, distro, packages, created),
        ),
    ];
    let mut pending = Vec::new();
    for (ext, text) in texts {
        let p = Pending::new(Path::new(&format!("{}.{ext}", plan.image_name)));
        std::fs::write(&p.tmp, text).with_context(|| format!("writing {}", p.tmp.display()))?;
        pending.push(p);
    }
    Ok(pending)
}

/// Renames every finished output into place and writes checksums.
fn commit_outputs(pending: Vec<Pending>, checksum: bool) -> anyhow::Result<()> {
    for p in pending {
        let done = p.commit()?;
        if checksum {
            output::write_checksums(&done)?;
        }
        log::step(&format!("wrote {}", done.display()));
    }
    Ok(())
}

/// Renames, or copies keeping holes when the output is on another filesystem.
fn move_sparse(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    crate::host::Cmd::new("copying the raw image", "cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .run()?;
    std::fs::remove_file(from)?;
    Ok(())
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

fn write_tree_outputs(
    plan: &Plan,
    cli: &Cli,
    target: &Path,
    build: &Path,
) -> anyhow::Result<Vec<Pending>> {
    let mut done = Vec::new();
    for o in plan
        .outputs
        .iter()
        .filter(|o| TREE_TYPES.contains(&o.kind.as_str()))
    {
        log::step(&format!("writing {} output {}", o.kind, o.path.display()));
        let pending = Pending::new(&o.path);
        write_tree_output(plan, cli, &o.kind, target, build, &pending.tmp)?;
        done.push(pending);
    }
    Ok(done)
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
            // DIB's default target is the image's name, not the output path.
            let target = cli.docker_target.clone().unwrap_or_else(|| {
                Path::new(&plan.image_name).file_name().map_or_else(
                    || plan.image_name.clone(),
                    |n| n.to_string_lossy().into_owned(),
                )
            });
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
