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

/// Makes this process the reaper of its orphans: a process a hook leaves
/// behind (even one that left the hook's process group with setsid) becomes
/// our child when its parent exits, so [`stop_orphans`] can find it.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Our child processes, by /proc/PID/stat's parent field.
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    // The command may hold spaces and parentheses: parse after the last ')'.
                    let rest = &st[st.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<i32>().ok()
                })
                == Some(me)
        })
        .collect()
}

/// Stops every child process that is still running after a hook returned:
/// between commands the build runs nothing of its own, so each one is
/// something a hook left behind (a daemon, a forgotten `sleep &`). TERM,
/// then KILL, and each is reaped.
pub fn stop_orphans() {
    let pids = children();
    if pids.is_empty() {
        return;
    }
    log::warn(&format!(
        "stopping {} process(es) a hook left running: {pids:?}",
        pids.len()
    ));
    signal_all(&pids, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        reap();
        let left = children();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            signal_all(&left, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
            reap();
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Collects exited children, so they do not stay zombies.
fn reap() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
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
