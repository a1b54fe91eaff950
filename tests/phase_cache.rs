//! The phase cache with the tiny fake OS (no network, seconds per build):
//! a cached build gives the same bytes as a build without the cache, an
//! unchanged rebuild reuses the outputs, an edited install.d hook restarts
//! at that hook, and a tree restored after the root phases gives the same
//! outputs as a cold build.

mod common;

use common::{Need, Scratch, run_ok, sha256, trial};
use libtest_mimic::{Arguments, Failed};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let args = Arguments::from_args();
    let needs = common::FAKE_OS_DISK;
    let mut esp = needs.to_vec();
    esp.extend([Need::Tool("mkfs.vfat"), Need::Tool("mcopy")]);
    let tests = vec![
        trial(
            "restores_from_the_right_phase_and_gives_identical_outputs",
            &needs,
            restores_and_matches,
        ),
        trial(
            "a_second_partition_is_split_from_a_layered_tree",
            &esp,
            second_partition_from_layers,
        ),
        trial(
            "keys_only_the_variables_the_build_reads",
            &needs,
            keys_only_what_is_read,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

struct Run {
    log: String,
    tar: PathBuf,
    raw: PathBuf,
}

/// One build of fake-os + the test element into `name`, with the phase
/// cache as users have it (on, stored under the scratch directory) or
/// switched off for a reference build.
fn build(s: &Scratch, name: &str, size: &str, cache: bool) -> Result<Run, Failed> {
    let off = [("DIB_CREATE_PHASE_CACHE", "0")];
    let env: &[(&str, &str)] = if cache { &[] } else { &off };
    fake_build(s, name, "pc-test", env, &["--image-size", size])
}

/// One build of fake-os + `element` into `name` (tar and raw), with the
/// scratch directory's cache, `env` set and `extra` flags.
fn fake_build(
    s: &Scratch,
    name: &str,
    element: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Result<Run, Failed> {
    let out = s.path().join(name);
    let mut c = s.command();
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .env("DIB_IMAGE_CACHE", s.path().join("cache"))
        .envs(env.iter().copied())
        .args(["-n", "-t", "tar,raw"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .args(["fake-os", "block-device-mbr", element]);
    let o = c.output().map_err(|e| format!("running dib-create: {e}"))?;
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!("build {name} failed:\n{}", common::tail(&log, 60)).into());
    }
    Ok(Run {
        log,
        tar: out.with_extension("tar"),
        raw: out.with_extension("raw"),
    })
}

fn expect(log: &str, what: &str) -> Result<(), Failed> {
    if log.contains(what) {
        return Ok(());
    }
    Err(format!(
        "expected {what:?} in the build log:\n{}",
        common::tail(log, 40)
    )
    .into())
}

fn refuse(log: &str, what: &str) -> Result<(), Failed> {
    if !log.contains(what) {
        return Ok(());
    }
    Err(format!(
        "did not expect {what:?} in the build log:\n{}",
        common::tail(log, 40)
    )
    .into())
}

fn same(a: &Path, b: &Path) -> Result<(), Failed> {
    let (x, y) = (sha256(a)?, sha256(b)?);
    if x == y {
        return Ok(());
    }
    Err(format!("{} and {} differ ({x} / {y})", a.display(), b.display()).into())
}

fn file_in_tar(tar: &Path, member: &str) -> Result<String, Failed> {
    let mut c = Command::new("tar");
    c.arg("-xOf").arg(tar).arg(member);
    run_ok(c)
}

fn restores_and_matches() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-phase-cache-");
    s.element("pc-test", "pre-install.d", "echo pre > /etc/pre");
    let edit = |v: &str| {
        s.element(
            "pc-test",
            "install.d",
            &format!("echo {v} > /etc/marker\ncat /etc/pre >> /etc/marker"),
        )
    };
    edit("v1");

    // Without the cache: the reference bytes, from a build that cannot
    // restore or reuse anything (what the cached builds below must equal).
    let plain = build(&s, "plain", "0.2", false)?;
    expect(&plain.log, "phase cache: off (DIB_CREATE_PHASE_CACHE=0)")?;

    // First build with the cache: runs everything, seals snapshots, and
    // gives the same bytes as without it (the layered tree is invisible).
    let first = build(&s, "img", "0.2", true)?;
    expect(&first.log, "phase cache: no snapshot to restore")?;
    expect(
        &first.log,
        "phase cache: sealed the tree after install.d/50-hook",
    )?;
    same(&first.tar, &plain.tar)?;
    same(&first.raw, &plain.raw)?;

    // Nothing changed: the outputs are emitted again, nothing runs.
    let again = build(&s, "img", "0.2", true)?;
    expect(
        &again.log,
        "phase cache: reused the outputs of an identical earlier build",
    )?;
    refuse(&again.log, "running root.d")?;
    same(&again.tar, &plain.tar)?;
    same(&again.raw, &plain.raw)?;
    if !s.path().join("img.manifest.json").exists() {
        return Err("a reused build must still write its manifest".into());
    }

    // One install.d hook edited: restart at that hook, not before.
    edit("v2");
    let edited = build(&s, "img", "0.2", true)?;
    expect(&edited.log, "reused the tree after pre-install.d/50-hook")?;
    expect(&edited.log, "because install.d/50-hook changed")?;
    expect(&edited.log, "running install.d")?;
    refuse(&edited.log, "running root.d")?;
    refuse(&edited.log, "running pre-install.d")?;
    // The report draws the hooks that did not run as restored, the edited
    // one as run.
    let report = std::fs::read_to_string(s.path().join("img.report.html"))?;
    let restored_bar =
        "<rect class=\"bar restored\" data-phase=\"pre-install.d\" data-label=\"50-hook\"";
    let run_bar = "<rect class=\"bar hook\" data-phase=\"install.d\" data-label=\"50-hook\"";
    if !report.contains(restored_bar) || !report.contains(run_bar) {
        return Err("the report does not show pre-install.d restored and install.d run".into());
    }
    let marker = file_in_tar(&edited.tar, "./etc/marker")?;
    if marker != "v2\npre\n" {
        return Err(format!("the edited hook's result is missing: {marker:?}").into());
    }

    // Back to v1 with another image size: the whole tree comes from the
    // cache, only the outputs are made, and the tarball equals the cold build's.
    edit("v1");
    let restored = build(&s, "img", "0.25", true)?;
    expect(&restored.log, "(all root phases)")?;
    refuse(&restored.log, "running install.d")?;
    same(&restored.tar, &plain.tar)?;

    // A damaged layer (here: a file of the pre-install.d layer grew) is
    // noticed, removed, and the build falls back to an earlier snapshot.
    let layer = damage_layer_holding(&s.path().join("cache"), "etc/pre")?;
    let repaired = build(&s, "img", "0.3", true)?;
    expect(&repaired.log, "is damaged")?;
    expect(&repaired.log, "running pre-install.d")?;
    same(&repaired.tar, &plain.tar)?;
    // The rebuild sealed the same key again, from a fresh run.
    let again = std::fs::read_to_string(layer.join("tree/etc/pre")).unwrap_or_default();
    if again.contains("damage") {
        return Err(format!("the damaged layer {} is still used", layer.display()).into());
    }

    s.assert_nothing_left(&[])
}

/// A rebuild under another `-o` name, with `--checksum`, and with a changed
/// variable that no file of the build names reuses everything (the outputs
/// are the bytes a cold build makes); a changed variable a hook reads
/// rebuilds; DIB_CREATE_PHASE_CACHE_KEY_ENV=all keys every variable.
fn keys_only_what_is_read() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-phase-cache-env-");
    s.element(
        "env-test",
        "install.d",
        "echo \"${DIB_ENV_TEST_VALUE:-none}\" > /etc/env-test-value",
    );
    let run = |name: &str, env: &[(&str, &str)], extra: &[&str]| -> Result<Run, Failed> {
        let flags: Vec<&str> = ["--image-size", "0.2"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        fake_build(&s, name, "env-test", env, &flags)
    };
    let first = run(
        "one",
        &[("DIB_ENV_TEST_VALUE", "a"), ("DIB_ENV_TEST_UNUSED", "x")],
        &[],
    )?;
    expect(&first.log, "running install.d")?;

    let renamed = run(
        "two",
        &[("DIB_ENV_TEST_VALUE", "a"), ("DIB_ENV_TEST_UNUSED", "y")],
        &["--checksum"],
    )?;
    expect(
        &renamed.log,
        "reused the outputs of an identical earlier build",
    )?;
    refuse(&renamed.log, "running root.d")?;
    // The same bytes as a cold build under that name (the cache off, to
    // have a build that cannot reuse anything).
    std::fs::create_dir_all(s.path().join("cold"))?;
    let cold = run(
        "cold/two",
        &[("DIB_ENV_TEST_VALUE", "a"), ("DIB_CREATE_PHASE_CACHE", "0")],
        &[],
    )?;
    same(&renamed.tar, &cold.tar)?;
    same(&renamed.raw, &cold.raw)?;
    if !s.path().join("two.raw.sha256").exists() {
        return Err("--checksum wrote no checksum for the reused outputs".into());
    }

    let changed = run("two", &[("DIB_ENV_TEST_VALUE", "b")], &[])?;
    expect(&changed.log, "env DIB_ENV_TEST_VALUE")?;
    expect(&changed.log, "running install.d")?;
    let value = file_in_tar(&changed.tar, "./etc/env-test-value")?;
    if value.trim() != "b" {
        return Err(format!("the hook saw {value:?}, not the new value").into());
    }

    let all = run(
        "two",
        &[
            ("DIB_ENV_TEST_VALUE", "b"),
            ("DIB_ENV_TEST_UNUSED", "z"),
            ("DIB_CREATE_PHASE_CACHE_KEY_ENV", "all"),
        ],
        &[],
    )?;
    expect(&all.log, "no snapshot to restore")?;

    // `--cache-prune` with a cap of nothing empties the cache.
    let mut prune = s.command();
    prune
        .env("DIB_IMAGE_CACHE", s.path().join("cache"))
        .env("DIB_CREATE_PHASE_CACHE_MAX_SIZE", "0")
        .arg("--cache-prune");
    let said = run_ok(prune)?;
    let snaps = std::fs::read_dir(s.path().join("cache/phase-cache/snap"))?.count();
    if !said.contains("phase cache: swept") || snaps != 0 {
        return Err(format!("--cache-prune said {said:?} and left {snaps} snapshots").into());
    }
    s.assert_nothing_left(&[])
}

/// Appends to `file` in the cached layer that holds it; returns the layer.
fn damage_layer_holding(cache: &Path, file: &str) -> Result<PathBuf, Failed> {
    let snaps = cache.join("phase-cache/snap");
    for e in std::fs::read_dir(&snaps)?.filter_map(Result::ok) {
        let f = e.path().join("tree").join(file);
        if f.is_file() {
            let mut text = std::fs::read_to_string(&f)?;
            text.push_str("damage\n");
            std::fs::write(&f, text)?;
            return Ok(e.path());
        }
    }
    Err(format!("no layer under {} holds {file}", snaps.display()).into())
}

/// A layout with a second filesystem (the ESP at /boot/efi) whose directory
/// was made by a hook and sealed into a lower layer: moving it out of the
/// overlay for its own filesystem gave EXDEV, and every UEFI and rpi3 build
/// failed at the end with the phase cache on. The file must land on the ESP,
/// and the root filesystem must not hold it.
fn second_partition_from_layers() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-phase-cache-esp-");
    s.element(
        "esp-test",
        "install.d",
        "mkdir -p /boot/efi/EFI/test\necho on-the-esp > /boot/efi/EFI/test/marker",
    );
    let out = s.path().join("esp");
    let mut c = s.command();
    c.env("DIB_IMAGE_CACHE", s.path().join("cache"))
        .args(["-n", "--image-size", "0.7", "-t", "raw,tar", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-efi", "esp-test"]);
    let o = c.output().map_err(|e| format!("running dib-create: {e}"))?;
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        return Err(format!("the build failed:\n{}", common::tail(&log, 40)).into());
    }
    expect(&log, "sealed the tree after install.d/50-hook")?;
    let raw = out.with_extension("raw");
    let table: serde_json::Value = serde_json::from_str(&run_ok({
        let mut c = Command::new("sfdisk");
        c.arg("--json").arg(&raw);
        c
    })?)?;
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .ok_or("sfdisk shows no partitions")?;
    let esp = parts
        .iter()
        .find(|p| p["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
        .ok_or("no EFI system partition")?;
    let offset = esp["start"].as_u64().ok_or("ESP without a start")? * 512;
    let mut c = Command::new("mtype");
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", raw.display()))
        .arg("::/EFI/test/marker");
    let marker = run_ok(c)?;
    if marker.trim() != "on-the-esp" {
        return Err(format!("the ESP's marker reads {marker:?}").into());
    }
    // The tar is the whole tree; the root filesystem must have only the
    // empty mount point.
    let root = parts
        .iter()
        .find(|p| p["type"] == "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
        .ok_or("no root partition")?;
    let root_offset = root["start"].as_u64().ok_or("root without a start")? * 512;
    let mut c = Command::new("debugfs");
    c.args(["-R", "ls -p /boot/efi"])
        .arg(format!("{}?offset={root_offset}", raw.display()));
    let listing = run_ok(c)?;
    if listing.contains("EFI") {
        return Err(format!("the root filesystem holds the ESP's files:\n{listing}").into());
    }
    s.assert_nothing_left(&[])
}
