//! SIGINT/SIGTERM handling: a signal sets a flag and stops every running child's
//! process group, so the orchestration unwinds through its normal error path and
//! the teardown journal runs. A second signal is not special: teardown is short
//! and must finish.

// Signals and fork/exec need libc calls: the crate denies unsafe code
// everywhere but in these host modules.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CHILDREN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Installs the handler thread. Call once, early in main.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            SIGNAL.store(sig, Ordering::SeqCst);
            REQUESTED.store(true, Ordering::SeqCst);
            for pid in CHILDREN.lock().unwrap().iter() {
                kill_group(*pid);
            }
        }
    });
    Ok(())
}

/// True once SIGINT or SIGTERM arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The signal that interrupted us, for the exit status (128 + n).
pub fn signal() -> Option<i32> {
    let s = SIGNAL.load(Ordering::SeqCst);
    (s != 0).then_some(s)
}

/// Terminates a child's whole process group (children run with setpgid(0,0)).
pub fn kill_group(pid: i32) {
    // SAFETY: plain syscalls on a pid we spawned.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGTERM);
    }
    let pid_copy = pid;
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        unsafe {
            libc::kill(-pid_copy, libc::SIGKILL);
        }
    });
}

/// Registers a running child so a signal reaches it; unregisters on drop.
pub struct ChildGuard(i32);

impl ChildGuard {
    pub fn register(pid: i32) -> Self {
        CHILDREN.lock().unwrap().insert(pid);
        if requested() {
            kill_group(pid);
        }
        ChildGuard(pid)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        CHILDREN.lock().unwrap().remove(&self.0);
    }
}
