//! The build chroot: pseudo filesystems, the hooks directory, a working
//! resolv.conf and blocked daemons. Every change goes into the journal and is
//! taken down before the tree becomes an output.

use anyhow::Context;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::host::journal::{Entry, Journal};
use crate::host::mount::Source;
use crate::host::tree;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// Where the hooks directory appears inside the chroot (DIB's path).
pub const IN_TARGET: &str = "/tmp/in_target.d";

/// Name under which a file we replace is kept until teardown.
const SAVED_SUFFIX: &str = ".ORIG";

/// Refuses to start services during the build (invoke-rc.d honours it).
const POLICY_RC_D: &str =
    "#!/bin/sh\n# dib-create: no daemons start while the image is built\nexit 101\n";

/// Sets up `root` as a chroot. Returns the first journal entry it made, to
/// undo the chroot alone with `Journal::undo_until`.
pub fn enter(journal: &mut Journal, root: &Path, hooks_dir: &Path) -> anyhow::Result<Entry> {
    let first = mount_pseudo_filesystems(journal, root)?;
    bind_hooks(journal, root, hooks_dir)?;
    install_resolv_conf(journal, root)?;
    block_daemons(journal, root)?;
    // Recorded last, so undone first: nothing may run inside when the
    // mounts above are taken down.
    journal.record(Entry::Chroot(root.to_path_buf()))?;
    Ok(first)
}

/// Returns the first entry (proc).
fn mount_pseudo_filesystems(journal: &mut Journal, root: &Path) -> anyhow::Result<Entry> {
    let table: [(&str, Source); 5] = [
        (
            "proc",
            Source::Fs {
                fstype: "proc",
                data: "",
            },
        ),
        (
            "sys",
            Source::Fs {
                fstype: "sysfs",
                data: "",
            },
        ),
        ("dev", Source::Bind(Path::new("/dev"))),
        ("dev/pts", Source::Bind(Path::new("/dev/pts"))),
        (
            "run",
            Source::Fs {
                fstype: "tmpfs",
                data: "mode=0755",
            },
        ),
    ];
    let mut first = None;
    for (rel, src) in table {
        let target = tree::dir(root, Path::new(rel))?;
        let e = journal.mount_in(&src, &target)?;
        first.get_or_insert(e);
    }
    Ok(first.expect("the table is not empty"))
}

fn bind_hooks(journal: &mut Journal, root: &Path, hooks_dir: &Path) -> anyhow::Result<()> {
    let rel = Path::new(IN_TARGET.trim_start_matches('/'));
    let real = tree::path(root, rel)?;
    if real.symlink_metadata().is_err() {
        fs::create_dir(&real).with_context(|| format!("creating {}", real.display()))?;
        journal.record(Entry::CreatedDir(real))?;
    }
    let target = tree::dir(root, rel)?;
    journal.mount_in(&Source::BindReadOnly(hooks_dir), &target)?;
    Ok(())
}

/// Puts the host's resolver configuration in place for the build; the image's
/// own file (often a symlink into /run) comes back at teardown.
fn install_resolv_conf(journal: &mut Journal, root: &Path) -> anyhow::Result<()> {
    let contents = fs::read("/etc/resolv.conf").unwrap_or_default();
    replace_file(
        journal,
        root,
        Path::new("etc/resolv.conf"),
        &contents,
        0o644,
    )
}

fn block_daemons(journal: &mut Journal, root: &Path) -> anyhow::Result<()> {
    replace_file(
        journal,
        root,
        Path::new("usr/sbin/policy-rc.d"),
        POLICY_RC_D.as_bytes(),
        0o755,
    )
}

/// Writes `rel` in the tree at `root`, moving any existing file (or
/// symlink) aside first as `<path>.ORIG` (DIB's name, which elements may
/// use); journaled so teardown restores the original exactly. The parent is
/// resolved inside the tree and the file is created anew, so neither a
/// symlinked directory nor a symlink at the name leads out of the tree.
pub fn replace_file(
    journal: &mut Journal,
    root: &Path,
    rel: &Path,
    contents: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    let path = tree::path(root, rel)?;
    let saved = saved_name(&path);
    if path.symlink_metadata().is_ok() {
        fs::rename(&path, &saved).with_context(|| format!("moving {} aside", path.display()))?;
    }
    journal.record(Entry::Replaced(path.clone(), saved))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn saved_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(SAVED_SUFFIX);
    PathBuf::from(s)
}

/// Paths that mark our presence; the final tree must hold none of them.
pub fn leftover_markers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for rel in [
        "tmp/in_target.d",
        "usr/sbin/policy-rc.d",
        "etc/resolv.conf.ORIG",
        "usr/sbin/policy-rc.d.ORIG",
        "usr/local/bin/dib-run-parts",
        "usr/local/bin/install-packages",
        "usr/local/bin/pkg-map",
        "usr/local/bin/dib-python",
    ] {
        let p = root.join(rel);
        if p.symlink_metadata().is_ok() {
            found.push(p);
        }
    }
    found
}
