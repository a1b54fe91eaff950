//! Booting a Raspberry Pi 3 SD-card image the way the Pi's firmware would:
//! the kernel, initramfs, device tree and command line come from config.txt
//! and cmdline.txt on the card's FAT firmware partition (read with mtools,
//! since this kernel cannot mount vfat), and a raw copy of the image,
//! enlarged to a power of two as qemu's SD card model requires, is the card.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::host::{Cmd, CmdError};

/// The firmware's name for the Pi 3 B's device tree with upstream_kernel=1.
const DEFAULT_DTB: &str = "bcm2837-rpi-3-b.dtb";

/// FAT partition types the Pi's boot ROM reads (FAT32 CHS/LBA, FAT16 LBA).
const FAT_TYPES: &[u8] = &[0x0B, 0x0C, 0x0E];

/// Why an image is not a bootable Pi 3 card.
#[derive(Debug, thiserror::Error)]
pub enum RaspiError {
    #[error("the image has no MBR; a Pi 3 boots only from an MBR SD card")]
    NoMbr,
    #[error("partition 1 is of type {0:#04x}; the Pi's boot ROM needs FAT (0x0b/0x0c) there")]
    NotFat(u8),
    #[error("the firmware partition has no {name}: {why}")]
    Missing { name: String, why: String },
    #[error("config.txt lacks arm_64bit=1: the firmware would start the kernel in 32-bit mode")]
    Not64Bit,
    #[error("config.txt names no kernel=")]
    NoKernel,
    #[error("{0}")]
    Cmd(#[from] CmdError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// What qemu's raspi3b machine needs.
#[derive(Debug)]
pub struct Card {
    pub card: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: PathBuf,
    pub cmdline: String,
    /// For the log: "card 1536 MiB -> 2048 MiB; kernel vmlinuz, ...".
    pub summary: String,
}

/// The settings of a Pi config.txt that say what to boot: the `[all]` and
/// `[pi3]` sections and lines before any section (the others are for other
/// boards). `initramfs NAME ADDR` becomes `initramfs=NAME`.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut cfg = BTreeMap::new();
    let mut active = true;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let l = line.to_ascii_lowercase();
            active = l == "[all]" || l == "[pi3]";
            continue;
        }
        if !active {
            continue;
        }
        if let Some(rest) = line.strip_prefix("initramfs ") {
            if let Some(name) = rest.split_whitespace().next() {
                cfg.insert("initramfs".into(), name.into());
            }
        } else if let Some((k, v)) = line.split_once('=') {
            cfg.insert(k.trim().into(), v.trim().into());
        }
    }
    cfg
}

/// The byte offset of partition 1 (the firmware partition) in an MBR.
pub fn firmware_offset(mbr: &[u8]) -> Result<u64, RaspiError> {
    if mbr.len() < 512 || mbr[510..512] != [0x55, 0xAA] {
        return Err(RaspiError::NoMbr);
    }
    let entry = &mbr[446..462];
    let ptype = entry[4];
    let start = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
    if !FAT_TYPES.contains(&ptype) || start == 0 {
        return Err(RaspiError::NotFat(ptype));
    }
    Ok(u64::from(start) * 512)
}

/// Prepares the card in `workdir` from `image`: a raw copy, resized by
/// `resize` and then up to a power of two, and the boot files read from it.
pub fn prepare(
    qemu_img: &Path,
    image: &Path,
    workdir: &Path,
    resize: Option<&str>,
) -> Result<Card, RaspiError> {
    let card = workdir.join("sd.img");
    Cmd::new("copying the image to a raw SD card", qemu_img)
        .args(["convert", "-q", "-O", "raw"])
        .arg(image)
        .arg(&card)
        .run()?;
    if let Some(r) = resize {
        Cmd::new("enlarging the SD card", qemu_img)
            .args(["resize", "-q", "-f", "raw"])
            .arg(&card)
            .arg(r)
            .run()?;
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RaspiError::Io { what, source }
    };
    let size = std::fs::metadata(&card)
        .map_err(io("reading the card's size"))?
        .len();
    let size2 = size.next_power_of_two();
    if size2 != size {
        // qemu's SD card model accepts only power-of-two sizes.
        Cmd::new("enlarging the SD card to a power of two", qemu_img)
            .args(["resize", "-q", "-f", "raw"])
            .arg(&card)
            .arg(size2.to_string())
            .run()?;
    }
    let mut mbr = [0u8; 512];
    {
        use std::io::Read;
        std::fs::File::open(&card)
            .and_then(|mut f| f.read_exact(&mut mbr))
            .map_err(io("reading the card's MBR"))?;
    }
    let offset = firmware_offset(&mbr)?;
    let read = |name: &str, dest: &str| -> Result<PathBuf, RaspiError> {
        let out = workdir.join(dest);
        mtools_read(&card, offset, name, &out)?;
        Ok(out)
    };
    let config = read("config.txt", "config.txt")?;
    let cfg = parse_config(&std::fs::read_to_string(&config).map_err(io("reading config.txt"))?);
    if cfg.get("arm_64bit").map(String::as_str) != Some("1") {
        return Err(RaspiError::Not64Bit);
    }
    let kernel_name = cfg.get("kernel").ok_or(RaspiError::NoKernel)?;
    let kernel = read(kernel_name, "kernel")?;
    let initrd = match cfg.get("initramfs") {
        Some(n) => Some(read(n, "initrd")?),
        None => None,
    };
    let dtb_name = cfg
        .get("device_tree")
        .map(String::as_str)
        .unwrap_or(DEFAULT_DTB);
    let dtb = read(dtb_name, "board.dtb")?;
    let cmdline_file = read("cmdline.txt", "cmdline.txt")?;
    let cmdline = std::fs::read_to_string(&cmdline_file)
        .map_err(io("reading cmdline.txt"))?
        .trim()
        .to_string();
    let summary = format!(
        "card {} MiB -> {} MiB; kernel {kernel_name}, initramfs {}, device tree {dtb_name}",
        size >> 20,
        size2 >> 20,
        cfg.get("initramfs").map(String::as_str).unwrap_or("(none)"),
    );
    Ok(Card {
        card,
        kernel,
        initrd,
        dtb,
        cmdline,
        summary,
    })
}

/// Copies `::name` from the FAT filesystem at byte `offset` of `raw`.
fn mtools_read(raw: &Path, offset: u64, name: &str, dest: &Path) -> Result<(), RaspiError> {
    let mut image = raw.as_os_str().to_owned();
    image.push(format!("@@{offset}"));
    Cmd::new(
        format!("reading {name} from the firmware partition"),
        "mcopy",
    )
    .env("MTOOLS_SKIP_CHECK", "1")
    .args(["-n", "-i"])
    .arg(image)
    .arg(format!("::{name}"))
    .arg(dest)
    .run()
    .map(drop)
    .map_err(|e| match e {
        CmdError::Failed { tail, .. } => RaspiError::Missing {
            name: name.into(),
            why: tail.lines().last().unwrap_or("").trim().to_string(),
        },
        e => RaspiError::Cmd(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_sections_and_initramfs() {
        let cfg = parse_config(
            "# comment\narm_64bit=1\n[pi4]\nkernel=wrong\n[all]\nkernel=vmlinuz # the kernel\n\
             initramfs initrd.img followkernel\n[PI3]\ndevice_tree=bcm2837-rpi-3-b.dtb\n[cm4]\narm_64bit=0\n",
        );
        assert_eq!(cfg.get("kernel").unwrap(), "vmlinuz");
        assert_eq!(cfg.get("initramfs").unwrap(), "initrd.img");
        assert_eq!(cfg.get("arm_64bit").unwrap(), "1");
        assert_eq!(cfg.get("device_tree").unwrap(), "bcm2837-rpi-3-b.dtb");
    }

    fn mbr(ptype: u8, start: u32) -> [u8; 512] {
        let mut m = [0u8; 512];
        m[446 + 4] = ptype;
        m[446 + 8..446 + 12].copy_from_slice(&start.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    #[test]
    fn firmware_partition_checks() {
        assert_eq!(firmware_offset(&mbr(0x0C, 8192)).unwrap(), 8192 * 512);
        assert!(matches!(
            firmware_offset(&mbr(0x83, 2048)),
            Err(RaspiError::NotFat(0x83))
        ));
        assert!(matches!(
            firmware_offset(&mbr(0x0C, 0)),
            Err(RaspiError::NotFat(0x0C))
        ));
        assert!(matches!(
            firmware_offset(&[0u8; 512]),
            Err(RaspiError::NoMbr)
        ));
        assert_eq!(
            RaspiError::NotFat(0x83).to_string(),
            "partition 1 is of type 0x83; the Pi's boot ROM needs FAT (0x0b/0x0c) there"
        );
    }
}
