//! The content-addressed cache shared by all builds (`--image-cache`,
//! default `~/.cache/image-create`).
//!
//! ```text
//! <cache>/debs/sha256/<hex>        a verified .deb, named by its SHA256
//! <cache>/debs/sha256/<hex>.part   a download in progress (or killed)
//! <cache>/debs/control/<hex>       its control paragraph (derived, cached)
//! <cache>/debs/locks/<hex>         flock(2) file: one writer per entry
//! ```
//!
//! Entries are written under a `.part` name while holding the entry's lock,
//! hashed while they stream in, and renamed into place only when size and
//! SHA256 match. A killed download leaves only a `.part` file, which the next
//! writer of that entry removes. An entry whose content does not match its
//! name (disk corruption, a hand edit) is detected when used and fetched again.

pub mod archive;
pub mod keys;
pub mod phase;
pub mod refs;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::log;

/// One file the cache must hold.
#[derive(Clone, Debug)]
pub struct Want {
    /// For messages ("apt 2.6.1 amd64").
    pub label: String,
    pub sha256: String,
    pub size: u64,
    /// Tried in order.
    pub urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{label}: the download from {url} has SHA256 {got} and {got_size} bytes, but the lockfile pins SHA256 {want} and {want_size} bytes; refusing it (the archive changed the file, or the lockfile was edited)"
    )]
    HashMismatch {
        label: String,
        url: String,
        got: String,
        got_size: u64,
        want: String,
        want_size: u64,
    },
    #[error("{label}: not in the cache and --offline forbids downloading it")]
    Offline { label: String },
    #[error("{label}: could not download it from any of {tried}: {last}")]
    Unreachable {
        label: String,
        tried: String,
        last: String,
    },
}

/// The .deb store under `<cache>/debs`.
pub struct DebStore {
    root: PathBuf,
    offline: bool,
}

impl DebStore {
    pub fn open(cache: &Path, offline: bool) -> anyhow::Result<DebStore> {
        let root = cache.join("debs");
        for d in ["sha256", "control", "locks"] {
            fs::create_dir_all(root.join(d)).with_context(|| {
                format!("creating the cache directory {}", root.join(d).display())
            })?;
        }
        Ok(DebStore { root, offline })
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// The entry's file, downloading (or repairing) it when needed.
    pub fn ensure(&self, want: &Want) -> anyhow::Result<PathBuf> {
        let path = self.path(&want.sha256);
        if path.exists() {
            if matches(&path, want)? {
                return Ok(path);
            }
            log::warn(&format!(
                "cache entry {} ({}) is corrupt; fetching it again",
                path.display(),
                want.label
            ));
        }
        let _lock = self.lock(&want.sha256)?;
        // Another build may have written or repaired it while we waited.
        if path.exists() {
            if matches(&path, want)? {
                return Ok(path);
            }
            fs::remove_file(&path)
                .with_context(|| format!("removing the corrupt cache entry {}", path.display()))?;
        }
        if self.offline {
            return Err(FetchError::Offline {
                label: want.label.clone(),
            }
            .into());
        }
        let part = path.with_extension("part");
        let _ = fs::remove_file(&part); // a killed download's leftover
        let mut last = String::new();
        for url in &want.urls {
            match download(url, &part, want.size) {
                Ok((got, got_size)) if got == want.sha256 && got_size == want.size => {
                    fs::rename(&part, &path)
                        .with_context(|| format!("renaming {} into place", part.display()))?;
                    return Ok(path);
                }
                Ok((got, got_size)) => {
                    let _ = fs::remove_file(&part);
                    return Err(FetchError::HashMismatch {
                        label: want.label.clone(),
                        url: url.clone(),
                        got,
                        got_size,
                        want: want.sha256.clone(),
                        want_size: want.size,
                    }
                    .into());
                }
                Err(e) => {
                    let _ = fs::remove_file(&part);
                    last = format!("{url}: {e:#}");
                }
            }
        }
        Err(FetchError::Unreachable {
            label: want.label.clone(),
            tried: want.urls.join(", "),
            last,
        }
        .into())
    }

    /// The control paragraph of a cached .deb (`dpkg-deb -f`), cached too.
    pub fn control(&self, sha256: &str) -> anyhow::Result<String> {
        let c = self.root.join("control").join(sha256);
        if let Ok(text) = fs::read_to_string(&c)
            && !text.trim().is_empty()
        {
            return Ok(text);
        }
        let deb = self.path(sha256);
        let text = crate::host::Cmd::new("reading a package's control fields", "dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .read()?;
        let tmp = c.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, &text)
            .and_then(|()| fs::rename(&tmp, &c))
            .with_context(|| format!("writing {}", c.display()))?;
        Ok(text)
    }

    /// Adds a file that is already on disk (a .deb apt downloaded into the
    /// tree) under its own hash. Returns the hash.
    pub fn adopt(&self, file: &Path) -> anyhow::Result<String> {
        let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let (sha, size) = crate::digest::hash_reader(&mut f)?;
        let path = self.path(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let _lock = self.lock(&sha)?;
        if path.exists() {
            return Ok(sha);
        }
        let part = path.with_extension("part");
        fs::copy(file, &part)
            .with_context(|| format!("copying {} into the cache", file.display()))?;
        let want = Want {
            label: file.display().to_string(),
            sha256: sha.clone(),
            size,
            urls: Vec::new(),
        };
        // It could have changed while we copied it.
        if !matches(&part, &want)? {
            let _ = fs::remove_file(&part);
            anyhow::bail!(
                "{} changed while it was copied into the cache",
                file.display()
            );
        }
        fs::rename(&part, &path)?;
        Ok(sha)
    }

    /// Exclusive lock of one entry, held until the guard drops.
    fn lock(&self, sha256: &str) -> anyhow::Result<Flock<File>> {
        let p = self.root.join("locks").join(sha256);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .with_context(|| format!("opening the lock file {}", p.display()))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", p.display()))
    }

    /// Fetches every wanted file with `jobs` threads, and reads each one's
    /// control fields; reports every failure.
    pub fn ensure_all(&self, wants: &[Want], jobs: usize) -> anyhow::Result<Vec<PathBuf>> {
        let results = parallel(wants, jobs, |w| {
            let p = self.ensure(w)?;
            self.control(&w.sha256)
                .with_context(|| format!("{}: reading its control fields", w.label))?;
            Ok(p)
        });
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Some(Ok(p)) => paths.push(p),
                Some(Err(e)) => errors.push(format!("{e:#}")),
                None => errors.push("interrupted".into()),
            }
        }
        if errors.is_empty() {
            return Ok(paths);
        }
        let n = errors.len();
        errors.truncate(10);
        anyhow::bail!(
            "{n} package(s) could not be fetched into the cache:\n  {}",
            errors.join("\n  ")
        )
    }
}

/// `f` over `items` on `jobs` threads, results in order; None when interrupted.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> Vec<Option<anyhow::Result<R>>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<anyhow::Result<R>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 32) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= items.len() || crate::host::interrupt::signal().is_some() {
                        break;
                    }
                    let r = f(&items[i]);
                    *results[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap())
        .collect()
}

/// True when the file's size and SHA256 are the wanted ones.
fn matches(path: &Path, want: &Want) -> anyhow::Result<bool> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() != want.size {
        return Ok(false);
    }
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(crate::digest::hash_reader(&mut f)?.0 == want.sha256)
}

/// Streams `url` into `dest`, returning its SHA256 and size. `file://` URLs
/// are read from disk. At most one byte more than `size` is read: a server
/// that sends more is cut off before it can fill the disk, and the size
/// check then refuses the file.
fn download(url: &str, dest: &Path, size: u64) -> anyhow::Result<(String, u64)> {
    use std::io::Read as _;
    let cap = size.saturating_add(1);
    let mut out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut tee = HashingWriter {
        inner: &mut out,
        hash: Sha256::new(),
        n: 0,
        what: url,
        unreported: 0,
    };
    if let Some(p) = url.strip_prefix("file://") {
        let f = File::open(p).with_context(|| format!("opening {p}"))?;
        std::io::copy(&mut f.take(cap), &mut tee)?;
    } else {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .build()
            .into();
        let resp = agent.get(url).call().map_err(|e| anyhow::anyhow!("{e}"))?;
        let body = resp.into_body().into_reader();
        std::io::copy(&mut body.take(cap), &mut tee)?;
    }
    tee.report();
    let (hash, n) = (crate::digest::hex(&tee.hash.finalize()), tee.n);
    out.sync_all()?;
    Ok((hash, n))
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hash: Sha256,
    n: u64,
    /// For the log's download events (the status line's rate).
    what: &'a str,
    unreported: u64,
}

impl HashingWriter<'_> {
    fn report(&mut self) {
        if self.unreported > 0 {
            crate::log::event(crate::log::Event::Download {
                what: self.what.to_string(),
                bytes: std::mem::take(&mut self.unreported),
            });
        }
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        self.unreported += k as u64;
        if self.unreported >= 1 << 20 {
            self.report();
        }
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
