//! Capturing what the elements' environment.d files export: source them with
//! bash, as DIB's run-parts does (under `set -eu -o pipefail`, in order), in a
//! child shell that starts from exactly the given environment, then read
//! `env -0` back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::ElementError;
use crate::host::{Cmd, CmdError};

/// Separates whatever the files print on stdout from the environment dump.
const ENV_MARKER: &str = "\0__DIB_CREATE_ENVIRONMENT__\0";
/// Lets the shell report, on its way out, which file it was sourcing.
const FAILED_MARKER: &str = "__dib_create_failed_while_sourcing=";

/// Variables bash itself sets; they are not part of what the elements export.
const SHELL_NOISE: [&str; 4] = ["_", "SHLVL", "PWD", "OLDPWD"];

/// The script run by bash; the files come as positional parameters.
const SOURCE_SCRIPT: &str = r#"
__dib_create_current=
trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$__dib_create_current" ]; then printf "%s%s\n" "__dib_create_failed_while_sourcing=" "$__dib_create_current" >&2; fi' EXIT
set -eu -o pipefail
for __dib_create_current in "$@"; do
    source "$__dib_create_current"
done
__dib_create_current=
printf '\0__DIB_CREATE_ENVIRONMENT__\0'
env -0
"#;

/// Sources `files` in order starting from `base` (and nothing else), in `cwd`,
/// and returns the exported environment afterwards.
pub fn source_environment(
    files: &[PathBuf],
    base: &BTreeMap<String, String>,
    cwd: &Path,
) -> Result<BTreeMap<String, String>, ElementError> {
    source_environment_in(files, base, cwd, None)
}

/// As [`source_environment`], inside `chroot` when given (the chroot phases
/// source environment.d where their hooks run; `files` are then chroot paths).
pub fn source_environment_in(
    files: &[PathBuf],
    base: &BTreeMap<String, String>,
    cwd: &Path,
    chroot: Option<&Path>,
) -> Result<BTreeMap<String, String>, ElementError> {
    read_result(command(files, base, cwd, chroot).run_here(), base)
}

/// The bash command that sources `files` from `base` and dumps the result
/// (stdout captured); run it with any host, then hand the outcome to
/// [`read_result`].
pub fn command(
    files: &[PathBuf],
    base: &BTreeMap<String, String>,
    cwd: &Path,
    chroot: Option<&Path>,
) -> Cmd {
    let cmd = Cmd::new("sourcing environment.d files", "bash")
        .args(["-c", SOURCE_SCRIPT, "dib-create-environment"])
        .args(files)
        .env_clear()
        .envs(base)
        .capture();
    match chroot {
        Some(root) => cmd.chroot(root),
        None => cmd.cwd(cwd),
    }
}

/// The environment a [`command`] run left, or an error naming the file that failed.
pub fn read_result(
    run: Result<crate::host::Output, CmdError>,
    base: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ElementError> {
    let out = run.map_err(failure_naming_file)?;
    Ok(parse_env_dump(&out.stdout, base))
}

/// What a [`command`] prints for an environment `env` (for a stand-in host
/// that cannot chroot).
#[cfg(test)]
pub(crate) fn dump(env: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = ENV_MARKER.as_bytes().to_vec();
    for (k, v) in env {
        out.extend(format!("{k}={v}\0").as_bytes());
    }
    out
}

/// Turns a failed bash run into an error that names the environment file.
fn failure_naming_file(err: CmdError) -> ElementError {
    let CmdError::Failed { tail, .. } = &err else {
        return ElementError::EnvironmentRun(err);
    };
    let file = tail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(FAILED_MARKER));
    match file {
        Some(file) => {
            let rest: Vec<&str> = tail
                .lines()
                .filter(|l| !l.starts_with(FAILED_MARKER))
                .collect();
            ElementError::EnvironmentFile {
                file: PathBuf::from(file),
                tail: if rest.is_empty() {
                    String::new()
                } else {
                    format!(":\n{}", rest.join("\n"))
                },
            }
        }
        None => ElementError::EnvironmentRun(err),
    }
}

/// Parses the `env -0` dump that follows the marker. Exported bash functions
/// and the shell's own bookkeeping variables are dropped, unless `base` had them.
fn parse_env_dump(out: &[u8], base: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let marker = ENV_MARKER.as_bytes();
    let start = out
        .windows(marker.len())
        .rposition(|w| w == marker)
        .map(|p| p + marker.len())
        .unwrap_or(out.len());
    let mut env = BTreeMap::new();
    for record in out[start..].split(|b| *b == 0) {
        let record = String::from_utf8_lossy(record);
        let Some((key, value)) = record.split_once('=') else {
            continue;
        };
        let noise = SHELL_NOISE.contains(&key) || key.starts_with("BASH_FUNC_");
        if noise && !base.contains_key(key) {
            continue;
        }
        env.insert(key.to_owned(), value.to_owned());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn base() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            ),
            ("KEEP".to_string(), "kept".to_string()),
        ])
    }

    #[test]
    fn exported_variables_are_captured_in_order() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("10-a");
        let b = t.path().join("20-b");
        fs::write(
            &a,
            "export DISTRO_NAME=debian\nexport MULTI='x\ny'\nLOCAL=1\necho noise\n",
        )
        .unwrap();
        fs::write(
            &b,
            "export DIB_RELEASE=${DIB_RELEASE:-bookworm}-$DISTRO_NAME\nunset KEEP\n",
        )
        .unwrap();
        let env = source_environment(&[a, b], &base(), t.path()).unwrap();
        assert_eq!(env["DISTRO_NAME"], "debian");
        assert_eq!(env["DIB_RELEASE"], "bookworm-debian");
        assert_eq!(env["MULTI"], "x\ny");
        assert!(!env.contains_key("LOCAL"));
        assert!(!env.contains_key("KEEP"));
        assert!(!env.contains_key("SHLVL"));
        assert!(!env.contains_key("_"));
    }

    #[test]
    fn caller_environment_does_not_leak_in() {
        let t = tempfile::tempdir().unwrap();
        let env = source_environment(&[], &base(), t.path()).unwrap();
        assert_eq!(env.keys().collect::<Vec<_>>(), ["KEEP", "PATH"]);
    }

    #[test]
    fn failing_file_is_named_with_its_stderr() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("10-ok");
        let b = t.path().join("20-bad");
        fs::write(&a, "export A=1\n").unwrap();
        fs::write(&b, "echo 'something broke' >&2\nfalse\nexport B=1\n").unwrap();
        let err = source_environment(&[a, b.clone()], &base(), t.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("sourcing {} failed", b.display())),
            "{msg}"
        );
        assert!(msg.contains("something broke"), "{msg}");
        assert!(!msg.contains(FAILED_MARKER), "{msg}");
    }

    #[test]
    fn unset_variable_is_a_failure() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("10-unset");
        fs::write(&a, "echo $NOT_SET_ANYWHERE\n").unwrap();
        let msg = source_environment(std::slice::from_ref(&a), &base(), t.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("10-unset"), "{msg}");
        assert!(msg.contains("NOT_SET_ANYWHERE"), "{msg}");
    }
}
