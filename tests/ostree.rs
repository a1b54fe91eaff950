//! The ostree output and the ostree-deploy element for real, in one chain:
//! 1. `debian-minimal vm devuser ostree-deploy` writes tar, qcow2 and the
//!    ostree repository. The commit's checkout must be the tar's tree with
//!    exactly the documented layout moves (every file's type, mode, owner
//!    and content compared).
//! 2. The same elements and disk type with one package more, into the
//!    same repository and ref, signed: few new objects, the first commit as
//!    parent, a signature that verifies, a static delta from the parent and
//!    the summary.
//! 3. The qcow2 boots (the deployment, `/usr` read-only, `/var` filled from
//!    the factory copy), and `ostree admin upgrade` in the guest fetches
//!    the second commit from the repository served on the host's loopback;
//!    the boot menu then lists both deployments.
//!
//! Two builds from one lockfile giving one commit: tests/lockfile.rs.

mod common;

use common::{Need, dib_create, run_ok, trial};
use libtest_mimic::{Arguments, Failed};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

fn main() {
    let args = Arguments::from_args();
    let needs = [
        Need::Root,
        Need::LoopDevices,
        Need::Tool("mmdebstrap"),
        Need::Tool("ostree"),
        Need::Tool("gpg"),
        Need::Tool("python3"),
        Need::Tool("qemu-system-x86_64"),
        Need::Network("deb.debian.org:80"),
    ];
    let tests = vec![
        trial(
            "ostree_commit_deploy_boot_and_upgrade",
            &needs,
            commit_deploy_boot_and_upgrade,
        ),
        // scripts/test-long, for CI's time: the same deployment on the UEFI
        // layout (GRUB's EFI binary and the ESP copied into the sysroot).
        trial("ostree_deploy_uefi_boots", &needs, deploy_uefi_boots).with_ignored_flag(true),
    ];
    libtest_mimic::run(&args, tests).exit();
}

const REF: &str = "debian/bookworm/amd64/app";
const ELEMENTS: &[&str] = &["debian-minimal", "vm", "devuser", "ostree-deploy"];
const USER: &str = "devuser";
const PASSWORD: &str = "dib-create-test";

fn build(scratch: &Path, port: u16) -> Command {
    let mut c = dib_create();
    c.env("DIB_RELEASE", "bookworm")
        .env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_CREATE_BUILD_ROOT", scratch.join("builds"))
        .env("TMPDIR", scratch)
        .env("DIB_DEV_USER_PASSWORD", PASSWORD)
        .env("DIB_DEV_USER_PWDLESS_SUDO", "1")
        .env(
            "DIB_OSTREE_REMOTE_URL",
            format!("http://{}:{port}/", dib::boot::HOST_FROM_GUEST),
        )
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(scratch);
    c
}

fn commit_deploy_boot_and_upgrade() -> Result<(), Failed> {
    let scratch = tempfile::Builder::new()
        .prefix("dib-create-ostree-")
        .tempdir_in("/var/tmp")?;
    let s = scratch.path();
    let port = free_port()?;

    // 1. tar, qcow2 and ostree from one build; absolute -o, the default repository.
    let out = s.join("app");
    let t = Instant::now();
    let mut c = build(s, port);
    c.args(["-t", "tar,qcow2,ostree", "-o"])
        .arg(&out)
        .args(ELEMENTS);
    run_ok(c)?;
    println!(
        "tar,qcow2,ostree build with ostree-deploy: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let repo = s.join("app.ostree");
    let first = ostree(&repo, &["rev-parse", REF])?;
    let manifest = std::fs::read_to_string(s.join("app.manifest.json"))?;
    if !manifest.contains(&first) || !manifest.contains(REF) {
        return Err(
            format!("the manifest does not name commit {first} on {REF}:\n{manifest}").into(),
        );
    }
    let checkout = s.join("checkout");
    ostree(&repo, &["checkout", REF, checkout.to_str().unwrap()])?;
    compare(&out.with_extension("tar"), &checkout)?;
    std::fs::remove_dir_all(&checkout)?;
    let version = ostree(&repo, &["show", "--print-metadata-key=version", REF])?;
    let elements = ostree(
        &repo,
        &["show", "--print-metadata-key=dib-create.elements", REF],
    )?;
    if !elements.contains("ostree-deploy") || version.len() < 10 {
        return Err(format!("commit metadata: version {version}, elements {elements}").into());
    }
    let objects = count_objects(&repo);
    println!(
        "first commit {first}: {objects} objects, repository {} MiB, qcow2 {} MiB",
        du_mib(&repo)?,
        du_mib(&out.with_extension("qcow2"))?
    );

    // 2. One package more, into the same repository and ref, signed; a
    //    relative -o and a relative --ostree-repo.
    let gpg = s.join("gnupg");
    let key = make_key(&gpg)?;
    let t = Instant::now();
    let mut c = build(s, port);
    c.args(["-t", "qcow2,ostree", "-o", "app-next", "-p", "tree"])
        .args(["--ostree-repo", "app.ostree", "--ostree-ref", REF])
        .args(["--ostree-gpg-sign", &key, "--ostree-gpg-homedir"])
        .arg(&gpg)
        .args(ELEMENTS);
    let log = run_ok(c);
    // The agent gpgme started for the signing must be gone with the build.
    let agent = Command::new("pgrep")
        .args(["-f", &format!("gpg-agent.*{}", gpg.display())])
        .output()?;
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&gpg)
        .args(["--kill", "all"])
        .status();
    log?;
    if agent.status.success() {
        return Err(format!(
            "the build left a gpg-agent running: {}",
            String::from_utf8_lossy(&agent.stdout)
        )
        .into());
    }
    println!("update build: {:.0} s", t.elapsed().as_secs_f64());
    let second = ostree(&repo, &["rev-parse", REF])?;
    let parent = ostree(&repo, &["rev-parse", &format!("{REF}^")])?;
    if parent != first || second == first {
        return Err(format!("second commit {second} has parent {parent}, not {first}").into());
    }
    let added = count_objects(&repo) - objects;
    println!("second commit {second}: {added} new objects");
    if added == 0 || added > 400 {
        return Err(format!("one more package added {added} objects").into());
    }
    let listing = ostree(&repo, &["ls", REF, "/usr/bin/tree"])?;
    if !listing.contains("/usr/bin/tree") {
        return Err("the second commit lacks /usr/bin/tree".into());
    }
    verify_signature(&repo, &gpg, &key, s)?;
    let deltas = ostree(&repo, &["static-delta", "list"])?;
    if !deltas.contains(&format!("{first}-{second}")) || !repo.join("summary").is_file() {
        return Err(format!("no static delta {first}-{second} or no summary: {deltas}").into());
    }

    // 3. Boot the first image; upgrade it from the repository on loopback.
    let _server = Server::start(&repo, port)?;
    let v = boot_and_upgrade(&out.with_extension("qcow2"), s)?;
    let status_before = output_of(&v, 0)?;
    let status_after = output_of(&v, 5)?;
    let checks = [
        (
            status_before.contains(&first),
            "the booted deployment is the first commit",
        ),
        (
            status_before.contains(&format!("origin:{REF}")),
            "the deployment follows origin:REF",
        ),
        (
            output_of(&v, 1)?.split(',').next() == Some("ro"),
            "/usr is read-only",
        ),
        (
            output_of(&v, 2)?.contains("var-restored"),
            "/var/lib/dpkg came back from the factory copy",
        ),
        (
            status_after.contains(&second) && status_after.contains("pending"),
            "the upgrade is the second commit, pending",
        ),
        (
            output_of(&v, 6)?.trim() == "2",
            "the boot menu lists both deployments",
        ),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| *what)
        .collect();
    if !failed.is_empty() {
        return Err(format!("in the booted image, not true: {failed:?}\n{v:#}").into());
    }
    println!(
        "booted the deployment (login after {} s) and upgraded it to {second}",
        v["login_seconds"]
    );
    if std::fs::read_dir(s)?.any(|e| {
        e.is_ok_and(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("dib-create-partial")
        })
    }) {
        return Err("a partial output was left".into());
    }
    common::assert_clean(s)
}

fn deploy_uefi_boots() -> Result<(), Failed> {
    let scratch = tempfile::Builder::new()
        .prefix("dib-create-ostree-efi-")
        .tempdir_in("/var/tmp")?;
    let s = scratch.path();
    let t = Instant::now();
    let mut c = build(s, free_port()?);
    c.env_remove("DIB_OSTREE_REMOTE_URL")
        .args(["-t", "qcow2", "-o", "efi"])
        .args(ELEMENTS)
        .arg("block-device-efi");
    run_ok(c)?;
    println!(
        "UEFI ostree-deploy build: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let commit = ostree(
        &s.join("efi.ostree"),
        &["rev-parse", "debian/bookworm/amd64/efi"],
    )?;
    let json = s.join("boot.json");
    let mut c = Command::new(env!("CARGO_BIN_EXE_dib-boot-test"));
    c.arg(s.join("efi.qcow2"))
        .args(["--uefi", "--timeout", "600"])
        .args(["--login", &format!("{USER}:{PASSWORD}")])
        .arg("--json")
        .arg(&json)
        .args(["--run", "sudo ostree admin status"])
        .args(["--run", "findmnt -no OPTIONS /usr"])
        .args(["--run", "findmnt -no FSTYPE /boot/efi"]);
    let out = c.output()?;
    if !out.status.success() {
        return Err(format!(
            "boot-test failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let ok = output_of(&v, 0)?.contains(&commit)
        && output_of(&v, 1)?.starts_with("ro")
        && output_of(&v, 2)?.trim() == "vfat";
    if !ok {
        return Err(format!("the UEFI deployment: {v:#}").into());
    }
    println!(
        "UEFI deployment booted, login after {} s",
        v["login_seconds"]
    );
    common::assert_clean(s)
}

/// A port on the loopback that nothing listens on now.
fn free_port() -> Result<u16, Failed> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Python's static file server over a directory, on the loopback, stopped
/// when dropped.
struct Server(Child);

impl Server {
    fn start(dir: &Path, port: u16) -> Result<Server, Failed> {
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let server = Server(child);
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Err("the repository's HTTP server did not start".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guest's address on qemu's user-mode network, set by systemd-networkd.
const NETWORK: &str = "sudo sh -c 'printf \"[Match]\\nName=en* eth*\\n[Network]\\nAddress=10.0.2.15/24\\n\" > /etc/systemd/network/50-test.network && systemctl start systemd-networkd && for i in $(seq 30); do networkctl status 2>/dev/null | grep -q 10.0.2.15 && exit 0; sleep 1; done; exit 1'";

fn boot_and_upgrade(image: &Path, s: &Path) -> Result<serde_json::Value, Failed> {
    let json = s.join("boot.json");
    let cmds = [
        "sudo ostree admin status",
        "findmnt -no OPTIONS /usr",
        "test -s /var/lib/dpkg/status && echo var-restored",
        NETWORK,
        "sudo ostree admin upgrade",
        "sudo ostree admin status",
        "grep -c '^LABEL ' /boot/syslinux/syslinux.cfg",
    ];
    let mut c = Command::new(env!("CARGO_BIN_EXE_dib-boot-test"));
    c.arg(image)
        .args(["--net", "--timeout", "600"])
        .args(["--login", &format!("{USER}:{PASSWORD}")])
        .arg("--json")
        .arg(&json)
        .arg("--log")
        .arg(s.join("boot.log"));
    for cmd in cmds {
        c.args(["--run", cmd]);
    }
    let out = c.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("boot-test failed ({}):\n{stdout}", out.status).into());
    }
    Ok(serde_json::from_str(&std::fs::read_to_string(&json)?)?)
}

/// The output of the `n`th command run in the guest.
fn output_of(v: &serde_json::Value, n: usize) -> Result<&str, Failed> {
    v["commands"][n]["output"]
        .as_str()
        .ok_or_else(|| format!("no output of command {n} in the boot-test result").into())
}

/// `ostree --repo=REPO ARGS...`, stdout trimmed.
fn ostree(repo: &Path, args: &[&str]) -> Result<String, Failed> {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo.display())).args(args);
    Ok(run_ok(c)?.trim().to_string())
}

fn count_objects(repo: &Path) -> u64 {
    walk(&repo.join("objects"))
        .iter()
        .filter(|p| p.is_file())
        .count() as u64
}

fn du_mib(p: &Path) -> Result<String, Failed> {
    let mut c = Command::new("du");
    c.arg("-sm").arg(p);
    Ok(run_ok(c)?
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string())
}

/// A signing key without passphrase in a new GnuPG home; its fingerprint.
fn make_key(home: &Path) -> Result<String, Failed> {
    std::fs::create_dir_all(home)?;
    std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut c = Command::new("gpg");
    c.arg("--homedir").arg(home).args([
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        "dib-create test <ostree@example.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    run_ok(c)?;
    let mut c = Command::new("gpg");
    c.arg("--homedir")
        .arg(home)
        .args(["--list-secret-keys", "--with-colons"]);
    let list = run_ok(c)?;
    // Key generation started an agent; the build must find none running.
    let mut c = Command::new("gpgconf");
    c.arg("--homedir").arg(home).args(["--kill", "all"]);
    run_ok(c)?;
    list.lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .ok_or_else(|| "no fingerprint in gpg's listing".into())
}

/// ostree verifies with the public key alone, from a keyring directory.
fn verify_signature(repo: &Path, home: &Path, key: &str, s: &Path) -> Result<(), Failed> {
    let keys = s.join("trusted");
    std::fs::create_dir_all(&keys)?;
    let mut c = Command::new("gpg");
    c.arg("--homedir").arg(home).args(["--export", key]);
    let out = c.output()?;
    std::fs::write(keys.join("test.gpg"), out.stdout)?;
    let shown = ostree(
        repo,
        &["show", REF, &format!("--gpg-homedir={}", keys.display())],
    )?;
    if !shown.contains("Good signature") {
        return Err(format!("the signature does not verify:\n{shown}").into());
    }
    Ok(())
}

/// One entry of a tree: type, mode, owner, and content or link target.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    data: String,
}

/// The tar's entries, by path without `./`.
fn tar_nodes(tar: &Path) -> Result<BTreeMap<String, Node>, Failed> {
    let mut nodes = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(tar)?);
    for e in a.entries()? {
        let mut e = e?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let h = e.header();
        let (mode, uid, gid) = (h.mode()? & 0o7777, h.uid()?, h.gid()?);
        let t = h.entry_type();
        let node = if t.is_dir() {
            Node {
                kind: 'd',
                mode,
                uid,
                gid,
                data: String::new(),
            }
        } else if t.is_symlink() {
            let target = e
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            Node {
                kind: 'l',
                mode: 0o777,
                uid,
                gid,
                data: target,
            }
        } else if t.is_hard_link() {
            let target = e
                .link_name()?
                .map(|l| l.to_string_lossy().trim_start_matches("./").to_string())
                .unwrap_or_default();
            let data = nodes
                .get(&target)
                .map_or(String::new(), |n: &Node| n.data.clone());
            Node {
                kind: 'f',
                mode,
                uid,
                gid,
                data,
            }
        } else {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf)?;
            Node {
                kind: 'f',
                mode,
                uid,
                gid,
                data: hex(&buf),
            }
        };
        nodes.insert(path, node);
    }
    Ok(nodes)
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every path below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        out.push(p.clone());
        if is_dir {
            out.extend(walk(&p));
        }
    }
    out
}

fn checkout_nodes(root: &Path) -> Result<BTreeMap<String, Node>, Failed> {
    let mut nodes = BTreeMap::new();
    for p in walk(root) {
        let m = p.symlink_metadata()?;
        let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
        let (uid, gid) = (u64::from(m.uid()), u64::from(m.gid()));
        let node = if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p)?.to_string_lossy().into_owned();
            Node {
                kind: 'l',
                mode: 0o777,
                uid,
                gid,
                data: t,
            }
        } else if m.is_dir() {
            Node {
                kind: 'd',
                mode: m.mode() & 0o7777,
                uid,
                gid,
                data: String::new(),
            }
        } else {
            Node {
                kind: 'f',
                mode: m.mode() & 0o7777,
                uid,
                gid,
                data: hex(&std::fs::read(&p)?),
            }
        };
        nodes.insert(rel, node);
    }
    Ok(nodes)
}

/// Where the documented layout puts a tar path; None: left out.
fn moved(path: &str) -> Option<String> {
    const INTO_VAR: &[(&str, &str)] = &[
        ("etc", "usr/etc"),
        ("var", "usr/share/factory/var"),
        ("home", "usr/share/factory/var/home"),
        ("root", "usr/share/factory/var/roothome"),
        ("opt", "usr/share/factory/var/opt"),
        ("srv", "usr/share/factory/var/srv"),
        ("mnt", "usr/share/factory/var/mnt"),
        ("usr/local", "usr/share/factory/var/usrlocal"),
    ];
    for (from, to) in INTO_VAR {
        if path == *from {
            return Some(to.to_string());
        }
        if let Some(rest) = path.strip_prefix(&format!("{from}/")) {
            return Some(format!("{to}/{rest}"));
        }
    }
    if let Some(name) = path.strip_prefix("boot/") {
        for (prefix, to) in [
            ("vmlinuz-", "vmlinuz"),
            ("initrd.img-", "initramfs.img"),
            ("config-", "config"),
            ("System.map-", "System.map"),
        ] {
            if let Some(kver) = name.strip_prefix(prefix) {
                return Some(format!("usr/lib/modules/{kver}/{to}"));
            }
        }
        return None;
    }
    let dropped = ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"];
    if dropped.contains(&path) || path.starts_with("tmp/") || path.starts_with("media/") {
        return None;
    }
    Some(path.to_string())
}

/// What the layout adds that the tar has not (or has as another type).
fn added(path: &str) -> bool {
    const LINKS: &[&str] = &[
        "home",
        "root",
        "opt",
        "srv",
        "mnt",
        "media",
        "tmp",
        "usr/local",
        "ostree",
    ];
    LINKS.contains(&path)
        || [
            "var",
            "sysroot",
            "usr/share/factory",
            "usr/lib/tmpfiles.d",
            "usr/lib/tmpfiles.d/00-dib-create-var.conf",
        ]
        .contains(&path)
}

fn compare(tar: &Path, checkout: &Path) -> Result<(), Failed> {
    let want: BTreeMap<String, Node> = tar_nodes(tar)?
        .into_iter()
        .filter_map(|(p, n)| moved(&p).map(|m| (m, n)))
        .collect();
    let got = checkout_nodes(checkout)?;
    let mut problems = Vec::new();
    for (path, w) in &want {
        match got.get(path) {
            Some(g) if g == w => {}
            Some(g) if added(path) => {
                let _ = g;
            }
            Some(g) => problems.push(format!("{path}: tar {w:?}, checkout {g:?}")),
            None => problems.push(format!("{path}: missing from the checkout")),
        }
    }
    for path in got.keys() {
        if !want.contains_key(path) && !added(path) {
            problems.push(format!("{path}: in the checkout, not in the tar's layout"));
        }
    }
    for (link, target) in [
        ("home", "var/home"),
        ("root", "var/roothome"),
        ("opt", "var/opt"),
        ("srv", "var/srv"),
        ("mnt", "var/mnt"),
        ("media", "run/media"),
        ("tmp", "sysroot/tmp"),
        ("usr/local", "../var/usrlocal"),
        ("ostree", "sysroot/ostree"),
    ] {
        match got.get(link) {
            Some(n) if n.kind == 'l' && n.data == target => {}
            other => problems.push(format!("{link}: not a link to {target}: {other:?}")),
        }
    }
    // The tmpfiles entries recreate /var: spot-check the dpkg database.
    let conf = std::fs::read_to_string(checkout.join("usr/lib/tmpfiles.d/00-dib-create-var.conf"))?;
    if !conf.contains("C /var/lib/dpkg - - - - /usr/share/factory/var/lib/dpkg") {
        problems.push(format!(
            "the tmpfiles.d entries do not restore /var/lib/dpkg:\n{conf}"
        ));
    }
    println!("checkout against tar: {} paths compared", want.len());
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(30);
    Err(format!("{n} differences:\n{}", problems.join("\n")).into())
}
