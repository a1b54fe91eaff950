//! Checks the partition tables we write with independent tools (sgdisk,
//! sfdisk) through the command runner. Missing tools are a visible skip,
//! or a failure when DIB_CREATE_REQUIRE_ALL=1.

use std::path::{Path, PathBuf};

use dib::blockdev::partition::{self, Disk, PartitionExtent};
use dib::blockdev::sfdisk;
use dib::blockdev::{ConfigSource, Graph, LoadOptions, load_config};
use dib::host::Cmd;

const MIB: u64 = 1 << 20;

/// Whether `tool` is on PATH; prints a visible skip otherwise.
fn have(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file());
    if !found {
        let reason = format!("SKIP: {tool} is not installed (apt-get install gdisk fdisk)");
        if std::env::var("DIB_CREATE_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{reason}, and DIB_CREATE_REQUIRE_ALL=1");
        }
        eprintln!("{reason}");
    }
    found
}

fn tool(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn shipped(name: &str) -> Graph {
    let path = dib::paths::blockdev_configs_dir().join(format!("{name}.yaml"));
    load_config(ConfigSource::File(path), &LoadOptions::default()).unwrap()
}

fn write_image(dir: &Path, graph: &Graph, size: u64) -> (PathBuf, Vec<PartitionExtent>) {
    let path = dir.join("disk.img");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    drop(file);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let disk = Disk {
        size_bytes: size,
        sector_size: 512,
    };
    let extents = partition::write_table(&mut f, graph, "image0", disk, Some(1)).unwrap();
    (path, extents)
}

fn sfdisk_matches(path: &Path, extents: &[PartitionExtent]) -> sfdisk::SfdiskDump {
    let dump = sfdisk::dump(path).unwrap();
    let parts: Vec<_> = dump
        .partitiontable
        .partitions
        .iter()
        .filter(|p| !["5", "f", "85"].contains(&p.part_type.as_str()))
        .collect();
    assert_eq!(parts.len(), extents.len(), "{dump:#?}");
    for (p, e) in parts.iter().zip(extents) {
        assert_eq!(p.number(), Some(e.number), "{dump:#?}");
        assert_eq!(p.start * 512, e.start_bytes, "{}", e.name);
        assert_eq!(p.size * 512, e.size_bytes, "{}", e.name);
        assert_eq!(
            p.bootable || p.attrs.as_deref() == Some("LegacyBIOSBootable"),
            e.boot,
            "{}",
            e.name
        );
    }
    dump
}

#[test]
fn sgdisk_verifies_our_gpt() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for layout in ["gpt", "efi", "efi-lvm"] {
        let (path, _) = write_image(dir.path(), &shipped(layout), 2 << 30);
        let out = Cmd::new("verifying the GPT", tool("sgdisk"))
            .arg("-v")
            .arg(&path)
            .read()
            .unwrap();
        assert!(out.contains("No problems found"), "{layout}: {out}");
    }
}

#[test]
fn sfdisk_reads_our_gpt() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, extents) = write_image(dir.path(), &shipped("efi"), 1 << 30);
    let dump = sfdisk_matches(&path, &extents);
    let t = &dump.partitiontable;
    assert_eq!(t.label, "gpt");
    let names: Vec<_> = t
        .partitions
        .iter()
        .map(|p| p.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["ESP", "BSP", "root"]);
    assert_eq!(
        t.partitions[0].part_type,
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
}

#[test]
fn sfdisk_reads_our_mbr_with_logical_partitions() {
    if !have("sfdisk") {
        return;
    }
    let text = "
- local_loop:
    name: image0
    partitioning:
      label: mbr
      partitions:
        - {name: boot, flags: [boot, primary], size: 10MiB}
        - {name: data, size: 20MiB, type: '0x0c'}
        - {name: root, flags: [boot], size: 100%}
";
    let graph = dib::blockdev::load_str(text, "t", &LoadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, extents) = write_image(dir.path(), &graph, 100 * MIB);
    let dump = sfdisk_matches(&path, &extents);
    let types: Vec<_> = dump
        .partitiontable
        .partitions
        .iter()
        .map(|p| p.part_type.as_str())
        .collect();
    assert_eq!(types, ["83", "f", "c", "83"]);
    // sfdisk's own dump agrees with it too.
    let text = Cmd::new("dumping the MBR", tool("sfdisk"))
        .arg("-d")
        .arg(&path)
        .read()
        .unwrap();
    assert!(text.contains("label: dos"), "{text}");
}

#[test]
fn sfdisk_reads_our_single_mbr_partition() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, extents) = write_image(dir.path(), &shipped("mbr"), 64 * MIB);
    let dump = sfdisk_matches(&path, &extents);
    assert_eq!(dump.partitiontable.label, "dos");
    assert!(dump.partitiontable.partitions[0].bootable);
}
