//! The disk part of the plan: the block-device graph, loaded and checked
//! once, and the rules that size the image from the tree.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::blockdev::{
    self, BlockDevError, ConfigSource, Graph, LegacyRootOptions, LoadOptions, SizeOptions,
};
use crate::cli::Cli;
use crate::error::UsageError;

/// The disk a build makes, when an output needs one.
#[derive(Clone, Debug)]
pub struct DiskPlan {
    pub graph: Graph,
    /// `--image-size`, `--image-extra-size`, `--mkfs-journal-size`.
    pub size: SizeOptions,
}

impl DiskPlan {
    /// The image size for a tree of `tree_bytes`: an explicit local_loop
    /// size, else DIB's rules. It must hold every partition.
    pub fn image_size(&self, tree_bytes: u64) -> Result<u64, BlockDevError> {
        let size = blockdev::compute_image_size(tree_bytes, &self.size, &self.graph);
        self.graph.check_fits(size)?;
        Ok(size)
    }
}

impl Serialize for DiskPlan {
    /// Nodes in creation order and the image size for an empty tree (the
    /// build recomputes it from the real tree), as `--dry-run` shows them.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let size = blockdev::compute_image_size(0, &self.size, &self.graph);
        let mut v = blockdev::dry_run_json(&self.graph, size);
        v["source"] = serde_json::json!(self.graph.source());
        v.serialize(s)
    }
}

/// What the disk plan is made from.
pub struct DiskInputs<'a> {
    pub cli: &'a Cli,
    /// The hook environment (DIB_BLOCK_DEVICE_CONFIG).
    pub hook_env: &'a BTreeMap<String, String>,
    /// The environment after environment.d (DIB_ROOT_FSTYPE, ...).
    pub resolved_env: &'a BTreeMap<String, String>,
    /// Element name and directory, in resolution order.
    pub elements: &'a [(String, PathBuf)],
    pub arch: &'a str,
}

/// Why a disk plan could not be made; all of it is bad input.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Boxed: a config error carries its place and text, and is rare.
    #[error(transparent)]
    Config(Box<BlockDevError>),
    #[error(transparent)]
    Usage(#[from] UsageError),
}

impl From<BlockDevError> for DiskError {
    fn from(e: BlockDevError) -> Self {
        DiskError::Config(Box::new(e))
    }
}

/// Loads and checks the block-device config the build would use.
pub fn plan(inputs: &DiskInputs) -> Result<DiskPlan, DiskError> {
    let options = load_options(inputs)?;
    let graph = blockdev::load_config(config_source(inputs), &options)?;
    check_buildable(&graph)?;
    let disk = DiskPlan {
        graph,
        size: size_options(inputs.cli)?,
    };
    // Fixed sizes must fit at least the image an empty tree would get.
    disk.image_size(0)?;
    Ok(disk)
}

/// What a build needs of a valid config beyond DIB's own checks: one
/// image, a filesystem at `/` for the tree, and no LVM thin volumes.
pub(crate) fn check_buildable(graph: &Graph) -> Result<(), UsageError> {
    if let Some(why) = blockdev::lvm::unsupported(graph) {
        return Err(UsageError(format!("{}: {why}", graph.source())));
    }
    if graph.local_loops().count() != 1 {
        return Err(UsageError(format!(
            "{}: the config has {} local_loop images; dib-create builds exactly one image per build \
             (split the layout into one config per image)",
            graph.source(),
            graph.local_loops().count()
        )));
    }
    if let Some(why) = blockdev::mkfs::too_small(graph, |node| fixed_bytes(graph, node)) {
        return Err(UsageError(why));
    }
    if graph.root_filesystem().is_none() {
        return Err(UsageError(format!(
            "{}: no filesystem is mounted at /; the image's tree needs a root filesystem \
             (add `mount: {{mount_point: /}}` under the root's mkfs)",
            graph.source()
        )));
    }
    Ok(())
}

/// A device's size when the config fixes it: a partition of absolute size
/// (never larger once placed), a logical volume of fixed size.
fn fixed_bytes(graph: &Graph, node: &str) -> Option<u64> {
    use blockdev::config::Spec;
    use blockdev::size::SizeSpec;
    match &graph.node(node)?.spec {
        Spec::Partition(p) => match p.size {
            SizeSpec::Bytes(b) => Some(b),
            SizeSpec::Percent(_) => None,
        },
        Spec::Lv(lv) => blockdev::lvm::fixed_bytes(lv),
        _ => None,
    }
}

/// Where the config comes from, in DIB's order.
fn config_source(inputs: &DiskInputs) -> ConfigSource {
    if let Some(v) = inputs
        .hook_env
        .get("DIB_BLOCK_DEVICE_CONFIG")
        .filter(|v| !v.trim().is_empty())
    {
        return ConfigSource::Env(v.clone());
    }
    inputs
        .elements
        .iter()
        .find_map(|(_, dir)| blockdev::find_element_config(dir, inputs.arch))
        .map_or(ConfigSource::Default, ConfigSource::File)
}

/// The options outside the YAML: DIB's legacy root settings.
fn load_options(inputs: &DiskInputs) -> Result<LoadOptions, UsageError> {
    let env = inputs.resolved_env;
    let cli = inputs.cli;
    let journal = cli
        .mkfs_journal_size
        .unwrap_or(blockdev::size::DEFAULT_JOURNAL_MIB);
    // mke2fs takes journals of 1024 to 10 240 000 blocks: 4 MiB to 40 GB
    // with the 4 KiB blocks of an image's root filesystem.
    if !(4..=40_000).contains(&journal) {
        return Err(UsageError(format!(
            "--mkfs-journal-size {journal}: an ext4 journal holds 4 to 40000 MiB"
        )));
    }
    if cli.max_online_resize == Some(0) {
        return Err(UsageError(
            "--max-online-resize 0: give the largest size, in filesystem blocks, that the root filesystem may be grown to"
                .into(),
        ));
    }
    let block_size = match env.get("DIB_BLOCK_SIZE").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n @ (512 | 4096)) => Some(n),
            _ => {
                return Err(UsageError(format!(
                    "DIB_BLOCK_SIZE={v:?}: a disk's logical block size is 512 or 4096"
                )));
            }
        },
    };
    Ok(LoadOptions {
        root: LegacyRootOptions {
            fs_type: env
                .get("DIB_ROOT_FSTYPE")
                .cloned()
                .unwrap_or_else(|| "ext4".into()),
            // Only `--root-label`, as DIB's `root-label` parameter. The
            // DIB_ROOT_LABEL of the environment is a default chosen by
            // DIB_ROOT_FSTYPE before the config is read (cloudimg-rootfs for
            // ext4, too long for an xfs root the config asks for); an
            // unlabelled root gets its default from its own type instead.
            label: cli.root_label.clone(),
            mkfs_options: cli.mkfs_options.clone(),
            journal_size_mib: journal,
            max_online_resize: cli.max_online_resize.map(|n| n.to_string()),
        },
        block_size,
    })
}

/// The largest image `--image-size` may ask for, in GiB (16 TiB): beyond
/// that, a typo is likelier than a wish.
const MAX_IMAGE_GIB: f64 = 16384.0;

fn size_options(cli: &Cli) -> Result<SizeOptions, UsageError> {
    if let Some(g) = cli.image_size
        && !(g.is_finite() && g > 0.0 && g <= MAX_IMAGE_GIB)
    {
        return Err(UsageError(format!(
            "--image-size {g}: give the image size in GiB, more than 0 and at most {MAX_IMAGE_GIB}"
        )));
    }
    if let Some(m) = cli.image_extra_size
        && m > (MAX_IMAGE_GIB as u64) << 10
    {
        return Err(UsageError(format!(
            "--image-extra-size {m}: at most {} MiB",
            (MAX_IMAGE_GIB as u64) << 10
        )));
    }
    Ok(SizeOptions {
        image_size_gib: cli.image_size,
        image_extra_size_mib: cli.image_extra_size,
        journal_size_mib: cli.mkfs_journal_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The root filesystem of `config` as the plan reads it, with the hook
    /// environment's defaults (DIB_ROOT_FSTYPE=ext4, DIB_ROOT_LABEL) in place.
    fn root_label(args: &[&str], config: &str) -> Result<String, DiskError> {
        let cli = Cli::try_parse_from(
            ["dib-create"]
                .into_iter()
                .chain(args.iter().copied())
                .chain(["vm"]),
        )
        .unwrap();
        let caller = BTreeMap::from([("DIB_BLOCK_DEVICE_CONFIG".into(), config.to_string())]);
        let env = super::super::env::hook_env(&cli, &caller, "amd64", &[], &[]);
        let disk = plan(&DiskInputs {
            cli: &cli,
            hook_env: &env,
            resolved_env: &env,
            elements: &[],
            arch: "amd64",
        })?;
        let (_, fs) = disk.graph.root_filesystem().unwrap();
        Ok(fs.label.clone())
    }

    const XFS_ROOT: &str = "\
- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
      type: xfs
      mount:
        mount_point: /
";

    #[test]
    fn unlabelled_xfs_root_is_img_rootfs() {
        // DIB's blockdevice.py picks the default by the root's own type, not
        // by DIB_ROOT_FSTYPE (ext4 here, whose default is too long for xfs).
        assert_eq!(root_label(&[], XFS_ROOT).unwrap(), "img-rootfs");
        let ext4 = XFS_ROOT.replace("xfs", "ext4");
        assert_eq!(root_label(&[], &ext4).unwrap(), "cloudimg-rootfs");
        let untyped = XFS_ROOT.replace("      type: xfs\n", "");
        assert_eq!(root_label(&[], &untyped).unwrap(), "cloudimg-rootfs");
        assert_eq!(root_label(&["--root-label", "r"], XFS_ROOT).unwrap(), "r");
        // An explicit label that xfs cannot hold is still refused.
        let err = root_label(&["--root-label", "cloudimg-rootfs"], XFS_ROOT).unwrap_err();
        assert!(err.to_string().contains("at most 12"), "{err}");
    }
}
