//! Recording what a build installs: snapshots of the tree's dpkg status after
//! each package phase, and each package's archive file resolved from the apt
//! lists in the tree (while they still exist: the debootstrap element's
//! cleanup.d removes them).

use super::lockfile::{Header, Lockfile, Package, Phase};
use crate::pkgdb::dpkg::{Installed, Resolved, installed, resolve_from_lists, sources};
use std::collections::BTreeMap;
use std::path::Path;

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

/// The header fields read off the tree (os-release) and the sources.
/// `epoch` is the recording build's SOURCE_DATE_EPOCH, if it had one.
pub fn header_from_tree(root: &Path, arch: &str, epoch: Option<u64>) -> Header {
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
        source_date_epoch: epoch.or_else(|| newest_release_date(root)),
    }
}

/// The `Date:` of the newest Release file in the tree's apt lists, in
/// seconds since the epoch.
fn newest_release_date(root: &Path) -> Option<u64> {
    let lists = std::fs::read_dir(root.join("var/lib/apt/lists")).ok()?;
    lists
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with("_InRelease") || n.ends_with("_Release")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Date:"))
                .and_then(|d| parse_rfc2822(d.trim()))
        })
        .max()
}

/// Seconds since the epoch of a date as Release files write it:
/// `Sat, 10 Aug 2024 09:24:02 UTC` (the zone is UTC or +0000 there).
pub fn parse_rfc2822(s: &str) -> Option<u64> {
    let s = s.split_once(", ").map_or(s, |(_, rest)| rest);
    let f: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, ..] = f[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else { return None };
    // Days from 1970-01-01 to the date (Howard Hinnant's civil calendar).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + h * 3600 + m * 60 + sec).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_rfc2822("Sat, 10 Aug 2024 09:24:02 UTC"),
            Some(1_723_281_842)
        );
        assert_eq!(
            parse_rfc2822("Tue, 14 Nov 2023 22:13:20 +0000"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc2822("yesterday"), None);
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
