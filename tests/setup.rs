//! What a user installs around the binary: the bash completions load and
//! complete flags and element names; the manual page renders with man; the
//! long version names the git revision and the host tools.

mod common;

use common::{Need, dib_create, run_ok, trial};
use libtest_mimic::{Arguments, Failed};
use std::process::Command;

fn main() {
    let args = Arguments::from_args();
    let tests = vec![
        trial(
            "bash_completions_load_and_complete",
            &[Need::Tool("bash")],
            bash_completions,
        ),
        trial("man_page_renders", &[Need::Tool("man")], man_page),
        trial("version_names_the_revision_and_tools", &[], version),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Sources the script in a fresh bash and asks it to complete a word.
fn complete(script: &str, words: &str) -> Result<String, Failed> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("dib-create.bash");
    std::fs::write(&file, script)?;
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_dib-create"))
        .parent()
        .unwrap()
        .to_path_buf();
    let program = format!(
        "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
         _dib_create_with_elements dib-create \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let mut c = Command::new("bash");
    c.args(["-c", &program])
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("DIB_CREATE_DATA_DIR", env!("CARGO_MANIFEST_DIR"));
    run_ok(c)
}

fn bash_completions() -> Result<(), Failed> {
    let mut c = dib_create();
    c.args(["--completions", "bash"]);
    let script = run_ok(c)?;
    let flags = complete(&script, "dib-create --lockf")?;
    if !flags.lines().any(|l| l == "--lockfile") {
        return Err(format!("--lockf did not complete to --lockfile: {flags:?}").into());
    }
    let elements = complete(&script, "dib-create debian-mi")?;
    if !elements.lines().any(|l| l == "debian-minimal") {
        return Err(format!("debian-mi did not complete to debian-minimal: {elements:?}").into());
    }
    Ok(())
}

fn man_page() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let page = dir.path().join("dib-create.1");
    let mut c = dib_create();
    c.arg("--man");
    std::fs::write(&page, run_ok(c)?)?;
    let mut m = Command::new("man");
    m.arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("COLUMNS", "100");
    let text = run_ok(m)?;
    for want in ["NAME", "dib-create - Compose disk images", "--lockfile"] {
        if !text.contains(want) {
            return Err(format!("the rendered page lacks {want:?}:\n{text}").into());
        }
    }
    Ok(())
}

fn version() -> Result<(), Failed> {
    let mut c = dib_create();
    c.arg("--version");
    let v = run_ok(c)?;
    for want in [
        "dib-create 0.1.0 (git ",
        "host tools:",
        "qemu-img:",
        "mke2fs:",
    ] {
        if !v.contains(want) {
            return Err(format!("--version lacks {want:?}:\n{v}").into());
        }
    }
    Ok(())
}
