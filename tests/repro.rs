//! Reproducible outputs: with SOURCE_DATE_EPOCH set, two builds in different
//! build directories give identical bytes.
//!
//! - The fake OS (a tree of the host's own tools, no package manager) must be
//!   bit-identical in every format: tar, raw, qcow2, docker, oci. This fails
//!   CI when it breaks.
//! - debian-minimal is compared too. Where it is not identical yet, the test
//!   prints which files differ as a KNOWN GAP (issue 7 stays open for them)
//!   and does not fail.

mod common;

use common::{Need, Scratch, run_ok, sha256, trial};
use libtest_mimic::{Arguments, Failed};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const EPOCH: &str = "1700000000";

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
        trial("debian_minimal_rebuild_compared", &real, debian_compared),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Builds `elements` into `types` with the fixed epoch; returns output paths by type.
fn build(
    s: &Scratch,
    extra: &[&str],
    types: &str,
    elements: &[&str],
) -> Result<BTreeMap<String, PathBuf>, Failed> {
    let out = s.path().join("img");
    let mut c = s.command();
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .env("DIB_RELEASE", "bookworm")
        .args(extra)
        .args(["-t", types, "-o"])
        .arg(&out)
        .args(elements);
    run_ok(c)?;
    let ext = |t: &str| match t {
        "docker" => "docker.tar".to_string(),
        "oci" => "oci.tar".to_string(),
        t => t.to_string(),
    };
    Ok(types
        .split(',')
        .map(|t| (t.to_string(), out.with_extension(ext(t))))
        .collect())
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

fn fake_os_identical() -> Result<(), Failed> {
    let types = "tar,raw,qcow2,docker,oci";
    let (s1, s2) = (
        Scratch::new("dib-create-repro-a-"),
        Scratch::new("dib-create-repro-b-"),
    );
    let args = ["-n", "--image-size", "0.3"];
    let a = build(&s1, &args, types, &["fake-os", "block-device-efi"])?;
    let b = build(&s2, &args, types, &["fake-os", "block-device-efi"])?;
    let diff = differing(&a, &b)?;
    if !diff.is_empty() {
        return Err(format!("not reproducible: {diff:?}").into());
    }
    Ok(())
}

fn debian_compared() -> Result<(), Failed> {
    let types = "tar,raw,qcow2";
    let (s1, s2) = (
        Scratch::new("dib-create-repro-a-"),
        Scratch::new("dib-create-repro-b-"),
    );
    let a = build(&s1, &[], types, &["debian-minimal", "block-device-mbr"])?;
    let b = build(&s2, &[], types, &["debian-minimal", "block-device-mbr"])?;
    let diff = differing(&a, &b)?;
    if diff.is_empty() {
        println!("debian-minimal: tar, raw and qcow2 are bit-identical");
        return Ok(());
    }
    println!("KNOWN GAP (issue 7): debian-minimal outputs differ: {diff:?}");
    for f in differing_files(&a["tar"], &b["tar"])? {
        println!("  differs: {f}");
    }
    Ok(())
}

/// Files whose content or metadata differ between two tarballs.
fn differing_files(a: &Path, b: &Path) -> Result<Vec<String>, Failed> {
    let listing = |t: &Path| -> Result<BTreeMap<String, String>, Failed> {
        let mut c = Command::new("tar");
        c.args(["--full-time", "-tvf"]).arg(t);
        let text = run_ok(c)?;
        let mut sums = BTreeMap::new();
        for line in text.lines() {
            let name = line.split_whitespace().nth(5).unwrap_or("").to_string();
            sums.insert(name, line.to_string());
        }
        Ok(sums)
    };
    let (la, lb) = (listing(a)?, listing(b)?);
    let mut out: Vec<String> = la
        .iter()
        .filter(|(k, v)| lb.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(lb.keys().filter(|k| !la.contains_key(*k)).cloned());
    // Same listing line but different bytes: compare the regular files' contents.
    let content = |t: &Path, dir: &Path| -> Result<(), Failed> {
        std::fs::create_dir_all(dir)?;
        let mut c = Command::new("tar");
        c.arg("-xf").arg(t).arg("-C").arg(dir);
        run_ok(c).map(|_| ())
    };
    let (da, db) = (a.with_extension("x"), b.with_extension("x"));
    content(a, &da)?;
    content(b, &db)?;
    let mut c = Command::new("diff");
    c.args(["-rq", "--no-dereference"]).arg(&da).arg(&db);
    let o = c.output()?;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        out.push(line.replace(&da.display().to_string(), "."));
    }
    Ok(out)
}
