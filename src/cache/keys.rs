//! Phase-cache keys (see `docs/phase-cache.md`): pure functions, no side
//! effects, so they are unit-tested without root.
//!
//! A build is a chain of *steps*: the base inputs, then each phase start,
//! each hook (by name and content) and the `-p` packages. The key after a
//! step is `sha256(previous key, step)`, so a key names everything that can
//! have shaped the tree up to that point, and editing a hook of phase P
//! changes the keys of P's hooks from that one on, never an earlier one.
//!
//! The base key is a digest over named *components* (tool, architecture,
//! element list, every element file that is not a hook, the hook names of
//! every phase, the hook environment, the lockfile, host tool versions).
//! Components are kept by name, so a miss can say which input changed.

use crate::digest::{fields as digest, path_digest as file_digest};
use std::collections::BTreeMap;
use std::path::Path;

use crate::element::hooks as element_hooks;
use crate::plan::PROXY_ENV;

/// Named input digests of the base key.
pub type Components = BTreeMap<String, String>;

/// Hook environment variables left out of every key: they hold paths that
/// differ per build (or per machine) while the build's content does not.
/// Element *content* is keyed; where elements and caches live is not.
pub const VOLATILE_ENV: &[&str] = &[
    "TMP_BUILD_DIR",
    "TARGET_ROOT",
    "TMP_MOUNT_PATH",
    "TMP_HOOKS_PATH",
    "TMP_IMAGE_DIR",
    "PATH",
    "HOME",
    "ELEMENTS_PATH",
    "IMAGE_ELEMENT_YAML",
    "BASH_FUNC_get_image_element_array%%",
    "_LIB",
    "DIB_IMAGE_CACHE",
    "DIB_LOCKFILES",
    // A locked build's local repository: a random port and the lockfile's
    // path. The lockfile's content is a component of its own.
    "DIB_CREATE_LOCK_REPO",
    "DIB_CREATE_LOCKFILE",
];

/// Variables dib-create itself reads from the hook environment while it
/// builds the tree (the archive checks of the bootstrap), keyed whether or
/// not an element file names them.
pub const READ_BY_DIB_CREATE: &[&str] = &[
    "DIB_RELEASE",
    "DIB_DISTRIBUTION_MIRROR",
    "DIB_APT_KEYRING",
    "DIB_DEBIAN_KEYRING",
    "DISTRO_NAME",
    "SOURCE_DATE_EPOCH",
];

/// The base key: a digest over every component, in name order.
pub fn base_key(c: &Components) -> String {
    let mut fields: Vec<&str> = vec!["dib-create phase cache v1"];
    for (k, v) in c {
        fields.push(k);
        fields.push(v);
    }
    digest(&fields)
}

/// One step of the chain after the base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A phase begins (its hooks were listed).
    Phase(&'a str),
    /// A hook ran: phase, file name, SHA256 of the file it ran.
    Hook {
        phase: &'a str,
        name: &'a str,
        sha256: &'a str,
    },
    /// The `-p` packages were installed.
    Extra(&'a [String]),
}

impl Step<'_> {
    /// A stable, readable description (kept in each snapshot's trail).
    pub fn describe(&self) -> String {
        match self {
            Step::Phase(p) => format!("phase {p}"),
            Step::Hook {
                phase,
                name,
                sha256,
            } => format!("hook {phase}/{name} {sha256}"),
            Step::Extra(pkgs) => format!("-p {}", pkgs.join(" ")),
        }
    }
}

/// The key after `step`, given the key before it.
pub fn next_key(prev: &str, step: &Step) -> String {
    digest(&[prev, &step.describe()])
}

/// The key of a whole build's outputs: the tree's final key and everything
/// after the root phases (block-device config, output options, later hooks).
pub fn output_key(final_tree_key: &str, c: &Components) -> String {
    digest(&[final_tree_key, &base_key(c)])
}

/// The hook environment as components, without [`VOLATILE_ENV`] and the
/// proxies. A value that is the absolute path of a regular file
/// (DIB_LOCAL_IMAGE, DIB_DEV_USER_AUTHORIZED_KEYS...) is keyed by the file's
/// content as well: the same path with a new file must not reuse a snapshot.
pub fn env_components(env: &BTreeMap<String, String>) -> Components {
    let mut c = Components::new();
    // The proxies say where packages come through, not what they are.
    let keyed = env
        .iter()
        .filter(|(k, _)| !VOLATILE_ENV.contains(&k.as_str()) && !PROXY_ENV.contains(&k.as_str()));
    for (k, v) in keyed {
        c.insert(format!("env {k}"), digest(&[v]));
        if let Some(file) = named_file(v) {
            c.insert(format!("env-file {k}"), file_digest(file));
        }
    }
    c
}

/// The file a variable's value names, when it is one absolute path of a
/// regular file.
fn named_file(value: &str) -> Option<&std::path::Path> {
    let p = std::path::Path::new(value);
    (p.is_absolute() && p.is_file()).then_some(p)
}

/// The element files as components: for each element, every file except
/// hooks (their names only, per phase: their content is keyed by the step
/// that runs them), its `tests/` directory and README files. Symlinks are
/// keyed by target. Unreadable files are keyed as such, never skipped.
pub fn element_components(
    elements: &[String],
    paths: &BTreeMap<String, std::path::PathBuf>,
) -> Components {
    let mut c = Components::new();
    c.insert("elements".into(), elements.join(" "));
    for name in elements {
        let Some(dir) = paths.get(name) else {
            continue;
        };
        let mut hooks: BTreeMap<String, Vec<String>> = BTreeMap::new();
        walk(dir, dir, &mut |rel, path| {
            let rel_s = rel.to_string_lossy();
            let mut parts = rel_s.splitn(2, '/');
            let top = parts.next().unwrap_or("");
            let rest = parts.next();
            if top == "tests" || (rest.is_none() && top.starts_with("README")) {
                return;
            }
            let is_phase = crate::phase::hook_dirs().any(|p| p == top);
            if let (true, Some(file)) = (is_phase, rest)
                && !file.contains('/')
                && element_hooks::is_hook_name(file)
                && element_hooks::is_executable_file(path)
            {
                hooks.entry(top.to_string()).or_default().push(file.into());
                return;
            }
            c.insert(format!("file {name}/{rel_s}"), file_digest(path));
        });
        for (phase, mut names) in hooks {
            names.sort();
            c.insert(format!("hooks {name}/{phase}"), names.join(" "));
        }
    }
    c
}

/// Calls `f(relative, path)` for every non-directory below `dir`, sorted.
/// Symlinked directories below the top are keyed as links.
pub(crate) fn walk(base: &Path, dir: &Path, f: &mut dyn FnMut(&Path, &Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        // Top-level symlinked directories are copied through (`cp -H`).
        let is_dir = if dir == base {
            p.is_dir()
        } else {
            p.symlink_metadata().is_ok_and(|m| m.is_dir())
        };
        if is_dir {
            walk(base, &p, f);
        } else if let Ok(rel) = p.strip_prefix(base) {
            f(rel, &p);
        }
    }
}

/// What changed between two component sets, for the log: names of the
/// components added, removed or different (at most `max`, then a count).
pub fn changed_components(old: &Components, new: &Components, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{k} (new)")),
            Some(o) if o != v => out.push(k.clone()),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{k} (removed)"));
    }
    if out.len() > max {
        let n = out.len() - max;
        out.truncate(max);
        out.push(format!("and {n} more"));
    }
    out
}

/// The first difference between two trails (step descriptions), for the
/// log: "install.d/50-bench changed", "install.d/60-x is new", ...
pub fn first_difference(old: &[String], new: &[String]) -> Option<String> {
    let i = old.iter().zip(new).position(|(a, b)| a != b)?;
    let name = |s: &str| s.split(' ').nth(1).unwrap_or(s).to_string();
    let (a, b) = (&old[i], &new[i]);
    Some(if name(a) == name(b) {
        format!("{} changed", name(b))
    } else {
        format!("{} differs from the cached {}", b, name(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hook(dir: &Path, phase: &str, name: &str, body: &str) {
        let d = dir.join(phase);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(name);
        std::fs::write(&f, body).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Keys along a chain of phases, each with its hooks: the key after
    /// every step.
    fn chain(base: &str, steps: &[(&str, &[(&str, &str)])]) -> Vec<String> {
        let mut k = base.to_string();
        let mut out = Vec::new();
        for (phase, hooks) in steps {
            k = next_key(&k, &Step::Phase(phase));
            out.push(k.clone());
            for (name, body) in *hooks {
                let sha = digest(&[body]);
                k = next_key(
                    &k,
                    &Step::Hook {
                        phase,
                        name,
                        sha256: &sha,
                    },
                );
                out.push(k.clone());
            }
        }
        out
    }

    #[test]
    fn editing_a_hook_changes_keys_from_it_on_only() {
        let a = chain(
            "b",
            &[
                ("root.d", &[("10-r", "r")]),
                ("pre-install.d", &[("10-p", "p")]),
                ("install.d", &[("10-a", "a"), ("50-x", "x1"), ("60-z", "z")]),
                ("post-install.d", &[("10-q", "q")]),
            ],
        );
        let b = chain(
            "b",
            &[
                ("root.d", &[("10-r", "r")]),
                ("pre-install.d", &[("10-p", "p")]),
                ("install.d", &[("10-a", "a"), ("50-x", "x2"), ("60-z", "z")]),
                ("post-install.d", &[("10-q", "q")]),
            ],
        );
        // root.d (2 keys), pre-install.d (2), install.d start and 10-a (2).
        let same = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert_eq!(same, 6);
        assert!(a[6..].iter().zip(&b[6..]).all(|(x, y)| x != y));
    }

    #[test]
    fn base_components_change_every_key() {
        let a = chain("base-1", &[("root.d", &[("10-r", "r")])]);
        let b = chain("base-2", &[("root.d", &[("10-r", "r")])]);
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
    }

    #[test]
    fn a_variable_naming_a_file_is_keyed_by_its_content() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("base.qcow2");
        std::fs::write(&f, "one").unwrap();
        let env = BTreeMap::from([("DIB_LOCAL_IMAGE".to_string(), f.display().to_string())]);
        let before = env_components(&env);
        std::fs::write(&f, "two").unwrap();
        let after = env_components(&env);
        assert_eq!(before["env DIB_LOCAL_IMAGE"], after["env DIB_LOCAL_IMAGE"]);
        assert_ne!(
            before["env-file DIB_LOCAL_IMAGE"],
            after["env-file DIB_LOCAL_IMAGE"]
        );
        let words = BTreeMap::from([("DIB_RELEASE".to_string(), "bookworm".to_string())]);
        assert_eq!(env_components(&words).len(), 1);
    }

    #[test]
    fn digest_fields_do_not_run_together() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
    }

    #[test]
    fn element_components_key_content_but_only_names_of_hooks() {
        let d = tempfile::tempdir().unwrap();
        let e = d.path().join("e");
        hook(&e, "install.d", "50-x", "one");
        hook(&e, "install.d", "lib.sh", "sourced");
        std::fs::create_dir_all(e.join("environment.d")).unwrap();
        std::fs::write(e.join("environment.d/10-env"), "export A=1").unwrap();
        std::fs::write(e.join("README.rst"), "docs").unwrap();
        hook(&e, "tests", "t", "t");
        let paths = BTreeMap::from([("e".to_string(), e.clone())]);
        let els = vec!["e".to_string()];
        let c1 = element_components(&els, &paths);
        assert_eq!(c1["hooks e/install.d"], "50-x");
        assert!(c1.contains_key("file e/install.d/lib.sh"), "{c1:?}");
        assert!(c1.contains_key("file e/environment.d/10-env"));
        assert!(
            !c1.keys()
                .any(|k| k.contains("README") || k.contains("tests"))
        );

        // A hook's content is not a base component...
        hook(&e, "install.d", "50-x", "two");
        assert_eq!(element_components(&els, &paths), c1);
        // ...but a sourced file, environment.d and a new hook are.
        std::fs::write(e.join("environment.d/10-env"), "export A=2").unwrap();
        hook(&e, "install.d", "60-y", "y");
        let c2 = element_components(&els, &paths);
        let changed = changed_components(&c1, &c2, 10);
        assert_eq!(
            changed,
            vec![
                "file e/environment.d/10-env".to_string(),
                "hooks e/install.d".to_string()
            ]
        );
        assert_ne!(base_key(&c1), base_key(&c2));
    }

    #[test]
    fn volatile_environment_is_not_keyed() {
        let mut env = BTreeMap::from([
            ("DIB_RELEASE".to_string(), "bookworm".to_string()),
            ("TMP_MOUNT_PATH".to_string(), "/var/tmp/a/mnt".to_string()),
            (
                "DIB_CREATE_LOCK_REPO".to_string(),
                "http://127.0.0.1:1".to_string(),
            ),
        ]);
        let a = env_components(&env);
        env.insert("TMP_MOUNT_PATH".into(), "/var/tmp/b/mnt".into());
        env.insert("DIB_CREATE_LOCK_REPO".into(), "http://127.0.0.1:2".into());
        assert_eq!(env_components(&env), a);
        env.insert("DIB_RELEASE".into(), "trixie".into());
        assert_eq!(
            changed_components(&a, &env_components(&env), 5),
            vec!["env DIB_RELEASE".to_string()]
        );
    }

    #[test]
    fn trails_name_the_changed_hook() {
        let old = vec![
            "phase install.d".to_string(),
            "hook install.d/50-x aaa".to_string(),
        ];
        let new = vec![
            "phase install.d".to_string(),
            "hook install.d/50-x bbb".to_string(),
        ];
        assert_eq!(
            first_difference(&old, &new).as_deref(),
            Some("install.d/50-x changed")
        );
        assert_eq!(first_difference(&old, &old), None);
    }

    #[test]
    fn output_key_depends_on_tree_and_options() {
        let c = Components::from([("types".to_string(), "qcow2".to_string())]);
        let d = Components::from([("types".to_string(), "raw".to_string())]);
        assert_ne!(output_key("t", &c), output_key("t", &d));
        assert_ne!(output_key("t", &c), output_key("u", &c));
    }
}
