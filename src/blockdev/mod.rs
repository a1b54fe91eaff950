//! The block-device layer: DIB's block-device YAML into a checked graph of
//! nodes, the image size, partition tables and fstab. This part is pure
//! (no root, no devices); the executor that makes loops, filesystems and
//! mounts builds on it.
//!
//! # API for the build
//!
//! ```no_run
//! use dib::blockdev::{self, ConfigSource, LoadOptions, SizeOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. The config: DIB_BLOCK_DEVICE_CONFIG, else an element's yaml, else the default.
//! let source = match std::env::var("DIB_BLOCK_DEVICE_CONFIG") {
//!     Ok(v) if !v.is_empty() => ConfigSource::Env(v),
//!     _ => ConfigSource::Default,
//! };
//! let graph = blockdev::load_config(source, &LoadOptions::default())?;
//! // 2. For --dry-run: nodes in creation order, and the image size.
//! let size = blockdev::compute_image_size(1 << 30, &SizeOptions::default(), &graph);
//! let json = blockdev::dry_run_json(&graph, size);
//! // 3. Partition the image file, then write fstab from what mkfs made.
//! let mut img = std::fs::OpenOptions::new().read(true).write(true).open("image0.raw")?;
//! let disk = blockdev::partition::Disk { size_bytes: size, sector_size: 512 };
//! let extents = blockdev::partition::write_table(&mut img, &graph, "image0", disk, Some(42))?;
//! let facts = blockdev::fstab::facts_from_config(&graph, Some(42));
//! let fstab = blockdev::fstab::render(&graph, &facts);
//! # let _ = (json, extents, fstab); Ok(()) }
//! ```
//!
//! - [`load_config`] reads and checks a config ([`ConfigSource`]); every
//!   error names the node, the problem and the YAML line, and suggests a fix.
//!   Exit 2 on these.
//! - [`Graph::nodes`] gives the nodes in creation order (umount and cleanup
//!   go in reverse); [`Graph::summary`] is the serialisable `name`, `module`,
//!   `bases` list; [`Graph::root_filesystem`], [`Graph::mounts`] (mount
//!   order), [`Graph::filesystems`], [`Graph::tables`], [`Graph::uses_lvm`]
//!   (LVM volumes are placed by [`lvm::layout`], without device-mapper).
//! - [`compute_image_size`] sizes the image as disk-image-create does.
//! - [`partition::write_table`] writes MBR or GPT and returns each
//!   partition's offset and size ([`partition::PartitionExtent`]);
//!   [`partition::plan_layout`] gives the same without writing.
//! - [`fstab::render`] writes fstab from the graph and filesystem facts.
//! - [`find_element_config`] picks an element's `block-device-*.yaml` as DIB does.

pub mod config;
pub mod error;
pub mod fstab;
pub mod graph;
pub mod ids;
pub mod lvm;
pub mod lvm_mda;
pub mod mkfs;
pub mod partition;
pub mod sfdisk;
pub mod size;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use config::{LegacyRootOptions, LoadOptions, Module, Node, Spec};
pub use error::{At, BlockDevError};
pub use graph::{Graph, NodeSummary};
pub use size::{SizeOptions, compute_image_size};

/// Where a block-device config comes from, in DIB's order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The value of `DIB_BLOCK_DEVICE_CONFIG`: inline YAML, or `file://PATH`.
    Env(String),
    /// An element's `block-device-default.yaml` (or `-<arch>.yaml`).
    File(PathBuf),
    /// DIB's fallback: one loop image with an unpartitioned root filesystem.
    Default,
}

/// DIB's fallback layout when neither the environment nor an element gives one.
pub const DEFAULT_CONFIG: &str = "\
- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
      mount:
        mount_point: /
        fstab:
          options: \"defaults\"
          fsck-passno: 1
";

/// Reads, checks and orders a block-device config.
pub fn load_config(source: ConfigSource, opts: &LoadOptions) -> Result<Graph, BlockDevError> {
    let (text, origin) = match source {
        ConfigSource::Env(v) => match v.strip_prefix("file://") {
            Some(path) => (read(Path::new(path))?, path.to_string()),
            None => (v, "DIB_BLOCK_DEVICE_CONFIG".to_string()),
        },
        ConfigSource::File(p) => (read(&p)?, p.display().to_string()),
        ConfigSource::Default => (DEFAULT_CONFIG.to_string(), "built-in default config".into()),
    };
    load_str(&text, &origin, opts)
}

/// Reads a config from text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str, opts: &LoadOptions) -> Result<Graph, BlockDevError> {
    let root = yaml::parse(text).map_err(|(message, line)| BlockDevError::Yaml {
        at: At::new(origin, line),
        message,
    })?;
    let parsed = config::parse_config(&root, origin, opts)?;
    Graph::build(parsed, origin)
}

fn read(path: &Path) -> Result<String, BlockDevError> {
    std::fs::read_to_string(path).map_err(|e| BlockDevError::Read {
        path: path.display().to_string(),
        source: e,
    })
}

/// The block-device config an element directory offers for `arch`, as DIB
/// looks for it: `block-device-<arch>.yaml` (ppc64le and ppc64el share
/// `block-device-ppc64el.yaml`), else `block-device-default.yaml`.
pub fn find_element_config(element_dir: &Path, arch: &str) -> Option<PathBuf> {
    let arch = if arch == "ppc64le" { "ppc64el" } else { arch };
    [
        format!("block-device-{arch}.yaml"),
        "block-device-default.yaml".into(),
    ]
    .into_iter()
    .map(|f| element_dir.join(f))
    .find(|p| p.is_file())
}

/// The `block_device` value of `--dry-run --format json`.
pub fn dry_run_json(graph: &Graph, image_size: u64) -> serde_json::Value {
    serde_json::json!({
        "nodes": graph.summary(),
        "image_size": image_size,
    })
}

#[cfg(test)]
mod dib_configs;
#[cfg(test)]
mod tests;
