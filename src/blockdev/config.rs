//! Reading DIB's block-device YAML into typed nodes.
//!
//! Two steps, as in DIB: the tree form is first flattened into the graph form
//! (a missing `base` is the parent's name, a missing `name` is
//! `<module>_<base>`), then each flat entry becomes one or more typed nodes.
//! A partition always lies on its table's device; the graph form may say so
//! with the partition's own `base:`, which must then name that device.
//! The graph (edges, order, cross-node checks) is built in [`super::graph`].

use serde::Serialize;

use super::error::{At, BlockDevError, Result};
use super::partition::PartType;
use super::size::{SizeSpec, parse_size};
use super::yaml::{YNode, YValue};

/// The module keys DIB knows.
pub const MODULES: &[&str] = &[
    "local_loop",
    "partitioning",
    "lvm",
    "mkfs",
    "mount",
    "fstab",
];

/// Which DIB plugin a node belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    LocalLoop,
    Partitioning,
    Lvm,
    Mkfs,
    Mount,
    Fstab,
}

impl Module {
    fn from_key(key: &str) -> Option<Module> {
        Some(match key {
            "local_loop" => Module::LocalLoop,
            "partitioning" => Module::Partitioning,
            "lvm" => Module::Lvm,
            "mkfs" => Module::Mkfs,
            "mount" => Module::Mount,
            "fstab" => Module::Fstab,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Module::LocalLoop => "local_loop",
            Module::Partitioning => "partitioning",
            Module::Lvm => "lvm",
            Module::Mkfs => "mkfs",
            Module::Mount => "mount",
            Module::Fstab => "fstab",
        }
    }

    /// DIB's level (0 = image, 4 = fstab). Creation order breaks ties with it,
    /// so that the tree and the graph form give the same order.
    pub fn level(&self) -> u8 {
        match self {
            Module::LocalLoop => 0,
            Module::Partitioning | Module::Lvm => 1,
            Module::Mkfs => 2,
            Module::Mount => 3,
            Module::Fstab => 4,
        }
    }
}

/// DIB's legacy root filesystem parameters (from disk-image-create's flags
/// and environment), applied to the root `mkfs` node where it leaves them unset.
#[derive(Clone, Debug, PartialEq)]
pub struct LegacyRootOptions {
    /// `DIB_ROOT_FSTYPE` / `FS_TYPE` (default ext4).
    pub fs_type: String,
    /// `--root-label`; default `cloudimg-rootfs` (`img-rootfs` for xfs).
    pub label: Option<String>,
    /// `--mkfs-options`, appended after DIB's own ext4 options.
    pub mkfs_options: Option<String>,
    /// `--mkfs-journal-size` in MiB (default 64).
    pub journal_size_mib: u64,
    /// `--max-online-resize` (ext4 `-E resize=`).
    pub max_online_resize: Option<String>,
}

impl Default for LegacyRootOptions {
    fn default() -> Self {
        LegacyRootOptions {
            fs_type: "ext4".into(),
            label: None,
            mkfs_options: None,
            journal_size_mib: super::size::DEFAULT_JOURNAL_MIB,
            max_online_resize: None,
        }
    }
}

impl LegacyRootOptions {
    /// The mkfs options DIB gives the root filesystem of this type.
    pub fn opts_for(&self, fstype: &str) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        if let Some(r) = &self.max_online_resize {
            parts.push(format!("-E resize={r}"));
        }
        if fstype == "ext4" {
            parts.push(format!("-i 4096 -J size={}", self.journal_size_mib));
        }
        if let Some(o) = self
            .mkfs_options
            .as_deref()
            .filter(|o| !o.trim().is_empty())
        {
            parts.push(o.trim().to_string());
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The root label DIB uses when neither the config nor `--root-label` sets one.
    pub fn label_for(&self, fstype: &str) -> String {
        match (&self.label, fstype) {
            (Some(l), _) => l.clone(),
            (None, "xfs") => "img-rootfs".into(),
            (None, _) => "cloudimg-rootfs".into(),
        }
    }
}

/// Everything outside the YAML that shapes the nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadOptions {
    pub root: LegacyRootOptions,
    /// `DIB_BLOCK_SIZE`, which wins over `block_size:` as in DIB.
    pub block_size: Option<u32>,
}

/// A node of the block-device graph. It serialises as `name`, `module` and
/// `bases`, the form `--dry-run --format json` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub module: Module,
    /// The nodes this one is built on, as the config says.
    pub bases: Vec<String>,
    /// Nodes that must come first for ordering only (the previous partition,
    /// the previous mount point, the LVM driver).
    #[serde(skip)]
    pub after: Vec<String>,
    /// Line of the config entry (0 when unknown).
    #[serde(skip)]
    pub line: u32,
    #[serde(skip)]
    pub spec: Spec,
}

/// What a node is, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    LocalLoop(LocalLoop),
    Partition(Partition),
    LvmDriver(LvmDriver),
    Pv(LvmItem),
    Vg(LvmItem),
    Lv(LogicalVolume),
    Mkfs(Filesystem),
    Mount(MountPoint),
    Fstab(FstabEntry),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LocalLoop {
    /// Explicit image size; `None` means the computed size.
    pub size: Option<u64>,
    pub directory: Option<String>,
    pub block_size: u32,
}

/// Whether a table is MBR or GPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Mbr,
    Gpt,
}

/// One `partitioning:` entry: the table on a base device.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionTable {
    /// The device node the table is written on.
    pub base: String,
    pub label: Label,
    /// Alignment in bytes (default 1 MiB).
    pub align: u64,
    /// The partition node names, in table order.
    pub partitions: Vec<String>,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Index into the graph's partition tables.
    pub table: usize,
    pub boot: bool,
    pub primary: bool,
    pub size: SizeSpec,
    pub part_type: PartType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LvmDriver {
    pub pvs: Vec<String>,
    pub vgs: Vec<String>,
    pub lvs: Vec<String>,
}

/// A physical volume or volume group: its extra command options.
#[derive(Clone, Debug, PartialEq)]
pub struct LvmItem {
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogicalVolume {
    pub size: Option<u64>,
    pub extents: Option<String>,
    pub options: Vec<String>,
    /// `thin` or `thin-pool`.
    pub lv_type: Option<String>,
    pub thin_pool: Option<String>,
}

/// A filesystem to make. Labels are resolved (defaults applied).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Filesystem {
    pub fstype: String,
    pub label: String,
    pub opts: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MountPoint {
    /// An absolute path, or `none` for swap.
    pub mount_point: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FstabEntry {
    pub options: String,
    pub dump_freq: u32,
    pub fsck_passno: u32,
}

/// The typed result of reading a config, before the graph is built.
#[derive(Debug, Default)]
pub struct Parsed {
    pub nodes: Vec<Node>,
    pub tables: Vec<PartitionTable>,
    /// The `base:` a partition names itself (graph form). DIB puts every
    /// partition on its table's device whatever it says; the graph checks
    /// that the two agree, after the names are known to be unique.
    pub partition_bases: Vec<PartitionBase>,
}

/// A partition's own `base:`, with the device its table is on.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionBase {
    pub partition: String,
    pub declared: String,
    pub table_base: String,
    pub line: u32,
}

/// Reads the YAML document `root` (from `source`) into typed nodes.
pub fn parse_config(root: &YNode, source: &str, opts: &LoadOptions) -> Result<Parsed> {
    let entries = flatten(root, source)?;
    let root_fs = legacy_root_target(&entries);
    let mut parsed = Parsed::default();
    for e in &entries {
        let ctx = Ctx {
            source,
            entry: e,
            opts,
            is_legacy_root: root_fs.as_deref() == Some(e.name.as_str()),
        };
        ctx.build(&mut parsed)?;
    }
    Ok(parsed)
}

/// One config entry in graph form.
#[derive(Clone, Debug)]
struct FlatEntry {
    module: Module,
    name: String,
    /// The `base:` value (given, or the parent's name).
    base: Option<YNode>,
    /// The entry's own keys, nested modules removed (`partitions` kept,
    /// with the nested modules of each partition removed).
    fields: Vec<(String, YNode)>,
    line: u32,
}

/// Turns the tree form into the graph form, entries in document order
/// (each parent before its children).
fn flatten(root: &YNode, source: &str) -> Result<Vec<FlatEntry>> {
    let items = match &root.value {
        YValue::Seq(items) => items,
        YValue::Null => {
            return Err(structure(
                source,
                root.line,
                "the config is empty",
                "list at least a local_loop node",
            ));
        }
        _ => {
            return Err(structure(
                source,
                root.line,
                &format!("the config is {}, not a list", root.kind()),
                "write it as a list of single-key maps such as `- local_loop: {...}`",
            ));
        }
    };
    let mut out = Vec::new();
    for item in items {
        let (key, body) = single_key(item, source)?;
        recurse(key, body, None, source, &mut out)?;
    }
    Ok(out)
}

/// The one `module: {...}` pair of a list item.
fn single_key<'a>(item: &'a YNode, source: &str) -> Result<(&'a str, &'a YNode)> {
    match &item.value {
        YValue::Map(m) if m.len() == 1 => {
            let (k, v) = &m[0];
            if Module::from_key(k).is_none() {
                return Err(BlockDevError::UnknownModule {
                    at: At::new(source, item.line),
                    module: k.clone(),
                });
            }
            Ok((k, v))
        }
        YValue::Map(m) => Err(structure(
            source,
            item.line,
            &format!("a list item has {} keys ({})", m.len(), keys(m)),
            "each item must be exactly one module, e.g. `- mkfs: {...}`",
        )),
        _ => Err(structure(
            source,
            item.line,
            &format!("a list item is {}, not a map", item.kind()),
            "each item must be one module, e.g. `- mkfs: {...}`",
        )),
    }
}

fn keys(m: &[(String, YNode)]) -> String {
    m.iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn structure(source: &str, line: u32, message: &str, hint: &str) -> BlockDevError {
    BlockDevError::Structure {
        at: At::new(source, line),
        message: message.to_string(),
        hint: hint.to_string(),
    }
}

fn recurse(
    key: &str,
    body: &YNode,
    parent: Option<&str>,
    source: &str,
    out: &mut Vec<FlatEntry>,
) -> Result<()> {
    let module = Module::from_key(key).ok_or_else(|| BlockDevError::UnknownModule {
        at: At::new(source, body.line),
        module: key.to_string(),
    })?;
    let map = as_map(body, key, source)?;
    let base = lookup(map, "base").cloned().or_else(|| {
        parent.map(|p| YNode {
            value: YValue::Scalar(p.to_string()),
            line: body.line,
        })
    });
    let name = entry_name(map, key, base.as_ref(), source, body.line)?;
    let index = out.len();
    out.push(FlatEntry {
        module,
        name: name.clone(),
        base,
        fields: Vec::new(),
        line: body.line,
    });
    let mut fields = Vec::new();
    for (k, v) in map {
        if k == "partitions" && module == Module::Partitioning {
            fields.push((k.clone(), flatten_partitions(v, source, out)?));
        } else if Module::from_key(k).is_some() {
            recurse(k, v, Some(&name), source, out)?;
        } else if k != "base" {
            fields.push((k.clone(), v.clone()));
        }
    }
    out[index].fields = fields;
    Ok(())
}

/// The name of an entry: given, or `<module>_<base>` as DIB makes it.
fn entry_name(
    map: &[(String, YNode)],
    key: &str,
    base: Option<&YNode>,
    source: &str,
    line: u32,
) -> Result<String> {
    if let Some(n) = lookup(map, "name") {
        return scalar(n, "name", key, source);
    }
    match base.and_then(|b| b.as_str()) {
        Some(b) => Ok(format!("{key}_{b}")),
        None => Err(BlockDevError::MissingField {
            at: At::new(source, line),
            node: format!("({key})"),
            module: module_str(key),
            field: "name",
            hint: "a node without a parent needs `name:` (e.g. `name: image0`)".into(),
        }),
    }
}

fn module_str(key: &str) -> &'static str {
    Module::from_key(key)
        .map(|m| m.as_str())
        .unwrap_or("unknown")
}

/// Each partition's nested modules become entries whose parent is the
/// partition; the partition keeps its own keys, `base:` among them (the
/// graph form names the table's device there, which the graph checks).
fn flatten_partitions(v: &YNode, source: &str, out: &mut Vec<FlatEntry>) -> Result<YNode> {
    let YValue::Seq(parts) = &v.value else {
        return Err(structure(
            source,
            v.line,
            &format!("`partitions` is {}, not a list", v.kind()),
            "list the partitions, e.g. `partitions: [{name: root, size: 100%}]`",
        ));
    };
    let mut kept = Vec::new();
    for p in parts {
        let map = as_map(p, "partition", source)?;
        let name = match lookup(map, "name") {
            Some(n) => scalar(n, "name", "partitioning", source)?,
            None => {
                return Err(BlockDevError::MissingField {
                    at: At::new(source, p.line),
                    node: "(partition)".into(),
                    module: "partitioning",
                    field: "name",
                    hint: "every partition needs `name:`".into(),
                });
            }
        };
        let mut own = Vec::new();
        for (k, val) in map {
            if Module::from_key(k).is_some() {
                recurse(k, val, Some(&name), source, out)?;
            } else {
                own.push((k.clone(), val.clone()));
            }
        }
        kept.push(YNode {
            value: YValue::Map(own),
            line: p.line,
        });
    }
    Ok(YNode {
        value: YValue::Seq(kept),
        line: v.line,
    })
}

fn as_map<'a>(n: &'a YNode, what: &str, source: &str) -> Result<&'a [(String, YNode)]> {
    match &n.value {
        YValue::Map(m) => Ok(m),
        // `- mkfs:` with nothing under it is an empty map for our purposes.
        YValue::Null => Ok(&[]),
        _ => Err(structure(
            source,
            n.line,
            &format!("`{what}` is {}, not a map", n.kind()),
            "give its parameters as `key: value` lines",
        )),
    }
}

fn lookup<'a>(m: &'a [(String, YNode)], key: &str) -> Option<&'a YNode> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn scalar(n: &YNode, field: &'static str, node: &str, source: &str) -> Result<String> {
    n.as_str()
        .map(str::to_string)
        .ok_or_else(|| BlockDevError::InvalidValue {
            at: At::new(source, n.line),
            node: node.to_string(),
            field,
            value: n.kind().to_string(),
            reason: "expected a single value".into(),
        })
}

/// The mkfs node that takes DIB's legacy root parameters: DIB applies them
/// to the node named `mkfs_root`; when there is none, we use the mkfs node
/// mounted at `/`, so a renamed root still gets sensible defaults.
fn legacy_root_target(entries: &[FlatEntry]) -> Option<String> {
    let is_mkfs = |e: &&FlatEntry| e.module == Module::Mkfs;
    if entries
        .iter()
        .filter(is_mkfs)
        .any(|e| e.name == "mkfs_root")
    {
        return Some("mkfs_root".into());
    }
    let root_mount = entries.iter().find(|e| {
        e.module == Module::Mount
            && lookup(&e.fields, "mount_point").and_then(|v| v.as_str()) == Some("/")
    })?;
    let base = root_mount.base.as_ref()?.as_str()?;
    entries
        .iter()
        .filter(is_mkfs)
        .any(|e| e.name == base)
        .then(|| base.to_string())
}

/// Reads one flat entry into typed nodes.
struct Ctx<'a> {
    source: &'a str,
    entry: &'a FlatEntry,
    opts: &'a LoadOptions,
    is_legacy_root: bool,
}

/// Typed access to an entry's fields, with errors that name the node.
struct Fields<'a> {
    source: &'a str,
    node: &'a str,
    module: &'static str,
    line: u32,
    map: &'a [(String, YNode)],
}

impl<'a> Fields<'a> {
    fn at(&self, n: Option<&YNode>) -> At {
        At::new(self.source, n.map(|n| n.line).unwrap_or(self.line))
    }

    fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        for (k, v) in self.map {
            if !allowed.contains(&k.as_str()) {
                return Err(BlockDevError::UnknownKey {
                    at: self.at(Some(v)),
                    node: self.node.to_string(),
                    key: k.clone(),
                    known: allowed.join(", "),
                });
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<&'a YNode> {
        lookup(self.map, key)
    }

    fn str(&self, key: &'static str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(YNode {
                value: YValue::Null,
                ..
            }) => Ok(None),
            Some(n) => scalar(n, key, self.node, self.source).map(Some),
        }
    }

    fn required(&self, key: &'static str, hint: &str) -> Result<String> {
        self.str(key)?.ok_or_else(|| BlockDevError::MissingField {
            at: self.at(None),
            node: self.node.to_string(),
            module: self.module,
            field: key,
            hint: hint.to_string(),
        })
    }

    /// A list of scalars; a single scalar counts as a list of one.
    fn list(&self, key: &'static str) -> Result<Option<Vec<String>>> {
        let Some(n) = self.get(key) else {
            return Ok(None);
        };
        match &n.value {
            YValue::Null => Ok(Some(Vec::new())),
            YValue::Scalar(s) => Ok(Some(vec![s.clone()])),
            YValue::Seq(items) => items
                .iter()
                .map(|i| scalar(i, key, self.node, self.source))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            YValue::Map(_) => Err(self.invalid(n, key, "a map", "expected a list")),
        }
    }

    fn invalid(&self, n: &YNode, field: &'static str, value: &str, reason: &str) -> BlockDevError {
        BlockDevError::InvalidValue {
            at: self.at(Some(n)),
            node: self.node.to_string(),
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    fn size(&self, key: &'static str) -> Result<Option<u64>> {
        let Some(text) = self.str(key)? else {
            return Ok(None);
        };
        parse_size(&text)
            .map(Some)
            .map_err(|r| self.invalid(self.get(key).unwrap_or(&NULL), key, &text, &r))
    }

    fn number(&self, key: &'static str, default: u32) -> Result<u32> {
        let Some(text) = self.str(key)? else {
            return Ok(default);
        };
        text.parse().map_err(|_| {
            self.invalid(
                self.get(key).unwrap_or(&NULL),
                key,
                &text,
                "expected a whole number",
            )
        })
    }

    /// A list of maps (the items of `pvs:`, `vgs:`, `lvs:`, `partitions:`).
    fn maps(&self, key: &'static str, hint: &str) -> Result<Vec<(&'a YMap, u32)>> {
        let Some(n) = self.get(key) else {
            return Err(BlockDevError::MissingField {
                at: self.at(None),
                node: self.node.to_string(),
                module: self.module,
                field: key,
                hint: hint.to_string(),
            });
        };
        let YValue::Seq(items) = &n.value else {
            return Err(self.invalid(n, key, n.kind(), "expected a list"));
        };
        items
            .iter()
            .map(|i| as_map(i, key, self.source).map(|m| (m, i.line)))
            .collect()
    }
}

/// A map's entries with the line it starts on.
type YMap = [(String, YNode)];

static NULL: YNode = YNode {
    value: YValue::Null,
    line: 0,
};

impl Ctx<'_> {
    fn fields(&self) -> Fields<'_> {
        Fields {
            source: self.source,
            node: &self.entry.name,
            module: self.entry.module.as_str(),
            line: self.entry.line,
            map: &self.entry.fields,
        }
    }

    fn base_names(&self) -> Result<Vec<String>> {
        let Some(b) = &self.entry.base else {
            return Ok(Vec::new());
        };
        match &b.value {
            YValue::Scalar(s) => Ok(vec![s.clone()]),
            YValue::Seq(items) => items
                .iter()
                .map(|i| scalar(i, "base", &self.entry.name, self.source))
                .collect(),
            _ => Ok(Vec::new()),
        }
    }

    fn node(&self, bases: Vec<String>, spec: Spec) -> Node {
        Node {
            name: self.entry.name.clone(),
            module: self.entry.module,
            bases,
            after: Vec::new(),
            line: self.entry.line,
            spec,
        }
    }

    fn require_base(&self) -> Result<Vec<String>> {
        let bases = self.base_names()?;
        if bases.len() != 1 {
            return Err(BlockDevError::MissingField {
                at: At::new(self.source, self.entry.line),
                node: self.entry.name.clone(),
                module: self.entry.module.as_str(),
                field: "base",
                hint: "name exactly one parent node with `base:`, or nest this entry under it"
                    .into(),
            });
        }
        Ok(bases)
    }

    fn build(&self, out: &mut Parsed) -> Result<()> {
        match self.entry.module {
            Module::LocalLoop => out.nodes.push(self.local_loop()?),
            Module::Partitioning => self.partitioning(out)?,
            Module::Lvm => self.lvm(out)?,
            Module::Mkfs => out.nodes.push(self.mkfs()?),
            Module::Mount => out.nodes.push(self.mount()?),
            Module::Fstab => out.nodes.push(self.fstab()?),
        }
        Ok(())
    }

    fn local_loop(&self) -> Result<Node> {
        let f = self.fields();
        f.check_keys(&["name", "size", "directory", "block_size"])?;
        let block_size = match self.opts.block_size {
            Some(b) => b,
            None => f.number("block_size", 512)?,
        };
        if block_size != 512 && block_size != 4096 {
            return Err(f.invalid(
                f.get("block_size").unwrap_or(&NULL),
                "block_size",
                &block_size.to_string(),
                "must be 512 or 4096 (also check DIB_BLOCK_SIZE)",
            ));
        }
        let spec = LocalLoop {
            size: f.size("size")?,
            directory: f.str("directory")?,
            block_size,
        };
        Ok(self.node(Vec::new(), Spec::LocalLoop(spec)))
    }

    fn partitioning(&self, out: &mut Parsed) -> Result<()> {
        let f = self.fields();
        f.check_keys(&["name", "label", "align", "partitions"])?;
        let base = self.require_base()?;
        let label = match f
            .required("label", "set `label: mbr` or `label: gpt`")?
            .as_str()
        {
            "mbr" => Label::Mbr,
            "gpt" => Label::Gpt,
            other => {
                return Err(f.invalid(
                    f.get("label").unwrap_or(&NULL),
                    "label",
                    other,
                    "must be mbr or gpt",
                ));
            }
        };
        let align = f.size("align")?.unwrap_or(1 << 20);
        if align == 0 {
            return Err(f.invalid(
                f.get("align").unwrap_or(&NULL),
                "align",
                "0",
                "must be more than 0",
            ));
        }
        let table = out.tables.len();
        let mut names = Vec::new();
        let mut prev: Option<String> = None;
        for (map, line) in f.maps("partitions", "list the partitions under `partitions:`")? {
            let (mut node, declared) = self.partition(map, line, table, label, &base[0])?;
            if let Some(declared) = declared {
                out.partition_bases.push(PartitionBase {
                    partition: node.name.clone(),
                    declared,
                    table_base: base[0].clone(),
                    line,
                });
            }
            node.after = prev.iter().cloned().collect();
            prev = Some(node.name.clone());
            names.push(node.name.clone());
            out.nodes.push(node);
        }
        if names.is_empty() {
            return Err(f.invalid(
                f.get("partitions").unwrap_or(&NULL),
                "partitions",
                "[]",
                "list at least one partition, e.g. `partitions: [{name: root, size: 100%}]`",
            ));
        }
        out.tables.push(PartitionTable {
            base: base[0].clone(),
            label,
            align,
            partitions: names,
            line: self.entry.line,
        });
        Ok(())
    }

    fn partition(
        &self,
        map: &[(String, YNode)],
        line: u32,
        table: usize,
        label: Label,
        base: &str,
    ) -> Result<(Node, Option<String>)> {
        let name = lookup(map, "name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let f = Fields {
            source: self.source,
            node: &name,
            module: "partitioning",
            line,
            map,
        };
        f.check_keys(&["name", "base", "size", "flags", "type"])?;
        let declared = f.str("base")?;
        let flags = f.list("flags")?.unwrap_or_default();
        let (mut boot, mut primary) = (false, false);
        for flag in &flags {
            match flag.as_str() {
                "boot" => boot = true,
                "primary" if label == Label::Mbr => primary = true,
                "primary" => {
                    return Err(f.invalid(
                        f.get("flags").unwrap_or(&NULL),
                        "flags",
                        flag,
                        "the primary flag exists only on MBR; remove it for GPT",
                    ));
                }
                _ => {
                    return Err(f.invalid(
                        f.get("flags").unwrap_or(&NULL),
                        "flags",
                        flag,
                        "known flags are boot and primary",
                    ));
                }
            }
        }
        let size_text = f.required("size", "give a size such as `size: 8MiB` or `size: 100%`")?;
        let size = SizeSpec::parse(&size_text)
            .map_err(|r| f.invalid(f.get("size").unwrap_or(&NULL), "size", &size_text, &r))?;
        let part_type = match f.str("type")? {
            None => PartType::default_for(label),
            Some(t) => PartType::parse(&t, label)
                .map_err(|r| f.invalid(f.get("type").unwrap_or(&NULL), "type", &t, &r))?,
        };
        let node = Node {
            name,
            module: Module::Partitioning,
            bases: vec![base.to_string()],
            after: Vec::new(),
            line,
            spec: Spec::Partition(Partition {
                table,
                boot,
                primary,
                size,
                part_type,
            }),
        };
        Ok((node, declared))
    }

    fn lvm(&self, out: &mut Parsed) -> Result<()> {
        let f = self.fields();
        f.check_keys(&["name", "pvs", "vgs", "lvs"])?;
        let driver = self.entry.name.clone();
        let mut pv_bases = Vec::new();
        let mut driver_spec = LvmDriver {
            pvs: Vec::new(),
            vgs: Vec::new(),
            lvs: Vec::new(),
        };
        let mut sub = Vec::new();
        for (map, line) in f.maps("pvs", "list the physical volumes under `pvs:`")? {
            let (node, base) = self.lvm_item(map, line, "pv", &driver)?;
            if !pv_bases.contains(&base) {
                pv_bases.push(base);
            }
            driver_spec.pvs.push(node.name.clone());
            sub.push(node);
        }
        for (map, line) in f.maps("vgs", "list the volume groups under `vgs:`")? {
            let (node, _) = self.lvm_item(map, line, "vg", &driver)?;
            driver_spec.vgs.push(node.name.clone());
            sub.push(node);
        }
        for (map, line) in f.maps("lvs", "list the logical volumes under `lvs:`")? {
            let node = self.lv(map, line)?;
            driver_spec.lvs.push(node.name.clone());
            sub.push(node);
        }
        self.check_lvm_refs(&driver_spec, &sub)?;
        out.nodes
            .push(self.node(pv_bases, Spec::LvmDriver(driver_spec)));
        out.nodes.extend(sub);
        Ok(())
    }

    /// A pv or vg: `name`, `base`, `options`. Returns the node and its first base.
    fn lvm_item(
        &self,
        map: &[(String, YNode)],
        line: u32,
        kind: &str,
        driver: &str,
    ) -> Result<(Node, String)> {
        let f = self.sub_fields(map, line);
        f.check_keys(&["name", "base", "options"])?;
        let name = f.required("name", &format!("every {kind} needs `name:`"))?;
        let f = Fields { node: &name, ..f };
        let bases = f.list("base")?.unwrap_or_default();
        if bases.is_empty() || (kind == "pv" && bases.len() != 1) {
            return Err(BlockDevError::MissingField {
                at: At::new(self.source, line),
                node: name.clone(),
                module: "lvm",
                field: "base",
                hint: format!(
                    "a {kind} needs `base:` naming its {}",
                    if kind == "pv" {
                        "partition"
                    } else {
                        "physical volumes"
                    }
                ),
            });
        }
        let item = LvmItem {
            options: f.list("options")?.unwrap_or_default(),
        };
        let (spec, after) = match kind {
            "pv" => (Spec::Pv(item), vec![driver.to_string()]),
            _ => (Spec::Vg(item), Vec::new()),
        };
        let first = bases[0].clone();
        let node = Node {
            name,
            module: Module::Lvm,
            bases,
            after,
            line,
            spec,
        };
        Ok((node, first))
    }

    fn sub_fields<'b>(&'b self, map: &'b [(String, YNode)], line: u32) -> Fields<'b> {
        Fields {
            source: self.source,
            node: &self.entry.name,
            module: "lvm",
            line,
            map,
        }
    }

    fn lv(&self, map: &[(String, YNode)], line: u32) -> Result<Node> {
        let f = self.sub_fields(map, line);
        f.check_keys(&[
            "name",
            "base",
            "options",
            "size",
            "extents",
            "type",
            "thin-pool",
        ])?;
        let name = f.required("name", "every lv needs `name:`")?;
        let f = Fields { node: &name, ..f };
        let base = f.required("base", "an lv needs `base:` naming its volume group")?;
        let size = f.size("size")?;
        let extents = f.str("extents")?;
        if size.is_none() && extents.is_none() {
            return Err(BlockDevError::MissingField {
                at: At::new(self.source, line),
                node: name.clone(),
                module: "lvm",
                field: "size",
                hint: "give the lv `size:` (e.g. 2GiB) or `extents:` (e.g. 23%VG)".into(),
            });
        }
        if let Some(e) = &extents
            && !valid_extents(e)
        {
            return Err(f.invalid(
                f.get("extents").unwrap_or(&NULL),
                "extents",
                e,
                "expected a number of extents or N%VG, N%FREE, N%PVS, N%ORIGIN",
            ));
        }
        let lv_type = f.str("type")?;
        if let Some(t) = &lv_type
            && t != "thin"
            && t != "thin-pool"
        {
            return Err(f.invalid(
                f.get("type").unwrap_or(&NULL),
                "type",
                t,
                "supported lv types are thin and thin-pool",
            ));
        }
        let spec = LogicalVolume {
            size,
            extents,
            options: f.list("options")?.unwrap_or_default(),
            lv_type,
            thin_pool: f.str("thin-pool")?,
        };
        Ok(Node {
            name,
            module: Module::Lvm,
            bases: vec![base],
            after: Vec::new(),
            line,
            spec: Spec::Lv(spec),
        })
    }

    /// vg bases must be pvs, lv bases vgs of this lvm entry; thin volumes
    /// need a thin pool of the same entry.
    fn check_lvm_refs(&self, d: &LvmDriver, nodes: &[Node]) -> Result<()> {
        for n in nodes {
            let (wanted, kind) = match n.spec {
                Spec::Vg(_) => (&d.pvs, "pv"),
                Spec::Lv(_) => (&d.vgs, "vg"),
                _ => continue,
            };
            if let Some(b) = n.bases.iter().find(|b| !wanted.contains(b)) {
                return Err(BlockDevError::InvalidValue {
                    at: At::new(self.source, n.line),
                    node: n.name.clone(),
                    field: "base",
                    value: b.clone(),
                    reason: format!(
                        "must name a {kind} of the lvm node `{}` ({})",
                        self.entry.name,
                        wanted.join(", ")
                    ),
                });
            }
            if let Spec::Lv(lv) = &n.spec {
                self.check_thin(n, lv, nodes)?;
            }
        }
        Ok(())
    }

    fn check_thin(&self, n: &Node, lv: &LogicalVolume, nodes: &[Node]) -> Result<()> {
        let is_pool = |name: &str| {
            nodes.iter().any(|o| {
                o.name == name
                    && matches!(&o.spec, Spec::Lv(l) if l.lv_type.as_deref() == Some("thin-pool"))
            })
        };
        let bad = |value: &str, reason: &str| BlockDevError::InvalidValue {
            at: At::new(self.source, n.line),
            node: n.name.clone(),
            field: "thin-pool",
            value: value.to_string(),
            reason: reason.to_string(),
        };
        match (lv.lv_type.as_deref(), lv.thin_pool.as_deref()) {
            (Some("thin"), None) => Err(bad(
                "",
                "a thin lv needs `thin-pool:` naming an lv of type thin-pool",
            )),
            (Some("thin"), Some(p)) if !is_pool(p) => {
                Err(bad(p, "no lv of type thin-pool has this name"))
            }
            (t, Some(p)) if t != Some("thin") => {
                Err(bad(p, "only an lv of `type: thin` takes `thin-pool:`"))
            }
            _ => Ok(()),
        }
    }

    fn mkfs(&self) -> Result<Node> {
        let f = self.fields();
        f.check_keys(&["name", "type", "label", "opts", "uuid"])?;
        let bases = self.require_base()?;
        let root = &self.opts.root;
        let fstype = match (f.str("type")?, self.is_legacy_root) {
            (Some(t), _) => t,
            (None, true) => root.fs_type.clone(),
            (None, false) => f.required(
                "type",
                "set `type:` to ext2, ext3, ext4, xfs, vfat, btrfs or swap",
            )?,
        };
        if !FS_TYPES.contains(&fstype.as_str()) {
            return Err(f.invalid(
                f.get("type").unwrap_or(&NULL),
                "type",
                &fstype,
                "supported types are ext2, ext3, ext4, xfs, vfat, btrfs and swap",
            ));
        }
        let label = match (f.str("label")?, self.is_legacy_root) {
            (Some(l), _) => l,
            (None, true) => root.label_for(&fstype),
            (None, false) => self.entry.name.clone(),
        };
        // FAT labels are upper case; DIB also uses the label to find the disk.
        let label = if fstype == "vfat" {
            label.to_uppercase()
        } else {
            label
        };
        let opts = match (f.str("opts")?, self.is_legacy_root) {
            (Some(o), _) => Some(o),
            (None, true) => root.opts_for(&fstype),
            (None, false) => None,
        };
        if label.chars().any(|c| c.is_control() || c == '/') {
            return Err(f.invalid(
                f.get("label").unwrap_or(&NULL),
                "label",
                &label,
                "a filesystem label holds no control characters or slashes (it is matched by LABEL= in fstab)",
            ));
        }
        let uuid = f.str("uuid")?;
        if let Some(u) = &uuid
            && !is_uuid(u)
            && !(fstype == "vfat" && super::mkfs::vfat_volume_id(u).is_ok())
        {
            return Err(f.invalid(
                f.get("uuid").unwrap_or(&NULL),
                "uuid",
                u,
                "give a UUID such as 0a1b2c3d-1111-2222-3333-444455556666 (a FAT volume id such as 1234-ABCD for vfat)",
            ));
        }
        let spec = Filesystem {
            fstype,
            label,
            opts,
            uuid,
        };
        Ok(self.node(bases, Spec::Mkfs(spec)))
    }

    fn mount(&self) -> Result<Node> {
        let f = self.fields();
        f.check_keys(&["name", "mount_point"])?;
        let bases = self.require_base()?;
        let mount_point = f.required(
            "mount_point",
            "set `mount_point:` to an absolute path, or `none` for swap",
        )?;
        let mount_point = if mount_point == "none" {
            mount_point
        } else {
            normal_mount_point(&mount_point).map_err(|why| {
                f.invalid(
                    f.get("mount_point").unwrap_or(&NULL),
                    "mount_point",
                    &mount_point,
                    why,
                )
            })?
        };
        Ok(self.node(bases, Spec::Mount(MountPoint { mount_point })))
    }

    fn fstab(&self) -> Result<Node> {
        let f = self.fields();
        f.check_keys(&["name", "options", "dump-freq", "fsck-passno"])?;
        let bases = self.require_base()?;
        let options = f.str("options")?.unwrap_or_else(|| "defaults".into());
        if options.is_empty() || options.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(f.invalid(
                f.get("options").unwrap_or(&NULL),
                "options",
                &options,
                "fstab options are one comma-separated word, e.g. `defaults,noatime`",
            ));
        }
        let spec = FstabEntry {
            options,
            dump_freq: f.number("dump-freq", 0)?,
            fsck_passno: f.number("fsck-passno", 2)?,
        };
        Ok(self.node(bases, Spec::Fstab(spec)))
    }
}

/// A mount point in its one spelling: absolute, no `.` or `..`, no empty
/// components, no trailing slash, no control characters. Anything else could
/// name a place outside the tree, or two spellings of one place.
pub fn normal_mount_point(p: &str) -> std::result::Result<String, &'static str> {
    if !p.starts_with('/') {
        return Err("must be an absolute path, or `none` for swap");
    }
    if p.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err("must not hold `.` or `..` components (it must lie inside the image)");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Filesystem types we can make.
pub const FS_TYPES: &[&str] = &["ext2", "ext3", "ext4", "xfs", "vfat", "btrfs", "swap"];

fn valid_extents(e: &str) -> bool {
    let (num, pct) = match e.split_once('%') {
        Some((n, what)) => (n, Some(what)),
        None => (e, None),
    };
    !num.is_empty()
        && num.chars().all(|c| c.is_ascii_digit())
        && pct.is_none_or(|w| ["VG", "FREE", "PVS", "ORIGIN"].contains(&w))
}
