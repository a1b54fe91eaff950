//! The build's local apt repository, made from a lockfile and the cache:
//!
//! ```text
//! <dir>/pool/<Filename>                          hard links into the cache (copies across filesystems)
//! <dir>/dists/<release>/main/binary-<arch>/Packages
//! <dir>/dists/<release>/Release                  unsigned; sources say [trusted=yes]
//! ```
//!
//! The `Packages` paragraphs are the .debs' own control fields (so apt sees
//! every dependency, Priority and Essential as the archive would) plus
//! Filename, Size and SHA256. It holds exactly the locked versions, so apt
//! can install nothing else.

use super::lockfile::{Lockfile, Package, hex};
use crate::cache::DebStore;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Writes the repository under `dir` from packages already in `store`.
pub fn write(dir: &Path, lock: &Lockfile, store: &DebStore) -> anyhow::Result<()> {
    let release = &lock.header.release;
    let default_arch = &lock.header.architecture;
    let mut per_arch: BTreeMap<String, String> = BTreeMap::new();
    per_arch.entry(default_arch.clone()).or_default();
    for p in &lock.packages {
        let dest = dir.join("pool").join(pool_path(p));
        link_or_copy(&store.path(&p.sha256), &dest)?;
        let control = store.control(&p.sha256)?;
        check_control(p, &control)?;
        let mut para = control.trim_end().to_string();
        let _ = write!(
            para,
            "\nFilename: pool/{}\nSize: {}\nSHA256: {}\n\n",
            pool_path(p).display(),
            p.size,
            p.sha256
        );
        let arch = if p.arch == "all" {
            default_arch.clone()
        } else {
            p.arch.clone()
        };
        per_arch.entry(arch).or_default().push_str(&para);
    }
    let mut release_text = format!(
        "Origin: dib-create\nLabel: dib-create lockfile\nSuite: {release}\nCodename: {release}\n\
         Date: Thu, 01 Jan 1970 00:00:00 UTC\nArchitectures: {}\nComponents: main\n\
         Description: the packages of a dib-create lockfile\nSHA256:\n",
        per_arch.keys().cloned().collect::<Vec<_>>().join(" ")
    );
    for (arch, text) in &per_arch {
        let rel = format!("main/binary-{arch}/Packages");
        let path = dir.join("dists").join(release).join(&rel);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(
            release_text,
            " {} {} {rel}",
            hex(&Sha256::digest(text.as_bytes())),
            text.len()
        );
    }
    let rp = dir.join("dists").join(release).join("Release");
    std::fs::write(&rp, release_text).with_context(|| format!("writing {}", rp.display()))?;
    Ok(())
}

/// Where a package lives in the repository: its archive pool path, made safe.
fn pool_path(p: &Package) -> PathBuf {
    let clean: PathBuf = Path::new(&p.filename)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    // Keep the sha in the path: two locked files never collide.
    let name = clean
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.deb", p.name));
    PathBuf::from(&p.sha256[..2]).join(&p.sha256).join(name)
}

/// The .deb must be the package the lockfile says it is.
fn check_control(p: &Package, control: &str) -> anyhow::Result<()> {
    let paras = crate::pkgdb::deb822::parse(control)
        .with_context(|| format!("parsing the control fields of {}", p.name))?;
    let c = paras
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: empty control fields", p.name))?;
    let got = (
        c.get("Package").unwrap_or(""),
        c.get("Version").unwrap_or(""),
        c.get("Architecture").unwrap_or(""),
    );
    if got != (p.name.as_str(), p.version.as_str(), p.arch.as_str()) {
        anyhow::bail!(
            "the file pinned for {} {} {} (SHA256 {}) is {} {} {}: the lockfile is inconsistent",
            p.name,
            p.version,
            p.arch,
            p.sha256,
            got.0,
            got.1,
            got.2
        );
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Want;
    use crate::lock::lockfile::{Header, Phase};

    /// Builds a tiny .deb with dpkg-deb; None when the host has none.
    fn tiny_deb(dir: &Path, name: &str, version: &str) -> Option<PathBuf> {
        let root = dir.join(format!("{name}-src"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t>\n\
                 Priority: required\nDepends: libc6\nDescription: test\n long text\n"
            ),
        )
        .ok()?;
        let deb = dir.join(format!("{name}_{version}_all.deb"));
        let ok = std::process::Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .ok()?
            .status
            .success();
        ok.then_some(deb)
    }

    #[test]
    fn packages_index_carries_control_fields() {
        let dir = tempfile::tempdir().unwrap();
        let Some(deb) = tiny_deb(dir.path(), "hello", "1.0-1") else {
            crate::testing::skip("packages_index_carries_control_fields", "no dpkg-deb");
            return;
        };
        let data = std::fs::read(&deb).unwrap();
        let sha = hex(&Sha256::digest(&data));
        let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
        store
            .ensure(&Want {
                label: "hello".into(),
                sha256: sha.clone(),
                size: data.len() as u64,
                urls: vec![format!("file://{}", deb.display())],
            })
            .unwrap();
        let mut lock = Lockfile {
            header: Header {
                distribution: "debian".into(),
                release: "bookworm".into(),
                architecture: "amd64".into(),
                ..Default::default()
            },
            packages: vec![Package {
                name: "hello".into(),
                version: "1.0-1".into(),
                arch: "all".into(),
                phase: Phase::Root,
                filename: "pool/main/h/hello/hello_1.0-1_all.deb".into(),
                url: "http://example/hello.deb".into(),
                sha256: sha.clone(),
                size: data.len() as u64,
                removed: None,
            }],
        };
        let repo = dir.path().join("repo");
        write(&repo, &lock, &store).unwrap();
        let packages =
            std::fs::read_to_string(repo.join("dists/bookworm/main/binary-amd64/Packages"))
                .unwrap();
        let p = &crate::pkgdb::deb822::parse(&packages).unwrap()[0];
        assert_eq!(p.get("Priority"), Some("required"));
        assert_eq!(p.get("Depends"), Some("libc6"));
        assert_eq!(p.get("SHA256"), Some(sha.as_str()));
        let f = p.get("Filename").unwrap();
        assert_eq!(std::fs::read(repo.join(f)).unwrap(), data);
        let release = std::fs::read_to_string(repo.join("dists/bookworm/Release")).unwrap();
        assert!(release.contains(" main/binary-amd64/Packages\n"));

        // A lockfile whose hash names another package is inconsistent.
        lock.packages[0].name = "other".into();
        let e = format!("{:#}", write(&repo, &lock, &store).unwrap_err());
        assert!(e.contains("inconsistent"), "{e}");
    }
}
