//! Which hook-environment variables the files of a build can read, so that
//! the phase cache keys only those: a variable no hook, helper or library
//! of the build names cannot change what the hooks make (IMAGE_NAME, the
//! output types). Found by scanning the files as text, conservatively: every
//! word counts as a possible reference, and a file that dumps or walks the
//! environment (`compgen -v`, `env`, `declare -p`, `os.environ.items()`,
//! `${!name}`) makes every variable count.

use std::collections::HashSet;
use std::path::Path;

/// Bigger files are data (firmware, archives), not programs that read the
/// environment.
const MAX_SCANNED: u64 = 4 << 20;

/// The variables a set of files can read.
#[derive(Debug, Default)]
pub struct References {
    names: HashSet<String>,
    /// `${!PREFIX@}`: every variable whose name starts so.
    prefixes: HashSet<String>,
    /// Some file reads the whole environment.
    everything: Option<String>,
}

impl References {
    /// References that hold every variable (the escape hatch).
    pub fn everything(why: &str) -> Self {
        References {
            everything: Some(why.to_string()),
            ..Default::default()
        }
    }

    /// Whether a file may read `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.everything.is_some()
            || self.names.contains(name)
            || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Why every variable counts, when one does.
    pub fn reads_everything(&self) -> Option<&str> {
        self.everything.as_deref()
    }

    /// Scans one file and returns its text (unreadable and very large
    /// files are skipped: an unreadable file cannot run either).
    pub fn scan_file(&mut self, path: &Path) -> Option<String> {
        let small = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_SCANNED);
        if !small {
            return None;
        }
        let bytes = std::fs::read(path).ok()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.scan_text(&text, &path.display().to_string());
        Some(text)
    }

    /// Scans program text; `origin` names it in [`Self::reads_everything`].
    pub fn scan_text(&mut self, text: &str, origin: &str) {
        for word in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        {
            if !self.names.contains(word) {
                self.names.insert(word.to_string());
            }
        }
        if self.everything.is_none()
            && let Some(how) = text.lines().find_map(reads_whole_environment)
        {
            self.everything = Some(format!("{origin} reads the whole environment ({how})"));
        }
        self.prefixes.extend(prefix_expansions(text));
    }
}

/// How a line reads every variable, if it does.
fn reads_whole_environment(line: &str) -> Option<&'static str> {
    let line = line.trim();
    if line.starts_with('#') && !line.starts_with("#!") {
        return None;
    }
    const LISTINGS: &[(&str, &str)] = &[
        ("compgen -v", "compgen -v"),
        ("compgen -e", "compgen -e"),
        ("compgen -A variable", "compgen -A variable"),
        ("compgen -A export", "compgen -A export"),
        ("os.environ.items", "os.environ.items()"),
        ("os.environ.keys", "os.environ.keys()"),
        ("os.environ.values", "os.environ.values()"),
        ("os.environ.copy", "os.environ.copy()"),
        ("dict(os.environ", "dict(os.environ)"),
        ("in os.environ:", "iterating os.environ"),
        ("environ)", "os.environ passed on"),
    ];
    if let Some((_, how)) = LISTINGS.iter().find(|(needle, _)| line.contains(needle)) {
        return Some(how);
    }
    if has_indirect_expansion(line) {
        return Some("indirect expansion");
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied();
        let ends = next.is_none_or(|n| n.starts_with(['|', '>', ';', ')', '&', '`']));
        match *w {
            "env" | "printenv" | "set" | "export" | "declare" | "typeset" if ends => {
                return Some("a listing of the environment");
            }
            "export" | "declare" | "typeset"
                if next.is_some_and(|n| matches!(n, "-p" | "-x" | "-xp" | "-px"))
                    && words
                        .get(i + 2)
                        .is_none_or(|n| n.starts_with(['|', '>', ';', ')', '&'])) =>
            {
                return Some("a listing of the environment");
            }
            _ => {}
        }
    }
    None
}

/// `${!name}` reads the variable whose name is in `name`; `${!arr[@]}` lists
/// an array's keys and `${!PREFIX@}` names variables by prefix (both fine).
fn has_indirect_expansion(line: &str) -> bool {
    line.match_indices("${!").any(|(i, _)| {
        let rest = &line[i + 3..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        rest[name_len..].starts_with('}')
    })
}

/// The prefixes of `${!PREFIX@}` and `${!PREFIX*}`.
fn prefix_expansions(text: &str) -> Vec<String> {
    text.match_indices("${!")
        .filter_map(|(i, _)| {
            let rest = &text[i + 3..];
            let name_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let after = &rest[name_len..];
            (after.starts_with("@}") || after.starts_with("*}"))
                .then(|| rest[..name_len].to_string())
        })
        .collect()
}

/// Which files a key covers: the tree stage's, or every phase's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// What can shape the tree: every element file but the hooks of the
    /// late phases (they run after the tree is stored).
    Tree,
    /// What can shape the outputs: every element file.
    Whole,
}

/// The references of `elements`' files in `scope`, and of the helpers and
/// libraries below `data` that hooks run or source. environment.d files are
/// left out: what they read reaches hooks through the variables they set,
/// whose values are keyed when a hook reads them, and their own content is
/// keyed as element files.
pub fn of_build(
    elements: &[String],
    paths: &std::collections::BTreeMap<String, std::path::PathBuf>,
    data: &Path,
    scope: Scope,
) -> References {
    let mut r = References::default();
    let late: Vec<&str> = crate::phase::stage(crate::phase::Stage::Late)
        .map(crate::phase::Phase::name)
        .collect();
    let mut texts = Vec::new();
    for dir in elements.iter().filter_map(|e| paths.get(e)) {
        walk(dir, &mut |rel, path| {
            let top = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            let skipped = top == "tests"
                || top == "environment.d"
                || top.starts_with("README")
                || (scope == Scope::Tree && late.contains(&top.as_str()));
            if !skipped {
                texts.extend(r.scan_file(path));
            }
        });
    }
    // The helpers run in every build (dib-create runs some itself).
    for dir in [crate::paths::CHROOT_HELPERS, crate::paths::HOST_HELPERS] {
        walk(&data.join(dir), &mut |_, path| {
            texts.extend(r.scan_file(path))
        });
    }
    scan_used_libraries(&mut r, texts, &data.join(crate::paths::LIB));
    r
}

/// The shipped shell libraries that the scanned files name (to source
/// them), and those these name in turn: `img-defaults` counts only for a
/// build whose files source it.
fn scan_used_libraries(r: &mut References, mut texts: Vec<String>, lib: &Path) {
    let mut helpers = Vec::new();
    walk(lib, &mut |_, path| helpers.push(path.to_path_buf()));
    loop {
        let (used, rest): (Vec<_>, Vec<_>) = helpers.into_iter().partition(|h| {
            let name = h.file_name().unwrap_or_default().to_string_lossy();
            texts.iter().any(|t| t.contains(name.as_ref()))
        });
        helpers = rest;
        if used.is_empty() {
            return;
        }
        texts = used.iter().filter_map(|h| r.scan_file(h)).collect();
    }
}

/// Every file below `dir`, as the element keys walk it (and as the hooks
/// tree copies it).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &Path)) {
    super::keys::walk(dir, dir, f);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> References {
        let mut r = References::default();
        r.scan_text(text, "hook");
        r
    }

    #[test]
    fn a_named_variable_is_read_and_others_are_not() {
        let r = refs("#!/bin/bash\nset -eu\necho \"${DIB_FOO:-x}\" > \"$TARGET_ROOT/etc/foo\"\n");
        assert!(r.reads("DIB_FOO"));
        assert!(!r.reads("IMAGE_NAME"));
        assert!(r.reads_everything().is_none());
        let py = refs("import os\nv = os.environ.get('DIB_PY_SETTING', '')\n");
        assert!(py.reads("DIB_PY_SETTING") && !py.reads("IMAGE_NAME"));
    }

    #[test]
    fn shebangs_and_options_are_not_listings() {
        for text in [
            "#!/usr/bin/env bash\n",
            "set -eu -o pipefail\n",
            "env -i PATH=/bin foo\n",
            "export FOO=1\n",
            "declare -p FOO\n",
            "for i in \"${!arr[@]}\"; do :; done\n",
            "# compgen -v would list them\n",
        ] {
            assert!(refs(text).reads_everything().is_none(), "{text}");
        }
    }

    #[test]
    fn listing_the_environment_reads_every_variable() {
        for text in [
            "compgen -v | grep '^DIB_'\n",
            "env | sort > /tmp/env\n",
            "printenv\n",
            "export -p > saved\n",
            "declare -xp\n",
            "echo \"${!name}\"\n",
            "for k, v in os.environ.items():\n",
            "subprocess.run(cmd, env=dict(os.environ, X='1'))\n",
        ] {
            let r = refs(text);
            assert!(r.reads_everything().is_some(), "{text}");
            assert!(r.reads("ANYTHING_AT_ALL"));
        }
    }

    /// An element with a tree hook, a late hook and an environment.d
    /// file, and shipped libraries of which the build sources one.
    #[test]
    fn a_build_reads_what_its_tree_files_and_sourced_libraries_name() {
        let d = tempfile::tempdir().unwrap();
        let el = d.path().join("el");
        let write = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "el/install.d/10-a",
            "source $_LIB/used-lib\necho $DIB_IN_TREE\n",
        );
        write("el/finalise.d/10-b", "echo $DIB_IN_LATE\n");
        write(
            "el/environment.d/10-c",
            "export DIB_DERIVED=${DIB_IN_ENVD}\n",
        );
        write("el/README.rst", "DIB_IN_README\n");
        write("data/lib/dib/used-lib", "echo $DIB_FROM_USED_LIB\n");
        write("data/lib/dib/other-lib", "echo $IMAGE_NAME\n");
        write("data/lib/chroot-bin/helper", "echo $DIB_FROM_HELPER\n");
        let elements = vec!["el".to_string()];
        let paths = std::collections::BTreeMap::from([("el".to_string(), el)]);
        let data = d.path().join("data");
        let tree = of_build(&elements, &paths, &data, Scope::Tree);
        for name in ["DIB_IN_TREE", "DIB_FROM_USED_LIB", "DIB_FROM_HELPER"] {
            assert!(tree.reads(name), "{name}");
        }
        for name in [
            "DIB_IN_LATE",
            "DIB_IN_ENVD",
            "DIB_DERIVED",
            "DIB_IN_README",
            "IMAGE_NAME",
        ] {
            assert!(!tree.reads(name), "{name}");
        }
        let whole = of_build(&elements, &paths, &data, Scope::Whole);
        assert!(whole.reads("DIB_IN_LATE") && !whole.reads("IMAGE_NAME"));
    }

    #[test]
    fn a_prefix_expansion_reads_that_prefix() {
        let r = refs("for v in \"${!DIB_MY_@}\"; do echo \"$v\"; done\n");
        assert!(r.reads("DIB_MY_SETTING"));
        assert!(!r.reads("IMAGE_NAME"));
        assert!(r.reads_everything().is_none());
    }
}
