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
        "report_missing_directory",
        &["-t", "tar", "--report", "{S}/no/such/dir/r.html"],
        &["--report", "does not exist"],
    ),
    case(
        "report_is_a_directory",
        &["-t", "tar", "--report", "{S}"],
        &["--report", "directory"],
    ),
    case(
        "report_and_no_report",
        &["-t", "tar", "--report", "{S}/r.html", "--no-report"],
        &["--no-report", "--report"],
    ),
    case(
        "log_format_unknown",
        &["-t", "tar", "--log-format", "xml"],
        &["--log-format", "xml"],
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
    // ---- more of the command line ----
    case("arch_upper_case", &["-a", "AMD64"], &["AMD64"]),
    case("arch_typo", &["-a", "amd46"], &["amd46"]),
    case("arch_powerpc_32", &["-a", "powerpc"], &["powerpc"]),
    case(
        "boot_test_of_an_s390x_image",
        &["-a", "s390x", "--boot-test", "60", "-t", "qcow2"],
        &["--boot-test", "ppc64el", "s390x"],
    ),
    // Ubuntu's i386 archive has had no kernel since focal.
    Case {
        name: "ubuntu_i386_after_bionic",
        args: &["-a", "i386", "-t", "tar"],
        elements: &["ubuntu-minimal"],
        env: &[("DIB_RELEASE", "noble")],
        files: &[],
        says: &["-a i386", "noble", "bionic"],
    },
    case(
        "image_size_minus_inf",
        &["--image-size=-inf", "-t", "raw"],
        &["--image-size"],
    ),
    case(
        "image_size_text",
        &["--image-size", "big", "-t", "raw"],
        &["big"],
    ),
    case(
        "image_size_tiny_negative",
        &["--image-size=-0.001", "-t", "raw"],
        &["--image-size"],
    ),
    case(
        "image_extra_size_negative",
        &["--image-extra-size=-1", "-t", "raw"],
        &["--image-extra-size"],
    ),
    case(
        "image_extra_size_huge",
        &["--image-extra-size", "99999999999", "-t", "raw"],
        &["--image-extra-size"],
    ),
    case(
        "journal_huge",
        &["--mkfs-journal-size", "100000", "-t", "raw"],
        &["--mkfs-journal-size 100000"],
    ),
    case(
        "journal_tiny",
        &["--mkfs-journal-size", "2", "-t", "raw"],
        &["--mkfs-journal-size 2"],
    ),
    case(
        "journal_text",
        &["--mkfs-journal-size", "x", "-t", "raw"],
        &["--mkfs-journal-size"],
    ),
    case(
        "online_resize_text",
        &["--max-online-resize", "lots", "-t", "raw"],
        &["--max-online-resize"],
    ),
    case("type_upper_case", &["-t", "QCOW2"], &["QCOW2"]),
    case("type_among_good_ones", &["-t", "tar,qcow3,raw"], &["qcow3"]),
    case("type_aci", &["-t", "aci"], &["-t aci"]),
    case("type_iso", &["-t", "iso"], &["-t iso"]),
    case("type_spaces_only", &["-t", "  "], &["no output type"]),
    case("output_empty", &["-t", "tar", "-o", ""], &["-o \"\""]),
    case(
        "output_trailing_slash",
        &["-t", "tar", "-o", "{S}/out/"],
        &["directory"],
    ),
    case("output_dot", &["-t", "tar", "-o", "."], &["-o \".\""]),
    case("output_dotdot", &["-t", "tar", "-o", ".."], &["-o \"..\""]),
    case(
        "output_is_a_directory",
        &["-t", "tar", "-o", "{S}"],
        &["existing directory"],
    ),
    case(
        "output_missing_directory",
        &["-t", "tar", "-o", "{S}/none/img"],
        &["does not exist"],
    ),
    case(
        "output_newline",
        &["-t", "tar", "-o", "{S}/a\nb"],
        &["control characters"],
    ),
    case(
        "package_empty_between_commas_and_dash",
        &["-t", "tar", "-p", "vim,,--yes"],
        &["--yes"],
    ),
    case(
        "package_leading_plus",
        &["-t", "tar", "-p", "+vim"],
        &["+vim"],
    ),
    case("package_non_ascii", &["-t", "tar", "-p", "vím"], &["vím"]),
    case("package_quote", &["-t", "tar", "-p", "vim'"], &["vim'"]),
    case(
        "package_dollar",
        &["-t", "tar", "-p", "$(reboot)"],
        &["$(reboot)"],
    ),
    case("package_glob", &["-t", "tar", "-p", "lib*"], &["lib*"]),
    case(
        "docker_target_upper",
        &["-t", "docker", "--docker-target", "MyImage"],
        &["MyImage"],
    ),
    case(
        "docker_target_empty_tag",
        &["-t", "oci", "--docker-target", "image:"],
        &["image:"],
    ),
    case(
        "docker_target_bad_tag",
        &["-t", "docker", "--docker-target", "image:-x"],
        &["-x"],
    ),
    case(
        "ostree_ref_bad",
        &["-t", "ostree", "--ostree-ref", "a//b"],
        &["--ostree-ref", "a//b", "letters, digits"],
    ),
    case(
        "ostree_flag_without_output",
        &["-t", "tar", "--ostree-ref", "a/b"],
        &["--ostree-ref", "add ostree to -t"],
    ),
    case(
        "ostree_repo_not_a_repository",
        &["-t", "ostree", "--ostree-repo", "{S}"],
        &["--ostree-repo", "not an ostree repository"],
    ),
    case(
        "ostree_repo_parent_missing",
        &["-t", "ostree", "--ostree-repo", "{S}/no/such/repo"],
        &["--ostree-repo", "does not exist; create it first"],
    ),
    case(
        "ostree_parent_bad",
        &["-t", "ostree", "--ostree-parent", "HEAD"],
        &["--ostree-parent", "HEAD", "64-digit"],
    ),
    case(
        "ostree_version_space",
        &["-t", "ostree", "--ostree-version", "1 2"],
        &["--ostree-version", "\"1 2\""],
    ),
    case(
        "ostree_gpg_home_missing",
        &[
            "-t",
            "ostree",
            "--ostree-gpg-sign",
            "ABCD",
            "--ostree-gpg-homedir",
            "{S}/nohome",
        ],
        &["--ostree-gpg-homedir", "no such directory"],
    ),
    case(
        "ostree_parent_not_in_repository",
        &[
            "-t",
            "ostree",
            "--ostree-parent",
            "abababababababababababababababababababababababababababababababab",
        ],
        &["--ostree-parent", "no such commit"],
    ),
    case(
        "ostree_gpg_key_missing",
        &[
            "-t",
            "ostree",
            "--ostree-gpg-sign",
            "NOSUCHKEY0",
            "--ostree-gpg-homedir",
            "{S}",
        ],
        &["--ostree-gpg-sign", "NOSUCHKEY0", "no key of that ID"],
    ),
    case(
        "ostree_gpg_home_without_key",
        &["-t", "ostree", "--ostree-gpg-homedir", "{S}"],
        &["add --ostree-gpg-sign"],
    ),
    case(
        "docker_target_double_slash",
        &["-t", "docker", "--docker-target", "a//b"],
        &["a//b"],
    ),
    case(
        "docker_target_space",
        &["-t", "docker", "--docker-target", "my image"],
        &["my image"],
    ),
    case(
        "docker_default_from_a_bad_name",
        &["-t", "docker", "-o", "{S}/Upper"],
        &["Upper"],
    ),
    case(
        "lockfile_is_a_directory",
        &["-t", "tar", "--lockfile", "{S}"],
        &["--lockfile"],
    ),
    case(
        "lock_update_missing",
        &["-t", "tar", "--lock-update", "{S}/none.lock"],
        &["--lock-update", "none.lock"],
    ),
    case(
        "lock_and_lockfile",
        &["-t", "tar", "--lock", "a", "--lockfile", "b"],
        &["--lock"],
    ),
    case(
        "unknown_flag",
        &["-t", "tar", "--frobnicate"],
        &["--frobnicate"],
    ),
    case(
        "root_label_too_long",
        &["-t", "raw", "--root-label", "a-very-long-root-label"],
        &["a-very-long-root-label"],
    ),
    case(
        "root_label_newline",
        &["-t", "raw", "--root-label", "a\nb"],
        &["label"],
    ),
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
    Case {
        args: &["-t", "raw"],
        elements: &["fake-os", "ostree-deploy"],
        ..env(
            "ostree_remote_url_bad",
            &[("DIB_OSTREE_REMOTE_URL", "ftp://updates")],
            &["DIB_OSTREE_REMOTE_URL", "ftp://updates", "http://"],
        )
    },
    Case {
        args: &["-t", "tar"],
        elements: &["fake-os", "ostree-deploy"],
        ..env(
            "ostree_deploy_without_disk",
            &[],
            &["ostree-deploy", "needs a disk output", "-t qcow2,ostree"],
        )
    },
    Case {
        args: &["-t", "raw"],
        elements: &["fake-os", "ostree-deploy"],
        ..env(
            "ostree_deploy_mounted",
            &[("DIB_CREATE_FINALISE", "mounted")],
            &["ostree-deploy", "DIB_CREATE_FINALISE=mounted"],
        )
    },
    Case {
        args: &["-t", "raw"],
        elements: &["fake-os", "ostree-deploy"],
        ..layout!(
            "ostree_deploy_separate_boot",
            "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: boot\n        size: 200MiB\n        mkfs:\n          type: ext4\n          mount:\n            mount_point: /boot\n      - name: root\n        size: 100%\n        mkfs:\n          type: ext4\n          mount:\n            mount_point: /\n",
            &["ostree-deploy", "separate /boot"],
        )
    },
    // ---- more of the environment ----
    env(
        "epoch_negative",
        &[("SOURCE_DATE_EPOCH", "-5")],
        &["SOURCE_DATE_EPOCH"],
    ),
    env(
        "epoch_fraction",
        &[("SOURCE_DATE_EPOCH", "1.5")],
        &["SOURCE_DATE_EPOCH"],
    ),
    env(
        "epoch_huge",
        &[("SOURCE_DATE_EPOCH", "99999999999999999999")],
        &["SOURCE_DATE_EPOCH"],
    ),
    env(
        "native_tools_switch",
        &[("DIB_CREATE_NATIVE_TOOLS", "2")],
        &["DIB_CREATE_NATIVE_TOOLS"],
    ),
    env(
        "namespace_switch",
        &[("DIB_CREATE_NO_NAMESPACE", "yes")],
        &["DIB_CREATE_NO_NAMESPACE"],
    ),
    env(
        "cache_age",
        &[("DIB_CREATE_PHASE_CACHE_MAX_AGE", "1h")],
        &["DIB_CREATE_PHASE_CACHE_MAX_AGE"],
    ),
    env(
        "cache_keep_days",
        &[("DIB_CREATE_PHASE_CACHE_KEEP_DAYS", "-3")],
        &["DIB_CREATE_PHASE_CACHE_KEEP_DAYS"],
    ),
    env(
        "cache_key_env",
        &[("DIB_CREATE_PHASE_CACHE_KEY_ENV", "some")],
        &["DIB_CREATE_PHASE_CACHE_KEY_ENV=some", "all", "referenced"],
    ),
    env(
        "cache_max_size",
        &[("DIB_CREATE_PHASE_CACHE_MAX_SIZE", "lots")],
        &["DIB_CREATE_PHASE_CACHE_MAX_SIZE=lots", "10G"],
    ),
    env(
        "cache_keep_outputs",
        &[("DIB_CREATE_PHASE_CACHE_KEEP_OUTPUTS", "two")],
        &["DIB_CREATE_PHASE_CACHE_KEEP_OUTPUTS"],
    ),
    env(
        "break_after_nothing",
        &[("break", "after-nothing")],
        &["break=after-nothing"],
    ),
    env(
        "break_two_one_bad",
        &[("break", "before-install,after-lunch")],
        &["after-lunch"],
    ),
    env(
        "finalise_upper",
        &[("DIB_CREATE_FINALISE", "TREE")],
        &["TREE"],
    ),
    Case {
        args: &["-t", "raw"],
        ..env(
            "block_size_text",
            &[("DIB_BLOCK_SIZE", "big")],
            &["DIB_BLOCK_SIZE"],
        )
    },
    Case {
        args: &["-t", "raw"],
        ..env(
            "block_device_config_missing_file",
            &[("DIB_BLOCK_DEVICE_CONFIG", "file://{S}/none.yaml")],
            &["none.yaml"],
        )
    },
    Case {
        args: &["-t", "raw"],
        ..env(
            "root_fstype_unknown",
            &[("DIB_ROOT_FSTYPE", "zfs")],
            &["zfs"],
        )
    },
    Case {
        elements: &["fake-os", "fake-distro"],
        files: &[("mirror/dists/bookworm/InRelease", "x")],
        ..env(
            "release_with_slash",
            &[("DIB_FAKE_RELEASE", "../bookworm")],
            &["../bookworm"],
        )
    },
    Case {
        elements: &["fake-os", "fake-distro"],
        files: &[("mirror/dists/bookworm/InRelease", "x")],
        ..env(
            "release_upper_case",
            &[("DIB_FAKE_RELEASE", "Bookworm")],
            &["Bookworm"],
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
    // ---- more block-device layouts, module by module ----
    layout!(
        "layout_not_a_list",
        "local_loop: {name: image0}\n",
        &["list"]
    ),
    layout!(
        "layout_yaml_syntax",
        "- local_loop:\n    name: [image0\n",
        &["DIB_BLOCK_DEVICE_CONFIG"]
    ),
    layout!(
        "layout_unknown_module",
        "- raid:\n    name: md0\n",
        &["raid"]
    ),
    layout!(
        "layout_two_modules_in_one_entry",
        "- local_loop:\n    name: image0\n  mkfs:\n    name: x\n",
        &["DIB_BLOCK_DEVICE_CONFIG"]
    ),
    layout!(
        "loop_size_text",
        "- local_loop:\n    name: image0\n    size: big\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
        &["big"]
    ),
    layout!(
        "loop_size_unit",
        "- local_loop:\n    name: image0\n    size: 2GB2\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
        &["2GB2"]
    ),
    layout!(
        "loop_block_size",
        "- local_loop:\n    name: image0\n    block_size: 1000\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n",
        &["block_size"]
    ),
    layout!(
        "loop_duplicate_names",
        "- local_loop:\n    name: image0\n- mkfs:\n    name: image0\n    base: image0\n    mount:\n      mount_point: /\n",
        &["image0"]
    ),
    layout!(
        "partitioning_label_dos",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: dos\n    partitions:\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["dos"]
    ),
    layout!(
        "partitioning_no_label",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    partitions:\n      - name: root\n        size: 100%\n",
        &["label"]
    ),
    layout!(
        "partitioning_align_zero",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    align: 0\n    partitions:\n      - name: root\n        size: 100%\n",
        &["align"]
    ),
    layout!(
        "partitioning_align_text",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    align: wide\n    partitions:\n      - name: root\n        size: 100%\n",
        &["wide"]
    ),
    layout!(
        "partitioning_missing_base",
        "- partitioning:\n    base: nothing\n    label: gpt\n    partitions:\n      - name: root\n        size: 100%\n",
        &["nothing"]
    ),
    layout!(
        "partition_type_unknown",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: root\n        type: ZZZZ\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["ZZZZ"]
    ),
    layout!(
        "partition_flag_unknown",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: root\n        flags: [fast]\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["fast"]
    ),
    layout!(
        "partition_size_over_100",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: root\n        size: 101%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["101%"]
    ),
    layout!(
        "partition_size_negative",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: root\n        size: -1MiB\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["-1MiB"]
    ),
    layout!(
        "partition_without_name",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - size: 100%\n",
        &["name"]
    ),
    layout!(
        "partition_names_twice",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: root\n        size: 10MiB\n      - name: root\n        size: 100%\n",
        &["root"]
    ),
    layout!(
        "partition_unknown_key",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: root\n        colour: red\n        size: 100%\n",
        &["colour"]
    ),
    layout!(
        "mkfs_vfat_label_too_long",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: esp\n        type: EF00\n        size: 50MiB\n        mkfs:\n          type: vfat\n          label: TWELVE_CHARS\n          mount:\n            mount_point: /boot/efi\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["TWELVE_CHARS"]
    ),
    layout!(
        "mkfs_xfs_label_too_long",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      type: xfs\n      label: thirteen-char\n      mount:\n        mount_point: /\n",
        &["thirteen-char"]
    ),
    layout!(
        "mkfs_duplicate_labels",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: a\n        size: 50MiB\n        mkfs:\n          name: fa\n          type: ext4\n          label: same\n          mount:\n            mount_point: /srv\n      - name: root\n        size: 100%\n        mkfs:\n          label: same\n          mount:\n            mount_point: /\n",
        &["same"]
    ),
    layout!(
        "mkfs_label_newline",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      label: \"a\\nb\"\n      mount:\n        mount_point: /\n",
        &["label"]
    ),
    layout!(
        "mkfs_uuid_invalid",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      uuid: not-a-uuid\n      mount:\n        mount_point: /\n",
        &["not-a-uuid"]
    ),
    layout!(
        "mkfs_without_base",
        "- mkfs:\n    name: lost\n    type: ext4\n",
        &["base"]
    ),
    layout!(
        "mkfs_unknown_key",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      size: 1G\n      mount:\n        mount_point: /\n",
        &["size"]
    ),
    layout!(
        "mount_relative",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: root\n",
        &["root"]
    ),
    layout!(
        "mount_dot",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: a\n        size: 50MiB\n        mkfs:\n          name: fa\n          type: ext4\n          mount:\n            mount_point: /srv/./x\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: /\n",
        &["/srv/./x"]
    ),
    layout!(
        "mount_twice_root",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: mbr\n    partitions:\n      - name: a\n        size: 50MiB\n        mkfs:\n          name: fa\n          type: ext4\n          mount:\n            mount_point: /\n      - name: root\n        size: 100%\n        mkfs:\n          mount:\n            mount_point: //\n",
        &["/"]
    ),
    layout!(
        "mount_missing_point",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        name: m\n",
        &["mount_point"]
    ),
    layout!(
        "fstab_dump_freq_text",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n        fstab:\n          dump-freq: daily\n",
        &["daily"]
    ),
    layout!(
        "fstab_passno_negative",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n        fstab:\n          fsck-passno: -1\n",
        &["fsck-passno"]
    ),
    layout!(
        "fstab_options_space",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n        fstab:\n          options: \"defaults noatime\"\n",
        &["options"]
    ),
    layout!(
        "fstab_unknown_key",
        "- local_loop:\n    name: image0\n    mkfs:\n      name: mkfs_root\n      mount:\n        mount_point: /\n        fstab:\n          when: always\n",
        &["when"]
    ),
    layout!(
        "graph_cycle",
        "- local_loop:\n    name: image0\n- mkfs:\n    name: a\n    base: b\n    type: ext4\n- mkfs:\n    name: b\n    base: a\n    type: ext4\n",
        &["DIB_BLOCK_DEVICE_CONFIG"]
    ),
    layout!(
        "lvm_extents_unit",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: root\n        size: 100%\n- lvm:\n    name: lvm\n    base: [root]\n    pvs:\n      - name: pv\n        base: root\n    vgs:\n      - name: vg\n        base: [pv]\n    lvs:\n      - name: lv_root\n        base: vg\n        extents: 50%XYZ\n",
        &["50%XYZ"]
    ),
    layout!(
        "lvm_lv_type_unknown",
        "- local_loop:\n    name: image0\n- partitioning:\n    base: image0\n    label: gpt\n    partitions:\n      - name: root\n        size: 100%\n- lvm:\n    name: lvm\n    base: [root]\n    pvs:\n      - name: pv\n        base: root\n    vgs:\n      - name: vg\n        base: [pv]\n    lvs:\n      - name: lv_root\n        base: vg\n        size: 1G\n        type: striped-magic\n",
        &["striped-magic"]
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
    // ---- more element files ----
    element(
        "element_deps_nul",
        &[("elements/bad/element-deps", "fake\u{0}-os\n")],
        &["\\0"],
    ),
    element(
        "element_deps_space_inside",
        &[("elements/bad/element-deps", "fake os\n")],
        &["fake os"],
    ),
    element(
        "element_provides_slash",
        &[("elements/bad/element-provides", "operating/system\n")],
        &["operating/system"],
    ),
    element(
        "element_deps_not_utf8_like",
        &[("elements/bad/element-deps", "ümlaut\n")],
        &["ümlaut"],
    ),
    element(
        "package_installs_not_a_map",
        &[("elements/bad/package-installs.yaml", "- vim\n- curl\n")],
        &["package-installs.yaml"],
    ),
    element(
        "package_installs_unknown_phase",
        &[(
            "elements/bad/package-installs.yaml",
            "vim:\n  phase: lunch.d\n",
        )],
        &["lunch.d"],
    ),
    element(
        "package_installs_arch_and_not_arch",
        &[(
            "elements/bad/package-installs.yaml",
            "vim:\n  arch: amd64\n  not-arch: arm64\n",
        )],
        &["arch"],
    ),
    element(
        "package_installs_when_unset",
        &[(
            "elements/bad/package-installs.yaml",
            "vim:\n  when: DIB_NOT_SET_ANYWHERE=1\n",
        )],
        &["DIB_NOT_SET_ANYWHERE"],
    ),
    element(
        "package_installs_when_syntax",
        &[(
            "elements/bad/package-installs.yaml",
            "vim:\n  when: just-a-word\n",
        )],
        &["just-a-word"],
    ),
    element(
        "package_installs_json_malformed",
        &[("elements/bad/package-installs.json", "{\"vim\": ")],
        &["package-installs.json"],
    ),
    element(
        "package_installs_bad_name",
        &[("elements/bad/package-installs.yaml", "\"-y\":\n")],
        &["-y"],
    ),
    element(
        "pkg_map_not_an_object",
        &[("elements/bad/pkg-map", "[1, 2]")],
        &["pkg-map"],
    ),
    element(
        "pkg_map_family_not_an_object",
        &[("elements/bad/pkg-map", "{\"family\": \"debian\"}")],
        &["family"],
    ),
    element(
        "environment_unset_variable",
        &[(
            "elements/bad/environment.d/10-unset",
            "echo $DIB_NOT_SET_HERE\n",
        )],
        &["10-unset", "DIB_NOT_SET_HERE"],
    ),
    element(
        "environment_syntax_error",
        &[("elements/bad/environment.d/10-syntax", "if then fi\n")],
        &["10-syntax"],
    ),
    Case {
        elements: &["bad"],
        ..element(
            "no_operating_system",
            &[("elements/bad/element-deps", "\n")],
            &["operating-system"],
        )
    },
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
    cmd.arg("-n");
    if !c.args.contains(&"-o") {
        cmd.arg("-o").arg(s.path().join("out"));
    }
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
        // Ours start "dib-create: error:", the flag parser's "error:".
        .skip_while(|l| !l.starts_with("dib-create: error:") && !l.starts_with("error:"))
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
    // The first line is the message; the flag parser adds usage lines that
    // echo the arguments (--dry-run among them).
    let norm = |m: &str, p: &Path| {
        m.lines()
            .next()
            .unwrap_or("")
            .replace(&p.display().to_string(), "{S}")
    };
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
