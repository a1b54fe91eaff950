//! The Ironic ramdisk path with diskimage-builder's own elements: one build of
//! `debian-minimal ramdisk baremetal no-final-image` over
//! ELEMENTS_PATH=<ours>:<DIB's>, with a relative `-o` as users type it.
//! - `ramdisk` (ramdisk-base, deploy-tgtadm) builds a busybox initramfs inside
//!   the chroot from $_LIB/ramdisk-functions; ramdisk-base's cleanup.d puts
//!   it beside the image name as `.initramfs` and `.kernel`;
//! - `baremetal` copies the image's own kernel and initrd beside it
//!   (`.vmlinuz`, `.initrd`) through $_LIB/img-functions;
//! - `no-final-image`: no image file is written.
//!
//! The initramfs is checked by listing it (its /init with the init.d
//! snippets, busybox and its applets, the modules of the kernel beside it),
//! then booted under `qemu -kernel/-initrd` to the end of its init: udev,
//! dhcp, "network ready", and, with no deploy instructions on the command
//! line, a reboot that -no-reboot turns into qemu's exit (about 30 s of TCG).

mod common;

use common::{Need, dib_create, trial};
use libtest_mimic::{Arguments, Failed};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args = Arguments::from_args();
    let needs = [
        Need::Root,
        Need::Network("deb.debian.org:80"),
        Need::Tool("cpio"),
        Need::Tool("qemu-system-x86_64"),
        Need::Upstream,
    ];
    let t = trial(
        "ramdisk_and_baremetal_write_kernel_and_initramfs_beside_the_name",
        &needs,
        ramdisk,
    );
    libtest_mimic::run(&args, vec![t]).exit();
}

fn ramdisk() -> Result<(), Failed> {
    let dib_elements = common::upstream::elements_dir()?;
    let work = tempfile::Builder::new()
        .prefix("dib-create-ramdisk-")
        .tempdir_in("/var/tmp")?;
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("elements");
    std::fs::create_dir_all(work.path().join("out"))?;
    let started = Instant::now();
    let mut c = dib_create();
    c.current_dir(work.path())
        .env(
            "ELEMENTS_PATH",
            format!("{}:{}", ours.display(), dib_elements.display()),
        )
        .env("DIB_RELEASE", "bookworm")
        .env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_CREATE_BUILD_ROOT", work.path().join("builds"))
        .args(["-t", "tar", "-o", "out/ir"])
        .args(["debian-minimal", "ramdisk", "baremetal", "no-final-image"]);
    common::run_ok(c)?;
    let secs = started.elapsed().as_secs();
    let out = work.path().join("out");
    let file = |ext: &str| out.join(format!("ir.{ext}"));
    for ext in ["initramfs", "kernel", "vmlinuz", "initrd"] {
        if !file(ext).is_file() {
            return Err(format!("no ir.{ext} beside the relative -o in {}", out.display()).into());
        }
    }
    if file("tar").exists() {
        return Err("no-final-image still wrote ir.tar".into());
    }
    let size = std::fs::metadata(file("initramfs"))?.len() >> 20;
    println!("ramdisk: built in {secs} s; initramfs {size} MiB");
    check_listing(&list_initramfs(&file("initramfs"))?)?;
    boot_to_end_of_init(&file("kernel"), &file("initramfs"))?;
    common::assert_clean(work.path())
}

fn list_initramfs(path: &Path) -> Result<Vec<String>, Failed> {
    let gz = std::fs::File::open(path)?;
    let zcat = Command::new("gzip")
        .args(["-dc"])
        .stdin(gz)
        .stdout(Stdio::piped())
        .spawn()?;
    let o = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(zcat.stdout.expect("piped"))
        .output()?;
    if !o.status.success() {
        return Err(format!("cpio -t failed: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect())
}

fn check_listing(files: &[String]) -> Result<(), Failed> {
    let has = |p: &str| files.iter().any(|f| f == p);
    for want in [
        "init",
        "init-func",
        "bin/busybox",
        "bin/sh",
        "bin/dhclient",
        "bin/udevadm",
    ] {
        if !has(want) {
            return Err(format!("the initramfs lacks {want}").into());
        }
    }
    let modules = files
        .iter()
        .filter(|f| f.starts_with("lib/modules/") && f.ends_with(".ko"))
        .count();
    if modules < 100 {
        return Err(format!("the initramfs has only {modules} kernel modules").into());
    }
    println!("ramdisk: {} files, {modules} modules", files.len());
    Ok(())
}

/// Boots the kernel and initramfs; its init runs to the end (no deploy
/// instructions on the command line: it reboots, and -no-reboot ends qemu).
fn boot_to_end_of_init(kernel: &Path, initramfs: &Path) -> Result<(), Failed> {
    let started = Instant::now();
    let o = Command::new("timeout")
        .args([
            "600",
            "qemu-system-x86_64",
            "-machine",
            "accel=tcg",
            "-m",
            "1536",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 panic=-1",
            "-nographic",
            "-no-reboot",
        ])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .stdin(Stdio::null())
        .output()?;
    let console = String::from_utf8_lossy(&o.stdout);
    for want in ["starting udevd", "network ready", "rebooting"] {
        if !console
            .lines()
            .any(|l| l.trim_end() == want || l.contains(want))
        {
            return Err(format!(
                "the ramdisk's console never said {want:?}:\n{}",
                common::tail(&console, 40)
            )
            .into());
        }
    }
    println!(
        "ramdisk: booted to the end of its init in {} s",
        started.elapsed().as_secs()
    );
    Ok(())
}
