//! Moving directory trees on the host.

use anyhow::Context;
use std::fs;
use std::path::Path;

use super::Cmd;

/// Renames `from` to `to`; when the kernel refuses (EXDEV: another
/// filesystem, or a directory that comes from a lower layer of an overlayfs,
/// which the phase cache's staging tree is), copies it keeping ownership,
/// modes, xattrs, hard links and overlay whiteouts, then removes `from`.
pub fn move_dir(from: &Path, to: &Path, what: &str) -> anyhow::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()));
        }
    }
    Cmd::new(format!("copying {what}"), "cp")
        .args(["-a", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .run()?;
    fs::remove_dir_all(from).with_context(|| format!("removing {}", from.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_within_one_filesystem() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/b/f"), "x").unwrap();
        move_dir(&d.path().join("a"), &d.path().join("c"), "a test tree").unwrap();
        assert_eq!(fs::read_to_string(d.path().join("c/b/f")).unwrap(), "x");
        assert!(!d.path().join("a").exists());
    }

    #[test]
    fn a_missing_source_names_it() {
        let d = tempfile::tempdir().unwrap();
        let e = move_dir(&d.path().join("nope"), &d.path().join("c"), "x").unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }
}
