//! Finding elements on ELEMENTS_PATH and reading their element-deps and
//! element-provides lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::ElementError;
use crate::log;

/// One element: a directory on the search path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub path: PathBuf,
    /// element-deps, in file order, without duplicates.
    pub deps: Vec<String>,
    /// element-provides, in file order, without duplicates.
    pub provides: Vec<String>,
}

/// Every element visible on the search path, after overrides.
#[derive(Clone, Debug, Default)]
pub struct ElementSet {
    pub elements: BTreeMap<String, Element>,
    /// Element name → the directories of later search paths it shadows.
    pub overridden: BTreeMap<String, Vec<PathBuf>>,
}

impl ElementSet {
    pub fn get(&self, name: &str) -> Option<&Element> {
        self.elements.get(name)
    }

    /// Names of all elements that list `name` in element-provides, sorted.
    pub fn providers_of(&self, name: &str) -> Vec<String> {
        self.elements
            .values()
            .filter(|e| e.provides.iter().any(|p| p == name))
            .map(|e| e.name.clone())
            .collect()
    }
}

/// The directories to search: ELEMENTS_PATH entries, then our shipped elements.
/// Empty entries (`a::b`, a trailing colon) are skipped. The shipped directory
/// is only added when it exists, since a source checkout may not have one yet.
pub fn search_path(elements_path: Option<&str>, shipped: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = elements_path
        .unwrap_or("")
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if shipped.is_dir() && !dirs.iter().any(|d| d == shipped) {
        dirs.push(shipped.to_path_buf());
    }
    dirs
}

/// Reads every element on `dirs`. The earliest directory wins for a name, and
/// each override is logged so a surprising shadowing is visible.
pub fn discover(dirs: &[PathBuf]) -> Result<ElementSet, ElementError> {
    let mut set = ElementSet::default();
    for dir in dirs {
        check_search_dir(dir)?;
        for (name, path) in element_dirs_in(dir)? {
            if let Some(winner) = set.elements.get(&name) {
                log::info(&format!(
                    "element {name}: {} overrides {}",
                    winner.path.display(),
                    path.display()
                ));
                set.overridden.entry(name).or_default().push(path);
                continue;
            }
            let element = read_element(&name, &path)?;
            set.elements.insert(name, element);
        }
    }
    Ok(set)
}

fn check_search_dir(dir: &Path) -> Result<(), ElementError> {
    match std::fs::metadata(dir) {
        Err(_) => Err(ElementError::PathMissing {
            path: dir.to_path_buf(),
        }),
        Ok(m) if !m.is_dir() => Err(ElementError::PathNotDir {
            path: dir.to_path_buf(),
        }),
        Ok(_) => Ok(()),
    }
}

/// The subdirectories of `dir` (symlinks followed), sorted by name.
fn element_dirs_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, ElementError> {
    let read_err = |source| ElementError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            log::warn(&format!(
                "skipping {}: element names must be UTF-8",
                path.display()
            ));
            continue;
        };
        // Like DIB, hooks see the real path of an element.
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        found.push((name, real));
    }
    found.sort();
    Ok(found)
}

/// Reads one element's dependency metadata.
pub fn read_element(name: &str, path: &Path) -> Result<Element, ElementError> {
    Ok(Element {
        name: name.to_owned(),
        path: path.to_path_buf(),
        deps: read_name_list(&path.join("element-deps"))?,
        provides: read_name_list(&path.join("element-provides"))?,
    })
}

/// Reads a newline-separated list of names. A missing file is an empty list;
/// blank lines and `#` comments are ignored.
pub fn read_name_list(path: &Path) -> Result<Vec<String>, ElementError> {
    let Some(text) = read_text_if_exists(path)? else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || names.iter().any(|x| x == line) {
            continue;
        }
        if !is_element_name(line) {
            return Err(ElementError::BadName {
                path: path.to_path_buf(),
                line: n + 1,
                name: line.to_owned(),
            });
        }
        names.push(line.to_owned());
    }
    Ok(names)
}

/// Element names are directory names of letters, digits, `.`, `_` and `-`.
pub fn is_element_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !s.starts_with('.')
}

/// Reads a UTF-8 text file; `None` when it does not exist.
pub fn read_text_if_exists(path: &Path) -> Result<Option<String>, ElementError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ElementError::NotUtf8 {
                path: path.to_path_buf(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ElementError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mk(dir: &Path, name: &str, deps: &str) -> PathBuf {
        let p = dir.join(name);
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("element-deps"), deps).unwrap();
        p
    }

    #[test]
    fn earlier_path_wins() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        mk(&a, "x", "one\n");
        mk(&b, "x", "two\n");
        mk(&b, "y", "");
        let set = discover(&[a.clone(), b]).unwrap();
        assert_eq!(set.get("x").unwrap().deps, ["one"]);
        assert!(
            set.get("x")
                .unwrap()
                .path
                .starts_with(fs::canonicalize(&a).unwrap())
        );
        assert!(set.get("y").is_some());
    }

    #[test]
    fn missing_and_file_paths_are_errors_naming_them() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        let err = discover(std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        let file = t.path().join("file");
        fs::write(&file, "").unwrap();
        let err = discover(&[file]).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn lists_skip_blanks_comments_and_duplicates() {
        let t = tempfile::tempdir().unwrap();
        let p = mk(t.path(), "x", "\n  a  \n# comment\nb # trailing\n\na\n");
        assert_eq!(read_element("x", &p).unwrap().deps, ["a", "b"]);
    }

    #[test]
    fn empty_element_deps_is_no_deps() {
        let t = tempfile::tempdir().unwrap();
        let p = mk(t.path(), "x", "");
        assert!(read_element("x", &p).unwrap().deps.is_empty());
    }

    #[test]
    fn non_utf8_file_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let p = mk(t.path(), "x", "");
        fs::write(p.join("element-provides"), b"\xff\xfe\n").unwrap();
        let err = read_element("x", &p).unwrap_err().to_string();
        assert!(err.contains("element-provides"), "{err}");
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn search_path_appends_shipped_and_skips_empty_entries() {
        let t = tempfile::tempdir().unwrap();
        let dirs = search_path(Some("/a::/b:"), t.path());
        assert_eq!(
            dirs,
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                t.path().to_path_buf()
            ]
        );
        let dirs = search_path(None, &t.path().join("missing"));
        assert!(dirs.is_empty());
    }
}
