//! Partition tables: the layout DIB computes, written with mbrman/gptman.
//!
//! MBR follows DIB's level1/mbr.py: partitions start on the alignment (1 MiB
//! by default); partitions without the `primary` flag are logical, inside one
//! extended partition (type 0x0F) that runs to the end of the disk, each with
//! its EBR one alignment unit before its data; a `%` size is a share of what
//! is free minus one alignment unit.
//!
//! GPT follows DIB's sgdisk call: partitions back to back from 1 MiB, each a
//! whole number of MiB; a `%` size is a share of the disk minus 2 MiB, less
//! what earlier partitions took. DIB drops the `boot` flag on GPT; we set the
//! legacy BIOS bootable attribute (bit 2) for it, which is what it means there.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Serialize, Serializer};

use super::config::{Label, Partition, PartitionTable};
use super::error::{At, BlockDevError, Result};
use super::graph::Graph;
use super::ids;

const MIB: u64 = 1 << 20;
/// The MBR type of an extended partition addressed by LBA, as DIB writes it.
const MBR_EXTENDED_LBA: u8 = 0x0F;
/// GPT attribute bit 2: legacy BIOS bootable.
const GPT_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// GPT partition names are at most 36 UTF-16 code units.
const GPT_NAME_MAX: usize = 36;

/// GPT short codes (as sgdisk spells them) and their type GUIDs.
const GPT_TYPES: &[(&str, &str)] = &[
    ("0700", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"), // basic data
    ("0C01", "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"), // Microsoft reserved
    ("4100", "9E1A2D38-C612-4316-AA26-8B49521E5A8B"), // PowerPC PReP boot
    ("8200", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"), // Linux swap
    ("8300", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"), // Linux filesystem
    ("8302", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"), // Linux /home
    ("8303", "44479540-F297-41B2-9AF7-D131D5F0458A"), // Linux x86 root
    ("8304", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), // Linux x86-64 root
    ("8305", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"), // Linux ARM64 root
    ("8306", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8"), // Linux /srv
    ("8307", "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3"), // Linux ARM32 root
    ("8310", "4D21B016-B534-45C2-A9FB-5C16E091FD2D"), // Linux /var
    ("8311", "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1"), // Linux /var/tmp
    ("8E00", "E6D6D379-F507-44C2-A23C-238F2A3DF928"), // Linux LVM
    ("A500", "516E7CB4-6ECF-11D6-8FF8-00022D09712B"), // FreeBSD disklabel
    ("EA00", "BC13C2FF-59E6-4262-A352-B275FD6F7172"), // XBOOTLDR
    ("EF00", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), // EFI system
    ("EF01", "024DEE41-33E7-11D3-9D69-0008C781F39F"), // MBR partition scheme
    ("EF02", "21686148-6449-6E6F-744E-656564454649"), // BIOS boot
    ("FD00", "A19D880F-05FC-4D3B-A006-743F0F84911E"), // Linux RAID
];

/// A partition type: an MBR type byte, or a GPT type GUID (with the short
/// code it was given as, when there is one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartType {
    Mbr(u8),
    Gpt { code: Option<String>, guid: String },
}

impl PartType {
    /// DIB's defaults: 0x83 on MBR, 8300 on GPT.
    pub fn default_for(label: Label) -> PartType {
        match label {
            Label::Mbr => PartType::Mbr(0x83),
            Label::Gpt => gpt_from_code("8300").unwrap_or(PartType::Mbr(0x83)),
        }
    }

    /// Reads a `type:` value for a table of kind `label`. MBR takes a hex
    /// byte (`83`, `0x83`) or a GPT-style code whose MBR twin is its high byte
    /// (`8300`, `EF00`); GPT takes a short code (`EF00`, `0x4100`, `83`) or a
    /// full type GUID.
    pub fn parse(text: &str, label: Label) -> std::result::Result<PartType, String> {
        let t = text.trim();
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        match label {
            Label::Mbr => parse_mbr(hex),
            Label::Gpt => {
                if let Some(u) = ids::parse_uuid(t) {
                    return Ok(PartType::Gpt {
                        code: None,
                        guid: ids::format_uuid(&u).to_uppercase(),
                    });
                }
                let code = match u16::from_str_radix(hex, 16) {
                    Ok(v) if hex.len() <= 2 => format!("{:04X}", v << 8),
                    Ok(v) if hex.len() <= 4 => format!("{v:04X}"),
                    _ => return Err(gpt_help()),
                };
                gpt_from_code(&code).ok_or_else(gpt_help)
            }
        }
    }

    /// Whether this is an EFI system partition.
    pub fn is_esp(&self) -> bool {
        match self {
            PartType::Mbr(t) => *t == 0xEF,
            PartType::Gpt { guid, .. } => guid == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        }
    }

    /// The GPT type GUID in on-disk byte order (None for MBR types).
    fn gpt_disk_bytes(&self) -> Option<[u8; 16]> {
        match self {
            PartType::Gpt { guid, .. } => ids::parse_uuid(guid).map(|u| ids::to_gpt_bytes(&u)),
            PartType::Mbr(_) => None,
        }
    }
}

fn parse_mbr(hex: &str) -> std::result::Result<PartType, String> {
    let help = || {
        "MBR types are one hex byte such as 83 or 0x83 (or a code such as 8300 whose low byte is 00)".to_string()
    };
    let v = u32::from_str_radix(hex, 16).map_err(|_| help())?;
    match v {
        0..=0xFF => Ok(PartType::Mbr(v as u8)),
        _ if hex.len() == 4 && v & 0xFF == 0 => Ok(PartType::Mbr((v >> 8) as u8)),
        // DIB takes it, then fails packing it into the MBR's type byte.
        _ if gpt_from_code(&hex.to_uppercase()).is_some() => Err(format!(
            "{hex} is a GPT type code, which an MBR table cannot hold; set `label: gpt` on the \
             partitioning, or give an MBR type byte such as 83"
        )),
        _ => Err(help()),
    }
}

fn gpt_from_code(code: &str) -> Option<PartType> {
    GPT_TYPES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(c, g)| PartType::Gpt {
            code: Some(c.to_string()),
            guid: g.to_string(),
        })
}

fn gpt_help() -> String {
    let codes: Vec<&str> = GPT_TYPES.iter().map(|(c, _)| *c).collect();
    format!("use a type GUID or one of the codes {}", codes.join(", "))
}

impl fmt::Display for PartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartType::Mbr(t) => write!(f, "0x{t:02x}"),
            PartType::Gpt { code: Some(c), .. } => f.write_str(c),
            PartType::Gpt { guid, .. } => f.write_str(guid),
        }
    }
}

impl Serialize for PartType {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The disk a table goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk {
    pub size_bytes: u64,
    /// 512 or 4096.
    pub sector_size: u64,
}

/// Where a partition ended up, for access by offset or by partx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionExtent {
    pub name: String,
    /// The kernel's partition number (logical MBR partitions start at 5).
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    #[serde(rename = "type")]
    pub part_type: PartType,
    pub boot: bool,
}

/// A computed MBR layout, in sectors.
#[derive(Clone, Debug, Default, PartialEq)]
struct MbrPlan {
    /// (slot 1..=4, extent) for primaries.
    primaries: Vec<(usize, PartitionExtent)>,
    /// (slot, start, sectors) of the extended partition.
    extended: Option<(usize, u64, u64)>,
    /// (EBR sector, sectors from the EBR to the aligned end, extent).
    logicals: Vec<(u64, u64, PartitionExtent)>,
}

/// Computes where each partition of `table` goes on `disk`, without writing.
pub fn plan_layout(
    graph: &Graph,
    table: &PartitionTable,
    disk: Disk,
) -> Result<Vec<PartitionExtent>> {
    Ok(match table.label {
        Label::Mbr => {
            let plan = plan_mbr(graph, table, disk)?;
            let mut out: Vec<PartitionExtent> =
                plan.primaries.into_iter().map(|(_, e)| e).collect();
            out.extend(plan.logicals.into_iter().map(|(_, _, e)| e));
            out
        }
        Label::Gpt => {
            if table.partitions.len() > GPT_ENTRIES {
                return Err(table_error(
                    graph,
                    table,
                    format!(
                        "a GPT holds {GPT_ENTRIES} partitions, and this table lists {}; merge some, or split the disk",
                        table.partitions.len()
                    ),
                ));
            }
            plan_gpt(graph, table, disk)?
        }
    })
}

/// Partition entries in the GPT we write (the usual 128 of 128 bytes).
const GPT_ENTRIES: usize = 128;

fn table_error(graph: &Graph, table: &PartitionTable, message: String) -> BlockDevError {
    BlockDevError::Table {
        at: At::new(graph.source(), table.line),
        node: table.base.clone(),
        message,
    }
}

fn check_disk(graph: &Graph, table: &PartitionTable, disk: Disk) -> Result<()> {
    if disk.sector_size == 0 || !disk.size_bytes.is_multiple_of(disk.sector_size) {
        return Err(table_error(
            graph,
            table,
            format!(
                "disk size {} is not a multiple of the sector size {}",
                disk.size_bytes, disk.sector_size
            ),
        ));
    }
    Ok(())
}

fn extent(
    name: &str,
    number: u32,
    start: u64,
    len: u64,
    p: &Partition,
    ss: u64,
) -> PartitionExtent {
    PartitionExtent {
        name: name.to_string(),
        number,
        start_bytes: start * ss,
        size_bytes: len * ss,
        part_type: p.part_type.clone(),
        boot: p.boot,
    }
}

fn plan_mbr(graph: &Graph, table: &PartitionTable, disk: Disk) -> Result<MbrPlan> {
    check_disk(graph, table, disk)?;
    let ss = disk.sector_size;
    if !table.align.is_multiple_of(ss) {
        return Err(table_error(
            graph,
            table,
            format!(
                "align {} is not a multiple of the sector size {ss}",
                table.align
            ),
        ));
    }
    let total = disk.size_bytes / ss;
    if total > u64::from(u32::MAX) {
        return Err(table_error(
            graph,
            table,
            "the disk is too big for MBR (2 TiB with 512-byte sectors); use `label: gpt`".into(),
        ));
    }
    let align = table.align / ss;
    let up = |b: u64| b.div_ceil(align) * align;
    let mut plan = MbrPlan::default();
    let mut next_free = align;
    let mut slot = 1usize;
    let mut number = 0u32;
    for (name, p) in graph.partitions_of(table) {
        let free = disk.size_bytes.saturating_sub((next_free + align) * ss);
        let bytes = p.size.resolve(free);
        let len = bytes / ss;
        let fits = |start: u64| -> Result<()> {
            if len == 0 || start + len > total {
                return Err(too_big(
                    graph,
                    name,
                    bytes,
                    total.saturating_sub(start) * ss,
                ));
            }
            Ok(())
        };
        if p.primary {
            let start = up(next_free);
            fits(start)?;
            number += 1;
            plan.primaries
                .push((slot, extent(name, number, start, len, p, ss)));
            slot += 1;
            next_free = up(start + len);
        } else {
            if plan.extended.is_none() {
                plan.extended = Some((slot, next_free, total.saturating_sub(next_free)));
                number = 4;
            }
            let ebr = next_free;
            let start = up(ebr + 1);
            fits(start)?;
            number += 1;
            let end = up(start + len);
            plan.logicals
                .push((ebr, end - ebr, extent(name, number, start, len, p, ss)));
            next_free = end;
        }
    }
    Ok(plan)
}

fn too_big(graph: &Graph, name: &str, need: u64, available: u64) -> BlockDevError {
    let line = graph.node(name).map(|n| n.line).unwrap_or(0);
    BlockDevError::DoesNotFit {
        at: At::new(graph.source(), line),
        node: name.to_string(),
        need,
        available,
    }
}

/// Sectors the GPT partition entry array takes (128 entries of 128 bytes).
fn gpt_entry_sectors(ss: u64) -> u64 {
    (GPT_ENTRIES as u64 * 128).div_ceil(ss)
}

fn plan_gpt(graph: &Graph, table: &PartitionTable, disk: Disk) -> Result<Vec<PartitionExtent>> {
    check_disk(graph, table, disk)?;
    let ss = disk.sector_size;
    let total = disk.size_bytes / ss;
    let last_usable = total.saturating_sub(2 + gpt_entry_sectors(ss));
    // DIB leaves 2 MiB for the tables and rounding; sgdisk starts at 1 MiB.
    let mut free = disk.size_bytes.saturating_sub(2 * MIB);
    let mut start_bytes = MIB;
    let mut out = Vec::new();
    for (i, (name, p)) in graph.partitions_of(table).into_iter().enumerate() {
        if name.encode_utf16().count() > GPT_NAME_MAX {
            return Err(table_error(
                graph,
                table,
                format!("partition name `{name}` is longer than GPT's {GPT_NAME_MAX} characters"),
            ));
        }
        let bytes = p.size.resolve(free);
        let whole = bytes / MIB * MIB;
        let end_lba = (start_bytes + whole) / ss;
        if bytes > free || whole == 0 || end_lba > last_usable + 1 {
            return Err(too_big(graph, name, bytes.max(MIB), free));
        }
        out.push(extent(
            name,
            i as u32 + 1,
            start_bytes / ss,
            whole / ss,
            p,
            ss,
        ));
        free -= bytes;
        start_bytes += whole;
    }
    Ok(out)
}

/// Writes the partition table that the config puts on the device node
/// `base` (e.g. `image0`) into `dev`, a disk image or device of
/// `disk.size_bytes`. With a `seed`, the disk signature and GUIDs are
/// derived from it and the node names, so equal inputs give equal bytes.
pub fn write_table<D: Read + Write + Seek>(
    dev: &mut D,
    graph: &Graph,
    base: &str,
    disk: Disk,
    seed: Option<u64>,
) -> Result<Vec<PartitionExtent>> {
    let table = graph.table_on(base).ok_or_else(|| BlockDevError::Table {
        at: At::new(graph.source(), 0),
        node: base.to_string(),
        message: "the config puts no partition table on this node".into(),
    })?;
    let io = |e: std::io::Error| BlockDevError::Io {
        node: base.to_string(),
        source: e,
    };
    let actual = dev.seek(SeekFrom::End(0)).map_err(io)?;
    if actual < disk.size_bytes {
        return Err(table_error(
            graph,
            table,
            format!(
                "the device holds {actual} bytes, less than the disk size {}",
                disk.size_bytes
            ),
        ));
    }
    match table.label {
        Label::Mbr => write_mbr(dev, graph, table, disk, seed),
        Label::Gpt => write_gpt(dev, graph, table, disk, seed),
    }
}

/// CHS of an LBA in DIB's geometry (254 heads, 63 sectors), clamped to the
/// largest address as DIB does; only ancient firmware reads these.
fn chs(lba: u64) -> mbrman::CHS {
    const HEADS: u64 = 254;
    const SECTORS: u64 = 63;
    if lba >= 1023 * HEADS * SECTORS {
        return mbrman::CHS::new(1023, HEADS as u8, SECTORS as u8);
    }
    let cyl = lba / (HEADS * SECTORS);
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    mbrman::CHS::new(cyl as u16, head as u8, sector as u8)
}

fn mbr_entry(boot: bool, sys: u8, start: u64, sectors: u64) -> mbrman::MBRPartitionEntry {
    mbrman::MBRPartitionEntry {
        boot: if boot {
            mbrman::BOOT_ACTIVE
        } else {
            mbrman::BOOT_INACTIVE
        },
        first_chs: chs(start),
        sys,
        last_chs: chs(start + sectors.saturating_sub(1)),
        // plan_mbr refused disks beyond u32 sectors.
        starting_lba: start as u32,
        sectors: sectors as u32,
    }
}

fn mbr_type(p: &PartitionExtent) -> u8 {
    match p.part_type {
        PartType::Mbr(t) => t,
        PartType::Gpt { .. } => 0x83,
    }
}

fn write_mbr<D: Read + Write + Seek>(
    dev: &mut D,
    graph: &Graph,
    table: &PartitionTable,
    disk: Disk,
    seed: Option<u64>,
) -> Result<Vec<PartitionExtent>> {
    let plan = plan_mbr(graph, table, disk)?;
    let ss = disk.sector_size;
    let lib = |e: mbrman::Error| table_error(graph, table, e.to_string());
    let sig = ids::mbr_signature(seed, &format!("mbr:{}", table.base));
    let mut mbr = mbrman::MBR::new_from(dev, ss as u32, sig).map_err(lib)?;
    for (slot, e) in &plan.primaries {
        mbr[*slot] = mbr_entry(e.boot, mbr_type(e), e.start_bytes / ss, e.size_bytes / ss);
    }
    if let Some((slot, start, sectors)) = plan.extended {
        mbr[slot] = mbr_entry(false, MBR_EXTENDED_LBA, start, sectors);
    }
    for (i, (ebr, ebr_sectors, e)) in plan.logicals.iter().enumerate() {
        let first = i == 0;
        mbr.logical_partitions.push(mbrman::LogicalPartition {
            partition: mbr_entry(e.boot, mbr_type(e), e.start_bytes / ss, e.size_bytes / ss),
            absolute_ebr_lba: *ebr as u32,
            ebr_sectors: (!first).then_some(*ebr_sectors as u32),
            ebr_first_chs: chs(*ebr),
            ebr_last_chs: (!first).then(|| chs(ebr + ebr_sectors - 1)),
            bootstrap_code: [0; 446],
        });
    }
    mbr.write_into(dev).map_err(lib)?;
    dev.flush().map_err(|e| BlockDevError::Io {
        node: table.base.clone(),
        source: e,
    })?;
    let mut out: Vec<PartitionExtent> = plan.primaries.into_iter().map(|(_, e)| e).collect();
    out.extend(plan.logicals.into_iter().map(|(_, _, e)| e));
    Ok(out)
}

fn write_gpt<D: Read + Write + Seek>(
    dev: &mut D,
    graph: &Graph,
    table: &PartitionTable,
    disk: Disk,
    seed: Option<u64>,
) -> Result<Vec<PartitionExtent>> {
    let extents = plan_gpt(graph, table, disk)?;
    let ss = disk.sector_size;
    let lib = |e: gptman::Error| table_error(graph, table, e.to_string());
    let io = |e: std::io::Error| BlockDevError::Io {
        node: table.base.clone(),
        source: e,
    };
    let disk_guid = ids::to_gpt_bytes(&ids::uuid_bytes(seed, &format!("gpt-disk:{}", table.base)));
    // gptman sizes the table from the stream's end; bound it to the disk.
    let mut bounded = Bounded {
        inner: &mut *dev,
        len: disk.size_bytes,
    };
    let mut gpt = gptman::GPT::new_from(&mut bounded, ss, disk_guid).map_err(lib)?;
    gpt.align = (MIB / ss).max(1);
    for e in &extents {
        let type_guid = e.part_type.gpt_disk_bytes().ok_or_else(|| {
            table_error(
                graph,
                table,
                format!("partition `{}` has an MBR type on a GPT disk", e.name),
            )
        })?;
        gpt[e.number] = gptman::GPTPartitionEntry {
            partition_type_guid: type_guid,
            unique_partition_guid: ids::to_gpt_bytes(&ids::uuid_bytes(
                seed,
                &format!("gpt-part:{}:{}", table.base, e.name),
            )),
            starting_lba: e.start_bytes / ss,
            ending_lba: (e.start_bytes + e.size_bytes) / ss - 1,
            attribute_bits: if e.boot { GPT_LEGACY_BIOS_BOOTABLE } else { 0 },
            partition_name: e.name.as_str().into(),
        };
    }
    gpt.write_into(&mut bounded).map_err(lib)?;
    gptman::GPT::write_protective_mbr_into(&mut bounded, ss).map_err(lib)?;
    // The protective MBR carries a disk signature too; keep it seeded.
    let sig = ids::mbr_signature(seed, &format!("mbr:{}", table.base));
    bounded.seek(SeekFrom::Start(440)).map_err(io)?;
    bounded.write_all(&sig).map_err(io)?;
    bounded.flush().map_err(io)?;
    Ok(extents)
}

/// A view of the first `len` bytes of a stream, so the backup GPT goes at
/// the end of the disk even when the stream (a device) is larger.
struct Bounded<'a, D> {
    inner: &'a mut D,
    len: u64,
}

impl<D: Read + Write + Seek> Read for Bounded<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<D: Read + Write + Seek> Write for Bounded<'_, D> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Read + Write + Seek> Seek for Bounded<'_, D> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::End(off) => {
                let target = self
                    .len
                    .checked_add_signed(off)
                    .ok_or_else(|| std::io::Error::other("seek before start"))?;
                self.inner.seek(SeekFrom::Start(target))
            }
            other => self.inner.seek(other),
        }
    }
}
