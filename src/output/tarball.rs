//! tar and tgz outputs, made by GNU tar: it keeps ownership (numeric), modes,
//! xattrs, ACLs and hard links, and with sorted names and clamped times it
//! gives the same bytes for the same tree.

use std::path::Path;

use crate::host::{Cmd, Host};

/// What is left out of every archive of a root tree: the contents of pseudo
/// filesystems and runtime directories (the directories themselves stay).
pub const EXCLUDES: &[&str] = &[
    "./proc/*",
    "./sys/*",
    "./dev/*",
    "./run/*",
    "./tmp/in_target.d",
];

/// zstd as the outputs use it: every core, the default level (a debian-minimal
/// tree of 700 MB takes a few seconds at it).
pub const ZSTD: &str = "zstd -T0 -3 -q";

/// Compression of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// zstd on every core. Its multi-threaded output depends on the level
    /// and the input only, not on the number of threads, so it stays
    /// reproducible across machines.
    Zstd,
}

/// Archives `root` into `dest`. `mtime_clamp` (SOURCE_DATE_EPOCH) caps file times.
pub fn write(
    host: &mut dyn Host,
    root: &Path,
    dest: &Path,
    comp: Compression,
    mtime_clamp: Option<u64>,
) -> anyhow::Result<()> {
    let mut cmd = Cmd::new(format!("writing {}", dest.display()), "tar")
        .args(["--create", "--file"])
        .arg(dest)
        .args([
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--sort=name",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--one-file-system",
        ]);
    if let Some(t) = mtime_clamp {
        cmd = cmd.arg(format!("--mtime=@{t}")).arg("--clamp-mtime");
    }
    match comp {
        Compression::None => {}
        Compression::Gzip => cmd = cmd.arg("--use-compress-program=gzip -n"),
        Compression::Zstd => cmd = cmd.arg(format!("--use-compress-program={ZSTD}")),
    }
    for e in EXCLUDES {
        cmd = cmd.arg(format!("--exclude={e}"));
    }
    host.run(cmd.arg("-C").arg(root).arg("."))?;
    Ok(())
}
