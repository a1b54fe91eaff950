//! Sizes as DIB writes them, and the image size computation.
//!
//! Units: `KiB MiB GiB TiB` are binary, `KB MB GB TB` and `K M G T` decimal,
//! `B` or no unit is bytes. A number may have a fraction (`1.5GiB`); a unit
//! alone means one of it. `N%` is a share of the space that remains.

use serde::Serialize;

use super::graph::Graph;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Unit suffixes and their factors. Longest first is not needed: matching is exact.
const UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("T", 1_000_000_000_000),
    ("G", 1_000_000_000),
    ("M", 1_000_000),
    ("K", 1_000),
    ("B", 1),
    ("", 1),
];

/// A size as given in the config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeSpec {
    /// An absolute number of bytes.
    Bytes(u64),
    /// A percentage (0 < p <= 100) of the space still free.
    Percent(f64),
}

impl SizeSpec {
    /// Parses `100%`, `8MiB`, `1.5G`, `4096`.
    pub fn parse(spec: &str) -> Result<SizeSpec, String> {
        let spec = spec.trim();
        match spec.strip_suffix('%') {
            Some(p) => parse_percent(p).map(SizeSpec::Percent),
            None => parse_size(spec).map(SizeSpec::Bytes),
        }
    }

    /// Bytes of this size when `free` bytes remain (DIB truncates percentages).
    pub fn resolve(&self, free: u64) -> u64 {
        match *self {
            SizeSpec::Bytes(b) => b,
            SizeSpec::Percent(p) => (free as f64 * p / 100.0) as u64,
        }
    }
}

fn parse_percent(p: &str) -> Result<f64, String> {
    let v: f64 = p
        .trim()
        .parse()
        .map_err(|_| format!("`{p}%` is not a percentage"))?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(format!("`{p}%` must be more than 0% and at most 100%"));
    }
    Ok(v)
}

/// Parses an absolute size into bytes, truncating fractions of a byte.
pub fn parse_size(spec: &str) -> Result<u64, String> {
    let spec = spec.trim();
    let split = spec
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(spec.len());
    let (number, unit) = spec.split_at(split);
    // DIB allows one space between the number and the unit.
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let factor = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            format!("unknown unit `{unit}` in `{spec}`; use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB, K, M, G or T")
        })?;
    scale(number, factor).ok_or_else(|| format!("`{spec}` is not a valid size"))
}

/// `number × factor` computed exactly on the decimal digits (no float error).
fn scale(number: &str, factor: u64) -> Option<u64> {
    if number.is_empty() {
        return Some(factor);
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let int_v: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_v: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let denom = 10u128.pow(frac.len() as u32);
    let total = int_v
        .checked_mul(factor as u128)?
        .checked_add(frac_v * factor as u128 / denom)?;
    u64::try_from(total).ok()
}

/// The inputs of the image size computation (DIB's command-line flags).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SizeOptions {
    /// `--image-size`, in GiB (may have a fraction).
    pub image_size_gib: Option<f64>,
    /// `--image-extra-size`, in MiB: tree size plus this, instead of ÷ 0.6.
    pub image_extra_size_mib: Option<u64>,
    /// `--mkfs-journal-size` in MiB (DIB's default is 64).
    pub journal_size_mib: Option<u64>,
}

/// DIB's ext4 journal default, in MiB.
pub const DEFAULT_JOURNAL_MIB: u64 = 64;
/// What DIB pads for an ESP when the layout does not say its size.
const ESP_PAD_MIB: u64 = 525;

/// The size of the disk image in bytes, computed as DIB's disk-image-create
/// does, in KiB and rounded up to 64 KiB:
///
/// - `--image-size` GiB when given; else the tree's size ÷ 0.6, or the tree's
///   size plus `--image-extra-size` MiB;
/// - plus the ext4 journal when the root filesystem is ext4 and no
///   `--image-size` was given;
/// - plus the ESP when the layout has one. DIB pads a fixed 525 MiB whenever
///   the `block-device-efi` element is used; we pad the ESP's own size, which
///   is what the pad stands for, and 525 MiB when it is given as a percentage.
///
/// An explicit `size:` on the first `local_loop` node wins over all of this,
/// as it does in DIB.
pub fn compute_image_size(tree_bytes: u64, opts: &SizeOptions, graph: &Graph) -> u64 {
    if let Some(size) = graph.local_loops().find_map(|l| l.size) {
        return size;
    }
    let mut kib = base_kib(tree_bytes, opts);
    let root_is_ext4 = graph
        .root_filesystem()
        .is_some_and(|(_, fs)| fs.fstype == "ext4");
    if root_is_ext4 && opts.image_size_gib.is_none() {
        let journal_kib = opts
            .journal_size_mib
            .unwrap_or(DEFAULT_JOURNAL_MIB)
            .saturating_mul(KIB);
        kib = kib
            .saturating_add(journal_kib)
            .max(ext4_floor_kib(tree_bytes.div_ceil(KIB), journal_kib));
    }
    // Root on a logical volume whose group takes the rest of the disk: the
    // rest is sized for the group. (Fixed-size partitions count as they are.)
    let lvm = super::lvm::root_group_sizing(graph, kib)
        .filter(|_| opts.image_size_gib.is_none())
        .filter(|(parts, _)| parts.iter().any(|p| is_percent_sized(graph, p)));
    if let Some((_, group_kib)) = &lvm {
        kib = *group_kib;
    }
    let root_parts = match lvm {
        Some((parts, _)) => parts,
        None => root_partition(graph).into_iter().collect(),
    };
    kib = kib.saturating_add(other_partitions_kib(graph, &root_parts));
    // Whole alignment units, so the last partition can end on a boundary
    // (an SD card layout aligns to 4 MiB); at least 64 KiB.
    let unit_kib = graph
        .tables()
        .iter()
        .map(|t| t.align.div_ceil(KIB))
        .max()
        .unwrap_or(64)
        .max(64);
    // Saturating: absurd flags must give an absurd size, not a panic.
    kib.div_ceil(unit_kib).saturating_mul(unit_kib * KIB)
}

/// The smallest ext4 filesystem that takes a tree of `tree_kib` and a
/// journal of `journal_kib`. mke2fs refuses a journal larger than half the
/// free blocks it sees before the tree is copied in ("Total journal size too
/// big for filesystem"), and DIB's `-i 4096` gives a 256-byte inode per 4 KiB,
/// so about a sixteenth of the space is inode tables; a tenth is kept for
/// them and the other metadata. Only small trees reach this floor: the fake
/// OS of the tests, a rescue image. DIB adds the journal alone and fails there.
fn ext4_floor_kib(tree_kib: u64, journal_kib: u64) -> u64 {
    let for_journal = journal_kib.saturating_mul(2);
    let for_tree = tree_kib.saturating_add(journal_kib);
    for_journal.max(for_tree).saturating_mul(10).div_ceil(9)
}

/// True when partition `name` takes a share of the disk (`size: 100%`).
fn is_percent_sized(graph: &Graph, name: &str) -> bool {
    graph.tables().iter().any(|t| {
        graph
            .partitions_of(t)
            .iter()
            .any(|(n, p)| *n == name && matches!(p.size, SizeSpec::Percent(_)))
    })
}

/// The partition the root filesystem is made on, when it is one.
fn root_partition(graph: &Graph) -> Option<String> {
    graph
        .root_filesystem()
        .and_then(|(fs, _)| graph.node(fs))
        .and_then(|n| n.bases.first().cloned())
}

/// Room for the partitions that do not hold the root filesystem: their fixed
/// sizes (an ESP, a Raspberry Pi firmware partition, a BIOS boot partition),
/// and a padded guess for an ESP sized in percent. The tree's measure only
/// covers the root.
fn other_partitions_kib(graph: &Graph, root_parts: &[String]) -> u64 {
    let mut kib = 0u64;
    for table in graph.tables() {
        // The first partition starts one alignment unit in.
        kib = kib.saturating_add(table.align.div_ceil(KIB));
        for (name, part) in graph.partitions_of(table) {
            if root_parts.iter().any(|p| p == name) {
                continue;
            }
            kib = kib.saturating_add(match part.size {
                SizeSpec::Bytes(b) => b.div_ceil(KIB),
                SizeSpec::Percent(_) if part.part_type.is_esp() => ESP_PAD_MIB * KIB,
                SizeSpec::Percent(_) => 0,
            });
        }
    }
    kib
}

/// The size before padding, in KiB.
fn base_kib(tree_bytes: u64, opts: &SizeOptions) -> u64 {
    if let Some(gib) = opts.image_size_gib {
        return (gib.max(0.0) * (MIB as f64)) as u64;
    }
    let tree_kib = tree_bytes.div_ceil(KIB);
    match opts.image_extra_size_mib {
        Some(extra) => tree_kib.saturating_add(extra.saturating_mul(KIB)),
        None => (tree_kib as f64 / 0.6) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size("1KB").unwrap(), 1000);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1TB").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_size("1K").unwrap(), 1000);
        assert_eq!(parse_size("40G").unwrap(), 40_000_000_000);
        assert_eq!(parse_size("3M").unwrap(), 3_000_000);
        assert_eq!(parse_size("2T").unwrap(), 2_000_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("12B").unwrap(), 12);
        assert_eq!(parse_size("8 MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("0.5K").unwrap(), 500);
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            "1XiB",
            "1mib",
            "-1",
            "1..2M",
            ".",
            "1e3",
            "99999999999999999999TiB",
            "ten",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("1mib").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn percentages() {
        assert_eq!(SizeSpec::parse("100%").unwrap(), SizeSpec::Percent(100.0));
        assert_eq!(SizeSpec::parse("50%").unwrap().resolve(1001), 500);
        assert_eq!(SizeSpec::parse("8MiB").unwrap().resolve(1), 8 << 20);
        assert!(SizeSpec::parse("0%").is_err());
        assert!(SizeSpec::parse("101%").is_err());
        assert!(SizeSpec::parse("x%").is_err());
    }

    #[test]
    fn base_sizes() {
        let o = SizeOptions::default();
        assert_eq!(base_kib(600 * 1024, &o), 1000);
        let o = SizeOptions {
            image_extra_size_mib: Some(10),
            ..Default::default()
        };
        assert_eq!(base_kib(1024, &o), 1 + 10 * 1024);
        let o = SizeOptions {
            image_size_gib: Some(2.0),
            image_extra_size_mib: Some(10),
            ..Default::default()
        };
        assert_eq!(base_kib(1 << 40, &o), 2 * 1024 * 1024);
    }

    #[test]
    fn a_small_tree_leaves_mke2fs_room_for_the_journal() {
        let g = crate::blockdev::load_config(
            crate::blockdev::ConfigSource::Default,
            &Default::default(),
        )
        .unwrap();
        let o = SizeOptions::default();
        // A 5 MiB tree: ÷ 0.6 plus the journal would be 72 MiB, too small
        // for a 64 MiB journal.
        let size = compute_image_size(5 << 20, &o, &g);
        assert!(size >= (2 * 64) << 20, "{}", size >> 20);
        // A real tree is sized by DIB's rule, untouched by the floor.
        let big = 900u64 << 20;
        assert_eq!(
            compute_image_size(big, &o, &g),
            ((big / 1024) as f64 / 0.6) as u64 * 1024 + (64 << 20)
        );
    }

    #[test]
    fn absurd_inputs_do_not_panic() {
        let g = crate::blockdev::load_config(
            crate::blockdev::ConfigSource::Default,
            &Default::default(),
        )
        .unwrap();
        for o in [
            SizeOptions {
                image_size_gib: Some(1e300),
                ..Default::default()
            },
            SizeOptions {
                image_size_gib: Some(f64::NAN),
                ..Default::default()
            },
            SizeOptions {
                image_extra_size_mib: Some(u64::MAX),
                journal_size_mib: Some(u64::MAX),
                ..Default::default()
            },
        ] {
            let _ = compute_image_size(u64::MAX, &o, &g);
        }
    }
}
