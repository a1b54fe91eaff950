//! dib-create's own settings: every `DIB_CREATE_*` variable, SOURCE_DATE_EPOCH
//! and the flags that steer the executor, read once when the plan is made and
//! checked there. The executor reads none of them from the environment.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::Cli;
use crate::error::UsageError;

/// Where build directories live unless `DIB_CREATE_BUILD_ROOT` says: on
/// disk, since a root tree does not fit a small tmpfs.
pub const DEFAULT_BUILD_ROOT: &str = "/var/tmp/dib-create";

/// Where finalise.d runs for a disk build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinaliseOn {
    /// The staging tree; filesystems are built from it afterwards (default:
    /// reproducible, no kernel mount of the image).
    Tree,
    /// The image's own filesystems, built first and mounted, for hooks that
    /// need their files on the real device (DIB's behaviour).
    Mounted,
}

/// The phase cache's settings.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseCacheSettings {
    /// Why it is off for this build, when it is.
    pub off: Option<String>,
    /// A hook that ran at least this long is followed by a seal.
    pub seal_after_secs: u64,
    /// A snapshot whose archive cannot be checked is used up to this age.
    pub max_unchecked_age_secs: u64,
    /// Snapshots unused for this many days are swept.
    pub keep_days: u64,
    /// Stored outputs kept per tree.
    pub keep_outputs: u64,
    /// `DIB_CREATE_PHASE_CACHE_KEY_ENV=all`: key every hook variable, not
    /// only those the build's files name.
    pub key_all_env: bool,
    /// `DIB_CREATE_PHASE_CACHE_MAX_SIZE`: the cap on the cache's size on
    /// disk; least recently used entries go first.
    pub max_bytes: u64,
}

/// Where SOURCE_DATE_EPOCH came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochFrom {
    /// The caller's environment.
    Caller,
    /// The lockfile the build is locked to.
    Lockfile,
}

/// Every setting the executor acts on.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Where build directories are made (`DIB_CREATE_BUILD_ROOT`).
    pub build_root: PathBuf,
    /// A private mount namespace for the build (`DIB_CREATE_NO_NAMESPACE=1`
    /// turns it off, so tests can prove the journal alone suffices).
    pub private_namespace: bool,
    /// The shared cache (`--image-cache`, `DIB_IMAGE_CACHE`).
    pub image_cache: PathBuf,
    /// `--offline`.
    pub offline: bool,
    pub phase_cache: PhaseCacheSettings,
    /// `DIB_CREATE_FINALISE=tree|mounted`.
    pub finalise: FinaliseOn,
    /// Host copies of architecture-neutral tools for foreign chroots
    /// (`DIB_CREATE_NATIVE_TOOLS=0` turns them off).
    pub native_tools: bool,
    /// SOURCE_DATE_EPOCH: clamps times, and seeds disk ids and UUIDs.
    pub source_date_epoch: Option<u64>,
    pub epoch_from: Option<EpochFrom>,
    /// `break=`: where to drop into a shell.
    pub break_points: Vec<String>,
    /// `--logfile`.
    pub logfile: Option<PathBuf>,
    /// `--keep-on-failure`.
    pub keep_on_failure: bool,
    /// `--checksum`.
    pub checksum: bool,
    /// The `-p` packages, installed after install.d.
    pub extra_packages: Vec<String>,
    /// The shipped data (elements, `$_LIB`, helpers): `DIB_CREATE_DATA_DIR`,
    /// else found beside the executable.
    pub data_dir: PathBuf,
    /// Where a failed build leaves its log for the user (`TMPDIR`, else /tmp).
    pub failed_log_dir: PathBuf,
}

impl Settings {
    /// Reads the settings from the command line and the caller's environment.
    pub fn read(
        cli: &Cli,
        caller: &BTreeMap<String, String>,
        image_cache: PathBuf,
        lock: &crate::lock::Request,
    ) -> Result<Settings, UsageError> {
        let var = |k: &str| caller.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let (source_date_epoch, epoch_from) = match var("SOURCE_DATE_EPOCH") {
            Some(v) => (
                Some(seconds("SOURCE_DATE_EPOCH", v)?),
                Some(EpochFrom::Caller),
            ),
            None => match lock.locked().and_then(|(_, l)| l.header.source_date_epoch) {
                Some(t) => (Some(t), Some(EpochFrom::Lockfile)),
                None => (None, None),
            },
        };
        let break_points: Vec<String> = var("break")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        check_break_points(&break_points)?;
        let off = phase_cache_off(cli, var("DIB_CREATE_PHASE_CACHE"), lock, &break_points)?;
        let number = |k: &str, default: u64| var(k).map_or(Ok(default), |v| seconds(k, v));
        Ok(Settings {
            build_root: var("DIB_CREATE_BUILD_ROOT")
                .map_or_else(|| PathBuf::from(DEFAULT_BUILD_ROOT), PathBuf::from),
            private_namespace: flag(var("DIB_CREATE_NO_NAMESPACE"), "DIB_CREATE_NO_NAMESPACE")?
                .is_none_or(|on| !on),
            image_cache,
            offline: cli.offline,
            phase_cache: PhaseCacheSettings {
                off,
                seal_after_secs: number("DIB_CREATE_PHASE_CACHE_HOOK_SECS", 2)?,
                max_unchecked_age_secs: number("DIB_CREATE_PHASE_CACHE_MAX_AGE", 24 * 3600)?,
                keep_days: number("DIB_CREATE_PHASE_CACHE_KEEP_DAYS", 14)?,
                keep_outputs: number("DIB_CREATE_PHASE_CACHE_KEEP_OUTPUTS", 2)?,
                key_all_env: key_all_env(var("DIB_CREATE_PHASE_CACHE_KEY_ENV"))?,
                max_bytes: var("DIB_CREATE_PHASE_CACHE_MAX_SIZE")
                    .map_or(Ok(DEFAULT_CACHE_MAX_BYTES), |v| {
                        bytes("DIB_CREATE_PHASE_CACHE_MAX_SIZE", v)
                    })?,
            },
            finalise: finalise_on(var("DIB_CREATE_FINALISE"))?,
            native_tools: flag(var("DIB_CREATE_NATIVE_TOOLS"), "DIB_CREATE_NATIVE_TOOLS")?
                .is_none_or(|on| on),
            source_date_epoch,
            epoch_from,
            break_points,
            logfile: cli.logfile.clone(),
            keep_on_failure: cli.keep_on_failure,
            checksum: cli.checksum,
            extra_packages: cli.extra_packages(),
            data_dir: var("DIB_CREATE_DATA_DIR")
                .map_or_else(crate::paths::installed_data_dir, PathBuf::from),
            failed_log_dir: PathBuf::from(var("TMPDIR").unwrap_or("/tmp")),
        })
    }

    /// The seed of disk ids and UUIDs: SOURCE_DATE_EPOCH makes them
    /// reproducible; without it they are random.
    pub fn seed(&self) -> Option<u64> {
        self.source_date_epoch
    }

    /// True when `point` (e.g. "before-install") is a `break=` point.
    pub fn breaks_at(&self, point: &str) -> bool {
        self.break_points.iter().any(|p| p == point)
    }
}

/// A whole number of seconds (or a count); anything else is bad input.
fn seconds(name: &str, v: &str) -> Result<u64, UsageError> {
    v.trim().parse().map_err(|_| {
        UsageError(format!(
            "{name}={v:?} is not a whole number (of seconds since 1970 for SOURCE_DATE_EPOCH); \
             set it to a number or unset it"
        ))
    })
}

/// `1` or `0` (unset: None).
fn flag(v: Option<&str>, name: &str) -> Result<Option<bool>, UsageError> {
    match v {
        None => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(other) => Err(UsageError(format!(
            "{name}={other:?} is not a switch; use 1 or 0"
        ))),
    }
}

fn finalise_on(v: Option<&str>) -> Result<FinaliseOn, UsageError> {
    match v {
        None | Some("tree") => Ok(FinaliseOn::Tree),
        Some("mounted") => Ok(FinaliseOn::Mounted),
        Some(other) => Err(UsageError(format!(
            "DIB_CREATE_FINALISE={other:?} is not a finalise mode; use tree or mounted"
        ))),
    }
}

/// DIB's break points: before-/after- a phase (its name without `.d`), and
/// after-error.
fn check_break_points(points: &[String]) -> Result<(), UsageError> {
    for p in points {
        let phase = p
            .strip_prefix("before-")
            .or_else(|| p.strip_prefix("after-"));
        let ok = p == "after-error"
            || phase.is_some_and(|ph| {
                crate::phase::hook_dirs().any(|d| d.trim_end_matches(".d") == ph)
            });
        if !ok {
            return Err(UsageError(format!(
                "break={p}: not a break point; use before-<phase>, after-<phase> (e.g. before-install) or after-error"
            )));
        }
    }
    Ok(())
}

/// Why the phase cache is off for this build, if it is.
/// The phase cache's default size cap: about six debian-minimal vm builds'
/// layers and outputs.
const DEFAULT_CACHE_MAX_BYTES: u64 = 10 << 30;

/// A size such as `10G`, `512M` or `1073741824` (binary units; `GiB` too).
fn bytes(key: &str, v: &str) -> Result<u64, UsageError> {
    let t = v.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let shift = match t[digits..]
        .trim()
        .trim_end_matches("iB")
        .trim_end_matches('B')
    {
        "" => Some(0),
        "K" | "k" => Some(10),
        "M" => Some(20),
        "G" => Some(30),
        "T" => Some(40),
        _ => None,
    };
    match (t[..digits].parse::<u64>(), shift) {
        (Ok(n), Some(s)) if n.checked_shl(s).is_some_and(|b| b >> s == n) => Ok(n << s),
        _ => Err(UsageError(format!(
            "{key}={v}: give a size such as 10G, 512M or a number of bytes"
        ))),
    }
}

/// `DIB_CREATE_PHASE_CACHE_KEY_ENV`: `all`, or `referenced` (the default).
fn key_all_env(v: Option<&str>) -> Result<bool, UsageError> {
    match v {
        None | Some("" | "referenced") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => Err(UsageError(format!(
            "DIB_CREATE_PHASE_CACHE_KEY_ENV={other}: use `all` (key every hook variable) or `referenced` (the default: only those the build's files name)"
        ))),
    }
}

fn phase_cache_off(
    cli: &Cli,
    env: Option<&str>,
    lock: &crate::lock::Request,
    breaks: &[String],
) -> Result<Option<String>, UsageError> {
    let switched_off = flag(env, "DIB_CREATE_PHASE_CACHE")? == Some(false);
    Ok(if cli.no_phase_cache {
        Some("--no-phase-cache".into())
    } else if switched_off {
        Some("DIB_CREATE_PHASE_CACHE=0".into())
    } else if lock.records() {
        Some("recording a lockfile needs every phase to run".into())
    } else if !breaks.is_empty() {
        Some("break= is set".into())
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_take_binary_units() {
        let b = |v| bytes("K", v);
        assert_eq!(b("10G").unwrap(), 10 << 30);
        assert_eq!(b("512MiB").unwrap(), 512 << 20);
        assert_eq!(b("4096").unwrap(), 4096);
        assert_eq!(b("2 T").unwrap(), 2 << 40);
        for bad in ["", "G", "1.5G", "10X", "99999999999999T"] {
            assert!(b(bad).is_err(), "{bad}");
        }
    }
    use clap::Parser;

    fn read(env: &[(&str, &str)]) -> Result<Settings, UsageError> {
        let cli = Cli::try_parse_from(["dib-create", "x"]).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::read(&cli, &env, "/c".into(), &crate::lock::Request::Off)
    }

    #[test]
    fn defaults() {
        let s = read(&[]).unwrap();
        assert_eq!(s.build_root, PathBuf::from(DEFAULT_BUILD_ROOT));
        assert!(s.private_namespace && s.native_tools);
        assert_eq!(s.finalise, FinaliseOn::Tree);
        assert!(s.phase_cache.off.is_none());
        assert_eq!(s.source_date_epoch, None);
    }

    #[test]
    fn values_are_checked() {
        for (k, v, says) in [
            ("SOURCE_DATE_EPOCH", "yesterday", "SOURCE_DATE_EPOCH"),
            ("DIB_CREATE_FINALISE", "later", "tree or mounted"),
            ("DIB_CREATE_PHASE_CACHE", "off", "use 1 or 0"),
            ("DIB_CREATE_PHASE_CACHE_HOOK_SECS", "-1", "HOOK_SECS"),
            ("break", "before-lunch", "before-lunch"),
        ] {
            let e = read(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(says), "{k}={v}: {e}");
        }
        let s = read(&[
            ("SOURCE_DATE_EPOCH", "1700000000"),
            ("break", "after-install"),
        ])
        .unwrap();
        assert_eq!(s.source_date_epoch, Some(1_700_000_000));
        assert!(s.breaks_at("after-install"));
        assert_eq!(s.phase_cache.off.as_deref(), Some("break= is set"));
    }
}
