//! The runtime contract that diskimage-builder's own elements rely on, each
//! point checked by a build of the tiny fake OS (tests/elements/fake-os, no
//! mirror needed): top-level element files in the hooks tree, DIB's core
//! variables under `set -u`, the documented pass-through variables,
//! environment.d in DIB's byte order, mounts a hook leaves behind, an
//! element's own `bin/install-packages`, `no-final-image` with a relative
//! `-o`, a cloud-image OS element unpacking a local disk image with
//! `extract-image`.

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
        trial(
            "a_cloud_image_element_unpacks_a_local_qcow2",
            &[
                Need::Root,
                Need::LoopDevices,
                Need::Tool("mke2fs"),
                Need::Tool("sfdisk"),
                Need::Tool("qemu-img"),
                Need::Tool("mcopy"),
            ],
            local_cloud_image,
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

/// What the cloud-image OS elements (centos, fedora, rhel, opensuse; ubuntu
/// for an image that is no squashfs) do: root.d unpacks DIB_LOCAL_IMAGE with
/// `$TMP_HOOKS_PATH/bin/extract-image`, here a qcow2 made by dib-create with
/// an ESP, which this kernel cannot mount (no vfat) and no device-mapper.
fn local_cloud_image() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-contract-");
    let cache = s.path().join("cache");
    let base = s.path().join("base");
    let build_base = |mode: &str| -> Result<(), Failed> {
        hook(
            &s,
            "marked",
            "install.d",
            &format!(
                "install -o 1234 -g 5678 -m {mode} /etc/os-release /etc/marker\n\
                 mkdir -p /boot/efi/EFI/test\necho on-the-esp > /boot/efi/EFI/test/marker"
            ),
        );
        let o = s
            .command()
            .env("DIB_IMAGE_CACHE", &cache)
            .args(["-n", "--image-size", "0.7", "-t", "qcow2", "-o"])
            .arg(&base)
            .args(["fake-os", "block-device-efi", "marked"])
            .output()?;
        ok(&o)
    };
    build_base("0640")?;
    // An OS element as centos's: sysprep (through redhat-common there)
    // brings bin/extract-image.
    write(&s, "local-cloud/element-deps", "sysprep\n", 0o644);
    write(
        &s,
        "local-cloud/element-provides",
        "operating-system\n",
        0o644,
    );
    write(
        &s,
        "local-cloud/environment.d/10-local-cloud",
        "export DISTRO_NAME=fake\nexport DIB_RELEASE=none\n",
        0o644,
    );
    hook(
        &s,
        "local-cloud",
        "root.d",
        r#"f=$(basename "$DIB_LOCAL_IMAGE")
"$TMP_HOOKS_PATH/bin/extract-image" "$f" "$f.tgz" "$DIB_LOCAL_IMAGE" "$DIB_LOCAL_IMAGE""#,
    );
    let img = s.path().join("img");
    let from_local = |log_says: &str, mode: u32| -> Result<(), Failed> {
        let o = s
            .command()
            .env("DIB_LOCAL_IMAGE", base.with_extension("qcow2"))
            .env("DIB_IMAGE_CACHE", &cache)
            .args(["-n", "-t", "tar", "-o"])
            .arg(&img)
            .arg("local-cloud")
            .output()?;
        ok(&o)?;
        let log = String::from_utf8_lossy(&o.stderr);
        if !log.contains(log_says) {
            let tail = common::tail(&log, 30);
            return Err(format!("the log does not say {log_says:?}:\n{tail}").into());
        }
        check_unpacked(&img.with_extension("tar"), mode)
    };
    from_local("extract-image: packing its tree into", 0o640)?;
    from_local("reused the outputs of an identical earlier build", 0o640)?;
    // The same DIB_LOCAL_IMAGE path with another image in it: the phase
    // cache keys the file's content, and extract-image packs it again.
    build_base("0600")?;
    from_local("extract-image: packing its tree into", 0o600)?;
    assert_clean(s.path())
}

/// The base image's tree, with its owners, and its ESP's file.
fn check_unpacked(tar_path: &std::path::Path, mode: u32) -> Result<(), Failed> {
    use std::io::Read;
    let mut ar = tar::Archive::new(fs::File::open(tar_path)?);
    let (mut marker, mut esp, mut bash) = (None, None, false);
    for e in ar.entries()? {
        let mut e = e?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let h = e.header();
        match path.as_str() {
            "etc/marker" => marker = Some((h.uid()?, h.gid()?, h.mode()? & 0o7777)),
            "boot/efi/EFI/test/marker" => {
                let mut t = String::new();
                e.read_to_string(&mut t)?;
                esp = Some(t);
            }
            "bin/bash" => bash = true,
            _ => {}
        }
    }
    if marker != Some((1234, 5678, mode)) {
        return Err(
            format!("etc/marker: {marker:?}, expected uid 1234, gid 5678, mode {mode:o}").into(),
        );
    }
    if esp.as_deref() != Some("on-the-esp\n") {
        return Err(format!("the ESP's file: {esp:?}").into());
    }
    if !bash {
        return Err("bin/bash of the base image is missing".into());
    }
    Ok(())
}
