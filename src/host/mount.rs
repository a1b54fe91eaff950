//! Mounts, through mount(2) directly (no external command), and the reading of
//! /proc/self/mountinfo to check what is mounted under a directory.

use anyhow::{Context, bail};
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to mount.
#[derive(Clone, Debug)]
pub enum Source<'a> {
    /// A pseudo filesystem (`proc`, `sysfs`, `tmpfs`, `devpts`) with options.
    Fs { fstype: &'a str, data: &'a str },
    /// A bind mount of a host path.
    Bind(&'a Path),
    /// A read-only bind mount of a host path (the chroot sees the hooks
    /// tree this way, so nothing run inside can change what runs outside).
    BindReadOnly(&'a Path),
    /// An overlay filesystem; `data` holds lowerdir/upperdir/workdir. No
    /// nosuid/nodev: it is a root tree (the phase cache's layered tree).
    Overlay { data: &'a str },
    /// A block device with a filesystem type.
    Device {
        dev: &'a Path,
        fstype: &'a str,
        data: &'a str,
    },
    /// A block device mounted to be looked at only: read-only, and with no
    /// journal replay, so that the filesystem stays byte for byte as made.
    DeviceReadOnly { dev: &'a Path, fstype: &'a str },
}

/// Mounts `src` at `target`.
pub fn mount(src: &Source, target: &Path) -> anyhow::Result<()> {
    let r = match src {
        Source::Fs { fstype, data } => nix::mount::mount(
            Some(*fstype),
            target,
            Some(*fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            opt(data),
        ),
        Source::Bind(p) => nix::mount::mount(
            Some(*p),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
        Source::BindReadOnly(p) => nix::mount::mount(
            Some(*p),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .and_then(|()| {
            // The read-only flag of a bind takes a remount of the bind; if
            // that fails, the bind goes again (no mount left unrecorded).
            // A directory held open (`/proc/self/fd/N`) still names what was
            // under the new mount: the remount needs the mount's own path.
            let target = &std::fs::read_link(target).unwrap_or_else(|_| target.to_path_buf());
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .inspect_err(|_| {
                let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            })
        }),
        Source::Overlay { data } => nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(*data),
        ),
        Source::Device { dev, fstype, data } => nix::mount::mount(
            Some(*dev),
            target,
            Some(*fstype),
            MsFlags::empty(),
            opt(data),
        ),
        Source::DeviceReadOnly { dev, fstype } => nix::mount::mount(
            Some(*dev),
            target,
            Some(*fstype),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            no_replay_option(fstype),
        ),
    };
    r.with_context(|| format!("mounting {src:?} on {}", target.display()))
}

/// The option that keeps a read-only mount from replaying a journal.
fn no_replay_option(fstype: &str) -> Option<&'static str> {
    match fstype {
        t if t.starts_with("ext3") || t.starts_with("ext4") => Some("noload"),
        "xfs" => Some("norecovery"),
        _ => None,
    }
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Unmounts `target`, retrying while busy; a lazy detach is the last resort so
/// that teardown never hangs on a straggling process.
pub fn unmount(target: &Path) -> anyhow::Result<()> {
    if !is_mountpoint(target)? {
        return Ok(());
    }
    for _ in 0..20 {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(250)),
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => bail!("unmounting {}: {e}", target.display()),
        }
    }
    nix::mount::umount2(target, MntFlags::MNT_DETACH)
        .with_context(|| format!("unmounting {} (lazily, it stayed busy)", target.display()))
}

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub target: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo text (see proc(5)); octal escapes in paths are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = r.next().unwrap_or("").to_string();
            Some(MountInfo {
                target: PathBuf::from(unescape(target)),
                fstype,
                source,
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of this process's namespace.
pub fn mounts() -> anyhow::Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// True if `p` is itself a mount target.
pub fn is_mountpoint(p: &Path) -> anyhow::Result<bool> {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    Ok(mounts()?.iter().any(|m| m.target == p))
}

/// Mount targets at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut v: Vec<PathBuf> = mounts()?
        .into_iter()
        .map(|m| m.target)
        .filter(|t| t.starts_with(&dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(v)
}

/// Gives this process a private mount namespace, so every mount we make
/// vanishes when the build's processes exit, even on SIGKILL. Must be called
/// while the process is still single-threaded (unshare(2) refuses otherwise).
pub fn enter_private_namespace() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/mountinfo.txt");

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(FIXTURE);
        assert!(
            m.iter()
                .any(|x| x.target == Path::new("/") && x.fstype == "ext4")
        );
        let spaced = m
            .iter()
            .find(|x| x.fstype == "tmpfs" && x.target.to_string_lossy().contains(' '));
        assert_eq!(spaced.unwrap().target, Path::new("/tmp/with space"));
    }

    #[test]
    fn reads_own_mounts() {
        assert!(!mounts().unwrap().is_empty());
        assert!(is_mountpoint(Path::new("/proc")).unwrap());
    }
}
