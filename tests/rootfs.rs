//! Root filesystem builds for real: debootstrap/mmdebstrap from the mirror,
//! every phase, tar output; amd64, Debian and Ubuntu. (arm64 through
//! qemu-user is built and booted by tests/vm.rs.)
//! Each build also carries a DIB-style element written here, which must work
//! unchanged: install-packages from install.d, an environment.d export read by
//! a later hook, package-installs.yaml with arch filters, and a pkg-map.

mod common;

use common::{Need, dib_create, run_ok, trial};
use libtest_mimic::{Arguments, Failed};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    let args = Arguments::from_args();
    let base = [
        Need::Root,
        Need::Tool("mmdebstrap"),
        Need::Network("deb.debian.org:80"),
    ];
    let ubuntu = [
        Need::Root,
        Need::Tool("mmdebstrap"),
        Need::Network("archive.ubuntu.com:80"),
    ];
    let tests = vec![
        // In scripts/test-long (--ignored), for CI's time: CI's run builds
        // debian-minimal tar four times elsewhere (tests/lockfile.rs three
        // times, the differential set against DIB once), and the DIB-style
        // element here runs in the Ubuntu build below.
        trial("debian_bookworm_amd64_tar", &base, || {
            build_and_check("debian-minimal", "bookworm", "amd64", "Debian GNU/Linux 12")
        })
        .with_ignored_flag(true),
        trial("ubuntu_noble_amd64_tar", &ubuntu, || {
            build_and_check("ubuntu-minimal", "noble", "amd64", "Ubuntu 24.04")
        }),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Writes the DIB-style element `dibstyle` under `dir`.
fn write_dib_style_element(dir: &Path) {
    let e = dir.join("dibstyle");
    let files: &[(&str, &str, bool)] = &[
        ("element-deps", "package-installs\npkg-map\n", false),
        (
            "environment.d/10-dibstyle",
            "export DIBSTYLE_GREETING=hello-from-environment-d\n",
            false,
        ),
        (
            "install.d/20-dibstyle",
            "#!/bin/bash\nset -eu -o pipefail\ninstall-packages -m dibstyle tree-tool\n\
             echo \"$DIBSTYLE_GREETING\" > /etc/dibstyle-greeting\n",
            true,
        ),
        (
            "post-install.d/10-dibstyle",
            "#!/bin/bash\nset -eu -o pipefail\n\
             [ \"$DIBSTYLE_GREETING\" = hello-from-environment-d ]\n\
             [ \"$(pkg-map --element dibstyle tree-tool)\" = tree ]\n\
             echo \"$ARCH $DISTRO_NAME $DIB_RELEASE\" > /etc/dibstyle-post\n",
            true,
        ),
        (
            "package-installs.yaml",
            "less:\nhello:\n  arch: \" amd64 , arm64 \"\nnano:\n  not-arch: amd64, arm64\n\
             file:\n  phase: post-install.d\n",
            false,
        ),
        (
            "pkg-map",
            "{\"family\": {\"debian\": {\"tree-tool\": \"tree\"}}, \"default\": {\"tree-tool\": \"tree-unknown\"}}\n",
            false,
        ),
    ];
    for (rel, body, exec) in files {
        let p = e.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        if *exec {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

fn build_and_check(os: &str, release: &str, arch: &str, pretty: &str) -> Result<(), Failed> {
    let scratch = tempfile::Builder::new()
        .prefix("dib-create-rootfs-")
        .tempdir_in("/var/tmp")?;
    let elements = scratch.path().join("elements");
    write_dib_style_element(&elements);
    let out = scratch.path().join(format!("{os}-{arch}"));
    let started = Instant::now();
    let mut c = dib_create();
    c.env("ELEMENTS_PATH", &elements)
        .env("DIB_RELEASE", release)
        .env("DIB_IMAGE_CACHE", common::test_cache())
        .env("DIB_CREATE_BUILD_ROOT", scratch.path().join("builds"))
        .args(["-a", arch, "-t", "tar", "-o"])
        .arg(&out)
        .args([os, "dibstyle"]);
    run_ok(c)?;
    println!(
        "built {os} {release} {arch} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let tar = out.with_extension("tar");
    check_tree(&tar, scratch.path(), arch, pretty)?;
    check_manifests(&out)?;
    common::assert_clean(scratch.path())
}

fn check_tree(tar: &Path, scratch: &Path, arch: &str, pretty: &str) -> Result<(), Failed> {
    let tree = scratch.join("tree");
    std::fs::create_dir_all(&tree)?;
    let mut x = Command::new("tar");
    x.arg("-xf").arg(tar).arg("-C").arg(&tree).args([
        "./etc/os-release",
        "./usr/lib/os-release",
        "./var/lib/dpkg/status",
        "./etc/dibstyle-greeting",
        "./etc/dibstyle-post",
        "./usr/bin/bash",
    ]);
    // os-release may be a symlink to usr/lib; extract both and ignore a miss.
    let _ = x.output()?;
    let os_release =
        read(&tree.join("usr/lib/os-release")).or_else(|_| read(&tree.join("etc/os-release")))?;
    expect(&os_release, pretty, "os-release")?;
    let status = read(&tree.join("var/lib/dpkg/status"))?;
    for pkg in ["less", "hello", "tree", "file"] {
        expect(&status, &format!("Package: {pkg}\n"), "dpkg status")?;
    }
    if status.contains("Package: nano\n") {
        return Err("nano was installed although its not-arch excludes this arch".into());
    }
    expect(
        &read(&tree.join("etc/dibstyle-greeting"))?,
        "hello-from-environment-d",
        "greeting",
    )?;
    expect(
        &read(&tree.join("etc/dibstyle-post"))?,
        arch,
        "post-install marker",
    )?;
    let file = run_ok({
        let mut c = Command::new("file");
        c.arg("-L").arg(tree.join("usr/bin/bash"));
        c
    })?;
    let machine = if arch == "arm64" { "aarch64" } else { "x86-64" };
    expect(&file, machine, "ELF machine of /usr/bin/bash")?;
    common::no_build_leftovers(tar)
}

/// The manifest lists the installed packages with their archive hashes and the
/// outputs; the SBOM is SPDX 2.3 with the same packages.
fn check_manifests(out: &Path) -> Result<(), Failed> {
    let read_json = |ext: &str| -> Result<serde_json::Value, Failed> {
        let p = out.with_extension(ext);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let m = read_json("manifest.json")?;
    let less = m["packages"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "less"))
        .ok_or("the manifest does not list less")?;
    if less["sha256"].as_str().map(str::len) != Some(64) {
        return Err(format!("less has no archive SHA256 in the manifest: {less}").into());
    }
    if m["outputs"][0]["type"] != "tar" {
        return Err(format!("the manifest lists no tar output: {}", m["outputs"]).into());
    }
    let spdx = read_json("spdx.json")?;
    if spdx["spdxVersion"] != "SPDX-2.3" {
        return Err("the SBOM is not SPDX 2.3".into());
    }
    let n = spdx["packages"].as_array().map_or(0, Vec::len);
    if n != m["packages"].as_array().map_or(0, Vec::len) + 1 {
        return Err(format!("the SBOM has {n} packages, the manifest a different count").into());
    }
    Ok(())
}

fn read(p: &PathBuf) -> Result<String, Failed> {
    std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()).into())
}

fn expect(haystack: &str, needle: &str, what: &str) -> Result<(), Failed> {
    if haystack.contains(needle) {
        Ok(())
    } else {
        Err(format!("{what} lacks {needle:?}:\n{}", common::tail(haystack, 15)).into())
    }
}
