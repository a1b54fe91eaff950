//! Lockfiles for real: `--lock` a debian-minimal tar build, build again with
//! `--lockfile` and check the installed versions are the locked ones, then
//! prove that a tampered SHA256 and a package outside the lock are clear
//! errors, the latter offline (no network namespace but loopback) from the
//! warm cache. The two locked builds also commit to ostree: the same
//! lockfile must give the same commit checksum. Also the CLI side (`--lock-diff`, `--help`) without root.

mod common;

use common::{Need, dib_create, run_ok, trial};
use libtest_mimic::{Arguments, Failed};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() {
    let args = Arguments::from_args();
    let net = [
        Need::Root,
        Need::Tool("mmdebstrap"),
        Need::Tool("unshare"),
        Need::Tool("ip"),
        Need::Tool("ostree"),
        Need::Network("deb.debian.org:80"),
    ];
    let tests = vec![
        trial("lock_diff_and_help", &[], lock_diff_and_help),
        trial("lock_then_build_locked", &net, lock_then_build_locked),
    ];
    libtest_mimic::run(&args, tests).exit();
}

const HEADER: &str =
    "Lockfile-Version: 1\nDistribution: debian\nRelease: bookworm\nArchitecture: amd64\n";

fn stanza(name: &str, version: &str, phase: &str) -> String {
    format!(
        "\nPackage: {name}\nVersion: {version}\nArchitecture: amd64\nPhase: {phase}\n\
         Filename: pool/{name}.deb\nURL: http://x/pool/{name}.deb\nSHA256: {}\nSize: 1\n",
        "0".repeat(64)
    )
}

fn lock_diff_and_help() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a.lock");
    let b = dir.path().join("b.lock");
    std::fs::write(
        &a,
        format!(
            "{HEADER}{}{}",
            stanza("apt", "2.6.1", "bootstrap"),
            stanza("tree", "2.1.0-1", "install.d")
        ),
    )?;
    std::fs::write(
        &b,
        format!(
            "{HEADER}{}{}",
            stanza("apt", "2.6.2", "bootstrap"),
            stanza("less", "590-2", "install.d")
        ),
    )?;
    let mut c = dib_create();
    c.arg("--lock-diff").arg(&a).arg(&b);
    let out = run_ok(c)?;
    for want in [
        "+ less:amd64 590-2 (install.d)",
        "- tree:amd64 2.1.0-1 (install.d)",
        "~ apt:amd64 2.6.1 -> 2.6.2",
    ] {
        if !out.contains(want) {
            return Err(format!("--lock-diff output lacks {want:?}:\n{out}").into());
        }
    }
    let mut c = dib_create();
    c.arg("--help");
    let help = run_ok(c)?;
    for want in [
        "Lockfile:",
        "--lock <FILE>",
        "--lockfile <FILE>",
        "--lock-update <FILE>",
        "--lock-diff <OLD> <NEW>",
    ] {
        if !help.contains(want) {
            return Err(format!("--help lacks {want:?}").into());
        }
    }
    // A broken lockfile is bad input (exit 2), with the file and line.
    std::fs::write(&b, format!("{HEADER}{}", stanza("apt", "1", "sometime")))?;
    let mut c = dib_create();
    let out = c.arg("--lock-diff").arg(&a).arg(&b).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("unknown Phase sometime") {
        return Err(format!("broken lockfile: {:?} {err}", out.status).into());
    }
    Ok(())
}

/// A second build from the same lockfile, with its own empty cache (so its
/// own phase cache too), TMPDIR and output directory, and no
/// SOURCE_DATE_EPOCH from the caller: the lockfile gives the time, and
/// nothing per-build reaches the image, so raw, qcow2 and tar are the
/// first build's bytes.
fn locked_builds_are_identical(s: &Path, lock: &Path, first: &Path) -> Result<(), Failed> {
    let other = s.join("elsewhere");
    std::fs::create_dir_all(other.join("tmp"))?;
    let out = other.join("locked");
    let t = Instant::now();
    let mut c = build_cmd(&other, &out);
    c.env("DIB_IMAGE_CACHE", other.join("cache"))
        .env("TMPDIR", other.join("tmp"))
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["-t", "tar,raw,qcow2,ostree"])
        .arg("--lockfile")
        .arg(lock)
        .arg("debian-minimal");
    let log = run_ok(c)?;
    println!(
        "second --lockfile build (empty cache): {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let _ = log;
    for ext in ["tar", "raw", "qcow2"] {
        let (a, b) = (
            common::sha256(&first.with_extension(ext))?,
            common::sha256(&out.with_extension(ext))?,
        );
        if a != b {
            let mut report = format!("two builds from one lockfile differ in {ext}: {a} and {b}\n");
            let tars = (first.with_extension("tar"), out.with_extension("tar"));
            for f in common::tardiff::differing_files(&tars.0, &tars.1)? {
                report.push_str(&format!("  differs: {f}\n"));
            }
            report.push_str(&common::tardiff::diffoscope(&tars.0, &tars.1));
            return Err(report.into());
        }
        println!("{ext}: both builds {a}");
    }
    let (a, b) = (ostree_commit(first)?, ostree_commit(&out)?);
    if a != b {
        return Err(format!("two builds from one lockfile made ostree commits {a} and {b}").into());
    }
    println!("ostree: both builds commit {a}");
    std::fs::remove_dir_all(other.join("cache"))?;
    Ok(())
}

/// The ostree commit a build's manifest records.
fn ostree_commit(out: &Path) -> Result<String, Failed> {
    let text = std::fs::read_to_string(out.with_extension("manifest.json"))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|f| f["type"] == "ostree"))
        .and_then(|f| f["sha256"].as_str())
        .map(String::from)
        .ok_or_else(|| format!("no ostree output in {}", out.display()).into())
}

/// The common part of each build: environment, scratch build root, cache.
fn build_cmd(scratch: &Path, out: &Path) -> Command {
    let mut c = dib_create();
    c.env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_CREATE_BUILD_ROOT", scratch.join("builds"))
        // Failed builds keep their logs in $TMPDIR: the scratch directory here.
        .env("TMPDIR", scratch)
        .env("DIB_RELEASE", "bookworm")
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["-a", "amd64", "-o"])
        .arg(out);
    c
}

fn lock_then_build_locked() -> Result<(), Failed> {
    let scratch = tempfile::Builder::new()
        .prefix("dib-create-lockfile-")
        .tempdir_in("/var/tmp")?;
    let s = scratch.path();
    let lock = s.join("debian.lock");

    // 1. Lock.
    let t = Instant::now();
    let mut c = build_cmd(s, &s.join("locking"));
    c.args(["-t", "tar"])
        .arg("--lock")
        .arg(&lock)
        .arg("debian-minimal");
    run_ok(c)?;
    println!("--lock build: {:.0} s", t.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(&lock)?;
    for want in [
        "Lockfile-Version: 1\n",
        "Release: bookworm\n",
        "Phase: bootstrap\n",
        "Package: linux-image-amd64\n",
        "Source-Date-Epoch: ",
    ] {
        if !text.contains(want) {
            return Err(format!("the lockfile lacks {want:?}").into());
        }
    }

    // 2. Build with it; the installed set must equal the lock.
    let t = Instant::now();
    let out = s.join("locked");
    let mut c = build_cmd(s, &out);
    c.args(["-t", "tar,raw,qcow2,ostree"])
        .arg("--lockfile")
        .arg(&lock)
        .arg("debian-minimal");
    run_ok(c)?;
    println!("--lockfile build: {:.0} s", t.elapsed().as_secs_f64());
    locked_builds_are_identical(s, &lock, &out)?;
    let tree = s.join("tree");
    std::fs::create_dir_all(&tree)?;
    let mut x = Command::new("tar");
    x.arg("-xf")
        .arg(out.with_extension("tar"))
        .arg("-C")
        .arg(&tree)
        .args(["./var/lib/dpkg/status", "./etc/apt"]);
    run_ok(x)?;
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status"))?;
    let installed = dib::pkgdb::dpkg::parse_status(&status);
    let locked = dib::lock::lockfile::Lockfile::read(&lock)?;
    let want: std::collections::BTreeMap<_, _> = locked
        .installed()
        .map(|p| (p.key(), p.version.clone()))
        .collect();
    if installed != want {
        let d: Vec<_> = want
            .iter()
            .filter(|(k, v)| installed.get(*k) != Some(*v))
            .map(|(k, v)| format!("{}:{} locked {v}, got {:?}", k.0, k.1, installed.get(k)))
            .collect();
        return Err(format!("installed set differs from the lock: {d:?}").into());
    }
    // The image keeps its normal sources, nothing of the lock.
    if tree.join("etc/apt/dib-create-lock").exists()
        || tree.join("etc/apt/apt.conf.d/00dib-create-lock").exists()
    {
        return Err("the lock's apt configuration was left in the image".into());
    }
    let default = std::fs::read_to_string(tree.join("etc/apt/sources.list.d/default.list"))?;
    if !default.contains("deb.debian.org/debian bookworm") {
        return Err(format!("unexpected image sources: {default}").into());
    }

    // 3. A tampered hash fails before anything is built, naming the package.
    let bad = s.join("tampered.lock");
    let victim = locked
        .packages
        .iter()
        .find(|p| p.name == "base-files")
        .ok_or("no base-files in the lock")?;
    let fake = format!("{:064x}", 0xdead_beefu64);
    std::fs::write(&bad, text.replace(&victim.sha256, &fake))?;
    let t = Instant::now();
    let mut c = build_cmd(s, &s.join("tampered"));
    c.args(["-t", "tar"])
        .arg("--lockfile")
        .arg(&bad)
        .arg("debian-minimal");
    let o = c.output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || !err.contains("base-files") || !err.contains("refusing it") {
        return Err(format!("tampered lock: {:?}\n{}", o.status, common::tail(&err, 20)).into());
    }
    println!(
        "tampered lock rejected in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 4. Offline from the warm cache: a package outside the lock is a clear
    //    error naming it and --lock-update.
    let elements = s.join("elements");
    let hook = elements.join("wants-tree/pre-install.d/50-wants-tree");
    std::fs::create_dir_all(hook.parent().unwrap())?;
    std::fs::write(&hook, "#!/bin/bash\nset -eu\ninstall-packages tree\n")?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    let inner = build_cmd(s, &s.join("offline"));
    let mut c = Command::new("unshare");
    c.args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("ELEMENTS_PATH", &elements)
        .args(["-t", "tar"])
        .arg("--offline")
        .arg("--lockfile")
        .arg(&lock)
        .args(["debian-minimal", "wants-tree"]);
    let t = Instant::now();
    let o = c.output()?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let hint = "does not pin tree";
    if o.status.success() || !all.contains(hint) || !all.contains("--lock-update") {
        return Err(format!(
            "offline build outside the lock: {:?}\n{}",
            o.status,
            common::tail(&all, 40)
        )
        .into());
    }
    println!(
        "offline locked build refused `tree` in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    common::assert_clean(s)
}
