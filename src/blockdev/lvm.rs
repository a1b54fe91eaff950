//! LVM layouts worked out here instead of by the lvm tools: where each
//! physical volume's extents begin and which extents each logical volume
//! gets, allocated as lvm2 allocates a linear volume (config order, the
//! largest free area first). From this layout the executor writes the volume
//! group's metadata text (UUIDs seeded as the disk's ids are; what lvm2
//! adds of the build host to the copy it writes is taken out again by
//! [`super::lvm_mda`]) and builds
//! each filesystem straight into its volume's extents. No step needs
//! device-mapper, which CI runners and containers rarely have.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::config::{LogicalVolume as LvSpec, Spec};
use super::graph::Graph;
use super::ids;

/// lvm2's default extent size (4 MiB, `vgcreate -s`).
pub const EXTENT_BYTES: u64 = 4 << 20;
/// lvm2's default start of the first extent on a physical volume (1 MiB:
/// the label, then the metadata area).
pub const PE_START_BYTES: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// The host name the metadata records (lvm2 writes the build host's; see
/// [`super::lvm_mda`]).
pub const CREATION_HOST: &str = "dib-create";
/// The volume group's flags while the build holds it. On a host with udev
/// and lvm2's event activation, each label written to a loop device wakes
/// `pvscan`, which would activate the image's group with the host's own
/// configuration and keep the loop devices busy; lvm2 skips a group so
/// flagged. The finished image's copy has it taken out
/// ([`super::lvm_mda::reproducible_text`]), so the image's initramfs
/// activates it.
pub const BUILD_VG_FLAGS: &str = "flags = [\"NOAUTOACTIVATE\"]";

/// One physical volume: a partition given to a volume group.
#[derive(Clone, Debug, PartialEq)]
pub struct PhysicalVolume {
    /// The pv node's name.
    pub name: String,
    /// The partition (or disk) node it is made on.
    pub base: String,
    pub uuid: String,
    pub dev_bytes: u64,
    pub pe_count: u64,
}

/// A run of extents of one logical volume on one physical volume.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Index into the volume group's `pvs`.
    pub pv: usize,
    /// First extent on that physical volume.
    pub pv_extent: u64,
    pub extents: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogicalVolume {
    pub name: String,
    pub uuid: String,
    pub segments: Vec<Segment>,
}

impl LogicalVolume {
    pub fn extents(&self) -> u64 {
        self.segments.iter().map(|s| s.extents).sum()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VolumeGroup {
    pub name: String,
    pub uuid: String,
    pub pvs: Vec<PhysicalVolume>,
    pub lvs: Vec<LogicalVolume>,
}

impl VolumeGroup {
    fn extent_count(&self) -> u64 {
        self.pvs.iter().map(|p| p.pe_count).sum()
    }

    fn used(&self) -> u64 {
        self.lvs.iter().map(LogicalVolume::extents).sum()
    }

    /// Where `lv`'s data lies, run by run in the volume's order: (pv index,
    /// byte offset in that pv's partition, bytes).
    pub fn runs(&self, lv: &LogicalVolume) -> Vec<(usize, u64, u64)> {
        lv.segments
            .iter()
            .map(|s| {
                (
                    s.pv,
                    PE_START_BYTES + s.pv_extent * EXTENT_BYTES,
                    s.extents * EXTENT_BYTES,
                )
            })
            .collect()
    }
}

/// A volume's size when the config fixes it: `size` rounded down to whole
/// extents (as DIB and lvcreate round it), or a plain extent count. None
/// for a share of the group.
pub fn fixed_bytes(spec: &LvSpec) -> Option<u64> {
    match (spec.size, spec.extents.as_deref()) {
        (Some(bytes), _) => Some(bytes / EXTENT_BYTES * EXTENT_BYTES),
        (None, Some(e)) => e.parse::<u64>().ok().map(|n| n * EXTENT_BYTES),
        (None, None) => None,
    }
}

/// Every volume group of a config, with its volumes placed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    pub vgs: Vec<VolumeGroup>,
}

impl Layout {
    /// The volume group and volume of the lv node `name`.
    pub fn lv(&self, name: &str) -> Option<(&VolumeGroup, &LogicalVolume)> {
        self.vgs
            .iter()
            .find_map(|vg| vg.lvs.iter().find(|l| l.name == name).map(|l| (vg, l)))
    }
}

/// Places the config's LVM nodes on partitions of the given sizes (bytes,
/// by node name). Errors name the node and what does not fit.
pub fn layout(
    graph: &Graph,
    base_bytes: &BTreeMap<String, u64>,
    seed: Option<u64>,
) -> Result<Layout, String> {
    let mut pvs: BTreeMap<&str, PhysicalVolume> = BTreeMap::new();
    let mut out = Layout::default();
    for node in graph.nodes() {
        match &node.spec {
            Spec::Pv(_) => {
                let pv = physical_volume(&node.name, &node.bases[0], base_bytes, seed)?;
                pvs.insert(&node.name, pv);
            }
            Spec::Vg(_) => out.vgs.push(VolumeGroup {
                name: node.name.clone(),
                uuid: lvm_uuid(seed, &format!("vg {}", node.name)),
                pvs: node
                    .bases
                    .iter()
                    .map(|b| pvs.get(b.as_str()).cloned())
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("volume group {} names an unknown pv", node.name))?,
                lvs: Vec::new(),
            }),
            Spec::Lv(spec) => {
                let vg = out
                    .vgs
                    .iter_mut()
                    .find(|v| v.name == node.bases[0])
                    .ok_or_else(|| format!("lv {} names an unknown vg", node.name))?;
                let want = extents_wanted(&node.name, spec, vg)?;
                let segments = allocate(vg, want).ok_or_else(|| {
                    format!(
                        "lv {} needs {want} extents of 4 MiB, and volume group {} has {} free \
                         (of {}); make its partitions larger or the volumes smaller",
                        node.name,
                        vg.name,
                        vg.extent_count() - vg.used(),
                        vg.extent_count()
                    )
                })?;
                vg.lvs.push(LogicalVolume {
                    name: node.name.clone(),
                    uuid: lvm_uuid(seed, &format!("lv {}", node.name)),
                    segments,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

fn physical_volume(
    name: &str,
    base: &str,
    base_bytes: &BTreeMap<String, u64>,
    seed: Option<u64>,
) -> Result<PhysicalVolume, String> {
    let dev_bytes = *base_bytes
        .get(base)
        .ok_or_else(|| format!("pv {name} sits on {base}, which is not a partition"))?;
    let pe_count = dev_bytes.saturating_sub(PE_START_BYTES) / EXTENT_BYTES;
    if pe_count == 0 {
        return Err(format!(
            "pv {name}: partition {base} ({} MiB) is too small for one 4 MiB extent after \
             LVM's 1 MiB of metadata",
            dev_bytes >> 20
        ));
    }
    Ok(PhysicalVolume {
        name: name.to_string(),
        base: base.to_string(),
        uuid: lvm_uuid(seed, &format!("pv {name}")),
        dev_bytes,
        pe_count,
    })
}

/// The extents an lv asks for: `size` rounded down to whole extents, as DIB
/// rounds it before it calls lvcreate; `N%VG` of all extents and `N%FREE`
/// of the free ones, rounded down, with %VG reduced to what is free, as
/// lvcreate reduces it.
fn extents_wanted(name: &str, spec: &LvSpec, vg: &VolumeGroup) -> Result<u64, String> {
    let total = vg.extent_count();
    let free = total - vg.used();
    let text = spec.extents.as_deref().unwrap_or_default();
    let n = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("lv {name}: extents `{text}` is not a number"))
    };
    let wanted = match (spec.size, text.split_once('%')) {
        (Some(bytes), _) => bytes / EXTENT_BYTES,
        (None, None) => n(text)?,
        (None, Some((p, "VG" | "PVS"))) => (n(p)? * total / 100).min(free),
        (None, Some((p, "FREE"))) => n(p)? * free / 100,
        (None, Some((_, what))) => {
            return Err(format!(
                "lv {name}: extents `{text}`: %{what} applies to snapshots, which a new \
                 image has none of; use %VG or %FREE"
            ));
        }
    };
    if wanted == 0 {
        return Err(format!(
            "lv {name}: its size comes to no whole extent of 4 MiB; give it at least 4MiB"
        ));
    }
    Ok(wanted)
}

/// Linear allocation: from the physical volume with the largest free run
/// first (earlier ones on a tie), spilling into the next when one is full.
fn allocate(vg: &VolumeGroup, mut want: u64) -> Option<Vec<Segment>> {
    let mut next_free: Vec<u64> = vec![0; vg.pvs.len()];
    for s in vg.lvs.iter().flat_map(|l| &l.segments) {
        next_free[s.pv] = next_free[s.pv].max(s.pv_extent + s.extents);
    }
    let mut order: Vec<usize> = (0..vg.pvs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(vg.pvs[i].pe_count - next_free[i]));
    let mut segments = Vec::new();
    for i in order {
        if want == 0 {
            break;
        }
        let free = vg.pvs[i].pe_count - next_free[i];
        let take = free.min(want);
        if take > 0 {
            segments.push(Segment {
                pv: i,
                pv_extent: next_free[i],
                extents: take,
            });
            want -= take;
        }
    }
    (want == 0).then_some(segments)
}

/// An LVM UUID: 32 characters of [A-Za-z0-9] shown in groups of
/// 6-4-4-4-4-4-6, derived from the seed when there is one.
pub fn lvm_uuid(seed: Option<u64>, what: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let raw = ids::bytes_for(seed, what);
    let chars: Vec<char> = raw
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect();
    let mut out = String::new();
    let mut at = 0;
    for (i, len) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.extend(&chars[at..at + len]);
        at += len;
    }
    out
}

/// The volume group's metadata in lvm2's text format, as `vgcfgrestore -f`
/// reads it. `time` is recorded as the creation time of every volume.
pub fn metadata_text(vg: &VolumeGroup, devices: &[String], time: u64) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "contents = \"Text Format Volume Group\"\nversion = 1\n");
    let _ = writeln!(t, "description = \"\"\n");
    let _ = writeln!(
        t,
        "creation_host = \"{CREATION_HOST}\"\ncreation_time = {time}\n"
    );
    let _ = writeln!(t, "{} {{\n\tid = \"{}\"\n\tseqno = 1", vg.name, vg.uuid);
    t.push_str(concat!(
        "\tformat = \"lvm2\"\n",
        "\tstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\n",
    ));
    let _ = writeln!(t, "\t{BUILD_VG_FLAGS}");
    t.push_str(concat!(
        "\textent_size = 8192\n",
        "\tmax_lv = 0\n\tmax_pv = 0\n\tmetadata_copies = 0\n\n",
        "\tphysical_volumes {\n",
    ));
    for (i, pv) in vg.pvs.iter().enumerate() {
        let _ = writeln!(
            t,
            "\t\tpv{i} {{\n\t\t\tid = \"{}\"\n\t\t\tdevice = \"{}\"\n\t\t\tstatus = [\"ALLOCATABLE\"]\n\t\t\tflags = []\n\t\t\tdev_size = {}\n\t\t\tpe_start = {}\n\t\t\tpe_count = {}\n\t\t}}",
            pv.uuid,
            devices.get(i).map(String::as_str).unwrap_or_default(),
            pv.dev_bytes / SECTOR,
            PE_START_BYTES / SECTOR,
            pv.pe_count
        );
    }
    t.push_str("\t}\n");
    if !vg.lvs.is_empty() {
        t.push_str("\n\tlogical_volumes {\n");
        for lv in &vg.lvs {
            let _ = writeln!(
                t,
                "\t\t{} {{\n\t\t\tid = \"{}\"\n\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tflags = []\n\t\t\tcreation_time = {time}\n\t\t\tcreation_host = \"{CREATION_HOST}\"\n\t\t\tsegment_count = {}",
                lv.name,
                lv.uuid,
                lv.segments.len()
            );
            let mut start = 0;
            for (n, s) in lv.segments.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "\n\t\t\tsegment{} {{\n\t\t\t\tstart_extent = {start}\n\t\t\t\textent_count = {}\n\t\t\t\ttype = \"striped\"\n\t\t\t\tstripe_count = 1\n\t\t\t\tstripes = [\n\t\t\t\t\t\"pv{}\", {}\n\t\t\t\t]\n\t\t\t}}",
                    n + 1,
                    s.extents,
                    s.pv,
                    s.pv_extent
                );
                start += s.extents;
            }
            t.push_str("\t\t}\n");
        }
        t.push_str("\t}\n");
    }
    t.push_str("}\n");
    t
}

/// Thin pools need device-mapper's thin target to be formatted, which the
/// layout here does not write: the refusal, naming the volume, or None.
pub fn unsupported(graph: &Graph) -> Option<String> {
    graph.nodes().iter().find_map(|n| match &n.spec {
        Spec::Lv(lv) if lv.lv_type.is_some() => Some(format!(
            "lv {} is a {} volume; dib-create writes LVM layouts without device-mapper and \
             does not format thin pools (lvcreate needs dm's thin target for that): use \
             linear volumes (no `type:`)",
            n.name,
            lv.lv_type.as_deref().unwrap_or_default()
        )),
        _ => None,
    })
}

/// Sizing an image whose root filesystem is on a logical volume: the
/// partitions under that volume's group, and the KiB the group needs so
/// that the root volume holds `root_kib` (a `N%VG` root gets N% of the
/// group) and every xfs volume of it reaches mkfs.xfs's minimum. None when
/// root is not on LVM.
pub fn root_group_sizing(graph: &Graph, root_kib: u64) -> Option<(Vec<String>, u64)> {
    let (root_fs, _) = graph.root_filesystem()?;
    let root_lv = graph.node(root_fs)?.bases.first()?;
    let lv_node = graph.node(root_lv)?;
    let Spec::Lv(_) = &lv_node.spec else {
        return None;
    };
    let vg = graph.node(lv_node.bases.first()?)?;
    let partitions: Vec<String> = vg
        .bases
        .iter()
        .filter_map(|pv| graph.node(pv)?.bases.first().cloned())
        .collect();
    let mut fixed_kib = 0u64;
    let mut needed_kib = 0u64;
    for n in graph
        .nodes()
        .iter()
        .filter(|n| n.bases.first() == Some(&vg.name))
    {
        let Spec::Lv(lv) = &n.spec else { continue };
        let content_kib = if n.name == *root_lv { root_kib } else { 0 };
        let floor_kib = filesystem_on(graph, &n.name)
            .and_then(super::mkfs::min_bytes)
            .map_or(0, |b| b / 1024);
        // Two extents more: lvcreate rounds a percentage down, and a whole
        // extent can go to each rounding.
        let want = content_kib.max(floor_kib) + 2 * EXTENT_BYTES / 1024;
        match (lv.size, percent_of_group(lv)) {
            (Some(bytes), _) => fixed_kib += bytes / 1024,
            (None, Some(pct)) => needed_kib = needed_kib.max(want * 100 / pct),
            (None, None) => {}
        }
    }
    let metadata_kib = partitions.len() as u64 * (PE_START_BYTES + EXTENT_BYTES) / 1024;
    Some((partitions, needed_kib + fixed_kib + metadata_kib))
}

/// N of `extents: N%VG` (or %PVS), when that is how the volume is sized.
fn percent_of_group(lv: &LvSpec) -> Option<u64> {
    let (n, what) = lv.extents.as_deref()?.split_once('%')?;
    let n: u64 = n.parse().ok()?;
    (matches!(what, "VG" | "PVS") && n > 0).then_some(n)
}

/// The filesystem type made on node `base`, if any.
fn filesystem_on<'a>(graph: &'a Graph, base: &str) -> Option<&'a str> {
    graph.nodes().iter().find_map(|n| match &n.spec {
        Spec::Mkfs(fs) if n.bases.first().map(String::as_str) == Some(base) => {
            Some(fs.fstype.as_str())
        }
        _ => None,
    })
}
