//! Making filesystems and filling them with a directory's contents.
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

use anyhow::{Context, bail};
use std::path::Path;

use crate::host::mount::{self, Source};
use crate::host::{Cmd, Entry, Journal};

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

/// Makes the filesystem on `dev` and fills it from `tree` (None: leave it empty).
pub fn make_and_fill(
    dev: &Path,
    spec: &FsSpec,
    tree: Option<&Path>,
    mode: FillMode,
    repro: Repro,
    journal: &mut Journal,
    scratch: &Path,
) -> anyhow::Result<()> {
    let from_tree = if mode == FillMode::FromTree {
        tree
    } else {
        None
    };
    if let (Some(t), Some(epoch)) = (tree, repro.epoch) {
        clamp_tree_times(t, epoch)?;
    }
    make(dev, spec, from_tree, repro)?;
    match (mode, tree) {
        (FillMode::Mounted, Some(t)) => fill_mounted(dev, spec, t, journal, scratch),
        (FillMode::FromTree, Some(t)) if spec.fstype == "vfat" => fill_vfat(dev, t),
        (FillMode::FromTree, Some(t)) if spec.fstype.starts_with("ext") => match repro.epoch {
            Some(epoch) => normalise_ext_metadata(dev, t, epoch, scratch),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Caps every file's modification and access time at `epoch`
/// (SOURCE_DATE_EPOCH), as tar's --clamp-mtime does for archives; mkfs copies
/// both from the tree.
///
/// The two are capped separately. The build reads many packaged files whose
/// mtime stays in the past (mkinitramfs copies modules and programs, dpkg reads
/// its info files, symlinks are followed, the tar output reads everything), and
/// each read moves the access time to the build's clock. Capping only the files
/// with a new mtime left about 2000 such access times in a debian-minimal ext4
/// image, different on every build.
///
/// The access pass walks depth first (`-depth`): find reads a directory before
/// it caps it, so its own read cannot move the time again. mke2fs -d and
/// mkfs.btrfs --rootdir stat each entry before they read it.
pub fn clamp_tree_times(tree: &Path, epoch: u64) -> anyhow::Result<()> {
    let stamp = format!("@{epoch}");
    // (what, find's test, touch's flag, extra find options)
    let passes: [(&str, &str, &str, &[&str]); 2] = [
        ("modification", "-newermt", "-m", &[]),
        ("access", "-newerat", "-a", &["-depth"]),
    ];
    for (what, newer, flag, opts) in passes {
        Cmd::new(
            format!("capping file {what} times at SOURCE_DATE_EPOCH"),
            "find",
        )
        .arg(tree)
        .args(opts.iter().copied())
        .args(["-xdev", newer, &stamp, "-exec", "touch", "--no-dereference"])
        .args([flag, "--date", &stamp, "{}", "+"])
        .run()?;
    }
    Ok(())
}

/// Makes an ext filesystem built from a tree depend on nothing but the tree,
/// in one debugfs batch:
/// - `mke2fs -d` copies each source file's ctime, which no one can set on the
///   host: every inode's ctime becomes `epoch`.
/// - The superblock counts the KiB its writers wrote (`s_kbytes_written`),
///   which follows how the source files lie on the host's disk, not what they
///   hold: a root unpacked from the bootstrap cache and the same root fresh
///   from mmdebstrap gave equal trees but counts 48 KiB apart. It becomes 0
///   (a zero count also stops debugfs adding its own writes), and `close -a`
///   writes that to the backup superblocks, which mke2fs stamped too.
fn normalise_ext_metadata(
    dev: &Path,
    tree: &Path,
    epoch: u64,
    scratch: &Path,
) -> anyhow::Result<()> {
    let mut paths = Vec::new();
    walk_relative(tree, Path::new("/"), &mut paths)?;
    let mut cmds = String::new();
    for p in &paths {
        // debugfs reads one command a line and takes what is between double
        // quotes literally, backslashes too (systemd's escaped unit names,
        // e.g. system-systemd\x2dcryptsetup.slice, kept their build ctime
        // while they were skipped here).
        if let Some(p) = p.to_str().filter(|p| !p.contains(['"', '\n'])) {
            cmds.push_str(&format!("sif \"{p}\" ctime @{epoch}\n"));
        }
    }
    cmds.push_str("ssv kbytes_written 0\nclose -a\n");
    let file = scratch.join("debugfs-normalise");
    std::fs::write(&file, cmds)?;
    Cmd::new(
        format!(
            "setting inode change times and write counts on {}",
            dev.display()
        ),
        "debugfs",
    )
    .args(["-w", "-f"])
    .arg(&file)
    .arg(dev)
    // debugfs stamps the superblock's write time too.
    .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
    .read()?;
    std::fs::remove_file(&file)?;
    Ok(())
}

/// Every path below `dir` (and `dir` itself, as `rel`), symlinks not followed.
fn walk_relative(dir: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    out.push(rel.to_path_buf());
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let child = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            walk_relative(&e.path(), &child, out)?;
        } else {
            out.push(child);
        }
    }
    Ok(())
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

fn make(dev: &Path, spec: &FsSpec, tree: Option<&Path>, repro: Repro) -> anyhow::Result<()> {
    mkfs_command(dev, spec, tree, repro)?.run()?;
    Ok(())
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

/// Copies a tree into a FAT image with mtools: no kernel mount.
fn fill_vfat(dev: &Path, tree: &Path) -> anyhow::Result<()> {
    let entries: Vec<_> = std::fs::read_dir(tree)
        .with_context(|| format!("reading {}", tree.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let mut sorted = entries;
    sorted.sort();
    Cmd::new(
        format!("copying files into the FAT filesystem {}", dev.display()),
        "mcopy",
    )
    .env("MTOOLS_SKIP_CHECK", "1")
    .args(["-s", "-p", "-m", "-Q", "-i"])
    .arg(dev)
    .args(&sorted)
    .arg("::/")
    .run()?;
    Ok(())
}

/// Mounts the new filesystem, copies the tree in, and unmounts it.
fn fill_mounted(
    dev: &Path,
    spec: &FsSpec,
    tree: &Path,
    journal: &mut Journal,
    scratch: &Path,
) -> anyhow::Result<()> {
    if spec.fstype == "vfat" || spec.fstype == "swap" {
        bail!("{} cannot be filled through a mount", spec.fstype);
    }
    let mnt = scratch.join(format!("fill-{}", spec.uuid));
    std::fs::create_dir_all(&mnt)?;
    mount::mount(
        &Source::Device {
            dev,
            fstype: &spec.fstype,
            data: "",
        },
        &mnt,
    )?;
    let entry = Entry::Mount(mnt.clone());
    journal.record(entry.clone())?;
    let copied = copy_tree(tree, &mnt);
    let unmounted = journal.undo_until(&entry);
    copied?;
    unmounted?;
    std::fs::remove_dir(&mnt).ok();
    Ok(())
}

/// Copies a tree keeping owners, modes, xattrs, ACLs and hard links.
pub fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let pack = format!(
        "tar -C {} --numeric-owner --xattrs --xattrs-include='*' --acls -cf - . | tar -C {} --numeric-owner --xattrs --xattrs-include='*' --acls -xpf -",
        crate::host::runner::shell_quote(src.as_os_str()),
        crate::host::runner::shell_quote(dst.as_os_str()),
    );
    Cmd::new(format!("copying the tree into {}", dst.display()), "bash")
        .args(["-o", "pipefail", "-c", &pack])
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(t: &str) -> FsSpec {
        FsSpec {
            fstype: t.into(),
            label: Some("root".into()),
            uuid: "0a1b2c3d-1111-2222-3333-444455556666".into(),
            opts: vec!["-i".into(), "4096".into()],
        }
    }

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

    /// Old files read during the build (new access time, old modification time)
    /// are capped too, and each time is capped on its own.
    #[test]
    fn clamp_caps_access_and_modification_times_separately() {
        use std::os::unix::fs::MetadataExt;
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("dir")).unwrap();
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let set = |p: &str, atime: SystemTime, mtime: SystemTime| {
            let times = std::fs::FileTimes::new()
                .set_accessed(atime)
                .set_modified(mtime);
            let f = std::fs::File::open(tree.join(p)).unwrap();
            f.set_times(times).unwrap();
        };
        std::fs::write(tree.join("dir/old-read"), "x").unwrap();
        std::fs::write(tree.join("dir/new"), "x").unwrap();
        std::fs::write(tree.join("dir/old"), "x").unwrap();
        set("dir/old-read", SystemTime::now(), at(100));
        set("dir/new", at(500), SystemTime::now());
        set("dir/old", at(200), at(100));
        set("dir", SystemTime::now(), at(100));
        clamp_tree_times(&tree, 1000).unwrap();
        let times = |p: &str| {
            let m = std::fs::symlink_metadata(tree.join(p)).unwrap();
            (m.atime(), m.mtime())
        };
        assert_eq!(times("dir/old-read"), (1000, 100));
        assert_eq!(times("dir/new"), (500, 1000));
        assert_eq!(times("dir/old"), (200, 100));
        // find's own read of the directory does not move it past the cap.
        assert_eq!(times("dir"), (1000, 100));
    }

    /// Builds real ext4 and vfat images from a tree, without root, and reads them back.
    #[test]
    fn builds_filesystems_from_a_tree_without_mounting() {
        let tools = ["mke2fs", "debugfs", "mkfs.vfat", "mdir"];
        if let Some(t) = tools.iter().find(|t| !crate::host::tools::on_path(t)) {
            if std::env::var("DIB_CREATE_REQUIRE_ALL").is_ok_and(|v| v == "1") {
                panic!("{t} is needed (DIB_CREATE_REQUIRE_ALL=1)");
            }
            println!("SKIP builds_filesystems_from_a_tree_without_mounting: needs {t}");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hello"), "hi").unwrap();
        let mut j = Journal::create(d.path().join("j")).unwrap();
        for (t, size) in [("ext4", 16u64 << 20), ("vfat", 33 << 20)] {
            let img = d.path().join(format!("{t}.img"));
            std::fs::File::create(&img).unwrap().set_len(size).unwrap();
            // A systemd-style escaped name (ext4 only: FAT has no backslash);
            // its ctime must be fixed like the rest.
            let escaped = tree.join("etc/a\\x2db");
            if t == "ext4" {
                std::fs::write(&escaped, "").unwrap();
            } else {
                std::fs::remove_file(&escaped).unwrap();
            }
            let mut s = spec(t);
            s.opts.clear();
            s.label = Some(if t == "vfat" {
                "EFI".into()
            } else {
                "root".into()
            });
            make_and_fill(
                &img,
                &s,
                Some(&tree),
                FillMode::FromTree,
                Repro { epoch: Some(1) },
                &mut j,
                d.path(),
            )
            .unwrap();
            let listing = if t == "ext4" {
                Cmd::new("ls", "debugfs")
                    .args(["-R", "ls -l /etc"])
                    .arg(&img)
                    .read()
                    .unwrap()
            } else {
                Cmd::new("ls", "mdir")
                    .env("MTOOLS_SKIP_CHECK", "1")
                    .arg("-i")
                    .arg(&img)
                    .arg("::/etc")
                    .read()
                    .unwrap()
            };
            assert!(listing.to_lowercase().contains("hello"), "{t}: {listing}");
            if t == "ext4" {
                let stat = Cmd::new("stat", "debugfs")
                    .args(["-R", "stat \"/etc/a\\x2db\""])
                    .arg(&img)
                    .read()
                    .unwrap();
                assert!(stat.contains("ctime: 0x00000001:"), "{stat}");
                assert_no_write_count(&img);
            }
        }
        j.close().unwrap();
    }

    /// The primary superblock and the first backup carry no lifetime write
    /// count (dumpe2fs prints "Lifetime writes" only when it is not zero).
    fn assert_no_write_count(img: &Path) {
        let full = Cmd::new("dumpe2fs", "dumpe2fs").arg(img).read().unwrap();
        let field = |name: &str| {
            full.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| {
                    v.trim_start_matches([' ', ':'])
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                })
                .unwrap_or_else(|| panic!("no {name} in dumpe2fs output"))
                .to_string()
        };
        let (block_size, backup) = (field("Block size"), field("Backup superblock at"));
        let backup = backup.trim_end_matches(',');
        assert!(
            !full.contains("Lifetime writes"),
            "primary superblock: {full}"
        );
        let header = Cmd::new("dumpe2fs", "dumpe2fs")
            .args(["-h", "-o", &format!("superblock={backup}")])
            .args(["-o", &format!("blocksize={block_size}")])
            .arg(img)
            .read()
            .unwrap();
        assert!(
            !header.contains("Lifetime writes"),
            "backup at {backup}: {header}"
        );
    }
}
