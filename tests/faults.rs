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
        "tar_of_fake_os_has_no_leftovers",
        &[Need::Root],
        fake_os_tar,
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

fn sigint_during_install() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-faults-");
    s.element(
        "slow",
        "install.d",
        // The setsid child leaves the hook's process group but keeps its
        // output pipe open, as dpkg under apt's pty does.
        "setsid sleep 300 & touch /tmp/marker-in-chroot; echo started; sleep 120",
    );
    let out = s.path().join("img");
    let mut child = tar_build(&s, &out).args(["fake-os", "slow"]).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // The hook runs inside the chroot; its marker appears in the tree.
    let tree_marker = || {
        std::fs::read_dir(s.builds())
            .ok()
            .and_then(|mut r| r.next())
            .and_then(Result::ok)
            .map(|e| e.path().join("mnt/tmp/marker-in-chroot").exists())
            .unwrap_or(false)
    };
    while !tree_marker() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("install.d hook never started".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
