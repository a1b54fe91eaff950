//! Outputs. Each is written under a temporary name beside its final path and
//! renamed at the end, so a failed build never leaves a partial file there.

pub mod container;
pub mod convert;
pub mod manifest;
pub mod ostree;
pub mod tarball;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

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

/// Numbers the partial files of one process.
static PARTIALS: AtomicU32 = AtomicU32::new(0);

impl Pending {
    /// A temporary sibling of `final_path` (same filesystem, so rename is
    /// atomic), named for this process alone: two builds writing the same
    /// output never share one.
    pub fn new(final_path: &Path) -> Self {
        let name = final_path.file_name().unwrap_or_default().to_string_lossy();
        let n = PARTIALS.fetch_add(1, Ordering::Relaxed);
        let tmp = final_path.with_file_name(format!(
            ".{name}.{}-{n}.dib-create-partial",
            std::process::id()
        ));
        Pending {
            tmp,
            final_path: final_path.to_path_buf(),
        }
    }

    /// A partial output, recorded in the journal before it is written, so
    /// that whoever cleans up after a killed build removes it too.
    pub fn recorded(journal: &mut crate::host::Journal, final_path: &Path) -> anyhow::Result<Self> {
        let p = Pending::new(final_path);
        journal.record(crate::host::Entry::Partial(p.tmp.clone()))?;
        Ok(p)
    }

    /// Moves an existing output aside (with a timestamp, as DIB does, and a
    /// number when that name is taken: nothing is ever overwritten), then
    /// renames the finished file into place.
    pub fn commit(self) -> anyhow::Result<PathBuf> {
        if self.final_path.symlink_metadata().is_ok() {
            let old = free_old_name(&self.final_path);
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

/// `NAME.<epoch>.old`, or `NAME.<epoch>.<n>.old` when rebuilds come faster
/// than one a second.
fn free_old_name(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}.{stamp}", path.display());
    std::iter::once(PathBuf::from(format!("{base}.old")))
        .chain((1..).map(|n| PathBuf::from(format!("{base}.{n}.old"))))
        .find(|p| p.symlink_metadata().is_err())
        .expect("an unused name exists")
}

impl Drop for Pending {
    fn drop(&mut self) {
        // The ostree output is a directory (a repository).
        if self.tmp.is_dir() && !self.tmp.is_symlink() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// The exclusive right to write one build's outputs. A second build with the
/// same `-o` is refused while the first runs (it would replace files the
/// first just wrote). The lock is an flock on a file in the build root named
/// after the output path, so it dies with its process, even on SIGKILL.
pub struct OutputLock {
    _file: Flock<File>,
}

impl OutputLock {
    /// Takes the lock for outputs named `image` (`-o`), with lock files
    /// under `dir`.
    pub fn acquire(dir: &Path, image: &str) -> anyhow::Result<OutputLock> {
        let absolute = std::path::absolute(image).unwrap_or_else(|_| PathBuf::from(image));
        let key = crate::digest::sha256_bytes(absolute.as_os_str().as_encoded_bytes());
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.lock", &key[..16]));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                f.set_len(0)?;
                writeln!(f, "{} {}", std::process::id(), absolute.display())?;
                Ok(OutputLock { _file: f })
            }
            Err((f, _)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                drop(f);
                let pid = holder.split_whitespace().next().unwrap_or("?");
                Err(OutputBusy {
                    image: absolute.display().to_string(),
                    pid: pid.to_string(),
                }
                .into())
            }
        }
    }
}

/// Another build holds the outputs' lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another dib-create (pid {pid}) is building {image}; wait for it to finish, or give this build another -o"
)]
pub struct OutputBusy {
    pub image: String,
    pub pid: String,
}

/// Renames every finished output into place, unless a signal came first:
/// an interrupted build commits nothing, whenever the signal arrived.
pub fn commit_all(pending: Vec<Pending>) -> anyhow::Result<Vec<PathBuf>> {
    if crate::host::interrupt::requested() {
        anyhow::bail!("interrupted before the outputs were committed; nothing was written");
    }
    pending.into_iter().map(Pending::commit).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_rebuilds_keep_every_older_output() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("img.raw");
        for n in 0..3 {
            let p = Pending::new(&out);
            std::fs::write(&p.tmp, format!("build {n}")).unwrap();
            p.commit().unwrap();
        }
        let mut kept: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["build 0", "build 1", "build 2"]);
    }

    #[test]
    fn partial_names_are_unique() {
        let a = Pending::new(Path::new("/x/img.qcow2"));
        let b = Pending::new(Path::new("/x/img.qcow2"));
        assert_ne!(a.tmp, b.tmp);
    }

    #[test]
    fn a_second_build_of_one_output_is_refused_while_the_first_holds_it() {
        let d = tempfile::tempdir().unwrap();
        let image = d.path().join("img").display().to_string();
        let first = OutputLock::acquire(d.path(), &image).unwrap();
        let e = OutputLock::acquire(d.path(), &image)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&std::process::id().to_string()) && e.contains("another -o"),
            "{e}"
        );
        // Another output is free; the first one is once the lock goes.
        OutputLock::acquire(d.path(), &format!("{image}-2")).unwrap();
        drop(first);
        OutputLock::acquire(d.path(), &image).unwrap();
    }
}
