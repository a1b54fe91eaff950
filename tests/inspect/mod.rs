//! Inspection of a built disk image without booting or mounting it: the
//! partition table (sfdisk), FAT contents (mtools), files of the root
//! filesystem (debugfs), and /etc/fstab against what blkid finds on the disk.
//! Used by tests/vm.rs for the images of architectures other than amd64.

use super::Target;
use crate::common::run_ok;
use libtest_mimic::Failed;
use std::path::{Path, PathBuf};
use std::process::Command;

const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const PREP_GUID: &str = "9E1A2D38-C612-4316-AA26-8B49521E5A8B";
const MIB: u64 = 1 << 20;

/// One partition as sfdisk reports it, with its byte offset.
struct Part {
    number: usize,
    offset: u64,
    kind: String,
}

/// Checks `img` (raw or qcow2) for target `t`; `dir` is scratch space.
pub fn image(t: Target, img: &Path, dir: &Path) -> Result<(), Failed> {
    std::fs::create_dir_all(dir)?;
    let raw = as_raw(img, dir)?;
    let table: serde_json::Value =
        serde_json::from_str(&run_ok(cmd("sfdisk", &["--json"], &raw))?)?;
    let table = &table["partitiontable"];
    let parts = partitions(table)?;
    let root = parts
        .iter()
        .find(|p| p.kind == LINUX_GUID || p.kind == "83")
        .ok_or("no Linux partition for the root filesystem")?;
    match t {
        Target::Rpi3 => check_sd_card(img, table, &parts, &raw, dir)?,
        Target::Arm64Uefi | Target::Armhf => check_esp(t, table, &parts, &raw, dir)?,
        Target::Ppc64el => check_prep(&parts, &raw)?,
        _ => {}
    }
    check_bash_machine(t, &raw, root, dir)?;
    check_fstab_matches_disk(&raw, root, &parts)
}

fn cmd(program: &str, args: &[&str], file: &Path) -> Command {
    let mut c = Command::new(program);
    c.args(args).arg(file);
    c
}

fn as_raw(img: &Path, dir: &Path) -> Result<PathBuf, Failed> {
    if img.extension().is_some_and(|e| e == "raw") {
        return Ok(img.to_path_buf());
    }
    let raw = dir.join("disk.raw");
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-O", "raw"]).arg(img).arg(&raw);
    run_ok(c)?;
    Ok(raw)
}

fn partitions(table: &serde_json::Value) -> Result<Vec<Part>, Failed> {
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let list = table["partitions"]
        .as_array()
        .ok_or("sfdisk shows no partitions")?;
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, p)| Part {
            number: i + 1,
            offset: p["start"].as_u64().unwrap_or(0) * sector,
            kind: p["type"].as_str().unwrap_or("").to_uppercase(),
        })
        .collect())
}

/// What the Pi's boot ROM and firmware need: an MBR whose first partition is
/// FAT, holding the boot firmware, config.txt naming a 64-bit kernel that is
/// there, the Pi 3 device tree, and cmdline.txt naming the real root
/// partition by PARTUUID.
fn check_sd_card(
    img: &Path,
    table: &serde_json::Value,
    parts: &[Part],
    raw: &Path,
    dir: &Path,
) -> Result<(), Failed> {
    if table["label"] != "dos" {
        return Err(format!("an SD card for a Pi needs an MBR, not {}", table["label"]).into());
    }
    let fw = &parts[0];
    if fw.kind != "C" && fw.kind != "B" {
        return Err(format!("partition 1 has type {}, not FAT32 (0c)", fw.kind).into());
    }
    for p in parts {
        if p.offset % (4 * MIB) != 0 {
            return Err(format!(
                "partition {} starts at byte {}, not on a 4 MiB boundary",
                p.number, p.offset
            )
            .into());
        }
    }
    let size = std::fs::metadata(img)?.len();
    if size % (4 * MIB) != 0 || size > 4 << 30 {
        return Err(format!(
            "the image is {size} bytes: not a whole number of 4 MiB, or over 4 GiB"
        )
        .into());
    }
    let listing = run_ok(mtools("mdir", &["-b", "::/"], raw, fw.offset))?;
    println!("firmware partition:\n{listing}");
    for f in [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "config.txt",
        "cmdline.txt",
        "bcm2837-rpi-3-b.dtb",
    ] {
        if !listing
            .lines()
            .any(|l| l.trim_start_matches("::/").eq_ignore_ascii_case(f))
        {
            return Err(format!("the firmware partition has no {f}").into());
        }
    }
    let config = fat_file(raw, fw.offset, "config.txt", dir)?;
    let config = std::fs::read_to_string(config)?;
    if !config.lines().any(|l| l.trim() == "arm_64bit=1") {
        return Err(format!("config.txt lacks arm_64bit=1:\n{config}").into());
    }
    let kernel = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("kernel="))
        .ok_or("config.txt names no kernel")?;
    check_kernel_is_arm64(&fat_file(raw, fw.offset, kernel, dir)?)?;
    let cmdline = std::fs::read_to_string(fat_file(raw, fw.offset, "cmdline.txt", dir)?)?;
    let disk_id = table["id"]
        .as_str()
        .ok_or("the MBR has no disk identifier")?;
    let partuuid = format!("{}-{:02x}", disk_id.trim_start_matches("0x"), parts.len());
    if !cmdline
        .split_whitespace()
        .any(|w| w == format!("root=PARTUUID={partuuid}"))
    {
        return Err(
            format!("cmdline.txt does not name root=PARTUUID={partuuid}: {cmdline}").into(),
        );
    }
    println!(
        "config.txt kernel={kernel}; cmdline.txt: {}",
        cmdline.trim()
    );
    Ok(())
}

/// The kernel is an arm64 Image, perhaps gzip-compressed as Debian ships it.
fn check_kernel_is_arm64(kernel: &Path) -> Result<(), Failed> {
    let mut what = run_ok(cmd("file", &["-b"], kernel))?;
    if what.starts_with("gzip") {
        let image = kernel.with_extension("image");
        run_ok({
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("gzip -dc \"$0\" > \"$1\"")
                .arg(kernel)
                .arg(&image);
            c
        })?;
        what = run_ok(cmd("file", &["-b"], &image))?;
    }
    if !what.contains("ARM64") {
        return Err(format!("the kernel is not an arm64 Image: {what}").into());
    }
    println!("kernel: {}", what.trim());
    Ok(())
}

/// GPT with an EFI system partition that holds GRUB at the removable-media
/// path the Arm firmware boots.
fn check_esp(
    t: Target,
    table: &serde_json::Value,
    parts: &[Part],
    raw: &Path,
    dir: &Path,
) -> Result<(), Failed> {
    if table["label"] != "gpt" {
        return Err(format!("an Arm UEFI disk should be GPT, not {}", table["label"]).into());
    }
    let esp = parts
        .iter()
        .find(|p| p.kind == ESP_GUID)
        .ok_or("no EFI system partition")?;
    let (path, machine) = if t == Target::Armhf {
        ("EFI/BOOT/BOOTARM.EFI", "32-bit Arm")
    } else {
        ("EFI/BOOT/BOOTAA64.EFI", "arm64")
    };
    let grub = fat_file(raw, esp.offset, path, dir)?;
    let what = run_ok(cmd("file", &["-b"], &grub))?;
    let arm64 = what.contains("Aarch64") || what.contains("ARM64");
    let ok = if t == Target::Armhf {
        what.contains("ARM") && !arm64
    } else {
        arm64
    };
    if !ok {
        return Err(format!("{path} is not a {machine} EFI program: {what}").into());
    }
    println!("ESP: {path}: {}", what.trim());
    Ok(())
}

/// A PReP boot partition whose first bytes are GRUB's ELF core image, which
/// Open Firmware loads.
fn check_prep(parts: &[Part], raw: &Path) -> Result<(), Failed> {
    use std::io::{Read, Seek};
    let prep = parts
        .iter()
        .find(|p| p.kind == PREP_GUID || p.kind == "41")
        .ok_or("no PReP boot partition")?;
    let mut f = std::fs::File::open(raw)?;
    f.seek(std::io::SeekFrom::Start(prep.offset))?;
    let mut header = [0u8; 20];
    f.read_exact(&mut header)?;
    // GRUB's powerpc-ieee1275 core.elf: 32-bit, big-endian, EM_PPC (20).
    let machine = u16::from_be_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || header[4] != 1 || header[5] != 2 || machine != 20 {
        return Err(format!(
            "the PReP partition does not start with a 32-bit big-endian PowerPC ELF image: {header:02x?}"
        )
        .into());
    }
    println!("PReP partition {}: GRUB's PowerPC ELF image", prep.number);
    Ok(())
}

fn check_bash_machine(t: Target, raw: &Path, root: &Part, dir: &Path) -> Result<(), Failed> {
    let bash = dir.join("bash");
    let _ = std::fs::remove_file(&bash);
    run_ok(debugfs(
        raw,
        root,
        &format!("dump /usr/bin/bash {}", bash.display()),
    ))?;
    let what = run_ok(cmd("file", &["-b"], &bash))?;
    if !t.is_own_elf(&what) {
        return Err(format!(
            "/usr/bin/bash is not a {:?} program: {what}",
            t.elf_machine()
        )
        .into());
    }
    Ok(())
}

/// Every LABEL= or UUID= in /etc/fstab names a filesystem on this disk, of
/// the type fstab says.
fn check_fstab_matches_disk(raw: &Path, root: &Part, parts: &[Part]) -> Result<(), Failed> {
    let fstab = run_ok(debugfs(raw, root, "cat /etc/fstab"))?;
    let found: Vec<String> = parts
        .iter()
        .map(|p| {
            let mut c = Command::new("blkid");
            c.args(["-p", "-o", "export", "-O", &p.offset.to_string()])
                .arg(raw);
            run_ok(c).unwrap_or_default()
        })
        .collect();
    let mut checked = 0;
    for line in fstab.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [spec, mount_point, fstype, ..] = f[..] else {
            continue;
        };
        let Some((key, value)) = spec.split_once('=') else {
            continue;
        };
        let want = format!("{key}={value}\n");
        let hit = found.iter().find(|b| b.contains(&want)).ok_or_else(|| {
            format!("fstab names {spec} for {mount_point}, but no filesystem on the disk has it")
        })?;
        if !hit.contains(&format!("TYPE={fstype}\n")) {
            return Err(
                format!("fstab says {mount_point} is {fstype}, but blkid finds:\n{hit}").into(),
            );
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(format!("/etc/fstab names no filesystem by LABEL= or UUID=:\n{fstab}").into());
    }
    println!("fstab: {checked} entries match the disk");
    Ok(())
}

fn debugfs(raw: &Path, part: &Part, request: &str) -> Command {
    let mut c = Command::new("debugfs");
    c.args(["-R", request])
        .arg(format!("{}?offset={}", raw.display(), part.offset));
    c
}

fn mtools(program: &str, args: &[&str], raw: &Path, offset: u64) -> Command {
    let mut c = Command::new(program);
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", raw.display()))
        .args(args);
    c
}

/// Copies `name` out of the FAT filesystem at `offset` into `dir`.
fn fat_file(raw: &Path, offset: u64, name: &str, dir: &Path) -> Result<PathBuf, Failed> {
    let dest = dir.join(name.rsplit('/').next().unwrap_or(name));
    let mut c = mtools("mcopy", &["-n", &format!("::/{name}")], raw, offset);
    c.arg(&dest);
    run_ok(c)?;
    Ok(dest)
}
