//! Foreign architectures: make sure the kernel runs the target's binaries
//! through qemu-user. A binfmt entry is shared host configuration, so one we
//! register stays registered (and the log says so).

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

use crate::log;

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Ensures binaries of `dpkg_arch` run here through `emulator` (the plan's
/// choice; None: natively); registers the qemu entry if needed.
pub fn ensure(dpkg_arch: &str, emulator: Option<&str>) -> anyhow::Result<()> {
    let Some(q) = emulator else {
        if dpkg_arch != crate::arch::Arch::host().dpkg {
            log::info(&format!(
                "{dpkg_arch} programs run natively: this kernel runs them itself"
            ));
        }
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
    let rule = rule_file(q, dpkg_arch)?;
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

fn rule_file(q: &str, dpkg_arch: &str) -> anyhow::Result<PathBuf> {
    let candidates = [
        format!("/usr/lib/binfmt.d/qemu-{q}.conf"),
        format!("/etc/binfmt.d/qemu-{q}.conf"),
    ];
    let how = if dpkg_arch == "i386" {
        // qemu-user-static leaves the rule out on amd64, where the kernel
        // is expected to run i386 itself.
        "this kernel does not run i386 programs itself (no IA-32 emulation, or booted with ia32_emulation=0), and Debian's qemu-user-static has no i386 rule on amd64: boot a kernel with IA-32 emulation, or write a qemu-i386 rule to /etc/binfmt.d/qemu-i386.conf".to_string()
    } else {
        "install it with: apt-get install qemu-user-static".to_string()
    };
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "cannot run {dpkg_arch} binaries: no qemu-user binfmt rule found ({}); {how}",
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
        ensure(crate::arch::Arch::host().dpkg, None).unwrap();
    }

    #[test]
    fn a_missing_i386_rule_says_why_there_is_none() {
        let e = rule_file("no-such-emulator", "i386")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("IA-32 emulation") && e.contains("qemu-i386"),
            "{e}"
        );
        let e = rule_file("no-such-emulator", "armhf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apt-get install qemu-user-static"), "{e}");
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
