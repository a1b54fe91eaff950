//! Reproducible outputs: with SOURCE_DATE_EPOCH set, two builds in different
//! build directories give identical bytes.
//!
//! - The fake OS (a tree of the host's own tools, no package manager) must be
//!   bit-identical in every format: tar, raw, qcow2, docker, oci, tar.zst and
//!   raw.zst (which must also decompress to the tar and the raw). This fails
//!   CI when it breaks. So must an LVM layout on the fake OS (raw).
//! - debian-minimal (tar, raw, qcow2, the kernel's initrd included) must be
//!   bit-identical too. An output type listed in `DEBIAN_KNOWN_GAPS` may still
//!   differ: the test then prints the differing files as a KNOWN GAP (issue 7
//!   stays open for it) and passes. Any other difference fails, with the same
//!   listing.

mod common;
mod rawdiff;

use common::{Need, Scratch, run_ok, sha256, trial};
use libtest_mimic::{Arguments, Failed};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";

/// debian-minimal outputs that may still differ between two builds (none
/// now). Causes fixed so far: the iSCSI initiator name and the host-probed
/// fsck in the initrd, access times and escaped names' ctimes in ext4, the
/// image size (now measured from the tree's content, no longer from `du`),
/// and ext4's lifetime write count, which differed when one root came fresh
/// from mmdebstrap and the other from the bootstrap cache. The test builds
/// exactly that pair, so that case is checked on every run. If a gap comes
/// back, the report below names the differing blocks, partitions and inodes
/// (`rawdiff`).
const DEBIAN_KNOWN_GAPS: &[&str] = &[];

fn main() {
    let args = Arguments::from_args();
    let fast = [
        Need::Root,
        Need::LoopDevices,
        Need::Tool("mkfs.vfat"),
        Need::Tool("debugfs"),
    ];
    let real = [
        Need::Root,
        Need::LoopDevices,
        Need::Tool("mmdebstrap"),
        Need::Network("deb.debian.org:80"),
    ];
    let tests = vec![
        trial(
            "fake_os_is_bit_identical_in_every_format",
            &fast,
            fake_os_identical,
        ),
        trial(
            "lvm_layout_is_bit_identical",
            &[
                Need::Root,
                Need::LoopDevices,
                Need::Tool("pvcreate"),
                Need::Tool("vgcfgrestore"),
                Need::Tool("mke2fs"),
            ],
            lvm_identical,
        ),
        // Two more full builds: CI proves debian-minimal's bit-identical
        // rebuild in tests/lockfile.rs (two --lockfile builds, one from an
        // empty cache, compared in tar, raw and qcow2); this SOURCE_DATE_EPOCH
        // pair runs in scripts/test-long (--ignored).
        trial("debian_minimal_rebuild_compared", &real, || {
            debian_compared("amd64")
        })
        .with_ignored_flag(true),
        // The same for i386, built natively (IA-32 emulation): another
        // architecture's bootstrap, kernel and initramfs.
        trial(
            "debian_minimal_i386_rebuild_compared",
            &[&real[..], &[Need::Tool("arch-test")]].concat(),
            || debian_compared("i386"),
        )
        .with_ignored_flag(true),
        trial(
            "raw_difference_is_traced_to_the_file",
            &[
                Need::Tool("sfdisk"),
                Need::Tool("mkfs.ext4"),
                Need::Tool("debugfs"),
            ],
            raw_difference_traced,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Builds `elements` into `types` with the fixed epoch; returns output paths by type.
fn build(
    s: &Scratch,
    extra: &[impl AsRef<std::ffi::OsStr>],
    env: &[(&str, &str)],
    types: &str,
    elements: &[&str],
) -> Result<BTreeMap<String, PathBuf>, Failed> {
    build_logged(s, extra, env, types, elements).map(|(outputs, _)| outputs)
}

/// `build`, also returning the build's log (dib-create logs to stderr).
fn build_logged(
    s: &Scratch,
    extra: &[impl AsRef<std::ffi::OsStr>],
    env: &[(&str, &str)],
    types: &str,
    elements: &[&str],
) -> Result<(BTreeMap<String, PathBuf>, String), Failed> {
    let out = s.path().join("img");
    let mut c = s.command();
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .env("DIB_RELEASE", "bookworm")
        .envs(env.iter().copied())
        .args(extra)
        .args(["-t", types, "-o"])
        .arg(&out)
        .args(elements);
    let done = c.output()?;
    let log = String::from_utf8_lossy(&done.stderr).into_owned();
    if !done.status.success() {
        return Err(format!(
            "{c:?} failed ({}):\n{}",
            done.status,
            common::tail(&log, 60)
        )
        .into());
    }
    let ext = |t: &str| match t {
        "docker" => "docker.tar".to_string(),
        "oci" => "oci.tar".to_string(),
        t => t.to_string(),
    };
    let outputs = types
        .split(',')
        .map(|t| (t.to_string(), out.with_extension(ext(t))))
        .collect();
    Ok((outputs, log))
}

/// Removes the bootstrapped Debian roots (not the locked ones) from the
/// shared test cache, so that the next build bootstraps afresh.
fn forget_cached_debian_roots() -> Result<(), Failed> {
    let dir = common::test_cache().join("debootstrap");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let locked = name.starts_with("debian-bookworm-amd64-lock-");
        if name.starts_with("debian-bookworm-amd64-") && !locked {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// The types whose outputs differ between two builds.
fn differing(
    a: &BTreeMap<String, PathBuf>,
    b: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>, Failed> {
    let mut diff = Vec::new();
    for (t, pa) in a {
        if sha256(pa)? != sha256(&b[t])? {
            diff.push(t.clone());
        }
    }
    Ok(diff)
}

/// The fake OS builds' arguments: a small disk, and the phase cache on, as
/// users have it, but each build its own: with one shared cache the second
/// build would only re-emit the first one's outputs.
fn own_cache(s: &Scratch) -> Vec<String> {
    let cache = s.path().join("cache");
    ["-n", "--image-size", "0.3", "--image-cache"]
        .map(String::from)
        .into_iter()
        .chain([cache.display().to_string()])
        .collect()
}

fn fake_os_identical() -> Result<(), Failed> {
    let types = "tar,raw,qcow2,docker,oci,tar.zst,raw.zst";
    let (s1, s2) = (
        Scratch::new("dib-create-repro-a-"),
        Scratch::new("dib-create-repro-b-"),
    );
    let a = build(
        &s1,
        &own_cache(&s1),
        &[],
        types,
        &["fake-os", "block-device-efi"],
    )?;
    let b = build(
        &s2,
        &own_cache(&s2),
        &[],
        types,
        &["fake-os", "block-device-efi"],
    )?;
    let diff = differing(&a, &b)?;
    if !diff.is_empty() {
        return Err(format!("not reproducible: {diff:?}").into());
    }
    for (zst, plain) in [("tar.zst", "tar"), ("raw.zst", "raw")] {
        let mut c = Command::new("zstd");
        c.args(["-d", "-q", "-c"]).arg(&a[zst]);
        let out = c.output()?;
        if !out.status.success() || out.stdout != std::fs::read(&a[plain])? {
            return Err(format!("{zst} does not decompress to the {plain} output").into());
        }
    }
    Ok(())
}

fn lvm_identical() -> Result<(), Failed> {
    let (s1, s2) = (
        Scratch::new("dib-create-repro-lvm-a-"),
        Scratch::new("dib-create-repro-lvm-b-"),
    );
    let config = [("DIB_BLOCK_DEVICE_CONFIG", common::LVM_EXT4)];
    let mut raws = Vec::new();
    for s in [&s1, &s2] {
        raws.push(build(s, &own_cache(s), &config, "raw", &["fake-os"])?["raw"].clone());
    }
    if sha256(&raws[0])? != sha256(&raws[1])? {
        let mut report = String::from("two builds of one LVM layout differ\n");
        report.push_str(&rawdiff::explain(&raws[0], &raws[1])?);
        return Err(report.into());
    }
    // lvm2 writes the build host's name, the time, the command line and the
    // loop device into the metadata; dib-create rewrites them
    // (src/blockdev/lvm_mda.rs).
    println!("LVM layout: raw is bit-identical");
    s1.assert_nothing_left(&[])?;
    s2.assert_nothing_left(&[])
}

fn debian_compared(arch: &str) -> Result<(), Failed> {
    let types = "tar,raw,qcow2";
    let (s1, s2) = (
        Scratch::new("dib-create-repro-a-"),
        Scratch::new("dib-create-repro-b-"),
    );
    let elements = ["debian-minimal", "block-device-mbr"];
    // The first root comes fresh from mmdebstrap (and refills the cache), the
    // second from the bootstrap cache: both must give the same bytes. The
    // cache is emptied rather than bypassed by a setting, because the image
    // records its DIB_* settings (/etc/dib-manifests/dib_environment).
    forget_cached_debian_roots()?;
    // Both builds must run every phase, and they share the test cache for
    // the bootstrapped root this test compares (fresh against cached). With
    // the phase cache on, the second build would re-emit the first one's
    // outputs, so it is off here; the vm and disk tests build debian-minimal
    // with it on.
    let every_phase = ["--no-phase-cache", "-a", arch];
    let (a, log_a) = build_logged(&s1, &every_phase, &[], types, &elements)?;
    let (b, log_b) = build_logged(&s2, &every_phase, &[], types, &elements)?;
    for (log, says) in [(log_a, "saving the root"), (log_b, "unpacking cached root")] {
        if !log.contains(says) {
            return Err(format!(
                "expected the build log to say '{says}':\n{}",
                common::tail(&log, 40)
            )
            .into());
        }
    }
    let diff = differing(&a, &b)?;
    if diff.is_empty() {
        println!("debian-minimal {arch}: tar, raw and qcow2 are bit-identical");
        return Ok(());
    }
    let known = diff.iter().all(|t| DEBIAN_KNOWN_GAPS.contains(&t.as_str()));
    let mut report = if known {
        format!("KNOWN GAP (issue 7): debian-minimal outputs differ: {diff:?}\n")
    } else {
        format!("debian-minimal is not reproducible: {diff:?} differ\n")
    };
    if diff.iter().any(|t| t == "raw") {
        // Different sizes: the image size (from the tree's content before
        // finalise, transient apt lists and caches included) differed.
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        report.push_str(&format!(
            "  raw sizes: {} and {} bytes\n",
            len(&a["raw"]),
            len(&b["raw"])
        ));
        if len(&a["raw"]) == len(&b["raw"]) {
            report.push_str(&rawdiff::explain(&a["raw"], &b["raw"])?);
        }
    }
    let files = common::tardiff::differing_files(&a["tar"], &b["tar"])?;
    for f in &files {
        report.push_str(&format!("  differs: {f}\n"));
    }
    if files.is_empty() {
        report.push_str("  the trees are identical: the filesystem metadata differs (above)\n");
    } else {
        report.push_str(&common::tardiff::diffoscope(&a["tar"], &b["tar"]));
    }
    if known {
        println!("{report}");
        return Ok(());
    }
    Err(report.into())
}

/// The report on two raw images names the file whose inode differs: one
/// MBR disk with an ext4 partition, and a copy where one file's mtime moved.
fn raw_difference_traced() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-rawdiff-");
    let tree = s.path().join("tree");
    std::fs::create_dir_all(tree.join("etc"))?;
    std::fs::write(tree.join("etc/hostname"), "a\n")?;
    std::fs::write(tree.join("etc/motd"), "b\n")?;
    let a = s.path().join("a.raw");
    std::fs::File::create(&a)?.set_len(32 << 20)?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("echo 'start=2048, type=83' | sfdisk --quiet \"$0\"")
        .arg(&a);
    run_ok(c)?;
    let mut c = Command::new("mkfs.ext4");
    c.args(["-q", "-E", "offset=1048576", "-d"])
        .arg(&tree)
        .arg(&a)
        .arg("30M");
    run_ok(c)?;
    let b = s.path().join("b.raw");
    std::fs::copy(&a, &b)?;
    let mut c = Command::new("debugfs");
    c.args(["-w", "-R", "set_inode_field /etc/motd mtime 19700102"])
        .arg(format!("{}?offset=1048576", b.display()));
    run_ok(c)?;
    let report = rawdiff::explain(&a, &b)?;
    if !report.contains("/etc/motd") || report.contains("/etc/hostname") {
        return Err(format!("the report does not single out /etc/motd:\n{report}").into());
    }
    println!("{report}");
    Ok(())
}
