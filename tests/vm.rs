//! Bootable images, proven by booting them: `debian-minimal vm devuser
//! growroot` built once for BIOS (block-device-mbr) and once for UEFI
//! (block-device-efi), each then booted with scripts/boot-test in qemu (TCG
//! unless KVM answers): the login prompt within LOGIN_TIMEOUT, a login as the
//! development user on the serial console, root mounted from the filesystem
//! that /etc/fstab names, and growroot filling a copy enlarged by 1 GiB.
//!
//! Each image is built by the first test that needs it and shared by the
//! others; builds never run at the same time. Measurements (build time, image
//! size, time to login) are printed.

mod common;

use common::{Need, dib_create, run_ok, trial};
use libtest_mimic::{Arguments, Failed};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The whole boot test, from qemu's start to the last command (TCG here
/// reaches the login prompt in about 65 s; this leaves room for a busy host).
const BOOT_TIMEOUT_S: u32 = 420;
const USER: &str = "devuser";
const PASSWORD: &str = "dib-create-test";

#[derive(Clone, Copy, PartialEq)]
enum Firmware {
    Bios,
    Uefi,
}

impl Firmware {
    fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios_mbr",
            Firmware::Uefi => "uefi",
        }
    }
    fn layout(self) -> &'static str {
        match self {
            Firmware::Bios => "block-device-mbr",
            Firmware::Uefi => "block-device-efi",
        }
    }
}

fn workdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("dib-create-vm-")
            .tempdir_in("/var/tmp")
            .expect("tempdir")
            .keep()
    })
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The image for a firmware, built on first use; the error is shared too.
fn image(fw: Firmware) -> Result<PathBuf, Failed> {
    static BIOS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static UEFI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cell = match fw {
        Firmware::Bios => &BIOS,
        Firmware::Uefi => &UEFI,
    };
    cell.get_or_init(|| build(fw).map_err(|e| e.message().unwrap_or("build failed").to_string()))
        .clone()
        .map_err(|e| format!("building the {} image failed:\n{e}", fw.name()).into())
}

fn build(fw: Firmware) -> Result<PathBuf, Failed> {
    let _serial = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workdir();
    let out = dir.join(format!("debian-{}", fw.name()));
    let started = Instant::now();
    let mut c = dib_create();
    c.env("DIB_RELEASE", "bookworm")
        .env("DIB_CREATE_BUILD_ROOT", dir.join("builds"))
        .env("DIB_CREATE_NO_NAMESPACE", "1")
        .env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_DEV_USER_PASSWORD", PASSWORD)
        .env("DIB_DEV_USER_PWDLESS_SUDO", "yes")
        .env_remove("DIB_DEV_USER_USERNAME")
        .args(["-t", "qcow2", "-o"])
        .arg(&out)
        .args(["debian-minimal", "vm", "devuser", "growroot", fw.layout()]);
    run_ok(c)?;
    let qcow2 = out.with_extension("qcow2");
    let size = std::fs::metadata(&qcow2)?.len();
    println!(
        "built debian-minimal vm devuser growroot {} in {:.0} s: {} ({:.0} MiB qcow2, virtual {} MiB)",
        fw.layout(),
        started.elapsed().as_secs_f64(),
        qcow2.display(),
        size as f64 / 1048576.0,
        virtual_size(&qcow2)? >> 20
    );
    common::assert_clean(dir)?;
    Ok(qcow2)
}

fn virtual_size(img: &Path) -> Result<u64, Failed> {
    let mut c = Command::new("qemu-img");
    c.args(["info", "--output=json"]).arg(img);
    let v: serde_json::Value = serde_json::from_str(&run_ok(c)?)?;
    v["virtual-size"]
        .as_u64()
        .ok_or_else(|| "qemu-img info gave no virtual-size".into())
}

/// Runs scripts/boot-test; returns its JSON result (commands and outputs).
fn boot(
    fw: Firmware,
    img: &Path,
    resize: Option<&str>,
    cmds: &[&str],
) -> Result<serde_json::Value, Failed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/boot-test");
    let json = workdir().join(format!(
        "{}-{}.json",
        fw.name(),
        if resize.is_some() { "resized" } else { "plain" }
    ));
    let mut c = Command::new(&script);
    c.arg(img)
        .args(["--timeout", &BOOT_TIMEOUT_S.to_string()])
        .args(["--login", &format!("{USER}:{PASSWORD}")])
        .arg("--json")
        .arg(&json);
    if let Ok(accel) = std::env::var("DIB_CREATE_BOOT_ACCEL") {
        c.args(["--accel", &accel]);
    }
    if fw == Firmware::Uefi {
        c.arg("--uefi");
    }
    if let Some(r) = resize {
        c.args(["--resize", r]);
    }
    for cmd in cmds {
        c.args(["--run", cmd]);
    }
    let out = c
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        return Err(format!(
            "boot-test failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    println!(
        "{}: login prompt after {} s",
        fw.name(),
        v["login_seconds"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(v)
}

fn output_of<'a>(v: &'a serde_json::Value, cmd: &str) -> Result<&'a str, Failed> {
    v["commands"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["command"] == cmd))
        .and_then(|r| r["output"].as_str())
        .ok_or_else(|| format!("no output of `{cmd}` in the boot-test result").into())
}

const FINDMNT: &str = "findmnt -n -o SOURCE,FSTYPE,LABEL,UUID /";
const FSTAB: &str = "cat /etc/fstab";

/// Boots the image, logs in as devuser and checks that / is the filesystem
/// that fstab names (by label or UUID), mounted read-write.
fn boots_and_logs_in(fw: Firmware) -> Result<(), Failed> {
    let img = image(fw)?;
    let esp = "findmnt -n -o FSTYPE /boot/efi";
    let mut cmds = vec![FINDMNT, FSTAB, "findmnt -n -o OPTIONS /", "id -un"];
    if fw == Firmware::Uefi {
        cmds.extend([esp, "ls /boot/efi/EFI/BOOT"]);
    }
    let v = boot(fw, &img, None, &cmds)?;
    if output_of(&v, "id -un")?.trim() != USER {
        return Err(format!("logged in as {:?}, not {USER}", output_of(&v, "id -un")?).into());
    }
    check_root_matches_fstab(output_of(&v, FINDMNT)?, output_of(&v, FSTAB)?)?;
    let opts = output_of(&v, "findmnt -n -o OPTIONS /")?;
    if !opts.split(',').any(|o| o.trim() == "rw") {
        return Err(format!("/ is not mounted read-write: {opts}").into());
    }
    // The ESP, filled without mounting FAT on the build host, mounts here.
    if fw == Firmware::Uefi && output_of(&v, esp)?.trim() != "vfat" {
        return Err(format!("/boot/efi is not the vfat ESP: {:?}", output_of(&v, esp)?).into());
    }
    Ok(())
}

fn check_root_matches_fstab(findmnt: &str, fstab: &str) -> Result<(), Failed> {
    let fields: Vec<&str> = findmnt.split_whitespace().collect();
    let [source, fstype, label, uuid] = fields[..] else {
        return Err(format!("unexpected findmnt output: {findmnt:?}").into());
    };
    let spec = fstab
        .lines()
        .map(str::split_whitespace)
        .filter_map(|mut f| Some((f.next()?, f.next()?)))
        .find(|(s, mp)| *mp == "/" && !s.starts_with('#'))
        .map(|(s, _)| s)
        .ok_or_else(|| format!("/etc/fstab has no entry for /:\n{fstab}"))?;
    let ok = match spec.split_once('=') {
        Some(("LABEL", l)) => l == label,
        Some(("UUID", u)) => u.eq_ignore_ascii_case(uuid),
        _ => spec == source,
    };
    if !ok {
        return Err(format!(
            "/ is {source} ({fstype}, label {label}, UUID {uuid}), but /etc/fstab names {spec}"
        )
        .into());
    }
    println!("root: {source} {fstype} label={label} uuid={uuid}, fstab: {spec}");
    Ok(())
}

/// Start and size (sectors) of the partition that holds /.
const PART: &str = "p=$(basename $(readlink -f $(findmnt -n -o SOURCE /))); cat /sys/class/block/$p/start /sys/class/block/$p/size";

/// Boots a copy enlarged by 1 GiB: growroot must have grown / beyond the
/// original disk's whole size, on a partition that reaches the disk's end.
fn growroot_fills_enlarged_disk(fw: Firmware) -> Result<(), Failed> {
    let img = image(fw)?;
    let before = virtual_size(&img)?;
    let df = "df -B1 --output=size / | tail -n 1";
    let disk = "lsblk -b -n -d -o SIZE /dev/vda";
    let v = boot(
        fw,
        &img,
        Some("+1G"),
        &[
            df,
            disk,
            PART,
            "lsblk -o NAME,SIZE,TYPE,MOUNTPOINTS /dev/vda",
            "sudo journalctl -b -u dib-growroot --no-pager -o cat",
        ],
    )?;
    let fs: u64 = output_of(&v, df)?.trim().parse()?;
    let disk_size: u64 = output_of(&v, disk)?.trim().parse()?;
    if disk_size != before + (1 << 30) {
        return Err(format!(
            "the disk is {disk_size} bytes, expected {}",
            before + (1 << 30)
        )
        .into());
    }
    if fs <= before {
        return Err(format!(
            "root was not grown: the filesystem has {fs} bytes, the disk had {before} before it was enlarged"
        )
        .into());
    }
    // growpart moved the end of the root partition to the end of the disk
    // (a GPT keeps its 33-sector backup table there).
    let (start, sectors): (u64, u64) = {
        let t = output_of(&v, PART)?;
        let mut it = t.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => (a, b),
            _ => return Err(format!("unexpected partition extent {t:?}").into()),
        }
    };
    let end = (start + sectors) * 512;
    if end + (1 << 20) < disk_size {
        return Err(format!(
            "the root partition ends at byte {end} of a {disk_size}-byte disk: not grown to the end"
        )
        .into());
    }
    println!(
        "{}: root grew to {} MiB on a {} MiB disk (was {} MiB)",
        fw.name(),
        fs >> 20,
        disk_size >> 20,
        before >> 20
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut needs = vec![
        Need::Root,
        Need::LoopDevices,
        Need::Tool("mmdebstrap"),
        Need::Tool("mkfs.vfat"),
        Need::Tool("mcopy"),
        Need::Tool("qemu-img"),
        Need::Tool("qemu-system-x86_64"),
        Need::Tool("python3"),
        Need::Network("deb.debian.org:80"),
    ];
    let bios = needs.clone();
    needs.push(Need::File("/usr/share/OVMF/OVMF_CODE_4M.fd"));
    let uefi = needs;
    let mut tests = Vec::new();
    for (fw, needs) in [(Firmware::Bios, bios), (Firmware::Uefi, uefi)] {
        tests.push(trial(
            &format!("{}_boots_and_logs_in", fw.name()),
            &needs,
            move || boots_and_logs_in(fw),
        ));
        tests.push(trial(
            &format!("{}_growroot_fills_enlarged_disk", fw.name()),
            &needs,
            move || growroot_fills_enlarged_disk(fw),
        ));
    }
    let conclusion = libtest_mimic::run(&args, tests);
    let dir = workdir();
    let leftovers = common::assert_clean(dir);
    if leftovers.is_ok() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("vm tests: {leftovers:?}; keeping {}", dir.display());
    }
    conclusion.exit();
}
