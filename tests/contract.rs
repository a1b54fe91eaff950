//! The runtime contract that diskimage-builder's own elements rely on, each
//! point checked by a build of the tiny fake OS (tests/elements/fake-os, no
//! mirror needed): top-level element files in the hooks tree, DIB's core
//! variables under `set -u`, the documented pass-through variables,
//! environment.d in DIB's byte order, mounts a hook leaves behind, an
//! element's own `bin/install-packages`, `no-final-image` with a relative
//! `-o`.

mod common;

use common::{Need, Scratch, assert_clean, trial};
use libtest_mimic::{Arguments, Failed};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn main() {
    let args = Arguments::from_args();
    let tests = vec![
        trial(
            "top_level_element_files_reach_the_hooks_tree",
            &[Need::Root],
            top_level_files,
        ),
        trial(
            "core_and_passed_variables_are_set_for_hooks",
            &[Need::Root],
            core_variables,
        ),
        trial(
            "environment_d_is_sourced_in_byte_order",
            &[Need::Root],
            environment_order,
        ),
        trial(
            "mounts_a_hook_leaves_are_taken_down",
            &[Need::Root, Need::Tool("mount")],
            hook_mounts,
        ),
        trial(
            "mounts_a_failing_hook_leaves_are_taken_down",
            &[Need::Root, Need::Tool("mount")],
            hook_mounts_on_failure,
        ),
        trial(
            "an_element_bin_install_packages_stays_out_of_the_image",
            &[Need::Root, Need::Tool("tar")],
            element_install_packages,
        ),
        trial(
            "no_final_image_with_a_relative_output_keeps_what_hooks_wrote",
            &[Need::Root],
            no_final_image,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Writes `rel` (under the scratch elements directory) with `body`.
fn write(s: &Scratch, rel: &str, body: &str, mode: u32) {
    let p = s.path().join("elements").join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A hook at `element/phase/50-check` that runs `body` under `set -eu`.
fn hook(s: &Scratch, element: &str, phase: &str, body: &str) {
    let text = format!("#!/bin/bash\nset -eu -o pipefail\n{body}\n");
    write(s, &format!("{element}/{phase}/50-check"), &text, 0o755);
}

/// A tar build of the fake OS with `elements` into `<scratch>/img`.
fn build(s: &Scratch, elements: &[&str], extra: &[&str]) -> Result<Output, Failed> {
    let out = s.path().join("img");
    let mut c = s.command();
    c.args(["-n", "-t", "tar", "-o"])
        .arg(&out)
        .args(extra)
        .arg("fake-os")
        .args(elements);
    Ok(c.output()?)
}

fn ok(o: &Output) -> Result<(), Failed> {
    if o.status.success() {
        return Ok(());
    }
    Err(format!(
        "build failed ({:?}):\n{}",
        o.status,
        common::tail(&String::from_utf8_lossy(&o.stderr), 40)
    )
    .into())
}

fn top_level_files() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    write(
        &s,
        "srcrepo/source-repository-srcrepo",
        "srcrepo git /opt/srcrepo https://example.invalid/srcrepo\n",
        0o644,
    );
    // Outside the chroot through TMP_HOOKS_PATH, inside at /tmp/in_target.d,
    // as source-repositories reads them.
    hook(
        &s,
        "srcrepo",
        "extra-data.d",
        r#"grep -q example.invalid "$TMP_HOOKS_PATH/source-repository-srcrepo""#,
    );
    hook(
        &s,
        "srcrepo",
        "install.d",
        "grep -q example.invalid /tmp/in_target.d/source-repository-srcrepo",
    );
    ok(&build(&s, &["srcrepo"], &[])?)?;
    assert_clean(s.path())
}

fn core_variables() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    let locks = s.path().join("locks");
    let checks = r#"
: "$DIB_OFFLINE" "$DIB_CHECKSUM" "$DIB_NO_TMPFS" "$DIB_LOCKFILES"
[ "$DIB_CHECKSUM" = 0 ]
[ -z "$DIB_OFFLINE" ]
[ "$http_proxy" = http://proxy.invalid:3128 ]
[ "$no_proxy" = localhost ]
[ "$REG_METHOD" = disable ]
[ "$MY_SETTING" = on ]
[ -z "${NOT_PASSED:-}" ]
case $IMAGE_NAME in /*) ;; *) echo "IMAGE_NAME is not absolute: $IMAGE_NAME"; exit 1 ;; esac
"#;
    hook(
        &s,
        "vars",
        "extra-data.d",
        &format!("{checks}\n[ -d \"$DIB_LOCKFILES\" ]"),
    );
    hook(&s, "vars", "install.d", checks);
    let out = s.path().join("img");
    let o = s
        .command()
        .current_dir(s.path())
        .env("DIB_LOCKFILES", &locks)
        .env("http_proxy", "http://proxy.invalid:3128")
        .env("no_proxy", "localhost")
        .env("REG_METHOD", "disable")
        .env("MY_SETTING", "on")
        .env("NOT_PASSED", "leak")
        .env("DIB_CREATE_PASS_ENV", "MY_*")
        .args(["-n", "-t", "tar", "-o", "img", "fake-os", "vars"])
        .output()?;
    ok(&o)?;
    if !out.with_extension("tar").is_file() {
        return Err("no img.tar beside the relative -o".into());
    }
    assert_clean(s.path())
}

fn environment_order() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    // DIB sorts full paths with `sort -n`: all keys are 0, so bytes decide.
    write(
        &s,
        "order/environment.d/9-b",
        "export ORDER=${ORDER:-}b\n",
        0o644,
    );
    write(
        &s,
        "order/environment.d/10-a",
        "export ORDER=${ORDER:-}a\n",
        0o644,
    );
    hook(
        &s,
        "order",
        "extra-data.d",
        r#"[ "$ORDER" = ab ] || { echo "ORDER=$ORDER"; exit 1; }"#,
    );
    hook(
        &s,
        "order",
        "install.d",
        r#"[ "$ORDER" = ab ] || { echo "ORDER=$ORDER"; exit 1; }"#,
    );
    ok(&build(&s, &["order"], &[])?)?;
    assert_clean(s.path())
}

/// A post-root.d hook that binds a host directory into the tree, as
/// yum-minimal's and pip-cache's do, and then runs `then`.
fn binding_element(s: &Scratch, then: &str) {
    let cache = s.path().join("host-cache");
    fs::create_dir_all(&cache).unwrap();
    fs::write(cache.join("kept"), "host file\n").unwrap();
    hook(
        s,
        "binds",
        "post-root.d",
        &format!(
            "mkdir -p \"$TARGET_ROOT/tmp/cache\"\nmount --bind {} \"$TARGET_ROOT/tmp/cache\"\n{then}",
            cache.display()
        ),
    );
}

fn hook_mounts() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    binding_element(&s, "");
    let o = build(&s, &["binds"], &[])?;
    ok(&o)?;
    let err = String::from_utf8_lossy(&o.stderr);
    if !err.contains("tmp/cache mounted") {
        return Err(format!("no note of the hook's mount:\n{}", common::tail(&err, 20)).into());
    }
    if !s.path().join("host-cache/kept").is_file() {
        return Err("the bound host directory lost its file".into());
    }
    // No mounts, loop devices or build directories (assert_clean included).
    s.assert_nothing_left(&[])
}

fn hook_mounts_on_failure() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    binding_element(&s, "echo failing on purpose; exit 4");
    let o = build(&s, &["binds"], &[])?;
    if o.status.code() != Some(1) {
        return Err(format!(
            "expected exit 1, got {:?}:\n{}",
            o.status,
            common::tail(&String::from_utf8_lossy(&o.stderr), 30)
        )
        .into());
    }
    if !s.path().join("host-cache/kept").is_file() {
        return Err("the bound host directory lost its file".into());
    }
    s.assert_nothing_left(&[s.path().join("img.tar")])
}

fn element_install_packages() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    write(&s, "ownbin/element-deps", "install-bin\n", 0o644);
    write(
        &s,
        "ownbin/bin/install-packages",
        "#!/bin/sh\nexit 9\n",
        0o755,
    );
    write(&s, "ownbin/bin/mytool", "#!/bin/sh\necho mine\n", 0o755);
    ok(&build(&s, &["ownbin"], &[])?)?;
    let list = Command::new("tar")
        .arg("-tf")
        .arg(s.path().join("img.tar"))
        .output()?;
    let list = String::from_utf8_lossy(&list.stdout);
    if !list.lines().any(|l| l.ends_with("usr/local/bin/mytool")) {
        return Err("bin/mytool was not installed".into());
    }
    if list
        .lines()
        .any(|l| l.ends_with("usr/local/bin/install-packages"))
    {
        return Err("the element's bin/install-packages reached the image".into());
    }
    assert_clean(s.path())
}

fn no_final_image() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    // What baremetal does: files beside the image name, from cleanup.d.
    hook(
        &s,
        "beside",
        "cleanup.d",
        r#"echo kernel > "${IMAGE_NAME}.vmlinuz""#,
    );
    let work = s.path().join("work");
    fs::create_dir_all(work.join("out"))?;
    let o = s
        .command()
        .current_dir(&work)
        .args([
            "-n",
            "-t",
            "tar",
            "-o",
            "out/img",
            "fake-os",
            "beside",
            "no-final-image",
        ])
        .output()?;
    ok(&o)?;
    if !work.join("out/img.vmlinuz").is_file() {
        return Err("the hook's file is not beside the relative -o".into());
    }
    if work.join("out/img.tar").exists() {
        return Err("no-final-image still wrote img.tar".into());
    }
    assert_clean(s.path())
}
