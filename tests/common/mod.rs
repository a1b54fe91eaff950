//! Shared support for the privileged test tiers: precondition checks that turn
//! into visible SKIP lines (or failures under DIB_CREATE_REQUIRE_ALL=1), and
//! helpers to run the dib-create binary.
#![allow(dead_code)]

pub mod chromium;
pub mod tardiff;
pub mod upstream;

use libtest_mimic::{Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A block-device config: a volume group of two ext4 volumes on one GPT
/// partition, for the fake OS (no lvm2 in the image, no bootloader).
pub const LVM_EXT4: &str = "\
- local_loop:
    name: image0
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: root
        type: '8E00'
        size: 100%
- lvm:
    name: lvm
    base: [root]
    pvs:
      - name: pv
        base: root
    vgs:
      - name: vg
        base: [pv]
    lvs:
      - name: lv_root
        base: vg
        extents: 70%VG
      - name: lv_srv
        base: vg
        extents: 20%VG
- mkfs:
    name: fs_root
    base: lv_root
    type: ext4
    mount:
      mount_point: /
- mkfs:
    name: fs_srv
    base: lv_srv
    type: ext4
    mount:
      mount_point: /srv
";

/// What a build of the fake OS onto an MBR disk needs (no network).
pub const FAKE_OS_DISK: [Need; 4] = [
    Need::Root,
    Need::LoopDevices,
    Need::Tool("mke2fs"),
    Need::Tool("sfdisk"),
];

/// Something a test needs from the host.
#[derive(Clone, Debug)]
pub enum Need {
    Root,
    LoopDevices,
    Tool(&'static str),
    /// A tool on PATH, and what installs it (named in the SKIP line).
    Installed(&'static str, &'static str),
    /// A host:port that must answer (the package mirror).
    Network(&'static str),
    /// Running binaries of this dpkg architecture through qemu-user.
    ForeignArch(&'static str),
    /// A file that must exist (firmware images and the like).
    File(&'static str),
    /// The host's machine architecture (`uname -m`).
    HostArch(&'static str),
    /// diskimage-builder itself, importable by python3 (its elements too).
    Upstream,
}

impl Need {
    /// None when satisfied, else the reason.
    fn missing(&self) -> Option<String> {
        match self {
            Need::Root => (!nix::unistd::geteuid().is_root()).then(|| "needs root".into()),
            Need::LoopDevices => (!Path::new("/dev/loop-control").exists())
                .then(|| "needs loop devices (/dev/loop-control)".into()),
            Need::Tool(t) => (!on_path(t)).then(|| format!("needs `{t}` on PATH")),
            Need::Installed(t, by) => {
                (!on_path(t)).then(|| format!("{t} is not installed ({by} installs it)"))
            }
            Need::Network(hp) => (!reachable(hp)).then(|| format!("needs network access to {hp}")),
            Need::File(f) => (!Path::new(f).exists()).then(|| format!("needs {f}")),
            Need::HostArch(a) => (std::env::consts::ARCH != *a)
                .then(|| format!("needs an {a} host (this is {})", std::env::consts::ARCH)),
            Need::Upstream => upstream::unavailable(),
            Need::ForeignArch(a) => {
                let q = dib::arch::Arch::parse(a)
                    .map_or("qemu".into(), |a| format!("qemu-{}-static", a.qemu_user));
                (!on_path(&q)).then(|| format!("needs {q} (qemu-user-static) to run {a} binaries"))
            }
        }
    }
}

fn on_path(tool: &str) -> bool {
    dib::host::tools::on_path(tool)
}

fn reachable(host_port: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = host_port.to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok()
    })
}

/// True when every skip must fail instead (set by .ci/run).
pub fn require_all() -> bool {
    std::env::var("DIB_CREATE_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// A trial that runs `f` when `needs` are met. Otherwise it prints a SKIP line
/// and is reported as ignored, or fails when every test is required.
pub fn trial(
    name: &str,
    needs: &[Need],
    f: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    let reasons: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if reasons.is_empty() {
        return Trial::test(name, f);
    }
    let why = reasons.join("; ");
    if require_all() {
        let msg = format!("precondition missing (DIB_CREATE_REQUIRE_ALL=1): {why}");
        return Trial::test(name, move || Err(msg.into()));
    }
    println!("SKIP {name}: {why}");
    Trial::test(name, || Ok(())).with_ignored_flag(true)
}

/// The dib-create binary under test.
pub fn dib_create() -> Command {
    // DIB_CREATE_TEST_BINARY runs the tests against another build (an
    // older one, to count what it got wrong).
    let bin = std::env::var_os("DIB_CREATE_TEST_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_dib-create").into());
    let mut c = Command::new(bin);
    // The phase cache stays on, as users have it; a test that needs every
    // phase to run turns it off itself and says why.
    c.env("DIB_CREATE_DATA_DIR", env!("CARGO_MANIFEST_DIR"))
        .env_remove("DIB_CREATE_PHASE_CACHE");
    c
}

/// The shared test cache (packages, bootstrapped roots), kept between runs.
pub fn test_cache() -> PathBuf {
    std::env::var_os("DIB_CREATE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("dib-create-test-cache"))
}

/// Runs a command, returning stdout; fails with its output otherwise.
pub fn run_ok(mut c: Command) -> Result<String, Failed> {
    let out = c.output().map_err(|e| format!("running {c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{c:?} failed ({}):\n--- stdout\n{}\n--- stderr (tail)\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr), 60)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The SHA256 (hex) of a file, by sha256sum.
pub fn sha256(p: &Path) -> Result<String, Failed> {
    let mut c = Command::new("sha256sum");
    c.arg(p);
    Ok(run_ok(c)?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Mount targets under `dir` in the host namespace (must be none after a build).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| t.starts_with(&d))
        .map(String::from)
        .collect()
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_under(dir: &Path) -> Vec<String> {
    let out = Command::new("losetup").arg("-a").output();
    let d = dir.to_string_lossy().to_string();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(&d))
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// Asserts that nothing of a build under `dir` is mounted or attached.
pub fn assert_clean(dir: &Path) -> Result<(), Failed> {
    let m = mounts_under(dir);
    let l = loops_under(dir);
    if m.is_empty() && l.is_empty() {
        Ok(())
    } else {
        Err(format!("left behind: mounts {m:?}, loops {l:?}").into())
    }
}

/// A scratch directory under /var/tmp for one test build: element trees
/// written by the test, the build root, and the outputs.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("elements")).expect("elements dir");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn builds(&self) -> PathBuf {
        self.path().join("builds")
    }

    /// An element `name` with one hook `body` at `phase/50-hook`.
    pub fn element(&self, name: &str, phase: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let d = self.path().join("elements").join(name).join(phase);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("50-hook");
        std::fs::write(&f, format!("#!/bin/bash\nset -eu\n{body}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// dib-create with the scratch elements and tests/elements on
    /// ELEMENTS_PATH, builds under the scratch dir, and no private mount
    /// namespace (so the tests prove the journal alone takes mounts down).
    pub fn command(&self) -> Command {
        let mut c = dib_create();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/elements");
        c.env(
            "ELEMENTS_PATH",
            format!(
                "{}:{}",
                self.path().join("elements").display(),
                shipped.display()
            ),
        )
        .env("DIB_CREATE_BUILD_ROOT", self.builds())
        // A failed build keeps its log in $TMPDIR for the user; here that is
        // the scratch directory, so the failures tests cause go with it.
        .env("TMPDIR", self.path())
        .env("DIB_CREATE_NO_NAMESPACE", "1")
        .env("DIB_IMAGE_CACHE", test_cache())
        // Builds share one bootstrapped root (tests/rootfs.rs bootstraps afresh).
        .env("DIB_DEBOOTSTRAP_CACHE", "1")
        .env("DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE", "1");
        c
    }

    /// No mounts, no loop devices, no build directories, and none of `outputs`.
    pub fn assert_nothing_left(&self, outputs: &[PathBuf]) -> Result<(), Failed> {
        assert_clean(self.path())?;
        for o in outputs {
            if o.exists() {
                return Err(format!("{} exists after a failed build", o.display()).into());
            }
        }
        // The build root keeps its lock files (`.output-locks`); any other
        // entry is a build directory left behind.
        let builds: Vec<_> = std::fs::read_dir(self.builds())
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        if !builds.is_empty() {
            return Err(format!("build directories left: {builds:?}").into());
        }
        Ok(())
    }
}

/// Runs `f` on a read-only loop device over `size` bytes of `file` at
/// `offset`, and detaches it whatever happens.
pub fn with_loop_at<T>(
    file: &Path,
    offset: u64,
    size: u64,
    f: impl FnOnce(&str) -> Result<T, Failed>,
) -> Result<T, Failed> {
    let mut c = Command::new("losetup");
    c.args(["--find", "--show", "--read-only"])
        .arg(format!("--offset={offset}"))
        .arg(format!("--sizelimit={size}"))
        .arg(file);
    let dev = run_ok(c)?.trim().to_string();
    let result = f(&dev);
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    result
}

/// Every file under the host's /etc/lvm with its contents' hash. An error
/// when there is none to compare (no lvm2 on the host, or find failed),
/// so that an unchanged /etc/lvm is never an empty one.
pub fn etc_lvm_state() -> Result<String, Failed> {
    let state = run_ok({
        let mut c = Command::new("sh");
        c.args(["-c", "find /etc/lvm -type f -exec sha256sum {} + | sort"]);
        c
    })?;
    if state.trim().is_empty() {
        return Err("/etc/lvm holds no file to compare: is lvm2 installed?".into());
    }
    Ok(state)
}

/// Nothing of the build's own may be in the archive.
pub fn no_build_leftovers(tar: &Path) -> Result<(), Failed> {
    let listing = run_ok({
        let mut c = Command::new("tar");
        c.arg("-tf").arg(tar);
        c
    })?;
    let ours = [
        "./tmp/in_target.d",
        "./usr/sbin/policy-rc.d",
        "./etc/resolv.conf.ORIG",
        "./usr/local/bin/install-packages",
        "./usr/local/bin/pkg-map",
        "./usr/local/bin/dib-run-parts",
        "./usr/local/bin/dib-python",
    ];
    let found: Vec<&str> = listing
        .lines()
        .filter(|l| ours.iter().any(|o| l.starts_with(o)) || l.contains("dib-create"))
        .collect();
    if !found.is_empty() {
        return Err(format!("build leftovers in the image: {found:?}").into());
    }
    for pseudo in ["./proc/", "./sys/", "./dev/"] {
        if listing
            .lines()
            .any(|l| l.starts_with(pseudo) && l.len() > pseudo.len())
        {
            return Err(format!("contents of {pseudo} were archived").into());
        }
    }
    Ok(())
}
