//! LVM on the new disk, without device-mapper: the layout is worked out in
//! [`crate::blockdev::lvm`], the lvm2 tools write each physical volume's
//! label and the volume group's metadata from it (`pvcreate --restorefile`,
//! `vgcfgrestore`), and each logical volume becomes a loop device over its
//! extents of the raw file, so its filesystem is made and filled there
//! exactly as on a partition. A volume that spans physical volumes is built
//! in a file of its own and copied into its extents at the end. Nothing is
//! activated, so nothing of the image's volume groups outlives the loop
//! devices, which the journal detaches. Once they are detached, [`finish`]
//! copies the spanned volumes in and makes the metadata reproducible.

use anyhow::Context;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::disk::{Span, Spans};
use crate::blockdev::Graph;
use crate::blockdev::lvm::{self, Layout, VolumeGroup};
use crate::blockdev::lvm_mda::{self, MdaHeader};
use crate::error::UsageError;
use crate::host::Journal;
use crate::host::lvm::LvmConfig;

/// The private lvm2 configuration and the metadata files, in the build directory.
pub const LVM_DIR: &str = "lvm";

/// The logical volumes once their group's metadata is on the disk.
pub struct Volumes {
    /// Each volume's block device and span (a spanned volume's begins at
    /// its first run and counts all of its bytes).
    pub devices: BTreeMap<String, (PathBuf, Span)>,
    /// What is left to do once the loop devices are detached.
    pub finish: Finish,
}

/// The LVM work done through the raw file after its loop devices are
/// detached: then no write through a device can follow it, and no device
/// event shows the host the finished metadata, which no longer holds the
/// group from activation.
#[derive(Clone, Debug, Default)]
pub struct Finish {
    /// The volumes built in files of their own, to be copied into place.
    spanned: Vec<Spanned>,
    /// Where each physical volume begins in the raw file.
    pv_starts: Vec<u64>,
    /// The metadata's creation time.
    time: u64,
}

/// A volume whose extents lie in more than one run (it spans physical
/// volumes). Device-mapper would join the runs into one device; without
/// it, the filesystem is made and filled in a file of the volume's size,
/// which [`copy_spanned`] writes run by run into the disk once its loop
/// device is detached.
#[derive(Clone, Debug)]
pub struct Spanned {
    pub file: PathBuf,
    /// (offset in the raw file, bytes), in the volume's order.
    pub runs: Vec<Span>,
}

/// Writes the volume groups onto the disk's nodes (`spans`, in the raw
/// file `raw`) and gives each logical volume a block device: a loop device
/// over its extents of the raw file, or over a file of its own when it
/// spans physical volumes.
pub fn make(
    graph: &Graph,
    raw: &Path,
    spans: &Spans,
    devices: &BTreeMap<String, PathBuf>,
    build: &Path,
    journal: &mut Journal,
    seed: Option<u64>,
) -> anyhow::Result<Volumes> {
    let sizes = spans.iter().map(|(k, (_, s))| (k.clone(), *s)).collect();
    let layout = lvm::layout(graph, &sizes, seed)
        .map_err(|e| UsageError(format!("block-device config {}: {e}", graph.source())))?;
    let dir = build.join(LVM_DIR);
    let pv_devices = pv_devices(&layout, devices)?;
    let config = LvmConfig::create(&dir, &pv_devices.values().cloned().collect::<Vec<_>>())?;
    let time = seed.unwrap_or_else(now);
    for vg in &layout.vgs {
        write_vg(vg, &pv_devices, &config, &dir, journal, time)?;
    }
    let pvs = layout.vgs.iter().flat_map(|v| &v.pvs);
    let mut out = Volumes {
        devices: BTreeMap::new(),
        finish: Finish {
            spanned: Vec::new(),
            pv_starts: pvs.map(|pv| spans[&pv.base].0).collect(),
            time,
        },
    };
    for (lv, runs) in lv_runs(&layout, spans) {
        let bytes = runs.iter().map(|(_, b)| b).sum();
        let dev = match runs[..] {
            [(offset, b)] => journal.attach_loop_range(raw, offset, Some(b))?.0,
            _ => {
                let file = dir.join(format!("{lv}.lv"));
                fs::File::create_new(&file)
                    .and_then(|f| f.set_len(bytes))
                    .with_context(|| format!("creating {}", file.display()))?;
                let dev = journal.attach_loop(&file)?.0;
                out.finish.spanned.push(Spanned {
                    file,
                    runs: runs.clone(),
                });
                dev
            }
        };
        out.devices.insert(lv, (dev, (runs[0].0, bytes)));
    }
    Ok(out)
}

/// (offset in the raw file, bytes) of each run of each logical volume.
fn lv_runs(layout: &Layout, spans: &Spans) -> BTreeMap<String, Vec<Span>> {
    let mut out = BTreeMap::new();
    for vg in &layout.vgs {
        for lv in &vg.lvs {
            let runs = vg
                .runs(lv)
                .into_iter()
                .map(|(pv, offset, bytes)| (spans[&vg.pvs[pv].base].0 + offset, bytes))
                .collect();
            out.insert(lv.name.clone(), runs);
        }
    }
    out
}

/// Copies in the spanned volumes and makes the metadata reproducible; only
/// once every loop device over `raw` is detached.
pub fn finish(raw: &Path, finish: &Finish) -> anyhow::Result<()> {
    if finish.pv_starts.is_empty() {
        return Ok(());
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)
        .with_context(|| format!("opening {}", raw.display()))?;
    copy_spanned(&f, &finish.spanned)?;
    make_reproducible(&f, &finish.pv_starts, finish.time)
        .with_context(|| format!("the LVM metadata in {}", raw.display()))?;
    f.sync_all()?;
    Ok(())
}

/// Writes each spanned volume's file into its runs of the raw file. Only
/// after its loop device is detached, so that everything is in the file.
/// The runs were never written, so chunks of zeros are skipped and the raw
/// file stays sparse there.
fn copy_spanned(out: &fs::File, spanned: &[Spanned]) -> anyhow::Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    for s in spanned {
        let src =
            fs::File::open(&s.file).with_context(|| format!("opening {}", s.file.display()))?;
        let mut from = 0u64;
        for &(at, bytes) in &s.runs {
            let mut done = 0u64;
            while done < bytes {
                let n = CHUNK.min((bytes - done) as usize);
                src.read_exact_at(&mut buf[..n], from + done)?;
                if buf[..n].iter().any(|&b| b != 0) {
                    out.write_all_at(&buf[..n], at + done)?;
                }
                done += n as u64;
            }
            from += bytes;
        }
        fs::remove_file(&s.file)?;
    }
    Ok(())
}

/// The device of each physical volume, by pv name.
fn pv_devices(
    layout: &Layout,
    devices: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for pv in layout.vgs.iter().flat_map(|v| &v.pvs) {
        let dev = devices
            .get(&pv.base)
            .with_context(|| format!("pv {} sits on {}, which has no device", pv.name, pv.base))?;
        out.insert(pv.name.clone(), dev.clone());
    }
    Ok(out)
}

/// The labels of the group's physical volumes, then its metadata.
fn write_vg(
    vg: &VolumeGroup,
    pv_devices: &BTreeMap<String, PathBuf>,
    config: &LvmConfig,
    dir: &Path,
    journal: &mut Journal,
    time: u64,
) -> anyhow::Result<()> {
    let devs: Vec<&PathBuf> = vg.pvs.iter().map(|p| &pv_devices[&p.name]).collect();
    let names: Vec<String> = devs.iter().map(|d| d.display().to_string()).collect();
    let file = dir.join(format!("{}.vg", vg.name));
    fs::write(&file, lvm::metadata_text(vg, &names, time))
        .with_context(|| format!("writing {}", file.display()))?;
    for (pv, dev) in vg.pvs.iter().zip(devs) {
        journal.run(
            config
                .cmd(format!("writing the LVM label of {}", pv.name), "pvcreate")
                .args(["--force", "--uuid", &pv.uuid, "--restorefile"])
                .arg(&file)
                .arg(dev),
        )?;
    }
    journal.run(
        config
            .cmd(
                format!("writing the metadata of volume group {}", vg.name),
                "vgcfgrestore",
            )
            .arg("--file")
            .arg(&file)
            .arg(&vg.name),
    )?;
    Ok(())
}

/// Rewrites lvm2's copy of each group's text on every physical volume
/// without what differs between runs ([`lvm_mda`]). Through the raw file,
/// as the partition tables are written: lvm2 wrote through the loop device
/// with O_DIRECT, so nothing of it waits in a cache above the file.
fn make_reproducible(f: &fs::File, pv_starts: &[u64], time: u64) -> anyhow::Result<()> {
    for &start in pv_starts {
        rewrite_metadata(f, start, time)
            .with_context(|| format!("the physical volume at byte {start}"))?;
    }
    Ok(())
}

fn rewrite_metadata(f: &fs::File, pv_start: u64, time: u64) -> anyhow::Result<()> {
    let read = |at: u64, len: usize| -> std::io::Result<Vec<u8>> {
        let mut b = vec![0; len];
        f.read_exact_at(&mut b, at).map(|()| b)
    };
    let label = read(pv_start + lvm_mda::LABEL_OFFSET, lvm_mda::SECTOR)?;
    let area = pv_start + lvm_mda::mda_offset(&label)?;
    let header = MdaHeader::parse(&read(area, lvm_mda::SECTOR)?)?;
    let at = area + header.text_offset;
    let old = read(at, header.text_len as usize)?;
    let new = lvm_mda::reproducible_text(&old, time)?;
    // Zeros over what the old, longer text leaves past the new one.
    let mut padded = new.clone();
    padded.resize(old.len().max(new.len()), 0);
    f.write_all_at(&padded, at)?;
    f.write_all_at(&header.with_text(&new), area)?;
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
