//! The phase cache in a build (see `docs/phase-cache.md`): the staging tree
//! is an overlayfs whose lower layers are sealed snapshots from the shared
//! cache, and whose upper layer collects what this build's hooks change.
//!
//! Why overlayfs rather than tar or cp: sealing a snapshot is a rename of
//! the upper directory into the cache (the build directory and the cache
//! share a filesystem by default), and restoring one is a mount, so both
//! cost well under a second whatever the tree's size (0.03-1.9 s per seal on
//! debian-minimal vm). A copy of the ~1 GB tree costs time in proportion to
//! its size at every seal and every restore, which would allow one or two
//! boundaries at most. The price is slower reads through the layers (about
//! 1.5x for `tar -c` of the whole tree, measured), paid once by the outputs.
//!
//! A build walks its chain of keys before anything runs (the hooks tree is
//! prepared first, so every hook's content is known), restores the deepest
//! snapshot that is still valid, and runs only the remaining hooks. When the
//! whole tree and the output inputs are unchanged, the outputs of the
//! earlier build are emitted again without building.

use anyhow::Context;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cache::archive;
use crate::cache::keys::{self, Components, Step};
use crate::cache::phase::{self, ArchiveState, HookChange, OutFile, OutMeta, SnapMeta, Store};
use crate::cache::refs::{self, References, Scope};
use crate::hooks::{HookDone, HookObserver, list_hooks};
use crate::host::Cmd;
use crate::host::journal::{Entry, Journal};
use crate::host::mount::Source;
use crate::log;
use crate::output::Pending;
use crate::phase::{Phase, Stage};
use crate::pkgdb::{HOST_TOOLS, Package, Shapes};
use crate::plan::{OutputKind, Plan};
use crate::rootfs::chroot;

/// Where the build resumes.
pub enum Start {
    /// Everything is cached: emit these outputs again.
    Outputs(OutMeta),
    /// Nothing cached: run every phase.
    Cold,
    /// The tree is restored after `position` hooks of `phase`.
    Resume {
        phase: String,
        position: usize,
        packages: Option<Vec<Package>>,
    },
}

impl Start {
    /// How many hooks of `step` the restored tree already has (all of them
    /// for steps before the resume point).
    pub fn done_in(&self, step: &str) -> Done {
        let Start::Resume {
            phase, position, ..
        } = self
        else {
            return Done::None;
        };
        let idx = |s: &str| Phase::from_name(s).map_or(usize::MAX, |p| p as usize);
        match idx(step).cmp(&idx(phase)) {
            std::cmp::Ordering::Less => Done::All,
            std::cmp::Ordering::Equal => Done::Some(*position),
            std::cmp::Ordering::Greater => Done::None,
        }
    }
}

/// How much of a step the restored tree holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    None,
    Some(usize),
    All,
}

/// True when the plan has the phase cache on; says why when it is off.
pub fn wanted(plan: &Plan) -> bool {
    match &plan.settings.phase_cache.off {
        Some(r) => {
            log::info(&format!("phase cache: off ({r})"));
            false
        }
        None => true,
    }
}

/// The hooks tree as data: relative path → what is there.
type HookTree = BTreeMap<String, HookChange>;

/// One build's use of the phase cache.
pub struct PhaseCache {
    store: Store,
    build: PathBuf,
    target: PathBuf,
    hooks: PathBuf,
    arch: String,
    locked: bool,
    /// The hook variables the outputs' key covers (scanned once per build).
    output_env: BTreeMap<String, String>,
    components: Components,
    key: String,
    trail: Vec<String>,
    last: Option<SnapMeta>,
    /// The hooks tree as prepared from the elements.
    fresh: HookTree,
    /// The snapshot diff currently applied to the hooks tree.
    applied: Vec<HookChange>,
    checker: archive::Checker,
    seal_after: Duration,
    max_unchecked_age: u64,
    /// The outputs' key, once the tree is complete.
    output_key: Option<String>,
    /// The journal entry of the staging tree's mount, while it is mounted.
    mounted: Option<Entry>,
    /// The tree's packages once captured (kept in later snapshots).
    pub packages: Option<Vec<Package>>,
    /// For preparing the hooks tree again.
    plan: Plan,
    /// The mirror root.d bootstraps from, checked while the tree has no
    /// apt sources of its own yet (debootstrap's tree before its sources).
    bootstrap_sources: Vec<crate::pkgdb::Source>,
}

impl PhaseCache {
    /// Opens the store under the build's image cache.
    pub fn open(plan: &Plan, dirs: &crate::hooks::BuildDirs) -> anyhow::Result<Self> {
        let store = Store::open(&plan.settings.image_cache)?;
        let settings = &plan.settings.phase_cache;
        Ok(PhaseCache {
            store,
            build: dirs.build.clone(),
            target: dirs.target.clone(),
            hooks: dirs.hooks.clone(),
            arch: plan.arch.clone(),
            locked: plan.lock.locked().is_some(),
            output_env: BTreeMap::new(),
            components: Components::new(),
            key: String::new(),
            trail: Vec::new(),
            last: None,
            fresh: HookTree::new(),
            applied: Vec::new(),
            checker: archive::Checker::new(plan.settings.offline, archive_keyrings(plan)),
            seal_after: Duration::from_secs(settings.seal_after_secs),
            max_unchecked_age: settings.max_unchecked_age_secs,
            output_key: None,
            mounted: None,
            packages: None,
            plan: plan.clone(),
            bootstrap_sources: bootstrap_sources(plan),
        })
    }

    /// Walks the chain of keys over the freshly prepared hooks tree, picks
    /// the deepest valid snapshot and sets the hooks tree to its state.
    /// `env` is the hook environment (before environment.d).
    pub fn start(&mut self, plan: &Plan, env: &BTreeMap<String, String>) -> anyhow::Result<Start> {
        let started = Instant::now();
        self.fresh = scan_hooks(&self.hooks)?;
        self.output_env = keyed_env(plan, env, Scope::Whole);
        self.components = base_components(plan, env);
        let base = keys::base_key(&self.components);
        let extra = &plan.settings.extra_packages;
        // The walk: every key the build would pass, and the snapshots found.
        let mut key = base.clone();
        let mut trail = Vec::new();
        let mut found: Vec<SnapMeta> = Vec::new();
        for phase in crate::phase::stage(Stage::Tree) {
            let step = phase.name();
            if phase == Phase::Extra {
                if extra.is_empty() {
                    continue;
                }
                let s = Step::Extra(extra);
                key = keys::next_key(&key, &s);
                trail.push(s.describe());
                if let Some(m) = self.store.snapshot(&key) {
                    found.push(m);
                }
                continue;
            }
            let s = Step::Phase(step);
            key = keys::next_key(&key, &s);
            trail.push(s.describe());
            for name in list_hooks(&self.hooks, step) {
                let sha = crate::digest::path_digest(&self.hooks.join(step).join(&name));
                let s = Step::Hook {
                    phase: step,
                    name: &name,
                    sha256: &sha,
                };
                key = keys::next_key(&key, &s);
                trail.push(s.describe());
                if let Some(m) = self.store.snapshot(&key) {
                    // Later phases list their hooks from this state.
                    self.set_hooks_state(&m)?;
                    found.push(m);
                }
            }
        }
        let final_key = key;
        // The seal after trailing phases without hooks (finish_tree).
        if found.last().is_none_or(|m| m.key != final_key)
            && let Some(m) = self.store.snapshot(&final_key)
        {
            found.push(m);
        }
        let chosen = self.choose(&found);
        match &chosen {
            Some(m) => self.set_hooks_state(m)?,
            None => self.reset_hooks()?,
        }
        self.key = chosen.as_ref().map_or(base, |m| m.key.clone());
        self.trail = chosen.as_ref().map_or_else(Vec::new, |m| m.trail.clone());
        self.last = chosen.clone();
        // With the tree complete, the outputs may be cached too.
        let complete = chosen.as_ref().filter(|m| m.key == final_key);
        if let Some(m) = complete {
            let okey = keys::output_key(
                &final_key,
                &output_components(plan, &self.hooks, &self.output_env),
            );
            if let Some(out) = self.usable_outputs(&okey, plan) {
                self.store.touch_outputs(&okey);
                self.store.touch_snapshots(&m.layers);
                log::step(&format!(
                    "phase cache: reused the outputs of an identical earlier build (key {}; checked in {:.1} s): nothing changed",
                    short(&okey),
                    started.elapsed().as_secs_f64()
                ));
                return Ok(Start::Outputs(out));
            }
        }
        let complete = complete.is_some();
        let Some(m) = chosen else {
            log::step(&format!(
                "phase cache: no snapshot to restore; building from root.d ({})",
                self.explain_miss(&trail, None)
            ));
            return Ok(Start::Cold);
        };
        self.store.touch_snapshots(&m.layers);
        self.store.touch_snapshots(std::iter::once(&m.key));
        let at = if m.hook.is_empty() {
            m.phase.clone()
        } else {
            format!("{}/{}", m.phase, m.hook)
        };
        if complete {
            log::step(&format!(
                "phase cache: reused the tree after {at} (all root phases); outputs are rebuilt because their inputs changed ({})",
                self.explain_outputs()
            ));
        } else {
            log::step(&format!(
                "phase cache: reused the tree after {at} ({} layers, checked in {:.1} s); restarting after it because {}",
                m.layers.len(),
                started.elapsed().as_secs_f64(),
                self.explain_miss(&trail, Some(&m))
            ));
        }
        Ok(Start::Resume {
            phase: m.phase.clone(),
            position: m.position,
            packages: m.packages.clone(),
        })
    }

    /// The deepest snapshot whose archive state and layers are still good.
    fn choose(&mut self, found: &[SnapMeta]) -> Option<SnapMeta> {
        let mut verified: BTreeMap<String, bool> = BTreeMap::new();
        for m in found.iter().rev() {
            if let Err(why) = self.archive_ok(m) {
                log::info(&format!(
                    "phase cache: not using the snapshot after {}/{}: {why}",
                    m.phase, m.hook
                ));
                continue;
            }
            if m.layers.iter().all(|l| self.layer_ok(l, &mut verified)) {
                return Some(m.clone());
            }
        }
        None
    }

    /// True when layer `key` is intact; a damaged one is removed.
    fn layer_ok(&self, key: &str, verified: &mut BTreeMap<String, bool>) -> bool {
        if let Some(ok) = verified.get(key) {
            return *ok;
        }
        let ok = match self.store.snapshot(key) {
            Some(m) => match (
                &m.tree_digest,
                phase::tree_digest(&self.store.tree_dir(key)),
            ) {
                (Some(want), Ok(got)) if *want == got => true,
                (want, got) => {
                    log::warn(&format!(
                        "phase cache: layer {} is damaged (digest {want:?}, now {:?}); removing it",
                        self.store.tree_dir(key).display(),
                        got.map_err(|e| e.to_string())
                    ));
                    self.store.discard_snapshot(key);
                    false
                }
            },
            None => false,
        };
        verified.insert(key.to_string(), ok);
        ok
    }

    /// Is the archive the snapshot was installed from unchanged?
    fn archive_ok(&mut self, m: &SnapMeta) -> Result<(), String> {
        if m.archive.locked {
            return Ok(());
        }
        let mut unknown = m.archive.unchecked.clone();
        for (url, was) in &m.archive.indices {
            match self.checker.current(url, &self.arch) {
                Ok(now) if now == *was => {}
                Ok(_) => return Err(format!("the archive changed: {url}")),
                Err(e) => unknown.push(format!("{url}: {e}")),
            }
        }
        if unknown.is_empty() {
            if !m.archive.indices.is_empty() {
                log::info(&format!(
                    "phase cache: archive check: the package indices of {} suite(s) are unchanged",
                    m.archive.indices.len()
                ));
            }
            return Ok(());
        }
        let age = phase::now().saturating_sub(m.created);
        if age <= self.max_unchecked_age {
            log::warn(&format!(
                "phase cache: could not check the archive ({}); using a snapshot {} min old (DIB_CREATE_PHASE_CACHE_MAX_AGE={} s)",
                unknown.join("; "),
                age / 60,
                self.max_unchecked_age
            ));
            Ok(())
        } else {
            Err(format!(
                "could not check the archive ({}) and the snapshot is older than {} s",
                unknown.join("; "),
                self.max_unchecked_age
            ))
        }
    }

    /// The outputs entry `key`, if complete and every file is there.
    fn usable_outputs(&self, key: &str, plan: &Plan) -> Option<OutMeta> {
        let out = self.store.outputs(key)?;
        let kinds: Vec<&str> = plan.outputs.iter().map(|o| o.kind.name()).collect();
        let complete = kinds.iter().all(|k| {
            out.files.iter().any(|f| f.kind == *k) && self.store.out_dir(key).join(k).is_file()
        });
        complete.then_some(out)
    }

    /// Why the build cannot resume later than `chosen`.
    fn explain_miss(&self, trail: &[String], chosen: Option<&SnapMeta>) -> String {
        let all = self.store.snapshots();
        let same_base: Vec<&SnapMeta> = all
            .iter()
            .filter(|m| m.components == self.components)
            .collect();
        let common = |m: &SnapMeta| {
            m.trail
                .iter()
                .zip(trail)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let reached = chosen.map_or(0, |c| c.trail.len());
        if let Some(best) = same_base
            .iter()
            .filter(|m| m.trail.len() > reached)
            .max_by_key(|m| common(m))
            && let Some(d) = keys::first_difference(&best.trail, trail)
        {
            return d;
        }
        if same_base.is_empty()
            && let Some(newest) = all.iter().max_by_key(|m| m.created)
        {
            let changed = keys::changed_components(&newest.components, &self.components, 8);
            if !changed.is_empty() {
                return format!("inputs changed: {}", changed.join(", "));
            }
        }
        if chosen.is_some() {
            "a later snapshot was not usable, or no earlier build went further with these inputs"
                .into()
        } else {
            "no earlier build with these inputs".into()
        }
    }

    fn explain_outputs(&self) -> String {
        let newest = fs::read_dir(self.store.root().join("out"))
            .map(|rd| rd.filter_map(Result::ok).count())
            .unwrap_or(0);
        if newest == 0 {
            "no outputs are cached".into()
        } else {
            "the block-device config, an output option or a hook of block-device.d, \
             pre-finalise.d, finalise.d or cleanup.d changed"
                .into()
        }
    }

    // ---- the tree ----

    /// Mounts the staging tree: the restored layers (if any) under a fresh
    /// upper directory. Fails when overlayfs cannot be used here.
    pub fn mount(&mut self, journal: &mut Journal) -> anyhow::Result<()> {
        let layers = self
            .last
            .as_ref()
            .map(|m| m.layers.clone())
            .unwrap_or_default();
        for d in ["upper", "work", "empty", "l"] {
            fs::create_dir_all(self.build.join(d))
                .with_context(|| format!("creating {}", self.build.join(d).display()))?;
        }
        // Short links keep the mount options well under a page.
        let links = self.build.join("l");
        for e in fs::read_dir(&links)?.filter_map(Result::ok) {
            fs::remove_file(e.path())?;
        }
        let mut lower = Vec::new();
        for (i, k) in layers.iter().enumerate().rev() {
            let link = links.join(i.to_string());
            std::os::unix::fs::symlink(self.store.tree_dir(k), &link)?;
            lower.push(link.display().to_string());
        }
        if lower.is_empty() {
            lower.push(self.build.join("empty").display().to_string());
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
            lower.join(":"),
            self.build.join("upper").display(),
            self.build.join("work").display()
        );
        if data.contains(",,") || self.build.to_string_lossy().contains([',', ':']) {
            anyhow::bail!(
                "the build directory {} holds ',' or ':', which overlayfs options cannot carry",
                self.build.display()
            );
        }
        let entry = journal
            .mount(&Source::Overlay { data: &data }, &self.target)
            .context("mounting the layered staging tree (overlayfs)")?;
        self.mounted = Some(entry);
        Ok(())
    }

    /// A phase starts (its hooks are listed now).
    pub fn phase_started(&mut self, phase: &str) {
        self.push(&Step::Phase(phase));
    }

    fn push(&mut self, s: &Step) {
        self.key = keys::next_key(&self.key, s);
        self.trail.push(s.describe());
    }

    /// The `-p` packages are about to be installed.
    pub fn extra_started(&mut self, pkgs: &[String]) {
        self.push(&Step::Extra(pkgs));
    }

    /// Seals the upper layer as the snapshot of the current key. `chroot`
    /// holds the chroot's first journal entry while it is up: the chroot is
    /// taken down for the seal and set up again (with a new entry).
    pub fn seal(
        &mut self,
        journal: &mut Journal,
        chroot: &mut Option<Entry>,
        at: (&str, usize, &str),
    ) -> anyhow::Result<()> {
        let task = match at.2 {
            "" => format!("sealing the tree after {}", at.0),
            hook => format!("sealing the tree after {}/{hook}", at.0),
        };
        // Sealing takes the tree down, and a hook's own mount below it (a
        // package-cache bind that later hooks use) could not come back up.
        // DIB keeps such mounts to the end of post-root.d, so the seal waits.
        let strays = journal.strays_under(&self.target)?;
        if let Some(m) = strays.first() {
            log::info(&format!(
                "phase cache: not {task}: a hook mounted {} and it stays up to the end of post-root.d",
                m.display()
            ));
            return Ok(());
        }
        log::task("phase-cache", &task, || {
            self.seal_layer(journal, chroot, at)
        })
    }

    fn seal_layer(
        &mut self,
        journal: &mut Journal,
        chroot: &mut Option<Entry>,
        at: (&str, usize, &str),
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let archive = self.archive_state();
        let upper = self.build.join("upper");
        let has_tree = fs::read_dir(&upper)
            .map(|mut r| r.next().is_some())
            .unwrap_or(false);
        let staged = self.store.staging("snap")?;
        if has_tree {
            if let Some(first) = chroot.as_ref() {
                journal.undo_until(first)?;
            }
            if let Some(tree) = self.mounted.take() {
                journal.undo_until(&tree)?;
            }
            crate::host::files::move_dir(
                &upper,
                &staged.join("tree"),
                "a layer into the phase cache",
            )?;
            fs::create_dir(&upper).with_context(|| format!("creating {}", upper.display()))?;
        }
        let current = scan_hooks(&self.hooks)?;
        let diff = diff_hooks(&self.fresh, &current);
        store_hook_files(&self.hooks, &diff, &staged.join("hooks"))?;
        let mut layers = self
            .last
            .as_ref()
            .map(|m| m.layers.clone())
            .unwrap_or_default();
        let tree_digest = if has_tree {
            layers.push(self.key.clone());
            Some(phase::tree_digest(&staged.join("tree"))?)
        } else {
            None
        };
        let meta = SnapMeta {
            format: phase::FORMAT,
            key: self.key.clone(),
            parent: self.last.as_ref().map(|m| m.key.clone()),
            layers,
            tree_digest,
            phase: at.0.into(),
            position: at.1,
            hook: at.2.into(),
            trail: self.trail.clone(),
            components: self.components.clone(),
            hooks_diff: diff,
            archive,
            packages: self.packages.clone(),
            created: phase::now(),
        };
        let published = self.store.publish_snapshot(&staged, &meta)?;
        self.last = Some(published);
        if self.mounted.is_none() {
            self.mount(journal)?;
            if chroot.is_some() {
                *chroot = Some(chroot::enter(journal, &self.target, &self.hooks)?);
            }
        }
        log::info(&format!(
            "phase cache: sealed the tree after {}/{} ({}) in {:.2} s",
            at.0,
            at.2,
            short(&self.key),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The apt sources of the tree and their package indices now.
    fn archive_state(&mut self) -> ArchiveState {
        if self.locked {
            return ArchiveState {
                locked: true,
                ..Default::default()
            };
        }
        let mut sources = crate::pkgdb::dpkg::sources(&self.target);
        if sources.is_empty() {
            sources = self.bootstrap_sources.clone();
        }
        let (indices, unknown) = self.checker.state(&sources, &self.arch);
        if !unknown.is_empty() {
            log::warn(&format!(
                "phase cache: cannot check these apt sources: {}; snapshots made now are trusted for DIB_CREATE_PHASE_CACHE_MAX_AGE={} s when the archive cannot be checked",
                unknown.join("; "),
                self.max_unchecked_age
            ));
        }
        ArchiveState {
            locked: false,
            indices,
            unchecked: unknown,
        }
    }

    // ---- the hooks tree ----

    /// Sets the hooks tree to the prepared tree plus snapshot `m`'s changes.
    fn set_hooks_state(&mut self, m: &SnapMeta) -> anyhow::Result<()> {
        if m.hooks_diff == self.applied {
            return Ok(());
        }
        if !self.applied.is_empty() {
            self.reset_hooks()?;
        }
        apply_hook_changes(&self.store.hooks_dir(&m.key), &m.hooks_diff, &self.hooks)?;
        self.applied = m.hooks_diff.clone();
        Ok(())
    }

    /// Puts back the hooks tree as prepared (undoing applied changes).
    pub fn reset_hooks(&mut self) -> anyhow::Result<()> {
        if self.applied.is_empty() {
            return Ok(());
        }
        // The prepared content lives only in the elements: prepare again.
        fs::remove_dir_all(&self.hooks)
            .with_context(|| format!("removing {}", self.hooks.display()))?;
        crate::hooks::tree::prepare(&self.plan, &self.hooks)?;
        self.applied.clear();
        Ok(())
    }

    /// The root phases are done: makes sure the final key has a snapshot
    /// (trailing phases without hooks add steps but no seal), and derives
    /// the outputs' key.
    pub fn finish_tree(
        &mut self,
        journal: &mut Journal,
        chroot: &mut Option<Entry>,
    ) -> anyhow::Result<()> {
        if self.last.as_ref().map(|m| &m.key) != Some(&self.key) {
            self.seal(journal, chroot, ("post-root.d", usize::MAX, ""))?;
        }
        let plan = self.plan.clone();
        self.output_key = Some(keys::output_key(
            &self.key,
            &output_components(&plan, &self.hooks, &self.output_env),
        ));
        Ok(())
    }

    // ---- outputs ----

    /// Stores the finished outputs (before they are committed) and the
    /// `<image>.d` directory, for a later build with the same inputs.
    pub fn store_outputs(
        &self,
        plan: &Plan,
        pending: &[(String, &Pending)],
        packages: &[Package],
    ) -> anyhow::Result<()> {
        let Some(okey) = self.output_key.as_ref() else {
            return Ok(());
        };
        let started = Instant::now();
        let staged = self.store.staging("out")?;
        let mut files = Vec::new();
        for (kind, p) in pending {
            copy_file(&p.tmp, &staged.join(kind))?;
            files.push(OutFile {
                kind: kind.clone(),
                sha256: crate::digest::sha256_of(&p.tmp)?,
            });
        }
        let side = side_dir(plan);
        let side_dir = if side.is_dir() {
            Cmd::new(
                "keeping the image's side directory in the phase cache",
                "cp",
            )
            .args(["-a", "--reflink=auto"])
            .arg(&side)
            .arg(staged.join("side"))
            .run()?;
            side.file_name().map(|n| n.to_string_lossy().into_owned())
        } else {
            None
        };
        let meta = OutMeta {
            format: phase::FORMAT,
            key: okey.clone(),
            tree_key: self.key.clone(),
            files,
            packages: packages.to_vec(),
            side_dir,
            created: phase::now(),
        };
        self.store.publish_outputs(&staged, &meta)?;
        log::info(&format!(
            "phase cache: kept the outputs ({}) in {:.1} s",
            short(okey),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Copies the cached outputs to their pending names, verifying each.
    pub fn load_outputs(
        &self,
        out: &OutMeta,
        plan: &Plan,
        journal: &mut Journal,
    ) -> anyhow::Result<Vec<Pending>> {
        let mut pending = Vec::new();
        for o in &plan.outputs {
            let f = out
                .files
                .iter()
                .find(|f| f.kind == o.kind.name())
                .with_context(|| format!("the cached outputs lack {}", o.kind))?;
            let p = Pending::recorded(journal, &o.path)?;
            copy_file(&self.store.out_dir(&out.key).join(o.kind.name()), &p.tmp)?;
            let got = crate::digest::sha256_of(&p.tmp)?;
            if got != f.sha256 {
                self.store.discard_outputs(&out.key);
                anyhow::bail!(
                    "the cached {} output is damaged (SHA256 {got}, stored as {}); it was removed, run the build again",
                    o.kind,
                    f.sha256
                );
            }
            pending.push(p);
        }
        if let Some(name) = &out.side_dir {
            let dest = side_dir(plan);
            fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
            let src = self.store.out_dir(&out.key).join("side");
            Cmd::new(format!("restoring {name}"), "cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&dest)
                .run()?;
        }
        Ok(pending)
    }

    /// Ends the build's use of the cache; sweeps old entries when no other
    /// build uses it.
    pub fn close(self) {
        self.store
            .sweep(&sweep_policy(&self.plan.settings.phase_cache));
    }
}

/// What the cache keeps, from the settings.
pub fn sweep_policy(s: &crate::plan::PhaseCacheSettings) -> phase::Sweep {
    phase::Sweep {
        max_age: Duration::from_secs(s.keep_days * 24 * 3600),
        keep_outputs: s.keep_outputs as usize,
        max_bytes: s.max_bytes,
    }
}

/// The observer that keys each hook and seals snapshots.
pub struct Sealer<'a> {
    pub cache: &'a mut PhaseCache,
    /// The chroot's first journal entry while it is up.
    pub chroot: &'a mut Option<Entry>,
}

impl HookObserver for Sealer<'_> {
    fn before(&mut self, phase: &str, name: &str, file: &Path) -> anyhow::Result<()> {
        let sha = crate::digest::path_digest(file);
        self.cache.push(&Step::Hook {
            phase,
            name,
            sha256: &sha,
        });
        Ok(())
    }

    fn after(&mut self, journal: &mut Journal, done: &HookDone) -> anyhow::Result<()> {
        let last = done.position == done.count;
        if last || done.elapsed >= self.cache.seal_after {
            self.cache
                .seal(journal, self.chroot, (done.phase, done.position, done.name))?;
        }
        Ok(())
    }
}

fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// The keyrings an archive's InRelease may be signed with: the ones the
/// build's elements name, the host's Debian and Ubuntu archive keyrings, and
/// the Ubuntu keyring the debootstrap element fetches into the cache.
fn archive_keyrings(plan: &Plan) -> Vec<PathBuf> {
    let env = &plan.resolved_env;
    let named = ["DIB_APT_KEYRING", "DIB_DEBIAN_KEYRING"]
        .iter()
        .filter_map(|k| env.get(*k).filter(|v| !v.is_empty()))
        .map(PathBuf::from);
    named
        .chain([
            PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
            PathBuf::from("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
            plan.settings
                .image_cache
                .join("debootstrap/keyrings/ubuntu-archive-keyring.gpg"),
        ])
        .collect()
}

/// DIB_DISTRIBUTION_MIRROR and DIB_RELEASE, as environment.d resolved them.
fn bootstrap_sources(plan: &Plan) -> Vec<crate::pkgdb::Source> {
    let env = &plan.resolved_env;
    match (env.get("DIB_DISTRIBUTION_MIRROR"), env.get("DIB_RELEASE")) {
        (Some(uri), Some(suite)) if !uri.is_empty() && !suite.is_empty() => {
            vec![crate::pkgdb::Source {
                uri: uri.clone(),
                suite: suite.clone(),
            }]
        }
        _ => Vec::new(),
    }
}

/// `<image>.d`: where the manifests element copies its files (DIB's place).
fn side_dir(plan: &Plan) -> PathBuf {
    plan.resolved_env
        .get("DIB_MANIFEST_SAVE_DIR")
        .map(|d| PathBuf::from(d.trim_end_matches('/')))
        .unwrap_or_else(|| PathBuf::from(format!("{}.d", plan.image_name)))
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    Cmd::new(format!("copying {}", from.display()), "cp")
        .args(["--reflink=auto", "--sparse=always"])
        .arg(from)
        .arg(to)
        .run()?;
    Ok(())
}

// ---- inputs ----

/// The base components of a build.
/// A reproducible build (SOURCE_DATE_EPOCH set) leaves the plan's
/// per-build variables out: they name host paths, and such a build keeps
/// them out of the image too (the manifests element skips them).
fn base_components(plan: &Plan, env: &BTreeMap<String, String>) -> Components {
    let mut c = keys::element_components(&plan.elements, &plan.element_paths);
    c.extend(keys::env_components(&keyed_env(plan, env, Scope::Tree)));
    c.insert("arch".into(), plan.arch.clone());
    c.insert("tool".into(), tool_digest(&plan.settings.data_dir));
    if let Some((path, _)) = plan.lock.locked() {
        c.insert("lockfile".into(), crate::digest::path_digest(path));
    }
    for (k, v) in host_versions(Shapes::Tree) {
        c.insert(format!("host {k}"), v);
    }
    c
}

/// The hook environment a key covers: the variables before environment.d,
/// with the values environment.d gave them (or the ones it added), of those
/// a file of the build in `scope` can read (see `cache::refs`; all of them
/// with DIB_CREATE_PHASE_CACHE_KEY_ENV=all). A reproducible build leaves the
/// plan's per-build variables out: they name host paths, and such a build
/// keeps them out of the image too (the manifests element skips them).
fn keyed_env(
    plan: &Plan,
    env: &BTreeMap<String, String>,
    scope: Scope,
) -> BTreeMap<String, String> {
    let refs = match plan.settings.phase_cache.key_all_env {
        true => References::everything("DIB_CREATE_PHASE_CACHE_KEY_ENV=all"),
        false => refs::of_build(
            &plan.elements,
            &plan.element_paths,
            &plan.settings.data_dir,
            scope,
        ),
    };
    let reproducible = plan.settings.source_date_epoch.is_some();
    let mut merged = env.clone();
    merged.extend(plan.resolved_env.clone());
    merged
        .into_iter()
        .filter(|(k, _)| refs.reads(k) || keys::READ_BY_DIB_CREATE.contains(&k.as_str()))
        .filter(|(k, _)| !(reproducible && plan.per_build.contains(k)))
        .collect()
}

/// What the outputs depend on beyond the tree: the output types and their
/// options, the disk (its graph and size rules), the finalise mode, the
/// variables the late phases can read, their hooks and the output tools'
/// versions.
/// `keyed`: the variables of [`keyed_env`] in [`Scope::Whole`].
fn output_components(plan: &Plan, hooks: &Path, keyed: &BTreeMap<String, String>) -> Components {
    let mut c = keys::env_components(keyed);
    let mut kinds: Vec<&str> = plan.outputs.iter().map(|o| o.kind.name()).collect();
    kinds.sort();
    c.insert("types".into(), kinds.join(","));
    let mut options = plan.output_options.clone();
    if !plan
        .outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::Docker | OutputKind::Oci))
    {
        // The tag of a container output; without one, the -o name it
        // defaults to changes nothing.
        options.docker_target.clear();
    }
    c.insert(
        "options".into(),
        format!("{options:?} finalise={:?}", plan.settings.finalise),
    );
    c.insert(
        "block-device".into(),
        plan.disk().map_or_else(String::new, |d| {
            crate::digest::fields(&[format!("{:?} {:?}", d.graph, d.size)])
        }),
    );
    for phase in crate::phase::stage(Stage::Late).map(Phase::name) {
        for name in list_hooks(hooks, phase) {
            c.insert(
                format!("hook {phase}/{name}"),
                crate::digest::path_digest(&hooks.join(phase).join(&name)),
            );
        }
    }
    for (k, v) in host_versions(Shapes::Outputs) {
        c.insert(format!("host {k}"), v);
    }
    c
}

/// This executable and the helpers it ships: any change to them may
/// change what a build does.
fn tool_digest(data: &Path) -> String {
    let exe = std::env::current_exe()
        .map(|p| crate::digest::path_digest(&p))
        .unwrap_or_else(|e| format!("unknown: {e}"));
    let helpers = [
        crate::paths::LIB,
        crate::paths::CHROOT_HELPERS,
        crate::paths::HOST_HELPERS,
    ]
    .map(|d| data.join(d));
    let mut fields = vec![env!("CARGO_PKG_VERSION").to_string(), exe];
    for d in helpers {
        for (rel, digest) in scan_files(&d) {
            fields.push(rel);
            fields.push(digest);
        }
    }
    crate::digest::fields(&fields)
}

/// Every file below `dir`, relative path → content digest, sorted.
fn scan_files(dir: &Path) -> Vec<(String, String)> {
    scan_hooks(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(rel, e)| match e {
            HookChange::File { sha256, .. } => Some((rel, sha256)),
            HookChange::Link { target, .. } => Some((rel, target)),
            _ => None,
        })
        .collect()
}

/// Installed versions of the host packages whose tools shape `what` (those
/// installed; others absent).
fn host_versions(what: Shapes) -> BTreeMap<String, String> {
    let names: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|t| t.shapes == what)
        .map(|t| t.package)
        .collect();
    crate::pkgdb::host().host_versions(&names)
}

// ---- hooks tree as data ----

/// The hooks tree below `dir` (files with mode and content digest, links,
/// directories).
fn scan_hooks(dir: &Path) -> anyhow::Result<HookTree> {
    let mut out = HookTree::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            let rel = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let m = p.symlink_metadata()?;
            let entry = if m.file_type().is_symlink() {
                HookChange::Link {
                    path: rel.clone(),
                    target: fs::read_link(&p)?.to_string_lossy().into_owned(),
                }
            } else if m.is_dir() {
                stack.push(p.clone());
                HookChange::Dir {
                    path: rel.clone(),
                    mode: m.mode() & 0o7777,
                }
            } else {
                HookChange::File {
                    path: rel.clone(),
                    mode: m.mode() & 0o7777,
                    sha256: crate::digest::path_digest(&p),
                }
            };
            out.insert(rel, entry);
        }
    }
    Ok(out)
}

/// What turns `from` into `to`: changed or new entries, then removals
/// (deepest first).
fn diff_hooks(from: &HookTree, to: &HookTree) -> Vec<HookChange> {
    let mut out: Vec<HookChange> = to
        .iter()
        .filter(|(k, v)| from.get(*k) != Some(*v))
        .map(|(_, v)| v.clone())
        .collect();
    let mut removed: Vec<&String> = from.keys().filter(|k| !to.contains_key(*k)).collect();
    removed.sort_by_key(|k| std::cmp::Reverse(k.len()));
    out.extend(
        removed
            .into_iter()
            .map(|k| HookChange::Removed { path: k.clone() }),
    );
    out
}

/// Copies the content of changed files into `dest` (a snapshot's `hooks/`).
fn store_hook_files(hooks: &Path, diff: &[HookChange], dest: &Path) -> anyhow::Result<()> {
    for c in diff {
        if let HookChange::File { path, .. } = c {
            let to = dest.join(path);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(hooks.join(path), &to)
                .with_context(|| format!("keeping hooks-tree file {path}"))?;
        }
    }
    Ok(())
}

/// Applies stored hooks-tree changes from `stored` to `hooks`.
fn apply_hook_changes(stored: &Path, diff: &[HookChange], hooks: &Path) -> anyhow::Result<()> {
    for c in diff {
        match c {
            HookChange::Dir { path, mode } => {
                let p = hooks.join(path);
                fs::create_dir_all(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            HookChange::File { path, mode, .. } => {
                let p = hooks.join(path);
                remove_any(&p)?;
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::copy(stored.join(path), &p)
                    .with_context(|| format!("restoring hooks-tree file {path}"))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode))?;
            }
            HookChange::Link { path, target } => {
                let p = hooks.join(path);
                remove_any(&p)?;
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &p)?;
            }
            HookChange::Removed { path } => remove_any(&hooks.join(path))?,
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> anyhow::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p)?,
        Ok(_) => fs::remove_file(p)?,
        Err(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_changes_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let hooks = d.path().join("hooks");
        fs::create_dir_all(hooks.join("install.d")).unwrap();
        fs::write(hooks.join("install.d/10-a"), "a").unwrap();
        fs::write(hooks.join("install.d/20-gone"), "g").unwrap();
        let fresh = scan_hooks(&hooks).unwrap();
        // What a build does to it (install-types links a hook in).
        std::os::unix::fs::symlink("../install.d/10-a", hooks.join("install.d/15-link")).unwrap();
        fs::write(hooks.join("install.d/10-a"), "changed").unwrap();
        fs::remove_file(hooks.join("install.d/20-gone")).unwrap();
        fs::create_dir(hooks.join("new.d")).unwrap();
        let after = scan_hooks(&hooks).unwrap();
        let diff = diff_hooks(&fresh, &after);
        let stored = d.path().join("stored");
        store_hook_files(&hooks, &diff, &stored).unwrap();
        // A new build prepares the tree afresh, then applies the changes.
        let again = d.path().join("again");
        fs::create_dir_all(again.join("install.d")).unwrap();
        fs::write(again.join("install.d/10-a"), "a").unwrap();
        fs::write(again.join("install.d/20-gone"), "g").unwrap();
        apply_hook_changes(&stored, &diff, &again).unwrap();
        assert_eq!(scan_hooks(&again).unwrap(), after);
    }

    #[test]
    fn start_positions() {
        let s = Start::Resume {
            phase: "install.d".into(),
            position: 3,
            packages: None,
        };
        assert_eq!(s.done_in("root.d"), Done::All);
        assert_eq!(s.done_in("install.d"), Done::Some(3));
        assert_eq!(s.done_in("extra"), Done::None);
        assert_eq!(Start::Cold.done_in("root.d"), Done::None);
    }
}
