//! Paths inside the image's tree, resolved as a chroot resolves them: a
//! symlink in the tree, absolute or full of `..`, never leads out of it.
//! Everything dib-create creates in the tree (mount points, resolv.conf,
//! policy-rc.d, fstab, the directories of nested filesystems) goes through
//! here, so a tree whose `etc` is a symlink to the host's `/etc` makes us
//! write into the tree's idea of `/etc`, never the host's.

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A directory of the tree, held open.
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// A path the kernel resolves to this very directory (for mount(2) and
    /// friends), whatever happens to the names leading to it.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The directory's real path on the host.
    pub fn real_path(&self) -> anyhow::Result<PathBuf> {
        std::fs::read_link(self.fd_path()).context("reading a tree directory's path")
    }
}

fn open_root(root: &Path) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening the tree {}", root.display()))
}

/// Opens `rel` below `root` as a chroot would see it.
fn open_in(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(root.as_fd(), rel, how)
}

/// The normal components of `rel`; `..` and other oddities are refused
/// (callers pass paths they built themselves, or checked config paths).
fn parts(rel: &Path) -> anyhow::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => anyhow::bail!("{}: not a plain path inside the tree", rel.display()),
        })
        .collect()
}

/// Opens directory `rel` of the tree at `root`, making the missing parts
/// (mode 0755), each resolved inside the tree.
pub fn dir(root: &Path, rel: &Path) -> anyhow::Result<Dir> {
    let root_fd = open_root(root)?;
    let parts = parts(rel)?;
    let mut cur =
        open_in(&root_fd, Path::new(".")).with_context(|| format!("opening {}", root.display()))?;
    let mut done = PathBuf::new();
    for p in parts {
        done.push(p);
        cur = match open_in(&root_fd, &done) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(cur.as_fd(), p, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("creating {} in the tree {}", done.display(), root.display())
                        });
                    }
                }
                open_in(&root_fd, &done).with_context(|| {
                    format!(
                        "opening {} in the tree {} (a symlink that leads nowhere?)",
                        done.display(),
                        root.display()
                    )
                })?
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("opening {} in the tree {}", done.display(), root.display())
                });
            }
        };
    }
    Ok(Dir { fd: cur })
}

/// The real host path of `rel` in the tree: its parent resolved inside the
/// tree (made when missing), its own name as given (not followed).
pub fn path(root: &Path, rel: &Path) -> anyhow::Result<PathBuf> {
    let name = rel
        .file_name()
        .with_context(|| format!("{} names no file", rel.display()))?;
    let parent = dir(root, rel.parent().unwrap_or(Path::new("")))?;
    Ok(parent.real_path()?.join(name))
}

/// True when `p` still names itself: no symlink has been put in the way
/// since it was resolved (undo checks this before it touches a path).
pub fn unchanged(p: &Path) -> bool {
    let Some(parent) = p.parent() else {
        return true;
    };
    std::fs::canonicalize(parent).is_ok_and(|c| c == parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_in_the_tree_stay_in_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        let tree = std::fs::canonicalize(d.path()).unwrap().join("tree");
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::create_dir_all(tree.join("real-etc")).unwrap();
        // An absolute link means the tree's own /real-etc, as in a chroot.
        std::os::unix::fs::symlink("/real-etc", tree.join("etc")).unwrap();
        let p = path(&tree, Path::new("etc/resolv.conf")).unwrap();
        assert_eq!(p, tree.join("real-etc/resolv.conf"));
        // A link to the host's directory leads nowhere in the tree: refused.
        std::os::unix::fs::symlink(host.join("etc"), tree.join("hostetc")).unwrap();
        assert!(path(&tree, Path::new("hostetc/resolv.conf")).is_err());
        // `..` stops at the tree's root.
        std::os::unix::fs::symlink("../../../../real-etc", tree.join("up")).unwrap();
        let up = dir(&tree, Path::new("up")).unwrap().real_path().unwrap();
        assert_eq!(up, tree.join("real-etc"));
        // Nothing was made on the "host".
        assert_eq!(std::fs::read_dir(host.join("etc")).unwrap().count(), 0);
        assert!(parts(Path::new("a/../b")).is_err());
    }

    #[test]
    fn a_path_with_a_symlink_put_in_its_way_is_not_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(real.join("etc")).unwrap();
        let p = real.join("etc/file");
        assert!(unchanged(&p));
        std::fs::remove_dir(real.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", real.join("etc")).unwrap();
        assert!(!unchanged(&p));
    }
}
