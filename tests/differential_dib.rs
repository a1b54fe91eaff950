//! Differential test against diskimage-builder itself: each set of elements is
//! built by `disk-image-create` and by dib-create, from the same mirror, as
//! `-t tar`, and the two trees are compared aspect by aspect: the file list
//! (logs, caches and machine-id left out), the installed packages, /etc/passwd,
//! /etc/group, /etc/fstab, /etc/default/grub and the systemd enablement links.
//! Every difference must be explained by a line of tests/differential/allowlist;
//! the test prints a table per set (found, allowed, left) and fails on any left.
//!
//! Source installs fetch from hosts that do not answer here (bootstrap.pypa.io,
//! opendev.org): scripts/differential-assets makes local stand-ins from PyPI and
//! both tools are pointed at them with DIB_REPOLOCATION_*.
//!
//! The first set runs in CI. The others are long (an Ubuntu bootstrap, a disk
//! for `vm`) and are ignored here; scripts/test-long runs them with
//! `--ignored`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use libtest_mimic::{Arguments, Failed};

mod common;
use common::Need;

/// One element set, built by both tools.
struct Set {
    name: &'static str,
    elements: &'static [&'static str],
    /// Settings for both builds.
    env: &'static [(&'static str, &'static str)],
    /// Settings for our build only (DIB_BASELINE_TOOLS=1 to match DIB's base).
    ours_env: &'static [(&'static str, &'static str)],
    /// Runs in CI; the others only from scripts/test-long.
    ci: bool,
    /// DIB needs the kpartx stand-in (a disk is made: `vm`).
    disk: bool,
    /// An Ubuntu release (DIB needs the archive keyring).
    ubuntu: bool,
}

const SECURITY: (&str, &str) = (
    "DIB_DEBIAN_SECURITY_MIRROR",
    "http://deb.debian.org/debian-security",
);

/// The sets. The first is the union of the service elements the issue names;
/// it runs on bullseye because pip-and-virtualenv's source install only works
/// there on Debian (on bookworm it installs python-pip, which is gone, and
/// calls python2). simple-init uninstalls cloud-init, so `debian` (with
/// cloud-init) is a set of its own.
fn sets() -> Vec<Set> {
    vec![
        Set {
            name: "debian_minimal_services",
            elements: &[
                "debian-minimal",
                "sysctl",
                "modprobe",
                "dhcp-all-interfaces",
                "simple-init",
                "cloud-init-datasources",
                "install-static",
                "journal-to-console",
                "pip-and-virtualenv",
                "devuser",
                "runtime-ssh-host-keys",
            ],
            env: &[
                ("DIB_RELEASE", "bullseye"),
                SECURITY,
                ("DIB_INSTALLTYPE_pip_and_virtualenv", "source"),
                // DIB's dib-python picks python2 on Debian unless told.
                ("DIB_PYTHON_VERSION", "3"),
            ],
            // This set covers DIB's baseline tools; `debian` covers their absence.
            ours_env: &[("DIB_BASELINE_TOOLS", "1")],
            ci: true,
            disk: false,
            ubuntu: false,
        },
        Set {
            name: "debian",
            // DIB's `debian` element: debian-minimal with openssh-server,
            // sysprep, cloud-init and its package list.
            elements: &["debian"],
            env: &[
                ("DIB_RELEASE", "bookworm"),
                SECURITY,
                ("DIB_PYTHON_VERSION", "3"),
            ],
            ours_env: &[],
            ci: false,
            disk: false,
            ubuntu: false,
        },
        // Our side is read back from our disk (extract-image), as DIB's tar
        // comes from its mounted disk. About 160 differences, all allowed:
        // mostly GRUB's (DIB installs grub-pc and runs grub-install).
        Set {
            name: "ubuntu_minimal_vm",
            elements: &["ubuntu-minimal", "vm"],
            env: &[("DIB_RELEASE", "noble")],
            ours_env: &[("DIB_BASELINE_TOOLS", "1")],
            ci: false,
            disk: true,
            ubuntu: true,
        },
    ]
}

/// Added to every set for both tools (tests/differential/elements): pip in the
/// chroot trusts the host's CA bundle (this host's HTTPS goes through a proxy
/// with its own CA). Nothing of it reaches the image.
const TEST_ELEMENTS: [&str; 1] = ["host-ca"];

/// What is compared.
const ASPECTS: [&str; 7] = [
    "files", "packages", "passwd", "group", "fstab", "grub", "links",
];

/// Not compared: "path\tpackage" for every path a package's dpkg list names.
const OWNERS: &str = "owners";

/// The compared facts of one tree: aspect -> its items.
type Facts = BTreeMap<&'static str, BTreeSet<String>>;

/// Paths left out of the file list: logs, caches, machine-id, and what differs
/// between any two builds (apt's lists, backups dpkg keeps, byte-compiled files).
fn ignored_path(p: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "var/log/",
        "var/cache/",
        "var/lib/apt/lists/",
        "tmp/",
        "var/tmp/",
        "root/.cache/",
        "run/",
        "var/lib/dpkg/info/",
    ];
    PREFIXES.iter().any(|x| p.starts_with(x))
        || matches!(
            p,
            "etc/machine-id"
                | "var/lib/dbus/machine-id"
                | "var/lib/systemd/random-seed"
                | "etc/ld.so.cache"
        )
        || p.contains("/__pycache__/")
        || p.ends_with("/__pycache__")
        || p.ends_with(".pyc")
        || p.ends_with("-old")
}

/// Reads a tar (as both tools write it) into the compared facts.
fn facts_of(tar_path: &Path) -> Result<Facts, Failed> {
    let file = fs::File::open(tar_path).map_err(|e| format!("{}: {e}", tar_path.display()))?;
    let mut ar = tar::Archive::new(file);
    let mut facts: Facts = ASPECTS
        .iter()
        .chain([&OWNERS])
        .map(|a| (*a, BTreeSet::new()))
        .collect();
    let mut status = String::new();
    let mut add = |a: &'static str, v: String| {
        facts.get_mut(a).unwrap().insert(v);
    };
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let p = raw
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if p.is_empty() || p == "." {
            continue;
        }
        let kind = entry.header().entry_type();
        let mut text = || -> String {
            let mut s = String::new();
            let _ = entry.read_to_string(&mut s);
            s
        };
        let lines = |s: String| -> Vec<String> {
            s.lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        match p.as_str() {
            "etc/passwd" => lines(text()).into_iter().for_each(|l| add("passwd", l)),
            "etc/group" => lines(text()).into_iter().for_each(|l| add("group", l)),
            "etc/fstab" => lines(text())
                .into_iter()
                .for_each(|l| add("fstab", l.split_whitespace().collect::<Vec<_>>().join(" "))),
            "etc/default/grub" => lines(text()).into_iter().for_each(|l| add("grub", l)),
            "var/lib/dpkg/status" => status = text(),
            _ => {}
        }
        // Which package owns which path, to fold the files of a package that
        // only one side has into that package's difference.
        if let Some(pkg) = p
            .strip_prefix("var/lib/dpkg/info/")
            .and_then(|f| f.strip_suffix(".list"))
        {
            let pkg = pkg.split(':').next().unwrap_or(pkg).to_string();
            for l in text().lines() {
                let path = l.trim_start_matches('/');
                if !path.is_empty() && path != "." {
                    add(OWNERS, format!("{path}\t{pkg}"));
                }
            }
        }
        let is_unit_dir = p.starts_with("etc/systemd/system/")
            || p.starts_with("lib/systemd/system/")
            || p.starts_with("usr/lib/systemd/system/");
        if kind.is_symlink() && is_unit_dir && p.contains(".wants/")
            || kind.is_symlink() && p.starts_with("etc/systemd/system/")
        {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            add("links", format!("{p} -> {target}"));
        }
        if !ignored_path(&p) {
            add("files", p);
        }
    }
    for stanza in status.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if field("Status:").is_some_and(|s| s.ends_with(" installed"))
            && let (Some(n), Some(v)) = (field("Package:"), field("Version:"))
        {
            facts
                .get_mut("packages")
                .unwrap()
                .insert(format!("{n} {v}"));
        }
    }
    Ok(facts)
}

/// One line of the allowlist: set (or `*`), aspect, `-item` (only DIB has it)
/// or `+item` (only we have it) with `*` matching any text, and the reason.
struct Allowed {
    set: String,
    aspect: String,
    pattern: regex::Regex,
    shown: String,
    reason: String,
}

fn allowlist() -> Result<Vec<Allowed>, Failed> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential/allowlist");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected `SET ASPECT ±ITEM | REASON`",
                path.display(),
                n + 1
            )
        };
        let (what, reason) = line.split_once(" | ").ok_or_else(bad)?;
        let mut f = what.split_whitespace();
        let (Some(set), Some(aspect)) = (f.next(), f.next()) else {
            return Err(bad().into());
        };
        let item = f.collect::<Vec<_>>().join(" ");
        if !ASPECTS.contains(&aspect) || !(item.starts_with('-') || item.starts_with('+')) {
            return Err(bad().into());
        }
        let re = glob_regex(&item);
        out.push(Allowed {
            set: set.into(),
            aspect: aspect.into(),
            pattern: regex::Regex::new(&format!("^{re}$")).map_err(|e| e.to_string())?,
            shown: item,
            reason: reason.trim().into(),
        });
    }
    Ok(out)
}

/// The regex of an allowlist item: `*` is any text, `{a,b}` either of a and b.
fn glob_regex(item: &str) -> String {
    let mut re = String::new();
    let mut depth = 0;
    for c in item.chars() {
        match c {
            '*' => re.push_str(".*"),
            '{' => {
                depth += 1;
                re.push_str("(?:");
            }
            '}' if depth > 0 => {
                depth -= 1;
                re.push(')');
            }
            ',' if depth > 0 => re.push('|'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re
}

/// Differences between DIB's facts and ours: (aspect, `-item` or `+item`),
/// and how many file differences were folded into a package difference (the
/// files of a package that only that side has).
fn differences(dib: &Facts, ours: &Facts) -> (Vec<(&'static str, String)>, usize) {
    let mut out = Vec::new();
    for a in ASPECTS {
        let (d, o) = (&dib[a], &ours[a]);
        out.extend(d.difference(o).map(|x| (a, format!("-{x}"))));
        out.extend(o.difference(d).map(|x| (a, format!("+{x}"))));
    }
    let only = |side: &Facts, other: &Facts| -> BTreeSet<String> {
        let names = |f: &Facts| -> BTreeSet<String> {
            f["packages"]
                .iter()
                .filter_map(|p| p.split(' ').next())
                .map(String::from)
                .collect()
        };
        names(side).difference(&names(other)).cloned().collect()
    };
    let owner = |f: &Facts| -> BTreeMap<String, String> {
        f[OWNERS]
            .iter()
            .filter_map(|l| l.split_once('\t'))
            .map(|(p, k)| (p.to_string(), k.to_string()))
            .collect()
    };
    let (dib_only, ours_only) = (only(dib, ours), only(ours, dib));
    let (dib_owner, ours_owner) = (owner(dib), owner(ours));
    let before = out.len();
    out.retain(|(a, item)| {
        if *a != "files" {
            return true;
        }
        let (path, owners, only) = match item.split_at(1) {
            ("-", p) => (p, &dib_owner, &dib_only),
            (_, p) => (p, &ours_owner, &ours_only),
        };
        // dpkg's lists name /lib, /bin and /sbin paths that merged-/usr
        // trees hold under usr/.
        let owned = |p: &str| owners.get(p).is_some_and(|pkg| only.contains(pkg));
        !(owned(path) || path.strip_prefix("usr/").is_some_and(owned))
    });
    let folded = before - out.len();
    (out, folded)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where DIB's own caches live between runs (its bootstrap, its git clones).
fn dib_cache() -> PathBuf {
    common::test_cache().join("dib-reference")
}

/// A file put on the host for one DIB run and removed when dropped (only
/// when this put it there).
struct HostFile {
    path: Option<PathBuf>,
}

impl HostFile {
    fn install(from: &Path, to: &Path, mode: u32) -> Result<Self, Failed> {
        use std::os::unix::fs::PermissionsExt;
        if to.exists() {
            return Ok(HostFile { path: None });
        }
        fs::copy(from, to).map_err(|e| format!("{} to {}: {e}", from.display(), to.display()))?;
        let guard = HostFile {
            path: Some(to.to_path_buf()),
        };
        fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
        Ok(guard)
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = fs::remove_file(p);
        }
    }
}

/// DIB's stand-in for kpartx on this kernel (no device-mapper), as scripts/bench uses.
const KPARTX_SHIM: &str = "/work/shared/tools/kpartx-shim";

/// The kpartx/dmsetup stand-ins DIB needs on this kernel, installed for one
/// DIB run and removed when dropped (only what this installed).
struct KpartxShim {
    installed: bool,
}

impl KpartxShim {
    fn install() -> Result<Self, Failed> {
        if Path::new("/usr/local/sbin/kpartx").exists() {
            return Ok(KpartxShim { installed: false });
        }
        let shim = KPARTX_SHIM;
        let mut c = Command::new("install");
        c.args(["-m", "0755"])
            .arg(shim)
            .arg("/usr/local/sbin/kpartx");
        common::run_ok(c)?;
        let guard = KpartxShim { installed: true };
        fs::write("/usr/local/sbin/dmsetup", "#!/bin/sh\nexit 0\n").map_err(|e| e.to_string())?;
        let mut c = Command::new("chmod");
        c.args(["0755", "/usr/local/sbin/dmsetup"]);
        common::run_ok(c)?;
        Ok(guard)
    }
}

impl Drop for KpartxShim {
    fn drop(&mut self) {
        if self.installed {
            let _ = fs::remove_file("/usr/local/sbin/kpartx");
            let _ = fs::remove_file("/usr/local/sbin/dmsetup");
        }
    }
}

/// Runs a build, keeping its log; returns the seconds taken.
fn build(mut c: Command, log: &Path, what: &str) -> Result<f64, Failed> {
    let t = Instant::now();
    let out = fs::File::create(log).map_err(|e| e.to_string())?;
    c.stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out);
    let status = c.status().map_err(|e| format!("running {what}: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        return Err(format!(
            "{what} failed ({status}) after {secs:.0} s; log {}:\n{}",
            log.display(),
            common::tail(&text, 40)
        )
        .into());
    }
    Ok(secs)
}

/// Builds the set with both tools in `work`; returns their seconds.
fn build_both(set: &Set, work: &Path) -> Result<(f64, f64), Failed> {
    let assets = common::test_cache().join("differential-assets");
    let mut c = Command::new(repo().join("scripts/differential-assets"));
    c.arg(&assets);
    let repolocations: Vec<(String, String)> = common::run_ok(c)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if work.exists() {
        fs::remove_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    }
    fs::create_dir_all(work.join("builds")).map_err(|e| e.to_string())?;
    fs::create_dir_all(dib_cache()).map_err(|e| e.to_string())?;
    let dib_elements = common::upstream::elements_dir()?;
    // Our test elements (host-ca) come first for both tools.
    let test_elements = repo().join("tests/differential/elements");
    let shared = |c: &mut Command| {
        c.envs(set.env.iter().copied())
            .envs(repolocations.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Both keep their bootstrap between runs.
            .env("DIB_DEBOOTSTRAP_CACHE", "1")
            .env("DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE", "1")
            .env("TMPDIR", work)
            .stdin(std::process::Stdio::null());
    };

    // Ours first: for Ubuntu it fetches the keyring DIB then uses.
    // DIB makes its tar from the mounted disk after finalise, with the
    // bootloader's files; for a disk set ours is read back from our disk.
    let mut ours = common::dib_create();
    shared(&mut ours);
    ours.args(["-t", if set.disk { "raw" } else { "tar" }])
        .env(
            "ELEMENTS_PATH",
            format!(
                "{}:{}:{}",
                test_elements.display(),
                repo().join("elements").display(),
                dib_elements.display()
            ),
        )
        .env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_CREATE_BUILD_ROOT", work.join("builds"))
        .envs(set.ours_env.iter().copied())
        .arg("-o")
        .arg(work.join("ours"))
        .args(TEST_ELEMENTS)
        .args(set.elements);
    let ours_secs = build(ours, &work.join("ours.log"), "dib-create")?;
    if set.disk {
        disk_as_tar(&work.join("ours.raw"), &work.join("ours.tar"), work)?;
    }

    let mut dib = Command::new("disk-image-create");
    shared(&mut dib);
    dib.args(["-t", "tar"])
        .env("ELEMENTS_PATH", &test_elements)
        .env("DIB_IMAGE_CACHE", dib_cache())
        .arg("-o")
        .arg(work.join("dib"))
        .args(TEST_ELEMENTS)
        .args(set.elements);
    // DIB needs the Ubuntu archive keyring on the host, where mmdebstrap
    // looks for it; this Debian host has none. Ours fetched it from the
    // mirror and checked its pinned fingerprint (elements/debootstrap); it is
    // put there for DIB's run only. (DIB_APT_KEYRING does not do: DIB then
    // runs apt-key in a chroot that has no gnupg yet.)
    let keyring = if set.ubuntu {
        let ours = common::test_cache().join("debootstrap/keyrings/ubuntu-archive-keyring.gpg");
        Some(HostFile::install(
            &ours,
            Path::new("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
            0o644,
        )?)
    } else {
        None
    };
    let shim = if set.disk {
        Some(KpartxShim::install()?)
    } else {
        None
    };
    let dib_secs = build(dib, &work.join("dib.log"), "disk-image-create");
    drop(shim);
    drop(keyring);
    let dib_secs = dib_secs?;

    common::assert_clean(work)?;
    Ok((dib_secs, ours_secs))
}

/// The tree of a disk image as a tar, read back with our extract-image (the
/// root filesystem with /boot and /boot/efi, numeric owners).
fn disk_as_tar(raw: &Path, tar: &Path, work: &Path) -> Result<(), Failed> {
    let tree = work.join("disk-tree");
    let cache = work.join("disk-tree-cache");
    fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let name = "ours.raw";
    let mut c = Command::new(repo().join("elements/sysprep/bin/extract-image"));
    c.args([name, "ours.raw.tgz"])
        .arg(raw)
        .arg(raw)
        .env("DIB_LOCAL_IMAGE", raw)
        .env("TARGET_ROOT", &tree)
        .env("DIB_IMAGE_CACHE", &cache)
        .env("TMP_BUILD_DIR", work);
    common::run_ok(c)?;
    let mut c = Command::new("tar");
    c.arg("-C")
        .arg(&tree)
        .args(["--numeric-owner", "-cf"])
        .arg(tar)
        .arg(".");
    common::run_ok(c)?;
    for d in [&tree, &cache] {
        fs::remove_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let _ = fs::remove_file(raw);
    Ok(())
}

fn run_set(set: &Set) -> Result<(), Failed> {
    let allow = allowlist()?;
    // Outputs and logs stay in /var/tmp for a closer look (the tars only
    // after a failure); the next run of the same set replaces them.
    // DIB_CREATE_DIFFERENTIAL_REUSE=1 compares the tars already there again
    // instead (after editing the allowlist).
    let work = PathBuf::from("/var/tmp/dib-create-differential").join(set.name);
    let reuse = std::env::var("DIB_CREATE_DIFFERENTIAL_REUSE").is_ok_and(|v| v == "1")
        && work.join("dib.tar").exists()
        && work.join("ours.tar").exists();
    let (dib_secs, ours_secs) = if reuse {
        println!(
            "{}: comparing the outputs in {} again",
            set.name,
            work.display()
        );
        (0.0, 0.0)
    } else {
        build_both(set, &work)?
    };
    let (found, folded) = differences(
        &facts_of(&work.join("dib.tar"))?,
        &facts_of(&work.join("ours.tar"))?,
    );
    let mut allowed: BTreeMap<String, usize> = BTreeMap::new();
    let mut left = Vec::new();
    for (aspect, item) in &found {
        let hit = allow.iter().find(|a| {
            (a.set == "*" || a.set == set.name) && a.aspect == *aspect && a.pattern.is_match(item)
        });
        match hit {
            Some(a) => {
                *allowed
                    .entry(format!("{} {} ({})", a.aspect, a.shown, a.reason))
                    .or_default() += 1
            }
            None => left.push(format!("{aspect} {item}")),
        }
    }
    println!();
    println!("differential {}: {}", set.name, set.elements.join(" "));
    println!(
        "  builds: disk-image-create {dib_secs:.0} s, dib-create {ours_secs:.0} s (logs in {})",
        work.display()
    );
    println!(
        "  {:<26} {:>6} {:>8} {:>5}",
        "set", "found", "allowed", "left"
    );
    println!(
        "  {:<26} {:>6} {:>8} {:>5}",
        set.name,
        found.len(),
        found.len() - left.len(),
        left.len()
    );
    println!(
        "  ({folded} further file differences are the files of packages only one side has; they count with those packages)"
    );
    for (why, n) in &allowed {
        println!("  allowed {n:>4}  {why}");
    }
    for l in &left {
        println!("  LEFT   {l}");
    }
    if left.is_empty() {
        // The two tars are 1-2 GB; after a failure they stay for
        // DIB_CREATE_DIFFERENTIAL_REUSE=1.
        for t in ["dib.tar", "ours.tar"] {
            let _ = fs::remove_file(work.join(t));
        }
        Ok(())
    } else {
        Err(format!(
            "{}: {} differences from DIB are not in tests/differential/allowlist (listed above)",
            set.name,
            left.len()
        )
        .into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let dib_missing = common::upstream::unavailable();
    let mut trials = Vec::new();
    for set in sets() {
        let mut needs = vec![
            Need::Root,
            Need::LoopDevices,
            Need::Network("deb.debian.org:80"),
            Need::Network("pypi.org:443"),
            Need::Installed("disk-image-create", "pip install diskimage-builder"),
            Need::Tool("git"),
        ];
        if set.disk {
            needs.push(Need::Network("archive.ubuntu.com:80"));
            needs.push(Need::File(KPARTX_SHIM));
        }
        let name = set.name;
        let ci = set.ci;
        let missing = dib_missing.clone();
        let t = common::trial(name, &needs, move || match missing {
            Some(why) => Err(format!("diskimage-builder is not usable: {why}").into()),
            None => run_set(&set),
        });
        // The long sets are a tier of their own (scripts/test-long), not a skip.
        trials.push(if ci { t } else { t.with_ignored_flag(true) });
    }
    libtest_mimic::run(&args, trials).exit();
}
