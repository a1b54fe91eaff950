//! Loop devices, through losetup(8). Attaching is recorded in the journal by
//! the caller, because loop devices outlive our mount namespace.

use super::runner::Cmd;
use std::path::{Path, PathBuf};

/// Attaches `file` (optionally a byte range of it) and returns the device.
pub fn attach(file: &Path, offset: u64, size: Option<u64>) -> anyhow::Result<PathBuf> {
    let mut c = Cmd::new("attaching a loop device", "losetup")
        .args(["--find", "--show"])
        .arg(format!("--offset={offset}"));
    if let Some(s) = size {
        c = c.arg(format!("--sizelimit={s}"));
    }
    let dev = c.arg(file).read()?;
    Ok(PathBuf::from(dev))
}

/// Detaches `dev`; a device that is already gone is fine.
pub fn detach(dev: &Path) -> anyhow::Result<()> {
    if !dev.exists() {
        return Ok(());
    }
    let name = dev
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let backing = Path::new("/sys/block")
        .join(&name)
        .join("loop/backing_file");
    if !backing.exists() {
        return Ok(());
    }
    Cmd::new(format!("detaching {}", dev.display()), "losetup")
        .arg("-d")
        .arg(dev)
        .run()?;
    Ok(())
}

/// True when loop devices can be used here.
pub fn available() -> bool {
    Path::new("/dev/loop-control").exists()
}
