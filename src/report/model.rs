//! What a build report holds: plain data, gathered during the build (see
//! `collect`) and drawn by `render`. Serialisable, so tests and other tools
//! can build one from a fixture.

use serde::{Deserialize, Serialize};

/// One build, as the report shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The image name (`-o`).
    pub image: String,
    pub arch: String,
    /// Whether the build succeeded.
    pub ok: bool,
    /// The error of a failed build, as the user saw it.
    pub error: Option<String>,
    /// Wall-clock seconds of the whole build.
    pub seconds: f64,
    /// When the build started, seconds since the epoch (shown as a date).
    pub started_at: u64,
    pub timeline: Vec<Bar>,
    /// The disk, when the build made one.
    pub disk: Option<DiskPicture>,
    /// The tree's content, when the build got that far.
    pub contents: Option<Contents>,
    pub inputs: Inputs,
}

/// What a bar of the timeline stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarKind {
    /// A hook that ran.
    Hook,
    /// A hook whose result was restored from the phase cache (it did not run).
    Restored,
    /// Work of the tool itself: the disk, filesystems, outputs.
    Step,
}

/// One bar on the time axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// The phase (`root.d`, `install.d`, ...) or, for a step, its group
    /// (`disk`, `outputs`, `phase-cache`).
    pub phase: String,
    /// The hook's file name, or what the step did.
    pub label: String,
    /// The element that ships the hook.
    pub element: Option<String>,
    /// Seconds from the start of the build.
    pub start: f64,
    pub seconds: f64,
    pub kind: BarKind,
    /// False for the hook or step that failed.
    pub ok: bool,
}

/// The image's disk, to scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskPicture {
    /// Bytes of the whole disk.
    pub size: u64,
    /// `gpt` or `mbr`; none when a filesystem covers the whole disk.
    pub table: Option<String>,
    /// In disk order. Without a table, one entry (number 0) spans the disk.
    pub partitions: Vec<PartPicture>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartPicture {
    /// The block-device config's node name (`root`, `ESP`, ...).
    pub name: String,
    /// The kernel's partition number; 0 for the whole disk.
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// The partition type as the table spells it (e.g. `8300`, `EF00`, `0x83`).
    pub part_type: String,
    pub boot: bool,
    pub filesystem: Option<FsPicture>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsPicture {
    pub fstype: String,
    pub label: Option<String>,
    /// Where the image mounts it; none for swap or an unmounted filesystem.
    pub mount_point: Option<String>,
    /// Bytes the filesystem can hold and bytes in use (statvfs of the made
    /// filesystem); none when they could not be measured.
    pub total: Option<u64>,
    pub used: Option<u64>,
}

/// What is in the image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contents {
    /// Every installed package, biggest first.
    pub packages: Vec<PackageSize>,
    /// The biggest directories, biggest first (each counted with what is below it).
    pub directories: Vec<DirSize>,
    /// Bytes of all files in the tree.
    pub total_bytes: u64,
    pub files: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackageSize {
    pub name: String,
    pub version: String,
    /// The package's installed size as its package database records it.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirSize {
    /// Absolute in the image (`/usr/lib`).
    pub path: String,
    pub bytes: u64,
}

/// What went into the build, and what came out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// Every element of the build, in the order they were resolved.
    pub elements: Vec<ElementInput>,
    pub lockfile: Option<LockInput>,
    pub source_date_epoch: Option<u64>,
    pub outputs: Vec<OutputFile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ElementInput {
    pub name: String,
    /// The directory the element was taken from.
    pub path: String,
    /// Directories of ELEMENTS_PATH that also hold an element of this name,
    /// which this one overrides.
    pub overrides: Vec<String>,
    /// True for an element given on the command line (the rest are dependencies).
    pub requested: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockInput {
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    /// The output kind (`qcow2`, `tar`, `manifest`, ...).
    pub kind: String,
    pub bytes: u64,
    pub sha256: String,
}
