//! The log a user or a CI system reads, with the tiny fake OS (seconds per
//! build, no network): `--log-format json` parses back event by event and
//! agrees with the outputs on disk; a failed build ends with an error event
//! and still leaves its report; on a terminal a live status line shows the
//! phase and the hook.

mod common;

use common::{Need, Scratch, trial};
use libtest_mimic::{Arguments, Failed};
use serde_json::Value;
use std::path::Path;

fn main() {
    let args = Arguments::from_args();
    let needs = common::FAKE_OS_DISK;
    let mut pty = needs.to_vec();
    pty.push(Need::Tool("script"));
    let tests = vec![
        trial(
            "json_log_parses_back_and_matches_the_outputs",
            &needs,
            json_log_matches,
        ),
        trial(
            "a_failed_build_ends_with_an_error_event_and_a_report",
            &needs,
            failed_build,
        ),
        trial("a_terminal_gets_a_status_line", &pty, status_line),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Each line of stderr, parsed; a line that is not a JSON event fails.
fn events(stderr: &[u8]) -> Result<Vec<Value>, Failed> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).map_err(|e| format!("not a JSON event ({e}): {l}"))?;
            if v["event"].is_string() && v["time"].is_f64() {
                Ok(v)
            } else {
                Err(format!("an event without `event` and `time`: {l}").into())
            }
        })
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn fake_build(s: &Scratch, out: &Path) -> std::process::Command {
    let mut c = s.command();
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["-n", "--image-size", "0.2", "-t", "tar,raw", "-o"])
        .arg(out)
        .args(["fake-os", "block-device-mbr", "log-test"]);
    c
}

fn json_log_matches() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-log-");
    s.element("log-test", "install.d", "echo hello from install.d");
    let out = s.path().join("img");
    let o = fake_build(&s, &out).arg("--log-format=json").output()?;
    let ev = events(&o.stderr)?;
    if !o.status.success() {
        return Err(format!("the build failed: {:?}", ev.last()).into());
    }
    let starts = of_kind(&ev, "hook_start");
    let ends = of_kind(&ev, "hook_end");
    if starts.is_empty() || starts.len() != ends.len() {
        return Err(format!("{} hook starts, {} hook ends", starts.len(), ends.len()).into());
    }
    let ours = ends
        .iter()
        .find(|e| e["element"] == "log-test")
        .ok_or("no hook_end of the log-test element")?;
    if ours["phase"] != "install.d" || ours["exit_code"] != 0 || ours["ok"] != true {
        return Err(format!("the hook's end: {ours}").into());
    }
    let said = ev
        .iter()
        .any(|e| e["event"] == "output" && e["line"] == "hello from install.d");
    if !said {
        return Err("the hook's output line is not an output event".into());
    }
    if of_kind(&ev, "phase_start").len() != of_kind(&ev, "phase_end").len() {
        return Err("phase starts and ends do not pair".into());
    }
    for ext in ["tar", "raw"] {
        let file = out.with_extension(ext);
        let written = of_kind(&ev, "output_written")
            .into_iter()
            .find(|e| e["path"] == file.display().to_string())
            .ok_or(format!("no output_written for {}", file.display()))?;
        let sha = common::sha256(&file)?;
        if written["sha256"] != sha.as_str() || written["bytes"] != std::fs::metadata(&file)?.len()
        {
            return Err(format!("{written} does not match {} ({sha})", file.display()).into());
        }
    }
    let report = of_kind(&ev, "report");
    let path = report
        .first()
        .and_then(|r| r["path"].as_str())
        .ok_or("no report event")?;
    let html = std::fs::read_to_string(path)?;
    if !html.contains("log-test") {
        return Err("the report does not name the build's element".into());
    }
    s.assert_nothing_left(&[])
}

fn failed_build() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-log-fail-");
    s.element("log-test", "install.d", "echo about to fail\nexit 3");
    let out = s.path().join("img");
    let o = fake_build(&s, &out).arg("--log-format=json").output()?;
    if o.status.code() != Some(1) {
        return Err(format!("exit status {}", o.status).into());
    }
    let ev = events(&o.stderr)?;
    let failed = of_kind(&ev, "hook_end")
        .into_iter()
        .find(|e| e["ok"] == false)
        .ok_or("no failed hook_end")?;
    if failed["exit_code"] != 3 || failed["element"] != "log-test" {
        return Err(format!("the failed hook: {failed}").into());
    }
    let last = ev.last().ok_or("no events")?;
    if last["event"] != "error" || last["exit_code"] != 1 {
        return Err(format!("the last event: {last}").into());
    }
    let report = std::fs::read_to_string(format!("{}.report.html", out.display()))
        .map_err(|e| format!("the failed build left no report: {e}"))?;
    if !report.contains("FAILED") || !report.contains("exit code 3") {
        return Err("the report of the failed build does not say it failed and why".into());
    }
    s.assert_nothing_left(&[out.with_extension("tar"), out.with_extension("raw")])
}

/// Under a pseudo-terminal (script(1)), the status line is drawn (ANSI
/// line erases) and names the phase with the hook's position.
fn status_line() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-log-pty-");
    // Long enough for several redraws (ten a second) during the hook.
    s.element("log-test", "install.d", "sleep 1.5");
    let out = s.path().join("img");
    let build = fake_build(&s, &out);
    let mut line: Vec<String> = vec![build.get_program().to_string_lossy().into_owned()];
    line.extend(build.get_args().map(|a| a.to_string_lossy().into_owned()));
    let quoted: Vec<String> = line.iter().map(|a| format!("'{a}'")).collect();
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &quoted.join(" "), "/dev/null"])
        .env("TERM", "xterm");
    for (k, v) in build.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output()?;
    let screen = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!("the build failed:\n{}", common::tail(&screen, 40)).into());
    }
    let drawn = screen.contains("\u{1b}[2K") || screen.contains("\u{1b}[K");
    let named = screen.contains("install.d [") && screen.contains("50-hook (log-test)");
    if !drawn || !named {
        return Err(format!(
            "no status line (erases: {drawn}, phase and hook: {named}):\n{}",
            common::tail(&screen, 40)
        )
        .into());
    }
    // The log lines still reach the terminal, above the status line.
    if !screen.contains("==> wrote") {
        return Err("the log lines are missing on the terminal".into());
    }
    s.assert_nothing_left(&[])
}
