//! The ostree output (`-t ostree`): which repository, which ref, which
//! parent, and what the commit says about itself. Decided here, so that
//! `--dry-run` shows and checks it; `crate::output::ostree` carries it out.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::validate::escape;
use crate::error::UsageError;

/// What the command line says about the ostree output.
#[derive(Clone, Debug, Default)]
pub struct OstreeArgs {
    pub repo: Option<PathBuf>,
    pub branch: Option<String>,
    pub parent: Option<String>,
    pub version: Option<String>,
    pub gpg_sign: Option<String>,
    pub gpg_homedir: Option<PathBuf>,
}

impl OstreeArgs {
    /// The flags given, by name (for "needs -t ostree").
    fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--ostree-repo", self.repo.is_some()),
            ("--ostree-ref", self.branch.is_some()),
            ("--ostree-parent", self.parent.is_some()),
            ("--ostree-version", self.version.is_some()),
            ("--ostree-gpg-sign", self.gpg_sign.is_some()),
            ("--ostree-gpg-homedir", self.gpg_homedir.is_some()),
        ];
        flags.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect()
    }
}

/// The commit's parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parent {
    /// The ref's current commit in the repository, if it has one, else none:
    /// each build continues the ref's history.
    Head,
    /// No parent: the first commit of a history.
    None,
    /// This commit (its full checksum).
    Commit(String),
}

/// GPG signing of the commit.
#[derive(Clone, Debug, Serialize)]
pub struct GpgSign {
    pub key_id: String,
    /// None: gpg's default home (GNUPGHOME or ~/.gnupg).
    pub homedir: Option<PathBuf>,
}

/// Deploying the commit into the disk (the `ostree-deploy` element).
#[derive(Clone, Debug, Serialize)]
pub struct DeployPlan {
    /// The stateroot (`ostree admin os-init`): the distribution's name.
    pub os: String,
    /// The remote the machine upgrades from (`DIB_OSTREE_REMOTE_URL`), named
    /// [`REMOTE`]; None: the deployment follows a local ref.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
    /// What the deployment follows: `origin:REF`, or `REF`.
    pub refspec: String,
}

/// The name of the remote a deployed machine upgrades from.
pub const REMOTE: &str = "origin";

/// Everything the ostree commit needs.
#[derive(Clone, Debug, Serialize)]
pub struct OstreePlan {
    /// The repository: an existing one is committed into, a missing one is
    /// created (mode archive) under a temporary name and renamed into place
    /// with the other outputs.
    pub repo: PathBuf,
    /// The ref the commit goes to.
    #[serde(rename = "ref")]
    pub branch: String,
    pub parent: Parent,
    /// The commit's time: SOURCE_DATE_EPOCH, else the time of planning.
    pub timestamp: u64,
    /// The `version` metadata (`ostree admin status` shows it).
    pub version: String,
    /// The commit's subject line.
    pub subject: String,
    /// Further string metadata (the element list, the lockfile's hash).
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpg: Option<GpgSign>,
    /// Deploy the commit into the disk image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployPlan>,
}

/// What the ostree plan is made from.
pub struct Inputs<'a> {
    pub args: &'a OstreeArgs,
    pub wanted: bool,
    /// The repository's default path (`<-o>.ostree`).
    pub default_repo: &'a Path,
    pub distro: &'a str,
    pub release: &'a str,
    pub arch: &'a str,
    pub image: &'a str,
    pub elements: &'a [String],
    /// The lockfile the build follows or records, and its content's SHA256.
    pub lockfile: Option<(PathBuf, String)>,
    /// The commit's time (SOURCE_DATE_EPOCH, else now).
    pub created: u64,
    /// The `ostree-deploy` element is chosen.
    pub deploy: bool,
    /// `DIB_OSTREE_REMOTE_URL`.
    pub remote_url: Option<&'a str>,
}

/// The metadata key of the element list.
pub const META_ELEMENTS: &str = "dib-create.elements";
/// The metadata key of the lockfile's SHA256.
pub const META_LOCKFILE: &str = "dib-create.lockfile-sha256";

/// The ostree plan, or None without `-t ostree` (when no ostree flag may be given).
pub fn plan(i: &Inputs) -> Result<Option<OstreePlan>, UsageError> {
    if !i.wanted {
        return match i.args.given().first() {
            Some(flag) => Err(UsageError(format!(
                "{flag} applies to the ostree output only; add ostree to -t (e.g. -t qcow2,ostree)"
            ))),
            None => Ok(None),
        };
    }
    let repo = i
        .args
        .repo
        .clone()
        .unwrap_or_else(|| i.default_repo.to_path_buf());
    check_repo(&repo, i.args.repo.is_some())?;
    let branch = match &i.args.branch {
        Some(b) => b.clone(),
        None => default_ref(i.distro, i.release, i.arch, i.image),
    };
    check_ref(&branch, i.args.branch.is_some())?;
    let parent = parse_parent(i.args.parent.as_deref())?;
    check_parent_present(&parent, &repo)?;
    let version = i
        .args
        .version
        .clone()
        .unwrap_or_else(|| default_version(i.created));
    check_version(&version)?;
    let gpg = gpg(i.args)?;
    let mut metadata = BTreeMap::new();
    metadata.insert(META_ELEMENTS.to_string(), i.elements.join(" "));
    if let Some((_, sha)) = &i.lockfile {
        metadata.insert(META_LOCKFILE.to_string(), sha.clone());
    }
    let deploy = if i.deploy {
        Some(deploy_plan(i.distro, &branch, i.remote_url)?)
    } else {
        None
    };
    Ok(Some(OstreePlan {
        deploy,
        repo,
        subject: format!("{} {} {} {version}", i.distro, i.release, i.arch),
        branch,
        parent,
        timestamp: i.created,
        version,
        metadata,
        gpg,
    }))
}

fn deploy_plan(os: &str, branch: &str, url: Option<&str>) -> Result<DeployPlan, UsageError> {
    let url = url.filter(|u| !u.is_empty());
    if let Some(u) = url {
        let scheme_ok = ["http://", "https://", "file:///"]
            .iter()
            .any(|s| u.starts_with(s) && u.len() > s.len());
        if !scheme_ok || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UsageError(format!(
                "DIB_OSTREE_REMOTE_URL={}: give the URL of the ostree repository the machine upgrades from, e.g. http://updates.example.com/repo",
                escape(u)
            )));
        }
    }
    Ok(DeployPlan {
        os: ref_component(os),
        remote_url: url.map(String::from),
        refspec: match url {
            Some(_) => format!("{REMOTE}:{branch}"),
            None => branch.to_string(),
        },
    })
}

/// `<distro>/<release>/<arch>/<image>`, each part made ref-safe.
fn default_ref(distro: &str, release: &str, arch: &str, image: &str) -> String {
    [distro, release, arch, image]
        .iter()
        .map(|p| ref_component(p))
        .collect::<Vec<_>>()
        .join("/")
}

/// `part` with every character ostree refuses in a ref replaced by `_`.
fn ref_component(part: &str) -> String {
    let s: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => s,
        _ => format!("_{s}"),
    }
}

/// ostree's ref syntax: components of `[A-Za-z0-9_][-._A-Za-z0-9]*`
/// joined by single slashes.
fn check_ref(branch: &str, given: bool) -> Result<(), UsageError> {
    let ok = !branch.is_empty()
        && branch.split('/').all(|c| {
            c.chars()
                .next()
                .is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch))
        });
    if ok {
        return Ok(());
    }
    let from = if given {
        "--ostree-ref".to_string()
    } else {
        "the default ref".to_string()
    };
    Err(UsageError(format!(
        "{from} {}: not an ostree ref; use letters, digits and - . _ between single slashes, e.g. --ostree-ref debian/bookworm/amd64/app",
        escape(branch)
    )))
}

/// An existing path must be an ostree repository; a missing one must be
/// creatable (its directory exists).
fn check_repo(repo: &Path, given: bool) -> Result<(), UsageError> {
    let flag = if given {
        "--ostree-repo"
    } else {
        "the ostree output"
    };
    let bad = |why: String| Err(UsageError(format!("{flag} {}: {why}", repo.display())));
    match repo.metadata() {
        Ok(m) if m.is_dir() => {
            if is_repository(repo) {
                Ok(())
            } else {
                bad("this directory is not an ostree repository (it has no config and objects/); give a repository made by `ostree init`, or a path that does not exist yet".into())
            }
        }
        Ok(_) => bad(
            "this exists and is not a directory; give an ostree repository or a new path".into(),
        ),
        Err(_) => {
            let parent = match repo.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if parent.is_dir() {
                Ok(())
            } else {
                bad(format!(
                    "the directory {} does not exist; create it first",
                    parent.display()
                ))
            }
        }
    }
}

/// True when `dir` holds an ostree repository.
pub fn is_repository(dir: &Path) -> bool {
    dir.join("config").is_file() && dir.join("objects").is_dir()
}

/// `--ostree-parent`: `none`, a full commit checksum, or absent (the ref's head).
fn parse_parent(p: Option<&str>) -> Result<Parent, UsageError> {
    match p {
        None => Ok(Parent::Head),
        Some("none") => Ok(Parent::None),
        Some(c) if c.len() == 64 && c.chars().all(|ch| ch.is_ascii_hexdigit()) => {
            Ok(Parent::Commit(c.to_ascii_lowercase()))
        }
        Some(c) => Err(UsageError(format!(
            "--ostree-parent {}: give `none` or a commit's full 64-digit checksum (`ostree rev-parse REF` prints it)",
            escape(c)
        ))),
    }
}

/// A parent given by checksum must be a commit of the repository: ostree
/// checks only its syntax, and the static delta from it would fail after the
/// commit was written.
fn check_parent_present(parent: &Parent, repo: &Path) -> Result<(), UsageError> {
    let Parent::Commit(c) = parent else {
        return Ok(());
    };
    let object = repo
        .join("objects")
        .join(&c[..2])
        .join(format!("{}.commit", &c[2..]));
    if object.is_file() {
        return Ok(());
    }
    Err(UsageError(format!(
        "--ostree-parent {c}: no such commit in {}; give one of its commits (`ostree log REF` lists them) or none",
        repo.display()
    )))
}

/// The commit's time as `YYYYMMDD.HHMMSS` (UTC): versions sort by date.
fn default_version(created: u64) -> String {
    let stamp: String = crate::output::container::rfc3339(created)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{}.{}", &stamp[..8], &stamp[8..])
}

fn check_version(v: &str) -> Result<(), UsageError> {
    if !v.is_empty() && !v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Ok(());
    }
    Err(UsageError(format!(
        "--ostree-version {}: give a version without spaces, e.g. 2026.1",
        escape(v)
    )))
}

fn gpg(args: &OstreeArgs) -> Result<Option<GpgSign>, UsageError> {
    let Some(key_id) = &args.gpg_sign else {
        if args.gpg_homedir.is_some() {
            return Err(UsageError(
                "--ostree-gpg-homedir names where the signing key is; add --ostree-gpg-sign KEYID"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let id_ok = !key_id.is_empty()
        && key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_+<>".contains(c));
    if !id_ok {
        return Err(UsageError(format!(
            "--ostree-gpg-sign {}: give the key's fingerprint or ID (`gpg --list-secret-keys` shows it)",
            escape(key_id)
        )));
    }
    if let Some(h) = &args.gpg_homedir
        && !h.is_dir()
    {
        return Err(UsageError(format!(
            "--ostree-gpg-homedir {}: no such directory; give the GnuPG home that holds the secret key",
            h.display()
        )));
    }
    match crate::host::gpg_knows_key(args.gpg_homedir.as_deref(), key_id) {
        None => {
            return Err(UsageError(
                "--ostree-gpg-sign needs gpg, which is not installed: apt-get install gpg gpg-agent"
                    .into(),
            ));
        }
        Some(false) => {
            let home = args
                .gpg_homedir
                .as_ref()
                .map_or("gpg's default home".to_string(), |h| {
                    h.display().to_string()
                });
            return Err(UsageError(format!(
                "--ostree-gpg-sign {}: no key of that ID in {home}; `gpg --list-secret-keys` shows the keys there",
                escape(key_id)
            )));
        }
        Some(true) => {}
    }
    Ok(Some(GpgSign {
        key_id: key_id.clone(),
        homedir: args.gpg_homedir.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(args: &'a OstreeArgs, repo: &'a Path) -> Inputs<'a> {
        Inputs {
            args,
            wanted: true,
            default_repo: repo,
            distro: "debian",
            release: "bookworm",
            arch: "amd64",
            image: "app",
            elements: &[],
            lockfile: None,
            created: 1_700_000_000,
            deploy: false,
            remote_url: None,
        }
    }

    #[test]
    fn defaults_name_the_image_and_continue_the_ref() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("app.ostree");
        let args = OstreeArgs::default();
        let p = plan(&inputs(&args, &repo)).unwrap().unwrap();
        assert_eq!(p.branch, "debian/bookworm/amd64/app");
        assert_eq!(p.parent, Parent::Head);
        assert_eq!(p.version, "20231114.221320");
        assert_eq!(p.repo, repo);
    }

    #[test]
    fn odd_image_names_make_a_valid_default_ref() {
        assert_eq!(
            default_ref("debian", "sid", "arm64", "-x y+z"),
            "debian/sid/arm64/_-x_y_z"
        );
        assert!(check_ref(&default_ref("a", "b", "c", ".hidden"), false).is_ok());
    }

    #[test]
    fn refs() {
        for ok in ["a", "debian/bookworm/amd64/app", "x_1/y-2.3"] {
            assert!(check_ref(ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "-a", "a b", "a:b", "a/.b"] {
            assert!(check_ref(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parents() {
        assert_eq!(parse_parent(Some("none")).unwrap(), Parent::None);
        let c = "A".repeat(64);
        assert_eq!(
            parse_parent(Some(&c)).unwrap(),
            Parent::Commit("a".repeat(64))
        );
        for bad in ["", "abc", "HEAD", &"g".repeat(64)] {
            assert!(parse_parent(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_parent_must_be_in_the_repository() {
        let d = tempfile::tempdir().unwrap();
        let c = "ab".repeat(32);
        let p = Parent::Commit(c.clone());
        assert!(check_parent_present(&p, d.path()).is_err());
        let dir = d.path().join("objects/ab");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}.commit", &c[2..])), "").unwrap();
        assert!(check_parent_present(&p, d.path()).is_ok());
        assert!(check_parent_present(&Parent::None, d.path()).is_ok());
    }

    #[test]
    fn a_flag_without_the_output_is_refused() {
        let args = OstreeArgs {
            branch: Some("a/b".into()),
            ..Default::default()
        };
        let repo = PathBuf::from("x.ostree");
        let mut i = inputs(&args, &repo);
        i.wanted = false;
        let e = plan(&i).unwrap_err().to_string();
        assert!(e.contains("--ostree-ref") && e.contains("-t"), "{e}");
    }

    #[test]
    fn a_directory_that_is_no_repository_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let args = OstreeArgs {
            repo: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let e = plan(&inputs(&args, d.path())).unwrap_err().to_string();
        assert!(e.contains("not an ostree repository"), "{e}");
        std::fs::write(d.path().join("config"), "[core]\n").unwrap();
        std::fs::create_dir(d.path().join("objects")).unwrap();
        assert!(plan(&inputs(&args, d.path())).is_ok());
    }

    #[test]
    fn a_deployment_follows_the_remote_when_there_is_one() {
        let args = OstreeArgs::default();
        let repo = PathBuf::from("x.ostree");
        let mut i = inputs(&args, &repo);
        i.deploy = true;
        let d = plan(&i).unwrap().unwrap().deploy.unwrap();
        assert_eq!(
            (d.os.as_str(), d.refspec.as_str()),
            ("debian", "debian/bookworm/amd64/app")
        );
        i.remote_url = Some("http://10.0.2.2:8000/repo");
        let d = plan(&i).unwrap().unwrap().deploy.unwrap();
        assert_eq!(d.refspec, "origin:debian/bookworm/amd64/app");
        for bad in ["ftp://x", "http://", "http://a b", "repo"] {
            i.remote_url = Some(bad);
            assert!(plan(&i).is_err(), "{bad}");
        }
    }

    #[test]
    fn signing_needs_a_key_and_an_existing_home() {
        let args = OstreeArgs {
            gpg_homedir: Some("/nonexistent".into()),
            ..Default::default()
        };
        let repo = PathBuf::from("x.ostree");
        assert!(plan(&inputs(&args, &repo)).is_err());
        let args = OstreeArgs {
            gpg_sign: Some("ABCD1234".into()),
            gpg_homedir: Some("/nonexistent".into()),
            ..Default::default()
        };
        let e = plan(&inputs(&args, &repo)).unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
    }
}
