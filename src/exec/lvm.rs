//! LVM on the new disk, without device-mapper: the layout is worked out in
//! [`crate::blockdev::lvm`], the lvm2 tools write each physical volume's
//! label and the volume group's metadata from it (`pvcreate --restorefile`,
//! `vgcfgrestore`), and each logical volume becomes a loop device over its
//! extents of the raw file, so its filesystem is made and filled there
//! exactly as on a partition. Nothing is activated, so nothing of the image's
//! volume groups outlives the loop devices, which the journal detaches.

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

/// Writes the volume groups onto the disk's nodes (`spans`, in the raw
/// file `raw`) and returns each logical volume's block device (a loop
/// device over its extents) and span.
pub fn make(
    graph: &Graph,
    raw: &Path,
    spans: &Spans,
    devices: &BTreeMap<String, PathBuf>,
    build: &Path,
    journal: &mut Journal,
    seed: Option<u64>,
) -> anyhow::Result<BTreeMap<String, (PathBuf, Span)>> {
    let sizes = spans.iter().map(|(k, (_, s))| (k.clone(), *s)).collect();
    let layout = lvm::layout(graph, &sizes, seed)
        .map_err(|e| UsageError(format!("block-device config {}: {e}", graph.source())))?;
    let lv_spans = lv_spans(&layout, spans)?;
    let dir = build.join(LVM_DIR);
    let pv_devices = pv_devices(&layout, devices)?;
    let config = LvmConfig::create(&dir, &pv_devices.values().cloned().collect::<Vec<_>>())?;
    let time = seed.unwrap_or_else(now);
    for vg in &layout.vgs {
        write_vg(vg, &pv_devices, &config, &dir, journal, time)?;
    }
    make_reproducible(raw, &layout, spans, time)?;
    let mut out = BTreeMap::new();
    for (lv, (offset, bytes)) in lv_spans {
        let (dev, _) = journal.attach_loop_range(raw, offset, Some(bytes))?;
        out.insert(lv, (dev, (offset, bytes)));
    }
    Ok(out)
}

/// (offset in the raw file, bytes) of each logical volume; one that would
/// span physical volumes is refused, since only device-mapper joins them.
fn lv_spans(layout: &Layout, spans: &Spans) -> Result<Spans, UsageError> {
    let mut out = BTreeMap::new();
    for vg in &layout.vgs {
        for lv in &vg.lvs {
            let (pv, offset, bytes) = vg.contiguous_extent(lv).ok_or_else(|| {
                UsageError(format!(
                    "lv {} does not fit on one physical volume of {} and would span two; \
                     without device-mapper its filesystem cannot be built across them: \
                     make it smaller than the largest pv, or a pv larger",
                    lv.name, vg.name
                ))
            })?;
            let (start, _) = spans[&vg.pvs[pv].base];
            out.insert(lv.name.clone(), (start + offset, bytes));
        }
    }
    Ok(out)
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
fn make_reproducible(raw: &Path, layout: &Layout, spans: &Spans, time: u64) -> anyhow::Result<()> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)
        .with_context(|| format!("opening {}", raw.display()))?;
    for pv in layout.vgs.iter().flat_map(|v| &v.pvs) {
        let (start, _) = spans[&pv.base];
        rewrite_metadata(&f, start, time)
            .with_context(|| format!("the LVM metadata of pv {} in {}", pv.name, raw.display()))?;
    }
    f.sync_all()?;
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
