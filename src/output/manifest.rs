//! The manifest beside every build's outputs: `<name>.manifest.json` lists the
//! installed packages (name, version, architecture, archive SHA256 and URL)
//! and the outputs with their SHA256; `<name>.spdx.json` is the same package
//! list as an SPDX 2.3 JSON SBOM.
//!
//! Packages are read from the tree's dpkg status after post-install.d, while
//! the apt lists that carry each package's hash are still there (the dpkg
//! element's cleanup removes them). A tree without dpkg gives an empty list.

use serde::Serialize;
use serde_json::json;
use std::path::Path;

use super::container::{rfc3339, sha256_bytes, sha256_of};

pub use crate::pkgdb::Package;

/// The installed packages of the tree at `root` (none for a tree no
/// package database manages).
pub fn capture(root: &Path) -> anyhow::Result<Vec<Package>> {
    crate::pkgdb::installed(root)
}

/// One finished output.
#[derive(Clone, Debug, Serialize)]
pub struct OutputFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub file: String,
    /// The file's SHA256; for the ostree output, its commit's checksum
    /// (a SHA256 of the commit, which names every object's).
    pub sha256: String,
    /// The ostree output's ref.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

impl OutputFile {
    /// Describes the output now at `tmp`, to be named `final_path`.
    pub fn hashed(kind: &str, tmp: &Path, final_path: &Path) -> anyhow::Result<Self> {
        Ok(OutputFile {
            kind: kind.to_string(),
            file: final_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: sha256_of(tmp)?,
            branch: None,
        })
    }

    /// The ostree output: the commit on `branch` of `repo`.
    pub fn ostree(repo: &Path, branch: &str, commit: &str) -> Self {
        OutputFile {
            kind: crate::plan::OutputKind::Ostree.name().into(),
            file: repo
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: commit.to_string(),
            branch: Some(branch.to_string()),
        }
    }
}

/// The manifest JSON.
pub fn manifest_json(
    image: &str,
    arch: &str,
    packages: &[Package],
    outputs: &[OutputFile],
) -> String {
    let v = json!({
        "image": image,
        "architecture": arch,
        "generator": format!("dib-create {}", env!("CARGO_PKG_VERSION")),
        "packages": packages,
        "outputs": outputs,
    });
    serde_json::to_string_pretty(&v).expect("json") + "\n"
}

/// An SPDX 2.3 document: the image as the described package, containing
/// every installed package with its purl and archive checksum.
pub fn spdx_json(image: &str, distro: &str, packages: &[Package], created: u64) -> String {
    let namespace_seed: String = packages
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.version, p.architecture))
        .collect();
    let digest = sha256_bytes(namespace_seed.as_bytes());
    let mut pkgs = vec![json!({
        "name": image,
        "SPDXID": "SPDXRef-Image",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{i}", spdx_id_part(&p.name));
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": p.url.clone().unwrap_or_else(|| "NOASSERTION".into()),
            "filesAnalyzed": false,
            "supplier": "NOASSERTION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/{distro}/{}@{}?arch={}",
                    p.name,
                    purl_escape(&p.version),
                    p.architecture
                ),
            }],
        });
        if let Some(sha) = &p.sha256 {
            pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha}]);
        }
        pkgs.push(pkg);
        rels.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image,
        "documentNamespace": format!("https://spdx.invalid/dib-create/{image}-{digest}"),
        "creationInfo": {
            "created": rfc3339(created),
            "creators": [format!("Tool: dib-create-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": pkgs,
        "relationships": rels,
    });
    serde_json::to_string_pretty(&doc).expect("json") + "\n"
}

/// SPDX ids allow letters, digits, `.` and `-` only.
fn spdx_id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// purl percent-encodes `:` (epochs) and `+`, among others.
fn purl_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('+', "%2B")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkgs() -> Vec<Package> {
        vec![
            Package {
                name: "libstdc++6".into(),
                version: "1:12.2.0-14".into(),
                architecture: "amd64".into(),
                sha256: Some("ab".repeat(32)),
                url: Some("http://deb.debian.org/debian/pool/main/g/gcc-12/libstdc++6.deb".into()),
            },
            Package {
                name: "local".into(),
                version: "1.0".into(),
                architecture: "all".into(),
                sha256: None,
                url: None,
            },
        ]
    }

    #[test]
    fn spdx_document_is_well_formed() {
        let v: serde_json::Value =
            serde_json::from_str(&spdx_json("img", "debian", &pkgs(), 0)).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        let p = &v["packages"][1];
        assert_eq!(p["SPDXID"], "SPDXRef-Package-libstdc--6-0");
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libstdc++6@1%3A12.2.0-14?arch=amd64"
        );
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        assert!(v["packages"][2].get("checksums").is_none());
        assert_eq!(v["relationships"].as_array().unwrap().len(), 3);
        // The same packages give the same document.
        assert_eq!(
            spdx_json("img", "debian", &pkgs(), 0),
            spdx_json("img", "debian", &pkgs(), 0)
        );
    }

    #[test]
    fn manifest_lists_packages_and_outputs() {
        let out = OutputFile {
            kind: "qcow2".into(),
            file: "img.qcow2".into(),
            sha256: "cd".repeat(32),
            branch: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&manifest_json("img", "amd64", &pkgs(), &[out])).unwrap();
        assert_eq!(v["packages"][0]["name"], "libstdc++6");
        assert_eq!(v["outputs"][0]["type"], "qcow2");
    }

    #[test]
    fn capture_of_a_tree_without_dpkg_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert!(capture(d.path()).unwrap().is_empty());
    }
}
