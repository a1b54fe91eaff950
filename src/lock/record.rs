//! Recording what a build installs: snapshots of the tree's dpkg status after
//! each package phase, and each package's archive file resolved from the apt
//! lists in the tree (while they still exist: the debootstrap element's
//! cleanup.d removes them).

use super::deb822;
use super::lockfile::{Header, Lockfile, Package, Phase};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Installed packages: (name, arch) -> version.
pub type Installed = BTreeMap<(String, String), String>;

/// Reads `var/lib/dpkg/status` of `root`: the fully installed packages.
pub fn installed(root: &Path) -> anyhow::Result<Installed> {
    let p = root.join("var/lib/dpkg/status");
    let text =
        std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
    Ok(parse_status(&text))
}

pub fn parse_status(text: &str) -> Installed {
    let mut out = Installed::new();
    deb822::scan(
        text,
        ["Package", "Status", "Version", "Architecture"],
        |v| {
            if let [Some(name), Some(status), Some(version), Some(arch)] = *v
                && status.ends_with(" installed")
            {
                out.insert((name.to_string(), arch.to_string()), version.to_string());
            }
        },
    );
    out
}

/// Where one installed package came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub filename: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug)]
struct Seen {
    version: String,
    phase: Phase,
    removed: Option<Phase>,
    resolved: Option<Resolved>,
}

/// Accumulates snapshots into a lockfile.
#[derive(Default)]
pub struct Recorder {
    seen: BTreeMap<(String, String), Seen>,
}

impl Recorder {
    /// Takes the snapshot after `phase` of the tree at `root`.
    pub fn snapshot(&mut self, phase: Phase, root: &Path) -> anyhow::Result<()> {
        let now = installed(root)?;
        self.apply(phase, &now);
        let wanted: Vec<(String, String, String)> = self
            .seen
            .iter()
            .filter(|(_, s)| s.resolved.is_none() && s.removed.is_none())
            .map(|((n, a), s)| (n.clone(), s.version.clone(), a.clone()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let found = resolve_from_lists(root, &wanted)?;
        for (n, v, a) in wanted {
            if let Some(r) = found.get(&(n.clone(), v, a.clone()))
                && let Some(s) = self.seen.get_mut(&(n, a))
            {
                s.resolved = Some(r.clone());
            }
        }
        Ok(())
    }

    /// Merges one dpkg snapshot.
    fn apply(&mut self, phase: Phase, now: &Installed) {
        for (key, version) in now {
            match self.seen.get_mut(key) {
                None => {
                    self.seen.insert(
                        key.clone(),
                        Seen {
                            version: version.clone(),
                            phase,
                            removed: None,
                            resolved: None,
                        },
                    );
                }
                Some(s) => {
                    s.removed = None;
                    if &s.version != version {
                        s.version = version.clone();
                        s.resolved = None;
                    }
                }
            }
        }
        for (key, s) in self.seen.iter_mut() {
            if s.removed.is_none() && !now.contains_key(key) {
                s.removed = Some(phase);
            }
        }
    }

    /// The lockfile; fails naming every package whose file was not found.
    pub fn finish(&self, header: Header) -> anyhow::Result<Lockfile> {
        let mut packages = Vec::new();
        let mut missing = Vec::new();
        for ((name, arch), s) in &self.seen {
            let Some(r) = &s.resolved else {
                missing.push(format!("{name}:{arch} {}", s.version));
                continue;
            };
            packages.push(Package {
                name: name.clone(),
                version: s.version.clone(),
                arch: arch.clone(),
                phase: s.phase,
                filename: r.filename.clone(),
                url: r.url.clone(),
                sha256: r.sha256.clone(),
                size: r.size,
                removed: s.removed,
            });
        }
        if !missing.is_empty() {
            anyhow::bail!(
                "cannot lock {} package(s): no apt source of the build offers these versions (installed from a local .deb, or from a source removed before its lists were read): {}",
                missing.len(),
                missing.join(", ")
            );
        }
        let mut l = Lockfile { header, packages };
        l.sort();
        Ok(l)
    }
}

/// One `deb` source: its base URI and suite (a flat repository's suite ends in `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
}

/// The `deb` sources configured in the tree (one-line and deb822 formats).
pub fn sources(root: &Path) -> Vec<Source> {
    let etc = root.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(etc.join("sources.list.d")) {
        let mut more: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => out.extend(parse_deb822_sources(&text)),
            _ => out.extend(parse_one_line_sources(&text)),
        }
    }
    out
}

pub fn parse_one_line_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uri: uri.into(),
                suite: suite.into(),
            });
        }
    }
    out
}

fn parse_deb822_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for p in deb822::parse(text).unwrap_or_default() {
        if !p
            .get("Types")
            .unwrap_or("deb")
            .split_whitespace()
            .any(|t| t == "deb")
            || p.get("Enabled") == Some("no")
        {
            continue;
        }
        for uri in p.get("URIs").unwrap_or("").split_whitespace() {
            for suite in p.get("Suites").unwrap_or("").split_whitespace() {
                out.push(Source {
                    uri: uri.into(),
                    suite: suite.into(),
                });
            }
        }
    }
    out
}

/// apt's name for a URI in `/var/lib/apt/lists`: no scheme or credentials,
/// some characters %-quoted, `/` turned into `_`.
pub fn uri_to_list_name(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let rest = match rest.split_once('/') {
        Some((host, path)) => {
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    let mut s = String::new();
    for c in rest.chars() {
        if "\\|{}[]<>\"^~_=!@#$%^&*".contains(c) || c == ' ' {
            s.push_str(&format!("%{:02x}", c as u32));
        } else if c == '/' {
            s.push('_');
        } else {
            s.push(c);
        }
    }
    s
}

/// The list-file prefix of a source's indices.
fn list_prefix(src: &Source) -> String {
    let base = src.uri.trim_end_matches('/');
    if src.suite.ends_with('/') {
        uri_to_list_name(&format!("{base}/{}", src.suite))
    } else {
        uri_to_list_name(&format!("{base}/dists/{}/", src.suite))
    }
}

/// Finds (name, version, arch) in the tree's `*_Packages` lists.
pub fn resolve_from_lists(
    root: &Path,
    wanted: &[(String, String, String)],
) -> anyhow::Result<HashMap<(String, String, String), Resolved>> {
    let lists_dir = root.join("var/lib/apt/lists");
    let Ok(rd) = std::fs::read_dir(&lists_dir) else {
        return Ok(HashMap::new());
    };
    let srcs = sources(root);
    let mut lists: Vec<(usize, String, std::path::PathBuf)> = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with("_Packages") {
            continue;
        }
        let hit = srcs
            .iter()
            .enumerate()
            .find(|(_, s)| name.starts_with(&list_prefix(s)));
        let (order, base) = match hit {
            Some((i, s)) => (i, s.uri.trim_end_matches('/').to_string()),
            // Not from a configured source (any more): decode the name.
            None => match name.split_once("_dists_") {
                Some((b, _)) => (usize::MAX, format!("http://{}", b.replace('_', "/"))),
                None => continue,
            },
        };
        lists.push((order, base, e.path()));
    }
    lists.sort();
    let want: std::collections::HashSet<(&str, &str, &str)> = wanted
        .iter()
        .map(|(n, v, a)| (n.as_str(), v.as_str(), a.as_str()))
        .collect();
    let mut found = HashMap::new();
    for (_, base, path) in lists {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        deb822::scan(
            &text,
            [
                "Package",
                "Version",
                "Architecture",
                "Filename",
                "Size",
                "SHA256",
            ],
            |v| {
                let [Some(n), Some(ver), Some(a), Some(f), Some(size), Some(sha)] = *v else {
                    return;
                };
                if !want.contains(&(n, ver, a)) {
                    return;
                }
                let key = (n.to_string(), ver.to_string(), a.to_string());
                if found.contains_key(&key) {
                    return;
                }
                found.insert(
                    key,
                    Resolved {
                        filename: f.to_string(),
                        url: format!("{base}/{}", f.trim_start_matches('/')),
                        sha256: sha.to_ascii_lowercase(),
                        size: size.parse().unwrap_or(0),
                    },
                );
            },
        );
    }
    Ok(found)
}

/// The header fields read off the tree (os-release) and the sources.
pub fn header_from_tree(root: &Path, arch: &str) -> Header {
    let os = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    let field = |k: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let release = field("VERSION_CODENAME");
    let srcs = sources(root);
    let mirror = srcs
        .iter()
        .find(|s| s.suite == release)
        .or(srcs.first())
        .map(|s| s.uri.trim_end_matches('/').to_string())
        .unwrap_or_default();
    Header {
        distribution: field("ID"),
        release,
        architecture: arch.to_string(),
        mirror,
        snapshot: Vec::new(),
        generated_by: format!("dib-create {}", env!("CARGO_PKG_VERSION")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keeps_installed_only() {
        let s = "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n\
                 Package: b\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: amd64\n\n\
                 Package: c\nStatus: install ok installed\nVersion: 3\nArchitecture: all\n";
        let i = parse_status(s);
        assert_eq!(i.len(), 2);
        assert_eq!(i[&("c".into(), "all".into())], "3");
    }

    #[test]
    fn list_names_match_apt() {
        assert_eq!(
            list_prefix(&Source {
                uri: "http://deb.debian.org/debian".into(),
                suite: "bookworm-updates".into()
            }),
            "deb.debian.org_debian_dists_bookworm-updates_"
        );
        assert_eq!(
            uri_to_list_name("http://user:pw@host:8080/a_b/~x"),
            "host:8080_a%5fb_%7ex"
        );
        let s = parse_one_line_sources(
            "# c\ndeb [trusted=yes arch=amd64] http://127.0.0.1:1/ bookworm main\ndeb-src http://x y z\n",
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suite, "bookworm");
    }

    #[test]
    fn recorder_tracks_phases_versions_and_removals() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(r.join("var/lib/apt/lists")).unwrap();
        std::fs::create_dir_all(r.join("etc/apt/sources.list.d")).unwrap();
        std::fs::write(
            r.join("etc/apt/sources.list.d/default.list"),
            "deb http://deb.debian.org/debian bookworm main\n",
        )
        .unwrap();
        let entry = |n: &str, v: &str| {
            format!(
                "Package: {n}\nVersion: {v}\nArchitecture: amd64\nFilename: pool/main/{n}_{v}.deb\nSize: 10\nSHA256: {}\nDescription: x\n more\n\n",
                "ab".repeat(32)
            )
        };
        std::fs::write(
            r.join(
                "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
            ),
            entry("a", "1") + &entry("a", "2") + &entry("b", "1") + &entry("c", "1"),
        )
        .unwrap();
        let status = |pkgs: &[(&str, &str)]| {
            let text: String = pkgs
                .iter()
                .map(|(n, v)| {
                    format!("Package: {n}\nStatus: install ok installed\nVersion: {v}\nArchitecture: amd64\n\n")
                })
                .collect();
            std::fs::write(r.join("var/lib/dpkg/status"), text).unwrap();
        };
        let mut rec = Recorder::default();
        status(&[("a", "1")]);
        rec.snapshot(Phase::Root, r).unwrap();
        status(&[("a", "2"), ("b", "1"), ("c", "1")]);
        rec.snapshot(Phase::Install, r).unwrap();
        status(&[("a", "2"), ("b", "1")]);
        rec.snapshot(Phase::PostInstall, r).unwrap();
        let l = rec.finish(Header::default()).unwrap();
        let got: Vec<_> = l
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.phase, p.removed))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "2", Phase::Root, None),
                ("b", "1", Phase::Install, None),
                ("c", "1", Phase::Install, Some(Phase::PostInstall)),
            ]
        );
        assert_eq!(
            l.packages[0].url,
            "http://deb.debian.org/debian/pool/main/a_2.deb"
        );

        // A version no list offers cannot be locked.
        status(&[("a", "3")]);
        rec.snapshot(Phase::PostInstall, r).unwrap();
        let e = rec.finish(Header::default()).unwrap_err().to_string();
        assert!(e.contains("a:amd64 3"), "{e}");
    }
}
