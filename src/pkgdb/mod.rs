//! Package databases: what a tree has installed (with each package's archive
//! hash where the tree's indices know it), where it installs from, and which
//! file changes whenever its package set does. The manifest, the SBOM, the
//! lockfile recorder, the phase cache and the native-tools check ask through
//! [`PackageDb`]; Debian's dpkg implements it ([`Dpkg`]). rpm-based
//! distributions add their own implementation behind the same trait.

pub mod deb822;
pub mod dpkg;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One installed package.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// SHA256 of the archive file it came from, when the tree's indices have it.
    pub sha256: Option<String>,
    pub url: Option<String>,
}

/// One package source: its base URI and suite (a flat repository's suite
/// ends in `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
}

/// A package database in a tree.
pub trait PackageDb {
    /// For messages ("dpkg").
    fn name(&self) -> &'static str;
    /// True when the tree at `root` is managed by this database.
    fn manages(&self, root: &Path) -> bool;
    /// The installed packages, sorted by name, with their archive hashes.
    fn installed(&self, root: &Path) -> anyhow::Result<Vec<Package>>;
    /// The installed packages as (name, version, installed bytes), as the
    /// database records their size.
    fn sizes(&self, root: &Path) -> anyhow::Result<Vec<(String, String, u64)>>;
    /// The sources the tree installs from.
    fn sources(&self, root: &Path) -> Vec<Source>;
    /// The file (relative to the root) that changes whenever the set of
    /// installed packages does.
    fn state_file(&self) -> &'static str;
    /// Installed versions of the host's own packages called `names` (those
    /// not installed are absent).
    fn host_versions(&self, names: &[&str]) -> BTreeMap<String, String>;
}

/// What a host tool's version can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shapes {
    /// The tree (bootstrap, foreign architectures).
    Tree,
    /// The outputs (filesystem and image tools).
    Outputs,
}

/// A host tool a build depends on: the command users know, the Debian
/// package that ships it, and what its version can change.
pub struct HostTool {
    pub command: &'static str,
    pub package: &'static str,
    pub shapes: Shapes,
}

const fn tool(command: &'static str, package: &'static str, shapes: Shapes) -> HostTool {
    HostTool {
        command,
        package,
        shapes,
    }
}

/// The host tools whose versions the phase cache keys and `--version`
/// names: one table for both.
pub const HOST_TOOLS: &[HostTool] = &[
    tool("debootstrap", "debootstrap", Shapes::Tree),
    tool("mmdebstrap", "mmdebstrap", Shapes::Tree),
    tool("apt", "apt", Shapes::Tree),
    tool("dpkg", "dpkg", Shapes::Tree),
    tool("qemu-aarch64-static", "qemu-user-static", Shapes::Tree),
    tool("mke2fs", "e2fsprogs", Shapes::Outputs),
    tool("qemu-img", "qemu-utils", Shapes::Outputs),
    tool("mkfs.vfat", "dosfstools", Shapes::Outputs),
    tool("mcopy", "mtools", Shapes::Outputs),
    tool("mksquashfs", "squashfs-tools", Shapes::Outputs),
    tool("mkfs.btrfs", "btrfs-progs", Shapes::Outputs),
    tool("mkfs.xfs", "xfsprogs", Shapes::Outputs),
    tool("zstd", "zstd", Shapes::Outputs),
];

/// The databases dib-create knows, most specific first.
pub fn all() -> [&'static dyn PackageDb; 1] {
    [&Dpkg]
}

/// The database managing the tree at `root`, if any does.
pub fn of_tree(root: &Path) -> Option<&'static dyn PackageDb> {
    all().into_iter().find(|db| db.manages(root))
}

/// The packages installed in `root`; empty for a tree no database manages.
pub fn installed(root: &Path) -> anyhow::Result<Vec<Package>> {
    of_tree(root).map_or(Ok(Vec::new()), |db| db.installed(root))
}

/// The host's package database (this host is Debian).
pub fn host() -> &'static dyn PackageDb {
    &Dpkg
}

/// Debian's dpkg with apt's sources and lists.
pub struct Dpkg;

impl PackageDb for Dpkg {
    fn name(&self) -> &'static str {
        "dpkg"
    }

    fn manages(&self, root: &Path) -> bool {
        root.join(self.state_file()).exists()
    }

    fn installed(&self, root: &Path) -> anyhow::Result<Vec<Package>> {
        dpkg::packages_with_hashes(root)
    }

    fn sizes(&self, root: &Path) -> anyhow::Result<Vec<(String, String, u64)>> {
        dpkg::installed_sizes(root)
    }

    fn sources(&self, root: &Path) -> Vec<Source> {
        dpkg::sources(root)
    }

    fn state_file(&self) -> &'static str {
        "var/lib/dpkg/status"
    }

    fn host_versions(&self, names: &[&str]) -> BTreeMap<String, String> {
        dpkg::host_versions(Path::new("/"), names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_without_a_database_has_no_packages() {
        let d = tempfile::tempdir().unwrap();
        assert!(of_tree(d.path()).is_none());
        assert!(installed(d.path()).unwrap().is_empty());
        std::fs::create_dir_all(d.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(
            d.path().join("var/lib/dpkg/status"),
            "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n",
        )
        .unwrap();
        assert_eq!(of_tree(d.path()).map(|db| db.name()), Some("dpkg"));
        let got = installed(d.path()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].name.as_str(), got[0].sha256.as_deref()),
            ("a", None)
        );
    }
}
