//! Outputs. Each is written under a temporary name beside its final path and
//! renamed at the end, so a failed build never leaves a partial file there.

pub mod container;
pub mod convert;
pub mod manifest;
pub mod tarball;

use anyhow::Context;
use std::path::{Path, PathBuf};

use crate::host::Host;
use crate::log;
use crate::plan::OutputKind;

/// What the writers need besides the tree or disk.
pub struct WriteContext<'a> {
    pub arch: &'a str,
    /// Repository and tag of docker and OCI outputs.
    pub docker_target: &'a str,
    /// SOURCE_DATE_EPOCH: caps file times in archives.
    pub clamp: Option<u64>,
    /// The image's creation time (SOURCE_DATE_EPOCH, else now).
    pub created: u64,
    /// Scratch space for intermediate files (the build directory).
    pub scratch: &'a Path,
    /// `-u` unset: compress qcow2.
    pub compress_qcow2: bool,
    /// `--qemu-img-options`.
    pub qemu_img_options: Option<&'a str>,
}

/// Writes the output `kind`, made from the tree at `tree`, to `dest`.
pub fn write_from_tree(
    host: &mut dyn Host,
    kind: OutputKind,
    tree: &Path,
    dest: &Path,
    ctx: &WriteContext,
) -> anyhow::Result<()> {
    use tarball::Compression;
    match kind {
        OutputKind::Tar => tarball::write(host, tree, dest, Compression::None, ctx.clamp),
        OutputKind::Tgz => tarball::write(host, tree, dest, Compression::Gzip, ctx.clamp),
        OutputKind::TarZst => tarball::write(host, tree, dest, Compression::Zstd, ctx.clamp),
        OutputKind::Squashfs => convert::squashfs(host, tree, dest, ctx.clamp),
        OutputKind::Docker | OutputKind::Oci => {
            let layer = ctx.scratch.join("layer.tar");
            tarball::write(host, tree, &layer, Compression::None, ctx.clamp)?;
            let meta = container::ImageMeta {
                arch: ctx.arch,
                target: ctx.docker_target,
                created: ctx.created,
            };
            let r = if kind == OutputKind::Docker {
                container::write_docker(&layer, dest, &meta)
            } else {
                container::write_oci(&layer, dest, &meta)
            };
            let _ = std::fs::remove_file(&layer);
            r
        }
        other => anyhow::bail!(
            "output type {} is made from the disk, not the tree",
            other.name()
        ),
    }
}

/// Writes the output `kind`, converted from the raw disk `raw`, to `dest`.
/// raw itself is moved, not copied, so it must be the last one written.
pub fn write_from_disk(
    host: &mut dyn Host,
    kind: OutputKind,
    raw: &Path,
    dest: &Path,
    ctx: &WriteContext,
) -> anyhow::Result<()> {
    match kind {
        OutputKind::Raw => convert::move_sparse(host, raw, dest),
        OutputKind::RawZst => convert::zstd(host, raw, dest),
        OutputKind::Qcow2
        | OutputKind::Vhd
        | OutputKind::Vpc
        | OutputKind::Vmdk
        | OutputKind::Vdi
        | OutputKind::Vhdx
        | OutputKind::Qed => convert::qemu_img(
            host,
            raw,
            dest,
            kind.name(),
            ctx.compress_qcow2,
            ctx.qemu_img_options,
        ),
        other => anyhow::bail!(
            "output type {} is made from the tree, not the disk",
            other.name()
        ),
    }
}

/// A file being written; becomes `final_path` only on `commit`.
pub struct Pending {
    pub tmp: PathBuf,
    pub final_path: PathBuf,
}

impl Pending {
    /// A temporary sibling of `final_path` (same filesystem, so rename is atomic).
    pub fn new(final_path: &Path) -> Self {
        let name = final_path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = final_path.with_file_name(format!(".{name}.dib-create-partial"));
        let _ = std::fs::remove_file(&tmp);
        Pending {
            tmp,
            final_path: final_path.to_path_buf(),
        }
    }

    /// Moves an existing output aside (with a timestamp, as DIB does), then
    /// renames the finished file into place.
    pub fn commit(self) -> anyhow::Result<PathBuf> {
        if self.final_path.symlink_metadata().is_ok() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let old = PathBuf::from(format!("{}.{stamp}.old", self.final_path.display()));
            std::fs::rename(&self.final_path, &old).with_context(|| {
                format!("moving the existing {} aside", self.final_path.display())
            })?;
            log::warn(&format!(
                "{} existed; kept it as {}",
                self.final_path.display(),
                old.display()
            ));
        }
        std::fs::rename(&self.tmp, &self.final_path)
            .with_context(|| format!("renaming into {}", self.final_path.display()))?;
        Ok(self.final_path.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes `<file>.sha256` and `<file>.md5` in the format sha256sum/md5sum read.
pub fn write_checksums(file: &Path) -> anyhow::Result<()> {
    use crate::host::Cmd;
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file.file_name().unwrap_or_default();
    for tool in ["sha256sum", "md5sum"] {
        let ext = tool.trim_end_matches("sum");
        let line = Cmd::new(format!("computing the {ext} checksum"), tool)
            .arg(name)
            .cwd(dir)
            .read()?;
        std::fs::write(format!("{}.{ext}", file.display()), format!("{line}\n"))?;
    }
    Ok(())
}
