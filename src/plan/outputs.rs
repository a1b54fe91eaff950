//! The output files a build produces: one per `-t` type, named `<-o>.<ext>`.
//!
//! [`KINDS`] is the one table of output types. Adding a type is a variant of
//! [`OutputKind`], its row here, and its writer in `crate::output`.

use serde::Serialize;
use std::path::{Path, PathBuf};

use super::OutputSpec;

/// One output type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputKind {
    Tar,
    Tgz,
    TarZst,
    Squashfs,
    Docker,
    Oci,
    Ostree,
    Raw,
    RawZst,
    Qcow2,
    Vhd,
    Vpc,
    Vmdk,
    Vdi,
    Vhdx,
    Qed,
}

/// What an output is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The finished tree (archives, container images).
    Tree,
    /// The raw disk built from the block-device config.
    Disk,
}

/// A row of the table.
pub struct KindRow {
    pub kind: OutputKind,
    /// The `-t` name.
    pub name: &'static str,
    /// The file name extension after `<-o>.`.
    pub extension: &'static str,
    pub source: Source,
    /// What a user gets, for `--help`-style listings and errors.
    pub about: &'static str,
}

const fn kind(
    kind: OutputKind,
    name: &'static str,
    extension: &'static str,
    source: Source,
    about: &'static str,
) -> KindRow {
    KindRow {
        kind,
        name,
        extension,
        source,
        about,
    }
}

use OutputKind as K;
use Source::{Disk, Tree};

/// Every output type dib-create writes.
pub const KINDS: &[KindRow] = &[
    kind(K::Tar, "tar", "tar", Tree, "a tarball of the tree"),
    kind(K::Tgz, "tgz", "tgz", Tree, "a gzip-compressed tarball"),
    kind(
        K::TarZst,
        "tar.zst",
        "tar.zst",
        Tree,
        "a zstd-compressed tarball",
    ),
    kind(K::Squashfs, "squashfs", "squash", Tree, "a squashfs image"),
    kind(K::Docker, "docker", "docker.tar", Tree, "a docker archive"),
    kind(K::Oci, "oci", "oci.tar", Tree, "an OCI image archive"),
    kind(
        K::Ostree,
        "ostree",
        "ostree",
        Tree,
        "a commit in an ostree repository (a directory)",
    ),
    kind(K::Raw, "raw", "raw", Disk, "a raw disk image"),
    kind(
        K::RawZst,
        "raw.zst",
        "raw.zst",
        Disk,
        "a zstd-compressed raw disk image",
    ),
    kind(K::Qcow2, "qcow2", "qcow2", Disk, "a qcow2 disk image"),
    kind(K::Vhd, "vhd", "vhd", Disk, "a VHD disk image (qemu's vpc)"),
    kind(K::Vpc, "vpc", "vpc", Disk, "a VHD disk image"),
    kind(K::Vmdk, "vmdk", "vmdk", Disk, "a VMware disk image"),
    kind(K::Vdi, "vdi", "vdi", Disk, "a VirtualBox disk image"),
    kind(K::Vhdx, "vhdx", "vhdx", Disk, "a Hyper-V disk image"),
    kind(K::Qed, "qed", "qed", Disk, "a QED disk image"),
];

impl OutputKind {
    fn row(self) -> &'static KindRow {
        KINDS
            .iter()
            .find(|r| r.kind == self)
            .expect("every output kind has a row")
    }

    /// The `-t` name.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn extension(self) -> &'static str {
        self.row().extension
    }

    pub fn source(self) -> Source {
        self.row().source
    }

    /// The type `-t` calls `name`.
    pub fn parse(name: &str) -> Option<OutputKind> {
        KINDS.iter().find(|r| r.name == name).map(|r| r.kind)
    }

    /// Every `-t` name, comma separated (for messages).
    pub fn names() -> String {
        KINDS.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for OutputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for OutputKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why `-t` could not be turned into outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "no output type given: -t needs at least one of {}",
        OutputKind::names()
    )]
    None,
    #[error("-t {0}: unknown output type; choose from {names}", names = OutputKind::names())]
    Unknown(String),
}

/// One output per distinct `-t` type, in the order given, named after `image`.
pub fn outputs(image: &str, types: &[String]) -> Result<Vec<OutputSpec>, OutputError> {
    let mut out: Vec<OutputSpec> = Vec::new();
    for t in types {
        let kind = OutputKind::parse(t).ok_or_else(|| OutputError::Unknown(t.clone()))?;
        if out.iter().any(|o| o.kind == kind) {
            continue;
        }
        let path = PathBuf::from(format!("{image}.{}", kind.extension()));
        out.push(OutputSpec { kind, path });
    }
    if out.is_empty() {
        return Err(OutputError::None);
    }
    Ok(out)
}

/// True when some output is made from the disk.
pub fn wants_disk(outputs: &[OutputSpec]) -> bool {
    outputs.iter().any(|o| o.kind.source() == Source::Disk)
}

/// The kind of the output that is written to `path`.
pub fn kind_at(outputs: &[OutputSpec], path: &Path) -> Option<OutputKind> {
    outputs.iter().find(|o| o.path == path).map(|o| o.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn each_type_gets_its_extension() {
        let got: Vec<(&str, String)> = outputs(
            "out/img",
            &types("qcow2,raw,vhd,vmdk,tar,tgz,squashfs,docker,oci,vdi,qcow2,tar.zst,raw.zst"),
        )
        .unwrap()
        .into_iter()
        .map(|o| (o.kind.name(), o.path.display().to_string()))
        .collect();
        let want = [
            ("qcow2", "out/img.qcow2"),
            ("raw", "out/img.raw"),
            ("vhd", "out/img.vhd"),
            ("vmdk", "out/img.vmdk"),
            ("tar", "out/img.tar"),
            ("tgz", "out/img.tgz"),
            ("squashfs", "out/img.squash"),
            ("docker", "out/img.docker.tar"),
            ("oci", "out/img.oci.tar"),
            ("vdi", "out/img.vdi"),
            ("tar.zst", "out/img.tar.zst"),
            ("raw.zst", "out/img.raw.zst"),
        ];
        let want: Vec<(&str, String)> = want.iter().map(|(a, b)| (*a, b.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unknown_and_empty_types_are_refused() {
        let e = outputs("x", &types("qcow3")).unwrap_err().to_string();
        assert!(e.contains("qcow3") && e.contains("qcow2"), "{e}");
        assert!(matches!(outputs("x", &[]), Err(OutputError::None)));
    }

    #[test]
    fn the_table_is_consistent() {
        for r in KINDS {
            assert_eq!(OutputKind::parse(r.name), Some(r.kind));
            assert_eq!(r.kind.name(), r.name);
        }
        let mut names: Vec<_> = KINDS.iter().map(|r| r.extension).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len(), "two kinds share an extension");
    }
}
