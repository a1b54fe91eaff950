//! DIB's own block-device test configs (`block_device/tests/config/*.yaml`
//! of the installed diskimage-builder), read where DIB keeps them: we accept
//! the ones DIB accepts and reject the ones it rejects, or reject earlier
//! where DIB would only fail later, when a tool runs. The tree and graph forms
//! of one layout give one graph.
//!
//! Without python3 and diskimage-builder every test here prints
//! `SKIP <test>: <reason>` (and fails under DIB_CREATE_REQUIRE_ALL=1).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::{self, Node};
use super::*;

/// What we must do with a config.
enum Want {
    Accept,
    /// Rejected, with an error that this matches.
    Reject(fn(&BlockDevError) -> bool),
    /// Read as DIB reads it, then refused by the plan with a message that
    /// contains this (what dib-create does not build).
    PlanRefuses(&'static str),
}

use BlockDevError as E;
use Want::{Accept, PlanRefuses, Reject};

/// Every config DIB ships for its block-device tests. A config DIB adds
/// later fails the test until it has a row here.
const TABLE: &[(&str, Want)] = &[
    // DIB: "Edge not defined: this_is_not_a_node->mkfs_root".
    (
        "bad_edge_graph.yaml",
        Reject(|e| matches!(e, E::MissingBase { base, .. } if base == "this_is_not_a_node")),
    ),
    // DIB: "Config entry is not a plugin value".
    (
        "bad_plugin.yaml",
        Reject(
            |e| matches!(e, E::UnknownModule { module, .. } if module == "this_is_not_a_plugin_name"),
        ),
    ),
    // test_a/test_b are plugins of DIB's unit tests only; a real DIB rejects
    // them as it does any unknown module.
    (
        "cmd_create.yaml",
        Reject(|e| matches!(e, E::UnknownModule { module, .. } if module == "test_a")),
    ),
    ("deep_graph.yaml", Accept),
    ("deep_tree.yaml", Accept),
    // DIB: "File system label [duplicate] used more than once".
    (
        "duplicate_fs_labels.yaml",
        Reject(|e| matches!(e, E::DuplicateLabel { label, .. } if label == "duplicate")),
    ),
    // DIB: "Duplicate node name: this_is_a_duplicate".
    (
        "duplicate_name.yaml",
        Reject(|e| matches!(e, E::DuplicateName { name, .. } if name == "this_is_a_duplicate")),
    ),
    ("gpt_efi.yaml", Accept),
    // DIB accepts the lvm_* configs with a 100M xfs volume, then mkfs.xfs
    // (xfsprogs 5.19 and later) fails on it: 92 MiB in whole extents, under
    // its 300 MiB floor. The plan refuses it up front, naming the volume.
    (
        "lvm_graph.yaml",
        PlanRefuses(
            "fs_log sits on lv_log, which is 92 MiB; mkfs.xfs makes none smaller than 300 MiB",
        ),
    ),
    (
        "lvm_tree.yaml",
        PlanRefuses(
            "fs_log sits on lv_log, which is 92 MiB; mkfs.xfs makes none smaller than 300 MiB",
        ),
    ),
    // DIB accepts the graph, then fails writing the MBR: `type: 'EF00'` and
    // `'EF02'` are GPT type codes that do not fit the MBR's one type byte
    // (DIB packs them with struct.pack("<B"), a struct.error). We read EF00
    // as 0xEF (its low byte is 00, as 8300 is 0x83) and refuse EF02 up front.
    // (Its fstab key `fck-passno`, a typo that DIB ignores, we would refuse
    // next.)
    (
        "lvm_tree_multiple_partitions.yaml",
        Reject(|e| matches!(e, E::InvalidValue { field: "type", value, .. } if value == "EF02")),
    ),
    (
        "lvm_tree_multiple_pv.yaml",
        PlanRefuses(
            "fs_log sits on lv_log, which is 92 MiB; mkfs.xfs makes none smaller than 300 MiB",
        ),
    ),
    (
        "lvm_tree_multiple_pv_vg.yaml",
        PlanRefuses(
            "fs_log sits on lv_log, which is 92 MiB; mkfs.xfs makes none smaller than 300 MiB",
        ),
    ),
    ("lvm_tree_partition_ordering.yaml", Accept),
    ("lvm_tree_spanned_vg.yaml", Accept),
    // Thin pools need device-mapper's thin target to be formatted; LVM is
    // built here without device-mapper (src/blockdev/lvm.rs).
    (
        "lvm_tree_thin_provision.yaml",
        PlanRefuses("lv lv_thinpool is a thin-pool volume"),
    ),
    // DIB: "Config entry top-level should be a single dict".
    (
        "multi_key_node.yaml",
        Reject(|e| matches!(e, E::Structure { message, .. } if message.contains("2 keys"))),
    ),
    // DIB accepts both forms, then fails at mkfs: `uuid: root-uuid-1234` is
    // no UUID ("Invalid value root-uuid-1234 for -m uuid option" from
    // mkfs.xfs, "parsing UUID failed" from mkswap). We refuse it up front.
    (
        "multiple_partitions_graph.yaml",
        Reject(
            |e| matches!(e, E::InvalidValue { field: "uuid", value, .. } if value == "root-uuid-1234"),
        ),
    ),
    (
        "multiple_partitions_tree.yaml",
        Reject(
            |e| matches!(e, E::InvalidValue { field: "uuid", value, .. } if value == "root-uuid-1234"),
        ),
    ),
    // test_a/test_b again (DIB's rollback unit test).
    (
        "rollback.yaml",
        Reject(|e| matches!(e, E::UnknownModule { module, .. } if module == "test_a")),
    ),
    // DIB: "Edge not defined: root_part->root_fs"; nothing defines root_part.
    (
        "simple_graph.yaml",
        Reject(|e| matches!(e, E::MissingBase { base, .. } if base == "root_part")),
    ),
    (
        "simple_tree.yaml",
        Reject(|e| matches!(e, E::MissingBase { base, .. } if base == "root_part")),
    ),
    // DIB: "Label [...] too long for filesystem [xfs]: 39 > 12" (before it
    // looks at the missing base `fake`, as we do).
    (
        "too_long_fs_label.yaml",
        Reject(|e| {
            matches!(
                e,
                E::LabelTooLong {
                    max: 12,
                    len: 39,
                    ..
                }
            )
        }),
    ),
];

/// DIB's config directory, or why there is none.
fn dib_config_dir() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, diskimage_builder.block_device.tests as t; print(os.path.dirname(t.__file__))",
        ])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "diskimage-builder not importable (pip install diskimage-builder): {}",
            err.lines().last().unwrap_or("")
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("config");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!("{} is missing", dir.display()))
    }
}

/// The directory, or `None` after a visible skip.
fn config_dir(test: &str) -> Option<PathBuf> {
    match dib_config_dir() {
        Ok(d) => Some(d),
        Err(why) => {
            crate::testing::skip(test, &why);
            None
        }
    }
}

fn load(dir: &Path, file: &str) -> std::result::Result<Graph, BlockDevError> {
    load_config(ConfigSource::File(dir.join(file)), &LoadOptions::default())
}

#[test]
fn dib_test_configs_accepted_and_rejected_like_dib() {
    let Some(dir) = config_dir("dib_test_configs_accepted_and_rejected_like_dib") else {
        return;
    };
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = TABLE.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        on_disk,
        listed,
        "the table must name every config in {} (add a row for each new one)",
        dir.display()
    );
    let mut wrong = Vec::new();
    for (file, want) in TABLE {
        match (load(&dir, file), want) {
            (Ok(g), Accept) => {
                // The plan's own checks pass too (one image, a root at /).
                if let Err(e) = crate::plan::check_buildable(&g) {
                    wrong.push(format!("{file}: parsed, but the plan refuses it: {e}"));
                }
            }
            (Ok(g), PlanRefuses(why)) => match crate::plan::check_buildable(&g) {
                Err(e) if e.to_string().contains(why) => {}
                other => wrong.push(format!(
                    "{file}: the plan should refuse it ({why}): {other:?}"
                )),
            },
            (Ok(_), Reject(_)) => wrong.push(format!("{file}: accepted, but DIB rejects it")),
            (Err(e), Accept | PlanRefuses(_)) => {
                wrong.push(format!("{file}: rejected, but DIB accepts it: {e}"))
            }
            (Err(e), Reject(ok)) => {
                let msg = e.to_string();
                if !ok(&e) {
                    wrong.push(format!("{file}: rejected for another reason: {msg}"));
                }
                // It points at the file and the line.
                let at = format!("{} line ", dir.join(file).display());
                if !msg.starts_with(&at) {
                    wrong.push(format!("{file}: message names no file and line: {msg}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The nodes and tables without their YAML lines, which differ by form.
fn shape(g: &Graph) -> (Vec<Node>, Vec<config::PartitionTable>) {
    let nodes = g
        .nodes()
        .iter()
        .cloned()
        .map(|n| Node { line: 0, ..n })
        .collect();
    let tables = g
        .tables()
        .iter()
        .cloned()
        .map(|t| config::PartitionTable { line: 0, ..t })
        .collect();
    (nodes, tables)
}

/// An error without its place (`tree line 3: `), which differs by form.
fn headline(e: &BlockDevError) -> String {
    let s = e.to_string();
    s.split_once(": ")
        .map_or(s.clone(), |(_, rest)| rest.to_string())
}

/// DIB's pairs of one layout in tree and graph form, with the edits that
/// make the rejected ones loadable: simple_* lacks the device `root_part`,
/// multiple_partitions_* has ids that are no UUIDs.
/// Text replacements, each applied to its first occurrence.
type Edits = &'static [(&'static str, &'static str)];

const PAIRS: &[(&str, &str, Edits)] = &[
    (
        "simple_tree.yaml",
        "simple_graph.yaml",
        &[("- mkfs:", "- local_loop:\n    name: root_part\n\n- mkfs:")],
    ),
    ("deep_tree.yaml", "deep_graph.yaml", &[]),
    (
        "multiple_partitions_tree.yaml",
        "multiple_partitions_graph.yaml",
        &[
            ("root-uuid-1234", "0a1b2c3d-0000-4000-8000-000000000001"),
            ("var-uuid-1234", "0a1b2c3d-0000-4000-8000-000000000002"),
            ("swap-uuid-1234", "0a1b2c3d-0000-4000-8000-000000000003"),
        ],
    ),
    ("lvm_tree.yaml", "lvm_graph.yaml", &[]),
];

#[test]
fn dib_tree_and_graph_pairs_give_one_graph() {
    let Some(dir) = config_dir("dib_tree_and_graph_pairs_give_one_graph") else {
        return;
    };
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let parse = |text: &str, origin: &str| load_str(text, origin, &LoadOptions::default());
    for (tree, graph, edits) in PAIRS {
        let (t, g) = (read(tree), read(graph));
        // As DIB ships them: the same graph, or the same error.
        match (parse(&t, "tree"), parse(&g, "graph")) {
            (Ok(a), Ok(b)) => assert_eq!(shape(&a), shape(&b), "{tree} vs {graph}"),
            (Err(a), Err(b)) => assert_eq!(headline(&a), headline(&b), "{tree} vs {graph}"),
            (a, b) => panic!(
                "{tree}: {:?}\n{graph}: {:?}",
                a.map(|g| g.summary()),
                b.map(|g| g.summary())
            ),
        }
        if edits.is_empty() {
            continue;
        }
        // Made loadable: the same graph.
        let edit = |mut s: String| {
            for (from, to) in *edits {
                assert!(s.contains(from), "{from:?} not in the config");
                s = s.replacen(from, to, 1);
            }
            s
        };
        let a = parse(&edit(t), "tree").unwrap_or_else(|e| panic!("{tree} edited: {e}"));
        let b = parse(&edit(g), "graph").unwrap_or_else(|e| panic!("{graph} edited: {e}"));
        assert_eq!(shape(&a), shape(&b), "{tree} vs {graph}, edited");
        // An unlabelled xfs root gets DIB's short default.
        if let Some((_, fs)) = a.root_filesystem() {
            assert_eq!(fs.label, "img-rootfs", "{tree}");
        }
    }
}

/// A partition's own `base:` must name its table's device (DIB would
/// silently use the table's).
#[test]
fn partition_base_must_be_the_tables_device() {
    let config = |base: &str| {
        format!(
            "- local_loop:\n    name: image0\n- local_loop:\n    name: image1\n\
             - partitioning:\n    base: image0\n    label: mbr\n    partitions:\n\
             \x20     - name: root\n        base: {base}\n        size: 100%\n"
        )
    };
    assert!(load_str(&config("image0"), "t.yaml", &LoadOptions::default()).is_ok());
    for (base, what) in [("image1", "names another node"), ("nope", "names no node")] {
        let e = load_str(&config(base), "t.yaml", &LoadOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, E::InvalidValue { field: "base", node, .. } if node == "root"),
            "{msg}"
        );
        assert!(msg.contains("t.yaml line 9"), "{msg}");
        assert!(
            msg.contains(what) && msg.contains("`base: image0`"),
            "{msg}"
        );
    }
}
