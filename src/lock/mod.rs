//! Lockfiles: pin every package a build installs, and build with exactly
//! those (see `docs/lockfile.md`).
//!
//! - [`lockfile`]: the deb822 format, its parser, writer and diff;
//! - [`record`]: `--lock`/`--lock-update`: dpkg snapshots after each package
//!   phase, resolved against the apt lists of the tree;
//! - [`repo`] and [`serve`]: `--lockfile`: a local apt repository holding only
//!   the locked .debs (from the content-addressed cache), served on 127.0.0.1;
//! - [`Session`]: what the executor calls between phases.

pub mod lockfile;
pub mod record;
pub mod repo;
pub mod serve;

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cache::{DebStore, Want};
use crate::error::UsageError;
use crate::log;
use lockfile::{Lockfile, Phase};

/// What the command line asks of lockfiles, checked when the plan is made:
/// a lockfile to build from is read and parsed then, once.
#[derive(Clone, Debug)]
pub enum Request {
    Off,
    /// `--lock FILE`: build, then write FILE.
    Record {
        out: PathBuf,
    },
    /// `--lock-update FILE`: build, rewrite FILE, show what changed.
    Update {
        out: PathBuf,
        old: Lockfile,
    },
    /// `--lockfile FILE`: build exactly what FILE pins.
    Locked {
        path: PathBuf,
        lock: Lockfile,
    },
}

impl Request {
    /// Reads the lockfile a request names; a missing or malformed file, or
    /// one for another architecture, is bad input.
    pub fn read(
        lock: Option<&Path>,
        update: Option<&Path>,
        locked: Option<&Path>,
        arch: &str,
    ) -> Result<Request, UsageError> {
        if let Some(out) = lock {
            return Ok(Request::Record {
                out: out.to_path_buf(),
            });
        }
        if let Some(out) = update {
            let old = Lockfile::read(out).map_err(|e| UsageError(format!("--lock-update: {e}")))?;
            return Ok(Request::Update {
                out: out.to_path_buf(),
                old,
            });
        }
        let Some(path) = locked else {
            return Ok(Request::Off);
        };
        let lock = Lockfile::read(path).map_err(|e| UsageError(format!("--lockfile: {e}")))?;
        if lock.header.architecture != arch {
            return Err(UsageError(format!(
                "--lockfile {} locks architecture {}, but this build is for {arch} (-a)",
                path.display(),
                lock.header.architecture,
            )));
        }
        Ok(Request::Locked {
            path: path.to_path_buf(),
            lock,
        })
    }

    /// True when the build records a lockfile (every phase must run).
    pub fn records(&self) -> bool {
        matches!(self, Request::Record { .. } | Request::Update { .. })
    }

    /// The lockfile a locked build builds from.
    pub fn locked(&self) -> Option<(&Path, &Lockfile)> {
        match self {
            Request::Locked { path, lock } => Some((path, lock)),
            _ => None,
        }
    }

    /// What `--dry-run` shows.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Request::Off => serde_json::json!(null),
            Request::Record { out } => serde_json::json!({"record": out}),
            Request::Update { out, .. } => serde_json::json!({"update": out}),
            Request::Locked { path, lock } => serde_json::json!({
                "locked": path,
                "packages": lock.packages.len(),
                "source_date_epoch": lock.header.source_date_epoch,
            }),
        }
    }
}

/// The lockfile side of one build.
pub struct Session {
    mode: Mode,
    arch: String,
    cache: PathBuf,
    offline: bool,
    /// The build's SOURCE_DATE_EPOCH, recorded in a lockfile it writes.
    epoch: Option<u64>,
}

enum Mode {
    Off,
    /// `--lock FILE` or `--lock-update FILE` (then `old` holds the previous file).
    Record {
        out: PathBuf,
        old: Option<Lockfile>,
        rec: record::Recorder,
    },
    /// `--lockfile FILE`.
    Locked {
        path: PathBuf,
        lock: Lockfile,
        server: Option<serve::Server>,
    },
}

/// Downloads at once (the mirrors here are fine with this many).
const JOBS: usize = 8;

impl Session {
    /// The session for `request`, with the package cache at `cache`.
    pub fn new(
        request: &Request,
        arch: &str,
        cache: &Path,
        offline: bool,
        epoch: Option<u64>,
    ) -> Session {
        let mode = match request.clone() {
            Request::Off => Mode::Off,
            Request::Record { out } => Mode::Record {
                out,
                old: None,
                rec: Default::default(),
            },
            Request::Update { out, old } => Mode::Record {
                out,
                old: Some(old),
                rec: Default::default(),
            },
            Request::Locked { path, lock } => Mode::Locked {
                path,
                lock,
                server: None,
            },
        };
        Session {
            mode,
            arch: arch.to_string(),
            cache: cache.to_path_buf(),
            offline,
            epoch,
        }
    }

    /// Before root.d. A locked build fetches every pinned .deb, writes the
    /// local repository under `build`, serves it and tells the elements
    /// (`DIB_CREATE_LOCK_REPO`, `DIB_CREATE_LOCK_SUITE`, `DIB_CREATE_LOCKFILE`,
    /// `DIB_CREATE_LOCK_BOOTSTRAP_KEY`).
    /// Returns the variables to give the hooks.
    pub fn before_root(&mut self, build: &Path) -> anyhow::Result<BTreeMap<String, String>> {
        let Mode::Locked { path, lock, server } = &mut self.mode else {
            return Ok(BTreeMap::new());
        };
        let started = std::time::Instant::now();
        log::step(&format!(
            "fetching the {} packages of {} into {}",
            lock.packages.len(),
            path.display(),
            self.cache.display()
        ));
        let store = DebStore::open(&self.cache, self.offline)?;
        let wants: Vec<Want> = lock
            .packages
            .iter()
            .map(|p| Want {
                label: format!("{} {} {}", p.name, p.version, p.arch),
                sha256: p.sha256.clone(),
                size: p.size,
                urls: p.urls(&lock.header),
            })
            .collect();
        store
            .ensure_all(&wants, JOBS)
            .with_context(|| format!("fetching the packages pinned by {}", path.display()))?;
        let dir = build.join("lock-repo");
        repo::write(&dir, lock, &store).context("writing the local apt repository")?;
        let s = serve::Server::start(&dir).context("serving the local apt repository")?;
        log::step(&format!(
            "local apt repository {} at {} ({:.1} s)",
            dir.display(),
            s.url(),
            started.elapsed().as_secs_f64()
        ));
        let env = BTreeMap::from([
            ("DIB_CREATE_LOCK_REPO".to_string(), s.url()),
            (
                "DIB_CREATE_LOCK_SUITE".to_string(),
                lock.header.release.clone(),
            ),
            (
                "DIB_CREATE_LOCKFILE".to_string(),
                path.display().to_string(),
            ),
            (
                "DIB_CREATE_LOCK_BOOTSTRAP_KEY".to_string(),
                format!("{}-{}", lock.bootstrap_key(), env!("CARGO_PKG_VERSION")),
            ),
        ]);
        *server = Some(s);
        Ok(env)
    }

    /// After the phase cache restored a tree: its apt configuration names the
    /// local repository of the build that made the snapshot (another port).
    /// Points it at this build's; the line is the one
    /// `dpkg/root.d/50-dpkg-build-settings` writes.
    pub fn retarget(&self, target: &Path) -> anyhow::Result<()> {
        let Mode::Locked {
            lock,
            server: Some(s),
            ..
        } = &self.mode
        else {
            return Ok(());
        };
        let f = target.join("etc/apt/dib-create-lock/sources.list");
        if !f.exists() {
            return Ok(());
        }
        let line = format!(
            "deb [trusted=yes] {}/ {} main\n",
            s.url(),
            lock.header.release
        );
        std::fs::write(&f, line).with_context(|| format!("writing {}", f.display()))
    }

    /// After each package phase (`root.d`, `pre-install.d`, `install.d`,
    /// `extra` for `-p`, `post-install.d`) with the tree at `target`.
    /// Recording snapshots dpkg; after post-install.d it writes the lockfile,
    /// or, in a locked build, checks the installed set against it.
    pub fn after_phase(&mut self, phase: Phase, target: &Path) -> anyhow::Result<()> {
        if phase.lock_name().is_none() {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Off => Ok(()),
            Mode::Record { out, old, rec } => {
                rec.snapshot(phase, target).with_context(|| {
                    format!("recording the packages after {}", phase.lock_label())
                })?;
                harvest(&self.cache, target);
                if phase != Phase::PostInstall {
                    return Ok(());
                }
                let mut header = record::header_from_tree(target, &self.arch, self.epoch);
                if let Some(o) = old {
                    header.snapshot = o.header.snapshot.clone();
                }
                let lock = rec.finish(header)?;
                lock.write(out)?;
                log::step(&format!(
                    "wrote the lockfile {} ({} packages)",
                    out.display(),
                    lock.packages.len()
                ));
                if let Some(o) = old {
                    log::step(&format!(
                        "lockfile changes:\n{}",
                        lockfile::diff(o, &lock).render()
                    ));
                }
                Ok(())
            }
            Mode::Locked { path, lock, .. } if phase == Phase::PostInstall => {
                verify(lock, path, target)
            }
            Mode::Locked { .. } => Ok(()),
        }
    }

    /// A locked build's failure gets a hint: a package outside the lock
    /// cannot be installed.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        match &self.mode {
            Mode::Locked { path, .. } => e.context(format!(
                "this build installs only what {p} pins; if a hook asked for a package it does not pin, re-resolve it with `dib-create --lock-update {p} ...`",
                p = path.display()
            )),
            _ => e,
        }
    }

    /// Stops the repository server.
    pub fn close(&mut self) {
        if let Mode::Locked { server, .. } = &mut self.mode
            && let Some(s) = server.take()
        {
            s.close();
        }
    }
}

/// Keeps the .debs apt downloaded into the tree in the cache, so that the
/// first build from the new lockfile need not download them again. Best effort.
fn harvest(cache: &Path, target: &Path) {
    let Ok(rd) = std::fs::read_dir(target.join("var/cache/apt/archives")) else {
        return;
    };
    let Ok(store) = DebStore::open(cache, true) else {
        return;
    };
    let mut n = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "deb") && store.adopt(&p).is_ok() {
            n += 1;
        }
    }
    if n > 0 {
        log::info(&format!("kept {n} downloaded packages in the cache"));
    }
}

/// The installed packages must be exactly the locked ones.
fn verify(lock: &Lockfile, path: &Path, target: &Path) -> anyhow::Result<()> {
    let now = crate::pkgdb::dpkg::installed(target)?;
    let mut problems = Vec::new();
    for p in lock.installed() {
        match now.get(&p.key()) {
            None => problems.push(format!(
                "{}:{} {} is not installed",
                p.name, p.arch, p.version
            )),
            Some(v) if v != &p.version => problems.push(format!(
                "{}:{} is {v}, the lock pins {}",
                p.name, p.arch, p.version
            )),
            Some(_) => {}
        }
    }
    let locked: std::collections::HashSet<_> = lock.installed().map(|p| p.key()).collect();
    for ((n, a), v) in &now {
        if !locked.contains(&(n.clone(), a.clone())) {
            problems.push(format!("{n}:{a} {v} is installed but not pinned"));
        }
    }
    if problems.is_empty() {
        log::step(&format!(
            "installed packages match {} ({} packages)",
            path.display(),
            now.len()
        ));
        return Ok(());
    }
    anyhow::bail!(
        "the installed packages differ from {}:\n  {}\nre-resolve with `dib-create --lock-update {} ...`",
        path.display(),
        problems.join("\n  "),
        path.display()
    )
}

/// `--lock-diff OLD NEW`.
pub fn print_diff(old: &Path, new: &Path) -> anyhow::Result<()> {
    let a = Lockfile::read(old).map_err(|e| UsageError(e.to_string()))?;
    let b = Lockfile::read(new).map_err(|e| UsageError(e.to_string()))?;
    print!("{}", lockfile::diff(&a, &b).render());
    Ok(())
}
