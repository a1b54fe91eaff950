//! The phase-cache store under `<cache>/phase-cache` (see `docs/phase-cache.md`).
//!
//! ```text
//! snap/<key>/meta.json   a snapshot: where in the build it was taken, its
//!                        layer stack, its trail of steps, the archive state
//! snap/<key>/tree/       the overlayfs upper layer sealed at that point
//! snap/<key>/hooks/      hooks-tree files the build changed (install-types)
//! snap/<key>/used        touched on every use (for the age-based sweep)
//! out/<key>/meta.json    a finished build's outputs, reused when nothing changed
//! out/<key>/<type>       ... one file per output type (+ side/ for <image>.d)
//! tmp/<pid>-*            entries being written; a dead writer's are removed
//! lock                   flock: shared while a build uses the cache,
//!                        exclusive (non-blocking) for the sweep
//! ```
//!
//! An entry appears only by renaming a complete directory (meta.json written
//! and synced last) into `snap/` or `out/`, so a killed writer leaves only a
//! `tmp/` entry. Entries are removed by renaming them into `tmp/` first, so a
//! half-removed entry is never seen either. Layers are immutable once
//! published; a layer whose stat digest no longer matches its meta (disk
//! trouble, a hand edit) is reported and discarded, never used.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::keys::Components;
use crate::log;
use crate::pkgdb::Package;

/// Bumped when the layout or the meaning of keys changes.
pub const FORMAT: u32 = 1;

/// How one hooks-tree path differs from the freshly prepared tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HookChange {
    Dir {
        path: String,
        mode: u32,
    },
    /// Content stored under the snapshot's `hooks/<path>`.
    File {
        path: String,
        mode: u32,
        sha256: String,
    },
    Link {
        path: String,
        target: String,
    },
    Removed {
        path: String,
    },
}

/// What the archive looked like when a snapshot was taken.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchiveState {
    /// A locked build: the lockfile (a base component) pins every package.
    pub locked: bool,
    /// Release file URL → digest of its package indices for the build's
    /// architecture, for every apt source in the tree.
    pub indices: BTreeMap<String, String>,
    /// Sources that could not be checked when the snapshot was taken.
    #[serde(default)]
    pub unchecked: Vec<String>,
}

/// One sealed point of a build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapMeta {
    pub format: u32,
    pub key: String,
    /// The previous snapshot of the build that made this one.
    pub parent: Option<String>,
    /// Snapshot keys whose `tree/` form the overlay stack, bottom first.
    pub layers: Vec<String>,
    /// Stat digest of this snapshot's own `tree/`, when it added a layer.
    pub tree_digest: Option<String>,
    /// The phase ("extra" for `-p`) and how many of its hooks had run.
    pub phase: String,
    pub position: usize,
    /// The last hook that ran (empty for `-p`).
    pub hook: String,
    /// Every step from the base, described (for "what changed" messages).
    pub trail: Vec<String>,
    pub components: Components,
    /// Cumulative hooks-tree changes since the tree was prepared.
    pub hooks_diff: Vec<HookChange>,
    pub archive: ArchiveState,
    /// The tree's packages, once they were captured (after post-install.d).
    pub packages: Option<Vec<Package>>,
    pub created: u64,
}

/// One stored output file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub sha256: String,
}

/// A finished build's outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutMeta {
    pub format: u32,
    pub key: String,
    /// The snapshot the outputs were made from.
    pub tree_key: String,
    pub files: Vec<OutFile>,
    pub packages: Vec<Package>,
    /// Name of the `<image>.d` directory stored under `side/`, if any.
    pub side_dir: Option<String>,
    pub created: u64,
}

/// The store, held open (shared lock) for one build.
pub struct Store {
    root: PathBuf,
    lock: Option<Flock<File>>,
}

impl Store {
    /// Opens (creating) the store under `cache`, takes the shared lock and
    /// removes entries that dead writers left in `tmp/`.
    pub fn open(cache: &Path) -> anyhow::Result<Store> {
        let root = cache.join("phase-cache");
        for d in ["snap", "out", "tmp"] {
            fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        let lock = lock_file(&root.join("lock"), FlockArg::LockShared)?;
        let store = Store {
            root,
            lock: Some(lock),
        };
        store.remove_dead_tmp();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snap_dir(&self, key: &str) -> PathBuf {
        self.root.join("snap").join(key)
    }

    /// The sealed layer of snapshot `key`.
    pub fn tree_dir(&self, key: &str) -> PathBuf {
        self.snap_dir(key).join("tree")
    }

    /// Changed hooks-tree files of snapshot `key`.
    pub fn hooks_dir(&self, key: &str) -> PathBuf {
        self.snap_dir(key).join("hooks")
    }

    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.root.join("out").join(key)
    }

    /// The snapshot `key`, if stored and readable. An unreadable one is
    /// discarded (it cannot have been published that way: someone edited it).
    pub fn snapshot(&self, key: &str) -> Option<SnapMeta> {
        self.read_meta(&self.snap_dir(key), key)
    }

    /// The stored outputs `key`, if any.
    pub fn outputs(&self, key: &str) -> Option<OutMeta> {
        self.read_meta(&self.out_dir(key), key)
    }

    fn read_meta<T: serde::de::DeserializeOwned + HasKey>(
        &self,
        dir: &Path,
        key: &str,
    ) -> Option<T> {
        let text = fs::read_to_string(dir.join("meta.json")).ok()?;
        match serde_json::from_str::<T>(&text) {
            Ok(m) if m.key() == key && m.format() == FORMAT => Some(m),
            Ok(_) => None,
            Err(e) => {
                log::warn(&format!(
                    "phase cache: {} is unreadable ({e}); removing it",
                    dir.display()
                ));
                self.remove(dir);
                None
            }
        }
    }

    /// Every stored snapshot (for explaining a miss).
    pub fn snapshots(&self) -> Vec<SnapMeta> {
        let Ok(rd) = fs::read_dir(self.root.join("snap")) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .filter_map(|e| self.snapshot(&e.file_name().to_string_lossy()))
            .collect()
    }

    /// A fresh directory under `tmp/` to assemble an entry in.
    pub fn staging(&self, what: &str) -> anyhow::Result<PathBuf> {
        let d = tempfile::Builder::new()
            .prefix(&format!("{}-{what}-", std::process::id()))
            .tempdir_in(self.root.join("tmp"))
            .context("creating a phase-cache staging directory")?
            .keep();
        Ok(d)
    }

    /// Publishes the snapshot assembled in `staged`. When another build
    /// published the same key first, theirs is kept (same inputs) and
    /// returned; ours is removed.
    pub fn publish_snapshot(&self, staged: &Path, meta: &SnapMeta) -> anyhow::Result<SnapMeta> {
        write_meta(staged, meta)?;
        let dest = self.snap_dir(&meta.key);
        if self.publish(staged, &dest)? {
            return Ok(meta.clone());
        }
        self.snapshot(&meta.key).with_context(|| {
            format!(
                "reading the snapshot {} another build wrote",
                dest.display()
            )
        })
    }

    /// Publishes outputs assembled in `staged`; keeps an existing entry.
    pub fn publish_outputs(&self, staged: &Path, meta: &OutMeta) -> anyhow::Result<()> {
        write_meta(staged, meta)?;
        self.publish(staged, &self.out_dir(&meta.key))?;
        Ok(())
    }

    /// Renames `staged` to `dest`; false (and `staged` removed) when `dest`
    /// already exists.
    fn publish(&self, staged: &Path, dest: &Path) -> anyhow::Result<bool> {
        // Measured once here, where the files are fresh, so that the sweep
        // at the end of every build need not walk the whole cache.
        fs::write(staged.join(BYTES), disk_usage(staged).to_string())
            .with_context(|| format!("recording the size of {}", staged.display()))?;
        match fs::rename(staged, dest) {
            Ok(()) => {
                touch(dest);
                Ok(true)
            }
            Err(e) if dest.join("meta.json").exists() => {
                log::debug(&format!(
                    "phase cache: {} exists already ({e}); keeping it",
                    dest.display()
                ));
                self.remove(staged);
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("publishing {}", dest.display())),
        }
    }

    /// Marks snapshots (and so their layers) as used now.
    pub fn touch_snapshots<'k>(&self, keys: impl IntoIterator<Item = &'k String>) {
        for k in keys {
            touch(&self.snap_dir(k));
        }
    }

    pub fn touch_outputs(&self, key: &str) {
        touch(&self.out_dir(key));
    }

    /// Removes snapshot `key` (a corrupt one).
    pub fn discard_snapshot(&self, key: &str) {
        self.remove(&self.snap_dir(key));
    }

    pub fn discard_outputs(&self, key: &str) {
        self.remove(&self.out_dir(key));
    }

    /// Moves `dir` into `tmp/` (atomically out of sight), then deletes it.
    fn remove(&self, dir: &Path) {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let trash = self
            .root
            .join("tmp")
            .join(format!("{}-trash-{name}", std::process::id()));
        if fs::rename(dir, &trash).is_ok()
            && let Err(e) = fs::remove_dir_all(&trash)
        {
            log::warn(&format!(
                "phase cache: could not remove {}: {e}",
                trash.display()
            ));
        }
    }

    fn remove_dead_tmp(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: Option<u32> = name.split('-').next().and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| Path::new("/proc").join(p.to_string()).exists());
            if !alive {
                log::info(&format!(
                    "phase cache: removing {}, left by a killed build",
                    e.path().display()
                ));
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// Drops the shared lock; then, if no other build uses the cache,
    /// sweeps it (see [`Store::sweep_now`]).
    pub fn sweep(mut self, policy: &Sweep) {
        let Some(shared) = self.lock.take() else {
            return;
        };
        let Ok(file) = shared.unlock() else { return };
        let Ok(_exclusive) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            log::debug("phase cache: another build uses the cache; not sweeping");
            return;
        };
        let swept = self.sweep_now(policy);
        if swept.removed > 0 {
            log::info(&swept.describe());
        }
    }

    /// `--cache-prune`: sweeps the cache under `cache` now; refused while a
    /// build uses it (its layers are mounted from there).
    pub fn prune(cache: &Path, policy: &Sweep) -> anyhow::Result<Swept> {
        let root = cache.join("phase-cache");
        if !root.join("lock").exists() {
            return Ok(Swept::default());
        }
        let _exclusive =
            lock_file(&root.join("lock"), FlockArg::LockExclusiveNonblock).map_err(|_| {
                anyhow::anyhow!(
                    "a build is using the phase cache in {}; prune it when no build runs",
                    root.display()
                )
            })?;
        let store = Store { root, lock: None };
        store.remove_dead_tmp();
        Ok(store.sweep_now(policy))
    }

    /// Removes snapshots unused for longer than the policy keeps them, all
    /// but the newest output entries, and then the least recently used
    /// entries until the cache fits its size cap. A snapshot goes with the
    /// snapshots stacked on it (they need its layer). Only with the cache
    /// held exclusively: no build has a layer mounted.
    fn sweep_now(&self, policy: &Sweep) -> Swept {
        let mut entries = self.entries();
        let before: u64 = entries.iter().map(|e| e.bytes).sum();
        let now = std::time::SystemTime::now();
        let mut doomed: HashSet<PathBuf> = HashSet::new();
        let mut outputs_seen = 0;
        for e in &entries {
            let old = now.duration_since(e.used).unwrap_or_default() > policy.max_age;
            let surplus = e.is_output && {
                outputs_seen += 1;
                outputs_seen > policy.keep_outputs
            };
            if old || surplus {
                doomed.insert(e.dir.clone());
            }
        }
        let mut size: u64 = entries
            .iter()
            .filter(|e| !doomed.contains(&e.dir))
            .map(|e| e.bytes)
            .sum();
        // Least recently used first; of equals, the most stacked first.
        for e in entries.iter().rev() {
            if size <= policy.max_bytes {
                break;
            }
            if doomed.insert(e.dir.clone()) {
                size = size.saturating_sub(e.bytes);
            }
        }
        cascade(&mut doomed, &entries);
        entries.retain(|e| doomed.contains(&e.dir));
        for e in &entries {
            self.remove(&e.dir);
        }
        let freed: u64 = entries.iter().map(|e| e.bytes).sum();
        Swept {
            removed: entries.len(),
            bytes_before: before,
            bytes_after: before - freed,
        }
    }

    /// Every snapshot and output entry, most recently used first.
    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for sub in ["snap", "out"] {
            let Ok(rd) = fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for dir in rd.filter_map(Result::ok).map(|e| e.path()) {
                let used = fs::metadata(dir.join("used"))
                    .or_else(|_| fs::metadata(&dir))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let layers = match sub {
                    "snap" => read_json::<SnapMeta>(&dir.join("meta.json"))
                        .map(|m| m.layers)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                let recorded = fs::read_to_string(dir.join(BYTES))
                    .ok()
                    .and_then(|b| b.trim().parse().ok());
                out.push(Entry {
                    bytes: recorded.unwrap_or_else(|| disk_usage(&dir)),
                    is_output: sub == "out",
                    used,
                    layers,
                    dir,
                });
            }
        }
        out.sort_by(|a, b| {
            b.used
                .cmp(&a.used)
                .then_with(|| a.layers.len().cmp(&b.layers.len()))
        });
        out
    }
}

/// The file in each entry that records its size on disk.
const BYTES: &str = "bytes";

/// What a sweep may keep.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// Snapshots and outputs unused for longer are removed.
    pub max_age: std::time::Duration,
    /// Output entries kept (the newest).
    pub keep_outputs: usize,
    /// The whole cache's size cap (bytes on disk).
    pub max_bytes: u64,
}

/// What a sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Swept {
    pub fn describe(&self) -> String {
        format!(
            "phase cache: swept {} entries: {} MiB before, {} MiB now",
            self.removed,
            self.bytes_before >> 20,
            self.bytes_after >> 20
        )
    }
}

/// One snapshot or output entry of the store.
struct Entry {
    dir: PathBuf,
    bytes: u64,
    is_output: bool,
    used: std::time::SystemTime,
    /// The snapshot keys whose layers this one stacks on (itself included).
    layers: Vec<String>,
}

/// Adds to `doomed` every snapshot stacked on a doomed one.
fn cascade(doomed: &mut HashSet<PathBuf>, entries: &[Entry]) {
    loop {
        let gone: HashSet<String> = doomed
            .iter()
            .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let more: Vec<PathBuf> = entries
            .iter()
            .filter(|e| !doomed.contains(&e.dir))
            .filter(|e| {
                let own = e.dir.file_name().map(|n| n.to_string_lossy().into_owned());
                e.layers
                    .iter()
                    .any(|l| Some(l) != own.as_ref() && gone.contains(l))
            })
            .map(|e| e.dir.clone())
            .collect();
        if more.is_empty() {
            return;
        }
        doomed.extend(more);
    }
}

/// Bytes a directory takes on disk (allocated blocks, each inode once).
fn disk_usage(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                todo.push(e.path());
            }
            if seen.insert((m.dev(), m.ino())) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(p).ok()?).ok()
}

trait HasKey {
    fn key(&self) -> &str;
    fn format(&self) -> u32;
}

impl HasKey for SnapMeta {
    fn key(&self) -> &str {
        &self.key
    }
    fn format(&self) -> u32 {
        self.format
    }
}

impl HasKey for OutMeta {
    fn key(&self) -> &str {
        &self.key
    }
    fn format(&self) -> u32 {
        self.format
    }
}

fn lock_file(p: &Path, how: FlockArg) -> anyhow::Result<Flock<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .with_context(|| format!("opening the lock file {}", p.display()))?;
    Flock::lock(f, how).map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", p.display()))
}

/// Writes `meta.json` into `dir` and syncs it (the last file of an entry).
fn write_meta<T: Serialize>(dir: &Path, meta: &T) -> anyhow::Result<()> {
    let p = dir.join("meta.json");
    let text = serde_json::to_string_pretty(meta).context("serialising phase-cache metadata")?;
    let mut f = File::create(&p).with_context(|| format!("writing {}", p.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", p.display()))
}

fn touch(dir: &Path) {
    let _ = fs::write(dir.join("used"), b"");
}

/// A digest of a tree's shape and metadata (path, type, mode, owner, size,
/// mtime, device number, link target), without reading file contents: it
/// notices a truncated, removed or replaced file at the cost of one walk.
pub fn tree_digest(dir: &Path) -> anyhow::Result<String> {
    let mut h = Vec::<u8>::new();
    let mut hasher = sha2::Sha256::default();
    use sha2::Digest;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&d)
            .with_context(|| format!("reading {}", d.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            let m = p
                .symlink_metadata()
                .with_context(|| format!("reading {}", p.display()))?;
            let rel = p.strip_prefix(dir).unwrap_or(&p);
            h.clear();
            h.extend_from_slice(rel.as_os_str().as_encoded_bytes());
            let link = if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap_or_default()
            } else {
                PathBuf::new()
            };
            let size = if m.is_dir() { 0 } else { m.size() };
            let _ = write!(
                h,
                "\0{:o} {} {} {} {}.{} {} ",
                m.mode(),
                m.uid(),
                m.gid(),
                size,
                m.mtime(),
                m.mtime_nsec(),
                m.rdev()
            );
            h.extend_from_slice(link.as_os_str().as_encoded_bytes());
            h.push(b'\n');
            hasher.update(&h);
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(crate::digest::hex(&hasher.finalize()))
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> SnapMeta {
        SnapMeta {
            format: FORMAT,
            key: key.into(),
            parent: None,
            layers: vec![key.into()],
            tree_digest: None,
            phase: "install.d".into(),
            position: 1,
            hook: "50-x".into(),
            trail: vec![],
            components: Components::new(),
            hooks_diff: vec![],
            archive: ArchiveState::default(),
            packages: None,
            created: now(),
        }
    }

    /// Publishes snapshot `key` stacked on `below`, with `bytes` of tree,
    /// then waits a little so that the next one is used later.
    fn snapshot_of(s: &Store, key: &str, below: &[&str], bytes: usize) {
        let st = s.staging("snap").unwrap();
        fs::create_dir_all(st.join("tree")).unwrap();
        fs::write(st.join("tree/data"), vec![7u8; bytes]).unwrap();
        let mut m = meta(key);
        m.layers = below
            .iter()
            .map(|k| k.to_string())
            .chain([key.to_string()])
            .collect();
        s.publish_snapshot(&st, &m).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    fn forever(max_bytes: u64) -> Sweep {
        Sweep {
            max_age: std::time::Duration::from_secs(3600),
            keep_outputs: 2,
            max_bytes,
        }
    }

    #[test]
    fn the_size_cap_removes_the_least_recently_used_and_what_stacks_on_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        snapshot_of(&s, "base", &[], 1 << 20);
        snapshot_of(&s, "child", &["base"], 1 << 20);
        snapshot_of(&s, "other", &[], 1 << 20);
        // `other` is the newest; using `child` touches its layers too.
        s.touch_snapshots(&["base".to_string(), "child".to_string()]);
        let all = s.sweep_now(&forever(u64::MAX));
        assert_eq!(all.removed, 0);
        // Room for about two: `other` (least recently used now) goes.
        let swept = s.sweep_now(&forever(all.bytes_before * 2 / 3 + 4096));
        assert_eq!(swept.removed, 1, "{swept:?}");
        assert!(s.snapshot("other").is_none());
        assert!(s.snapshot("base").is_some() && s.snapshot("child").is_some());
        // Room for one: `child` goes first (it stacks on `base`), but `base`
        // must go as well to fit, and nothing may keep a missing layer.
        let swept = s.sweep_now(&forever(1 << 19));
        assert_eq!(swept.removed, 2, "{swept:?}");
        assert!(s.snapshots().is_empty());
    }

    #[test]
    fn a_removed_layer_takes_the_snapshots_on_it_along() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        snapshot_of(&s, "base", &[], 4096);
        snapshot_of(&s, "child", &["base"], 4096);
        // `base` alone is old; `child` is newer but needs it.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let f = File::options()
            .write(true)
            .open(s.snap_dir("base").join("used"));
        if let Ok(f) = f {
            f.set_modified(old).unwrap();
        } else {
            File::create(s.snap_dir("base").join("used"))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let swept = s.sweep_now(&forever(u64::MAX));
        assert_eq!(swept.removed, 2, "{swept:?}");
    }

    #[test]
    fn prune_is_refused_while_a_build_holds_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let held = Store::open(d.path()).unwrap();
        snapshot_of(&held, "a", &[], 4096);
        let err = Store::prune(d.path(), &forever(0)).unwrap_err();
        assert!(
            format!("{err}").contains("a build is using the phase cache"),
            "{err}"
        );
        drop(held);
        let swept = Store::prune(d.path(), &forever(0)).unwrap();
        assert_eq!(swept.removed, 1);
        assert!(swept.bytes_after < swept.bytes_before);
    }

    #[test]
    fn publish_is_atomic_and_first_writer_wins() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(s.snapshot("k").is_none());
        let a = s.staging("snap").unwrap();
        fs::create_dir(a.join("tree")).unwrap();
        fs::write(a.join("tree/f"), "a").unwrap();
        s.publish_snapshot(&a, &meta("k")).unwrap();
        assert_eq!(s.snapshot("k").unwrap().hook, "50-x");
        // A second writer of the same key keeps the first entry.
        let b = s.staging("snap").unwrap();
        fs::create_dir(b.join("tree")).unwrap();
        fs::write(b.join("tree/f"), "b").unwrap();
        let mut m = meta("k");
        m.hook = "other".into();
        assert_eq!(s.publish_snapshot(&b, &m).unwrap().hook, "50-x");
        assert_eq!(fs::read_to_string(s.tree_dir("k").join("f")).unwrap(), "a");
        assert!(!b.exists());
    }

    #[test]
    fn half_written_and_corrupt_entries_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        // A killed writer's staging directory (pid that cannot exist).
        let dead = s.root().join("tmp/4194304999-snap-x");
        fs::create_dir_all(dead.join("tree")).unwrap();
        // A snapshot with garbage metadata.
        let bad = s.root().join("snap/bad");
        fs::create_dir_all(&bad).unwrap();
        fs::write(bad.join("meta.json"), "{not json").unwrap();
        // A snapshot without metadata (cannot be published so; ignored).
        fs::create_dir_all(s.root().join("snap/nometa/tree")).unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert!(!dead.exists(), "dead writer's entry removed");
        assert!(s.snapshot("bad").is_none());
        assert!(!bad.exists(), "corrupt entry removed");
        assert!(s.snapshot("nometa").is_none());
    }

    #[test]
    fn tree_digest_notices_changes() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("a")).unwrap();
        fs::write(d.path().join("a/f"), "123").unwrap();
        let one = tree_digest(d.path()).unwrap();
        assert_eq!(tree_digest(d.path()).unwrap(), one);
        fs::write(d.path().join("a/f"), "12").unwrap();
        assert_ne!(tree_digest(d.path()).unwrap(), one);
    }

    #[test]
    fn sweep_keeps_the_newest_outputs() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        for k in ["a", "b", "c"] {
            let st = s.staging("out").unwrap();
            s.publish_outputs(
                &st,
                &OutMeta {
                    format: FORMAT,
                    key: k.into(),
                    tree_key: "t".into(),
                    files: vec![],
                    packages: vec![],
                    side_dir: None,
                    created: now(),
                },
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        s.sweep(&Sweep {
            max_age: std::time::Duration::from_secs(3600),
            keep_outputs: 2,
            max_bytes: u64::MAX,
        });
        let s = Store::open(d.path()).unwrap();
        assert!(s.outputs("a").is_none());
        assert!(s.outputs("b").is_some() && s.outputs("c").is_some());
    }
}
