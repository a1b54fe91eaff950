//! Bootable images, proven by booting them:
//! - `debian-minimal vm devuser growroot` for amd64, once for BIOS
//!   (block-device-mbr) and once for UEFI (block-device-efi);
//! - the same for arm64, built on this host through qemu-user, where `vm`
//!   picks block-device-efi and GRUB for arm64-efi, booted in
//!   `qemu-system-aarch64 -M virt` with the AAVMF firmware (built, inspected
//!   and booted by scripts/test-long, `--ignored`: emulated arm64 is slow);
//! - `debian-minimal rpi3 devuser` for a Raspberry Pi 3, booted in
//!   `qemu-system-aarch64 -M raspi3b` from its own firmware partition;
//! - `debian-minimal vm devuser growroot` for i386 (BIOS on MBR, built
//!   natively through the kernel's IA-32 emulation), armhf (GRUB arm-efi,
//!   `qemu-system-arm -M virt` with the 32-bit AAVMF) and ppc64el (GRUB in a
//!   PReP partition, `qemu-system-ppc64 -M pseries`), each also written as a
//!   tar whose programs must all be of the target's machine (armhf and
//!   ppc64el are emulated: scripts/test-long).
//!
//! The BIOS image is built with `dib-create --boot-test`, which boots it to
//! the login prompt; in CI that is its only boot (the full boot below runs in
//! scripts/test-long).
//!
//! Each boot goes through dib-boot-test, the program behind scripts/boot-test
//! (TCG unless KVM passes its timer probe; see src/boot/accel.rs): the
//! login prompt within the timeout, a login as the development user on the
//! serial console, root mounted from the filesystem that /etc/fstab names, and
//! growroot filling a disk larger than the image, all in one boot per image.
//! The images of other architectures than amd64 are also inspected without
//! booting: partition table, FAT contents (mtools), the ESP's GRUB, the PReP
//! partition, the Pi's kernel, the ELF machine of /usr/bin/bash, fstab
//! against blkid.
//!
//! Each image is built by the first test that needs it and shared by the
//! others; builds never run at the same time. Measurements (build time, image
//! size, time to login) are printed.

mod common;
mod inspect;

use common::{Need, dib_create, run_ok, trial};
use libtest_mimic::{Arguments, Failed};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The whole boot test, from qemu's start to the last command. TCG reaches
/// an amd64 login prompt in about 65 s; emulated arm64 is several times
/// slower. This leaves room for a busy host.
const BOOT_TIMEOUT_S: u32 = 420;
const EMULATED_BOOT_TIMEOUT_S: u32 = 1200;
const USER: &str = "devuser";
const PASSWORD: &str = "dib-create-test";

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Bios,
    Uefi,
    Arm64Uefi,
    Rpi3,
    /// i386 `vm` (BIOS on MBR), built natively through IA-32 emulation.
    I386,
    /// armhf `vm` (UEFI on GPT, grub-efi-arm), built through qemu-user.
    Armhf,
    /// ppc64el `vm` (a PReP partition, grub-ieee1275), through qemu-user.
    Ppc64el,
}

const TARGETS: [Target; 7] = [
    Target::Bios,
    Target::Uefi,
    Target::Arm64Uefi,
    Target::Rpi3,
    Target::I386,
    Target::Armhf,
    Target::Ppc64el,
];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bios => "bios_mbr",
            Target::Uefi => "uefi",
            Target::Arm64Uefi => "arm64_uefi",
            Target::Rpi3 => "rpi3",
            Target::I386 => "i386",
            Target::Armhf => "armhf",
            Target::Ppc64el => "ppc64el",
        }
    }
    fn arch(self) -> &'static str {
        match self {
            Target::Bios | Target::Uefi => "amd64",
            Target::Arm64Uefi | Target::Rpi3 => "arm64",
            Target::I386 => "i386",
            Target::Armhf => "armhf",
            Target::Ppc64el => "ppc64el",
        }
    }
    /// Built through qemu-user on this (amd64) host.
    fn emulated(self) -> bool {
        !matches!(self.arch(), "amd64" | "i386")
    }
    /// The elements after debian-minimal. Outside amd64, `vm` chooses the
    /// layout (the architecture table's `vm_layout`).
    fn elements(self) -> &'static [&'static str] {
        match self {
            Target::Bios => &["vm", "devuser", "growroot", "block-device-mbr"],
            Target::Uefi => &["vm", "devuser", "growroot", "block-device-efi"],
            Target::Rpi3 => &["rpi3", "devuser"],
            _ => &["vm", "devuser", "growroot"],
        }
    }
    /// An SD card is written raw; virtual machines take qcow2. The images of
    /// the newer architectures come with a tar of the same tree, checked for
    /// leftovers and for the machine type of its programs.
    fn formats(self) -> &'static str {
        match self {
            Target::Rpi3 => "raw",
            Target::I386 | Target::Armhf | Target::Ppc64el => "qcow2,tar",
            _ => "qcow2",
        }
    }
    fn format(self) -> &'static str {
        if self == Target::Rpi3 { "raw" } else { "qcow2" }
    }
    fn boot_args(self) -> &'static [&'static str] {
        match self {
            Target::Bios | Target::I386 => &[],
            Target::Uefi => &["--uefi"],
            Target::Arm64Uefi => &["--arch", "aarch64"],
            Target::Rpi3 => &["--machine", "raspi3b"],
            Target::Armhf => &["--arch", "arm"],
            Target::Ppc64el => &["--arch", "ppc64"],
        }
    }
    fn boot_timeout(self) -> u32 {
        if self.emulated() {
            EMULATED_BOOT_TIMEOUT_S
        } else {
            BOOT_TIMEOUT_S
        }
    }
    /// What `file` says of the target's programs (newer file(1) magic says
    /// "Intel i386" where bookworm's says "Intel 80386").
    fn elf_machine(self) -> &'static [&'static str] {
        match self.arch() {
            "amd64" => &["x86-64"],
            "arm64" => &["ARM aarch64"],
            "i386" => &["Intel 80386", "Intel i386"],
            "armhf" => &["ARM, EABI5"],
            _ => &["64-bit PowerPC"],
        }
    }
    /// True when `file`'s description is of a program of this target.
    fn is_own_elf(self, what: &str) -> bool {
        self.elf_machine().iter().any(|m| what.contains(m))
    }
    /// `uname -m` in the booted machine.
    fn uname(self) -> &'static str {
        dib::arch::Arch::parse(self.arch()).map_or("", |a| a.uname)
    }
    /// The disk device inside the booted machine.
    fn disk(self) -> &'static str {
        if self == Target::Rpi3 {
            "/dev/mmcblk0"
        } else {
            "/dev/vda"
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

/// The image for a target, built on first use; the error is shared too.
fn image(t: Target) -> Result<PathBuf, Failed> {
    static CELLS: [OnceLock<Result<PathBuf, String>>; TARGETS.len()] =
        [const { OnceLock::new() }; TARGETS.len()];
    CELLS[t as usize]
        .get_or_init(|| build(t).map_err(|e| e.message().unwrap_or("build failed").to_string()))
        .clone()
        .map_err(|e| format!("building the {} image failed:\n{e}", t.name()).into())
}

fn build(t: Target) -> Result<PathBuf, Failed> {
    // To iterate on the checks without rebuilding: an image built earlier.
    let reuse = format!("DIB_CREATE_VM_TEST_IMAGE_{}", t.name().to_uppercase());
    if let Some(img) = std::env::var_os(&reuse) {
        println!("{reuse}: using {}", Path::new(&img).display());
        return Ok(PathBuf::from(img));
    }
    let _serial = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = workdir();
    let out = dir.join(format!("debian-{}", t.name()));
    let started = Instant::now();
    let mut c = dib_create();
    c.env("DIB_RELEASE", "bookworm")
        .env("DIB_CREATE_BUILD_ROOT", dir.join("builds"))
        .env("DIB_CREATE_NO_NAMESPACE", "1")
        .env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_DEV_USER_PASSWORD", PASSWORD)
        .env("DIB_DEV_USER_PWDLESS_SUDO", "yes")
        .env_remove("DIB_DEV_USER_USERNAME");
    if t.arch() == "arm64" {
        // Both arm64 images bootstrap the same root (rpi3 needs the
        // non-free-firmware component, so the vm build asks for it too):
        // the second build unpacks the first one's cached bootstrap.
        c.env("DIB_DEBIAN_COMPONENTS", "main,non-free-firmware")
            .env("DIB_DEBOOTSTRAP_CACHE", "1")
            .env("DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE", "1");
    }
    if t == Target::Bios {
        // `dib-create --boot-test`: the build ends with a boot to the login
        // prompt (BIOS, as the layout has no ESP, `--accel auto`).
        c.args(["--boot-test", &BOOT_TIMEOUT_S.to_string()]);
    }
    c.args(["-a", t.arch(), "-t", t.formats(), "-o"])
        .arg(&out)
        .arg("debian-minimal")
        .args(t.elements());
    let o = c.output()?;
    let log = String::from_utf8_lossy(&o.stderr);
    // The report test compares the report with what the log says ran.
    std::fs::write(out.with_extension("log"), log.as_bytes())?;
    if !o.status.success() {
        return Err(format!(
            "building {} failed ({}):\n{}",
            t.name(),
            o.status,
            common::tail(&log, 60)
        )
        .into());
    }
    // i386 runs natively here (IA-32 emulation): no qemu-user, and so no
    // native tools bound in for mkinitramfs either.
    if t == Target::I386
        && (!log.contains("i386 programs run natively") || log.contains("native tools for"))
    {
        return Err(format!(
            "the i386 build did not run natively:\n{}",
            common::tail(&log, 30)
        )
        .into());
    }
    if t == Target::Bios && !log.contains("boot test: login prompt after") {
        return Err(format!(
            "--boot-test did not report the login prompt:\n{}",
            common::tail(&log, 30)
        )
        .into());
    }
    let img = out.with_extension(t.format());
    let size = std::fs::metadata(&img)?.len();
    println!(
        "built {} debian-minimal {} in {:.0} s: {} ({:.0} MiB {}, virtual {} MiB)",
        t.arch(),
        t.elements().join(" "),
        started.elapsed().as_secs_f64(),
        img.display(),
        size as f64 / 1048576.0,
        t.format(),
        virtual_size(&img)? >> 20
    );
    common::assert_clean(dir)?;
    Ok(img)
}

/// The report the UEFI build left beside its image (`<output>.report.html`,
/// the default): a hook bar for each hook the log says ran, the GPT
/// partitions drawn to scale, the image's packages, and a screenshot in Chromium.
fn report_shows_the_build(t: Target) -> Result<(), Failed> {
    let img = image(t)?;
    let out = img.with_extension("");
    let html = std::fs::read_to_string(format!("{}.report.html", out.display()))?;
    let log = std::fs::read_to_string(out.with_extension("log")).unwrap_or_default();
    let ran = log.lines().filter(|l| is_hook_start(l)).count();
    let bars = html.matches("<rect class=\"bar hook\"").count();
    if ran == 0 || bars != ran {
        return Err(format!("{bars} hook bars in the report, {ran} hooks in the log").into());
    }
    check_partitions_to_scale(&html, virtual_size(&img)?)?;
    for must in [
        "linux-image-",
        "systemd",
        "debian-minimal",
        &img.display().to_string(),
    ] {
        if !html.contains(must) {
            return Err(format!("the report does not mention {must}").into());
        }
    }
    let scratch = workdir().join(format!("{}-report", t.name()));
    std::fs::create_dir_all(&scratch)?;
    let png = common::chromium::photograph(&html, &scratch)?;
    if let Some(keep) = std::env::var_os("DIB_CREATE_VM_REPORT_SCREENSHOT") {
        std::fs::write(&keep, &png)?;
    }
    println!(
        "report of the {} build: {} KiB of HTML, a {} KiB screenshot",
        t.name(),
        html.len() >> 10,
        png.len() >> 10
    );
    Ok(())
}

/// `   12.3s ==> install.d/50-foo (element)`: the line a hook start prints.
fn is_hook_start(line: &str) -> bool {
    let Some((_, rest)) = line.split_once("==> ") else {
        return false;
    };
    let Some((path, element)) = rest.split_once(' ') else {
        return false;
    };
    let phase = path.split('/').next().unwrap_or("");
    phase.ends_with(".d")
        && path.contains('/')
        && element.starts_with('(')
        && element.ends_with(')')
}

/// Each partition's width on the drawing is its share of the disk.
fn check_partitions_to_scale(html: &str, disk_bytes: u64) -> Result<(), Failed> {
    let parts: Vec<(u64, f64)> = html
        .split("<rect class=\"partition\" ")
        .skip(1)
        .map(|r| Ok((attr(r, "data-bytes")?.parse()?, attr(r, "width")?.parse()?)))
        .collect::<Result<_, Failed>>()?;
    if parts.len() < 2 {
        return Err(format!("{} partitions drawn", parts.len()).into());
    }
    let total: u64 = parts.iter().map(|p| p.0).sum();
    if total > disk_bytes || total < disk_bytes * 9 / 10 {
        return Err(format!("partitions of {total} bytes on a disk of {disk_bytes}").into());
    }
    let (big_bytes, big_width) = *parts.iter().max_by_key(|p| p.0).ok_or("no partitions")?;
    let px_per_byte = big_width / big_bytes as f64;
    for (bytes, width) in &parts {
        let want = *bytes as f64 * px_per_byte;
        if (width - want).abs() > 1.0 {
            return Err(
                format!("a partition of {bytes} bytes is {width} px wide, not {want:.1}").into(),
            );
        }
    }
    Ok(())
}

fn attr<'a>(tag: &'a str, name: &str) -> Result<&'a str, Failed> {
    let start = tag
        .find(&format!("{name}=\""))
        .ok_or(format!("no {name} in {}", &tag[..tag.len().min(200)]))?
        + name.len()
        + 2;
    let len = tag[start..].find('"').ok_or("unterminated attribute")?;
    Ok(&tag[start..start + len])
}

fn virtual_size(img: &Path) -> Result<u64, Failed> {
    let mut c = Command::new("qemu-img");
    c.args(["info", "--output=json"]).arg(img);
    let v: serde_json::Value = serde_json::from_str(&run_ok(c)?)?;
    v["virtual-size"]
        .as_u64()
        .ok_or_else(|| "qemu-img info gave no virtual-size".into())
}

/// Runs dib-boot-test (what scripts/boot-test runs, built with this test);
/// returns its JSON result (commands and outputs).
fn boot(
    t: Target,
    img: &Path,
    resize: Option<&str>,
    cmds: &[&str],
) -> Result<serde_json::Value, Failed> {
    let script = Path::new(env!("CARGO_BIN_EXE_dib-boot-test"));
    let json = workdir().join(format!(
        "{}-{}.json",
        t.name(),
        if resize.is_some() { "resized" } else { "plain" }
    ));
    let mut c = Command::new(script);
    c.arg(img)
        .args(["--timeout", &t.boot_timeout().to_string()])
        .args(["--login", &format!("{USER}:{PASSWORD}")])
        .arg("--json")
        .arg(&json)
        .args(t.boot_args());
    if let Ok(accel) = std::env::var("DIB_CREATE_BOOT_ACCEL")
        && !t.emulated()
    {
        c.args(["--accel", &accel]);
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
        t.name(),
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

/// Commands for the login check, and the mount point of the FAT partition
/// the target has, if any.
fn login_commands(t: Target) -> (Vec<&'static str>, Option<&'static str>) {
    let mut cmds = vec![FINDMNT, FSTAB, "findmnt -n -o OPTIONS /", "id -un", UNAME];
    let fat = match t {
        Target::Bios | Target::I386 | Target::Ppc64el => None,
        Target::Uefi | Target::Arm64Uefi | Target::Armhf => {
            cmds.extend([ESP_TYPE, "ls /boot/efi/EFI/BOOT"]);
            Some(ESP_TYPE)
        }
        Target::Rpi3 => {
            cmds.extend([FIRMWARE_TYPE, "ls /boot/firmware"]);
            Some(FIRMWARE_TYPE)
        }
    };
    (cmds, fat)
}

const ESP_TYPE: &str = "findmnt -n -o FSTYPE /boot/efi";
const UNAME: &str = "uname -m";
const FIRMWARE_TYPE: &str = "findmnt -n -o FSTYPE /boot/firmware";

fn check_logged_in(t: Target, v: &serde_json::Value) -> Result<(), Failed> {
    if output_of(v, "id -un")?.trim() != USER {
        return Err(format!("logged in as {:?}, not {USER}", output_of(v, "id -un")?).into());
    }
    if output_of(v, UNAME)?.trim() != t.uname() {
        return Err(format!(
            "uname -m says {:?}, not {}",
            output_of(v, UNAME)?,
            t.uname()
        )
        .into());
    }
    check_root_matches_fstab(output_of(v, FINDMNT)?, output_of(v, FSTAB)?)?;
    let opts = output_of(v, "findmnt -n -o OPTIONS /")?;
    if !opts.split(',').any(|o| o.trim() == "rw") {
        return Err(format!("/ is not mounted read-write: {opts}").into());
    }
    // The FAT partition, filled without mounting FAT on the build host,
    // mounts here.
    if let (_, Some(fat)) = login_commands(t)
        && output_of(v, fat)?.trim() != "vfat"
    {
        return Err(format!("`{fat}` says {:?}, not vfat", output_of(v, fat)?).into());
    }
    Ok(())
}

/// One boot, of a copy enlarged by 1 GiB, checks both the login (as devuser,
/// / mounted read-write from the filesystem that fstab names) and growroot:
/// every boot under TCG costs a minute or more, so each target boots once.
fn boots_logs_in_and_grows(t: Target) -> Result<(), Failed> {
    let img = image(t)?;
    let before = virtual_size(&img)?;
    let (mut cmds, _) = login_commands(t);
    let grow = grow_commands(t);
    cmds.extend(grow.iter().map(String::as_str));
    let v = boot(t, &img, Some("+1G"), &cmds)?;
    check_logged_in(t, &v)?;
    check_grown(t, &v, before)
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
const DF: &str = "df -B1 --output=size / | tail -n 1";

fn grow_commands(t: Target) -> Vec<String> {
    vec![
        DF.to_string(),
        format!("lsblk -b -n -d -o SIZE {}", t.disk()),
        PART.to_string(),
        format!("lsblk -o NAME,SIZE,TYPE,MOUNTPOINTS {}", t.disk()),
        "sudo journalctl -b -u dib-growroot --no-pager -o cat".to_string(),
    ]
}

/// growroot must have grown / beyond the original disk's whole size, on a
/// partition that reaches the disk's end.
fn check_grown(t: Target, v: &serde_json::Value, before: u64) -> Result<(), Failed> {
    let fs: u64 = output_of(v, DF)?.trim().parse()?;
    let disk_cmd = format!("lsblk -b -n -d -o SIZE {}", t.disk());
    let disk_size: u64 = output_of(v, &disk_cmd)?.trim().parse()?;
    // An SD card for qemu's raspi3b is further enlarged to a power of two.
    let exact = t != Target::Rpi3;
    if (exact && disk_size != before + (1 << 30)) || disk_size < before + (1 << 30) {
        return Err(format!(
            "the disk is {disk_size} bytes, expected {}{}",
            if exact { "" } else { "at least " },
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
        let t = output_of(v, PART)?;
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
        t.name(),
        fs >> 20,
        disk_size >> 20,
        before >> 20
    );
    Ok(())
}

/// The tar of the image's tree holds nothing of the build's, and every
/// program in /usr/bin and /usr/sbin is of the target's machine.
fn tree_is_clean_and_of_its_machine(t: Target) -> Result<(), Failed> {
    let tar = image(t)?.with_extension("tar");
    common::no_build_leftovers(&tar)?;
    let dir = workdir().join(format!("{}-tree", t.name()));
    std::fs::create_dir_all(&dir)?;
    let mut c = Command::new("tar");
    c.arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .args(["./usr/bin", "./usr/sbin"]);
    run_ok(c)?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("find \"$0\"/usr/bin \"$0\"/usr/sbin -type f -exec file -b {} +")
        .arg(&dir);
    let out = run_ok(c)?;
    let elf: Vec<&str> = out.lines().filter(|l| l.starts_with("ELF")).collect();
    let foreign: Vec<&&str> = elf.iter().filter(|l| !t.is_own_elf(l)).collect();
    std::fs::remove_dir_all(&dir)?;
    if elf.len() < 100 || !foreign.is_empty() {
        return Err(format!(
            "{} ELF programs in /usr/bin and /usr/sbin; not {:?}: {foreign:?}",
            elf.len(),
            t.elf_machine()
        )
        .into());
    }
    println!(
        "{}: {} ELF programs, all {:?}; no build leftovers",
        t.name(),
        elf.len(),
        t.elf_machine()
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let base = vec![
        Need::Root,
        Need::LoopDevices,
        Need::Tool("file"),
        Need::Tool("sfdisk"),
        Need::Tool("mmdebstrap"),
        Need::Tool("mkfs.vfat"),
        Need::Tool("mcopy"),
        Need::Tool("qemu-img"),
        Need::Tool("python3"),
        Need::Network("deb.debian.org:80"),
    ];
    let needs = |t: Target| -> Vec<Need> {
        let mut n = base.clone();
        match t {
            Target::Bios => n.push(Need::Tool("qemu-system-x86_64")),
            Target::Uefi => n.extend([
                Need::Tool("qemu-system-x86_64"),
                Need::File("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            ]),
            Target::Arm64Uefi => n.extend([
                Need::ForeignArch("arm64"),
                Need::Tool("qemu-system-aarch64"),
                Need::File("/usr/share/AAVMF/AAVMF_CODE.fd"),
            ]),
            Target::Rpi3 => n.extend([
                Need::ForeignArch("arm64"),
                Need::Tool("qemu-system-aarch64"),
                Need::Tool("debugfs"),
            ]),
            Target::I386 => n.extend([
                Need::Tool("qemu-system-x86_64"),
                Need::Tool("arch-test"),
                Need::Tool("debugfs"),
            ]),
            Target::Armhf => n.extend([
                Need::ForeignArch("armhf"),
                Need::Tool("qemu-system-arm"),
                Need::File("/usr/share/AAVMF/AAVMF32_CODE.fd"),
                Need::Tool("debugfs"),
            ]),
            Target::Ppc64el => n.extend([
                Need::ForeignArch("ppc64el"),
                Need::Tool("qemu-system-ppc64"),
                Need::File("/usr/share/qemu/slof.bin"),
                Need::Tool("debugfs"),
            ]),
        }
        n
    };
    let mut report = needs(Target::Uefi);
    report.push(Need::Installed(
        "chromium-headless-shell",
        "scripts/install-deps",
    ));
    let mut tests = vec![trial("uefi_report_shows_the_build", &report, move || {
        report_shows_the_build(Target::Uefi)
    })];
    // Emulated architectures take many minutes per build and boot: CI
    // builds, inspects and boots the Raspberry Pi image; the arm64, armhf
    // and ppc64el vm images (each its own bootstrap under qemu-user) are
    // built, inspected and booted in scripts/test-long (--ignored). i386
    // runs natively, so its image is in CI.
    for t in TARGETS {
        let mut trials = vec![trial(
            &format!("{}_boots_logs_in_and_grows", t.name()),
            &needs(t),
            move || boots_logs_in_and_grows(t),
        )];
        if t.formats().contains("tar") {
            trials.push(trial(
                &format!("{}_tree_is_clean_and_of_its_machine", t.name()),
                &needs(t),
                move || tree_is_clean_and_of_its_machine(t),
            ));
        }
        if t.arch() != "amd64" {
            trials.push(trial(
                &format!("{}_image_inspected", t.name()),
                &needs(t),
                move || {
                    inspect::image(
                        t,
                        &image(t)?,
                        &workdir().join(format!("{}-inspect", t.name())),
                    )
                },
            ));
        }
        // For CI's time, the BIOS image is booted once there, by the
        // build's own --boot-test (to the login prompt); the login and
        // growroot checks run on the UEFI image (GPT) and the Raspberry Pi
        // card (MBR), and on this one in scripts/test-long.
        let in_ci = !matches!(
            t,
            Target::Arm64Uefi | Target::Bios | Target::Armhf | Target::Ppc64el
        );
        tests.extend(trials.into_iter().map(|x| x.with_ignored_flag(!in_ci)));
    }
    tests.push(trial(
        "bios_mbr_boot_tested_by_the_build",
        &needs(Target::Bios),
        || image(Target::Bios).map(|_| ()),
    ));
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
