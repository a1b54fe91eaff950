//! Processes still running inside a chroot: found through /proc/PID/root and
//! stopped, TERM first, then KILL. A build's chroot must be empty before its
//! mounts are taken down.

// Signals and fork/exec need libc calls: the crate denies unsafe code
// everywhere but in these host modules.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::log;

/// PIDs whose root directory is `root` or below it.
pub fn inside(root: &Path) -> Vec<i32> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/root"))
                .map(|r: PathBuf| r.starts_with(&root))
                .unwrap_or(false)
        })
        .collect()
}

/// Stops every process inside `root`; waits up to a few seconds for them.
pub fn kill_inside(root: &Path) -> anyhow::Result<()> {
    let pids = inside(root);
    if pids.is_empty() {
        return Ok(());
    }
    log::warn(&format!(
        "stopping {} process(es) still running in {}",
        pids.len(),
        root.display()
    ));
    signal_all(&pids, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !inside(root).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = inside(root);
    signal_all(&left, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !inside(root).is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = inside(root);
    if left.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("processes {left:?} in {} did not stop", root.display())
    }
}

fn signal_all(pids: &[i32], sig: i32) {
    for pid in pids {
        // SAFETY: kill(2) on pids we just read; a vanished pid is harmless.
        unsafe {
            libc::kill(*pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_runs_in_an_empty_dir() {
        let d = tempfile::tempdir().unwrap();
        assert!(inside(d.path()).is_empty());
        kill_inside(d.path()).unwrap();
    }
}
