//! Is `DIB_RELEASE` a release the distribution has? Known names pass at once;
//! another name passes when the mirror publishes `dists/<release>/InRelease`,
//! so a new Ubuntu release builds without a new dib-create. A name the mirror
//! does not have is bad input, refused before anything is built.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::UsageError;
use crate::log;

/// Release names (and suite aliases) of the Debian family.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "debian",
        &[
            "buster",
            "bullseye",
            "bookworm",
            "trixie",
            "forky",
            "duke",
            "sid",
            "unstable",
            "testing",
            "stable",
            "oldstable",
            "oldoldstable",
            "experimental",
        ],
    ),
    (
        "ubuntu",
        &[
            "bionic", "focal", "jammy", "noble", "oracular", "plucky", "questing", "resolute",
        ],
    ),
];

/// Architectures a distribution's archive lacks, by release: each entry is
/// (distribution, architecture, the releases that still have it, why).
const MISSING_ARCHES: &[(&str, &str, &[&str], &str)] = &[
    (
        "debian",
        "i386",
        &[
            "buster",
            "bullseye",
            "bookworm",
            "oldstable",
            "oldoldstable",
        ],
        "since Debian 13 (trixie) i386 has no kernel and no installer: it is kept for running 32-bit programs on 64-bit systems",
    ),
    (
        "ubuntu",
        "i386",
        &["trusty", "xenial", "bionic"],
        "since 20.04 (focal) Ubuntu's i386 archive holds only the libraries that 64-bit systems run, with no kernel and no full base system",
    ),
];

/// Checks that the distribution environment.d chose publishes `arch` for
/// `DIB_RELEASE`.
pub fn check_arch(env: &BTreeMap<String, String>, arch: &str) -> Result<(), UsageError> {
    let (Some(distro), Some(release)) = (env.get("DISTRO_NAME"), env.get("DIB_RELEASE")) else {
        return Ok(());
    };
    match MISSING_ARCHES
        .iter()
        .find(|(d, a, keep, _)| d == distro && *a == arch && !keep.contains(&release.as_str()))
    {
        Some((_, _, keep, why)) => Err(UsageError(format!(
            "-a {arch}: {distro} {} has no {arch} images ({why}); build another architecture, or a release that has it ({})",
            super::validate::escape(release),
            keep.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Checks `DIB_RELEASE` of the distribution environment.d chose.
pub fn check(env: &BTreeMap<String, String>, offline: bool) -> Result<(), UsageError> {
    let (Some(distro), Some(release)) = (env.get("DISTRO_NAME"), env.get("DIB_RELEASE")) else {
        return Ok(());
    };
    let Some((_, names)) = KNOWN.iter().find(|(d, _)| d == distro) else {
        return Ok(());
    };
    if names.contains(&release.as_str()) {
        return Ok(());
    }
    if !is_name(release) {
        return Err(unknown(distro, release, names, "it is not a release name"));
    }
    let Some(mirror) = env.get("DIB_DISTRIBUTION_MIRROR").filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    if offline {
        log::warn(&format!(
            "DIB_RELEASE={release}: not a {distro} release dib-create knows, and --offline keeps it from asking {mirror}"
        ));
        return Ok(());
    }
    let url = format!("{}/dists/{release}/InRelease", mirror.trim_end_matches('/'));
    match published(&url) {
        Ok(true) => Ok(()),
        Ok(false) => Err(unknown(
            distro,
            release,
            names,
            &format!("{url} does not exist"),
        )),
        Err(e) => {
            log::warn(&format!(
                "DIB_RELEASE={release}: not a {distro} release dib-create knows, and {url} could not be checked ({e}); trying it"
            ));
            Ok(())
        }
    }
}

/// Suite names are lower-case words (`bookworm`, `noble`, `sid`).
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn unknown(distro: &str, release: &str, names: &[&str], why: &str) -> UsageError {
    UsageError(format!(
        "DIB_RELEASE={}: not a {distro} release ({why}); use one of {}",
        super::validate::escape(release),
        names.join(", ")
    ))
}

/// Whether `url` answers 200 (true) or 404 (false).
fn published(url: &str) -> Result<bool, String> {
    if let Some(p) = url.strip_prefix("file://") {
        return Ok(std::path::Path::new(p).is_file());
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent.head(url).call().map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200..=299 => Ok(true),
        404 | 410 => Ok(false),
        other => Err(format!("HTTP {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(distro: &str, release: &str, mirror: &str) -> BTreeMap<String, String> {
        [
            ("DISTRO_NAME", distro),
            ("DIB_RELEASE", release),
            ("DIB_DISTRIBUTION_MIRROR", mirror),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn ubuntu_i386_only_where_the_archive_is_whole() {
        let noble = env("ubuntu", "noble", "");
        let e = check_arch(&noble, "i386").unwrap_err().to_string();
        assert!(
            e.contains("-a i386") && e.contains("noble") && e.contains("bionic"),
            "{e}"
        );
        check_arch(&noble, "armhf").unwrap();
        check_arch(&env("ubuntu", "bionic", ""), "i386").unwrap();
        check_arch(&env("debian", "bookworm", ""), "i386").unwrap();
        let e = check_arch(&env("debian", "trixie", ""), "i386").unwrap_err();
        assert!(e.to_string().contains("bookworm"), "{e}");
        check_arch(&env("debian", "trixie", ""), "armhf").unwrap();
    }

    #[test]
    fn known_names_pass_without_asking() {
        assert!(check(&env("debian", "bookworm", "http://127.0.0.1:9"), false).is_ok());
        assert!(check(&env("fake", "anything", ""), false).is_ok());
    }

    #[test]
    fn the_mirror_decides_for_other_names() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dists/newest")).unwrap();
        std::fs::write(d.path().join("dists/newest/InRelease"), "x").unwrap();
        let mirror = format!("file://{}", d.path().display());
        assert!(check(&env("ubuntu", "newest", &mirror), false).is_ok());
        let e = check(&env("ubuntu", "nonsense", &mirror), false).unwrap_err();
        assert!(
            e.to_string().contains("nonsense") && e.to_string().contains("noble"),
            "{e}"
        );
        let e = check(&env("debian", "Book worm", &mirror), false).unwrap_err();
        assert!(e.to_string().contains("not a release name"), "{e}");
    }
}
