//! Outputs made by standard tools: qemu-img for qcow2, vhd, vmdk and any
//! other qemu-img format; mksquashfs for squashfs.

use std::path::Path;

use crate::host::{Cmd, Host};

/// The qemu-img format name of an output type (`vhd` is qemu's `vpc`).
pub fn qemu_format(kind: &str) -> &str {
    match kind {
        "vhd" => "vpc",
        other => other,
    }
}

/// Converts a raw disk image into `kind` at `dest`.
pub fn qemu_img(
    host: &mut dyn Host,
    raw: &Path,
    dest: &Path,
    kind: &str,
    compress: bool,
    options: Option<&str>,
) -> anyhow::Result<()> {
    let fmt = qemu_format(kind);
    let mut c = Cmd::new(format!("converting the image to {kind}"), "qemu-img")
        .args(["convert", "-f", "raw", "-O", fmt]);
    let options = options.filter(|o| !o.trim().is_empty());
    if compress && fmt == "qcow2" {
        c = c.arg("-c");
        if let Some(kind) = qcow2_compression(options) {
            c = c.arg("-o").arg(format!("compression_type={kind}"));
        }
    }
    if let Some(o) = options {
        c = c.arg("-o").arg(o);
    }
    host.run(c.arg(raw).arg(dest))?;
    Ok(())
}

/// The qcow2 compression we ask for, unless the user's options decide it.
/// zstd compresses a Debian image five times faster than zlib and a little
/// smaller (6 s against 33 s here); readers need qemu 5.1 or newer, so
/// `--qemu-img-options compression_type=zlib` (or `compat=0.10`, which has
/// no zstd) keeps the old format.
fn qcow2_compression(options: Option<&str>) -> Option<&'static str> {
    let user_decides = options.is_some_and(|o| {
        o.split(',')
            .any(|kv| kv.starts_with("compression_type=") || kv == "compat=0.10")
    });
    (!user_decides).then_some("zstd")
}

/// Compresses the raw disk into `dest` with zstd (every core, sparse
/// regions read as zeros compress to almost nothing).
pub fn zstd(host: &mut dyn Host, raw: &Path, dest: &Path) -> anyhow::Result<()> {
    let words: Vec<&str> = super::tarball::ZSTD.split_whitespace().collect();
    host.run(
        Cmd::new("compressing the raw image with zstd", words[0])
            .args(&words[1..])
            .arg(raw)
            .arg("-o")
            .arg(dest)
            .arg("-f"),
    )?;
    Ok(())
}

/// Renames, or copies keeping holes when the output is on another filesystem.
pub fn move_sparse(host: &mut dyn Host, from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    host.run(
        Cmd::new("copying the raw image", "cp")
            .arg("--sparse=always")
            .arg(from)
            .arg(to),
    )?;
    std::fs::remove_file(from)?;
    Ok(())
}

/// Writes a squashfs of the tree (pseudo filesystems left out).
pub fn squashfs(
    host: &mut dyn Host,
    root: &Path,
    dest: &Path,
    mtime_clamp: Option<u64>,
) -> anyhow::Result<()> {
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
    host.run(c)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn qcow2_is_zstd_unless_the_user_chooses() {
        use super::qcow2_compression as c;
        assert_eq!(c(None), Some("zstd"));
        assert_eq!(c(Some("compat=1.1")), Some("zstd"));
        assert_eq!(c(Some("compat=1.1,compression_type=zlib")), None);
        assert_eq!(c(Some("compat=0.10")), None);
    }

    #[test]
    fn vhd_is_vpc() {
        assert_eq!(super::qemu_format("vhd"), "vpc");
        assert_eq!(super::qemu_format("vmdk"), "vmdk");
    }
}
