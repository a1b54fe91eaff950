//! The only layer that touches the host: the command runner, mounts, loop
//! devices, namespaces, signals, the teardown journal, and qemu for boot tests.

pub mod files;
pub mod interrupt;
pub mod journal;
pub mod log;
pub mod loopdev;
pub mod mount;
pub mod procs;
pub mod qemu;
pub mod runner;
pub mod tools;

pub use journal::{Entry, Journal};
pub use runner::{Cmd, CmdError};

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
