//! The block-device graph: nodes in creation order, checked as a whole.
//!
//! Creation order is a topological order of the dependencies (bases and
//! ordering edges). Among nodes that are ready at the same time, the lower
//! DIB level goes first (local_loop, partitions and LVM, mkfs, mount,
//! fstab), then the earlier entry in the YAML. Using the level first makes
//! the tree form and its graph-form translation give the same order.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::config::{
    Filesystem, Label, LocalLoop, Module, MountPoint, Node, Parsed, Partition, PartitionBase,
    PartitionTable, Spec,
};
use super::error::{At, BlockDevError, Result};
use super::partition::{self, Disk};

/// The checked graph of a block-device config.
#[derive(Clone, Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    tables: Vec<PartitionTable>,
    source: String,
}

/// One node as `--dry-run --format json` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub module: Module,
    pub bases: Vec<String>,
}

/// Label length limits of the filesystems that have one.
fn max_label_len(fstype: &str) -> Option<usize> {
    match fstype {
        "ext2" | "ext3" | "ext4" | "swap" => Some(16),
        "xfs" => Some(12),
        "vfat" => Some(11),
        // btrfs allows 255 bytes; never a practical limit.
        "btrfs" => Some(255),
        _ => None,
    }
}

impl Graph {
    /// Checks the parsed nodes and orders them for creation.
    pub fn build(parsed: Parsed, source: &str) -> Result<Graph> {
        let Parsed {
            mut nodes,
            tables,
            partition_bases,
        } = parsed;
        let at = |line| At::new(source, line);
        // DIB's order: what each node says of itself (names, labels), then
        // the edges between nodes.
        check_unique_names(&nodes, source)?;
        check_labels(&nodes, source)?;
        check_partition_bases(&nodes, &partition_bases, source)?;
        order_mounts(&mut nodes, source)?;
        check_references(&nodes, source)?;
        check_kinds(&nodes, source)?;
        check_mbr_slots(&nodes, &tables, source)?;
        let order = topo_order(&nodes).map_err(|cycle| BlockDevError::Cycle {
            at: at(0),
            nodes: cycle.join(", "),
        })?;
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let nodes = order.into_iter().filter_map(|i| slots[i].take()).collect();
        let graph = Graph {
            nodes,
            tables,
            source: source.to_string(),
        };
        graph.check_static_sizes()?;
        Ok(graph)
    }

    /// All nodes in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Name, module and bases of each node, in creation order.
    pub fn summary(&self) -> Vec<NodeSummary> {
        self.nodes
            .iter()
            .map(|n| NodeSummary {
                name: n.name.clone(),
                module: n.module,
                bases: n.bases.clone(),
            })
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Where the config came from (a path, or `DIB_BLOCK_DEVICE_CONFIG`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The partition tables, in config order.
    pub fn tables(&self) -> &[PartitionTable] {
        &self.tables
    }

    /// The partition table written on the device node `base`.
    pub fn table_on(&self, base: &str) -> Option<&PartitionTable> {
        self.tables.iter().find(|t| t.base == base)
    }

    /// The partitions of a table, in table order.
    pub fn partitions_of<'a>(&'a self, table: &'a PartitionTable) -> Vec<(&'a str, &'a Partition)> {
        table
            .partitions
            .iter()
            .filter_map(|name| match &self.node(name)?.spec {
                Spec::Partition(p) => Some((name.as_str(), p)),
                _ => None,
            })
            .collect()
    }

    pub fn local_loops(&self) -> impl Iterator<Item = &LocalLoop> {
        self.nodes.iter().filter_map(|n| match &n.spec {
            Spec::LocalLoop(l) => Some(l),
            _ => None,
        })
    }

    /// Filesystems (mkfs nodes) by node name, in creation order.
    pub fn filesystems(&self) -> impl Iterator<Item = (&str, &Filesystem)> {
        self.nodes.iter().filter_map(|n| match &n.spec {
            Spec::Mkfs(f) => Some((n.name.as_str(), f)),
            _ => None,
        })
    }

    /// Mount nodes in mount order (parents before children), with the
    /// name of the filesystem node each mounts.
    pub fn mounts(&self) -> impl Iterator<Item = (&Node, &MountPoint)> {
        self.nodes.iter().filter_map(|n| match &n.spec {
            Spec::Mount(m) => Some((n, m)),
            _ => None,
        })
    }

    /// The filesystem mounted at `/`, with its node name.
    pub fn root_filesystem(&self) -> Option<(&str, &Filesystem)> {
        let (mount, _) = self.mounts().find(|(_, m)| m.mount_point == "/")?;
        let base = mount.bases.first()?;
        self.filesystems().find(|(name, _)| name == base)
    }

    /// The EFI system partition (GPT type EF00 or MBR type 0xEF), if any.
    pub fn esp_partition(&self) -> Option<&Partition> {
        self.nodes.iter().find_map(|n| match &n.spec {
            Spec::Partition(p) if p.part_type.is_esp() => Some(p),
            _ => None,
        })
    }

    /// Whether the layout has LVM volumes (the host then needs lvm2).
    pub fn uses_lvm(&self) -> bool {
        self.nodes.iter().any(|n| n.module == Module::Lvm)
    }

    /// Checks that every partition table fits a disk of `size_bytes`.
    pub fn check_fits(&self, size_bytes: u64) -> Result<()> {
        for t in &self.tables {
            let disk = Disk {
                size_bytes,
                sector_size: self.sector_size_of(&t.base),
            };
            partition::plan_layout(self, t, disk)?;
        }
        Ok(())
    }

    /// The sector size of the device a table is written on: the block size
    /// of its local_loop (512 for anything else).
    pub fn sector_size_of(&self, base: &str) -> u64 {
        match self.node(base).map(|n| &n.spec) {
            Some(Spec::LocalLoop(l)) => u64::from(l.block_size),
            _ => 512,
        }
    }

    /// With an explicit local_loop size, the partitions must fit it now.
    fn check_static_sizes(&self) -> Result<()> {
        for t in &self.tables {
            if let Some(Spec::LocalLoop(LocalLoop { size: Some(s), .. })) =
                self.node(&t.base).map(|n| &n.spec)
            {
                let disk = Disk {
                    size_bytes: *s,
                    sector_size: self.sector_size_of(&t.base),
                };
                partition::plan_layout(self, t, disk)?;
            }
        }
        Ok(())
    }
}

fn check_unique_names(nodes: &[Node], source: &str) -> Result<()> {
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for n in nodes {
        if let Some(first) = seen.insert(&n.name, n.line) {
            return Err(BlockDevError::DuplicateName {
                at: At::new(source, n.line),
                name: n.name.clone(),
                first_line: first,
            });
        }
    }
    Ok(())
}

/// A partition's own `base:` (graph form) must name its table's device. DIB
/// ignores it and uses the table's; a different name is a mistake in the
/// config that DIB would hide.
fn check_partition_bases(nodes: &[Node], bases: &[PartitionBase], source: &str) -> Result<()> {
    let Some(b) = bases.iter().find(|b| b.declared != b.table_base) else {
        return Ok(());
    };
    let what = if nodes.iter().any(|n| n.name == b.declared) {
        "names another node"
    } else {
        "names no node"
    };
    Err(BlockDevError::InvalidValue {
        at: At::new(source, b.line),
        node: b.partition.clone(),
        field: "base",
        value: b.declared.clone(),
        reason: format!(
            "{what}, but a partition lies on the device its partitioning is based on, `{}`; \
             set the partition's `base: {}` or remove it",
            b.table_base, b.table_base
        ),
    })
}

/// The order mount points are mounted in: DIB's, by the path's bytes. A
/// path sorts before everything under it (it is their prefix), so `/` comes
/// before `/boot` before `/boot/efi`; `none` (swap) sorts after every
/// absolute path. Keeping DIB's order also keeps DIB's fstab order.
fn mount_key(mp: &str) -> &str {
    mp
}

/// Rejects duplicate mount points, and makes each mount wait for the one
/// before it in mount order (as DIB does), so mounts happen parent first.
fn order_mounts(nodes: &mut [Node], source: &str) -> Result<()> {
    let mut mounts: Vec<(usize, String)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let Spec::Mount(m) = &n.spec else { continue };
        if m.mount_point != "none"
            && let Some((j, _)) = mounts.iter().find(|(_, mp)| *mp == m.mount_point)
        {
            return Err(BlockDevError::DuplicateMountPoint {
                at: At::new(source, n.line),
                mount_point: m.mount_point.clone(),
                node: n.name.clone(),
                other: nodes[*j].name.clone(),
            });
        }
        mounts.push((i, m.mount_point.clone()));
    }
    mounts.sort_by(|(i, a), (j, b)| mount_key(a).cmp(mount_key(b)).then(i.cmp(j)));
    for pair in mounts.windows(2) {
        let prev = nodes[pair[0].0].name.clone();
        nodes[pair[1].0].after.push(prev);
    }
    Ok(())
}

fn check_references(nodes: &[Node], source: &str) -> Result<()> {
    let names: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    for n in nodes {
        if let Some(missing) = n
            .bases
            .iter()
            .chain(&n.after)
            .find(|b| !names.contains(b.as_str()))
        {
            return Err(BlockDevError::MissingBase {
                at: At::new(source, n.line),
                node: n.name.clone(),
                base: missing.clone(),
            });
        }
    }
    Ok(())
}

/// Each module can only sit on certain others: mkfs on a block device,
/// mount on a filesystem, fstab on a mount, a table on a device.
fn check_kinds(nodes: &[Node], source: &str) -> Result<()> {
    let by_name: HashMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for n in nodes {
        let (ok, wanted): (fn(&Spec) -> bool, &str) = match n.spec {
            Spec::Mkfs(_) | Spec::Pv(_) => (
                is_block_device,
                "a block device (local_loop, partition or lv)",
            ),
            Spec::Partition(_) => (|s| matches!(s, Spec::LocalLoop(_)), "a local_loop node"),
            Spec::Mount(_) => (|s| matches!(s, Spec::Mkfs(_)), "a mkfs node"),
            Spec::Fstab(_) => (|s| matches!(s, Spec::Mount(_)), "a mount node"),
            _ => continue,
        };
        for b in &n.bases {
            let base = by_name[b.as_str()];
            if !ok(&base.spec) {
                return Err(BlockDevError::InvalidValue {
                    at: At::new(source, n.line),
                    node: n.name.clone(),
                    field: "base",
                    value: b.clone(),
                    reason: format!(
                        "a {} node must be based on {wanted}, but `{b}` is a {} node",
                        n.module.as_str(),
                        base.module.as_str()
                    ),
                });
            }
        }
        if let Spec::Mount(m) = &n.spec {
            check_swap_mount(n, m, by_name[n.bases[0].as_str()], source)?;
        }
    }
    Ok(())
}

fn is_block_device(s: &Spec) -> bool {
    matches!(s, Spec::LocalLoop(_) | Spec::Partition(_) | Spec::Lv(_))
}

/// Swap is never mounted: it takes `mount_point: none`, and only swap may.
fn check_swap_mount(n: &Node, m: &MountPoint, fs: &Node, source: &str) -> Result<()> {
    let is_swap = matches!(&fs.spec, Spec::Mkfs(f) if f.fstype == "swap");
    let reason = match (is_swap, m.mount_point == "none") {
        (true, false) => "swap is not mounted; use `mount_point: none`",
        (false, true) => "only swap may use `none`; give an absolute path",
        _ => return Ok(()),
    };
    Err(BlockDevError::InvalidValue {
        at: At::new(source, n.line),
        node: n.name.clone(),
        field: "mount_point",
        value: m.mount_point.clone(),
        reason: reason.into(),
    })
}

fn check_labels(nodes: &[Node], source: &str) -> Result<()> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for n in nodes {
        let Spec::Mkfs(fs) = &n.spec else { continue };
        if let Some(other) = seen.insert(&fs.label, &n.name) {
            return Err(BlockDevError::DuplicateLabel {
                at: At::new(source, n.line),
                label: fs.label.clone(),
                node: n.name.clone(),
                other: other.to_string(),
            });
        }
        // mkfs tools count bytes, not characters.
        let len = fs.label.len();
        if let Some(max) = max_label_len(&fs.fstype).filter(|m| len > *m) {
            return Err(BlockDevError::LabelTooLong {
                at: At::new(source, n.line),
                node: n.name.clone(),
                label: fs.label.clone(),
                fstype: fs.fstype.clone(),
                len,
                max,
            });
        }
    }
    Ok(())
}

/// MBR has four slots: the primaries, plus one for the extended partition
/// when there are logical ones. Primaries must come before logicals.
fn check_mbr_slots(nodes: &[Node], tables: &[PartitionTable], source: &str) -> Result<()> {
    for t in tables.iter().filter(|t| t.label == Label::Mbr) {
        let parts: Vec<(&Node, &Partition)> = t
            .partitions
            .iter()
            .filter_map(|name| nodes.iter().find(|n| &n.name == name))
            .filter_map(|n| match &n.spec {
                Spec::Partition(p) => Some((n, p)),
                _ => None,
            })
            .collect();
        let primaries = parts.iter().filter(|(_, p)| p.primary).count();
        let logicals = parts.len() - primaries;
        let count = primaries + usize::from(logicals > 0);
        if count > 4 {
            return Err(BlockDevError::TooManyPrimary {
                at: At::new(source, t.line),
                node: t.base.clone(),
                count,
            });
        }
        let mut seen_logical = false;
        for (n, p) in parts {
            if p.primary && seen_logical {
                return Err(BlockDevError::InvalidValue {
                    at: At::new(source, n.line),
                    node: n.name.clone(),
                    field: "flags",
                    value: "primary".into(),
                    reason: "primary partitions must be listed before logical ones (those without the primary flag)".into(),
                });
            }
            seen_logical |= !p.primary;
        }
    }
    Ok(())
}

/// Kahn's algorithm; among ready nodes the lowest (level, index) goes first.
/// On a cycle, returns the names of the nodes that could not be ordered.
fn topo_order(nodes: &[Node]) -> std::result::Result<Vec<usize>, Vec<String>> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let deps: Vec<HashSet<usize>> = nodes
        .iter()
        .map(|n| {
            n.bases
                .iter()
                .chain(&n.after)
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let next = (0..nodes.len())
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| (nodes[i].module.level(), i));
        let Some(i) = next else {
            let stuck = (0..nodes.len())
                .filter(|&i| !done[i])
                .map(|i| format!("`{}`", nodes[i].name))
                .collect();
            return Err(stuck);
        };
        done[i] = true;
        order.push(i);
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_keys_sort_parents_first() {
        let mut mps = vec![
            "/boot/efi",
            "none",
            "/var-lib",
            "/var/log",
            "/",
            "/boot",
            "/var",
        ];
        mps.sort_by_key(|m| mount_key(m));
        let want = [
            "/",
            "/boot",
            "/boot/efi",
            "/var",
            "/var-lib",
            "/var/log",
            "none",
        ];
        assert_eq!(mps, want);
        // Every path comes before the paths under it.
        for (i, a) in mps.iter().enumerate() {
            for b in &mps[..i] {
                assert!(
                    !b.starts_with(&format!("{a}/")),
                    "{b} before its parent {a}"
                );
            }
        }
    }

    fn bare(name: &str, deps: &[&str]) -> Node {
        Node {
            name: name.into(),
            module: Module::Mkfs,
            bases: deps.iter().map(|d| d.to_string()).collect(),
            after: Vec::new(),
            line: 0,
            spec: Spec::Mount(MountPoint {
                mount_point: "/".into(),
            }),
        }
    }

    #[test]
    fn topo_order_reports_cycles() {
        let nodes = [bare("a", &[]), bare("b", &["c"]), bare("c", &["b"])];
        let want = vec!["`b`".to_string(), "`c`".to_string()];
        assert_eq!(topo_order(&nodes), Err(want));
        let nodes = [bare("x", &["y"]), bare("y", &[])];
        assert_eq!(topo_order(&nodes), Ok(vec![1, 0]));
    }

    #[test]
    fn label_limits() {
        assert_eq!(max_label_len("ext4"), Some(16));
        assert_eq!(max_label_len("xfs"), Some(12));
        assert_eq!(max_label_len("vfat"), Some(11));
    }
}
