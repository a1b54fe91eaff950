//! dib-boot-test (scripts/boot-test) against a stand-in qemu: a shell script
//! named qemu-system-x86_64, first on PATH, that hangs silently under
//! `-accel kvm` (as KVM does on our nested CI VMs) and prints a fake console
//! under TCG. The KVM device and the verdict cache are pointed into the
//! test's directory (DIB_BOOT_TEST_KVM_DEVICE, DIB_BOOT_TEST_CACHE_DIR), so
//! these tests need neither root, nor qemu, nor /dev/kvm. They prove:
//! - `--accel auto` falls back to TCG when the KVM probe hangs, says why,
//!   reaches the login prompt and caches the verdict; a second run uses the
//!   verdict and never starts qemu under KVM;
//! - a probe that passes but a boot that hangs under KVM trips the
//!   watchdog, boots again under TCG, and that verdict is cached too;
//! - login and `--run` through a real shell behind the fake console, the
//!   JSON result and the exit status of a failing command;
//! - a kernel panic fails at once with the console's tail; usage errors and
//!   missing tools exit with 2 and name the package.
//!
//! One test runs the real probe program in real qemu under TCG, whose
//! timers work: it must see the ticks in real time, which proves the
//! hand-assembled program right.

mod common;

use common::{Need, trial};
use libtest_mimic::{Arguments, Failed};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

type Test = fn() -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let x86 = [Need::HostArch("x86_64")];
    let tcg_qemu = [Need::Tool("qemu-system-x86_64")];
    let table: [(&str, &[Need], Test); 8] = [
        (
            "auto_falls_back_to_tcg_and_caches_the_verdict",
            &x86,
            auto_falls_back,
        ),
        (
            "watchdog_stops_a_hung_kvm_boot_and_caches_it",
            &x86,
            watchdog_falls_back,
        ),
        (
            "no_kvm_device_means_tcg_without_a_probe",
            &[],
            no_kvm_device,
        ),
        (
            "an_unwritable_cache_is_reported_not_fatal",
            &x86,
            unwritable_cache,
        ),
        ("login_and_run_through_the_console", &[], login_and_run),
        (
            "a_kernel_panic_fails_at_once_with_the_tail",
            &[],
            kernel_panic,
        ),
        ("usage_errors_and_missing_tools_exit_2", &[], usage_errors),
        (
            "probe_program_sees_real_time_ticks_under_tcg",
            &tcg_qemu,
            probe_under_tcg,
        ),
    ];
    let tests = table
        .into_iter()
        .map(|(name, needs, f)| trial(name, needs, f))
        .collect();
    libtest_mimic::run(&args, tests).exit();
}

/// The stand-in qemu. It logs each invocation's arguments to $STANDIN_LOG.
/// $STANDIN_KVM=probe-ok makes the KVM probe pass (18 dots 55 ms apart,
/// as real time ticks), while a KVM boot still hangs. $STANDIN_BOOT=shell
/// puts a real shell behind the login prompt; =panic panics the "kernel".
const QEMU: &str = r#"#!/bin/sh
echo "$*" >> "$STANDIN_LOG"
echo $$ >> "$STANDIN_LOG.pids"
case " $* " in *" --version "*) echo "QEMU emulator version 99.0.0 (stand-in)"; exit 0;; esac
case " $* " in
*" -accel kvm "*kvm-probe.img*)
  if [ "$STANDIN_KVM" = probe-ok ]; then
    printf 'probe\n'
    i=0; while [ $i -lt 18 ]; do printf .; sleep 0.055; i=$((i+1)); done
    printf 'KVMOK\n'
  fi
  exec sleep 1000;;
*" -accel kvm "*) exec sleep 1000;;
esac
printf 'SeaBIOS (version stand-in)\r\n'
sleep 0.2
if [ "$STANDIN_BOOT" = panic ]; then
  printf '[    0.500000] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n'
  exec sleep 1000
fi
printf '[    0.000000] Linux version 6.1.0-standin (stand-in)\r\n'
sleep 0.1
printf '\r\nDebian GNU/Linux 12 debian ttyS0\r\n\r\ndebian login: '
[ "$STANDIN_BOOT" = shell ] || exec sleep 1000
read -r _; printf '\r\ndebian login: '
read -r user; printf '%s\r\nPassword: ' "$user"
read -r pass
if [ "$pass" != secret ]; then printf '\r\nLogin incorrect\r\ndebian login: '; exec sleep 1000; fi
printf '\r\nLinux debian 6.1.0-standin\r\n'
PS1='$ ' exec sh -i
"#;

/// The stand-in qemu-img: the formats and overlays the boot needs.
const QEMU_IMG: &str = r#"#!/bin/sh
echo "qemu-img $*" >> "$STANDIN_LOG"
case "$1" in
info) echo '{"format": "raw", "virtual-size": 1048576}';;
create) for last; do :; done; : > "$last";;
esac
"#;

struct Stage {
    dir: tempfile::TempDir,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::Builder::new()
            .prefix("boot-test-standin.")
            .tempdir()
            .expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, text) in [("qemu-system-x86_64", QEMU), ("qemu-img", QEMU_IMG)] {
            let p = bin.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // A plain file stands in for /dev/kvm: readable and writable.
        std::fs::write(dir.path().join("kvm"), "").unwrap();
        std::fs::write(dir.path().join("disk.img"), "").unwrap();
        Stage { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// dib-boot-test on the stand-in disk, with the stand-ins first on PATH.
    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dib-boot-test"));
        c.arg(self.path("disk.img"))
            .args(["--timeout", "60", "--json"])
            .arg(self.path("result.json"))
            .args(extra)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.path("bin").display()),
            )
            .env("DIB_BOOT_TEST_KVM_DEVICE", self.path("kvm"))
            .env("DIB_BOOT_TEST_CACHE_DIR", self.path("cache"))
            .env_remove("DIB_BOOT_TEST_KVM_WATCHDOG")
            .env("STANDIN_LOG", self.path("invocations"))
            .env("TMPDIR", self.dir.path());
        c
    }

    fn invocations(&self) -> String {
        std::fs::read_to_string(self.path("invocations")).unwrap_or_default()
    }

    fn result(&self) -> Result<serde_json::Value, Failed> {
        let text = std::fs::read_to_string(self.path("result.json"))
            .map_err(|e| format!("no result.json: {e}"))?;
        Ok(serde_json::from_str(&text)?)
    }

    fn cache(&self) -> Result<serde_json::Value, Failed> {
        let text = std::fs::read_to_string(self.path("cache/accel-x86_64.json"))
            .map_err(|e| format!("no cached verdict: {e}"))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Runs `c`, checks its exit status, returns stdout and stderr together.
fn run(mut c: Command, want: i32) -> Result<String, Failed> {
    let started = std::time::Instant::now();
    let out: Output = c.output().map_err(|e| format!("running {c:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}(took {:.1} s)", started.elapsed().as_secs_f64());
    if out.status.code() != Some(want) {
        return Err(format!("exit status {} (wanted {want}):\n{text}", out.status).into());
    }
    Ok(text)
}

fn check(cond: bool, what: &str, text: &str) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(format!("{what}:\n{text}").into())
    }
}

/// Every qemu started by the run must be gone when it returns (each
/// stand-in logs its pid, which `exec sleep` keeps).
fn no_standin_left(stage: &Stage) -> Result<(), Failed> {
    let pids = std::fs::read_to_string(stage.path("invocations.pids")).unwrap_or_default();
    let alive: Vec<&str> = pids
        .lines()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init.
            !stat.is_empty()
                && stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
        .collect();
    check(
        alive.is_empty(),
        "stand-in qemu processes left running",
        &alive.join(" "),
    )
}

fn auto_falls_back() -> Result<(), Failed> {
    let s = Stage::new();
    let text = run(s.command(&[]), 0)?;
    check(
        text.contains(
            "accelerator tcg (KVM is unusable: a test program under KVM with -cpu host printed nothing in 8 s)",
        ),
        "the fallback and its reason",
        &text,
    )?;
    check(text.contains("login prompt after"), "login prompt", &text)?;
    let r = s.result()?;
    check(
        r["ok"] == true && r["accel"] == "tcg" && r["login_seconds"].is_f64(),
        "result",
        &r.to_string(),
    )?;
    let v = s.cache()?;
    check(
        v["verdict"]["kvm"] == false
            && v["verdict"]["source"] == "probe"
            && v["host"]["qemu_version"] == "QEMU emulator version 99.0.0 (stand-in)",
        "cached verdict",
        &v.to_string(),
    )?;
    let first = s.invocations();
    check(
        first.contains("-accel kvm"),
        "the first run probes KVM",
        &first,
    )?;
    no_standin_left(&s)?;

    std::fs::remove_file(s.path("invocations"))?;
    std::fs::remove_file(s.path("invocations.pids"))?;
    let text = run(s.command(&[]), 0)?;
    check(
        text.contains("accelerator tcg (cached verdict in"),
        "the second run uses the cached verdict",
        &text,
    )?;
    let second = s.invocations();
    check(
        !second.contains("-accel kvm") && second.contains("-accel tcg"),
        "the second run never starts qemu under KVM",
        &second,
    )?;
    no_standin_left(&s)
}

fn watchdog_falls_back() -> Result<(), Failed> {
    let s = Stage::new();
    let mut c = s.command(&[]);
    c.env("STANDIN_KVM", "probe-ok")
        .env("DIB_BOOT_TEST_KVM_WATCHDOG", "2");
    let text = run(c, 0)?;
    check(
        text.contains("KVM verdict (usable) cached") && text.contains("accelerator kvm ("),
        "the probe passes",
        &text,
    )?;
    check(
        text.contains(
            "KVM is not usable here after all: no Linux kernel message on the console within 2 s",
        ),
        "the watchdog trips and says why",
        &text,
    )?;
    check(
        text.contains("KVM verdict (unusable) cached"),
        "the watchdog's verdict is cached",
        &text,
    )?;
    let r = s.result()?;
    check(
        r["ok"] == true && r["accel"] == "tcg" && r["kvm_fallback"].is_string(),
        "result",
        &r.to_string(),
    )?;
    let v = s.cache()?;
    check(
        v["verdict"]["kvm"] == false && v["verdict"]["source"] == "watchdog",
        "cached verdict",
        &v.to_string(),
    )?;
    no_standin_left(&s)?;

    std::fs::remove_file(s.path("invocations"))?;
    std::fs::remove_file(s.path("invocations.pids"))?;
    let mut c = s.command(&[]);
    c.env("STANDIN_KVM", "probe-ok");
    let text = run(c, 0)?;
    check(
        text.contains("accelerator tcg (cached verdict in"),
        "the second run uses the cached verdict",
        &text,
    )?;
    let second = s.invocations();
    check(
        !second.contains("-accel kvm"),
        "the second run never starts qemu under KVM",
        &second,
    )?;
    no_standin_left(&s)
}

fn no_kvm_device() -> Result<(), Failed> {
    let s = Stage::new();
    let mut c = s.command(&[]);
    c.env("DIB_BOOT_TEST_KVM_DEVICE", s.path("no-such-kvm"));
    let text = run(c, 0)?;
    check(
        text.contains("no-such-kvm is missing or not accessible")
            || text.contains("the host is not x86_64"),
        "the reason",
        &text,
    )?;
    check(
        !s.invocations().contains("-accel kvm"),
        "no KVM probe",
        &s.invocations(),
    )?;
    check(!s.path("cache").exists(), "nothing cached", &text)
}

fn unwritable_cache() -> Result<(), Failed> {
    let s = Stage::new();
    std::fs::write(s.path("a-file"), "")?;
    let mut c = s.command(&[]);
    c.env("DIB_BOOT_TEST_CACHE_DIR", s.path("a-file/cache"));
    let text = run(c, 0)?;
    check(
        text.contains("cannot cache the KVM verdict in")
            && text.contains("every run will decide again"),
        "the cache failure is reported",
        &text,
    )?;
    check(
        text.contains("login prompt after"),
        "the boot goes on",
        &text,
    )
}

fn login_and_run() -> Result<(), Failed> {
    let s = Stage::new();
    let mut c = s.command(&[
        "--accel",
        "tcg",
        "--login",
        "devuser:secret",
        "--run",
        "echo hello; echo world",
        "--run",
        "cat; false",
    ]);
    c.env("STANDIN_BOOT", "shell");
    let text = run(c, 1)?;
    check(text.contains("logged in as devuser"), "login", &text)?;
    check(
        text.contains("--- $ echo hello; echo world\nhello\nworld\n--- exit status 0"),
        "first command's output",
        &text,
    )?;
    check(
        text.contains("boot-test: FAILED: `cat; false` exited with status 1"),
        "the failing command fails the test",
        &text,
    )?;
    let r = s.result()?;
    let cmds = &r["commands"];
    check(
        r["ok"] == false
            && cmds[0]["output"] == "hello\nworld"
            && cmds[0]["status"] == 0
            && cmds[1]["command"] == "cat; false"
            && cmds[1]["status"] == 1
            && cmds[1]["output"] == ""
            && r["error"] == "`cat; false` exited with status 1",
        "result",
        &r.to_string(),
    )?;

    // A wrong password is refused.
    let mut c = s.command(&["--accel", "tcg", "--login", "devuser:wrong"]);
    c.env("STANDIN_BOOT", "shell");
    let text = run(c, 1)?;
    check(
        text.contains("login as devuser was refused (Login incorrect)"),
        "refused login",
        &text,
    )?;
    no_standin_left(&s)
}

fn kernel_panic() -> Result<(), Failed> {
    let s = Stage::new();
    let mut c = s.command(&["--accel", "tcg", "--log"]);
    c.arg(s.path("console.log")).env("STANDIN_BOOT", "panic");
    let started = std::time::Instant::now();
    let text = run(c, 1)?;
    check(
        started.elapsed() < Duration::from_secs(20),
        "the failure comes at once, not at the timeout",
        &text,
    )?;
    check(
        text.contains(
            "FAILED: boot failed: Kernel panic - not syncing: VFS: Unable to mount root fs",
        ),
        "the panic line",
        &text,
    )?;
    check(
        text.contains("console lines:\n") && text.contains("  | SeaBIOS (version stand-in)"),
        "the console's tail",
        &text,
    )?;
    let log = std::fs::read_to_string(s.path("console.log"))?;
    check(
        log.contains("Kernel panic"),
        "--log keeps the console",
        &log,
    )?;
    check(s.result()?["ok"] == false, "result", "")?;
    no_standin_left(&s)
}

fn usage_errors() -> Result<(), Failed> {
    let s = Stage::new();
    let mut c = s.command(&[]);
    c.arg("--run").arg("true");
    let text = run(c, 2)?;
    check(
        text.contains("--run needs --login USER:PASS"),
        "--run without --login",
        &text,
    )?;

    let mut c = Command::new(env!("CARGO_BIN_EXE_dib-boot-test"));
    c.arg(s.path("missing.qcow2"));
    let text = run(c, 2)?;
    check(
        text.contains("missing.qcow2: no such file"),
        "missing image",
        &text,
    )?;

    let mut c = s.command(&[]);
    c.env("PATH", s.path("empty"));
    let text = run(c, 2)?;
    check(
        text.contains(
            "qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)",
        ),
        "missing qemu names its package",
        &text,
    )?;

    let mut c = s.command(&["--accel", "fast"]);
    c.env("PATH", s.path("empty"));
    run(c, 2)?;

    let help = run(s.command(&["--help"]), 0)?;
    for env in [
        "DIB_BOOT_TEST_KVM_DEVICE",
        "DIB_BOOT_TEST_CACHE_DIR",
        "DIB_BOOT_TEST_KVM_WATCHDOG",
    ] {
        check(
            help.contains(env),
            &format!("--help documents {env}"),
            &help,
        )?;
    }
    Ok(())
}

fn probe_under_tcg() -> Result<(), Failed> {
    use dib::boot::accel;
    let dir = tempfile::tempdir()?;
    let qemu = dib::host::tools::find("qemu-system-x86_64").ok_or("no qemu")?;
    let (out, end) = accel::run_probe(&qemu, dir.path(), "tcg", None, accel::PROBE_TIMEOUT)?;
    let text: String = out.iter().map(|(_, b)| *b as char).collect();
    println!("probe under TCG: {text:?}, {end:?}");
    let said = accel::judge(&out, &end, "TCG").map_err(|e| format!("{e}: {text:?}"))?;
    println!("{said}");
    Ok(())
}
