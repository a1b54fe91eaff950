//! Making filesystems and filling them with a directory's contents (what to
//! make is decided in `crate::blockdev::mkfs`). Every command goes through
//! the build's journal, so the host it acts on is the build's.

use anyhow::{Context, bail};
use std::path::Path;

use crate::blockdev::mkfs::{FillMode, FsSpec, Repro, mkfs_command};
use crate::host::mount::Source;
use crate::host::{Cmd, Journal};

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
        clamp_tree_times(journal, t, epoch)?;
    }
    journal.run(mkfs_command(dev, spec, from_tree, repro)?)?;
    match (mode, tree) {
        (FillMode::Mounted, Some(t)) => fill_mounted(dev, spec, t, journal, scratch),
        (FillMode::FromTree, Some(t)) if spec.fstype == "vfat" => fill_vfat(journal, dev, t),
        (FillMode::FromTree, Some(t)) if spec.fstype.starts_with("ext") => match repro.epoch {
            Some(epoch) => normalise_ext_metadata(journal, dev, t, epoch, scratch),
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
pub fn clamp_tree_times(journal: &mut Journal, tree: &Path, epoch: u64) -> anyhow::Result<()> {
    let stamp = format!("@{epoch}");
    // (what, find's test, touch's flag, extra find options)
    let passes: [(&str, &str, &str, &[&str]); 2] = [
        ("modification", "-newermt", "-m", &[]),
        ("access", "-newerat", "-a", &["-depth"]),
    ];
    for (what, newer, flag, opts) in passes {
        journal.run(
            Cmd::new(
                format!("capping file {what} times at SOURCE_DATE_EPOCH"),
                "find",
            )
            .arg(tree)
            .args(opts.iter().copied())
            .args(["-xdev", newer, &stamp, "-exec", "touch", "--no-dereference"])
            .args([flag, "--date", &stamp, "{}", "+"]),
        )?;
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
    journal: &mut Journal,
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
    journal.read(
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
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string()),
    )?;
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

/// Copies a tree into a FAT image with mtools: no kernel mount.
fn fill_vfat(journal: &mut Journal, dev: &Path, tree: &Path) -> anyhow::Result<()> {
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
    journal.run(
        Cmd::new(
            format!("copying files into the FAT filesystem {}", dev.display()),
            "mcopy",
        )
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-p", "-m", "-Q", "-i"])
        .arg(dev)
        .args(&sorted)
        .arg("::/"),
    )?;
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
    let entry = journal.mount(
        &Source::Device {
            dev,
            fstype: &spec.fstype,
            data: "",
        },
        &mnt,
    )?;
    let copied = copy_tree(journal, tree, &mnt);
    let unmounted = journal.undo_until(&entry);
    copied?;
    unmounted?;
    std::fs::remove_dir(&mnt).ok();
    Ok(())
}

/// Copies a tree keeping owners, modes, xattrs, ACLs and hard links.
pub fn copy_tree(journal: &mut Journal, src: &Path, dst: &Path) -> anyhow::Result<()> {
    let pack = format!(
        "tar -C {} --numeric-owner --xattrs --xattrs-include='*' --acls -cf - . | tar -C {} --numeric-owner --xattrs --xattrs-include='*' --acls -xpf -",
        crate::host::runner::shell_quote(src.as_os_str()),
        crate::host::runner::shell_quote(dst.as_os_str()),
    );
    journal.run(
        Cmd::new(format!("copying the tree into {}", dst.display()), "bash")
            .args(["-o", "pipefail", "-c", &pack]),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::mkfs::sample_spec as spec;
    use crate::host::RealHost;

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
        let mut j = Journal::create(d.path().join("j"), Box::new(RealHost)).unwrap();
        clamp_tree_times(&mut j, &tree, 1000).unwrap();
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
            crate::testing::skip(
                "builds_filesystems_from_a_tree_without_mounting",
                &format!("needs {t}"),
            );
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hello"), "hi").unwrap();
        let mut j = Journal::create(d.path().join("j"), Box::new(RealHost)).unwrap();
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
