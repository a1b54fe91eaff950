//! The build directory: one per build, holding the tree (`mnt`), the hooks
//! tree, the log and the teardown journal. A build killed before it could
//! clean up is found by the pid file and undone by the next run or by
//! `dib-create --cleanup DIR`.

use anyhow::{Context, bail};
use std::fs;
use std::path::{Path, PathBuf};

use crate::host::{Journal, mount};
use crate::log;

const JOURNAL: &str = "teardown.journal";
const PID: &str = "pid";

/// A live build directory.
pub struct BuildDir {
    pub path: PathBuf,
}

impl BuildDir {
    /// Creates a fresh build directory for image `name` under `root`.
    pub fn create(root: &Path, name: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = tempfile::Builder::new()
            .prefix(&format!("{safe}-"))
            .tempdir_in(root)
            .with_context(|| format!("creating a build directory in {}", root.display()))?
            .keep();
        fs::write(path.join(PID), std::process::id().to_string())?;
        for d in ["mnt", "hooks"] {
            fs::create_dir(path.join(d))?;
        }
        Ok(BuildDir { path })
    }

    pub fn target(&self) -> PathBuf {
        self.path.join("mnt")
    }

    pub fn hooks(&self) -> PathBuf {
        self.path.join("hooks")
    }

    pub fn journal_path(&self) -> PathBuf {
        self.path.join(JOURNAL)
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join("build.log")
    }

    /// Removes the directory. Refuses while anything is mounted below it:
    /// a recursive delete through a bind mount would destroy host files.
    pub fn remove(self) -> anyhow::Result<()> {
        remove_build_dir(&self.path)
    }
}

fn remove_build_dir(path: &Path) -> anyhow::Result<()> {
    let mounted = mount::mounts_under(path)?;
    if !mounted.is_empty() {
        bail!(
            "not removing {}: still mounted below it: {}",
            path.display(),
            mounted
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// Undoes what a killed build left in `dir` (its journal), then removes it.
pub fn cleanup(dir: &Path) -> anyhow::Result<()> {
    let journal = dir.join(JOURNAL);
    if !journal.exists() {
        bail!(
            "{} is not a dib-create build directory (no {JOURNAL}); pass the directory a build printed",
            dir.display()
        );
    }
    if let Some(pid) = owner_pid(dir)
        && pid != std::process::id()
        && process_alive(pid)
    {
        bail!(
            "{} belongs to a running build (pid {pid}); stop it first",
            dir.display()
        );
    }
    let j = Journal::load(&journal)?;
    let n = j.entries().len();
    // Mounts made in the killed build's private namespace died with it; the
    // journal still lists them, and unmounting what is not mounted is a no-op.
    j.close()?;
    for m in mount::mounts_under(dir)? {
        mount::unmount(&m)?;
    }
    log::step(&format!(
        "cleaned up {} ({n} journal entries undone)",
        dir.display()
    ));
    remove_build_dir(dir)
}

/// Cleans up build directories under `root` whose builds are no longer running.
pub fn cleanup_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let dir = e.path();
        let Some(pid) = owner_pid(&dir) else { continue };
        if process_alive(pid) {
            continue;
        }
        log::warn(&format!(
            "found the leftovers of a killed build in {}; cleaning up",
            dir.display()
        ));
        if let Err(err) = cleanup(&dir) {
            log::warn(&format!("could not clean up {}: {err:#}", dir.display()));
        }
    }
}

fn owner_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join(PID)).ok()?.trim().parse().ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_remove() {
        let root = tempfile::tempdir().unwrap();
        let b = BuildDir::create(root.path(), "my image").unwrap();
        assert!(b.target().is_dir() && b.hooks().is_dir());
        assert!(
            b.path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("my_image-")
        );
        let p = b.path.clone();
        b.remove().unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn stale_dir_is_cleaned() {
        let root = tempfile::tempdir().unwrap();
        let b = BuildDir::create(root.path(), "x").unwrap();
        Journal::create(b.journal_path(), Box::new(crate::host::RealHost)).unwrap();
        // A pid that cannot be running.
        fs::write(b.path.join(PID), "4194304999").unwrap();
        cleanup_stale(root.path());
        assert!(!b.path.exists());
    }

    #[test]
    fn cleanup_rejects_other_dirs() {
        let d = tempfile::tempdir().unwrap();
        let err = cleanup(d.path()).unwrap_err().to_string();
        assert!(err.contains("not a dib-create build directory"), "{err}");
    }
}
