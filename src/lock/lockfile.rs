//! The lockfile: a header paragraph, then one deb822 paragraph per package,
//! sorted by phase, then name, then architecture. See `docs/lockfile.md`.

use crate::pkgdb::deb822::{self, Paragraph};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const VERSION: &str = "1";

pub use crate::phase::Phase;

/// The header paragraph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub distribution: String,
    pub release: String,
    pub architecture: String,
    pub mirror: String,
    /// Base URLs tried (in order) after a package's own URL: `<base>/<Filename>`.
    pub snapshot: Vec<String>,
    pub generated_by: String,
    /// The time the build's files get (SOURCE_DATE_EPOCH) when a build
    /// from this lockfile is not given one: the recording build's own, else
    /// the date of the archive's newest Release file it installed from. So
    /// it depends on what was locked, not on when.
    pub source_date_epoch: Option<u64>,
}

/// One pinned package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub phase: Phase,
    /// Pool path relative to the archive root.
    pub filename: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
    /// Installed during the build, gone at its end (purged in this phase).
    pub removed: Option<Phase>,
}

impl Package {
    /// Name and architecture: one installed package per key.
    pub fn key(&self) -> (String, String) {
        (self.name.clone(), self.arch.clone())
    }

    /// The URLs to try, in order: the package's own, then each snapshot base.
    pub fn urls(&self, header: &Header) -> Vec<String> {
        let mut v = vec![self.url.clone()];
        for base in &header.snapshot {
            v.push(format!(
                "{}/{}",
                base.trim_end_matches('/'),
                self.filename.trim_start_matches('/')
            ));
        }
        v
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lockfile {
    pub header: Header,
    pub packages: Vec<Package>,
}

/// A lockfile that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    #[error("{path}: {source}")]
    Syntax {
        path: String,
        source: deb822::SyntaxError,
    },
    #[error("{path}: line {line}: {msg}")]
    Content {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("reading the lockfile {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Lockfile {
    pub fn read(path: &Path) -> Result<Lockfile, LockfileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LockfileError::Io {
            path: p.clone(),
            source,
        })?;
        Lockfile::parse(&text, &p)
    }

    /// Parses lockfile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Lockfile, LockfileError> {
        let paras = deb822::parse(text).map_err(|source| LockfileError::Syntax {
            path: origin.into(),
            source,
        })?;
        let bad = |line: usize, msg: String| LockfileError::Content {
            path: origin.into(),
            line,
            msg,
        };
        let Some((head, rest)) = paras.split_first() else {
            return Err(bad(1, "empty lockfile".into()));
        };
        match head.get("Lockfile-Version") {
            Some(VERSION) => {}
            Some(v) => {
                return Err(bad(
                    head.line,
                    format!(
                        "Lockfile-Version {v} is not supported (this dib-create reads {VERSION})"
                    ),
                ));
            }
            None => {
                return Err(bad(
                    head.line,
                    "the first paragraph must be the header, with Lockfile-Version".into(),
                ));
            }
        }
        let need = |p: &Paragraph, f: &str| -> Result<String, LockfileError> {
            p.get(f)
                .filter(|v| !v.is_empty())
                .map(String::from)
                .ok_or_else(|| bad(p.line, format!("missing field {f}")))
        };
        let header = Header {
            distribution: need(head, "Distribution")?,
            release: need(head, "Release")?,
            architecture: need(head, "Architecture")?,
            mirror: head.get("Mirror").unwrap_or_default().to_string(),
            snapshot: head
                .get("Snapshot")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            generated_by: head.get("Generated-By").unwrap_or_default().to_string(),
            source_date_epoch: match head.get("Source-Date-Epoch") {
                None => None,
                Some(v) => Some(v.parse().map_err(|_| {
                    bad(
                        head.line,
                        format!("Source-Date-Epoch {v:?} is not a number of seconds"),
                    )
                })?),
            },
        };
        for (field, value) in [
            ("Distribution", &header.distribution),
            ("Release", &header.release),
            ("Architecture", &header.architecture),
        ] {
            if !is_word(value) {
                return Err(bad(
                    head.line,
                    format!(
                        "{field} {value:?} is not a name (letters, digits, `.`, `_`, `-`, `+`; it names directories of the local repository)"
                    ),
                ));
            }
        }
        let mut packages = Vec::new();
        let mut seen = BTreeMap::new();
        for p in rest {
            let phase_s = need(p, "Phase")?;
            let phase = Phase::from_lock_name(&phase_s)
                .ok_or_else(|| bad(p.line, format!("unknown Phase {phase_s}")))?;
            let removed = match p.get("Removed") {
                None => None,
                Some(s) => Some(
                    Phase::from_lock_name(s)
                        .ok_or_else(|| bad(p.line, format!("unknown Removed {s}")))?,
                ),
            };
            let sha256 = need(p, "SHA256")?.to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(p.line, format!("SHA256 {sha256} is not 64 hex digits")));
            }
            let size_s = need(p, "Size")?;
            let size = size_s
                .parse()
                .map_err(|_| bad(p.line, format!("Size {size_s} is not a number")))?;
            let pkg = Package {
                name: need(p, "Package")?,
                version: need(p, "Version")?,
                arch: need(p, "Architecture")?,
                phase,
                filename: need(p, "Filename")?,
                url: need(p, "URL")?,
                sha256,
                size,
                removed,
            };
            let relative = Path::new(&pkg.filename);
            if pkg.filename.is_empty()
                || relative.is_absolute()
                || relative
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(bad(
                    p.line,
                    format!(
                        "Filename {:?} must be a path inside the archive (no `..`, not absolute)",
                        pkg.filename
                    ),
                ));
            }
            if !is_word(&pkg.name) || !is_word(&pkg.arch) {
                return Err(bad(
                    p.line,
                    format!(
                        "{:?}:{:?} is not a package name and architecture",
                        pkg.name, pkg.arch
                    ),
                ));
            }
            if let Some(first) = seen.insert(pkg.key(), p.line) {
                return Err(bad(
                    p.line,
                    format!(
                        "{}:{} is listed twice (first at line {first})",
                        pkg.name, pkg.arch
                    ),
                ));
            }
            packages.push(pkg);
        }
        let mut l = Lockfile { header, packages };
        l.sort();
        Ok(l)
    }

    pub fn sort(&mut self) {
        self.packages
            .sort_by(|a, b| (a.phase, &a.name, &a.arch).cmp(&(b.phase, &b.name, &b.arch)));
    }

    /// The text form: stable, one paragraph per package.
    pub fn render(&self) -> String {
        let h = &self.header;
        let mut head = Paragraph::default();
        head.set("Lockfile-Version", VERSION);
        head.set("Distribution", &h.distribution);
        head.set("Release", &h.release);
        head.set("Architecture", &h.architecture);
        if !h.mirror.is_empty() {
            head.set("Mirror", &h.mirror);
        }
        if !h.snapshot.is_empty() {
            head.set("Snapshot", h.snapshot.join(" "));
        }
        if !h.generated_by.is_empty() {
            head.set("Generated-By", &h.generated_by);
        }
        if let Some(t) = h.source_date_epoch {
            head.set("Source-Date-Epoch", t.to_string());
        }
        let mut out = String::from(
            "# dib-create lockfile: every package the build installs, pinned by SHA256.\n\
             # Regenerate with `dib-create --lock-update FILE ...`; see docs/lockfile.md.\n",
        );
        out.push_str(&head.render());
        for p in &self.packages {
            let mut para = Paragraph::default();
            para.set("Package", &p.name);
            para.set("Version", &p.version);
            para.set("Architecture", &p.arch);
            para.set("Phase", p.phase.lock_label());
            if let Some(r) = p.removed {
                para.set("Removed", r.lock_label());
            }
            para.set("Filename", &p.filename);
            para.set("URL", &p.url);
            para.set("SHA256", &p.sha256);
            para.set("Size", p.size.to_string());
            out.push('\n');
            out.push_str(&para.render());
        }
        out
    }

    /// Writes atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("lock-tmp");
        std::fs::write(&tmp, self.render())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| anyhow::anyhow!("writing the lockfile {}: {e}", path.display()))
    }

    /// The packages that must be installed when the build's package phases end.
    pub fn installed(&self) -> impl Iterator<Item = &Package> {
        self.packages.iter().filter(|p| p.removed.is_none())
    }

    /// The bootstrap set's identity: names, versions, architectures and hashes.
    pub fn bootstrap_key(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for p in self.packages.iter().filter(|p| p.phase == Phase::Root) {
            h.update(format!(
                "{} {} {} {}\n",
                p.name, p.version, p.arch, p.sha256
            ));
        }
        hex(&h.finalize())
    }
}

pub use crate::digest::hex;

/// A name fit for a file name: package names, architectures, suites.
fn is_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

/// What changed between two lockfiles.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub header: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.header.is_empty()
    }

    pub fn render(&self) -> String {
        if self.is_empty() {
            return "no changes\n".into();
        }
        let mut s = String::new();
        for l in &self.header {
            let _ = writeln!(s, "* {l}");
        }
        for l in &self.added {
            let _ = writeln!(s, "+ {l}");
        }
        for l in &self.removed {
            let _ = writeln!(s, "- {l}");
        }
        for l in &self.changed {
            let _ = writeln!(s, "~ {l}");
        }
        let _ = writeln!(
            s,
            "{} added, {} removed, {} changed",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        );
        s
    }
}

/// Added, removed and changed packages (by name and architecture).
pub fn diff(old: &Lockfile, new: &Lockfile) -> Diff {
    let index = |l: &Lockfile| -> BTreeMap<(String, String), Package> {
        l.packages.iter().map(|p| (p.key(), p.clone())).collect()
    };
    let (a, b) = (index(old), index(new));
    let mut d = Diff::default();
    let (ho, hn) = (&old.header, &new.header);
    for (name, o, n) in [
        ("Distribution", &ho.distribution, &hn.distribution),
        ("Release", &ho.release, &hn.release),
        ("Architecture", &ho.architecture, &hn.architecture),
        ("Mirror", &ho.mirror, &hn.mirror),
    ] {
        if o != n {
            d.header.push(format!("{name}: {o} -> {n}"));
        }
    }
    let label = |p: &Package| {
        format!(
            "{}:{} {} ({})",
            p.name,
            p.arch,
            p.version,
            p.phase.lock_label()
        )
    };
    for (k, p) in &b {
        match a.get(k) {
            None => d.added.push(label(p)),
            Some(o) => {
                let mut what = Vec::new();
                if o.version != p.version {
                    what.push(format!("{} -> {}", o.version, p.version));
                } else if o.sha256 != p.sha256 {
                    what.push(format!(
                        "{} rebuilt: sha256 {} -> {}",
                        p.version,
                        &o.sha256[..12],
                        &p.sha256[..12]
                    ));
                }
                if o.phase != p.phase {
                    what.push(format!(
                        "phase {} -> {}",
                        o.phase.lock_label(),
                        p.phase.lock_label()
                    ));
                }
                if o.removed != p.removed {
                    let r = |x: Option<Phase>| x.map_or("kept", Phase::lock_label);
                    what.push(format!("removed {} -> {}", r(o.removed), r(p.removed)));
                }
                if !what.is_empty() {
                    d.changed
                        .push(format!("{}:{} {}", p.name, p.arch, what.join(", ")));
                }
            }
        }
    }
    for (k, p) in &a {
        if !b.contains_key(k) {
            d.removed.push(label(p));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pkg(name: &str, version: &str, phase: Phase) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            phase,
            filename: format!("pool/main/x/{name}/{name}_{version}_amd64.deb"),
            url: format!(
                "http://deb.debian.org/debian/pool/main/x/{name}/{name}_{version}_amd64.deb"
            ),
            sha256: format!("{:064x}", name.len() * 7 + version.len()),
            size: 1234,
            removed: None,
        }
    }

    fn sample() -> Lockfile {
        let mut l = Lockfile {
            header: Header {
                distribution: "debian".into(),
                release: "bookworm".into(),
                architecture: "amd64".into(),
                mirror: "http://deb.debian.org/debian".into(),
                snapshot: vec![
                    "https://snapshot.debian.org/archive/debian/20250101T000000Z".into(),
                ],
                generated_by: "dib-create 0.1.0".into(),
                source_date_epoch: Some(1_700_000_000),
            },
            packages: vec![
                pkg("tree", "2.1.0-1", Phase::Install),
                pkg("apt", "2.6.1", Phase::Root),
                pkg("file", "1:5.44-3", Phase::PostInstall),
            ],
        };
        l.packages[2].removed = Some(Phase::PostInstall);
        l.sort();
        l
    }

    #[test]
    fn round_trip_is_stable() {
        let l = sample();
        let text = l.render();
        let back = Lockfile::parse(&text, "test.lock").unwrap();
        assert_eq!(back, l);
        assert_eq!(back.render(), text);
        // Sorted by phase first.
        let names: Vec<_> = back.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["apt", "tree", "file"]);
        assert!(
            text.contains(
                "\nPackage: apt\nVersion: 2.6.1\nArchitecture: amd64\nPhase: bootstrap\n"
            )
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = sample().render().replace("Size: 1234", "Size: lots");
        let e = Lockfile::parse(&text, "x.lock").unwrap_err().to_string();
        assert!(e.starts_with("x.lock: line "), "{e}");
        assert!(e.contains("Size lots is not a number"), "{e}");
        let e = Lockfile::parse("Package: a\n", "y.lock")
            .unwrap_err()
            .to_string();
        assert!(e.contains("header"), "{e}");
        let dup = sample().render() + "\n" + sample().render().split("\n\n").nth(1).unwrap();
        let e = Lockfile::parse(&dup, "z.lock").unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn diff_reports_added_removed_changed() {
        let old = sample();
        let mut new = sample();
        new.packages.retain(|p| p.name != "tree");
        new.packages.push(pkg("less", "590-2", Phase::Install));
        new.packages[0].version = "2.6.2".into();
        let d = diff(&old, &new);
        assert_eq!(d.added, ["less:amd64 590-2 (install.d)"]);
        assert_eq!(d.removed, ["tree:amd64 2.1.0-1 (install.d)"]);
        assert_eq!(d.changed, ["apt:amd64 2.6.1 -> 2.6.2"]);
        assert!(d.render().ends_with("1 added, 1 removed, 1 changed\n"));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn urls_try_snapshot_after_the_mirror() {
        let l = sample();
        let u = l.packages[0].urls(&l.header);
        assert_eq!(u.len(), 2);
        assert!(
            u[1].starts_with(
                "https://snapshot.debian.org/archive/debian/20250101T000000Z/pool/main/"
            )
        );
    }
}
