//! Freezes the shape of `dib-create --dry-run` over a small element tree made
//! here. Absolute temporary paths are replaced by `[TMP]`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use assert_cmd::Command;

struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn elements(&self) -> PathBuf {
        self.root.join("elements")
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.elements().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }

    fn script(&self, rel: &str) {
        self.write(rel, "#!/bin/bash\ntrue\n");
        let p = self.elements().join(rel);
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// dib-create with a clean, fixed environment pointing at this tree.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin!("dib-create"));
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.root.join("home"))
            .env("ELEMENTS_PATH", self.elements())
            .env("DIB_CREATE_DATA_DIR", self.root.join("data"))
            .current_dir(&self.root)
            .args(args);
        c
    }

    fn redact(&self, s: &str) -> String {
        s.replace(&self.root.display().to_string(), "[TMP]")
    }
}

/// A distro, base, vm with its block-device provider, and an application
/// element that exercises hooks, environment.d, package-installs and pkg-map.
fn tree() -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    let t = Tree { _tmp: tmp, root };
    // `-o out/demo` names a file in a directory that must exist.
    fs::create_dir_all(t.root.join("out")).unwrap();
    t.write("distro/element-provides", "operating-system\n");
    t.write("distro/element-deps", "# the bootstrapper\nbootstrap\n\n");
    t.write(
        "distro/environment.d/10-distro",
        "export DISTRO_NAME=ubuntu\nexport DIB_RELEASE=${DIB_RELEASE:-noble}\n",
    );
    t.script("distro/root.d/10-bootstrap");
    t.write("bootstrap/element-deps", "");
    t.script("bootstrap/root.d/08-prepare");
    t.script("base/install.d/50-base");
    t.script("base/pre-install.d/00-base");
    t.write(
        "base/package-installs.yaml",
        "ca-certificates:\nsudo:\n  uninstall: true\n",
    );
    t.write("vm/element-deps", "block-device\n");
    t.script("vm/finalise.d/51-bootloader");
    t.write("block-device-mbr/element-provides", "block-device\n");
    t.write(
        "block-device-mbr/block-device-default.yaml",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
    );
    t.write("app/element-deps", "vm\n");
    t.script("app/install.d/10-app");
    t.script("app/install.d/100-late");
    t.script("app/install.d/app-no-prefix");
    t.script("app/install.d/skipped.sh");
    t.write("app/install.d/20-not-executable", "#!/bin/sh\n");
    t.script("app/post-install.d/20-configure");
    t.script("app/cleanup.d/99-tidy");
    t.write(
        "app/environment.d/05-app.bash",
        "export APP_FLAVOUR=${APP_FLAVOUR:-full}\n",
    );
    t.write(
        "app/package-installs.yaml",
        "\
editor:
compiler:
  build-only: true
amd-only:
  arch: amd64, x86_64
no-arm:
  not-arch: arm64
full-extras:
  when: APP_FLAVOUR=full
python-tools:
  dib_python_version: 3
late-tool:
  phase: post-install.d
sudo:
",
    );
    t.write(
        "app/pkg-map",
        r#"{"default": {"editor": "vim"}, "family": {"debian": {"compiler": "build-essential"}}, "distro": {"ubuntu": {"python-tools": ""}}}"#,
    );
    t
}

const ARGS: &[&str] = &[
    "--dry-run",
    "-a",
    "amd64",
    "-o",
    "out/demo",
    "-t",
    "qcow2,tar,squashfs",
    "-p",
    "less,curl",
    "--offline",
    "app",
    "distro",
    "vm",
];

#[test]
fn dry_run_json_plan() {
    let t = tree();
    let out = t
        .cmd(&[ARGS, &["--format", "json"]].concat())
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in [
        "elements",
        "element_paths",
        "hooks",
        "environment",
        "packages",
        "outputs",
    ] {
        assert!(value.get(key).is_some(), "missing key {key}");
    }
    insta::assert_snapshot!("dry_run_json", t.redact(&stdout));
}

#[test]
fn dry_run_text_plan() {
    let t = tree();
    let out = t.cmd(ARGS).assert().success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    insta::assert_snapshot!("dry_run_text", t.redact(&stdout));
}

#[test]
fn dry_run_yaml_plan_parses() {
    let t = tree();
    let out = t
        .cmd(&[ARGS, &["--format", "yaml"]].concat())
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&stdout).unwrap();
    assert_eq!(value["elements"][0], "block-device-mbr");
    assert_eq!(value["outputs"][2]["path"], "out/demo.squash");
}

/// Runs a failing dry run; returns stderr after checking exit code 2 and no panic.
fn bad_input(t: &Tree, args: &[&str]) -> String {
    let out = t.cmd(&[&["--dry-run"], args].concat()).assert().code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    t.redact(&stderr)
}

#[test]
fn bad_inputs_exit_2_with_clear_messages() {
    let t = tree();
    let err = bad_input(&t, &["app", "distro", "nosuch-element"]);
    assert!(err.contains("unknown element nosuch-element"), "{err}");

    let err = bad_input(&t, &["app", "distro"]);
    assert!(
        err.contains("vm needs block-device; block-device-mbr provides it: add it (needed by app)"),
        "{err}"
    );

    let err = bad_input(&t, &["vm", "-n"]);
    assert!(
        err.contains("no element provides operating-system; add one of: distro"),
        "{err}"
    );

    t.write("app/package-installs.yaml", "a:\n  b: [1, 2\nc: d\n");
    let err = bad_input(&t, &["app", "distro", "vm"]);
    assert!(
        err.contains("[TMP]/elements/app/package-installs.yaml"),
        "{err}"
    );
    assert!(err.contains("line 3 column 2"), "{err}");

    t.write("app/package-installs.yaml", "x:\n  when: UNSET_FLAG=1\n");
    let err = bad_input(&t, &["app", "distro", "vm"]);
    assert!(
        err.contains("UNSET_FLAG, which is not set (element app)"),
        "{err}"
    );

    t.write("app/element-deps", "vm\ncyc\n");
    t.write("cyc/element-deps", "app\n");
    let err = bad_input(&t, &["app", "distro", "vm"]);
    assert!(err.contains("dependency cycle: app -> cyc -> app"), "{err}");

    t.write("app/element-deps", "vm\n");
    fs::write(t.elements().join("distro/element-deps"), b"\xff\n").unwrap();
    let err = bad_input(&t, &["app", "distro", "vm"]);
    assert!(
        err.contains("distro/element-deps is not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn missing_elements_path_entry_is_named() {
    let t = tree();
    let missing = t.root.join("missing-dir");
    let out = t
        .cmd(&["--dry-run", "distro"])
        .env(
            "ELEMENTS_PATH",
            format!("{}:{}", t.elements().display(), missing.display()),
        )
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains(&format!("{} does not exist", missing.display())),
        "{stderr}"
    );
}

#[test]
fn failing_environment_file_is_named() {
    let t = tree();
    t.write(
        "distro/environment.d/20-broken",
        "echo 'bad thing' >&2\nexit 3\n",
    );
    let err = bad_input(&t, &["distro"]);
    assert!(
        err.contains("sourcing [TMP]/elements/distro/environment.d/20-broken failed"),
        "{err}"
    );
    assert!(err.contains("bad thing"), "{err}");
}

#[test]
fn two_block_device_layouts_conflict_unless_config_is_set() {
    let t = tree();
    t.write("block-device-gpt/element-provides", "block-device-x\n");
    t.write(
        "block-device-gpt/block-device-amd64.yaml",
        "- local_loop:\n    name: image0\n",
    );
    let err = bad_input(
        &t,
        &[
            "-a",
            "amd64",
            "vm",
            "block-device-mbr",
            "block-device-gpt",
            "distro",
        ],
    );
    assert!(
        err.contains(
            "elements block-device-mbr and block-device-gpt both ship a block-device layout"
        ),
        "{err}"
    );
    t.cmd(&[
        "--dry-run",
        "-a",
        "amd64",
        "vm",
        "block-device-mbr",
        "block-device-gpt",
        "distro",
    ])
    .env(
        "DIB_BLOCK_DEVICE_CONFIG",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
    )
    .assert()
    .success();
}
