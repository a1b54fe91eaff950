//! An element's `pkg-map`: JSON that renames generic package names per distro
//! family, distro and release. The most specific mapping wins; an empty mapping
//! means "nothing to install here"; a name without a mapping stays as it is
//! (DIB's package-installs calls pkg-map with `--missing-ok`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::discovery::read_text_if_exists;
use super::error::ElementError;

/// The distro family pkg-map's `family` section is keyed by.
pub fn distro_family(distro: &str) -> Option<&'static str> {
    match distro {
        "centos" | "fedora" | "rhel" | "rocky" | "almalinux" | "openeuler" => Some("redhat"),
        "debian" | "ubuntu" => Some("debian"),
        "opensuse" => Some("suse"),
        "gentoo" => Some("gentoo"),
        _ => None,
    }
}

/// DIB looks up the CentOS 8 stream release under "8".
fn major_release(release: &str) -> &str {
    if release == "8-stream" { "8" } else { release }
}

/// A parsed pkg-map file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PkgMap {
    path: PathBuf,
    default: BTreeMap<String, Option<String>>,
    family: BTreeMap<String, BTreeMap<String, Option<String>>>,
    distro: BTreeMap<String, BTreeMap<String, Option<String>>>,
    release: BTreeMap<String, BTreeMap<String, BTreeMap<String, Option<String>>>>,
}

/// The distro a lookup is for (from DISTRO_NAME and DIB_RELEASE).
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    pub distro: Option<&'a str>,
    pub release: Option<&'a str>,
}

impl PkgMap {
    /// Reads `<element>/pkg-map`; `None` when the element has none.
    pub fn load(element_dir: &Path) -> Result<Option<PkgMap>, ElementError> {
        let path = element_dir.join("pkg-map");
        match read_text_if_exists(&path)? {
            Some(text) => PkgMap::parse(&path, &text).map(Some),
            None => Ok(None),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<PkgMap, ElementError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ElementError::Syntax {
            path: path.to_path_buf(),
            message: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
        let err = |message: String| ElementError::PkgMap {
            path: path.to_path_buf(),
            message,
        };
        let top = value
            .as_object()
            .ok_or_else(|| err(format!("expected a JSON object, found {}", kind(&value))))?;
        let mut map = PkgMap {
            path: path.to_path_buf(),
            ..Default::default()
        };
        for (key, v) in top {
            match key.as_str() {
                "default" => map.default = names(v, "default").map_err(err)?,
                "family" => map.family = nested(v, "family", names).map_err(err)?,
                "distro" => map.distro = nested(v, "distro", names).map_err(err)?,
                "release" => {
                    map.release = nested(v, "release", |v, at| nested(v, at, names)).map_err(err)?
                }
                // DIB ignores other keys; so do we.
                _ => {}
            }
        }
        Ok(map)
    }

    /// The merged name table for `target`: default ← family ← distro ← release.
    fn table(&self, target: Target) -> BTreeMap<&str, Option<&str>> {
        let mut layers: Vec<&BTreeMap<String, Option<String>>> = vec![&self.default];
        if let Some(distro) = target.distro {
            layers.extend(distro_family(distro).and_then(|f| self.family.get(f)));
            layers.extend(self.distro.get(distro));
            let release = target.release.map(major_release);
            layers.extend(release.and_then(|r| self.release.get(distro)?.get(r)));
        }
        let mut table = BTreeMap::new();
        for layer in layers {
            for (k, v) in layer {
                table.insert(k.as_str(), v.as_deref());
            }
        }
        table
    }

    /// Maps one name: unchanged when unmapped, nothing when mapped to "" (or
    /// null), and possibly several packages ("grub2-tools grub2").
    pub fn map(&self, name: &str, target: Target) -> Vec<String> {
        match self.table(target).get(name) {
            None => vec![name.to_owned()],
            Some(None) => Vec::new(),
            Some(Some(mapped)) => mapped.split_whitespace().map(str::to_owned).collect(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A name → package table; null maps to nothing, like an empty string.
fn names(v: &Value, at: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let obj = v.as_object().ok_or_else(|| {
        format!(
            "\"{at}\" must be an object of name: package, found {}",
            kind(v)
        )
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let mapped = match v {
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                return Err(format!(
                    "\"{at}\" maps {k} to {}; expected a package name string",
                    kind(other)
                ));
            }
        };
        out.insert(k.clone(), mapped);
    }
    Ok(out)
}

/// An object whose values are parsed by `inner`.
fn nested<T>(
    v: &Value,
    at: &str,
    inner: impl Fn(&Value, &str) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("\"{at}\" must be an object, found {}", kind(v)))?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), inner(v, &format!("{at}.{k}"))?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"{
      "default": {"tool": "tool", "vim": "vim", "gone": "x"},
      "family": {"redhat": {"vim": "vim-enhanced", "tool": "rh-tool"}, "suse": {"vim": ""}},
      "distro": {"fedora": {"tool": "fedora-tool"}},
      "release": {"fedora": {"40": {"tool": "tool-40"}}, "centos": {"8": {"vim": "vim8 extra"}}}
    }"#;

    fn map() -> PkgMap {
        PkgMap::parse(Path::new("/e/pkg-map"), MAP).unwrap()
    }

    fn t<'a>(distro: &'a str, release: &'a str) -> Target<'a> {
        Target {
            distro: Some(distro),
            release: Some(release),
        }
    }

    #[test]
    fn most_specific_mapping_wins() {
        let m = map();
        assert_eq!(m.map("tool", t("debian", "12")), ["tool"]);
        assert_eq!(m.map("tool", t("centos", "9")), ["rh-tool"]);
        assert_eq!(m.map("tool", t("fedora", "39")), ["fedora-tool"]);
        assert_eq!(m.map("tool", t("fedora", "40")), ["tool-40"]);
        assert_eq!(m.map("vim", t("rocky", "9")), ["vim-enhanced"]);
    }

    #[test]
    fn empty_mapping_skips_and_missing_is_unchanged() {
        let m = map();
        assert!(m.map("vim", t("opensuse", "15")).is_empty());
        assert_eq!(m.map("unmapped", t("fedora", "40")), ["unmapped"]);
        assert_eq!(m.map("vim", Target::default()), ["vim"]);
    }

    #[test]
    fn stream_release_and_multi_package_values() {
        assert_eq!(map().map("vim", t("centos", "8-stream")), ["vim8", "extra"]);
    }

    #[test]
    fn families() {
        assert_eq!(distro_family("almalinux"), Some("redhat"));
        assert_eq!(distro_family("ubuntu"), Some("debian"));
        assert_eq!(distro_family("opensuse"), Some("suse"));
        assert_eq!(distro_family("gentoo"), Some("gentoo"));
        assert_eq!(distro_family("arch"), None);
    }

    #[test]
    fn bad_json_and_wrong_types_are_clear_errors() {
        let err = PkgMap::parse(Path::new("/e/pkg-map"), "{\n  \"default\": {,}\n}").unwrap_err();
        assert!(
            err.to_string().contains("/e/pkg-map: line 2 column"),
            "{err}"
        );
        let err = PkgMap::parse(Path::new("/e/pkg-map"), r#"{"default": ["a"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("\"default\" must be an object"),
            "{err}"
        );
        let err = PkgMap::parse(
            Path::new("/e/pkg-map"),
            r#"{"family": {"redhat": {"a": 3}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("family.redhat"), "{err}");
        assert!(PkgMap::parse(Path::new("/e/pkg-map"), "[]").is_err());
    }
}
