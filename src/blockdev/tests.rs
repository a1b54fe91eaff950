//! Tests of the block-device layer as a whole: configs in, graph, sizes,
//! partition-table bytes and fstab out.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek, SeekFrom};

use super::config::{Label, Spec};
use super::fstab::{self, FsFacts};
use super::partition::{self, Disk, PartType, PartitionExtent};
use super::*;

const MIB: u64 = 1 << 20;

fn load(text: &str) -> Graph {
    match load_str(text, "test.yaml", &LoadOptions::default()) {
        Ok(g) => g,
        Err(e) => panic!("config did not load: {e}"),
    }
}

fn load_err(text: &str) -> BlockDevError {
    match load_str(text, "test.yaml", &LoadOptions::default()) {
        Ok(g) => panic!("config loaded but should not: {:?}", names(&g)),
        Err(e) => e,
    }
}

fn names(g: &Graph) -> Vec<&str> {
    g.nodes().iter().map(|n| n.name.as_str()).collect()
}

fn shipped(name: &str) -> Graph {
    let path = crate::paths::data_dir()
        .join(crate::paths::BLOCKDEV_CONFIGS)
        .join(format!("{name}.yaml"));
    load_config(ConfigSource::File(path), &LoadOptions::default()).unwrap()
}

// ---- shipped layouts and the default -------------------------------------

#[test]
fn shipped_layouts_parse_and_validate() {
    for name in ["mbr", "gpt", "efi", "efi-lvm", "gpt-ppc64el", "mbr-ppc64el"] {
        let g = shipped(name);
        assert!(g.root_filesystem().is_some(), "{name} has no root");
        g.check_fits(4 << 30).unwrap();
    }
    assert!(shipped("efi-lvm").uses_lvm());
    assert!(!shipped("efi").uses_lvm());
}

#[test]
fn shipped_elements_link_to_layouts() {
    let elements = crate::paths::elements_dir();
    for name in ["mbr", "gpt", "efi", "efi-lvm"] {
        let dir = elements.join(format!("block-device-{name}"));
        let link = dir.join("block-device-default.yaml");
        let target = std::fs::read_link(&link).unwrap();
        assert!(target.is_relative(), "{target:?}");
        assert_eq!(find_element_config(&dir, "amd64"), Some(link.clone()));
        load_config(ConfigSource::File(link), &LoadOptions::default()).unwrap();
        let provides = std::fs::read_to_string(dir.join("element-provides")).unwrap();
        assert_eq!(provides.trim(), "block-device");
        assert!(dir.join("environment.d/15-block-device.bash").is_file());
    }
    // ppc64el's own layouts, with the PReP partition Open Firmware boots.
    for name in ["mbr", "gpt"] {
        let dir = elements.join(format!("block-device-{name}"));
        let link = dir.join("block-device-ppc64el.yaml");
        assert_eq!(find_element_config(&dir, "ppc64el"), Some(link.clone()));
        let yaml = std::fs::read_to_string(&link).unwrap();
        assert!(yaml.contains("'4100'") || yaml.contains("'0x41'"), "{yaml}");
    }
}

#[test]
fn efi_order_and_summary() {
    let g = shipped("efi");
    assert_eq!(
        names(&g),
        [
            "image0",
            "ESP",
            "BSP",
            "root",
            "mkfs_ESP",
            "mkfs_root",
            "mount_mkfs_root",
            "mount_mkfs_ESP",
            "fstab_mount_mkfs_ESP",
            "fstab_mount_mkfs_root",
        ]
    );
    let direct = serde_json::to_value(g.nodes()).unwrap();
    assert_eq!(direct, serde_json::to_value(g.summary()).unwrap());
    assert_eq!(direct[0].as_object().unwrap().len(), 3);
    let json = dry_run_json(&g, 123);
    assert_eq!(json["image_size"], 123);
    assert_eq!(json["nodes"][1]["name"], "ESP");
    assert_eq!(json["nodes"][1]["module"], "partitioning");
    assert_eq!(json["nodes"][1]["bases"][0], "image0");
    assert_eq!(json["nodes"][4]["module"], "mkfs");
    let (name, fs) = g.root_filesystem().unwrap();
    assert_eq!(name, "mkfs_root");
    assert_eq!(fs.fstype, "ext4");
    assert_eq!(fs.label, "cloudimg-rootfs");
    let esp = g.filesystems().find(|(n, _)| *n == "mkfs_ESP").unwrap().1;
    assert_eq!(esp.label, "MKFS_ESP");
    assert!(g.esp_partition().is_some());
}

#[test]
fn default_config_is_a_bare_filesystem() {
    let g = load_config(ConfigSource::Default, &LoadOptions::default()).unwrap();
    assert_eq!(
        names(&g),
        [
            "image0",
            "mkfs_root",
            "mount_mkfs_root",
            "fstab_mount_mkfs_root"
        ]
    );
    let (_, fs) = g.root_filesystem().unwrap();
    assert_eq!(fs.fstype, "ext4");
    assert_eq!(fs.label, "cloudimg-rootfs");
    assert_eq!(fs.opts.as_deref(), Some("-i 4096 -J size=64"));
    assert!(g.tables().is_empty());
}

#[test]
fn env_source_inline_and_file() {
    let g = load_config(
        ConfigSource::Env(DEFAULT_CONFIG.to_string()),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(g.source(), "DIB_BLOCK_DEVICE_CONFIG");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, "- local_loop:\n    name: img\n  bogus: 1\n").unwrap();
    let e = load_config(
        ConfigSource::Env(format!("file://{}", p.display())),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(&p.display().to_string()), "{e}");
    let e = load_config(
        ConfigSource::File("/nonexistent/x.yaml".into()),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, BlockDevError::Read { .. }), "{e}");
}

#[test]
fn element_config_prefers_arch_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(find_element_config(dir.path(), "amd64"), None);
    std::fs::write(dir.path().join("block-device-default.yaml"), "").unwrap();
    std::fs::write(dir.path().join("block-device-ppc64el.yaml"), "").unwrap();
    let found = find_element_config(dir.path(), "ppc64le").unwrap();
    assert!(found.ends_with("block-device-ppc64el.yaml"));
    let found = find_element_config(dir.path(), "arm64").unwrap();
    assert!(found.ends_with("block-device-default.yaml"));
}

// ---- legacy root options -------------------------------------------------

#[test]
fn legacy_root_options_apply_to_mkfs_root() {
    let opts = LoadOptions {
        root: LegacyRootOptions {
            fs_type: "xfs".into(),
            mkfs_options: Some("-K".into()),
            ..Default::default()
        },
        block_size: Some(4096),
    };
    let g = load_str(DEFAULT_CONFIG, "t", &opts).unwrap();
    let (_, fs) = g.root_filesystem().unwrap();
    assert_eq!(fs.fstype, "xfs");
    assert_eq!(fs.label, "img-rootfs");
    assert_eq!(fs.opts.as_deref(), Some("-K"));
    assert_eq!(g.local_loops().next().unwrap().block_size, 4096);

    let opts = LoadOptions {
        root: LegacyRootOptions {
            label: Some("myroot".into()),
            mkfs_options: Some("-O ^has_journal".into()),
            journal_size_mib: 32,
            max_online_resize: Some("1000000".into()),
            ..Default::default()
        },
        block_size: None,
    };
    let g = load_str(DEFAULT_CONFIG, "t", &opts).unwrap();
    let (_, fs) = g.root_filesystem().unwrap();
    assert_eq!(fs.label, "myroot");
    assert_eq!(
        fs.opts.as_deref(),
        Some("-E resize=1000000 -i 4096 -J size=32 -O ^has_journal")
    );
}

#[test]
fn explicit_root_settings_win_over_legacy() {
    let g = load(
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      type: btrfs\n      label: r\n      opts: -f\n      mount:\n        mount_point: /\n",
    );
    let (_, fs) = g.root_filesystem().unwrap();
    assert_eq!((fs.fstype.as_str(), fs.label.as_str()), ("btrfs", "r"));
    assert_eq!(fs.opts.as_deref(), Some("-f"));
}

#[test]
fn non_root_mkfs_needs_type() {
    let e = load_err("- local_loop:\n    name: image0\n    mkfs:\n      name: data\n");
    let msg = e.to_string();
    assert!(
        matches!(e, BlockDevError::MissingField { field: "type", .. }),
        "{msg}"
    );
    assert!(msg.contains("`data`") && msg.contains("line 3"), "{msg}");
}

// ---- tree and graph forms ------------------------------------------------

const TREE_EFI: &str = "
- local_loop:
    name: image0
    partitioning:
      label: gpt
      partitions:
        - name: ESP
          type: EF00
          size: 550MiB
          mkfs:
            type: vfat
            mount:
              mount_point: /boot/efi
              fstab: {}
        - name: BSP
          type: EF02
          size: 8MiB
        - name: root
          size: 100%
          mkfs:
            type: ext4
            mount:
              mount_point: /
              fstab:
                fsck-passno: 1
";

const GRAPH_EFI: &str = "
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: ESP
        type: EF00
        size: 550MiB
      - name: BSP
        type: EF02
        size: 8MiB
      - name: root
        size: 100%
- mkfs:
    name: mkfs_ESP
    base: ESP
    type: vfat
- mkfs:
    base: root
    type: ext4
- mount:
    base: mkfs_ESP
    mount_point: /boot/efi
- mount:
    name: mount_mkfs_root
    base: mkfs_root
    mount_point: /
- fstab:
    base: mount_mkfs_ESP
- fstab:
    base: mount_mkfs_root
    fsck-passno: 1
";

const TREE_MBR: &str = "
- local_loop:
    name: image0
    size: 1GiB
    partitioning:
      label: mbr
      partitions:
        - name: boot
          flags: [boot, primary]
          size: 100MiB
          mkfs:
            type: ext2
            mount:
              mount_point: /boot
        - name: swap
          size: 64MiB
          mkfs:
            type: swap
            mount:
              mount_point: none
              fstab: {}
        - name: root
          size: 100%
          mkfs:
            mount:
              mount_point: /
";

const GRAPH_MBR: &str = "
- local_loop: {name: image0, size: 1GiB}
- partitioning:
    base: image0
    label: mbr
    partitions:
      - {name: boot, flags: [boot, primary], size: 100MiB}
      - {name: swap, size: 64MiB}
      - {name: root, size: 100%}
- mkfs: {base: boot, type: ext2}
- mkfs: {base: swap, type: swap}
- mkfs: {base: root}
- mount: {base: mkfs_boot, mount_point: /boot}
- mount: {base: mkfs_swap, mount_point: none}
- mount: {base: mkfs_root, mount_point: /}
- fstab: {base: mount_mkfs_swap}
";

#[test]
fn tree_and_graph_forms_are_identical() {
    for (tree, graph) in [(TREE_EFI, GRAPH_EFI), (TREE_MBR, GRAPH_MBR)] {
        let (t, g) = (load(tree), load(graph));
        assert_eq!(t.summary(), g.summary());
        // Lines differ between the two texts; everything else must not.
        let strip = |gr: &Graph| -> Vec<Node> {
            gr.nodes()
                .iter()
                .cloned()
                .map(|n| Node { line: 0, ..n })
                .collect()
        };
        assert_eq!(strip(&t), strip(&g));
        let tables = |gr: &Graph| -> Vec<config::PartitionTable> {
            gr.tables()
                .iter()
                .cloned()
                .map(|t| config::PartitionTable { line: 0, ..t })
                .collect()
        };
        assert_eq!(tables(&t), tables(&g));
    }
}

#[test]
fn names_default_to_module_and_base() {
    let g = load(TREE_MBR);
    assert_eq!(
        names(&g),
        [
            "image0",
            "boot",
            "swap",
            "root",
            "mkfs_boot",
            "mkfs_swap",
            "mkfs_root",
            "mount_mkfs_root",
            "mount_mkfs_boot",
            "mount_mkfs_swap",
            "fstab_mount_mkfs_swap",
        ]
    );
    // The legacy root defaults reach mkfs_root even without a type.
    assert_eq!(g.root_filesystem().unwrap().1.fstype, "ext4");
}

#[test]
fn mounts_in_path_order_whatever_the_yaml_order() {
    let g = load(
        "
- local_loop:
    name: image0
    partitioning:
      label: gpt
      partitions:
        - name: efi
          size: 100MiB
          mkfs: {type: vfat, mount: {mount_point: /boot/efi}}
        - name: boot
          size: 100MiB
          mkfs: {type: ext4, mount: {mount_point: /boot}}
        - name: root
          size: 100%
          mkfs: {mount: {mount_point: /}}
",
    );
    let order: Vec<&str> = g.mounts().map(|(_, m)| m.mount_point.as_str()).collect();
    assert_eq!(order, ["/", "/boot", "/boot/efi"]);
    let boot_mount = g.node("mount_mkfs_boot").unwrap();
    assert_eq!(boot_mount.after, ["mount_mkfs_root"]);
}

// ---- LVM ---------------------------------------------------------------

#[test]
fn lvm_nodes_and_order() {
    let g = shipped("efi-lvm");
    let n = names(&g);
    let pos = |x: &str| n.iter().position(|m| *m == x).unwrap();
    assert!(pos("root") < pos("lvm"));
    assert!(pos("lvm") < pos("pv"));
    assert!(pos("pv") < pos("vg"));
    assert!(pos("vg") < pos("lv_root"));
    assert!(pos("lv_home") < pos("fs_root"));
    let lv = g.node("lv_var").unwrap();
    let Spec::Lv(spec) = &lv.spec else { panic!() };
    assert_eq!(spec.extents.as_deref(), Some("57%VG"));
    assert_eq!(lv.module, Module::Lvm);
    assert_eq!(g.node("lvm").unwrap().bases, ["root"]);
    let order: Vec<&str> = g.mounts().map(|(_, m)| m.mount_point.as_str()).collect();
    assert_eq!(order, ["/", "/boot/efi", "/home", "/var"]);
}

const LVM_BASE: &str = "
- local_loop: {name: image0}
- partitioning:
    base: image0
    label: gpt
    partitions: [{name: p, size: 100%, type: 8E00}]
";

#[test]
fn lvm_errors() {
    let cases = [
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [nope]}]\n    lvs: [{name: lv, base: vg, size: 1GiB}]",
            "must name a pv",
        ),
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg2, size: 1GiB}]",
            "must name a vg",
        ),
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg}]",
            "`extents:`",
        ),
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg, extents: 10%XX}]",
            "invalid extents",
        ),
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg, size: 1G, type: raid}]",
            "thin and thin-pool",
        ),
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg, size: 1G, type: thin}]",
            "needs `thin-pool:`",
        ),
        (
            "pvs: [{name: pv, base: p}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg, size: 1G, type: thin, thin-pool: lv}]",
            "no lv of type thin-pool",
        ),
        (
            "pvs: [{name: pv, base: nowhere}]\n    vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg, size: 1G}]",
            "no node defines",
        ),
        (
            "vgs: [{name: vg, base: [pv]}]\n    lvs: [{name: lv, base: vg, size: 1G}]",
            "needs `pvs`",
        ),
    ];
    for (body, want) in cases {
        let text = format!("{LVM_BASE}- lvm:\n    name: lvm\n    {body}\n");
        let msg = load_err(&text).to_string();
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let thin = format!(
        "{LVM_BASE}- lvm:\n    name: lvm\n    pvs: [{{name: pv, base: p}}]\n    vgs: [{{name: vg, base: [pv]}}]\n    lvs:\n      - {{name: pool, base: vg, size: 2G, type: thin-pool}}\n      - {{name: thin, base: vg, size: 1G, type: thin, thin-pool: pool}}\n"
    );
    load(&thin);
}

// ---- validation errors ---------------------------------------------------

#[test]
fn duplicate_name() {
    let e = load_err("- local_loop: {name: a}\n- local_loop: {name: a}\n");
    let msg = e.to_string();
    assert!(matches!(e, BlockDevError::DuplicateName { .. }), "{msg}");
    assert!(
        msg.contains("test.yaml line 2") && msg.contains("line 1"),
        "{msg}"
    );
}

#[test]
fn missing_base() {
    let e = load_err("- local_loop: {name: image0}\n- mkfs:\n    base: image1\n    type: ext4\n");
    let msg = e.to_string();
    assert!(matches!(e, BlockDevError::MissingBase { .. }), "{msg}");
    assert!(
        msg.contains("`mkfs_image1`") && msg.contains("`image1`"),
        "{msg}"
    );
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn unknown_module() {
    let e = load_err("- local_loop: {name: image0}\n- raid:\n    base: image0\n");
    assert!(matches!(e, BlockDevError::UnknownModule { .. }), "{e}");
    assert!(e.to_string().contains("line 2"), "{e}");
    let e = load_err("- local_loop:\n    name: image0\n    mkfss:\n      type: ext4\n");
    assert!(matches!(e, BlockDevError::UnknownKey { .. }), "{e}");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[test]
fn duplicate_label() {
    let e = load_err(
        "- local_loop:\n    name: image0\n    partitioning:\n      label: gpt\n      partitions:\n        - {name: a, size: 1MiB, mkfs: {type: ext4, label: x}}\n        - {name: b, size: 1MiB, mkfs: {type: ext4, label: x}}\n",
    );
    let msg = e.to_string();
    assert!(matches!(e, BlockDevError::DuplicateLabel { .. }), "{msg}");
    assert!(
        msg.contains("`mkfs_a`") && msg.contains("`mkfs_b`"),
        "{msg}"
    );
    // vfat labels are upper-cased before the comparison.
    let e = load_err(
        "- local_loop:\n    name: image0\n    partitioning:\n      label: gpt\n      partitions:\n        - {name: a, size: 1MiB, mkfs: {type: vfat, label: efi}}\n        - {name: b, size: 1MiB, mkfs: {type: vfat, label: EFI}}\n",
    );
    assert!(matches!(e, BlockDevError::DuplicateLabel { .. }), "{e}");
}

#[test]
fn label_too_long() {
    for (fstype, label, max) in [
        ("ext4", "seventeen-chars-x", 16),
        ("xfs", "thirteen-char", 12),
        ("vfat", "TWELVE-CHARS", 11),
    ] {
        let text = format!(
            "- local_loop:\n    name: image0\n    mkfs:\n      type: {fstype}\n      label: {label}\n"
        );
        let e = load_err(&text);
        let msg = e.to_string();
        assert!(
            matches!(e, BlockDevError::LabelTooLong { max: m, .. } if m == max),
            "{msg}"
        );
        assert!(msg.contains(fstype) && msg.contains("line 3"), "{msg}");
    }
    // Limits are in bytes, as mkfs counts them.
    let e = load_err(
        "- local_loop:\n    name: image0\n    mkfs:\n      type: vfat\n      label: ÄÄÄÄÄÄ\n",
    );
    assert!(
        matches!(e, BlockDevError::LabelTooLong { len: 12, .. }),
        "{e}"
    );
    // At the limit is fine.
    load(
        "- local_loop:\n    name: image0\n    mkfs:\n      type: xfs\n      label: twelve-chars\n",
    );
}

#[test]
fn sizes_that_do_not_fit() {
    let e = load_err(
        "- local_loop:\n    name: image0\n    size: 100MiB\n    partitioning:\n      label: mbr\n      partitions:\n        - {name: a, flags: [primary], size: 60MiB}\n        - {name: b, flags: [primary], size: 60MiB}\n",
    );
    let msg = e.to_string();
    assert!(matches!(e, BlockDevError::DoesNotFit { .. }), "{msg}");
    assert!(msg.contains("`b`") && msg.contains("line 8"), "{msg}");
    // Without an explicit size, the check happens against the computed size.
    let g = shipped("efi");
    let e = g.check_fits(500 * MIB).unwrap_err();
    assert!(e.to_string().contains("`ESP`"), "{e}");
    g.check_fits(600 * MIB).unwrap();
}

#[test]
fn more_than_four_primaries() {
    let parts: String = (0..5)
        .map(|i| format!("        - {{name: p{i}, flags: [primary], size: 1MiB}}\n"))
        .collect();
    let text = format!(
        "- local_loop:\n    name: image0\n    partitioning:\n      label: mbr\n      partitions:\n{parts}"
    );
    let e = load_err(&text);
    assert!(
        matches!(e, BlockDevError::TooManyPrimary { count: 5, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("line 3"), "{e}");
    // Four primaries plus logicals need five slots too.
    let parts: String = (0..5)
        .map(|i| {
            let f = if i < 4 { "flags: [primary], " } else { "" };
            format!("        - {{name: p{i}, {f}size: 1MiB}}\n")
        })
        .collect();
    let text = format!(
        "- local_loop:\n    name: image0\n    partitioning:\n      label: mbr\n      partitions:\n{parts}"
    );
    assert!(matches!(
        load_err(&text),
        BlockDevError::TooManyPrimary { .. }
    ));
    // Three primaries and many logicals are fine.
    let parts: String = (0..8)
        .map(|i| {
            let f = if i < 3 { "flags: [primary], " } else { "" };
            format!("        - {{name: p{i}, {f}size: 1MiB}}\n")
        })
        .collect();
    let text = format!(
        "- local_loop:\n    name: image0\n    partitioning:\n      label: mbr\n      partitions:\n{parts}"
    );
    load(&text);
}

#[test]
fn duplicate_mount_point() {
    let e = load_err(
        "- local_loop:\n    name: image0\n    partitioning:\n      label: gpt\n      partitions:\n        - {name: a, size: 1MiB, mkfs: {type: ext4, mount: {mount_point: /srv}}}\n        - {name: b, size: 1MiB, mkfs: {type: ext4, mount: {mount_point: /srv}}}\n",
    );
    let msg = e.to_string();
    assert!(
        matches!(e, BlockDevError::DuplicateMountPoint { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("/srv") && msg.contains("`mount_mkfs_a`"),
        "{msg}"
    );
}

#[test]
fn other_config_errors() {
    let cases = [
        ("", "empty"),
        ("a: b\n", "not a list"),
        ("- [1]\n", "not a map"),
        ("- {local_loop: {name: a}, mkfs: {}}\n", "2 keys"),
        (
            "- local_loop:\n    name: a\n    block_size: 1024\n",
            "512 or 4096",
        ),
        (
            "- local_loop:\n    name: a\n    size: 1XB\n",
            "unknown unit",
        ),
        ("- local_loop: {}\n", "needs `name`"),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: dos, partitions: []}\n",
            "mbr or gpt",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, partitions: []}\n",
            "needs `label`",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: gpt, partitions: [{name: p, size: 1MiB, flags: [primary]}]}\n",
            "only on MBR",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: gpt, partitions: [{name: p, size: 1MiB, flags: [esp]}]}\n",
            "known flags",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: gpt, partitions: [{name: p, size: 1MiB, type: ZZ00}]}\n",
            "type GUID",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: mbr, partitions: [{name: p, size: 1MiB, type: EF02}]}\n",
            "EF02 is a GPT type code, which an MBR table cannot hold; set `label: gpt`",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: mbr, partitions: [{name: p, size: 1MiB, type: 1234}]}\n",
            "one hex byte",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: mbr, partitions: [{name: p}]}\n",
            "needs `size`",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: mbr, partitions: [{size: 1MiB}]}\n",
            "needs `name`",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: mbr, partitions: [{name: p, size: 150%}]}\n",
            "at most 100%",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: ntfs}\n",
            "supported types",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: ext4}\n- mount: {base: mkfs_a, mount_point: boot}\n",
            "absolute path",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: ext4}\n- mount: {base: mkfs_a}\n",
            "needs `mount_point`",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: swap}\n- mount: {base: mkfs_a, mount_point: /swap}\n",
            "swap is not mounted",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: ext4}\n- mount: {base: mkfs_a, mount_point: none}\n",
            "only swap",
        ),
        (
            "- local_loop: {name: a}\n- mount: {base: a, mount_point: /}\n",
            "must be based on a mkfs node",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: ext4}\n- fstab: {base: mkfs_a}\n",
            "must be based on a mount node",
        ),
        (
            "- local_loop: {name: a}\n- mkfs: {base: a, type: ext4}\n- mount: {base: mkfs_a, mount_point: /}\n- fstab: {base: mount_mkfs_a, fsck-passno: x}\n",
            "whole number",
        ),
        (
            "- mkfs: {name: x, base: y, type: ext4}\n- mkfs: {name: y, base: x, type: ext4}\n",
            "must be based on a block device",
        ),
        (
            "- local_loop: {name: a}\n- partitioning: {base: a, label: gpt, partitions: [{name: p, size: 1MiB}]}\n- partitioning: {base: p, label: gpt, partitions: [{name: q, size: 1MiB}]}\n",
            "must be based on a local_loop",
        ),
        ("- local_loop:\n    name: a\n  - broken\n", "invalid YAML"),
    ];
    for (text, want) in cases {
        let msg = load_err(text).to_string();
        assert!(msg.contains(want), "{text:?}: expected {want:?} in: {msg}");
    }
}

#[test]
fn yaml_errors_cite_the_line() {
    let e = load_err("- local_loop:\n    name: a\n    size: [1,\n");
    assert!(matches!(e, BlockDevError::Yaml { .. }), "{e}");
    let BlockDevError::Yaml { at, .. } = e else {
        unreachable!()
    };
    assert!(at.line >= 3, "{at}");
}

#[test]
fn no_panic_on_any_prefix_or_mangling() {
    let texts = [TREE_EFI, GRAPH_MBR, DEFAULT_CONFIG];
    let opts = LoadOptions::default();
    for text in texts {
        for end in 0..=text.len() {
            if text.is_char_boundary(end) {
                let _ = load_str(&text[..end], "t", &opts);
            }
        }
        for (i, _) in text.char_indices() {
            for c in ["", " ", "\n", "-", ":", "[", "%", "0"] {
                let mangled = format!("{}{c}{}", &text[..i], &text[i + 1..]);
                if let Ok(g) = load_str(&mangled, "t", &opts) {
                    let _ = g.check_fits(MIB);
                    let _ = compute_image_size(0, &SizeOptions::default(), &g);
                    let _ = fstab::render(&g, &BTreeMap::new());
                }
            }
        }
    }
}

// ---- image size ------------------------------------------------------------

#[test]
fn image_size_like_dib() {
    let g = load_config(ConfigSource::Default, &LoadOptions::default()).unwrap();
    // 600 MiB tree: ÷ 0.6 = 1000 MiB, + 64 MiB journal.
    let size = compute_image_size(600 * MIB, &SizeOptions::default(), &g);
    assert_eq!(size, 1064 * MIB);
    // --image-extra-size replaces the ÷ 0.6.
    let o = SizeOptions {
        image_extra_size_mib: Some(100),
        journal_size_mib: Some(32),
        ..Default::default()
    };
    assert_eq!(
        compute_image_size(600 * MIB, &o, &g),
        (600 + 100 + 32) * MIB
    );
    // --image-size: no journal.
    let o = SizeOptions {
        image_size_gib: Some(2.5),
        ..Default::default()
    };
    assert_eq!(compute_image_size(1, &o, &g), 2560 * MIB);
    // Rounded up to 64 KiB; a near-empty tree still gets room for mke2fs
    // to place the journal (twice its size, plus a tenth for metadata).
    let size = compute_image_size(1, &SizeOptions::default(), &g);
    assert_eq!(size % (64 * 1024), 0);
    assert_eq!(size, (128 * MIB * 10 / 9).div_ceil(64 * 1024) * 64 * 1024);
    // xfs root on a volume of 23% of its group: the group is sized so that
    // 23% holds the tree ÷ 0.6 (and two extents of rounding), plus LVM's
    // metadata; then the ESP, the BIOS boot partition and the 1 MiB before
    // the first partition. DIB sizes the disk as for a root partition, and
    // the root volume then gets 23% of that.
    let efi = shipped("efi-lvm");
    let group_kib: u64 = (1000 * 1024 + 8192) * 100 / 23 + 5 * 1024;
    assert_eq!(
        compute_image_size(600 * MIB, &SizeOptions::default(), &efi),
        (group_kib + (1 + 550 + 8) * 1024).div_ceil(1024) * MIB
    );
    // The Pi's firmware partition and the 4 MiB before it are added, and
    // the card ends on 4 MiB.
    let pi = shipped("rpi3");
    let size = compute_image_size(600 * MIB, &SizeOptions::default(), &pi);
    assert_eq!(size, (1000 + 64 + 256 + 4) * MIB);
    let size = compute_image_size(601 * MIB, &SizeOptions::default(), &pi);
    assert_eq!(size % (4 * MIB), 0);
    // An explicit local_loop size wins.
    let g = load(TREE_MBR);
    assert_eq!(
        compute_image_size(600 * MIB, &SizeOptions::default(), &g),
        1 << 30
    );
}

// ---- partition tables ------------------------------------------------------

fn disk(size: u64) -> Cursor<Vec<u8>> {
    Cursor::new(vec![0u8; size as usize])
}

fn bytes_at(c: &mut Cursor<Vec<u8>>, off: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    c.seek(SeekFrom::Start(off)).unwrap();
    c.read_exact(&mut buf).unwrap();
    buf
}

const MBR_LOGICAL: &str = "
- local_loop:
    name: image0
    partitioning:
      label: mbr
      partitions:
        - {name: boot, flags: [boot, primary], size: 10MiB}
        - {name: data, size: 20MiB, type: '0x0c'}
        - {name: root, flags: [boot], size: 100%}
";

#[test]
fn mbr_with_logical_partitions_like_dib() {
    let g = load(MBR_LOGICAL);
    let size = 100 * MIB;
    let mut img = disk(size);
    let d = Disk {
        size_bytes: size,
        sector_size: 512,
    };
    let ext = partition::write_table(&mut img, &g, "image0", d, Some(1)).unwrap();
    let got: Vec<(&str, u32, u64, u64)> = ext
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.number,
                e.start_bytes / 512,
                e.size_bytes / 512,
            )
        })
        .collect();
    // DIB's mbr.py: primary at 2048; the extended partition starts where it
    // ends; each logical's EBR sits one alignment unit before its data.
    assert_eq!(
        got,
        [
            ("boot", 1, 2048, 20480),
            ("data", 5, 24576, 40960),
            ("root", 6, 67584, 137216),
        ]
    );
    // Raw bytes: signature, active flag, type bytes, extended partition.
    assert_eq!(bytes_at(&mut img, 510, 2), [0x55, 0xAA]);
    assert_eq!(bytes_at(&mut img, 446, 1), [0x80]);
    assert_eq!(bytes_at(&mut img, 446 + 4, 1), [0x83]);
    assert_eq!(bytes_at(&mut img, 462, 1), [0x00]);
    assert_eq!(bytes_at(&mut img, 462 + 4, 1), [0x0F]);
    assert_eq!(bytes_at(&mut img, 462 + 8, 4), 22528u32.to_le_bytes());
    assert_eq!(
        bytes_at(&mut img, 462 + 12, 4),
        (204800u32 - 22528).to_le_bytes()
    );
    // First EBR at 22528: the data partition 2048 sectors in, then a link.
    let ebr1 = 22528 * 512;
    assert_eq!(bytes_at(&mut img, ebr1 + 510, 2), [0x55, 0xAA]);
    assert_eq!(bytes_at(&mut img, ebr1 + 446 + 4, 1), [0x0C]);
    assert_eq!(bytes_at(&mut img, ebr1 + 446 + 8, 4), 2048u32.to_le_bytes());
    assert_eq!(bytes_at(&mut img, ebr1 + 462 + 4, 1), [0x0F]);
    assert_eq!(
        bytes_at(&mut img, ebr1 + 462 + 8, 4),
        (65536u32 - 22528).to_le_bytes()
    );
    // Second EBR: the boot flag of a logical partition is kept.
    let ebr2 = 65536 * 512;
    assert_eq!(bytes_at(&mut img, ebr2 + 446, 1), [0x80]);
    assert_eq!(bytes_at(&mut img, ebr2 + 510, 2), [0x55, 0xAA]);
    // Read back with mbrman.
    let mbr = mbrman::MBR::read_from(&mut img, 512).unwrap();
    assert!(mbr[1].is_active());
    assert_eq!(mbr[1].sys, 0x83);
    assert!(mbr[2].is_extended());
    assert_eq!(mbr.logical_partitions.len(), 2);
    assert_eq!(mbr[5].starting_lba, 24576);
    assert_eq!(mbr[6].sectors, 137216);
}

#[test]
fn mbr_signature_is_seeded() {
    let g = shipped("mbr");
    let d = Disk {
        size_bytes: 64 * MIB,
        sector_size: 512,
    };
    let write = |seed| {
        let mut img = disk(64 * MIB);
        partition::write_table(&mut img, &g, "image0", d, seed).unwrap();
        img.into_inner()
    };
    assert_eq!(write(Some(5)), write(Some(5)));
    assert_ne!(write(Some(5))[440..444], write(Some(6))[440..444]);
    let img = write(Some(5));
    // One bootable primary partition, 0x83, 1 MiB to one MiB before the end.
    assert_eq!(img[446], 0x80);
    assert_eq!(img[450], 0x83);
    assert_eq!(img[454..458], 2048u32.to_le_bytes());
    assert_eq!(img[458..462], (131072u32 - 2048 - 2048).to_le_bytes());
}

#[test]
fn gpt_like_dib() {
    let g = shipped("efi");
    let size = 1 << 30;
    let mut img = disk(size);
    let d = Disk {
        size_bytes: size,
        sector_size: 512,
    };
    let ext = partition::write_table(&mut img, &g, "image0", d, Some(9)).unwrap();
    let got: Vec<(&str, u32, u64, u64, String)> = ext
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.number,
                e.start_bytes / MIB,
                e.size_bytes / MIB,
                e.part_type.to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ESP", 1, 1, 550, "EF00".to_string()),
            ("BSP", 2, 551, 8, "EF02".to_string()),
            ("root", 3, 559, 1024 - 2 - 558, "8300".to_string()),
        ]
    );
    // Protective MBR.
    assert_eq!(bytes_at(&mut img, 450, 1), [0xEE]);
    assert_eq!(bytes_at(&mut img, 510, 2), [0x55, 0xAA]);
    assert_eq!(bytes_at(&mut img, 512, 8), *b"EFI PART");
    let gpt = gptman::GPT::read_from(&mut img, 512).unwrap();
    assert_eq!(gpt[1].partition_name.as_str(), "ESP");
    assert_eq!(
        gpt[1].partition_type_guid,
        [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B
        ]
    );
    assert_eq!(gpt[2].starting_lba, 551 * 2048);
    assert_eq!(gpt[3].ending_lba, (559 + 464) * 2048 - 1);
    assert!(gpt[3].ending_lba <= gpt.header.last_usable_lba);
    // The backup header is at the last sector.
    assert_eq!(bytes_at(&mut img, size - 512, 8), *b"EFI PART");
}

#[test]
fn gpt_boot_flag_sets_legacy_bios_bootable() {
    let g = shipped("gpt");
    let mut img = disk(64 * MIB);
    let d = Disk {
        size_bytes: 64 * MIB,
        sector_size: 512,
    };
    partition::write_table(&mut img, &g, "image0", d, None).unwrap();
    let gpt = gptman::GPT::read_from(&mut img, 512).unwrap();
    assert_eq!(gpt[1].attribute_bits, 0);
    assert_eq!(gpt[2].attribute_bits, 1 << 2);
    assert_eq!(gpt[2].partition_name.as_str(), "root");
}

#[test]
fn gpt_ids_are_seeded() {
    let g = shipped("efi");
    let d = Disk {
        size_bytes: 1 << 30,
        sector_size: 512,
    };
    let write = |seed| {
        let mut img = disk(1 << 30);
        partition::write_table(&mut img, &g, "image0", d, seed).unwrap();
        let gpt = gptman::GPT::read_from(&mut img, 512).unwrap();
        (
            gpt.header.disk_guid,
            gpt[1].unique_partition_guid,
            gpt[2].unique_partition_guid,
            img.into_inner(),
        )
    };
    let (a, b) = (write(Some(3)), write(Some(3)));
    assert!(a.3 == b.3, "same seed, different bytes");
    let c = write(Some(4));
    assert_ne!(a.0, c.0);
    assert_ne!(a.1, c.1);
    assert_ne!(a.1, a.2);
    let r = write(None);
    assert_ne!(r.0, write(None).0);
}

#[test]
fn gpt_on_4k_sectors() {
    let g = load(
        "- local_loop:\n    name: image0\n    block_size: 4096\n    partitioning:\n      label: gpt\n      partitions:\n        - {name: root, size: 100%}\n",
    );
    assert_eq!(g.sector_size_of("image0"), 4096);
    let size = 64 * MIB;
    let mut img = disk(size);
    let d = Disk {
        size_bytes: size,
        sector_size: 4096,
    };
    let ext = partition::write_table(&mut img, &g, "image0", d, Some(1)).unwrap();
    assert_eq!(ext[0].start_bytes, MIB);
    assert_eq!(ext[0].size_bytes, 62 * MIB);
    assert_eq!(bytes_at(&mut img, 4096, 8), *b"EFI PART");
    let gpt = gptman::GPT::read_from(&mut img, 4096).unwrap();
    assert_eq!(gpt[1].starting_lba, 256);
}

#[test]
fn write_table_errors() {
    let g = shipped("efi");
    let d = Disk {
        size_bytes: 100 * MIB,
        sector_size: 512,
    };
    let mut img = disk(100 * MIB);
    let e = partition::write_table(&mut img, &g, "image0", d, None).unwrap_err();
    assert!(matches!(e, BlockDevError::DoesNotFit { .. }), "{e}");
    let e = partition::write_table(&mut img, &g, "nope", d, None).unwrap_err();
    assert!(e.to_string().contains("no partition table"), "{e}");
    let mut small = disk(MIB);
    let e = partition::write_table(&mut small, &g, "image0", d, None).unwrap_err();
    assert!(e.to_string().contains("less than the disk size"), "{e}");
    let odd = Disk {
        size_bytes: 100 * MIB + 1,
        sector_size: 512,
    };
    let e = partition::plan_layout(&g, &g.tables()[0], odd).unwrap_err();
    assert!(e.to_string().contains("multiple of the sector size"), "{e}");
}

#[test]
fn part_types() {
    assert_eq!(PartType::parse("0x83", Label::Mbr), Ok(PartType::Mbr(0x83)));
    assert_eq!(PartType::parse("83", Label::Mbr), Ok(PartType::Mbr(0x83)));
    assert_eq!(PartType::parse("8E00", Label::Mbr), Ok(PartType::Mbr(0x8E)));
    assert_eq!(
        PartType::parse("ef00", Label::Gpt).unwrap().to_string(),
        "EF00"
    );
    assert_eq!(
        PartType::parse("0x4100", Label::Gpt).unwrap().to_string(),
        "4100"
    );
    assert_eq!(
        PartType::parse("83", Label::Gpt).unwrap().to_string(),
        "8300"
    );
    let guid = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    assert_eq!(
        PartType::parse(&guid.to_lowercase(), Label::Gpt)
            .unwrap()
            .to_string(),
        guid
    );
    assert!(PartType::parse("EF00", Label::Gpt).unwrap().is_esp());
    assert!(PartType::parse("1234", Label::Gpt).is_err());
    let e: PartitionExtent = PartitionExtent {
        name: "x".into(),
        number: 1,
        start_bytes: 0,
        size_bytes: 0,
        part_type: PartType::Mbr(0x83),
        boot: false,
    };
    assert_eq!(serde_json::to_value(&e).unwrap()["type"], "0x83");
}

// ---- fstab -----------------------------------------------------------------

#[test]
fn fstab_like_dib() {
    let g = shipped("efi");
    let text = fstab::render(&g, &BTreeMap::new());
    assert_eq!(
        text,
        "LABEL=cloudimg-rootfs / ext4 defaults 0 1\nLABEL=MKFS_ESP /boot/efi vfat defaults 0 2\n"
    );
    let g = shipped("efi-lvm");
    let text = fstab::render(&g, &BTreeMap::new());
    assert_eq!(
        text,
        "LABEL=img-rootfs / xfs rw,relatime 0 1\nLABEL=MKFS_ESP /boot/efi vfat defaults 0 2\nLABEL=fs_home /home xfs rw,nodev,relatime 0 2\nLABEL=fs_var /var xfs rw,relatime 0 2\n"
    );
}

#[test]
fn fstab_uuid_swap_and_missing_entries() {
    let g = load(TREE_MBR);
    let mut facts = fstab::facts_from_config(&g, Some(1));
    assert_eq!(facts, fstab::facts_from_config(&g, Some(1)));
    let uuid = facts["mkfs_swap"].uuid.clone().unwrap();
    facts.insert(
        "mkfs_swap".into(),
        FsFacts {
            label: None,
            uuid: Some(uuid.clone()),
            fstype: "swap".into(),
        },
    );
    // Only the swap mount has an fstab node in TREE_MBR.
    assert_eq!(
        fstab::render(&g, &facts),
        format!("UUID={uuid} none swap sw 0 0\n")
    );
}

// ---- LVM layouts (placed without device-mapper) ----------------------------

/// An MBR disk with one partition of `size`, its volume group `vg`, the
/// `lvs` given (each a YAML flow mapping), and an ext4 root on `root_lv`.
fn one_group(size: &str, lvs: &[&str], root_lv: &str) -> String {
    let lvs: String = lvs.iter().map(|l| format!("      - {l}\n")).collect();
    format!(
        "\
- local_loop: {{name: image0}}
- partitioning:
    base: image0
    label: mbr
    partitions:
      - {{name: root, size: {size}}}
- lvm:
    name: lvm
    pvs: [{{name: pv, base: root}}]
    vgs: [{{name: vg, base: [pv]}}]
    lvs:
{lvs}- mkfs: {{name: fs, base: {root_lv}, type: ext4, mount: {{mount_point: /}}}}
"
    )
}

fn lvm_layout(g: &Graph, sizes: &[(&str, u64)]) -> Result<lvm::Layout, String> {
    let sizes = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    lvm::layout(g, &sizes, Some(1_700_000_000))
}

#[test]
fn lvm_percent_extents_round_down_as_lvcreate_does() {
    let g = shipped("efi-lvm");
    // A 1025 MiB partition: 1 MiB of label and metadata, then 256 extents.
    let l = lvm_layout(&g, &[("root", 1025 * MIB)]).unwrap();
    let vg = &l.vgs[0];
    assert_eq!(vg.pvs[0].pe_count, 256);
    let counts: Vec<u64> = vg.lvs.iter().map(|lv| lv.extents()).collect();
    // 23% and 57% of 256 round down; 20% would be 51 of the 52 left.
    assert_eq!(counts, [58, 145, 51]);
    let starts: Vec<u64> = vg.lvs.iter().map(|lv| lv.segments[0].pv_extent).collect();
    assert_eq!(starts, [0, 58, 203]);
    assert_eq!(
        vg.runs(&vg.lvs[1]),
        [(0, MIB + 58 * 4 * MIB, 145 * 4 * MIB)]
    );
}

#[test]
fn lvm_sizes_round_down_to_extents_and_must_fit() {
    let g = load(&one_group(
        "100M",
        &[
            "{name: lv_a, base: vg, size: 5M}",
            "{name: lv_b, base: vg, extents: 50%FREE}",
            "{name: lv_c, base: vg, size: 80M}",
        ],
        "lv_a",
    ));
    let err = lvm_layout(&g, &[("root", 100 * MIB)]).unwrap_err();
    // 99 MiB hold 24 extents. Sizes round down, as DIB rounds them: 5M
    // (5,000,000 bytes) is 1 extent, 80M 19. lv_b takes 11 of the 23 left,
    // and 19 do not fit in 12.
    assert!(err.contains("lv_c needs 19 extents"), "{err}");
    assert!(err.contains("has 12 free (of 24)"), "{err}");
    let l = lvm_layout(&g, &[("root", 200 * MIB)]).unwrap();
    let counts: Vec<u64> = l.vgs[0].lvs.iter().map(|lv| lv.extents()).collect();
    assert_eq!(counts, [1, 24, 19]);
}

#[test]
fn lvm_allocates_from_the_largest_pv_and_spills_over() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/blockdev/lvm-two-pvs.yaml"),
    )
    .unwrap();
    let g = load(&text);
    let l = lvm_layout(&g, &[("small", 101 * MIB), ("big", 201 * MIB)]).unwrap();
    let vg = &l.vgs[0];
    // 25 and 50 extents. lv_one (40) goes to the big pv; lv_two (30) then
    // takes all 25 of the small one, now the larger free run, and 5 of the
    // big one: two segments (the build fills them in a file of their own).
    assert_eq!(vg.lvs[0].segments.len(), 1);
    assert_eq!(vg.lvs[0].segments[0].pv, 1);
    let two = &vg.lvs[1].segments;
    assert_eq!((two[0].pv, two[0].pv_extent, two[0].extents), (0, 0, 25));
    assert_eq!((two[1].pv, two[1].pv_extent, two[1].extents), (1, 40, 5));
    assert_eq!(
        vg.runs(&vg.lvs[1]),
        [(0, MIB, 25 * 4 * MIB), (1, MIB + 40 * 4 * MIB, 5 * 4 * MIB)]
    );
}

#[test]
fn lvm_metadata_is_reproducible_and_names_every_extent() {
    let g = shipped("efi-lvm");
    let a = lvm_layout(&g, &[("root", 1025 * MIB)]).unwrap();
    let b = lvm_layout(&g, &[("root", 1025 * MIB)]).unwrap();
    assert_eq!(a, b);
    let text = lvm::metadata_text(&a.vgs[0], &["/dev/loop9p3".into()], 1_700_000_000);
    assert!(text.contains("creation_time = 1700000000"));
    // Held from the host's event activation while the build writes it.
    assert!(text.contains("\tflags = [\"NOAUTOACTIVATE\"]\n"));
    assert!(text.contains("pe_count = 256"));
    assert!(text.contains("dev_size = 2099200"));
    assert!(text.contains("\"pv0\", 58"));
    assert_eq!(text.matches("segment1 {").count(), 3);
    let uuid = &a.vgs[0].uuid;
    assert_eq!(uuid.len(), 38);
    assert_eq!(uuid.matches('-').count(), 6);
    let random = lvm::layout(&g, &BTreeMap::from([("root".into(), 1025 * MIB)]), None).unwrap();
    assert_ne!(random.vgs[0].uuid, *uuid);
}

#[test]
fn thin_volumes_are_refused_with_the_reason() {
    let text = one_group(
        "3G",
        &[
            "{name: pool, base: vg, type: thin-pool, size: 2G}",
            "{name: lv_root, base: vg, type: thin, thin-pool: pool, size: 1G}",
        ],
        "lv_root",
    );
    let why = lvm::unsupported(&load(&text)).unwrap();
    assert!(why.contains("lv pool is a thin-pool volume"), "{why}");
    assert!(lvm::unsupported(&shipped("efi-lvm")).is_none());
}

/// The volume groups of efi-lvm on an image of `size` bytes, placed on
/// the `root` partition that size leaves.
fn efi_lvm_groups(g: &Graph, size: u64) -> lvm::Layout {
    let disk = Disk {
        size_bytes: size,
        sector_size: 512,
    };
    let parts = partition::plan_layout(g, &g.tables()[0], disk).unwrap();
    let root = parts.iter().find(|e| e.name == "root").unwrap();
    lvm_layout(g, &[("root", root.size_bytes)]).unwrap()
}

fn lv_bytes(l: &lvm::Layout, name: &str) -> u64 {
    l.lv(name).unwrap().1.extents() * lvm::EXTENT_BYTES
}

#[test]
fn image_for_root_on_a_volume_gives_the_root_its_share() {
    let g = shipped("efi-lvm");
    let opts = SizeOptions::default();
    let tree = 700 * MIB;
    let root_lv = lv_bytes(
        &efi_lvm_groups(&g, compute_image_size(tree, &opts, &g)),
        "lv_root",
    );
    // The root volume (23% of the group) holds the tree with DIB's headroom.
    assert!(
        root_lv as f64 >= tree as f64 / 0.6,
        "{root_lv} for a tree of {tree}"
    );
    // An empty tree still gets xfs volumes mkfs.xfs accepts (home is 20%).
    let home = lv_bytes(
        &efi_lvm_groups(&g, compute_image_size(0, &opts, &g)),
        "lv_home",
    );
    assert!(home >= 300 * MIB, "lv_home {home}");
}

#[test]
fn lvm_fixed_sizes_are_whole_extents() {
    let spec = |size: Option<u64>, extents: Option<&str>| config::LogicalVolume {
        size,
        extents: extents.map(String::from),
        options: Vec::new(),
        lv_type: None,
        thin_pool: None,
    };
    // 100M is 100,000,000 bytes: 23 extents of 4 MiB.
    assert_eq!(
        lvm::fixed_bytes(&spec(Some(100_000_000), None)),
        Some(92 * MIB)
    );
    assert_eq!(lvm::fixed_bytes(&spec(None, Some("10"))), Some(40 * MIB));
    assert_eq!(lvm::fixed_bytes(&spec(None, Some("20%VG"))), None);
    assert_eq!(lvm::fixed_bytes(&spec(None, None)), None);
}
