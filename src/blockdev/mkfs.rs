//! Filesystems as data: what to make (type, label, UUID, options), how it is
//! filled, and the mkfs command line for it. Pure: the executor runs the
//! commands (`crate::exec::fill`).
//!
//! Two ways to fill, chosen per filesystem:
//! - **from the tree** (the default): the filesystem is built from a staging
//!   directory without a kernel mount (`mke2fs -d`, `mkfs.btrfs --rootdir`,
//!   `mkfs.vfat` + `mcopy`). No mount means no random inode generations or
//!   access times, so the bytes can be reproducible; it also works where the
//!   kernel cannot mount the filesystem (vfat here) and needs no privileges
//!   beyond writing the device.
//! - **mounted**: make the filesystem, mount it, copy the tree in (GNU tar,
//!   keeping owners, modes, xattrs and hard links), unmount. Used for
//!   filesystems whose tools cannot populate from a directory (xfs on
//!   bookworm's xfsprogs) and available to any other by request.

use anyhow::bail;
use std::path::Path;

use super::graph::Graph;
use crate::host::Cmd;

/// A filesystem to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsSpec {
    /// ext2, ext3, ext4, xfs, btrfs, vfat or swap.
    pub fstype: String,
    pub label: Option<String>,
    pub uuid: String,
    /// Extra mkfs options, already split into words.
    pub opts: Vec<String>,
}

/// How a filesystem gets its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillMode {
    FromTree,
    Mounted,
}

/// The smallest device mkfs makes the filesystem on: xfsprogs refuses
/// anything under 300 MiB since 5.19 (bookworm has 6.1; its message says
/// "300MB").
pub fn min_bytes(fstype: &str) -> Option<u64> {
    (fstype == "xfs").then_some(300 << 20)
}

/// The first filesystem of `graph` whose device is smaller than its mkfs
/// accepts, given each device's size in bytes (`bytes_of`, None where it is
/// not known yet): the message naming the node, its size and the fix.
pub fn too_small(graph: &Graph, bytes_of: impl Fn(&str) -> Option<u64>) -> Option<String> {
    graph.filesystems().find_map(|(name, fsys)| {
        let base = graph.node(name)?.bases.first()?;
        let min = min_bytes(&fsys.fstype)?;
        let bytes = bytes_of(base).filter(|b| *b < min)?;
        let fstype = &fsys.fstype;
        Some(format!(
            "block-device config {}: {fstype} filesystem {name} sits on {base}, which is \
             {} MiB; mkfs.{fstype} makes none smaller than {} MiB: make {base} larger or \
             choose ext4",
            graph.source(),
            bytes >> 20,
            min >> 20
        ))
    })
}

/// The fill mode used for `fstype` unless a caller asks otherwise.
pub fn default_mode(fstype: &str) -> FillMode {
    match fstype {
        "xfs" => FillMode::Mounted,
        _ => FillMode::FromTree,
    }
}

/// Options for reproducible filesystems.
#[derive(Clone, Copy, Debug, Default)]
pub struct Repro {
    /// SOURCE_DATE_EPOCH: the filesystem's own timestamps.
    pub epoch: Option<u64>,
}

/// The mkfs command line for a spec (with population where the tool can).
pub fn mkfs_command(
    dev: &Path,
    spec: &FsSpec,
    tree: Option<&Path>,
    repro: Repro,
) -> anyhow::Result<Cmd> {
    let what = format!("making {} on {}", spec.fstype, dev.display());
    let label = spec.label.as_deref();
    let c = match spec.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            // mke2fs keeps only the last -E, so ours and the config's are merged.
            let (extended, rest) = take_extended_opts(&spec.opts);
            let mut ext = vec![
                "root_owner=0:0".to_string(),
                format!("hash_seed={}", spec.uuid),
            ];
            ext.extend(extended);
            let mut c = Cmd::new(what, "mke2fs")
                .args(["-F", "-q", "-t", &spec.fstype, "-U", &spec.uuid])
                .args(["-E", &ext.join(",")]);
            if let Some(l) = label {
                c = c.args(["-L", l]);
            }
            if let Some(t) = tree {
                c = c.arg("-d").arg(t);
            }
            if let Some(e) = repro.epoch {
                c = c.env("E2FSPROGS_FAKE_TIME", e.to_string());
            }
            c.args(rest).arg(dev)
        }
        "xfs" => {
            let mut c =
                Cmd::new(what, "mkfs.xfs").args(["-f", "-m", &format!("uuid={}", spec.uuid)]);
            if let Some(l) = label {
                c = c.args(["-L", l]);
            }
            c.args(&spec.opts).arg(dev)
        }
        "btrfs" => {
            let mut c = Cmd::new(what, "mkfs.btrfs").args(["-f", "-U", &spec.uuid]);
            if let Some(l) = label {
                c = c.args(["-L", l]);
            }
            if let Some(t) = tree {
                c = c.arg("--rootdir").arg(t);
            }
            c.args(&spec.opts).arg(dev)
        }
        "vfat" => {
            let mut c = Cmd::new(what, "mkfs.vfat").args(["-i", &vfat_volume_id(&spec.uuid)?]);
            if let Some(l) = label {
                c = c.args(["-n", l]);
            }
            if repro.epoch.is_some() {
                c = c.arg("--invariant");
            }
            c.args(&spec.opts).arg(dev)
        }
        "swap" => {
            let mut c = Cmd::new(what, "mkswap").args(["-U", &spec.uuid]);
            if let Some(l) = label {
                c = c.args(["-L", l]);
            }
            c.args(&spec.opts).arg(dev)
        }
        other => bail!(
            "filesystem type {other} is not supported (use ext2, ext3, ext4, xfs, btrfs, vfat or swap)"
        ),
    };
    Ok(c)
}

/// Splits `-E a,b` / `-Ea,b` out of mke2fs options.
fn take_extended_opts(opts: &[String]) -> (Vec<String>, Vec<String>) {
    let mut ext = Vec::new();
    let mut rest = Vec::new();
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match o.strip_prefix("-E") {
            Some("") => ext.extend(
                it.next()
                    .map(|v| v.split(',').map(String::from).collect::<Vec<_>>())
                    .unwrap_or_default(),
            ),
            Some(v) => ext.extend(v.split(',').map(String::from)),
            None => rest.push(o.clone()),
        }
    }
    (ext, rest)
}

/// A FAT volume id is 32 bits: the UUID's first 8 hex digits, or a
/// `XXXX-XXXX` id as blkid prints it.
pub fn vfat_volume_id(uuid: &str) -> anyhow::Result<String> {
    let hex: String = uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    if hex.len() != 8 {
        bail!("{uuid:?} cannot be a FAT volume id: it needs 8 hex digits (e.g. 1234-ABCD)");
    }
    Ok(hex.to_uppercase())
}

/// blkid's spelling of a FAT volume id (`ABCD-1234`), which fstab uses.
pub fn vfat_uuid_display(uuid: &str) -> anyhow::Result<String> {
    let id = vfat_volume_id(uuid)?;
    Ok(format!("{}-{}", &id[..4], &id[4..]))
}

/// A filesystem of type `t` for tests.
#[cfg(test)]
pub(crate) fn sample_spec(t: &str) -> FsSpec {
    FsSpec {
        fstype: t.into(),
        label: Some("root".into()),
        uuid: "0a1b2c3d-1111-2222-3333-444455556666".into(),
        opts: vec!["-i".into(), "4096".into()],
    }
}

/// (total, used) bytes from `fsck.fat -n -v`: `512 bytes per cluster` and
/// `dev: 3 files, 5/202142 clusters`.
pub fn fat_usage(text: &str) -> Option<(u64, u64)> {
    let cluster: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_suffix(" bytes per cluster"))?
        .trim()
        .parse()
        .ok()?;
    let counts = text
        .lines()
        .rev()
        .find_map(|l| l.trim_end().strip_suffix(" clusters"))?;
    let (used, total) = counts.rsplit(' ').next()?.split_once('/')?;
    Some((
        total.parse::<u64>().ok()? * cluster,
        used.parse::<u64>().ok()? * cluster,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fat_usage_reads_the_cluster_counts() {
        let out = "fsck.fat 4.2 (2021-01-31)\nChecking we can access the last sector of the filesystem\n       512 bytes per cluster\n/dev/loop0p1: 3 files, 5/201616 clusters\n";
        assert_eq!(fat_usage(out), Some((201616 * 512, 5 * 512)));
        assert_eq!(fat_usage("nothing"), None);
    }

    use super::*;
    use sample_spec as spec;

    #[test]
    fn ext4_command_is_populated_and_seeded() {
        let c = mkfs_command(
            Path::new("/dev/x"),
            &spec("ext4"),
            Some(Path::new("/t")),
            Repro { epoch: Some(5) },
        )
        .unwrap()
        .cmdline();
        assert!(c.contains("-d /t"), "{c}");
        assert!(c.contains("hash_seed=0a1b2c3d"), "{c}");
        assert!(c.ends_with("-i 4096 /dev/x"), "{c}");
    }

    #[test]
    fn extended_options_merge_into_one() {
        let mut s = spec("ext4");
        s.opts = vec!["-E".into(), "resize=100".into(), "-i".into(), "4096".into()];
        let c = mkfs_command(Path::new("/d"), &s, None, Repro::default())
            .unwrap()
            .cmdline();
        assert_eq!(c.matches("-E").count(), 1, "{c}");
        assert!(c.contains(",resize=100"), "{c}");
    }

    #[test]
    fn vfat_ids() {
        assert_eq!(vfat_volume_id("0a1b2c3d-1111").unwrap(), "0A1B2C3D");
        assert_eq!(vfat_uuid_display("ABCD-1234").unwrap(), "ABCD-1234");
        assert!(vfat_volume_id("xyz").is_err());
    }

    #[test]
    fn unknown_type_is_an_error() {
        let r = mkfs_command(Path::new("/dev/x"), &spec("zfs"), None, Repro::default());
        assert!(r.is_err_and(|e| e.to_string().contains("not supported")));
    }

    #[test]
    fn xfs_is_filled_through_a_mount() {
        assert_eq!(default_mode("xfs"), FillMode::Mounted);
        assert_eq!(default_mode("ext4"), FillMode::FromTree);
    }
}
