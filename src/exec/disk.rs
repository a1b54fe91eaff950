//! Making the disk: the block-device graph turned into a raw image with a
//! partition table, one loop device (partitions through BLKPG), filesystems
//! built from the staging tree, and fstab.
//!
//! Order, and why: the disk and its partitions exist first, so finalise.d
//! hooks see `IMAGE_BLOCK_DEVICE` (a bootloader installs into the real disk's
//! boot area). finalise.d then runs on the staging tree, and only afterwards is
//! each filesystem built from that tree (`mke2fs -d` and friends, see
//! [`super::fill`]). The tree is copied once, by mkfs, and never
//! through a read-write kernel mount, which keeps the bytes reproducible.

use anyhow::{Context, bail};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::fill;
use crate::blockdev::fstab::{self, FsFacts};
use crate::blockdev::mkfs::{self, FsSpec, Repro};
use crate::blockdev::partition::{self, Disk as DiskGeom};
use crate::blockdev::{Graph, Spec};
use crate::error::UsageError;
use crate::host::{Capabilities, Cmd, Entry, Journal, mount};
use crate::log;
use crate::plan::DiskPlan;

/// A disk being built.
pub struct Disk {
    /// The raw image file.
    pub raw: PathBuf,
    /// The whole-disk loop device.
    pub loop_dev: PathBuf,
    /// The journal entry of the loop device, to detach it early.
    pub loop_entry: Entry,
    /// Block device of each graph node that is one (loop, partitions).
    pub devices: BTreeMap<String, PathBuf>,
    /// Label, UUID and type of each mkfs node.
    pub facts: BTreeMap<String, FsFacts>,
    pub size: u64,
    /// Where each partition is, in table order.
    pub extents: Vec<partition::PartitionExtent>,
    /// The LVM work left for after the loop devices are detached.
    pub lvm: super::lvm::Finish,
}

/// Where a block device node lies in the raw file: (offset, bytes).
pub type Span = (u64, u64);
/// The span of each block device node of the disk.
pub type Spans = BTreeMap<String, Span>;

/// The spans of the whole disk and of its partitions.
fn disk_spans(image_node: &str, size: u64, extents: &[partition::PartitionExtent]) -> Spans {
    let mut out = BTreeMap::from([(image_node.to_string(), (0, size))]);
    for e in extents {
        out.insert(e.name.clone(), (e.start_bytes, e.size_bytes));
    }
    out
}

/// The tree's size, from its content alone: each regular file rounded up to
/// whole 4 KiB blocks, one block per directory and per symlink too long to
/// live in its inode. DIB asks `du`, but allocated blocks depend on the tree's
/// history (an ext4 directory never shrinks after apt's lists are deleted)
/// and on how the host filesystem laid a file out, so one tree could get two
/// image sizes and two different images. Hard links count once per path: an
/// overlay copy-up can split them, and the size must not depend on that.
/// Mounts below the tree (the chroot's /proc, /dev) are left out, as `du -x`.
pub fn tree_bytes(tree: &Path) -> anyhow::Result<u64> {
    let tree = tree.canonicalize()?;
    let mounts: HashSet<PathBuf> = mount::mounts_under(&tree)?
        .into_iter()
        .filter(|m| *m != tree)
        .collect();
    let mut total = 0u64;
    let mut dirs = vec![tree];
    while let Some(dir) = dirs.pop() {
        total += FS_BLOCK;
        let entries = fs::read_dir(&dir).with_context(|| format!("measuring {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                let path = entry.path();
                if !mounts.contains(&path) {
                    dirs.push(path);
                }
            } else {
                total += entry_bytes(&meta);
            }
        }
    }
    Ok(total)
}

/// The filesystem block the tree measure rounds to.
const FS_BLOCK: u64 = 4096;
/// ext4 keeps a symlink target shorter than this in the inode itself.
const FAST_SYMLINK_MAX: u64 = 59;

fn entry_bytes(meta: &fs::Metadata) -> u64 {
    let ft = meta.file_type();
    if ft.is_file() {
        meta.len().div_ceil(FS_BLOCK) * FS_BLOCK
    } else if ft.is_symlink() && meta.len() > FAST_SYMLINK_MAX {
        FS_BLOCK
    } else {
        0
    }
}

/// The image size for the tree at `tree` (`--image-size` or the config's
/// size win); a size the partitions do not fit is bad input.
pub fn image_size(disk: &DiskPlan, tree: &Path) -> anyhow::Result<u64> {
    let explicit = disk.graph.local_loops().find_map(|l| l.size);
    let bytes = match explicit {
        Some(_) => 0,
        None => tree_bytes(tree)?,
    };
    disk.image_size(bytes)
        .map_err(|e| UsageError(e.to_string()).into())
}

/// Creates the raw image, its partition table and the loop device.
pub fn create(
    graph: &Graph,
    size: u64,
    build: &Path,
    journal: &mut Journal,
    seed: Option<u64>,
) -> anyhow::Result<Disk> {
    let image_node = graph
        .nodes()
        .iter()
        .find(|n| matches!(n.spec, Spec::LocalLoop(_)))
        .map(|n| n.name.clone())
        .context("the block-device config has no local_loop")?;
    let raw = build.join(format!("{image_node}.raw"));
    let file = fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&raw)
        .with_context(|| format!("creating {}", raw.display()))?;
    file.set_len(size)?;
    let extents = write_tables(graph, &image_node, file, size, seed)?;
    log::step(&format!(
        "disk image {} ({} MiB)",
        raw.display(),
        size >> 20
    ));
    let (loop_dev, loop_entry) = journal.attach_loop(&raw)?;
    let mut devices = BTreeMap::from([(image_node.clone(), loop_dev.clone())]);
    if !extents.is_empty() {
        let nodes = journal.host().add_partitions(&loop_dev)?;
        for e in &extents {
            // By number, not position: logical MBR partitions start at 5.
            let suffix = format!("p{}", e.number);
            let node = nodes
                .iter()
                .find(|n| n.to_string_lossy().ends_with(&suffix))
                .with_context(|| {
                    format!(
                        "partition {} of {} did not appear",
                        e.number,
                        loop_dev.display()
                    )
                })?;
            devices.insert(e.name.clone(), node.clone());
        }
    }
    let mut spans = disk_spans(&image_node, size, &extents);
    let mut lvm = super::lvm::Finish::default();
    if graph.uses_lvm() {
        let lvs = super::lvm::make(graph, &raw, &spans, &devices, build, journal, seed)?;
        for (lv, (dev, span)) in lvs.devices {
            devices.insert(lv.clone(), dev);
            spans.insert(lv, span);
        }
        lvm = lvs.finish;
    }
    check_min_sizes(graph, &spans)?;
    let facts = fat_ids_as_blkid_shows_them(fstab::facts_from_config(graph, seed))?;
    Ok(Disk {
        raw,
        loop_dev,
        loop_entry,
        devices,
        facts,
        size,
        extents,
        lvm,
    })
}

/// A FAT filesystem has a 32-bit volume id, which blkid (and so fstab)
/// spells `ABCD-1234`; derive it from the UUID the config gives.
fn fat_ids_as_blkid_shows_them(
    mut facts: BTreeMap<String, FsFacts>,
) -> anyhow::Result<BTreeMap<String, FsFacts>> {
    for f in facts.values_mut().filter(|f| f.fstype == "vfat") {
        if let Some(u) = &f.uuid {
            f.uuid = Some(mkfs::vfat_uuid_display(u)?);
        }
    }
    Ok(facts)
}

fn write_tables(
    graph: &Graph,
    image_node: &str,
    mut file: fs::File,
    size: u64,
    seed: Option<u64>,
) -> anyhow::Result<Vec<partition::PartitionExtent>> {
    if graph.table_on(image_node).is_none() {
        return Ok(Vec::new());
    }
    let disk = DiskGeom {
        size_bytes: size,
        sector_size: graph.sector_size_of(image_node),
    };
    let extents = partition::write_table(&mut file, graph, image_node, disk, seed)
        .map_err(|e| UsageError(e.to_string()))?;
    file.sync_all()?;
    Ok(extents)
}

/// The environment DIB gives hooks once the disk exists, plus
/// `DIB_ROOT_PARTUUID` (ours): firmware that boots a kernel directly, such as
/// the Raspberry Pi's, can only name the root by partition UUID, because
/// nothing reads a filesystem label before the kernel runs.
pub fn block_device_env(
    journal: &mut Journal,
    graph: &Graph,
    disk: &Disk,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let all: Vec<String> = disk
        .devices
        .iter()
        .map(|(k, v)| format!("[{k}]={}", v.display()))
        .collect();
    let mut env = vec![
        ("IMAGE_BLOCK_DEVICE", disk.loop_dev.display().to_string()),
        ("IMAGE_BLOCK_DEVICES", format!(" {} ", all.join(" "))),
    ];
    if let Some(partuuid) = root_partuuid(journal, graph, disk)? {
        env.push(("DIB_ROOT_PARTUUID", partuuid));
    }
    Ok(env)
}

/// The partition UUID of the partition that holds the root filesystem, as
/// the kernel's `root=PARTUUID=` wants it; None when root is not directly on
/// a partition (a whole disk, LVM).
fn root_partuuid(
    journal: &mut Journal,
    graph: &Graph,
    disk: &Disk,
) -> anyhow::Result<Option<String>> {
    let Some((fs_node, _)) = graph.root_filesystem() else {
        return Ok(None);
    };
    let Some(base) = graph.node(fs_node).and_then(|n| n.bases.first()) else {
        return Ok(None);
    };
    let is_partition = graph
        .tables()
        .iter()
        .any(|t| graph.partitions_of(t).iter().any(|(name, _)| name == base));
    let Some(dev) = disk.devices.get(base).filter(|_| is_partition) else {
        return Ok(None);
    };
    let out = journal.read(
        Cmd::new("reading the root partition's UUID", "blkid")
            .args(["-p", "-o", "value", "-s", "PART_ENTRY_UUID"])
            .arg(dev),
    )?;
    let uuid = out.trim();
    Ok((!uuid.is_empty()).then(|| uuid.to_string()))
}

/// Variables DIB derives from the config before the first phase.
pub fn config_env(graph: &Graph) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some((_, fs)) = graph.root_filesystem() {
        v.push(("DIB_ROOT_FSTYPE", fs.fstype.clone()));
        v.push(("DIB_ROOT_LABEL", fs.label.clone()));
    }
    let boot = graph
        .mounts()
        .find(|(_, m)| m.mount_point == "/boot")
        .and_then(|(n, _)| n.bases.first())
        .and_then(|fs| graph.filesystems().find(|(name, _)| name == fs))
        .map(|(_, fs)| fs.label.clone())
        .unwrap_or_default();
    v.push(("DIB_BOOT_LABEL", boot));
    let points: Vec<String> = graph.mounts().map(|(_, m)| m.mount_point.clone()).collect();
    // `|`-separated: DIB's unmount_dir and selinux-fixfiles-restore split on it.
    v.push(("DIB_MOUNTPOINTS", points.join("|")));
    v
}

/// Writes /etc/fstab into the tree.
/// Writes /etc/fstab into the tree (resolved inside it: a symlinked etc
/// cannot send it to the host's).
pub fn write_fstab(graph: &Graph, disk: &Disk, tree: &Path) -> anyhow::Result<()> {
    let text = fstab::render(graph, &disk.facts);
    let path = crate::host::tree::path(tree, Path::new("etc/fstab"))?;
    if path.symlink_metadata().is_ok() {
        fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes()).context("writing /etc/fstab")
}

/// Builds every filesystem from the tree. The tree is split at the mount
/// points first (each nested mount's directory moved out, an empty directory
/// left in its place), so each filesystem gets exactly its own files.
pub fn fill(
    graph: &Graph,
    disk: &Disk,
    tree: &Path,
    build: &Path,
    journal: &mut Journal,
    repro: Repro,
) -> anyhow::Result<()> {
    let lost_found = tree.join("lost+found");
    if lost_found.is_dir() {
        fs::remove_dir_all(&lost_found)?;
    }
    let parts = split_tree(graph, tree, &build.join("fs"))?;
    for (name, fsys) in graph.filesystems() {
        let dev = device_of(graph, disk, name)?;
        let facts = &disk.facts[name];
        let spec = FsSpec {
            fstype: fsys.fstype.clone(),
            label: facts.label.clone().filter(|l| !l.is_empty()),
            uuid: facts.uuid.clone().unwrap_or_default(),
            opts: split_opts(fsys.opts.as_deref()),
        };
        let content = parts.get(name).map(PathBuf::as_path);
        let task = format!(
            "making {} filesystem {name} on {}",
            spec.fstype,
            dev.display()
        );
        log::task("filesystem", &task, || {
            fill::make_and_fill(
                &dev,
                &spec,
                content,
                mkfs::default_mode(&spec.fstype),
                repro,
                journal,
                build,
            )
        })?;
    }
    Ok(())
}

/// A filesystem on a device smaller than its mkfs accepts is bad input:
/// said before finalise.d runs and long before mkfs would fail. The plan
/// refused the sizes the config fixes; these are the laid-out ones.
fn check_min_sizes(graph: &Graph, spans: &Spans) -> Result<(), UsageError> {
    match mkfs::too_small(graph, |node| spans.get(node).map(|(_, b)| *b)) {
        Some(why) => Err(UsageError(why)),
        None => Ok(()),
    }
}

fn split_opts(opts: Option<&str>) -> Vec<String> {
    opts.map(shell_words).unwrap_or_default()
}

/// Splits like a POSIX shell does for plain words and quotes (no expansion).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The block device a mkfs node sits on (its base: a partition or the disk).
fn device_of(graph: &Graph, disk: &Disk, mkfs: &str) -> anyhow::Result<PathBuf> {
    let node = graph.node(mkfs).context("unknown filesystem node")?;
    let base = node.bases.first().context("filesystem without a base")?;
    disk.devices.get(base).cloned().with_context(|| {
        format!("filesystem {mkfs} sits on {base}, which is not a block device we made")
    })
}

/// Moves each non-root mount's directory out of the tree. Returns the
/// content directory of each mkfs node that has one.
fn split_tree(
    graph: &Graph,
    tree: &Path,
    parts: &Path,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut mounts: Vec<(String, String)> = graph
        .mounts()
        .filter(|(_, m)| m.mount_point.starts_with('/'))
        .filter_map(|(n, m)| Some((n.bases.first()?.clone(), m.mount_point.clone())))
        .collect();
    // Deepest first, so /boot/efi leaves /boot before /boot leaves /.
    mounts.sort_by_key(|(_, mp)| std::cmp::Reverse(mp.matches('/').count()));
    let mut out = BTreeMap::new();
    fs::create_dir_all(parts)?;
    for (fs_name, mp) in mounts {
        if mp == "/" {
            out.insert(fs_name, tree.to_path_buf());
            continue;
        }
        // Resolved inside the tree; the mount point itself must be a real
        // directory (a symlink there would make mkfs copy what it points to).
        let inside = crate::host::tree::path(tree, Path::new(mp.trim_start_matches('/')))?;
        let dest = parts.join(&fs_name);
        if inside
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            bail!(
                "the tree's {mp} is a symlink ({} -> {}); a filesystem's mount point must be a directory",
                inside.display(),
                fs::read_link(&inside).unwrap_or_default().display()
            );
        }
        if inside.is_dir() {
            let meta = fs::metadata(&inside)?;
            crate::host::files::move_dir(&inside, &dest, &format!("{mp} out of the tree"))
                .with_context(|| format!("moving {} out of the tree", inside.display()))?;
            fs::create_dir(&inside)?;
            fs::set_permissions(&inside, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            nix::unistd::chown(
                &inside,
                Some(nix::unistd::Uid::from_raw(meta.uid())),
                Some(nix::unistd::Gid::from_raw(meta.gid())),
            )?;
        } else {
            fs::create_dir_all(&inside)?;
            fs::create_dir_all(&dest)?;
        }
        out.insert(fs_name, dest);
    }
    Ok(out)
}

/// Mounts the image's filesystems under `root` in mount order; returns the
/// first journal entry, to unmount them all with `undo_until`.
pub fn mount_all(
    graph: &Graph,
    disk: &Disk,
    root: &Path,
    journal: &mut Journal,
) -> anyhow::Result<Option<Entry>> {
    fs::create_dir_all(root)?;
    let mut first = None;
    for (mount, mp) in graph.mounts() {
        if !mp.mount_point.starts_with('/') {
            continue;
        }
        let fs_name = mount.bases.first().context("mount without a filesystem")?;
        let fstype = &disk.facts[fs_name].fstype;
        if !kernel_can_mount(fstype) {
            bail!(
                "finalising on the mounted image needs a kernel {fstype} mount for {}, which this kernel lacks; \
                 use DIB_CREATE_FINALISE=tree (the default)",
                mp.mount_point
            );
        }
        let target =
            crate::host::tree::dir(root, Path::new(mp.mount_point.trim_start_matches('/')))?;
        let dev = device_of(graph, disk, fs_name)?;
        let entry = journal.mount_in(
            &mount::Source::Device {
                dev: &dev,
                fstype,
                data: "",
            },
            &target,
        )?;
        first.get_or_insert(entry);
    }
    Ok(first)
}

fn kernel_can_mount(fstype: &str) -> bool {
    let fstype = if fstype.starts_with("ext") {
        "ext4"
    } else {
        fstype
    };
    fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        })
        .unwrap_or(false)
}

/// (total, used) bytes of each filesystem the kernel can mount, measured on
/// a read-only mount that replays no journal (the filesystem stays as made).
/// For the report: a filesystem that cannot be measured is left out.
pub fn usage(
    graph: &Graph,
    disk: &Disk,
    build: &Path,
    journal: &mut Journal,
) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mnt = build.join("measure");
    for (name, fsys) in graph.filesystems() {
        let measured = match fsys.fstype.as_str() {
            "swap" => continue,
            // Kernels without vfat are common (this one); fsck.fat reads
            // the allocation without a mount.
            "vfat" => measure_fat(graph, disk, name, journal),
            t if kernel_can_mount(t) => measure(graph, disk, name, &mnt, journal),
            _ => continue,
        };
        match measured {
            Ok(u) => {
                out.insert(name.to_string(), u);
            }
            Err(e) => log::debug(&format!("build report: not measuring {name}: {e:#}")),
        }
    }
    let _ = fs::remove_dir(&mnt);
    out
}

fn measure_fat(
    graph: &Graph,
    disk: &Disk,
    name: &str,
    journal: &mut Journal,
) -> anyhow::Result<(u64, u64)> {
    let dev = device_of(graph, disk, name)?;
    let text = journal.read(
        Cmd::new("reading the FAT allocation", "fsck.fat")
            .args(["-n", "-v"])
            .arg(&dev),
    )?;
    mkfs::fat_usage(&text).context("fsck.fat printed no cluster counts")
}

fn measure(
    graph: &Graph,
    disk: &Disk,
    name: &str,
    mnt: &Path,
    journal: &mut Journal,
) -> anyhow::Result<(u64, u64)> {
    let dev = device_of(graph, disk, name)?;
    fs::create_dir_all(mnt)?;
    let entry = journal.mount(
        &mount::Source::DeviceReadOnly {
            dev: &dev,
            fstype: &disk.facts[name].fstype,
        },
        mnt,
    )?;
    let st = nix::sys::statvfs::statvfs(mnt);
    journal.undo_until(&entry)?;
    let st = st?;
    let block = st.fragment_size() as u64;
    let total = st.blocks() as u64 * block;
    Ok((total, total - st.blocks_free() as u64 * block))
}

/// Detaches the loop devices (everything is written), then finishes the
/// LVM work through the raw file, before conversion.
pub fn detach(disk: &Disk, journal: &mut Journal) -> anyhow::Result<()> {
    journal.run(Cmd::new("flushing the disk", "sync"))?;
    journal.undo_until(&disk.loop_entry)?;
    super::lvm::finish(&disk.raw, &disk.lvm)
}

/// Refuses a disk the host cannot make, before any work.
pub fn check_host(caps: Capabilities, disk: &DiskPlan) -> Result<(), UsageError> {
    if !caps.loop_devices {
        return Err(UsageError(
            "disk outputs need loop devices, and /dev/loop-control is missing (load the loop module)"
                .into(),
        ));
    }
    if disk.graph.uses_lvm() && !crate::host::tools::on_path("vgcfgrestore") {
        return Err(UsageError(
            "this block-device config uses LVM, and the lvm2 tools are missing: install lvm2 \
             (device-mapper is not needed)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_measure_depends_on_content_not_history() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::write(root.join("one-byte"), "x").unwrap();
        fs::write(root.join("two-blocks"), vec![0u8; 4097]).unwrap();
        std::os::unix::fs::symlink("short", root.join("fast")).unwrap();
        std::os::unix::fs::symlink("l".repeat(100), root.join("slow")).unwrap();
        fs::create_dir(root.join("lists")).unwrap();
        let want = 4096 * (1 + 1 + 2 + 1 + 1);
        assert_eq!(tree_bytes(root).unwrap(), want);
        // A directory that once held many files measures as an empty one.
        for i in 0..2000 {
            fs::write(
                root.join("lists")
                    .join(format!("index-{i:04}-with-a-long-name")),
                "",
            )
            .unwrap();
        }
        fs::remove_dir_all(root.join("lists")).unwrap();
        fs::create_dir(root.join("lists")).unwrap();
        assert_eq!(tree_bytes(root).unwrap(), want);
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            shell_words("-i 4096 -J size=64"),
            ["-i", "4096", "-J", "size=64"]
        );
        assert_eq!(
            shell_words("-O '^has_journal' \"a b\""),
            ["-O", "^has_journal", "a b"]
        );
        assert!(shell_words("  ").is_empty());
    }
}
