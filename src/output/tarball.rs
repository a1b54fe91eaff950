//! tar and tgz outputs, made by GNU tar: it keeps ownership (numeric), modes,
//! xattrs, ACLs and hard links, and with sorted names and clamped times it
//! gives the same bytes for the same tree.

use std::path::Path;

use crate::host::Cmd;

/// What is left out of every archive of a root tree: the contents of pseudo
/// filesystems and runtime directories (the directories themselves stay).
pub const EXCLUDES: &[&str] = &[
    "./proc/*",
    "./sys/*",
    "./dev/*",
    "./run/*",
    "./tmp/in_target.d",
];

/// Compression of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// Archives `root` into `dest`. `mtime_clamp` (SOURCE_DATE_EPOCH) caps file times.
pub fn write(
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
    if comp == Compression::Gzip {
        cmd = cmd.arg("--use-compress-program=gzip -n");
    }
    for e in EXCLUDES {
        cmd = cmd.arg(format!("--exclude={e}"));
    }
    cmd.arg("-C").arg(root).arg(".").run()?;
    Ok(())
}
