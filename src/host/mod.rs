//! The only layer that touches the host: the command runner, mounts, loop
//! devices, namespaces, signals and the teardown journal.

pub mod interrupt;
pub mod log;
pub mod runner;
pub mod tools;

pub use runner::{Cmd, CmdError};
