//! Checks of the values a user gives on the command line, made when the plan
//! is: a build and its `--dry-run` refuse the same inputs, with exit 2 and a
//! message that names the value and the fix.

use std::path::Path;

use crate::error::UsageError;

/// `-o NAME`: a file name to which the extensions are added, in a directory
/// that exists.
pub fn output_name(name: &str) -> Result<(), UsageError> {
    let bad = |why: &str| Err(UsageError(format!("-o {}: {why}", escape(name))));
    if name.is_empty() {
        return bad("the image name is empty; give a name such as -o debian or -o out/debian");
    }
    if name.ends_with('/') || name.ends_with("/.") || name == "." || name == ".." {
        return bad("this names a directory; add the image's file name, e.g. -o out/debian");
    }
    if name.chars().any(char::is_control) {
        return bad("the name holds control characters");
    }
    let path = Path::new(name);
    if path.is_dir() {
        return bad("this is an existing directory; give a file name inside it, e.g. -o DIR/image");
    }
    in_existing_dir(path).or_else(|why| bad(&why))
}

/// The directory a new file `path` goes to exists.
fn in_existing_dir(path: &Path) -> Result<(), String> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        return Ok(());
    }
    Err(format!(
        "the directory {} does not exist; create it first",
        parent.display()
    ))
}

/// `--logfile FILE`: a file in a directory that exists.
pub fn log_file(path: &Path) -> Result<(), UsageError> {
    new_file("--logfile", path)
}

/// `--report FILE`: likewise.
pub fn report_file(path: &Path) -> Result<(), UsageError> {
    new_file("--report", path)
}

fn new_file(flag: &str, path: &Path) -> Result<(), UsageError> {
    let bad = |why: &str| Err(UsageError(format!("{flag} {}: {why}", path.display())));
    if path.is_dir() {
        return bad("this is a directory; give a file name");
    }
    in_existing_dir(path).or_else(|why| bad(&why))
}

/// A package name for `-p`: one word, not an option.
pub fn package_name(name: &str) -> Result<(), UsageError> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+-._:=~/".contains(c));
    if first_ok && rest_ok {
        return Ok(());
    }
    Err(UsageError(format!(
        "-p {}: not a package name (it must start with a letter or digit and hold no spaces or \
         other separators; give several packages as -p a,b)",
        escape(name)
    )))
}

/// `--docker-target`: a repository reference, `[host[:port]/]path[:tag]`,
/// with lower-case path components as the distribution spec requires.
pub fn docker_target(target: &str) -> Result<(), UsageError> {
    let bad = |why: &str| {
        Err(UsageError(format!(
            "--docker-target {}: {why}; use e.g. myimage:latest or registry.example.com/team/image:1.0",
            escape(target)
        )))
    };
    let (repo, tag) = match target.rsplit_once(':') {
        // A colon before the last slash belongs to a registry port.
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (target, None),
    };
    if let Some(t) = tag {
        let ok = t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return bad(&format!("the tag {t:?} is not valid"));
        }
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        parts.remove(0);
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if repo.is_empty() || !parts.iter().all(|c| component_ok(c)) {
        return bad(
            "the repository name must be lower-case letters, digits and . _ - between slashes",
        );
    }
    Ok(())
}

/// `value` for a message: quoted, with control characters, quotes and
/// non-ASCII bytes escaped, so that a message never prints raw odd bytes.
pub fn escape(value: &str) -> String {
    format!("{:?}", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("img");
        assert!(output_name(ok.to_str().unwrap()).is_ok());
        assert!(output_name("image").is_ok());
        for bad in [
            "".to_string(),
            format!("{}/", d.path().display()),
            d.path().display().to_string(),
            d.path().join("missing/img").display().to_string(),
            "a\nb".to_string(),
        ] {
            assert!(output_name(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn package_names() {
        for ok in [
            "vim",
            "g++",
            "libc6:amd64",
            "tree=2.1.0-1",
            "linux-image-6.1/bookworm",
        ] {
            assert!(package_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-y", "--force-yes", "two words", "a\nb", "x;rm"] {
            assert!(package_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn docker_targets() {
        for ok in [
            "image",
            "image:latest",
            "team/image:1.0",
            "registry.example.com:5000/team/image:v1",
            "localhost/a_b",
        ] {
            assert!(docker_target(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Image",
            "image:",
            "image:-x",
            "a//b",
            "im age",
            "image:t@g",
        ] {
            assert!(docker_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn odd_bytes_are_escaped() {
        assert_eq!(escape("a\u{feff}b\0"), "\"a\\u{feff}b\\0\"");
    }
}
