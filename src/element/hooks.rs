//! Merging the phase directories of all chosen elements, in DIB's
//! `LANG=C sort -n` order with DIB's file-name filter.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::ElementError;

/// The directory of environment files sourced before each phase.
pub const ENVIRONMENT_DIR: &str = "environment.d";

/// A file of one element's phase directory.
#[derive(Clone, Debug)]
struct Entry {
    element: String,
    name: String,
    path: PathBuf,
}

/// Phase → the runnable hooks of all elements, in run order. Every phase is present.
pub fn collect_hooks(
    elements: &[(String, PathBuf)],
) -> Result<BTreeMap<String, Vec<PathBuf>>, ElementError> {
    let mut out = BTreeMap::new();
    for phase in crate::phase::hook_dirs() {
        let entries = merged_entries(elements, phase)?;
        let hooks = entries
            .into_iter()
            .filter(|e| is_hook_name(&e.name) && is_executable_file(&e.path))
            .map(|e| e.path)
            .collect();
        out.insert(phase.to_owned(), hooks);
    }
    Ok(out)
}

/// The environment.d files of all elements, in sourcing order. DIB sources
/// regular files whose names use `[0-9A-Za-z_.-]`; they need not be executable.
/// The order is bytewise by name, not numeric: DIB's runner hands `sort -n`
/// full paths, whose numeric key is 0 for every file, so sort falls back to
/// comparing bytes (`10-a` before `9-b`).
pub fn collect_environment(elements: &[(String, PathBuf)]) -> Result<Vec<PathBuf>, ElementError> {
    let mut entries: Vec<Entry> = merged_entries(elements, ENVIRONMENT_DIR)?
        .into_iter()
        .filter(|e| is_environment_name(&e.name))
        .collect();
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(entries.into_iter().map(|e| e.path).collect())
}

/// All regular files (symlinks followed) of `dir` across elements, sorted with
/// `sort -n`. Two elements with the same file name would overwrite each other
/// in DIB's merged directory, so that is an error.
fn merged_entries(elements: &[(String, PathBuf)], dir: &str) -> Result<Vec<Entry>, ElementError> {
    let mut by_name: BTreeMap<String, Entry> = BTreeMap::new();
    for (element, root) in elements {
        for entry in files_in(element, &root.join(dir))? {
            if let Some(first) = by_name.get(&entry.name) {
                return Err(ElementError::DuplicateHook {
                    phase: dir.to_owned(),
                    file: entry.name,
                    first: first.element.clone(),
                    second: entry.element,
                });
            }
            by_name.insert(entry.name.clone(), entry);
        }
    }
    let mut entries: Vec<Entry> = by_name.into_values().collect();
    entries.sort_by(|a, b| sort_n_cmp(&a.name, &b.name));
    Ok(entries)
}

/// Regular files directly in `dir` (a missing directory has none).
fn files_in(element: &str, dir: &Path) -> Result<Vec<Entry>, ElementError> {
    let read_err = |source| ElementError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let iter = match std::fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for entry in iter {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        // A dangling symlink or a subdirectory is not a hook.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        out.push(Entry {
            element: element.to_owned(),
            name,
            path,
        });
    }
    Ok(out)
}

/// DIB runs only files named `^[0-9A-Za-z_-]+$` (so `foo.sh` is skipped).
pub fn is_hook_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// DIB sources environment files named `[0-9A-Za-z_.-]+`.
pub fn is_environment_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Compares like `LANG=C sort -n`: by the leading number (optional blanks, an
/// optional `-`, digits, an optional `.fraction`; no number counts as 0), then
/// bytewise on the whole string as sort's last-resort comparison.
pub fn sort_n_cmp(a: &str, b: &str) -> Ordering {
    compare_numbers(&leading_number(a), &leading_number(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// A parsed leading number, kept as digit strings so any length compares correctly.
#[derive(Debug, PartialEq, Eq)]
struct Number {
    negative: bool,
    /// Integer digits without leading zeros.
    int: String,
    /// Fraction digits without trailing zeros.
    frac: String,
}

impl Number {
    fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.is_empty()
    }
}

fn leading_number(s: &str) -> Number {
    let s = s.trim_start_matches([' ', '\t']);
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let int = rest[..int_len].trim_start_matches('0').to_owned();
    let frac = match rest[int_len..].strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            f[..n].trim_end_matches('0').to_owned()
        }
        None => String::new(),
    };
    Number {
        negative,
        int,
        frac,
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    // -0 equals 0.
    let sign = |n: &Number| {
        if n.is_zero() {
            0
        } else if n.negative {
            -1
        } else {
            1
        }
    };
    match sign(a).cmp(&sign(b)) {
        Ordering::Equal => {}
        other => return other,
    }
    let magnitude = a
        .int
        .len()
        .cmp(&b.int.len())
        .then_with(|| a.int.cmp(&b.int))
        .then_with(|| a.frac.cmp(&b.frac));
    if sign(a) < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn sort_n_matches_the_documented_example() {
        let mut v = vec!["100-y", "50-b", "10-z", "9-x", "foo", "10-a", "05-c"];
        v.sort_by(|a, b| sort_n_cmp(a, b));
        assert_eq!(v, ["foo", "05-c", "9-x", "10-a", "10-z", "50-b", "100-y"]);
    }

    /// Checks the comparator against the real `LANG=C sort -n`.
    #[test]
    fn sort_n_agrees_with_coreutils() {
        let names = [
            "foo",
            "05-c",
            "9-x",
            "10-a",
            "10-z",
            "50-b",
            "100-y",
            "0-a",
            "00-b",
            "-5-neg",
            "-x",
            "1.5-dot",
            "1.10-dot",
            "1-",
            "1",
            "01",
            "001-a",
            "A",
            "a",
            "_x",
            "Z9",
            "99999999999999999999-big",
            "10.0-x",
            "10-",
            "-0",
            "-",
            "1.2.3",
            "2a",
            "2A",
            "2_",
            "20-abc",
            "3-Zeta",
            "3-alpha",
        ];
        let input = names.join("\n") + "\n";
        let out = match crate::host::Cmd::new("sorting with coreutils", "sort")
            .arg("-n")
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .stdin_bytes(input)
            .read()
        {
            Ok(o) => o,
            Err(e) => {
                crate::testing::skip(
                    "sort_n_agrees_with_coreutils",
                    &format!("sort not runnable: {e}"),
                );
                return;
            }
        };
        let expected: Vec<&str> = out.lines().collect();
        let mut ours = names.to_vec();
        ours.sort_by(|a, b| sort_n_cmp(a, b));
        assert_eq!(ours, expected);
    }

    #[test]
    fn hook_names_follow_dibs_filter() {
        assert!(is_hook_name("10-foo_bar"));
        assert!(!is_hook_name("foo.sh"));
        assert!(!is_hook_name(""));
        assert!(is_environment_name("10-foo.bash"));
        assert!(!is_environment_name("10 foo"));
    }

    fn script(path: &Path, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn hooks_merge_across_elements_in_sort_n_order() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        script(&a.join("install.d/50-b"), 0o755);
        script(&a.join("install.d/foo.sh"), 0o755);
        script(&a.join("install.d/10-noexec"), 0o644);
        script(&b.join("install.d/9-x"), 0o755);
        script(&b.join("install.d/foo"), 0o755);
        fs::create_dir_all(b.join("install.d/20-dir")).unwrap();
        std::os::unix::fs::symlink(a.join("install.d/50-b"), b.join("install.d/60-link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", b.join("install.d/70-dangling")).unwrap();
        let els = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let hooks = collect_hooks(&els).unwrap();
        let names: Vec<String> = hooks["install.d"]
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["foo", "9-x", "50-b", "60-link"]);
        assert_eq!(hooks.len(), crate::phase::hook_dirs().count());
        assert!(hooks["root.d"].is_empty());
    }

    #[test]
    fn duplicate_hook_names_both_elements() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        script(&a.join("root.d/10-x"), 0o755);
        script(&b.join("root.d/10-x"), 0o755);
        let els = vec![("a".to_string(), a), ("b".to_string(), b)];
        let err = collect_hooks(&els).unwrap_err().to_string();
        assert!(
            err.contains("elements a and b both have root.d/10-x"),
            "{err}"
        );
    }

    #[test]
    fn environment_files_are_collected_in_order() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        script(&a.join("environment.d/10-a.bash"), 0o644);
        script(&b.join("environment.d/02-b"), 0o644);
        script(&b.join("environment.d/bad name"), 0o644);
        let els = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let env = collect_environment(&els).unwrap();
        assert_eq!(env[0], b.join("environment.d/02-b"));
        assert_eq!(env[1], a.join("environment.d/10-a.bash"));
        assert_eq!(env.len(), 2);
        script(&a.join("environment.d/9-z"), 0o644);
        let env = collect_environment(&els).unwrap();
        // Bytewise, as DIB's `sort -n` over full paths gives: 10 before 9.
        assert_eq!(env[1], a.join("environment.d/10-a.bash"));
        assert_eq!(env[2], a.join("environment.d/9-z"));
        script(&b.join("environment.d/10-a.bash"), 0o644);
        assert!(collect_environment(&els).is_err());
    }
}
