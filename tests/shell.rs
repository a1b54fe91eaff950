//! Runs the shell tests (`tests/shell/*.sh`): the element helpers, the
//! dib-run-parts order, the sudo stand-in, and shellcheck over every hook.
//! Each script exits non-zero on failure. Their own preconditions are
//! checked here, so a missing one is a SKIP line (a failure under
//! DIB_CREATE_REQUIRE_ALL=1) like everywhere else; a script that still says
//! `skip:` fails, because its precondition was met.

mod common;

use common::{Need, trial};
use libtest_mimic::{Arguments, Failed};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shell");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/shell")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    let tests = scripts
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            trial(&name, needs(&name), move || run_script(&p))
        })
        .collect();
    libtest_mimic::run(&args, tests).exit();
}

/// What a script needs from the host beyond bash and coreutils.
fn needs(script: &str) -> &'static [Need] {
    match script {
        "sudo-shim" => &[Need::Root],
        "shellcheck" => &[Need::Tool("shellcheck")],
        _ => &[],
    }
}

fn run_script(script: &Path) -> Result<(), Failed> {
    let out = Command::new("bash")
        .arg(script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("{} failed ({}):\n{text}", script.display(), out.status).into());
    }
    if text.lines().any(|l| l.starts_with("skip:")) {
        return Err(format!(
            "{} skipped although its needs are met:\n{text}",
            script.display()
        )
        .into());
    }
    Ok(())
}
