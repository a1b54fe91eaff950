//! Executing a plan: the build directory, the phases in the order of the phase
//! table, the chroot around the chroot phases, the disk, and the outputs.
//! Every decision is the plan's: this code reads no command line and no
//! environment, and reaches the host only through the journal's [`Host`].
//! Teardown always runs; the original error is reported first, then any
//! teardown error.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::builddir::{self, BuildDir};
use super::disk;
use super::phase_cache::{self, Done, PhaseCache, Sealer, Start};
use crate::blockdev::mkfs::Repro;
use crate::error::UsageError;
use crate::hooks::{BuildDirs, PhaseRunner, Place};
use crate::host::{Entry, Host, Journal};
use crate::log;
use crate::output::{self, OutputLock, Pending, WriteContext, manifest};
use crate::report::collect::{self as report, Facts};

/// Where the output locks live, below the build root.
const OUTPUT_LOCKS: &str = ".output-locks";
/// The deployed ostree sysroot (ostree-deploy), below the build directory.
pub(super) const SYSROOT: &str = "ostree-sysroot";
use crate::phase::{Phase, Stage};
use crate::plan::{DiskPlan, FinaliseOn, OutputKind, Plan, Source};
use crate::rootfs::{binfmt, chroot};

/// Builds the image a plan describes, acting on `host`.
pub fn execute(plan: &Plan, host: Box<dyn Host>) -> anyhow::Result<()> {
    check_can_build(plan, host.as_ref())?;
    let started = Instant::now();
    let root = &plan.settings.build_root;
    builddir::check_build_root(root)?;
    let _outputs = OutputLock::acquire(&root.join(OUTPUT_LOCKS), &plan.image_name)?;
    builddir::cleanup_stale(root);
    let dir = BuildDir::create(root, &plan.short_name())?;
    let mut facts = Facts::default();
    let outcome = build_in(plan, host, &dir, &mut facts).map_err(|e| explain_no_space(e, plan));
    let keep = plan.settings.keep_on_failure || outcome.as_ref().is_err_and(is_teardown_failure);
    finish_build_dir(dir, &outcome, keep, &plan.settings.failed_log_dir)?;
    if outcome.is_ok() {
        log::step(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    }
    write_report(plan, facts, &outcome);
    outcome
}

/// The build report, for a failed build too; failing to write it fails
/// nothing (the outputs are in place by now).
fn write_report(plan: &Plan, facts: Facts, outcome: &anyhow::Result<()>) {
    let Some(path) = &plan.report else {
        return;
    };
    let error = outcome.as_ref().err().map(super::render_error);
    let report = report::report(plan, facts, error, &log::recorded());
    match crate::report::write(path, &report) {
        Ok(()) => log::event(log::Event::Report {
            path: path.display().to_string(),
        }),
        Err(e) => log::warn(&format!(
            "could not write the build report {}: {e:#}",
            path.display()
        )),
    }
}

/// Everything inside the build directory: the log, the journal, the build
/// itself and its teardown.
fn build_in(
    plan: &Plan,
    host: Box<dyn Host>,
    dir: &BuildDir,
    facts: &mut Facts,
) -> anyhow::Result<()> {
    log::open_file(&dir.log_path())
        .with_context(|| format!("opening the build log {}", dir.log_path().display()))?;
    if let Some(f) = &plan.settings.logfile {
        log::open_file(f).with_context(|| format!("opening the log file {}", f.display()))?;
    }
    log::step(&format!("build directory {}", dir.path.display()));
    let mut journal = Journal::create(dir.journal_path(), host)?;
    let dirs = BuildDirs {
        build: dir.path.clone(),
        target: dir.target(),
        hooks: dir.hooks(),
    };
    let mut runner = PhaseRunner::new(plan, dirs.clone());
    let mut lock = crate::lock::Session::new(
        &plan.lock,
        &plan.arch,
        &plan.settings.image_cache,
        plan.settings.offline,
        plan.settings.source_date_epoch,
    );
    let cache = open_phase_cache(plan, &dirs);
    let mut build = Build {
        plan,
        dirs: &dirs,
        runner: &mut runner,
        journal: &mut journal,
        lock: &mut lock,
        packages: Vec::new(),
        cache,
        chroot: None,
        facts,
        ostree: None,
    };
    let result = build.run();
    let cache = build.cache.take();
    drop(build);
    lock.close();
    // A failed build may leave a hook's own mounts; they go first, so the
    // journal's can, and the build directory is removable.
    let strays = journal.unmount_strays(&dirs.build).map(drop);
    let closed = journal.close();
    // Both reported: a stray that would not go must not hide the journal's.
    let teardown = match (strays, closed) {
        (Err(a), Err(b)) => Err(a.context(format!("{b:#}"))),
        (a, b) => a.and(b),
    };
    // After teardown: the sweep must not remove layers still mounted.
    if let Some(c) = cache {
        c.close();
    }
    log::info(&runner.timing_table());
    combine(result, teardown)
}

/// Fails early, before anything is touched, on what this host cannot do.
/// (Bad input was refused when the plan was made.)
fn check_can_build(plan: &Plan, host: &dyn Host) -> anyhow::Result<()> {
    let caps = host.capabilities();
    if !caps.root {
        return Err(UsageError(
            "building needs root (it mounts and chroots); run it as root, or use --dry-run to see the plan"
                .into(),
        )
        .into());
    }
    if let Some(d) = plan.disk() {
        disk::check_host(caps, d)?;
    }
    binfmt::ensure(&plan.arch, plan.emulator)?;
    check_ostree_tools(plan)
}

/// The ostree output needs ostree, and gpg with its agent to sign.
fn check_ostree_tools(plan: &Plan) -> anyhow::Result<()> {
    let Some(o) = &plan.output_options.ostree else {
        return Ok(());
    };
    let signing = ["gpg", "gpg-agent"];
    let tools = ["ostree"]
        .into_iter()
        .chain(o.gpg.iter().flat_map(|_| signing));
    for tool in tools {
        if !crate::host::tools::on_path(tool) {
            let pkg = crate::host::tools::package_for(tool).unwrap_or(tool);
            return Err(UsageError(format!(
                "the ostree output needs {tool}, which is not installed: apt-get install {pkg}"
            ))
            .into());
        }
    }
    Ok(())
}

/// The phase cache, unless it is turned off or cannot be opened (then the
/// build runs every phase, as it would without it).
fn open_phase_cache(plan: &Plan, dirs: &BuildDirs) -> Option<PhaseCache> {
    if !phase_cache::wanted(plan) {
        return None;
    }
    match PhaseCache::open(plan, dirs) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn(&format!("phase cache: off: {e:#}"));
            None
        }
    }
}

/// One build in progress: what every stage needs.
struct Build<'a, 'r> {
    plan: &'a Plan,
    dirs: &'a BuildDirs,
    runner: &'r mut PhaseRunner<'a>,
    journal: &'r mut Journal,
    /// Lockfile recording or enforcement, told about every package phase.
    lock: &'r mut crate::lock::Session,
    /// What the tree holds after post-install.d, for the manifest and SBOM.
    packages: Vec<manifest::Package>,
    /// Snapshots of the tree between hooks, and the outputs of whole builds.
    cache: Option<PhaseCache>,
    /// The chroot's first journal entry while it is up (a seal takes the
    /// chroot down and up, and replaces it).
    chroot: Option<Entry>,
    /// What the report will show of the disk, the tree and the outputs.
    facts: &'r mut Facts,
    /// The ostree commit written, whose ref moves when the outputs commit.
    ostree: Option<output::ostree::Committed>,
}

impl Build<'_, '_> {
    fn run(&mut self) -> anyhow::Result<()> {
        if let Some(d) = self.plan.disk() {
            for (k, v) in disk::config_env(&d.graph) {
                self.runner.set_env(k, v);
            }
        }
        log::step("preparing the hooks tree");
        crate::hooks::tree::prepare(self.plan, &self.dirs.hooks)?;
        make_lockfiles_dir(self.plan)?;
        for (k, v) in self.lock.before_root(&self.dirs.build)? {
            self.runner.set_env(&k, v);
        }
        // Timed as a task only when there is a cache to look up.
        let start = if self.cache.is_some() {
            log::task("phase-cache", "looking up the phase cache", || {
                self.start_cache()
            })?
        } else {
            Start::Cold
        };
        if let (Start::Outputs(out), Some(c)) = (&start, &self.cache) {
            let pending = c.load_outputs(out, self.plan, self.journal)?;
            self.packages = out.packages.clone();
            return self.commit(pending, false);
        }
        self.tree_phases(&start).map_err(|e| self.lock.explain(e))?;
        let Some(d) = self.plan.disk() else {
            log::info(
                "phases block-device.d and the block-device step do not run: no disk output was asked for",
            );
            let tree = self.dirs.target.clone();
            self.finalise_phases(&tree)?;
            let pending = self.tree_outputs(&tree)?;
            return self.commit(pending, true);
        };
        let disk = self.make_disk(d)?;
        let mut pending = match self.plan.settings.finalise {
            FinaliseOn::Tree => self.finalise_on_tree(d, &disk)?,
            FinaliseOn::Mounted => self.finalise_on_mounted(d, &disk)?,
        };
        let usage = disk::usage(&d.graph, &disk, &self.dirs.build, self.journal);
        self.facts.disk = Some(report::disk_picture(
            &d.graph,
            disk.size,
            &disk.extents,
            &usage,
        ));
        disk::detach(&disk, self.journal)?;
        pending.extend(self.disk_outputs(&disk)?);
        self.commit(pending, true)
    }

    /// Where the build starts: walks the phase cache and mounts the
    /// (restored) layered tree. Without the cache: from root.d.
    fn start_cache(&mut self) -> anyhow::Result<Start> {
        let Some(c) = self.cache.as_mut() else {
            return Ok(Start::Cold);
        };
        let env = self.runner.base_env(Place::Outside);
        let start = c.start(self.plan, &env)?;
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
    fn commit(&mut self, mut pending: Vec<Pending>, keep: bool) -> anyhow::Result<()> {
        // Under no-final-image the result is what hooks wrote; a cached
        // entry of no outputs would skip them next time.
        // A repository is not a file to keep: an ostree build commits its
        // (restored) tree again, which adds no objects when nothing changed.
        let has_ostree = self.plan.output_options.ostree.is_some();
        if keep
            && self.plan.final_image
            && !has_ostree
            && let Some(c) = &self.cache
        {
            let kinds: Vec<(String, &Pending)> = pending
                .iter()
                .filter_map(|p| {
                    let kind = crate::plan::kind_at(&self.plan.outputs, &p.final_path)?;
                    Some((kind.name().to_string(), p))
                })
                .collect();
            if let Err(e) = c.store_outputs(self.plan, &kinds, &self.packages) {
                log::warn(&format!("phase cache: could not keep the outputs: {e:#}"));
            }
        }
        let ostree = self.ostree_file()?;
        let (manifests, hashed) = write_manifests(
            self.journal,
            self.plan,
            &self.packages,
            &pending,
            ostree.as_ref(),
        )?;
        pending.extend(manifests);
        let mut done = commit_outputs(pending, self.plan.settings.checksum)?;
        if let (Some(o), Some(c)) = (&self.plan.output_options.ostree, &self.ostree) {
            output::ostree::set_ref(self.journal.host(), &o.repo, &o.branch, &c.commit)?;
            // Every output is in place and the ref has moved: a summary that
            // cannot be written is worth a warning, not a failed build.
            if let Err(e) = output::ostree::publish(self.journal.host(), o, &o.repo) {
                log::warn(&format!(
                    "ostree: the summary of {} was not updated ({e:#}); run `ostree summary -u` there",
                    o.repo.display()
                ));
            }
            if !done.contains(&o.repo) {
                done.push(o.repo.clone());
            }
        }
        for path in done {
            let kind =
                crate::plan::kind_at(&self.plan.outputs, &path).map_or("metadata", |k| k.name());
            let sha = hashed
                .iter()
                .find(|h| {
                    path.file_name()
                        .is_some_and(|n| n.to_string_lossy() == h.file)
                })
                .map(|h| h.sha256.clone())
                .or_else(|| crate::digest::sha256_of(&path).ok())
                .unwrap_or_default();
            let file = report::output_file(&path, kind, sha);
            log::event(log::Event::OutputWritten {
                path: file.path.clone(),
                kind: file.kind.clone(),
                bytes: file.bytes,
                sha256: file.sha256.clone(),
            });
            self.facts.outputs.push(file);
        }
        Ok(())
    }

    /// With ostree-deploy: the sysroot the commit is deployed into, which
    /// the disk is filled from instead of the tree.
    fn deployed(&mut self, tree: &Path, pending: &[Pending]) -> anyhow::Result<Option<PathBuf>> {
        let (Some(o), Some(c)) = (&self.plan.output_options.ostree, &self.ostree) else {
            return Ok(None);
        };
        if o.deploy.is_none() {
            return Ok(None);
        }
        // The repository is still under its temporary name when it is new.
        let repo = pending
            .iter()
            .find(|p| p.final_path == o.repo)
            .map_or(o.repo.clone(), |p| p.tmp.clone());
        let sysroot = self.dirs.build.join(SYSROOT);
        let host = self.journal.host();
        log::task("ostree", "deploying the ostree commit", || {
            output::ostree::deploy(host, o, tree, &repo, &c.commit, &sysroot)
        })?;
        Ok(Some(sysroot))
    }

    /// The manifest's entry of the ostree output: its commit stands for its
    /// content.
    fn ostree_file(&self) -> anyhow::Result<Option<manifest::OutputFile>> {
        let (Some(o), Some(c)) = (&self.plan.output_options.ostree, &self.ostree) else {
            return Ok(None);
        };
        Ok(Some(manifest::OutputFile::ostree(
            &o.repo, &o.branch, &c.commit,
        )))
    }

    /// The default: finalise on the staging tree, then build each filesystem
    /// from it. Returns the pending tree outputs.
    fn finalise_on_tree(
        &mut self,
        d: &DiskPlan,
        disk: &disk::Disk,
    ) -> anyhow::Result<Vec<Pending>> {
        let tree = self.dirs.target.clone();
        self.finalise_phases(&tree)?;
        let pending = self.tree_outputs(&tree)?;
        let content = self.deployed(&tree, &pending)?.unwrap_or(tree);
        disk::fill(
            &d.graph,
            disk,
            &content,
            &self.dirs.build,
            self.journal,
            self.repro(),
        )?;
        Ok(pending)
    }

    /// DIB's way: build the filesystems, mount them, finalise in a chroot of
    /// the mounted image.
    fn finalise_on_mounted(
        &mut self,
        d: &DiskPlan,
        disk: &disk::Disk,
    ) -> anyhow::Result<Vec<Pending>> {
        disk::fill(
            &d.graph,
            disk,
            &self.dirs.target,
            &self.dirs.build,
            self.journal,
            self.repro(),
        )?;
        let mounted = self.dirs.build.join("image-mnt");
        let first = disk::mount_all(&d.graph, disk, &mounted, self.journal)?;
        self.runner.set_target(&mounted);
        self.finalise_phases(&mounted)?;
        let pending = self.tree_outputs(&mounted)?;
        if let Some(first) = first {
            self.journal.undo_until(&first)?;
        }
        Ok(pending)
    }

    fn repro(&self) -> Repro {
        Repro {
            epoch: self.plan.settings.source_date_epoch,
        }
    }

    /// The tree stage of the phase table, root.d to post-root.d: the tree is
    /// built (or restored from the phase cache up to `start`, then finished).
    fn tree_phases(&mut self, start: &Start) -> anyhow::Result<()> {
        for phase in crate::phase::stage(Stage::Tree) {
            // The chroot goes up before the first chroot phase and stays up
            // to the end of the tree stage (post-root.d hooks may use it).
            if phase.place() == Place::Chroot && self.chroot.is_none() {
                self.chroot = Some(chroot::enter(
                    self.journal,
                    &self.dirs.target,
                    &self.dirs.hooks,
                )?);
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
        self.journal.unmount_strays(&self.dirs.target)?;
        if let Some(c) = &mut self.cache {
            c.finish_tree(self.journal, &mut self.chroot)?;
        }
        match self.chroot.take() {
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
            } if start.done_in(Phase::PostInstall.name()) == Done::All => p.clone(),
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
            return self.runner.run_phase(self.journal, phase);
        };
        let skip = match start.done_in(phase) {
            Done::All => {
                let hooks = crate::hooks::list_hooks(&self.dirs.hooks, phase);
                self.runner.report_restored(phase, &hooks);
                return Ok(());
            }
            Done::Some(n) => n,
            Done::None => {
                c.phase_started(phase);
                0
            }
        };
        let mut obs = Sealer {
            cache: c,
            chroot: &mut self.chroot,
        };
        self.runner
            .run_phase_from(self.journal, phase, skip, &mut obs)
    }

    /// The `-p` packages, after install.d.
    fn extra_packages(&mut self, start: &Start) -> anyhow::Result<()> {
        let pkgs = &self.plan.settings.extra_packages;
        if pkgs.is_empty() || start.done_in(Phase::Extra.name()) != Done::None {
            return Ok(());
        }
        if let Some(c) = &mut self.cache {
            c.extra_started(pkgs);
        }
        self.runner.install_extra_packages(self.journal, pkgs)?;
        if let Some(c) = &mut self.cache {
            c.seal(self.journal, &mut self.chroot, (Phase::Extra.name(), 1, ""))?;
        }
        Ok(())
    }

    /// block-device.d, then the disk from the YAML config, then fstab.
    fn make_disk(&mut self, d: &DiskPlan) -> anyhow::Result<disk::Disk> {
        self.runner
            .run_phase(self.journal, Phase::BlockDevice.name())?;
        refuse_legacy_block_device(&self.runner.block_device_output)?;
        let size = disk::image_size(d, &self.dirs.target)?;
        let made = log::task("disk", "partitioning the disk", || {
            disk::create(
                &d.graph,
                size,
                &self.dirs.build,
                self.journal,
                self.plan.settings.seed(),
            )
        })?;
        for (k, v) in disk::block_device_env(self.journal, &d.graph, &made)? {
            self.runner.set_env(k, v);
        }
        disk::write_fstab(&d.graph, &made, &self.dirs.target)?;
        Ok(made)
    }

    /// pre-finalise.d, finalise.d (chroot) and cleanup.d on the final tree.
    fn finalise_phases(&mut self, root: &Path) -> anyhow::Result<()> {
        // Now that no package changes any more: the initramfs is built here.
        crate::rootfs::native::prepare(
            root,
            &self.dirs.hooks,
            &self.plan.arch,
            self.plan.emulator.is_some() && self.plan.settings.native_tools,
        )?;
        let first = chroot::enter(self.journal, root, &self.dirs.hooks)?;
        for phase in [Phase::PreFinalise, Phase::Finalise, Phase::Cleanup] {
            self.runner.run_phase(self.journal, phase.name())?;
        }
        self.journal.unmount_strays(root)?;
        self.journal.undo_until(&first)
    }

    /// The outputs made from the tree, written under temporary names.
    fn tree_outputs(&mut self, tree: &Path) -> anyhow::Result<Vec<Pending>> {
        check_no_leftovers(tree)?;
        match report::contents(tree) {
            Ok(c) => self.facts.contents = Some(c),
            Err(e) => log::warn(&format!(
                "build report: could not list the tree's contents: {e:#}"
            )),
        }
        let ctx = write_context(self.plan, &self.dirs.build);
        let mut done = Vec::new();
        for o in self
            .plan
            .written_outputs()
            .filter(|o| o.kind.source() == Source::Tree)
        {
            if o.kind == OutputKind::Ostree {
                done.extend(self.ostree_output(tree)?);
                continue;
            }
            let pending = Pending::recorded(self.journal, &o.path)?;
            let task = format!("writing {} output {}", o.kind, o.path.display());
            let host = self.journal.host();
            log::task("output", &task, || {
                output::write_from_tree(host, o.kind, tree, &pending.tmp, &ctx)
            })?;
            done.push(pending);
        }
        Ok(done)
    }

    /// Commits the tree into the ostree repository: an existing one in
    /// place (its ref moves at the end), a new one under a temporary name.
    fn ostree_output(&mut self, tree: &Path) -> anyhow::Result<Option<Pending>> {
        let Some(o) = &self.plan.output_options.ostree else {
            anyhow::bail!("the plan has an ostree output but no ostree settings");
        };
        let pending = if crate::plan::is_repository(&o.repo) {
            None
        } else {
            Some(Pending::recorded(self.journal, &o.repo)?)
        };
        let repo = pending.as_ref().map_or(o.repo.clone(), |p| p.tmp.clone());
        let task = format!(
            "committing the tree to ostree {} ({})",
            o.repo.display(),
            o.branch
        );
        let scratch = self.dirs.build.clone();
        let host = self.journal.host();
        let committed = log::task("output", &task, || {
            if pending.is_some() {
                output::ostree::init_repo(host, &repo)?;
            }
            output::ostree::commit(host, o, tree, &repo, &scratch)
        })?;
        self.ostree = Some(committed);
        Ok(pending)
    }

    /// Converts the raw disk into each disk output; raw itself goes last,
    /// because it is moved rather than copied.
    fn disk_outputs(&mut self, disk: &disk::Disk) -> anyhow::Result<Vec<Pending>> {
        let ctx = write_context(self.plan, &self.dirs.build);
        let mut outs: Vec<_> = self
            .plan
            .written_outputs()
            .filter(|o| o.kind.source() == Source::Disk)
            .collect();
        outs.sort_by_key(|o| o.kind == crate::plan::OutputKind::Raw);
        let mut done = Vec::new();
        for o in outs {
            let pending = Pending::recorded(self.journal, &o.path)?;
            let task = format!("writing {} output {}", o.kind, o.path.display());
            let host = self.journal.host();
            log::task("output", &task, || {
                output::write_from_disk(host, o.kind, &disk.raw, &pending.tmp, &ctx)
            })?;
            done.push(pending);
        }
        Ok(done)
    }
}

/// "No space left on device" deep in a tool's output names no filesystem:
/// say which ones the build writes to and how much each has free.
fn explain_no_space(e: anyhow::Error, plan: &Plan) -> anyhow::Error {
    let full = format!("{e:#}");
    if !full.contains("No space left on device") {
        return e;
    }
    let out_dir = Path::new(&plan.image_name)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let places = [
        ("the build directory", plan.settings.build_root.clone()),
        ("the output directory", out_dir),
        ("the cache", plan.settings.image_cache.clone()),
    ];
    let free: Vec<String> = places
        .iter()
        .filter_map(|(what, p)| {
            let st = nix::sys::statvfs::statvfs(p.as_path()).ok()?;
            let mib = (st.blocks_available() as u64 * st.fragment_size() as u64) >> 20;
            Some(format!("{what} {} has {mib} MiB free", p.display()))
        })
        .collect();
    e.context(format!(
        "a filesystem ran out of space: {}; a debian-minimal disk build needs about 3 GiB in the build directory and the image's size again for the outputs",
        free.join(", ")
    ))
}

/// What the output writers need, from the plan.
fn write_context<'a>(plan: &'a Plan, build: &'a Path) -> WriteContext<'a> {
    let clamp = plan.settings.source_date_epoch;
    WriteContext {
        arch: &plan.arch,
        docker_target: &plan.output_options.docker_target,
        clamp,
        created: clamp.unwrap_or_else(now_secs),
        scratch: build,
        compress_qcow2: plan.output_options.compress_qcow2,
        qemu_img_options: plan.output_options.qemu_img_options.as_deref(),
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

/// `<name>.manifest.json` (packages and output hashes) and `<name>.spdx.json`.
fn write_manifests(
    journal: &mut Journal,
    plan: &Plan,
    packages: &[manifest::Package],
    outputs: &[Pending],
    ostree: Option<&manifest::OutputFile>,
) -> anyhow::Result<(Vec<Pending>, Vec<manifest::OutputFile>)> {
    let mut files = Vec::new();
    for p in outputs {
        let kind = crate::plan::kind_at(&plan.outputs, &p.final_path);
        if kind == Some(OutputKind::Ostree) {
            continue;
        }
        let name = kind.map_or("?", |k| k.name());
        files.push(manifest::OutputFile::hashed(name, &p.tmp, &p.final_path)?);
    }
    files.extend(ostree.cloned());
    let name = plan.short_name();
    let distro = plan
        .resolved_env
        .get("DISTRO_NAME")
        .map_or("debian", String::as_str);
    let created = plan.settings.source_date_epoch.unwrap_or_else(now_secs);
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
        let p = Pending::recorded(journal, Path::new(&format!("{}.{ext}", plan.image_name)))?;
        std::fs::write(&p.tmp, text).with_context(|| format!("writing {}", p.tmp.display()))?;
        pending.push(p);
    }
    Ok((pending, files))
}

/// Renames every finished output into place and writes checksums.
fn commit_outputs(
    pending: Vec<Pending>,
    checksum: bool,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let done = output::commit_all(pending)?;
    if checksum {
        // A repository has no file checksum: its commit is its checksum.
        for file in done.iter().filter(|f| f.is_file()) {
            output::write_checksums(file)?;
        }
    }
    Ok(done)
}

/// DIB creates DIB_LOCKFILES before the first phase; elements flock files in it.
fn make_lockfiles_dir(plan: &Plan) -> anyhow::Result<()> {
    let Some(dir) = plan.hook_env.get("DIB_LOCKFILES").filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| {
        format!("creating DIB_LOCKFILES {dir}; set DIB_LOCKFILES to a writable directory")
    })
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

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The build's error first; a teardown error is attached, never hides it.
fn combine(result: anyhow::Result<()>, teardown: anyhow::Result<()>) -> anyhow::Result<()> {
    match (result, teardown) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(t)) => Err(TeardownFailed(format!("{t:#}")).into()),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(t)) => Err(TeardownAfter {
            original: e,
            teardown: format!("{t:#}"),
        }
        .into()),
    }
}

/// Teardown left something behind: the build directory is kept for
/// `dib-create --cleanup`.
fn is_teardown_failure(e: &anyhow::Error) -> bool {
    e.is::<TeardownFailed>() || e.is::<TeardownAfter>()
}

fn finish_build_dir(
    dir: BuildDir,
    outcome: &anyhow::Result<()>,
    keep: bool,
    log_dir: &Path,
) -> anyhow::Result<()> {
    log::close_files();
    if outcome.is_err() && keep {
        log::step(&format!(
            "keeping the build directory {} (--keep-on-failure, or teardown failed: run dib-create --cleanup DIR)",
            dir.path.display()
        ));
        return Ok(());
    }
    if outcome.is_err() {
        match keep_failed_log(&dir.log_path(), log_dir, &dir.path) {
            Ok(kept) => log::step(&format!("the full build log is in {}", kept.display())),
            Err(e) => log::warn(&format!(
                "could not keep the build log in {}: {e}",
                log_dir.display()
            )),
        }
    }
    dir.remove()
}

/// Copies the log of a failed build into `dir` (TMPDIR, which others may
/// write to) under a new name: created exclusively, so a file or symlink
/// planted under that name is never written through.
fn keep_failed_log(log: &Path, dir: &Path, build: &Path) -> std::io::Result<std::path::PathBuf> {
    let stem = build.file_name().unwrap_or_default().to_string_lossy();
    let mut n = 0;
    loop {
        let name = match n {
            0 => format!("dib-create-failed-{stem}.log"),
            n => format!("dib-create-failed-{stem}.{n}.log"),
        };
        let kept = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&kept)
        {
            Ok(mut f) => {
                std::io::copy(&mut std::fs::File::open(log)?, &mut f)?;
                return Ok(kept);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Teardown failed after a build that succeeded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TeardownFailed(String);

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

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_log_never_writes_through_a_planted_symlink() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("build.log");
        std::fs::write(&log, "the log").unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let build = d.path().join("img-abc123");
        std::os::unix::fs::symlink(&victim, tmp.join("dib-create-failed-img-abc123.log")).unwrap();
        let kept = super::keep_failed_log(&log, &tmp, &build).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "the log");
        assert!(
            kept.to_string_lossy().ends_with(".1.log"),
            "{}",
            kept.display()
        );
    }
}
