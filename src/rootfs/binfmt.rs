//! Foreign architectures: make sure the kernel runs the target's binaries
//! through qemu-user. A binfmt entry is shared host configuration, so one we
//! register stays registered (and the log says so).

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

use crate::log;

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The qemu-user name of a dpkg architecture, when it needs emulation on this host.
pub fn qemu_name(dpkg_arch: &str) -> Option<&'static str> {
    let arch = crate::arch::Arch::parse(dpkg_arch).ok()?;
    (!crate::host::runs_natively(arch)).then_some(arch.qemu_user)
}

/// Ensures binaries of `dpkg_arch` run here; registers the qemu entry if needed.
pub fn ensure(dpkg_arch: &str) -> anyhow::Result<()> {
    let Some(q) = qemu_name(dpkg_arch) else {
        return Ok(());
    };
    ensure_mounted()?;
    let entry = Path::new(BINFMT_DIR).join(format!("qemu-{q}"));
    if entry.exists() {
        let status = std::fs::read_to_string(&entry).unwrap_or_default();
        if status.starts_with("enabled") {
            log::info(&format!("binfmt entry qemu-{q} is registered"));
            return Ok(());
        }
        bail!(
            "the binfmt entry {} exists but is disabled; enable it with: echo 1 > {}",
            entry.display(),
            entry.display()
        );
    }
    let rule = rule_file(q)?;
    let line =
        std::fs::read_to_string(&rule).with_context(|| format!("reading {}", rule.display()))?;
    let line = with_fix_binary_flag(line.trim());
    std::fs::write(Path::new(BINFMT_DIR).join("register"), &line)
        .with_context(|| format!("registering binfmt entry qemu-{q} from {}", rule.display()))?;
    log::step(&format!(
        "registered binfmt entry qemu-{q} for {dpkg_arch}; it stays registered, as shared host configuration"
    ));
    Ok(())
}

/// The F flag makes the kernel open the interpreter now, so it works inside
/// any chroot without copying qemu into the tree.
fn with_fix_binary_flag(line: &str) -> String {
    let mut fields: Vec<String> = line.split(':').map(String::from).collect();
    if let Some(flags) = fields.last_mut()
        && !flags.contains('F')
    {
        flags.push('F');
    }
    fields.join(":")
}

fn rule_file(q: &str) -> anyhow::Result<PathBuf> {
    let candidates = [
        format!("/usr/lib/binfmt.d/qemu-{q}.conf"),
        format!("/etc/binfmt.d/qemu-{q}.conf"),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "cannot run {q} binaries: no qemu-user binfmt rule found ({}); install it with: apt-get install qemu-user-static",
                candidates.join(", ")
            )
        })
}

fn ensure_mounted() -> anyhow::Result<()> {
    if Path::new(BINFMT_DIR).join("register").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("binfmt_misc"),
        BINFMT_DIR,
        Some("binfmt_misc"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting binfmt_misc (is the binfmt_misc module available?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_needs_nothing() {
        assert_eq!(qemu_name(crate::arch::Arch::host().dpkg), None);
    }

    #[test]
    fn adds_fix_binary_flag() {
        assert_eq!(
            with_fix_binary_flag(":qemu-x:M::ab:cd:/i:OP"),
            ":qemu-x:M::ab:cd:/i:OPF"
        );
        assert_eq!(
            with_fix_binary_flag(":qemu-x:M::ab:cd:/i:OPF"),
            ":qemu-x:M::ab:cd:/i:OPF"
        );
    }
}
