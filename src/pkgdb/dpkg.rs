//! The Debian package database: dpkg's status file and apt's sources and
//! lists in a tree.

use super::deb822;
use super::{Package, Source};
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

/// The installed packages of `root` with their Installed-Size (dpkg records
/// KiB).
pub fn installed_sizes(root: &Path) -> anyhow::Result<Vec<(String, String, u64)>> {
    let p = root.join("var/lib/dpkg/status");
    let text =
        std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
    Ok(parse_sizes(&text))
}

fn parse_sizes(text: &str) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    deb822::scan(
        text,
        ["Package", "Status", "Version", "Installed-Size"],
        |v| {
            if let [Some(name), Some(status), Some(version), size] = *v
                && status.ends_with(" installed")
            {
                let kib = size.and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
                out.push((name.to_string(), version.to_string(), kib * 1024));
            }
        },
    );
    out
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

/// The installed packages of the tree at `root`, sorted by name, each with
/// its archive hash and URL when the tree's apt lists still have them.
pub fn packages_with_hashes(root: &Path) -> anyhow::Result<Vec<Package>> {
    let wanted: Vec<(String, String, String)> = installed(root)?
        .into_iter()
        .map(|((n, a), v)| (n, v, a))
        .collect();
    let found = resolve_from_lists(root, &wanted)?;
    Ok(wanted
        .into_iter()
        .map(|key| {
            let r = found.get(&key);
            Package {
                name: key.0.clone(),
                version: key.1.clone(),
                architecture: key.2.clone(),
                sha256: r.map(|r| r.sha256.clone()),
                url: r.map(|r| r.url.clone()),
            }
        })
        .collect())
}

/// Installed versions of the packages `names` in the dpkg database of
/// `root` (those not installed are absent).
pub fn host_versions(root: &Path, names: &[&str]) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    let mut out = BTreeMap::new();
    deb822::scan(&text, ["Package", "Version", "Status"], |f| {
        if let [Some(p), Some(v), Some(s)] = f
            && names.contains(p)
            && s.ends_with(" installed")
        {
            out.insert((*p).to_string(), (*v).to_string());
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_from_installed_size_in_kib() {
        let s = "Package: a\nStatus: install ok installed\nVersion: 1\nInstalled-Size: 12\n\n\
                 Package: b\nStatus: deinstall ok config-files\nVersion: 2\nInstalled-Size: 5\n\n\
                 Package: c\nStatus: install ok installed\nVersion: 3\n";
        assert_eq!(
            parse_sizes(s),
            [
                ("a".into(), "1".into(), 12 * 1024),
                ("c".into(), "3".into(), 0)
            ]
        );
    }

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
}
