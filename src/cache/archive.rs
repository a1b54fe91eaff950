//! Has the archive changed? For builds without a lockfile, a cached tree is
//! only as fresh as the package indices it was installed from. Each apt
//! source of the tree is checked through its suite's `InRelease` file (a
//! few hundred KB at most, fetched once per build): the digest is taken over
//! the SHA256 lines of the *package indices for the build's architecture*
//! only, so a re-signed Release file (new Date, Valid-Until) with unchanged
//! packages keeps the cache, and any package change in the suite drops it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::host::Cmd;

use crate::digest::fields as digest;
use crate::pkgdb::Source;

/// The Release file URL of a source: `<uri>/dists/<suite>/InRelease`, or
/// `<uri>/<suite>InRelease` for a flat repository (suite ending in `/`).
pub fn release_url(src: &Source) -> String {
    let uri = src.uri.trim_end_matches('/');
    if src.suite.ends_with('/') {
        let suite = src.suite.trim_start_matches("./");
        let suite = if suite == "/" { "" } else { suite };
        format!("{uri}/{suite}InRelease")
    } else {
        format!("{uri}/dists/{}/InRelease", src.suite)
    }
}

/// Digest of the `SHA256:` entries of a Release file that describe package
/// indices (`.../binary-<arch>/Packages*`, `binary-all`, and a flat
/// repository's `Packages*`). Falls back to the whole text when it lists none.
pub fn indices_digest(release: &str, arch: &str) -> String {
    let mut in_sha = false;
    let mut lines = Vec::new();
    let arch_dir = format!("binary-{arch}/");
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha = line.trim_end() == "SHA256:";
            continue;
        }
        if !in_sha {
            continue;
        }
        let Some(path) = line.split_whitespace().nth(2) else {
            continue;
        };
        let file = path.rsplit('/').next().unwrap_or(path);
        let wanted_dir =
            path.contains(&arch_dir) || path.contains("binary-all/") || !path.contains('/');
        if wanted_dir && file.starts_with("Packages") {
            lines.push(line.trim().to_string());
        }
    }
    if lines.is_empty() {
        return digest(&["whole", release]);
    }
    lines.sort();
    digest(&lines)
}

/// Fetches Release files, each at most once per build, and trusts only
/// what their signature covers.
#[derive(Default)]
pub struct Checker {
    offline: bool,
    /// The archive keyrings an InRelease may be signed with.
    keyrings: Vec<PathBuf>,
    memo: BTreeMap<String, Result<String, String>>,
}

impl Checker {
    /// `keyrings`: those that exist when an InRelease is checked verify it
    /// (a build's root.d may fetch one, as the debootstrap element does for
    /// Ubuntu).
    pub fn new(offline: bool, keyrings: Vec<PathBuf>) -> Self {
        Checker {
            offline,
            keyrings,
            memo: BTreeMap::new(),
        }
    }

    /// The current index digest for a Release URL, or why it is unknown.
    pub fn current(&mut self, url: &str, arch: &str) -> Result<String, String> {
        if let Some(r) = self.memo.get(url) {
            return r.clone();
        }
        let r = if self.offline {
            Err("offline".to_string())
        } else {
            fetch(url)
                .and_then(|t| self.verified(&t))
                .map(|t| indices_digest(&t, arch))
        };
        self.memo.insert(url.to_string(), r.clone());
        r
    }

    /// The state of every source: Release URL → digest. Sources that
    /// cannot be checked are left out and returned as the second value.
    pub fn state(
        &mut self,
        sources: &[Source],
        arch: &str,
    ) -> (BTreeMap<String, String>, Vec<String>) {
        let mut ok = BTreeMap::new();
        let mut unknown = Vec::new();
        for s in sources {
            let url = release_url(s);
            match self.current(&url, arch) {
                Ok(d) => {
                    ok.insert(url, d);
                }
                Err(e) => unknown.push(format!("{url}: {e}")),
            }
        }
        (ok, unknown)
    }
}

impl Checker {
    /// The signed content of an InRelease, checked with gpgv against the
    /// keyrings; an unsigned or badly signed one is not an archive state.
    fn verified(&self, inrelease: &str) -> Result<String, String> {
        let keyrings: Vec<&PathBuf> = self.keyrings.iter().filter(|k| k.is_file()).collect();
        if keyrings.is_empty() {
            return Err("no archive keyring to verify its signature with".into());
        }
        let mut c = Cmd::new("verifying the archive's InRelease signature", "gpgv")
            .args(["--quiet", "--output", "-"])
            .stdin_bytes(inrelease.as_bytes().to_vec())
            .capture();
        for k in &keyrings {
            c = c.arg("--keyring").arg(k);
        }
        let out = c.arg("-").run_here().map_err(|e| {
            let list: Vec<String> = keyrings.iter().map(|k| k.display().to_string()).collect();
            format!(
                "its signature does not verify against {}: {e}",
                list.join(", ")
            )
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn fetch(url: &str) -> Result<String, String> {
    if let Some(p) = url.strip_prefix("file://") {
        return std::fs::read_to_string(p).map_err(|e| e.to_string());
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("not an http(s) or file source".into());
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    resp.into_body()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\nDate: Sat, 01 Nov 2025 09:00:00 UTC\nSHA256:\n 1111 100 main/binary-amd64/Packages\n 2222 50 main/binary-amd64/Packages.xz\n 3333 70 main/binary-arm64/Packages\n 4444 10 main/i18n/Translation-en\n 5555 20 main/binary-all/Packages\n-----BEGIN PGP SIGNATURE-----\nxyz\n";

    #[test]
    fn only_this_architectures_indices_count() {
        let d = indices_digest(RELEASE, "amd64");
        let resigned = RELEASE
            .replace("09:00:00", "15:00:00")
            .replace("xyz", "abc");
        assert_eq!(
            indices_digest(&resigned, "amd64"),
            d,
            "date and signature ignored"
        );
        let other_arch = RELEASE.replace("3333", "9999");
        assert_eq!(indices_digest(&other_arch, "amd64"), d);
        let translations = RELEASE.replace("4444", "9999");
        assert_eq!(indices_digest(&translations, "amd64"), d);
        let changed = RELEASE.replace("2222", "8888");
        assert_ne!(indices_digest(&changed, "amd64"), d);
        let all_changed = RELEASE.replace("5555", "8888");
        assert_ne!(indices_digest(&all_changed, "amd64"), d);
    }

    /// A signed InRelease counts; a tampered or unsigned one is no state.
    #[test]
    fn only_a_verified_signature_gives_an_archive_state() {
        if !crate::host::tools::on_path("gpg") || !crate::host::tools::on_path("gpgv") {
            crate::testing::skip(
                "only_a_verified_signature_gives_an_archive_state",
                "needs gpg and gpgv",
            );
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        let gpg = |args: &[&str]| {
            let out = std::process::Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args([
                    "--batch",
                    "--quiet",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                ])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        gpg(&[
            "--quick-gen-key",
            "archive@test",
            "ed25519",
            "sign",
            "never",
        ]);
        let keyring = d.path().join("archive.gpg");
        std::fs::write(&keyring, gpg(&["--export", "archive@test"])).unwrap();
        let body = "Origin: Test\nSHA256:\n 1111 100 main/binary-amd64/Packages\n";
        std::fs::write(d.path().join("body"), body).unwrap();
        let signed = gpg(&[
            "--clearsign",
            "--output",
            "-",
            d.path().join("body").to_str().unwrap(),
        ]);
        let url = |name: &str, text: &[u8]| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            format!("file://{}", p.display())
        };
        let good = url("good", &signed);
        let tampered = url(
            "tampered",
            &String::from_utf8(signed.clone())
                .unwrap()
                .replace("1111", "2222")
                .into_bytes(),
        );
        let unsigned = url("unsigned", body.as_bytes());
        let mut c = Checker::new(false, vec![keyring]);
        assert_eq!(
            c.current(&good, "amd64").unwrap(),
            indices_digest(body, "amd64")
        );
        assert!(
            c.current(&tampered, "amd64")
                .unwrap_err()
                .contains("does not verify")
        );
        assert!(c.current(&unsigned, "amd64").is_err());
        let later = d.path().join("later.gpg");
        let mut none = Checker::new(false, vec![later.clone()]);
        let e = none.current(&good, "amd64").unwrap_err();
        assert!(e.contains("no archive keyring"), "{e}");
        // A keyring that appears after the checker was made (root.d fetched
        // it) is used.
        std::fs::copy(d.path().join("archive.gpg"), &later).unwrap();
        let mut fresh = Checker::new(false, vec![later]);
        assert!(fresh.current(&good, "amd64").is_ok());
    }

    #[test]
    fn release_urls() {
        let s = |uri: &str, suite: &str| Source {
            uri: uri.into(),
            suite: suite.into(),
        };
        assert_eq!(
            release_url(&s("http://deb.debian.org/debian/", "bookworm")),
            "http://deb.debian.org/debian/dists/bookworm/InRelease"
        );
        assert_eq!(
            release_url(&s("http://127.0.0.1:8/", "./")),
            "http://127.0.0.1:8/InRelease"
        );
        assert_eq!(
            release_url(&s("http://x/repo", "sub/")),
            "http://x/repo/sub/InRelease"
        );
    }
}
