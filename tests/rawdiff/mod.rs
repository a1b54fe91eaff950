//! Where two raw disk images differ, told in terms a person can act on: the
//! 4 KiB blocks that differ, the partition each lies in, and inside an ext
//! filesystem the files whose data or inodes those blocks hold (debugfs
//! `icheck`, `ncheck`, and the inode fields that differ).

use crate::common::run_ok;
use libtest_mimic::Failed;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const BLOCK: u64 = 4096;
/// Enough blocks to name the cause; a wholesale difference says so itself.
const MAX_BLOCKS: usize = 4000;
const MAX_FILES: usize = 40;

/// A report on the blocks where `a` and `b` differ.
pub fn explain(a: &Path, b: &Path) -> Result<String, Failed> {
    let blocks = differing_blocks(a, b)?;
    let mut out = format!(
        "  {} differing 4 KiB blocks{}\n",
        blocks.len(),
        if blocks.len() >= MAX_BLOCKS {
            " (stopped counting)"
        } else {
            ""
        }
    );
    let parts = partitions(a)?;
    let before: Vec<u64> = blocks
        .iter()
        .copied()
        .filter(|o| parts.iter().all(|p| *o < p.0))
        .collect();
    if !before.is_empty() {
        out.push_str(&format!(
            "  {} before the first partition (partition table, boot loader): offsets {:?}\n",
            before.len(),
            &before[..before.len().min(8)]
        ));
    }
    for (n, (start, size)) in parts.iter().enumerate() {
        let inside: Vec<u64> = blocks
            .iter()
            .filter(|o| **o >= *start && **o < start + size)
            .map(|o| o - start)
            .collect();
        if !inside.is_empty() {
            out.push_str(&format!(
                "  partition {}: {} blocks differ\n",
                n + 1,
                inside.len()
            ));
            out.push_str(&ext_objects(a, b, *start, &inside));
        }
    }
    Ok(out)
}

/// Byte offsets of the 4 KiB blocks that differ.
fn differing_blocks(a: &Path, b: &Path) -> Result<Vec<u64>, Failed> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let chunk = 1 << 20;
    let (mut ba, mut bb) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut offset = 0u64;
    let mut out = Vec::new();
    loop {
        let (na, nb) = (read_full(&mut fa, &mut ba)?, read_full(&mut fb, &mut bb)?);
        if na == 0 && nb == 0 {
            return Ok(out);
        }
        for (i, (x, y)) in ba[..na]
            .chunks(BLOCK as usize)
            .zip(bb[..nb].chunks(BLOCK as usize))
            .enumerate()
        {
            if x != y {
                out.push(offset + i as u64 * BLOCK);
                if out.len() >= MAX_BLOCKS {
                    return Ok(out);
                }
            }
        }
        offset += na.max(nb) as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// (start, size) in bytes of each partition, as sfdisk reads the table.
fn partitions(img: &Path) -> Result<Vec<(u64, u64)>, Failed> {
    let table = dib::blockdev::sfdisk::dump(img)?.partitiontable;
    let sector = table.sectorsize.unwrap_or(512);
    Ok(table
        .partitions
        .iter()
        .map(|p| (p.start * sector, p.size * sector))
        .collect())
}

/// Files and inodes behind the 4 KiB chunks at `offsets` (bytes from the
/// start of the ext filesystem at `start`); empty when debugfs cannot read it.
fn ext_objects(a: &Path, b: &Path, start: u64, offsets: &[u64]) -> String {
    let fs_a = format!("{}?offset={start}", a.display());
    let fs_b = format!("{}?offset={start}", b.display());
    let Some(layout) = InodeTables::read(&fs_a) else {
        return "    (not an ext filesystem that dumpe2fs reads)\n".into();
    };
    let mut inodes = BTreeSet::new();
    let mut data = Vec::new();
    let mut metadata = 0;
    let bs = layout.block_size;
    for off in offsets {
        for blk in off / bs..(off + BLOCK).div_ceil(bs) {
            match layout.inodes_in(blk) {
                Some(range) => inodes.extend(range),
                None => data.push(blk),
            }
        }
    }
    let mut out = String::new();
    for (blk, ino) in icheck(&fs_a, &data) {
        match ino {
            Some(i) => {
                inodes.insert(i);
            }
            None => {
                metadata += 1;
                if metadata <= 8 {
                    out.push_str(&format!("    block {blk}: not in a file (superblock, bitmaps, descriptors, journal)\n"));
                }
            }
        }
    }
    let names = ncheck(&fs_a, &inodes);
    for ino in inodes.iter().take(MAX_FILES) {
        let fields = stat_difference(&fs_a, &fs_b, *ino);
        let name = names
            .iter()
            .find(|(i, _)| i == ino)
            .map_or("(no name)", |(_, n)| n.as_str());
        if !fields.is_empty() {
            out.push_str(&format!("    inode {ino} {name}: {fields}\n"));
        } else if data_changed(&fs_a, &fs_b, *ino) {
            out.push_str(&format!("    inode {ino} {name}: its data differs\n"));
        }
    }
    out
}

/// Where each block group's inode table lies, from dumpe2fs.
struct InodeTables {
    block_size: u64,
    per_group: u64,
    per_block: u64,
    tables: Vec<(u64, u64)>,
}

impl InodeTables {
    fn read(fs: &str) -> Option<Self> {
        let mut c = Command::new("dumpe2fs");
        c.arg(fs);
        let text = run_ok(c).ok()?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let per_group = field("Inodes per group:")?;
        let block_size = field("Block size:")?;
        let per_block = block_size / field("Inode size:")?;
        let tables = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Inode table at "))
            .filter_map(|r| {
                let range = r.split_whitespace().next()?;
                let (x, y) = range.split_once('-')?;
                Some((x.parse().ok()?, y.parse().ok()?))
            })
            .collect();
        Some(InodeTables {
            block_size,
            per_group,
            per_block,
            tables,
        })
    }

    /// The inodes stored in block `blk`, when it is part of an inode table.
    fn inodes_in(&self, blk: u64) -> Option<std::ops::Range<u64>> {
        let (group, (first, _)) = self
            .tables
            .iter()
            .enumerate()
            .find(|(_, (x, y))| blk >= *x && blk <= *y)?;
        let base = group as u64 * self.per_group + (blk - first) * self.per_block + 1;
        Some(base..base + self.per_block)
    }
}

fn debugfs(fs: &str, request: &str) -> String {
    let mut c = Command::new("debugfs");
    c.args(["-R", request]).arg(fs);
    run_ok(c).unwrap_or_default()
}

/// The inode owning each block, or None for filesystem metadata.
fn icheck(fs: &str, blocks: &[u64]) -> Vec<(u64, Option<u64>)> {
    if blocks.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = blocks
        .iter()
        .take(MAX_FILES * 4)
        .map(u64::to_string)
        .collect();
    debugfs(fs, &format!("icheck {}", list.join(" ")))
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let blk = w.next()?.parse().ok()?;
            Some((blk, w.next().and_then(|i| i.parse().ok())))
        })
        .collect()
}

fn ncheck(fs: &str, inodes: &BTreeSet<u64>) -> Vec<(u64, String)> {
    let list: Vec<String> = inodes.iter().take(MAX_FILES).map(u64::to_string).collect();
    if list.is_empty() {
        return Vec::new();
    }
    debugfs(fs, &format!("ncheck {}", list.join(" ")))
        .lines()
        .filter_map(|l| {
            let (ino, name) = l.trim().split_once(char::is_whitespace)?;
            Some((ino.parse().ok()?, name.trim().to_string()))
        })
        .collect()
}

/// The lines of `debugfs stat` that differ for one inode: a's, then b's.
fn stat_difference(a: &str, b: &str, ino: u64) -> String {
    let req = format!("stat <{ino}>");
    let (sa, sb) = (debugfs(a, &req), debugfs(b, &req));
    let only = |x: &str, y: &str| {
        let other: BTreeSet<&str> = y.lines().collect();
        x.lines()
            .filter(|l| !other.contains(l))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    };
    match (only(&sa, &sb), only(&sb, &sa)) {
        (x, y) if x.is_empty() && y.is_empty() => String::new(),
        (x, y) => format!("first build: {x} | second build: {y}"),
    }
}

/// Whether the file's bytes differ (debugfs `cat`), for regular files.
fn data_changed(a: &str, b: &str, ino: u64) -> bool {
    let req = format!("cat <{ino}>");
    debugfs(a, &req) != debugfs(b, &req)
}
