//! Lockfiles: pin every package a build installs, and build with exactly
//! those (see `docs/lockfile.md`).
//!
//! - [`lockfile`]: the deb822 format, its parser, writer and diff;
//! - [`record`]: `--lock`/`--lock-update`: dpkg snapshots after each package
//!   phase, resolved against the apt lists of the tree;
//! - [`repo`] and [`serve`]: `--lockfile`: a local apt repository holding only
//!   the locked .debs (from the content-addressed cache), served on 127.0.0.1;
//! - [`Session`]: what the executor calls between phases.

pub mod deb822;
pub mod lockfile;
pub mod record;
pub mod repo;
pub mod serve;

use anyhow::Context;
use std::path::{Path, PathBuf};

use crate::cache::{DebStore, Want};
use crate::cli::Cli;
use crate::error::UsageError;
use crate::hooks::PhaseRunner;
use crate::log;
use crate::plan::Plan;
use lockfile::{Lockfile, Phase};

/// The lockfile side of one build.
pub struct Session {
    mode: Mode,
    arch: String,
    cache: PathBuf,
    offline: bool,
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
    /// Reads the lock flags; fails early (exit 2) on a bad lockfile.
    pub fn from_cli(cli: &Cli, plan: &Plan) -> anyhow::Result<Session> {
        let cache = PathBuf::from(
            plan.hook_env
                .get("DIB_IMAGE_CACHE")
                .cloned()
                .unwrap_or_else(|| "/root/.cache/image-create".into()),
        );
        let mode = if let Some(out) = &cli.lock {
            Mode::Record {
                out: out.clone(),
                old: None,
                rec: Default::default(),
            }
        } else if let Some(out) = &cli.lock_update {
            let old = Lockfile::read(out).map_err(|e| UsageError(format!("--lock-update: {e}")))?;
            Mode::Record {
                out: out.clone(),
                old: Some(old),
                rec: Default::default(),
            }
        } else if let Some(path) = &cli.lockfile {
            let lock = Lockfile::read(path).map_err(|e| UsageError(e.to_string()))?;
            if lock.header.architecture != plan.arch {
                return Err(UsageError(format!(
                    "{} locks architecture {}, but this build is for {} (-a)",
                    path.display(),
                    lock.header.architecture,
                    plan.arch
                ))
                .into());
            }
            Mode::Locked {
                path: path.clone(),
                lock,
                server: None,
            }
        } else {
            Mode::Off
        };
        Ok(Session {
            mode,
            arch: plan.arch.clone(),
            cache,
            offline: cli.offline,
        })
    }

    /// Before root.d. A locked build fetches every pinned .deb, writes the
    /// local repository under `build`, serves it and tells the elements
    /// (`DIB_CREATE_LOCK_REPO`, `DIB_CREATE_LOCK_SUITE`, `DIB_CREATE_LOCKFILE`,
    /// `DIB_CREATE_LOCK_BOOTSTRAP_KEY`).
    pub fn before_root(&mut self, runner: &mut PhaseRunner, build: &Path) -> anyhow::Result<()> {
        let Mode::Locked { path, lock, server } = &mut self.mode else {
            return Ok(());
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
        runner.set_env("DIB_CREATE_LOCK_REPO", s.url());
        runner.set_env("DIB_CREATE_LOCK_SUITE", lock.header.release.clone());
        runner.set_env("DIB_CREATE_LOCKFILE", path.display().to_string());
        runner.set_env(
            "DIB_CREATE_LOCK_BOOTSTRAP_KEY",
            format!("{}-{}", lock.bootstrap_key(), env!("CARGO_PKG_VERSION")),
        );
        *server = Some(s);
        Ok(())
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
                let mut header = record::header_from_tree(target, &self.arch);
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
    let now = record::installed(target)?;
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
