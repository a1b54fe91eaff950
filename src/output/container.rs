//! Container outputs written natively, without a daemon: a `docker save`-style
//! archive that `docker load` accepts, and an OCI image layout archive. Both
//! hold one layer: the root tree as a tar (made by [`super::tarball`]).
//!
//! The outer archives are written with sorted entries, fixed owners and a fixed
//! mtime, so the same layer gives the same bytes.

use anyhow::Context;
use serde_json::json;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// What the image config says about the image.
pub struct ImageMeta<'a> {
    /// dpkg architecture; mapped to the OCI name.
    pub arch: &'a str,
    /// `repo:tag` for docker; the tag is the OCI ref name.
    pub target: &'a str,
    /// Seconds since the epoch for `created` and entry mtimes.
    pub created: u64,
}

/// A layer already written to disk, with its digest.
struct Layer {
    digest: String,
    size: u64,
}

/// Maps dpkg architecture names to OCI/Go names.
pub fn oci_arch(dpkg: &str) -> (&str, Option<&str>) {
    crate::arch::Arch::parse(dpkg).map_or((dpkg, None), |a| a.oci)
}

pub(crate) use crate::digest::{sha256_bytes, sha256_of};

fn sha256_file(path: &Path) -> anyhow::Result<Layer> {
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (digest, size) = crate::digest::hash_reader(&mut f)?;
    Ok(Layer { digest, size })
}

/// The image config JSON (shared by both formats).
fn config_json(meta: &ImageMeta, layer: &Layer) -> Vec<u8> {
    let (arch, variant) = oci_arch(meta.arch);
    let mut cfg = json!({
        "architecture": arch,
        "os": "linux",
        "created": rfc3339(meta.created),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", layer.digest)]},
        "history": [{"created": rfc3339(meta.created), "created_by": "dib-create"}],
    });
    if let Some(v) = variant {
        cfg["variant"] = json!(v);
    }
    serde_json::to_vec(&cfg).expect("json")
}

/// Formats epoch seconds as RFC 3339 UTC (civil-from-days algorithm).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes entries into an outer tar with fixed metadata.
struct Outer<W: Write> {
    tar: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> Outer<W> {
    fn new(w: W, mtime: u64) -> Self {
        let mut tar = tar::Builder::new(w);
        tar.mode(tar::HeaderMode::Deterministic);
        Outer { tar, mtime }
    }

    fn header(&self, size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, name: &str) -> anyhow::Result<()> {
        let mut h = self.header(0, tar::EntryType::Directory, 0o755);
        self.tar.append_data(&mut h, name, std::io::empty())?;
        Ok(())
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let mut h = self.header(data.len() as u64, tar::EntryType::Regular, 0o644);
        self.tar.append_data(&mut h, name, data)?;
        Ok(())
    }

    fn file(&mut self, name: &str, path: &Path, size: u64) -> anyhow::Result<()> {
        let mut h = self.header(size, tar::EntryType::Regular, 0o644);
        let f = File::open(path)?;
        self.tar.append_data(&mut h, name, f)?;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        self.tar.into_inner()?.flush()?;
        Ok(())
    }
}

/// Splits `repo:tag`, defaulting the tag to `latest` (a `:` in a registry
/// port is not a tag separator).
pub fn split_target(target: &str) -> (String, String) {
    match target.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => (repo.into(), tag.into()),
        _ => (target.into(), "latest".into()),
    }
}

/// Writes a docker-archive (the `docker save` format) to `dest`.
pub fn write_docker(layer_tar: &Path, dest: &Path, meta: &ImageMeta) -> anyhow::Result<()> {
    let layer = sha256_file(layer_tar)?;
    let config = config_json(meta, &layer);
    let config_name = format!("{}.json", sha256_bytes(&config));
    let layer_dir = layer.digest.clone();
    let (repo, tag) = split_target(meta.target);
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [format!("{repo}:{tag}")],
        "Layers": [format!("{layer_dir}/layer.tar")],
    }]))?;
    let repositories = serde_json::to_vec(&json!({ repo: { tag: layer_dir } }))?;
    let layer_json =
        serde_json::to_vec(&json!({"id": layer_dir, "created": rfc3339(meta.created)}))?;

    let out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut o = Outer::new(std::io::BufWriter::new(out), meta.created);
    o.bytes(&config_name, &config)?;
    o.dir(&format!("{layer_dir}/"))?;
    o.bytes(&format!("{layer_dir}/VERSION"), b"1.0")?;
    o.bytes(&format!("{layer_dir}/json"), &layer_json)?;
    o.file(&format!("{layer_dir}/layer.tar"), layer_tar, layer.size)?;
    o.bytes("manifest.json", &manifest)?;
    o.bytes("repositories", &repositories)?;
    o.finish()
}

/// Writes an OCI image layout, archived as a tar, to `dest`.
pub fn write_oci(layer_tar: &Path, dest: &Path, meta: &ImageMeta) -> anyhow::Result<()> {
    let layer = sha256_file(layer_tar)?;
    let config = config_json(meta, &layer);
    let config_digest = sha256_bytes(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{}", layer.digest),
            "size": layer.size,
        }],
    }))?;
    let manifest_digest = sha256_bytes(&manifest);
    let (_, tag) = split_target(meta.target);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))?;

    let out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut o = Outer::new(std::io::BufWriter::new(out), meta.created);
    o.dir("blobs/")?;
    o.dir("blobs/sha256/")?;
    let mut blobs = [
        (config_digest.clone(), Some(config.as_slice())),
        (layer.digest.clone(), None),
        (manifest_digest.clone(), Some(manifest.as_slice())),
    ];
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    for (digest, data) in blobs {
        let name = format!("blobs/sha256/{digest}");
        match data {
            Some(d) => o.bytes(&name, d)?,
            None => o.file(&name, layer_tar, layer.size)?,
        }
    }
    o.bytes("index.json", &index)?;
    o.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    o.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn targets_split() {
        assert_eq!(split_target("img"), ("img".into(), "latest".into()));
        assert_eq!(split_target("img:v1"), ("img".into(), "v1".into()));
        assert_eq!(
            split_target("reg:5000/img"),
            ("reg:5000/img".into(), "latest".into())
        );
    }

    fn layer(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("layer.tar");
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/hello", &b"hello"[..]).unwrap();
        b.finish().unwrap();
        p
    }

    fn entries(p: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(File::open(p).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    fn meta() -> ImageMeta<'static> {
        ImageMeta {
            arch: "arm64",
            target: "demo:1",
            created: 1_700_000_000,
        }
    }

    #[test]
    fn docker_archive_has_manifest_and_layer() {
        let d = tempfile::tempdir().unwrap();
        let l = layer(d.path());
        let out = d.path().join("img.docker.tar");
        write_docker(&l, &out, &meta()).unwrap();
        let names = entries(&out);
        assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("/layer.tar")));
        // Same input, same bytes.
        let again = d.path().join("again.tar");
        write_docker(&l, &again, &meta()).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    }

    #[test]
    fn oci_layout_blobs_match_digests() {
        let d = tempfile::tempdir().unwrap();
        let l = layer(d.path());
        let out = d.path().join("img.oci.tar");
        write_oci(&l, &out, &meta()).unwrap();
        let mut a = tar::Archive::new(File::open(&out).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if let Some(digest) = name.strip_prefix("blobs/sha256/").filter(|s| !s.is_empty()) {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).unwrap();
                assert_eq!(sha256_bytes(&buf), digest);
            }
        }
    }
}
