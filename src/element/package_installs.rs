//! `package-installs.yaml` (or `.json`): which packages each element installs
//! and removes in which phase, filtered by arch, install type, python version
//! and `when:` conditions, then renamed through the element's pkg-map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::discovery::read_text_if_exists;
use super::error::ElementError;
use super::pkgmap::{PkgMap, Target};
use crate::log;

/// The keys a package entry may have.
const KNOWN_KEYS: [&str; 8] = [
    "phase",
    "uninstall",
    "build-only",
    "installtype",
    "arch",
    "not-arch",
    "dib_python_version",
    "when",
];

/// Package names (after pkg-map) to install and remove in one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseLists {
    pub install: Vec<String>,
    pub uninstall: Vec<String>,
}

/// What the filters compare against.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The environment after environment.d (what `when:` sees).
    pub env: &'a BTreeMap<String, String>,
    /// Target architecture.
    pub arch: &'a str,
}

impl Context<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// `DIB_INSTALLTYPE_<element>`, else `DIB_DEFAULT_INSTALLTYPE`, else DIB's "source".
    fn installtype_of(&self, element: &str) -> &str {
        let key = format!("DIB_INSTALLTYPE_{}", element.replace('-', "_"));
        self.var(&key)
            .or_else(|| self.var("DIB_DEFAULT_INSTALLTYPE"))
            .unwrap_or("source")
    }
}

/// One requested install or removal, before pkg-map.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Request {
    phase: String,
    package: String,
    element: String,
    /// Installed for good: cancels removals of the same package anywhere.
    permanent: bool,
}

#[derive(Debug, Default)]
struct Requests {
    install: Vec<Request>,
    uninstall: Vec<Request>,
}

/// Computes the per-phase package lists for `elements` (in order). Every phase
/// of [`crate::phase::package_phases`] is present in the result.
pub fn compute(
    elements: &[(String, PathBuf)],
    ctx: &Context,
) -> Result<BTreeMap<String, PhaseLists>, ElementError> {
    let mut requests = Requests::default();
    for (element, dir) in elements {
        if let Some((path, value)) = load(dir)? {
            let file = FileCtx {
                element,
                path: &path,
                ctx,
            };
            file.collect(&value, &mut requests)?;
        }
    }
    cancel_removals_of_installed(&mut requests);
    apply_pkg_maps(elements, &requests, ctx)
}

/// Reads `package-installs.yaml`, or `.json` when there is no YAML file.
fn load(dir: &Path) -> Result<Option<(PathBuf, Value)>, ElementError> {
    let yaml = dir.join("package-installs.yaml");
    if let Some(text) = read_text_if_exists(&yaml)? {
        let value = serde_saphyr::from_str::<Value>(&text).map_err(|e| ElementError::Syntax {
            path: yaml.clone(),
            message: e
                .to_string()
                .replace("<input>", &yaml.display().to_string()),
        })?;
        return Ok(Some((yaml, value)));
    }
    let json = dir.join("package-installs.json");
    if let Some(text) = read_text_if_exists(&json)? {
        let value = serde_json::from_str::<Value>(&text).map_err(|e| ElementError::Syntax {
            path: json.clone(),
            message: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
        return Ok(Some((json, value)));
    }
    Ok(None)
}

/// One package-installs file being evaluated.
struct FileCtx<'a> {
    element: &'a str,
    path: &'a Path,
    ctx: &'a Context<'a>,
}

impl FileCtx<'_> {
    fn error(&self, message: String) -> ElementError {
        ElementError::PackageInstalls {
            path: self.path.to_path_buf(),
            element: self.element.to_owned(),
            message,
        }
    }

    fn collect(&self, value: &Value, out: &mut Requests) -> Result<(), ElementError> {
        let packages = match value {
            // An empty file.
            Value::Null => return Ok(()),
            Value::Object(m) => m,
            other => {
                return Err(self.error(format!(
                    "expected a map of package name to options, found {}",
                    kind(other)
                )));
            }
        };
        for (package, options) in packages {
            let name_ok = package
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && !package.chars().any(|c| c.is_whitespace() || c.is_control());
            if !name_ok {
                return Err(self.error(format!(
                    "{package:?} is not a package name (it would reach the package manager as an option or several words)"
                )));
            }
            for opts in self.option_maps(package, options)? {
                self.collect_one(package, &opts, out)?;
            }
        }
        Ok(())
    }

    /// null → one empty option map; a map → itself; a list → each (map or null).
    fn option_maps(
        &self,
        package: &str,
        v: &Value,
    ) -> Result<Vec<Map<String, Value>>, ElementError> {
        let one = |v: &Value| match v {
            Value::Null => Ok(Map::new()),
            Value::Object(m) => Ok(m.clone()),
            other => Err(self.error(format!(
                "package {package}: expected options as a map (or a list of maps), found {}",
                kind(other)
            ))),
        };
        match v {
            Value::Array(items) if items.is_empty() => Ok(vec![Map::new()]),
            Value::Array(items) => items.iter().map(one).collect(),
            other => Ok(vec![one(other)?]),
        }
    }

    fn collect_one(
        &self,
        package: &str,
        opts: &Map<String, Value>,
        out: &mut Requests,
    ) -> Result<(), ElementError> {
        for key in opts.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            log::warn(&format!(
                "{}: package {package}: unknown key {key} ignored (known: {})",
                self.path.display(),
                KNOWN_KEYS.join(", ")
            ));
        }
        if !self.applies(package, opts)? {
            return Ok(());
        }
        let phase = self.phase(package, opts)?;
        let uninstall = self.flag(package, opts, "uninstall")?;
        let build_only = self.flag(package, opts, "build-only")?;
        let request = |permanent| Request {
            phase: phase.clone(),
            package: package.to_owned(),
            element: self.element.to_owned(),
            permanent,
        };
        if build_only {
            // Needed while building: installed, then removed at the end of the phase.
            out.install.push(request(false));
            out.uninstall.push(request(false));
        } else if uninstall {
            out.uninstall.push(request(false));
        } else {
            out.install.push(request(true));
        }
        Ok(())
    }

    /// Whether every filter (installtype, arch, python version, when) passes.
    fn applies(&self, package: &str, opts: &Map<String, Value>) -> Result<bool, ElementError> {
        let installtype = self.string(package, opts, "installtype")?;
        if installtype.is_some_and(|t| t != self.ctx.installtype_of(self.element)) {
            return Ok(false);
        }
        if !self.arch_matches(package, opts)? {
            return Ok(false);
        }
        let python = self.scalar(package, opts, "dib_python_version")?;
        if python.is_some_and(|v| Some(v.as_str()) != self.ctx.var("DIB_PYTHON_VERSION")) {
            return Ok(false);
        }
        self.when_holds(package, opts.get("when"))
    }

    fn arch_matches(&self, package: &str, opts: &Map<String, Value>) -> Result<bool, ElementError> {
        let arch = self.scalar(package, opts, "arch")?;
        let not_arch = self.scalar(package, opts, "not-arch")?;
        let listed = |list: &str| list.split(',').map(str::trim).any(|a| a == self.ctx.arch);
        match (arch, not_arch) {
            (Some(_), Some(_)) => Err(self.error(format!(
                "package {package}: arch and not-arch are mutually exclusive; keep one"
            ))),
            (Some(list), None) => Ok(listed(&list)),
            (None, Some(list)) => Ok(!listed(&list)),
            (None, None) => Ok(true),
        }
    }

    /// `when:` holds when every statement holds.
    fn when_holds(&self, package: &str, when: Option<&Value>) -> Result<bool, ElementError> {
        let statements: Vec<&str> = match when {
            None | Some(Value::Null) => return Ok(true),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().ok_or_else(|| {
                        self.error(format!(
                            "package {package}: when: items must be strings like VAR=value, found {}",
                            kind(i)
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(self.error(format!(
                    "package {package}: when: must be a string like VAR=value or a list of them, found {}",
                    kind(other)
                )));
            }
        };
        for statement in statements {
            if !self.statement_holds(package, statement)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn statement_holds(&self, package: &str, statement: &str) -> Result<bool, ElementError> {
        let Some((var, negated, value)) = parse_when(statement) else {
            return Err(self.error(format!(
                "package {package}: malformed when: `{statement}`; expected VAR=value or VAR!=value"
            )));
        };
        let Some(actual) = self.ctx.var(var) else {
            return Err(ElementError::WhenUnset {
                path: self.path.to_path_buf(),
                element: self.element.to_owned(),
                statement: statement.to_owned(),
                var: var.to_owned(),
            });
        };
        Ok((actual == value) != negated)
    }

    fn phase(&self, package: &str, opts: &Map<String, Value>) -> Result<String, ElementError> {
        let phase = self
            .string(package, opts, "phase")?
            .unwrap_or_else(|| "install.d".to_owned());
        if crate::phase::package_phases().any(|p| p == phase) {
            Ok(phase)
        } else {
            Err(self.error(format!(
                "package {package}: phase {phase} is not one where packages are installed; \
                 use one of {}",
                crate::phase::package_phases()
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// A boolean option. Like DIB, a key given without a value counts as set.
    fn flag(
        &self,
        package: &str,
        opts: &Map<String, Value>,
        key: &str,
    ) -> Result<bool, ElementError> {
        match opts.get(key) {
            None => Ok(false),
            Some(Value::Null) => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(format!(
                "package {package}: {key} must be true or false, found {}",
                kind(other)
            ))),
        }
    }

    fn string(
        &self,
        package: &str,
        opts: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, ElementError> {
        match opts.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(format!(
                "package {package}: {key} must be a string, found {}",
                kind(other)
            ))),
        }
    }

    /// A string or number option, as text (`dib_python_version: 3`, `arch: 386`).
    fn scalar(
        &self,
        package: &str,
        opts: &Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, ElementError> {
        match opts.get(key) {
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            _ => self.string(package, opts, key),
        }
    }
}

/// Splits `VAR=value` / `VAR != value` into (var, negated, value).
fn parse_when(statement: &str) -> Option<(&str, bool, &str)> {
    let s = statement.trim_start();
    let var_len = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    if var_len == 0 {
        return None;
    }
    let (var, rest) = s.split_at(var_len);
    let rest = rest.trim_start();
    let (negated, value) = if let Some(v) = rest.strip_prefix("!=") {
        (true, v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (false, v)
    } else {
        return None;
    };
    Some((var, negated, value.trim()))
}

/// An install anywhere (that is not build-only) cancels every removal of the
/// same package, so one element cannot remove what another needs.
fn cancel_removals_of_installed(requests: &mut Requests) {
    let kept: BTreeSet<&str> = requests
        .install
        .iter()
        .filter(|r| r.permanent)
        .map(|r| r.package.as_str())
        .collect();
    let uninstall = requests
        .uninstall
        .iter()
        .filter(|r| !kept.contains(r.package.as_str()))
        .cloned()
        .collect();
    requests.uninstall = uninstall;
}

/// Renames through each owning element's pkg-map and builds the phase lists.
fn apply_pkg_maps(
    elements: &[(String, PathBuf)],
    requests: &Requests,
    ctx: &Context,
) -> Result<BTreeMap<String, PhaseLists>, ElementError> {
    let mut maps: BTreeMap<&str, Option<PkgMap>> = BTreeMap::new();
    for (name, dir) in elements {
        maps.insert(name, PkgMap::load(dir)?);
    }
    let target = Target {
        distro: ctx.var("DISTRO_NAME"),
        release: ctx.var("DIB_RELEASE"),
    };
    let mapped = |r: &Request| -> Vec<String> {
        match maps.get(r.element.as_str()) {
            Some(Some(map)) => map.map(&r.package, target),
            _ => vec![r.package.clone()],
        }
    };
    let mut out: BTreeMap<String, PhaseLists> = crate::phase::package_phases()
        .map(|p| (p.to_string(), PhaseLists::default()))
        .collect();
    for r in &requests.install {
        if let Some(lists) = out.get_mut(&r.phase) {
            push_unique(&mut lists.install, mapped(r));
        }
    }
    for r in &requests.uninstall {
        if let Some(lists) = out.get_mut(&r.phase) {
            push_unique(&mut lists.uninstall, mapped(r));
        }
    }
    Ok(out)
}

fn push_unique(list: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Fixture {
        _dir: tempfile::TempDir,
        elements: Vec<(String, PathBuf)>,
    }

    /// Elements from (name, package-installs.yaml, optional pkg-map).
    fn fixture(specs: &[(&str, &str, Option<&str>)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut elements = Vec::new();
        for (name, yaml, pkgmap) in specs {
            let p = dir.path().join(name);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("package-installs.yaml"), yaml).unwrap();
            if let Some(m) = pkgmap {
                fs::write(p.join("pkg-map"), m).unwrap();
            }
            elements.push((name.to_string(), p));
        }
        Fixture {
            _dir: dir,
            elements,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(
        f: &Fixture,
        vars: &[(&str, &str)],
        arch: &str,
    ) -> Result<BTreeMap<String, PhaseLists>, ElementError> {
        let env = env(vars);
        compute(&f.elements, &Context { env: &env, arch })
    }

    #[test]
    fn phases_uninstall_and_build_only() {
        let f = fixture(&[(
            "a",
            "libxml2:\ngrub2:\n  phase: pre-install.d\nnetworkmanager:\n  uninstall: true\nlibssl-dev:\n  build-only: True\n",
            None,
        )]);
        let out = run(&f, &[], "amd64").unwrap();
        assert_eq!(out["pre-install.d"].install, ["grub2"]);
        assert_eq!(out["install.d"].install, ["libxml2", "libssl-dev"]);
        assert_eq!(out["install.d"].uninstall, ["networkmanager", "libssl-dev"]);
        assert_eq!(out["post-install.d"], PhaseLists::default());
    }

    #[test]
    fn an_install_anywhere_cancels_a_removal() {
        let f = fixture(&[
            (
                "a",
                "curl:\n  uninstall: true\nmake:\n  build-only: true\n",
                None,
            ),
            ("b", "curl:\n  phase: post-install.d\nmake:\n", None),
        ]);
        let out = run(&f, &[], "amd64").unwrap();
        assert!(out["install.d"].uninstall.is_empty());
        assert_eq!(out["install.d"].install, ["make"]);
        assert_eq!(out["post-install.d"].install, ["curl"]);
    }

    #[test]
    fn arch_filters_strip_spaces() {
        let f = fixture(&[(
            "a",
            "only-amd:\n  arch: ppc64el, amd64\nnot-ppc:\n  not-arch: ppc64el , arm64\nonly-arm:\n  arch: arm64\n",
            None,
        )]);
        assert_eq!(
            run(&f, &[], "amd64").unwrap()["install.d"].install,
            ["only-amd", "not-ppc"]
        );
        assert_eq!(
            run(&f, &[], "arm64").unwrap()["install.d"].install,
            ["only-arm"]
        );
    }

    #[test]
    fn arch_and_not_arch_together_are_an_error() {
        let f = fixture(&[("a", "x:\n  arch: amd64\n  not-arch: arm64\n", None)]);
        let err = run(&f, &[], "amd64").unwrap_err().to_string();
        assert!(err.contains("mutually exclusive"), "{err}");
        assert!(err.contains("package-installs.yaml"), "{err}");
    }

    #[test]
    fn installtype_and_python_version() {
        let f = fixture(&[(
            "my-el",
            "src-only:\n  installtype: source\npkg-only:\n  installtype: package\npy2:\n  dib_python_version: 2\npy3:\n  dib_python_version: 3\n",
            None,
        )]);
        let out = run(&f, &[("DIB_PYTHON_VERSION", "3")], "amd64").unwrap();
        assert_eq!(out["install.d"].install, ["src-only", "py3"]);
        let out = run(&f, &[("DIB_DEFAULT_INSTALLTYPE", "package")], "amd64").unwrap();
        assert_eq!(out["install.d"].install, ["pkg-only"]);
        let vars = [
            ("DIB_DEFAULT_INSTALLTYPE", "package"),
            ("DIB_INSTALLTYPE_my_el", "source"),
        ];
        assert_eq!(
            run(&f, &vars, "amd64").unwrap()["install.d"].install,
            ["src-only"]
        );
    }

    #[test]
    fn when_statements_and_lists() {
        let f = fixture(&[(
            "a",
            "a-on:\n  when: FLAG = 1\na-off:\n  when: FLAG!=1\nboth:\n  when:\n    - FLAG=1\n    - DIB_RELEASE != xenial\n",
            None,
        )]);
        let out = run(&f, &[("FLAG", "1"), ("DIB_RELEASE", "noble")], "amd64").unwrap();
        assert_eq!(out["install.d"].install, ["a-on", "both"]);
        let out = run(&f, &[("FLAG", "0"), ("DIB_RELEASE", "noble")], "amd64").unwrap();
        assert_eq!(out["install.d"].install, ["a-off"]);
    }

    #[test]
    fn when_on_unset_variable_names_element_and_file() {
        let f = fixture(&[("my-el", "x:\n  when: NOT_SET=1\n", None)]);
        let err = run(&f, &[], "amd64").unwrap_err().to_string();
        assert!(err.contains("my-el"), "{err}");
        assert!(err.contains("my-el/package-installs.yaml"), "{err}");
        assert!(err.contains("NOT_SET, which is not set"), "{err}");
    }

    #[test]
    fn list_of_option_maps() {
        let f = fixture(&[(
            "a",
            "kernel:\n  - not-arch: arm64\n    when: K = generic\n  - arch: arm64\n    phase: pre-install.d\n",
            None,
        )]);
        let out = run(&f, &[("K", "generic")], "arm64").unwrap();
        assert_eq!(out["pre-install.d"].install, ["kernel"]);
        assert!(out["install.d"].install.is_empty());
    }

    #[test]
    fn pkg_map_of_owning_element_applies() {
        let f = fixture(&[
            (
                "a",
                "vim:\nsuse-only:\n",
                Some(
                    r#"{"distro": {"ubuntu": {"vim": "vim-nox"}}, "family": {"debian": {"suse-only": ""}}}"#,
                ),
            ),
            ("b", "vim:\n", None),
        ]);
        let out = run(
            &f,
            &[("DISTRO_NAME", "ubuntu"), ("DIB_RELEASE", "noble")],
            "amd64",
        )
        .unwrap();
        assert_eq!(out["install.d"].install, ["vim-nox", "vim"]);
    }

    #[test]
    fn json_is_read_when_there_is_no_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("package-installs.json"),
            r#"{"libxml2": null, "nm": {"uninstall": true}}"#,
        )
        .unwrap();
        let env = env(&[]);
        let out = compute(
            &[("j".into(), p)],
            &Context {
                env: &env,
                arch: "amd64",
            },
        )
        .unwrap();
        assert_eq!(out["install.d"].install, ["libxml2"]);
        assert_eq!(out["install.d"].uninstall, ["nm"]);
    }

    #[test]
    fn yaml_syntax_error_shows_file_line_and_column() {
        let f = fixture(&[("a", "a:\n  b: [1, 2\nc: d\n", None)]);
        let err = run(&f, &[], "amd64").unwrap_err().to_string();
        assert!(err.contains("a/package-installs.yaml"), "{err}");
        assert!(err.contains("line 3 column 2"), "{err}");
    }

    #[test]
    fn wrong_types_are_clear_errors() {
        for (yaml, needle) in [
            (
                "- a\n- b\n",
                "expected a map of package name to options, found a list",
            ),
            ("x: 3\n", "package x: expected options as a map"),
            ("x:\n  phase: [a]\n", "phase must be a string, found a list"),
            (
                "x:\n  uninstall: maybe\n",
                "uninstall must be true or false",
            ),
            ("x:\n  when: 3\n", "when: must be a string"),
            (
                "x:\n  when: [\"A=1\", {b: c}]\n",
                "when: items must be strings",
            ),
            ("x:\n  when: nonsense\n", "malformed when"),
            (
                "x:\n  phase: root.d\n",
                "phase root.d is not one where packages are installed",
            ),
        ] {
            let f = fixture(&[("a", yaml, None)]);
            let err = run(&f, &[("A", "1")], "amd64").unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn empty_file_and_non_utf8() {
        let f = fixture(&[("a", "", None)]);
        assert!(
            run(&f, &[], "amd64").unwrap()["install.d"]
                .install
                .is_empty()
        );
        let f = fixture(&[("a", "", None)]);
        fs::write(f.elements[0].1.join("package-installs.yaml"), b"\xff: x\n").unwrap();
        let err = run(&f, &[], "amd64").unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn odd_yaml_never_panics() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        for yaml in [
            "~",
            "[]",
            "{}",
            "a: [[]]",
            "a: {when: []}",
            "a: [~, {}]",
            "a: !!binary aGVsbG8=",
            "&x [*x]",
            "a: *undefined",
            "? [a]\n: b\n",
            "a: 1\na: 2\n",
            "\t- x",
            "a: {phase: 3}",
            "a: {arch: [amd64]}",
            "a: {dib_python_version: [3]}",
            "a: {installtype: {}}",
            bomb,
        ] {
            let f = fixture(&[("a", yaml, None)]);
            let _ = run(&f, &[], "amd64");
        }
    }

    #[test]
    fn parse_when_forms() {
        assert_eq!(parse_when("A=1"), Some(("A", false, "1")));
        assert_eq!(parse_when("A != b c "), Some(("A", true, "b c")));
        assert_eq!(parse_when("A"), None);
        assert_eq!(parse_when("=1"), None);
    }
}
