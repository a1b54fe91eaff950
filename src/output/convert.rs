//! Outputs made by standard tools: qemu-img for qcow2, vhd, vmdk and any
//! other qemu-img format; mksquashfs for squashfs.

use std::path::Path;

use crate::host::Cmd;

/// The qemu-img format name of an output type (`vhd` is qemu's `vpc`).
pub fn qemu_format(kind: &str) -> &str {
    match kind {
        "vhd" => "vpc",
        other => other,
    }
}

/// Converts a raw disk image into `kind` at `dest`.
pub fn qemu_img(
    raw: &Path,
    dest: &Path,
    kind: &str,
    compress: bool,
    options: Option<&str>,
) -> anyhow::Result<()> {
    let fmt = qemu_format(kind);
    let mut c = Cmd::new(format!("converting the image to {kind}"), "qemu-img")
        .args(["convert", "-f", "raw", "-O", fmt]);
    if compress && fmt == "qcow2" {
        c = c.arg("-c");
    }
    if let Some(o) = options.filter(|o| !o.trim().is_empty()) {
        c = c.arg("-o").arg(o);
    }
    c.arg(raw).arg(dest).run()?;
    Ok(())
}

/// Writes a squashfs of the tree (pseudo filesystems left out).
pub fn squashfs(root: &Path, dest: &Path, mtime_clamp: Option<u64>) -> anyhow::Result<()> {
    let mut c = Cmd::new("writing the squashfs image", "mksquashfs")
        .arg(root)
        .arg(dest)
        .args([
            "-comp",
            "xz",
            "-noappend",
            "-no-recovery",
            "-no-progress",
            "-wildcards",
            "-e",
        ])
        .args(["proc/*", "sys/*", "dev/*", "run/*", "tmp/in_target.d"]);
    if let Some(t) = mtime_clamp {
        c = c.env("SOURCE_DATE_EPOCH", t.to_string());
    }
    c.run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn vhd_is_vpc() {
        assert_eq!(super::qemu_format("vhd"), "vpc");
        assert_eq!(super::qemu_format("vmdk"), "vmdk");
    }
}
