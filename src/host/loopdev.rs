//! Loop devices, through losetup(8). Attaching is recorded in the journal by
//! the caller, because loop devices outlive our mount namespace.

use super::runner::Cmd;
use crate::log;
use std::path::{Path, PathBuf};

/// Where the kernel lists block devices.
const SYS_BLOCK: &str = "/sys/block";

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
    let backing = Path::new(SYS_BLOCK).join(&name).join("loop/backing_file");
    if !backing.exists() {
        return Ok(());
    }
    remove_dm_holders(&name)?;
    // Partitions added through BLKPG go first, or their nodes linger.
    if has_partitions(&name) {
        let _ = Cmd::new(format!("removing partitions of {}", dev.display()), "partx")
            .arg("-d")
            .arg(dev)
            .teardown()
            .run();
    }
    Cmd::new(format!("detaching {}", dev.display()), "losetup")
        .arg("-d")
        .arg(dev)
        .teardown()
        .run()?;
    Ok(())
}

/// Takes down device-mapper devices stacked on the loop device `name` or on
/// its partitions. The build activates nothing, and the image's volume
/// groups are written flagged against event activation; but on a host with
/// device-mapper and udev, an older lvm2 or a hook may still activate one
/// with the host's configuration. Then the loop device would stay busy and
/// the host would keep the image's volumes after the build.
fn remove_dm_holders(name: &str) -> anyhow::Result<()> {
    for dm in dm_holders(Path::new(SYS_BLOCK), name) {
        log::warn(&format!(
            "the host activated {dm} on /dev/{name} (device-mapper); removing it"
        ));
        Cmd::new(format!("removing device-mapper device {dm}"), "dmsetup")
            .args(["remove", "--retry"])
            .arg(&dm)
            .teardown()
            .run()?;
    }
    Ok(())
}

/// The device-mapper names of what holds `name` or its partitions under
/// `sys_block`, those stacked highest first (a volume on a volume goes
/// before the one beneath it).
fn dm_holders(sys_block: &Path, name: &str) -> Vec<String> {
    let mut below = vec![sys_block.join(name)];
    below.extend(
        partition_names_in(sys_block, name)
            .iter()
            .map(|p| sys_block.join(name).join(p)),
    );
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(dev) = below.pop() {
        let Ok(entries) = std::fs::read_dir(dev.join("holders")) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let holder = e.file_name().to_string_lossy().into_owned();
            let Ok(dm) = std::fs::read_to_string(sys_block.join(&holder).join("dm/name")) else {
                continue;
            };
            if seen.insert(holder.clone()) {
                out.push(dm.trim_end().to_string());
                below.push(sys_block.join(&holder));
            }
        }
    }
    out.reverse();
    out
}

/// The file behind loop device `dev`, if it is attached.
pub fn backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_string_lossy().into_owned();
    let text =
        std::fs::read_to_string(Path::new(SYS_BLOCK).join(name).join("loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end()))
}

/// True when loop devices can be used here.
pub fn available() -> bool {
    Path::new("/dev/loop-control").exists()
}

/// Makes the partition nodes of a loop device (`/dev/loopNpM`) through BLKPG,
/// which works without udev and without device-mapper. Returns them in
/// partition-number order.
pub fn add_partitions(dev: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let name = dev
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    // A loop device that was just freed can still carry its previous user's
    // partitions for a moment (EBUSY on add). `partx -u` reconciles the
    // kernel's view with the table; retry briefly before giving up.
    let mut last = None;
    for attempt in 0..10 {
        let flag = if attempt == 0 { "-a" } else { "-u" };
        match Cmd::new(
            format!("adding the partitions of {}", dev.display()),
            "partx",
        )
        .args([flag, "-v"])
        .arg(dev)
        .run()
        {
            Ok(_) if has_partitions(&name) => {
                last = None;
                break;
            }
            Ok(_) => last = None,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if let Some(e) = last
        && !has_partitions(&name)
    {
        return Err(e.into());
    }
    let mut parts = partition_names(&name);
    parts.sort_by_key(|p| {
        p.trim_start_matches(&format!("{name}p"))
            .parse::<u32>()
            .unwrap_or(0)
    });
    let mut nodes = Vec::new();
    for p in parts {
        let node = Path::new("/dev").join(&p);
        ensure_node(&node, &p)?;
        nodes.push(node);
    }
    Ok(nodes)
}

fn partition_names(name: &str) -> Vec<String> {
    partition_names_in(Path::new(SYS_BLOCK), name)
}

fn partition_names_in(sys_block: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(sys_block.join(name))
        .map(|r| {
            r.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}p")))
                .collect()
        })
        .unwrap_or_default()
}

fn has_partitions(name: &str) -> bool {
    !partition_names(name).is_empty()
}

/// devtmpfs normally makes the node; wait briefly, then make it ourselves from
/// sysfs's major:minor (there is no udev here to do it).
fn ensure_node(node: &Path, name: &str) -> anyhow::Result<()> {
    for _ in 0..20 {
        if node.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let devno = std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))?;
    let (major, minor) = devno
        .trim()
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad dev number {devno:?} for {name}"))?;
    let dev = nix::sys::stat::makedev(major.parse()?, minor.parse()?);
    nix::sys::stat::mknod(
        node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        dev,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A sysfs tree: loop7 with partitions 1 and 2, the second held by
    /// dm-0 (vg-base), which dm-1 (vg-top) holds in turn; dm-9 is not
    /// stacked on loop7.
    fn sysfs(root: &Path) {
        let link = |dev: &Path, holder: &str| {
            fs::create_dir_all(dev.join("holders")).unwrap();
            std::os::unix::fs::symlink(root.join(holder), dev.join("holders").join(holder))
                .unwrap();
        };
        for p in ["loop7p1", "loop7p2"] {
            fs::create_dir_all(root.join("loop7").join(p)).unwrap();
        }
        for (dm, name) in [("dm-0", "vg-base"), ("dm-1", "vg-top"), ("dm-9", "other")] {
            fs::create_dir_all(root.join(dm).join("dm")).unwrap();
            fs::write(root.join(dm).join("dm/name"), format!("{name}\n")).unwrap();
        }
        link(&root.join("loop7/loop7p2"), "dm-0");
        link(&root.join("dm-0"), "dm-1");
    }

    #[test]
    fn holders_are_found_on_partitions_topmost_first() {
        let dir = tempfile::tempdir().unwrap();
        sysfs(dir.path());
        assert_eq!(dm_holders(dir.path(), "loop7"), ["vg-top", "vg-base"]);
        assert!(dm_holders(dir.path(), "loop8").is_empty());
        fs::create_dir_all(dir.path().join("loop8/holders")).unwrap();
        assert!(dm_holders(dir.path(), "loop8").is_empty());
    }
}
