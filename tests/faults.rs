//! Fault tests: a failing hook in each phase, and SIGINT in the middle of
//! install.d. After each, nothing of ours stays mounted, nothing exists at the
//! output path, and the build directory is gone. They use a tiny root made
//! from the host's own tools (tests/elements/fake-os), so they need no mirror.

mod common;

use common::{Need, Scratch, assert_clean, trial};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args = Arguments::from_args();
    let mut tests: Vec<Trial> = dib::phase::hook_dirs()
        .map(|phase| {
            trial(
                &format!("failing_hook_in_{phase}"),
                &[Need::Root],
                move || failing_hook(phase),
            )
        })
        .collect();
    tests.push(trial(
        "sigint_during_install_d",
        &[Need::Root],
        sigint_during_install,
    ));
    tests.push(trial(
        "sigint_with_the_log_reader_gone_still_tears_down",
        &[Need::Root],
        sigint_with_the_log_reader_gone,
    ));
    tests.push(trial(
        "tar_of_fake_os_has_no_leftovers",
        &[Need::Root],
        fake_os_tar,
    ));
    tests.push(trial(
        "a_chroot_hook_cannot_plant_code_that_runs_outside",
        &[Need::Root],
        hooks_tree_is_read_only_inside,
    ));
    tests.push(trial(
        "a_build_root_made_by_another_user_is_refused",
        &[Need::Root],
        foreign_build_root,
    ));
    tests.push(trial(
        "what_a_hook_outside_the_chroot_leaves_running_is_stopped",
        &[Need::Root, Need::Tool("pgrep")],
        outside_hook_stragglers,
    ));
    tests.push(trial(
        "symlinks_in_the_tree_never_lead_writes_to_the_host",
        &[Need::Root, Need::LoopDevices],
        tree_symlinks_stay_inside,
    ));
    tests.push(trial(
        "a_mount_point_that_links_to_the_host_is_refused",
        &[Need::Root, Need::LoopDevices],
        mount_point_symlink_refused,
    ));
    tests.push(trial(
        "a_failure_after_the_pvs_are_written_leaves_no_volume_group",
        &[
            Need::Root,
            Need::LoopDevices,
            Need::Tool("vgcfgrestore"),
            Need::Tool("vgs"),
        ],
        failure_after_lvm,
    ));
    tests.push(trial(
        "out_of_space_names_the_filesystem",
        &[Need::Root],
        out_of_space,
    ));
    tests.push(trial(
        "signals_at_seeded_points_leave_nothing_behind",
        &[Need::Root, Need::LoopDevices],
        signals_at_seeded_points,
    ));
    tests.push(trial(
        "a_signal_while_the_outputs_are_hashed_commits_nothing",
        &[Need::Root, Need::LoopDevices],
        late_signal,
    ));
    tests.push(trial(
        "four_concurrent_builds_two_on_one_output",
        &[Need::Root],
        four_concurrent_builds,
    ));
    tests.push(trial(
        "two_builds_on_one_output",
        &[Need::Root],
        two_builds_on_one_output,
    ));
    tests.push(trial(
        "sigkill_while_writing_outputs_leaves_no_partial_file",
        &[Need::Root, Need::LoopDevices],
        sigkill_while_writing_outputs,
    ));
    libtest_mimic::run(&args, tests).exit();
}

/// The fault tests build a tar of the fake OS into `out`.
fn tar_build(s: &Scratch, out: &Path) -> std::process::Command {
    let mut c = s.command();
    c.args(["-n", "-t", "tar", "-o"]).arg(out);
    c
}

fn failing_hook(phase: &str) -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element("fails", phase, "echo about to fail; exit 3");
    let out = s.path().join("img");
    // A disk output too, so that block-device.d runs and a failure with a
    // loop device attached is covered.
    let o = s
        .command()
        .args(["-n", "-t", "tar,raw", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-mbr", "fails"])
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(1) {
        return Err(format!(
            "expected exit 1, got {:?}\n{}",
            o.status,
            common::tail(&err, 30)
        )
        .into());
    }
    for want in ["fails", phase, "50-hook", "exit code 3", "about to fail"] {
        if !err.contains(want) {
            return Err(format!(
                "error does not mention {want:?}:\n{}",
                common::tail(&err, 30)
            )
            .into());
        }
    }
    s.assert_nothing_left(&[out.with_extension("tar"), out.with_extension("raw")])
}

/// finalise.d runs once the disk exists: the physical volumes are written
/// and each logical volume has its loop device.
fn failure_after_lvm() -> Result<(), Failed> {
    let before = common::etc_lvm_state()?;
    let s = Scratch::new("dib-create-faults-");
    s.element("fails", "finalise.d", "echo about to fail; exit 3");
    let out = s.path().join("img");
    let o = s
        .command()
        .env("DIB_BLOCK_DEVICE_CONFIG", common::LVM_EXT4)
        .args(["-n", "--image-size", "0.3", "-t", "raw", "-o"])
        .arg(&out)
        .args(["fake-os", "fails"])
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(1)
        || !err.contains("volume group vg")
        || !err.contains("exit code 3")
    {
        return Err(format!(
            "expected the metadata written, then exit 1 from finalise.d, got {:?}\n{}",
            o.status,
            common::tail(&err, 30)
        )
        .into());
    }
    s.assert_nothing_left(&[out.with_extension("raw")])?;
    // The host's own lvm2 sees no group of the image, and keeps no trace.
    let vgs = common::run_ok({
        let mut c = std::process::Command::new("vgs");
        c.args(["--noheadings", "-o", "vg_name,pv_name"]);
        c
    })?;
    if vgs
        .lines()
        .any(|l| l.split_whitespace().next() == Some("vg"))
    {
        return Err(format!("the host's lvm2 still sees the image's group:\n{vgs}").into());
    }
    let after = common::etc_lvm_state()?;
    if after != before {
        return Err(format!("/etc/lvm changed:\nbefore:\n{before}\nafter:\n{after}").into());
    }
    Ok(())
}

fn sigint_during_install() -> Result<(), Failed> {
    interrupt_install_d(false)
}

/// Ctrl-C on `dib-create ... 2>&1 | tee log` ends tee as well: every log
/// line of the teardown then meets a closed pipe.
fn sigint_with_the_log_reader_gone() -> Result<(), Failed> {
    interrupt_install_d(true)
}

/// SIGINT while an install.d hook runs (with stderr a pipe whose reader is
/// gone when `reader_gone`): exit 130, nothing left mounted or written.
fn interrupt_install_d(reader_gone: bool) -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element(
        "slow",
        "install.d",
        // The setsid child leaves the hook's process group but keeps its
        // output pipe open, as dpkg under apt's pty does.
        "setsid sleep 300 & touch /tmp/marker-in-chroot; echo started; sleep 120",
    );
    let out = s.path().join("img");
    let mut build = tar_build(&s, &out);
    build.args(["fake-os", "slow"]);
    if reader_gone {
        // Not read: the log up to the hook is a few KiB, far below what
        // the pipe holds (64 KiB), so the build does not block on it.
        build.stderr(std::process::Stdio::piped());
    }
    let mut child = build.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // The hook runs inside the chroot; its marker appears in the tree.
    let tree_marker = || {
        std::fs::read_dir(s.builds())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|e| e.path().join("mnt/tmp/marker-in-chroot").exists())
    };
    while !tree_marker() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("install.d hook never started".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child.stderr.take());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let started = Instant::now();
    let status = child.wait()?;
    if started.elapsed() > Duration::from_secs(30) {
        return Err(format!("SIGINT took {:?} to stop the build", started.elapsed()).into());
    }
    if status.code() != Some(130) {
        return Err(format!("expected exit 130 after SIGINT, got {status:?}").into());
    }
    s.assert_nothing_left(&[out.with_extension("tar")])
}

fn fake_os_tar() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element("marks", "install.d", "echo hello > /etc/marked-by-install");
    let out = s.path().join("img");
    let o = tar_build(&s, &out).args(["fake-os", "marks"]).output()?;
    if !o.status.success() {
        return Err(common::tail(&String::from_utf8_lossy(&o.stderr), 40).into());
    }
    let listing = common::run_ok({
        let mut c = std::process::Command::new("tar");
        c.arg("-tf").arg(out.with_extension("tar"));
        c
    })?;
    for want in ["./etc/marked-by-install", "./bin/bash", "./proc/"] {
        if !listing.lines().any(|l| l == want) {
            return Err(format!("{want} missing from the tar").into());
        }
    }
    for bad in [
        "./tmp/in_target.d",
        "./usr/sbin/policy-rc.d",
        "./etc/resolv.conf.ORIG",
    ] {
        if listing.lines().any(|l| l.starts_with(bad)) {
            return Err(format!("build leftover {bad} in the tar").into());
        }
    }
    assert_clean(s.path())
}

/// Waits until `child`'s stderr, copied to `log`, says `what`.
fn wait_for_log(log: &Path, what: &str, child: &mut std::process::Child) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(what)
    {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            return Err(format!(
                "the build never said {what:?}:\n{}",
                common::tail(&std::fs::read_to_string(log).unwrap_or_default(), 30)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A second build on the same -o while the first runs is refused at once
/// and touches nothing; the first finishes with its outputs.
fn two_builds_on_one_output() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element("slow", "install.d", "echo slow hook started; sleep 4");
    let out = s.path().join("img");
    let log = s.path().join("first.log");
    let mut first = tar_build(&s, &out)
        .args(["fake-os", "slow"])
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    wait_for_log(&log, "slow hook started", &mut first)?;
    let o = tar_build(&s, &out).args(["fake-os"]).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(1) || !err.contains("another dib-create") {
        let _ = first.kill();
        return Err(format!(
            "the second build: {:?}\n{}",
            o.status,
            common::tail(&err, 10)
        )
        .into());
    }
    if !first.wait()?.success() {
        return Err(format!(
            "the first build failed:\n{}",
            common::tail(&std::fs::read_to_string(&log)?, 30)
        )
        .into());
    }
    let listing = common::run_ok({
        let mut c = std::process::Command::new("tar");
        c.arg("-tf").arg(out.with_extension("tar"));
        c
    })?;
    if !listing.contains("./bin/bash") {
        return Err("the first build's tar is incomplete".into());
    }
    s.assert_nothing_left(&[])
}

/// SIGKILL while the root filesystem is filled, after the tar was written
/// under its temporary name: the next build in the same build root removes
/// the partial file, and nothing stays mounted or attached.
fn sigkill_while_writing_outputs() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    // Enough data that mke2fs -d takes a moment.
    s.element("big", "install.d", "head -c 400000000 /dev/zero > /big");
    let out = s.path().join("img");
    let log = s.path().join("killed.log");
    let mut c = s.command();
    c.args(["-n", "-t", "tar,raw", "--image-size", "1", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-mbr", "big"])
        .stderr(std::fs::File::create(&log)?);
    let mut child = c.spawn()?;
    wait_for_log(&log, "making ext4 filesystem", &mut child)?;
    child.kill()?;
    child.wait()?;
    let partial = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("dib-create-partial"))
            .collect()
    };
    if partial(s.path()).is_empty() {
        return Err("the killed build left no partial tar to clean (too late a kill?)".into());
    }
    // The next build cleans up the killed one's build directory.
    let o = tar_build(&s, &s.path().join("next"))
        .arg("fake-os")
        .output()?;
    if !o.status.success() {
        return Err(common::tail(&String::from_utf8_lossy(&o.stderr), 30).into());
    }
    let left = partial(s.path());
    if !left.is_empty() {
        return Err(format!("partial outputs survived the next build: {left:?}").into());
    }
    s.assert_nothing_left(&[out.with_extension("tar"), out.with_extension("raw")])
}

/// A hook inside the chroot writes a post-root.d hook into the bind-mounted
/// hooks tree: it must fail (read-only), and nothing it wrote may run on the
/// host. Before the fix the planted hook ran as root outside the chroot.
fn hooks_tree_is_read_only_inside() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    let victim = s.path().join("planted-ran");
    // post-root.d exists in the merged hooks tree, so a planted hook would run.
    s.element("plants", "post-root.d", "true");
    s.element(
        "plants",
        "install.d",
        &format!(
            // The fake OS has no chmod: cp keeps /bin/sh's mode, then the
            // content is replaced.
            "f=/tmp/in_target.d/post-root.d/99-planted; cp /bin/sh $f 2>/dev/null && printf '#!/bin/sh\\ntouch {}\\n' > $f && echo planted || echo refused: read-only",
            victim.display()
        ),
    );
    let out = s.path().join("img");
    let o = tar_build(&s, &out).args(["fake-os", "plants"]).output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(common::tail(&err, 30).into());
    }
    if victim.exists() || !err.contains("refused: read-only") {
        return Err(format!(
            "a chroot hook planted a host hook:\n{}",
            common::tail(&err, 30)
        )
        .into());
    }
    s.assert_nothing_left(&[])
}

/// Another (unprivileged) user made the build root first and planted a
/// killed build's journal in it that names a victim file: the build refuses
/// the root (exit 2, naming it) and the victim survives.
fn foreign_build_root() -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("dib-create-faults-");
    let victim = s.path().join("victim");
    std::fs::write(&victim, "precious")?;
    let planted = s.builds().join("x-123456");
    std::fs::create_dir_all(&planted)?;
    std::fs::write(planted.join("pid"), "4194304999")?;
    std::fs::write(
        planted.join("teardown.journal"),
        format!("created\t{}\n", victim.display()),
    )?;
    let nobody = nix::unistd::Uid::from_raw(65534);
    for d in [s.builds(), planted] {
        nix::unistd::chown(&d, Some(nobody), None)?;
    }
    std::fs::set_permissions(s.builds(), std::fs::Permissions::from_mode(0o777))?;
    let out = s.path().join("img");
    let o = tar_build(&s, &out).arg("fake-os").output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(2) || !err.contains("refusing the build directory") {
        return Err(format!(
            "expected a refusal: {:?}\n{}",
            o.status,
            common::tail(&err, 10)
        )
        .into());
    }
    if std::fs::read_to_string(&victim)? != "precious" {
        return Err("the planted journal was replayed".into());
    }
    Ok(())
}

/// A root.d hook starts two background processes, one of them in a session
/// of its own (out of the hook's process group): after the build succeeds,
/// neither runs any more.
fn outside_hook_stragglers() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    // Unusual durations, so that pgrep finds exactly these.
    s.element(
        "leaves",
        "root.d",
        "sleep 3171 </dev/null >/dev/null 2>&1 &\nsetsid sleep 3172 </dev/null >/dev/null 2>&1 &\nexit 0",
    );
    let out = s.path().join("img");
    let o = tar_build(&s, &out).args(["fake-os", "leaves"]).output()?;
    if !o.status.success() {
        return Err(common::tail(&String::from_utf8_lossy(&o.stderr), 30).into());
    }
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 317[12]"])
        .output()?;
    let pids = String::from_utf8_lossy(&left.stdout).trim().to_string();
    if !pids.is_empty() {
        let _ = std::process::Command::new("pkill")
            .args(["-f", "sleep 317[12]"])
            .status();
        return Err(format!("the hook's background processes outlived the build: {pids}").into());
    }
    s.assert_nothing_left(&[])
}

/// The tree's etc and usr/sbin are absolute symlinks to victim directories
/// on the host, and its /data (a partition's mount point) links to a host
/// directory: resolv.conf, policy-rc.d and fstab never land in the victims,
/// and the host directory never lands in the image.
fn tree_symlinks_stay_inside() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    let victims = s.path().join("victims");
    for d in ["etc", "sbin", "data"] {
        std::fs::create_dir_all(victims.join(d))?;
    }
    std::fs::write(victims.join("data/secret"), "host data")?;
    s.element(
        "links-out",
        "extra-data.d",
        &format!(
            "cd \"$TARGET_ROOT\"; rm -rf etc usr/sbin; ln -s {v}/etc etc; ln -s {v}/sbin usr/sbin; ln -s {v}/data data",
            v = victims.display()
        ),
    );
    let yaml = "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: data\n        size: 20MiB\n        mkfs:\n          name: mkfs_data\n          type: ext4\n          mount:\n            mount_point: /data\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n";
    let out = s.path().join("img");
    let o = s
        .command()
        .env("DIB_BLOCK_DEVICE_CONFIG", yaml)
        .args(["-n", "-t", "tar,raw", "--image-size", "0.3", "-o"])
        .arg(&out)
        .args(["fake-os", "links-out"])
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    let written: Vec<_> = ["etc", "sbin"]
        .iter()
        .flat_map(|d| std::fs::read_dir(victims.join(d)).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    if !written.is_empty() {
        return Err(format!(
            "the build wrote into host directories: {written:?}\n{}",
            common::tail(&err, 20)
        )
        .into());
    }
    if o.status.success() {
        return Err("a tree whose etc leads out of it built".into());
    }
    if std::fs::read_to_string(victims.join("data/secret"))? != "host data" {
        return Err("the host directory behind /data changed".into());
    }
    s.assert_nothing_left(&[out.with_extension("tar"), out.with_extension("raw")])
}

/// The tree's /data, a partition's mount point, links to a host directory:
/// the build refuses it, naming it, and copies nothing of the host's.
fn mount_point_symlink_refused() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    let host_dir = s.path().join("host-data");
    std::fs::create_dir_all(&host_dir)?;
    std::fs::write(host_dir.join("secret"), "host data")?;
    s.element(
        "links-data",
        "extra-data.d",
        &format!("ln -s {} \"$TARGET_ROOT/data\"", host_dir.display()),
    );
    let yaml = "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: data\n        size: 20MiB\n        mkfs:\n          name: mkfs_data\n          type: ext4\n          mount:\n            mount_point: /data\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n";
    let out = s.path().join("img");
    let o = s
        .command()
        .env("DIB_BLOCK_DEVICE_CONFIG", yaml)
        .args(["-n", "-t", "raw", "--image-size", "0.3", "-o"])
        .arg(&out)
        .args(["fake-os", "links-data"])
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || !err.contains("/data is a symlink") {
        return Err(format!(
            "expected the /data symlink refused: {:?}\n{}",
            o.status,
            common::tail(&err, 20)
        )
        .into());
    }
    if std::fs::read_to_string(host_dir.join("secret"))? != "host data" {
        return Err("the host directory changed".into());
    }
    s.assert_nothing_left(&[out.with_extension("raw")])
}

/// A hook fills the build directory's filesystem (a 64 MiB tmpfs): the
/// error says which filesystem and how much it has free.
fn out_of_space() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    let small = s.path().join("small");
    std::fs::create_dir_all(&small)?;
    common::run_ok({
        let mut c = std::process::Command::new("mount");
        c.args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&small);
        c
    })?;
    s.element(
        "fills",
        "install.d",
        "head -c 100000000 /dev/zero > /filler",
    );
    let o = s
        .command()
        .env("DIB_CREATE_BUILD_ROOT", small.join("builds"))
        .env("DIB_IMAGE_CACHE", small.join("cache"))
        .args(["-n", "-t", "tar", "-o"])
        .arg(s.path().join("img"))
        .args(["fake-os", "fills"])
        .output();
    let _ = std::process::Command::new("umount").arg(&small).status();
    let o = o?;
    let err = String::from_utf8_lossy(&o.stderr);
    let said = format!("the build directory {}", small.join("builds").display());
    if o.status.success()
        || !err.contains("ran out of space")
        || !err.contains(&said)
        || !err.contains("MiB free")
    {
        return Err(format!("{:?}\n{}", o.status, common::tail(&err, 15)).into());
    }
    assert_clean(s.path())
}

/// Log lines of a fake-OS disk build where a signal can land, in build order.
const POINTS: &[&str] = &[
    "running root.d",
    "running extra-data.d",
    "running pre-install.d",
    "running install.d",
    "running post-install.d",
    "phase cache: sealed the tree after post-root.d",
    "disk image",
    "running finalise.d",
    "writing tar output",
    "making ext4 filesystem",
    "writing qcow2 output",
    "writing raw output",
];

/// Fault injection from a fixed seed (so a failure replays): 5 SIGINT or
/// SIGTERM and 3 SIGKILL at points picked from [`POINTS`]. After a signal
/// the build exits 130 or 143 (or 0, had it finished), and nothing stays:
/// no mount, loop device, process, partial file or build directory, and the
/// outputs are complete or absent. After a SIGKILL, the next build cleans up.
/// `DIB_CREATE_FAULT_SIGNALS` and `DIB_CREATE_FAULT_KILLS` raise the counts
/// (scripts/test-long).
fn signals_at_seeded_points() -> Result<(), Failed> {
    let count = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (signals, kills) = (
        count("DIB_CREATE_FAULT_SIGNALS", 5),
        count("DIB_CREATE_FAULT_KILLS", 3),
    );
    let mut rng: u64 = 0x5eed;
    let mut next = move |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize % n
    };
    let s = Scratch::new("dib-create-faults-");
    s.element(
        "work",
        "install.d",
        "head -c 50000000 /dev/urandom > /data.bin",
    );
    // A hook in each phase, so that each phase's point is logged.
    for phase in [
        "extra-data.d",
        "pre-install.d",
        "post-install.d",
        "finalise.d",
    ] {
        s.element("work", phase, "true");
    }
    let out = s.path().join("img");
    // Each build gets an empty cache of its own: a cached one would skip
    // the points (the phase cache stays on, as users have it).
    let build = |log: &Path| -> Result<std::process::Child, Failed> {
        Ok(s.command()
            .env("DIB_IMAGE_CACHE", log.with_extension("cache"))
            .args(["-n", "-t", "tar,raw,qcow2", "--image-size", "0.5", "-o"])
            .arg(&out)
            .args(["fake-os", "block-device-mbr", "work"])
            .stderr(std::fs::File::create(log)?)
            .spawn()?)
    };
    let outputs = [
        out.with_extension("tar"),
        out.with_extension("raw"),
        out.with_extension("qcow2"),
    ];
    let mut report = Vec::new();
    for i in 0..signals + kills {
        let kill = i >= signals;
        let point = POINTS[next(POINTS.len())];
        let sig = match (kill, next(2)) {
            (true, _) => nix::sys::signal::Signal::SIGKILL,
            (false, 0) => nix::sys::signal::Signal::SIGINT,
            (false, _) => nix::sys::signal::Signal::SIGTERM,
        };
        for o in &outputs {
            let _ = std::fs::remove_file(o);
        }
        let log = s.path().join(format!("fault-{i}.log"));
        let mut child = build(&log)?;
        let reached = wait_for_log(&log, point, &mut child).is_ok();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig);
        let status = child.wait()?;
        let code = status.code();
        report.push(format!(
            "{sig:?} at {point:?} (reached: {reached}): {status:?}"
        ));
        if kill {
            // The next build replays the killed one's journal first.
            let next_log = s.path().join(format!("after-kill-{i}.log"));
            let o = tar_build(&s, &s.path().join("next"))
                .arg("fake-os")
                .stderr(std::fs::File::create(&next_log)?)
                .status()?;
            if !o.success() {
                return Err(format!(
                    "the build after {}: failed\n{}",
                    report.join("\n"),
                    common::tail(&std::fs::read_to_string(&next_log)?, 20)
                )
                .into());
            }
        } else if !matches!(code, Some(0 | 130 | 143)) {
            return Err(format!(
                "{}: unexpected exit\n{}",
                report.join("\n"),
                common::tail(&std::fs::read_to_string(&log)?, 20)
            )
            .into());
        }
        // Complete or absent: a finished build has all three, an
        // interrupted one none.
        let present: Vec<bool> = outputs.iter().map(|o| o.exists()).collect();
        if present.iter().any(|p| *p) && !present.iter().all(|p| *p) {
            return Err(format!("{}: some outputs only: {present:?}", report.join("\n")).into());
        }
        let partials: Vec<_> = std::fs::read_dir(s.path())?
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains("dib-create-partial")
            })
            .map(|e| e.path())
            .collect();
        if !partials.is_empty() {
            return Err(format!("{}: partial files left: {partials:?}", report.join("\n")).into());
        }
        s.assert_nothing_left(&[])
            .map_err(|e| format!("{}: {}", report.join("\n"), e.message().unwrap_or("")))?;
    }
    println!("{}", report.join("\n"));
    Ok(())
}

/// SIGINT after the last output is written, while the manifest hashes the
/// outputs (a few seconds for a 2 GiB raw): the build must not commit. It
/// used to finish and exit 0.
fn late_signal() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element("big", "install.d", "head -c 300000000 /dev/urandom > /big");
    let out = s.path().join("img");
    let log = s.path().join("late.log");
    let mut child = s
        .command()
        .args(["-n", "-t", "tar,raw", "--image-size", "2", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-mbr", "big"])
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    wait_for_log(&log, "writing raw output", &mut child)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    let text = std::fs::read_to_string(&log)?;
    if status.code() != Some(130) {
        return Err(format!(
            "expected exit 130, got {status:?}\n{}",
            common::tail(&text, 15)
        )
        .into());
    }
    s.assert_nothing_left(&[
        out.with_extension("tar"),
        out.with_extension("raw"),
        out.with_extension("manifest.json"),
    ])
}

/// Four builds at once, sharing the build root and the cache, two of them
/// on one -o: the three outputs are complete, the duplicate is refused, and
/// nothing is left.
fn four_concurrent_builds() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element("slow", "install.d", "sleep 3");
    let names = ["a", "b", "c", "c"];
    let mut children = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let log = s.path().join(format!("build-{i}.log"));
        let child = tar_build(&s, &s.path().join(n))
            .args(["fake-os", "slow"])
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        children.push((child, log));
    }
    let mut refused = 0;
    for (mut child, log) in children {
        let status = child.wait()?;
        let text = std::fs::read_to_string(&log)?;
        if status.success() {
            continue;
        }
        if text.contains("another dib-create") {
            refused += 1;
        } else {
            return Err(format!(
                "a concurrent build failed: {status:?}\n{}",
                common::tail(&text, 20)
            )
            .into());
        }
    }
    if refused != 1 {
        return Err(format!("expected one of the two builds of c refused, got {refused}").into());
    }
    for n in ["a", "b", "c"] {
        let listing = common::run_ok({
            let mut c = std::process::Command::new("tar");
            c.arg("-tf").arg(s.path().join(n).with_extension("tar"));
            c
        })?;
        if !listing.contains("./bin/bash") {
            return Err(format!("{n}.tar is incomplete").into());
        }
    }
    s.assert_nothing_left(&[])
}
