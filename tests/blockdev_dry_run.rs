//! `--dry-run --format json` reports the block-device graph: nodes in creation
//! order and the image size. The tree form of a config and its graph form give
//! identical nodes, and bad configs exit 2 naming the line.

use assert_cmd::Command;
use serde_json::Value;

const TREE: &str = "
- local_loop:
    name: image0
    size: 2GiB
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 550MiB
        mkfs:
          type: vfat
          mount:
            mount_point: /boot/efi
            fstab:
              options: defaults
      - name: root
        size: 100%
        mkfs:
          mount:
            mount_point: /
            fstab:
              options: defaults
              fsck-passno: 1
";

const GRAPH: &str = "
- local_loop:
    name: image0
    size: 2GiB
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: 'EF00'
        size: 550MiB
      - name: root
        size: 100%
- mkfs:
    name: mkfs_ESP
    base: ESP
    type: vfat
- mount:
    name: mount_mkfs_ESP
    base: mkfs_ESP
    mount_point: /boot/efi
- fstab:
    name: fstab_mount_mkfs_ESP
    base: mount_mkfs_ESP
    options: defaults
- mkfs:
    name: mkfs_root
    base: root
- mount:
    name: mount_mkfs_root
    base: mkfs_root
    mount_point: /
- fstab:
    name: fstab_mount_mkfs_root
    base: mount_mkfs_root
    options: defaults
    fsck-passno: 1
";

fn dry_run(config: &str) -> std::process::Output {
    Command::cargo_bin("dib-create")
        .unwrap()
        .env("DIB_CREATE_DATA_DIR", env!("CARGO_MANIFEST_DIR"))
        .env("DIB_BLOCK_DEVICE_CONFIG", config)
        .args([
            "--dry-run",
            "--format",
            "json",
            "-t",
            "qcow2",
            "debian-minimal",
        ])
        .output()
        .unwrap()
}

fn block_device(config: &str) -> Value {
    let out = dry_run(config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    plan["block_device"].clone()
}

#[test]
fn tree_and_graph_forms_give_identical_nodes() {
    let tree = block_device(TREE);
    let graph = block_device(GRAPH);
    assert_eq!(tree["nodes"], graph["nodes"]);
    assert_eq!(tree["image_size"], 2u64 << 30);
    let names: Vec<&str> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "image0");
    assert!(names.contains(&"mkfs_root") && names.contains(&"fstab_mount_mkfs_ESP"));
}

#[test]
fn bad_config_exits_2_with_the_line() {
    let out = dry_run(
        "- local_loop:\n    name: image0\n- mkfs:\n    name: x\n    type: ext4\n    base: nowhere\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn tar_only_plans_have_no_block_device() {
    let out = Command::cargo_bin("dib-create")
        .unwrap()
        .env("DIB_CREATE_DATA_DIR", env!("CARGO_MANIFEST_DIR"))
        .args([
            "--dry-run",
            "--format",
            "json",
            "-t",
            "tar",
            "debian-minimal",
        ])
        .output()
        .unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan.get("block_device").is_none());
}

/// `vm` for each further architecture: the layout the architecture table
/// names, from the element's file for that architecture where it has one,
/// and the emulator the plan chose.
#[test]
fn each_architecture_gets_its_vm_layout_and_emulator() {
    for (arch, layout, emulator) in [
        (
            "armhf",
            "block-device-efi/block-device-default.yaml",
            Some("arm"),
        ),
        (
            "ppc64el",
            "block-device-gpt/block-device-ppc64el.yaml",
            Some("ppc64le"),
        ),
        ("i386", "block-device-mbr/block-device-default.yaml", None),
    ] {
        let out = Command::cargo_bin("dib-create")
            .unwrap()
            .env("DIB_CREATE_DATA_DIR", env!("CARGO_MANIFEST_DIR"))
            .args(["--dry-run", "--format", "json", "-a", arch, "-t", "qcow2"])
            .args(["debian-minimal", "vm"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
        let source = plan["block_device"]["source"].as_str().unwrap_or("");
        assert!(source.ends_with(layout), "{arch}: {source}");
        // i386 is emulated only on a kernel without IA-32 emulation.
        let native_i386 = std::process::Command::new("arch-test")
            .args(["-n", "i386"])
            .output()
            .is_ok_and(|o| o.status.success());
        if arch != "i386" || native_i386 {
            assert_eq!(plan["emulator"].as_str(), emulator, "{arch}");
        }
    }
}
