//! Bad input, table-driven: every case goes through `--dry-run` and through a
//! real build of the fake OS. Both must exit 2 with the same message, naming
//! the culprit, and the build must have no side effect: no build directory,
//! no output, no mount, no loop device, no panic.
//!
//! The dry runs need nothing; the real builds need root (they are refused
//! otherwise, which is a different error), so they run where root is.

mod common;

use common::{Need, Scratch, trial};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::Path;
use std::process::Command;

/// One malformed input.
struct Case {
    name: &'static str,
    /// Arguments before the elements (`-n -o <out>` come first).
    args: &'static [&'static str],
    /// Elements (the fake OS and a test element by default).
    elements: &'static [&'static str],
    /// Environment of the call; `{S}` is the scratch directory.
    env: &'static [(&'static str, &'static str)],
    /// Files written below the scratch directory first (`{S}` expanded).
    files: &'static [(&'static str, &'static str)],
    /// What the message must contain.
    says: &'static [&'static str],
}

const FAKE: &[&str] = &["fake-os"];

const fn case(
    name: &'static str,
    args: &'static [&'static str],
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        args,
        elements: FAKE,
        env: &[],
        files: &[],
        says,
    }
}

const fn env(
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        args: &["-t", "tar"],
        elements: FAKE,
        env,
        files: &[],
        says,
    }
}

/// A block-device config for a raw build.
macro_rules! layout {
    ($name:expr, $yaml:expr, $says:expr $(,)?) => {
        Case {
            name: $name,
            args: &["-t", "raw"],
            elements: FAKE,
            env: &[("DIB_BLOCK_DEVICE_CONFIG", $yaml)],
            files: &[],
            says: $says,
        }
    };
}

/// An element `bad` with these files.
const fn element(
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        args: &["-t", "tar"],
        elements: &["fake-os", "bad"],
        env: &[],
        files,
        says,
    }
}

const CASES: &[Case] = &[
    // ---- the command line ----
    case(
        "arch_unknown",
        &["-a", "vax"],
        &["-a vax", "unknown architecture"],
    ),
    case(
        "image_size_negative",
        &["--image-size=-5", "-t", "raw"],
        &["--image-size -5"],
    ),
    case(
        "image_size_zero",
        &["--image-size", "0", "-t", "raw"],
        &["--image-size 0"],
    ),
    case(
        "image_size_nan",
        &["--image-size", "nan", "-t", "raw"],
        &["--image-size NaN"],
    ),
    case(
        "image_size_inf",
        &["--image-size", "inf", "-t", "raw"],
        &["--image-size inf"],
    ),
    case(
        "image_size_huge",
        &["--image-size", "1e9", "-t", "raw"],
        &["--image-size", "at most"],
    ),
    case(
        "type_unknown",
        &["-t", "qcow3"],
        &["-t qcow3", "unknown output type"],
    ),
    case("type_empty", &["-t", ","], &["no output type"]),
    case(
        "journal_zero",
        &["--mkfs-journal-size", "0", "-t", "raw"],
        &["--mkfs-journal-size 0"],
    ),
    case(
        "online_resize_zero",
        &["--max-online-resize", "0", "-t", "raw"],
        &["--max-online-resize 0"],
    ),
    case(
        "package_option",
        &["-p", "vim,-y", "-t", "tar"],
        &["-p \"-y\"", "not a package name"],
    ),
    case(
        "package_separator",
        &["-p", "vim;reboot", "-t", "tar"],
        &["vim;reboot"],
    ),
    case(
        "docker_target",
        &["-t", "docker", "--docker-target", "Bad/Name"],
        &["--docker-target", "Bad/Name"],
    ),
    case(
        "logfile_missing_directory",
        &["-t", "tar", "--logfile", "{S}/no/such/dir/build.log"],
        &["--logfile", "does not exist"],
    ),
    case(
        "logfile_is_a_directory",
        &["-t", "tar", "--logfile", "{S}"],
        &["--logfile", "directory"],
    ),
    case(
        "lockfile_missing",
        &["-t", "tar", "--lockfile", "{S}/none.lock"],
        &["--lockfile", "none.lock"],
    ),
    Case {
        files: &[("bad.lock", "this is not a lockfile\n")],
        ..case(
            "lockfile_malformed",
            &["-t", "tar", "--lockfile", "{S}/bad.lock"],
            &["bad.lock"],
        )
    },
    Case {
        files: &[(
            "arm.lock",
            "Lockfile-Version: 1\nDistribution: debian\nRelease: bookworm\nArchitecture: arm64\n",
        )],
        ..case(
            "lockfile_other_arch",
            &["-t", "tar", "--lockfile", "{S}/arm.lock"],
            &["arm64", "-a"],
        )
    },
    Case {
        files: &[(
            "escape.lock",
            "Lockfile-Version: 1\nDistribution: debian\nRelease: ../../../tmp/x\nArchitecture: amd64\n",
        )],
        ..case(
            "lockfile_release_escapes",
            &["-t", "tar", "--lockfile", "{S}/escape.lock"],
            &["Release", "../../../tmp/x"],
        )
    },
    Case {
        files: &[(
            "pool.lock",
            "Lockfile-Version: 1\nDistribution: debian\nRelease: bookworm\nArchitecture: amd64\n\nPackage: a\nVersion: 1\nArchitecture: amd64\nPhase: bootstrap\nFilename: ../../../etc/a.deb\nURL: http://x/a.deb\nSHA256: 0000000000000000000000000000000000000000000000000000000000000000\nSize: 1\n",
        )],
        ..case(
            "lockfile_filename_escapes",
            &["-t", "tar", "--lockfile", "{S}/pool.lock"],
            &["Filename", "../../../etc/a.deb"],
        )
    },
    // ---- the environment ----
    env(
        "epoch_not_a_number",
        &[("SOURCE_DATE_EPOCH", "yesterday")],
        &["SOURCE_DATE_EPOCH", "yesterday"],
    ),
    env(
        "finalise_mode",
        &[("DIB_CREATE_FINALISE", "later")],
        &["DIB_CREATE_FINALISE", "tree or mounted"],
    ),
    env(
        "phase_cache_switch",
        &[("DIB_CREATE_PHASE_CACHE", "maybe")],
        &["DIB_CREATE_PHASE_CACHE", "1 or 0"],
    ),
    env(
        "break_point",
        &[("break", "before-lunch")],
        &["break=before-lunch"],
    ),
    Case {
        args: &["-t", "raw"],
        ..env(
            "block_size",
            &[("DIB_BLOCK_SIZE", "1000")],
            &["DIB_BLOCK_SIZE", "512 or 4096"],
        )
    },
    Case {
        elements: &["fake-os", "fake-distro"],
        files: &[("mirror/dists/bookworm/InRelease", "x")],
        ..env(
            "release_unknown",
            &[("DIB_FAKE_RELEASE", "nonsense")],
            &["DIB_RELEASE=\"nonsense\"", "bookworm"],
        )
    },
    // ---- block-device layouts ----
    layout!("layout_empty", "[]", &["DIB_BLOCK_DEVICE_CONFIG"]),
    layout!(
        "layout_no_partitions",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions: []\n",
        &["partitions"],
    ),
    layout!(
        "layout_no_root_mount",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: data\n      type: ext4\n      mount:\n        mount_point: /data\n",
        &["/"],
    ),
    layout!(
        "layout_two_loops",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n- local_loop:\n    name: image1\n",
        &["local_loop"],
    ),
    layout!(
        "layout_unknown_key",
        "- local_loop:\n    name: image0\n    colour: blue\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
        &["colour"],
    ),
    layout!(
        "layout_partition_size_zero",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: root\n        size: 0\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["size"],
    ),
    layout!(
        "layout_too_big_for_the_image",
        "- local_loop:\n    name: image0\n    size: 100MiB\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: a\n        size: 80MiB\n      - name: root\n        size: 80MiB\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["root"],
    ),
    layout!(
        "layout_duplicate_mount_points",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: a\n        size: 50%\n        mkfs:\n          name: fa\n          type: ext4\n          mount:\n            mount_point: /srv\n      - name: b\n        size: 50MiB\n        mkfs:\n          name: fb\n          type: ext4\n          mount:\n            mount_point: /srv/\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["/srv"],
    ),
    layout!(
        "layout_mount_point_escapes",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: a\n        size: 50MiB\n        mkfs:\n          name: fa\n          type: ext4\n          mount:\n            mount_point: /../../victim\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["..", "victim"],
    ),
    layout!(
        "layout_fstab_newline",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n        fstab:\n          options: \"defaults\\n/dev/sda / ext4 defaults 0 0\"\n",
        &["options"],
    ),
    Case {
        files: &[("many.yaml", "{GPT129}")],
        ..layout!(
            "layout_gpt_129_partitions",
            "file://{S}/many.yaml",
            &["GPT holds 128 partitions"],
        )
    },
    layout!(
        "layout_label_too_long",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      label: a-label-longer-than-sixteen\n      mount:\n        mount_point: /\n",
        &["label"],
    ),
    layout!(
        "layout_unknown_filesystem",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      type: zfs\n      mount:\n        mount_point: /\n",
        &["zfs"],
    ),
    // ---- element files ----
    case(
        "element_unknown",
        &["-t", "tar", "no-such-element"],
        &["no-such-element"],
    ),
    element(
        "element_deps_bom",
        &[("elements/bad/element-deps", "\u{feff}fake-os\n")],
        &["\\u{feff}"],
    ),
    element(
        "package_installs_malformed",
        &[("elements/bad/package-installs.yaml", "vim: [unclosed\n")],
        &["package-installs.yaml"],
    ),
    element(
        "pkg_map_malformed",
        &[("elements/bad/pkg-map", "{ not json")],
        &["pkg-map"],
    ),
    element(
        "environment_fails",
        &[(
            "elements/bad/environment.d/10-broken",
            "echo broken >&2\nfalse\n",
        )],
        &["10-broken", "broken"],
    ),
];

fn main() {
    let args = Arguments::from_args();
    let mut tests: Vec<Trial> = Vec::new();
    for c in CASES {
        tests.push(trial(&format!("dry_run_{}", c.name), &[], move || {
            dry_run(c)
        }));
        tests.push(trial(
            &format!("build_{}", c.name),
            &[Need::Root],
            move || build(c),
        ));
    }
    libtest_mimic::run(&args, tests).exit();
}

/// A scratch directory with the case's files, and the command for it.
fn prepare(c: &Case, dry: bool) -> (Scratch, Command) {
    let s = Scratch::new("dib-create-bad-input-");
    let root = s.path().display().to_string();
    let expand = |v: &str| v.replace("{S}", &root).replace("{GPT129}", &gpt_129());
    // A distro element for the release check, with a local mirror.
    let distro = s.path().join("elements/fake-distro/environment.d");
    std::fs::create_dir_all(&distro).unwrap();
    std::fs::write(
        distro.join("10-fake-distro"),
        expand(
            "export DISTRO_NAME=debian\nexport DIB_RELEASE=${DIB_FAKE_RELEASE:-bookworm}\nexport DIB_DISTRIBUTION_MIRROR=file://{S}/mirror\n",
        ),
    )
    .unwrap();
    std::fs::create_dir_all(s.path().join("elements/bad")).unwrap();
    for (rel, text) in c.files {
        let p = s.path().join(expand(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, expand(text)).unwrap();
        if rel.contains("environment.d") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let mut cmd = s.command();
    for (k, v) in c.env {
        cmd.env(k, expand(v));
    }
    if dry {
        cmd.arg("--dry-run");
    }
    cmd.arg("-n").arg("-o").arg(s.path().join("out"));
    cmd.args(c.args.iter().map(|a| expand(a)));
    cmd.args(c.elements);
    (s, cmd)
}

/// Runs the command; returns the message of its exit-2 error.
fn refused(mut cmd: Command, c: &Case) -> Result<String, Failed> {
    let out = cmd.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("panicked") {
        return Err(format!("{}: panicked:\n{stderr}", c.name).into());
    }
    if out.status.code() != Some(2) {
        return Err(format!(
            "{}: expected exit 2, got {:?}:\n{}",
            c.name,
            out.status,
            common::tail(&stderr, 20)
        )
        .into());
    }
    let msg = stderr
        .lines()
        .filter(|l| !l.starts_with(' ') || l.trim_start().starts_with("caused by"))
        .skip_while(|l| !l.starts_with("dib-create: error:"))
        .collect::<Vec<_>>()
        .join("\n");
    for want in c.says {
        if !msg.contains(want) {
            return Err(format!("{}: the message does not say {want:?}:\n{msg}", c.name).into());
        }
    }
    Ok(msg)
}

fn dry_run(c: &'static Case) -> Result<(), Failed> {
    let (_s, cmd) = prepare(c, true);
    refused(cmd, c).map(|_| ())
}

fn build(c: &'static Case) -> Result<(), Failed> {
    let (s, cmd) = prepare(c, false);
    let built = refused(cmd, c)?;
    let (_s2, dry) = prepare(c, true);
    let planned = refused(dry, c)?;
    // The scratch path differs between the two runs.
    let norm = |m: &str, p: &Path| m.replace(&p.display().to_string(), "{S}");
    if norm(&built, s.path()) != norm(&planned, _s2.path()) {
        return Err(format!(
            "{}: the build and the dry run say different things:\nbuild: {built}\ndry run: {planned}",
            c.name
        )
        .into());
    }
    let outputs: Vec<_> = std::fs::read_dir(s.path())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out"))
        .collect();
    if !outputs.is_empty() {
        return Err(format!("{}: outputs were written: {outputs:?}", c.name).into());
    }
    let made = std::fs::read_dir(s.builds())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
    if made {
        return Err(format!("{}: a build directory was made", c.name).into());
    }
    common::assert_clean(s.path())
}

/// A GPT layout with 129 partitions before root (one more than a GPT holds).
fn gpt_129() -> String {
    let mut y = String::from(
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n",
    );
    for i in 0..129 {
        y.push_str(&format!("      - name: p{i}\n        size: 1MiB\n"));
    }
    y.push_str("      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n");
    y
}
