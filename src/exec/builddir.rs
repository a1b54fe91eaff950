//! The build directory: one per build, holding the tree (`mnt`), the hooks
//! tree, the log and the teardown journal. A build killed before it could
//! clean up is found by the pid file and undone by the next run or by
//! `dib-create --cleanup DIR`.

use anyhow::{Context, bail};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::UsageError;
use crate::host::{Entry, Journal, loopdev, mount};
use crate::log;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};

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
        // A dot before the random part, as DIB's `dib_build.XXXXXXXX`:
        // source-repositories names its manifest after what follows the last
        // dot of TMP_MOUNT_PATH, and fails when there is none.
        let path = tempfile::Builder::new()
            .prefix(&format!("{safe}."))
            .tempdir_in(root)
            .with_context(|| format!("creating a build directory in {}", root.display()))?
            .keep();
        // Its real path: what the tree code records is real paths, and a
        // killed build's journal is checked against this one.
        let path = fs::canonicalize(&path)?;
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
    clear_immutable_deployments(path);
    fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// ostree-deploy's sysroot: ostree marks each deployment immutable as soon as
/// it is checked out, so a build stopped before the flag was cleared left
/// directories that cannot be removed until it is.
fn clear_immutable_deployments(build: &Path) {
    let stateroots = build.join(super::execute::SYSROOT).join("ostree/deploy");
    let Ok(roots) = fs::read_dir(&stateroots) else {
        return;
    };
    for root in roots.flatten() {
        let Ok(deps) = fs::read_dir(root.path().join("deploy")) else {
            continue;
        };
        for d in deps.flatten().filter(|d| d.path().is_dir()) {
            let _ = crate::host::Cmd::new("clearing a deployment's immutable flag", "chattr")
                .arg("-i")
                .arg(d.path())
                .run();
        }
    }
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
    check_owned_by_us(dir)?;
    let mut j = Journal::load(&journal)?;
    let refused = j.retain(|e| replayable(e, dir));
    for e in &refused {
        log::warn(&format!(
            "{}: not replaying journal entry `{}`: it lies outside this build directory",
            dir.display(),
            e.describe()
        ));
    }
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

/// Checks that the build root is ours alone, creating it (mode 0700) when
/// missing. It lies in a directory everyone may write to (/var/tmp): a root
/// made by another user could hold journals that tell us, as root, what to
/// delete.
pub fn check_build_root(root: &Path) -> Result<(), UsageError> {
    if root.symlink_metadata().is_err() {
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(root)
            .map_err(|e| UsageError(format!("creating the build root {}: {e}", root.display())))?;
    }
    check_owned_by_us(root)
}

/// `dir` is a real directory owned by us and writable by no one else.
fn check_owned_by_us(dir: &Path) -> Result<(), UsageError> {
    let m = dir
        .symlink_metadata()
        .map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    let why = if !m.is_dir() {
        Some("it is not a directory (a symlink?)".to_string())
    } else if m.uid() != me {
        Some(format!(
            "it belongs to uid {}, not to us (uid {me})",
            m.uid()
        ))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "others may write to it (mode {:o})",
            m.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(UsageError(format!(
            "refusing the build directory {}: {why}; remove it, or set DIB_CREATE_BUILD_ROOT to a directory only you can write",
            dir.display()
        ))),
    }
}

/// May a killed build's journal entry be undone? Only what lies inside its
/// own build directory: its mounts and files, a loop device whose backing
/// file is there, and its partial outputs (named by us, wherever `-o` was).
fn replayable(e: &Entry, dir: &Path) -> bool {
    let dir = &fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let inside = |p: &Path| p.starts_with(dir) && !p.components().any(|c| c.as_os_str() == "..");
    match e {
        Entry::Mount(p) | Entry::CreatedFile(p) | Entry::CreatedDir(p) | Entry::Chroot(p) => {
            inside(p)
        }
        Entry::Replaced(p, saved) => inside(p) && inside(saved),
        Entry::Loop(dev) => loopdev::backing_file(dev).is_some_and(|b| inside(&b)),
        Entry::Partial(p) => {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with('.') && name.ends_with(".dib-create-partial")
        }
    }
}

/// Cleans up build directories under `root` whose builds are no longer running.
pub fn cleanup_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let dir = e.path();
        if check_owned_by_us(&dir).is_err() {
            continue;
        }
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
                .starts_with("my_image.")
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
    fn a_replayed_journal_touches_nothing_outside_its_build_directory() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let victim = root.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let b = BuildDir::create(&root.path().join("builds"), "x").unwrap();
        let mut j = Journal::create(b.journal_path(), Box::new(crate::host::RealHost)).unwrap();
        let ours = b.path.join("mnt/ours");
        fs::write(&ours, "made by the build").unwrap();
        j.record(Entry::CreatedFile(victim.clone())).unwrap();
        j.record(Entry::CreatedFile(b.path.join("mnt/../../victim")))
            .unwrap();
        j.record(Entry::CreatedFile(ours.clone())).unwrap();
        std::mem::forget(j);
        fs::write(b.path.join(PID), "4194304999").unwrap();
        cleanup_stale(&root.path().join("builds"));
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!b.path.exists());
    }

    #[test]
    fn a_build_root_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        check_build_root(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_build_root(&root).unwrap_err().to_string();
        assert!(
            e.contains("others may write") && e.contains("DIB_CREATE_BUILD_ROOT"),
            "{e}"
        );
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert!(
            check_build_root(&link)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn cleanup_rejects_other_dirs() {
        let d = tempfile::tempdir().unwrap();
        let err = cleanup(d.path()).unwrap_err().to_string();
        assert!(err.contains("not a dib-create build directory"), "{err}");
    }
}
