//! The only layer that touches the host: the command runner, mounts, loop
//! devices, namespaces, signals, the teardown journal, and qemu for boot tests.
//!
//! The executor reaches the host through [`Host`], held by the build's
//! [`Journal`]: every command, mount and loop device of a build goes through
//! it, and every undo too. [`RealHost`] does the work; [`fake::FakeHost`]
//! records it, so the executor's order of effects and undos is tested
//! without root.

pub mod fake;
pub mod files;
pub mod interrupt;
pub mod journal;
pub mod loopdev;
pub mod lvm;
pub mod mount;
pub mod procs;
pub mod qemu;
pub mod runner;
pub mod tools;
pub mod tree;

pub use journal::{Entry, Journal};
pub use runner::{Cmd, CmdError, Output};

use std::path::{Path, PathBuf};

/// True when this host's kernel runs `arch`'s binaries itself, with no
/// qemu-user. i386 on amd64 needs the kernel's IA-32 emulation, which a
/// kernel can be built without or boot with turned off (`ia32_emulation=0`):
/// `arch-test -n` runs a small i386 program to find out, ignoring binfmt
/// entries. Asked once per run.
pub fn runs_natively(arch: &crate::arch::Arch) -> bool {
    static IA32: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if arch == crate::arch::Arch::host() {
        return true;
    }
    if !arch.may_run_natively() {
        return false;
    }
    *IA32.get_or_init(|| {
        if !tools::on_path("arch-test") {
            crate::log::warn(&format!(
                "arch-test is not installed (apt-get install arch-test): assuming this amd64 kernel runs {} programs itself, as Debian's kernels do",
                arch.dpkg
            ));
            return true;
        }
        let native = Cmd::new("asking the kernel for IA-32 emulation", "arch-test")
            .args(["-n", arch.dpkg])
            .read()
            .is_ok();
        if !native {
            crate::log::info(&format!(
                "this kernel does not run {} binaries itself (arch-test -n {}): they run through qemu-user",
                arch.dpkg, arch.dpkg
            ));
        }
        native
    })
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What this host can do for a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub root: bool,
    pub loop_devices: bool,
}

/// The host side effects a build makes.
pub trait Host: Send {
    /// Runs a command as the runner does (its builder says where stdout goes).
    fn run(&mut self, cmd: Cmd) -> Result<Output, CmdError>;
    /// Mounts `source` at `target`.
    fn mount(&mut self, source: &mount::Source, target: &Path) -> anyhow::Result<()>;
    /// Attaches a loop device over `file` (a byte range of it when given).
    fn attach_loop(
        &mut self,
        file: &Path,
        offset: u64,
        size: Option<u64>,
    ) -> anyhow::Result<PathBuf>;
    /// Makes the partition nodes of a loop device; returns them by number.
    fn add_partitions(&mut self, dev: &Path) -> anyhow::Result<Vec<PathBuf>>;
    /// Undoes one journal entry.
    fn undo(&mut self, entry: &Entry) -> anyhow::Result<()>;
    /// Stops what a hook left running outside the chroot.
    fn stop_orphans(&mut self);
    /// Mount targets at or below `dir`, deepest first.
    fn mounts_under(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>>;
    /// What the host offers.
    fn capabilities(&self) -> Capabilities;
}

/// This machine.
pub struct RealHost;

impl Host for RealHost {
    fn run(&mut self, cmd: Cmd) -> Result<Output, CmdError> {
        cmd.run_here()
    }

    fn mount(&mut self, source: &mount::Source, target: &Path) -> anyhow::Result<()> {
        mount::mount(source, target)
    }

    fn attach_loop(
        &mut self,
        file: &Path,
        offset: u64,
        size: Option<u64>,
    ) -> anyhow::Result<PathBuf> {
        loopdev::attach(file, offset, size)
    }

    fn add_partitions(&mut self, dev: &Path) -> anyhow::Result<Vec<PathBuf>> {
        loopdev::add_partitions(dev)
    }

    fn undo(&mut self, entry: &Entry) -> anyhow::Result<()> {
        journal::undo_on_host(entry)
    }

    fn stop_orphans(&mut self) {
        procs::stop_orphans();
    }

    fn mounts_under(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        mount::mounts_under(dir)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            root: is_root(),
            loop_devices: loopdev::available(),
        }
    }
}

/// True when something accepts connections on the Unix socket at `path`.
pub fn socket_answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Whether gpg's keyring in `homedir` (None: gpg's default) holds `key`:
/// None when gpg is not installed. Only the public keyring is read, which
/// starts no gpg-agent.
pub fn gpg_knows_key(homedir: Option<&Path>, key: &str) -> Option<bool> {
    if !tools::on_path("gpg") {
        return None;
    }
    let mut c = Cmd::new("looking up the signing key", "gpg");
    if let Some(h) = homedir {
        c = c.arg("--homedir").arg(h);
    }
    Some(
        c.args(["--batch", "--list-keys", key])
            .capture()
            .run()
            .is_ok(),
    )
}
