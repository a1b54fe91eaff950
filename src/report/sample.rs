//! A made-up but realistic report (a Debian VM image, partly restored from the
//! phase cache) for the renderer's tests and the screenshot in docs/report.md.
//! Public so that integration tests can use it; not part of the API.

use super::model::*;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// The sample report: a successful build of `debian-12` for amd64.
#[doc(hidden)]
pub fn sample() -> Report {
    let timeline = sample_timeline();
    let seconds = timeline
        .iter()
        .map(|b| b.start + b.seconds)
        .fold(0.0, f64::max)
        + 0.4;
    Report {
        image: "debian-12".into(),
        arch: "amd64".into(),
        ok: true,
        error: None,
        seconds,
        // 2025-06-02 09:41:07 UTC
        started_at: 1_748_857_267,
        timeline,
        disk: Some(sample_disk()),
        contents: Some(sample_contents()),
        inputs: sample_inputs(),
    }
}

/// Lays bars end to end, as one build runs them, with a short pause between.
struct Clock {
    t: f64,
    bars: Vec<Bar>,
}

impl Clock {
    fn push(&mut self, phase: &str, label: &str, element: Option<&str>, kind: BarKind, s: f64) {
        self.bars.push(Bar {
            phase: phase.into(),
            label: label.into(),
            element: element.map(String::from),
            start: self.t,
            seconds: s,
            kind,
            ok: true,
        });
        self.t += s + 0.05;
    }

    fn hooks(&mut self, phase: &str, kind: BarKind, hooks: &[(&str, &str, f64)]) {
        for (label, element, s) in hooks {
            self.push(phase, label, Some(element), kind, *s);
        }
    }
}

fn sample_timeline() -> Vec<Bar> {
    use BarKind::{Hook, Restored, Step};
    let mut c = Clock {
        t: 0.0,
        bars: Vec::new(),
    };
    c.push("phase-cache", "look up the phase cache", None, Step, 0.9);
    c.hooks(
        "root.d",
        Restored,
        &[
            ("08-debootstrap", "debootstrap", 5.8),
            (
                "75-debian-minimal-baseline-environment",
                "debian-minimal",
                0.6,
            ),
            ("90-base-dib-run-parts", "dib-run-parts", 0.2),
        ],
    );
    c.hooks(
        "extra-data.d",
        Restored,
        &[
            ("10-create-pkg-map-dir", "pkg-map", 0.1),
            ("20-manifest-dir", "manifests", 0.1),
        ],
    );
    c.hooks(
        "pre-install.d",
        Hook,
        &[
            ("00-apt-sources", "debian-minimal", 0.4),
            ("01-dpkg-noninteractive", "dpkg", 0.1),
            ("02-package-installs", "package-installs", 3.2),
        ],
    );
    c.hooks(
        "install.d",
        Hook,
        &[
            ("00-baseline-environment", "base", 0.3),
            ("01-package-installs", "package-installs", 96.4),
            ("10-cloud-init", "cloud-init-datasources", 1.8),
            ("50-store-build-settings", "base", 0.1),
            ("80-disable-rfc3041", "debian-minimal", 0.1),
            ("99-package-uninstalls", "package-installs", 0.7),
        ],
    );
    c.hooks(
        "post-install.d",
        Hook,
        &[
            ("01-package-installs", "package-installs", 9.7),
            ("05-fstab-rootfs-label", "vm", 0.1),
            ("10-enable-cloud-init", "cloud-init-datasources", 0.5),
            ("99-reset-locale", "debian-minimal", 0.2),
        ],
    );
    c.push("disk", "create the disk and the GPT", None, Step, 0.6);
    c.hooks(
        "block-device.d",
        Hook,
        &[("10-block-device-settings", "vm", 0.2)],
    );
    c.push("disk", "make the filesystems (ext4, vfat)", None, Step, 2.4);
    c.push(
        "disk",
        "copy the tree into the filesystems",
        None,
        Step,
        24.7,
    );
    c.hooks("pre-finalise.d", Hook, &[("01-fix-resolv", "base", 0.1)]);
    c.hooks(
        "finalise.d",
        Hook,
        &[
            ("01-clean-old-kernels", "base", 1.3),
            ("50-bootloader", "bootloader", 16.2),
            ("99-cleanup-tmp-grub", "bootloader", 0.2),
        ],
    );
    c.hooks(
        "cleanup.d",
        Hook,
        &[
            ("01-copy-manifests-dir", "manifests", 0.3),
            ("99-tidy-logs", "base", 0.1),
        ],
    );
    c.push("outputs", "convert to qcow2", None, Step, 31.5);
    c.bars
}

fn sample_disk() -> DiskPicture {
    let size = 2 * GIB;
    let root_start = 102 * MIB;
    let root_size = size - root_start - MIB;
    DiskPicture {
        size,
        table: Some("gpt".into()),
        partitions: vec![
            PartPicture {
                name: "BSP".into(),
                number: 1,
                start: MIB,
                size: MIB,
                part_type: "EF02".into(),
                boot: false,
                filesystem: None,
            },
            PartPicture {
                name: "ESP".into(),
                number: 2,
                start: 2 * MIB,
                size: 100 * MIB,
                part_type: "EF00".into(),
                boot: true,
                filesystem: Some(FsPicture {
                    fstype: "vfat".into(),
                    label: Some("ESP".into()),
                    mount_point: Some("/boot/efi".into()),
                    total: Some(104_607_744),
                    used: Some(6_340_608),
                }),
            },
            PartPicture {
                name: "root".into(),
                number: 3,
                start: root_start,
                size: root_size,
                part_type: "8300".into(),
                boot: false,
                filesystem: Some(FsPicture {
                    fstype: "ext4".into(),
                    label: Some("cloudimg-rootfs".into()),
                    mount_point: Some("/".into()),
                    total: Some(1_972_371_456),
                    used: Some(1_318_658_048),
                }),
            },
        ],
    }
}

/// The biggest packages of a Debian 12 cloud image, with their installed size
/// in KiB (as dpkg records it).
const BIG_PACKAGES: &[(&str, &str, u64)] = &[
    ("linux-image-6.1.0-37-amd64", "6.1.140-1", 408_112),
    ("firmware-linux-free", "20200122-1", 4_232),
    ("libllvm15", "1:15.0.6-4+b1", 118_402),
    ("python3.11-minimal", "3.11.2-6+deb12u6", 5_410),
    ("libpython3.11-stdlib", "3.11.2-6+deb12u6", 8_972),
    ("perl-modules-5.36", "5.36.0-7+deb12u2", 17_804),
    ("systemd", "252.38-1~deb12u1", 13_920),
    ("libc6", "2.36-9+deb12u10", 12_988),
    ("coreutils", "9.1-1", 18_062),
    ("vim-runtime", "2:9.0.1378-2+deb12u2", 36_604),
    ("grub-common", "2.06-13+deb12u1", 14_448),
    ("libicu72", "72.1-3+deb12u1", 36_732),
    ("cloud-init", "22.4.2-1+deb12u3", 3_012),
    ("locales", "2.36-9+deb12u10", 16_942),
    ("libssl3", "3.0.16-1~deb12u1", 6_124),
    ("libperl5.36", "5.36.0-7+deb12u2", 28_196),
    ("udev", "252.38-1~deb12u1", 10_476),
    ("apt", "2.6.1", 4_164),
    ("dpkg", "1.21.22", 6_524),
    ("bash", "5.2.15-2+b8", 7_164),
    ("util-linux", "2.38.1-5+deb12u3", 4_684),
    ("openssh-server", "1:9.2p1-2+deb12u6", 1_868),
    ("openssh-client", "1:9.2p1-2+deb12u6", 4_224),
    ("libgnutls30", "3.7.9-2+deb12u4", 3_372),
    ("libstdc++6", "12.2.0-14+deb12u1", 2_932),
    ("libsystemd-shared", "252.38-1~deb12u1", 5_768),
    ("iproute2", "6.1.0-3", 3_988),
    ("e2fsprogs", "1.47.0-2", 1_560),
    ("tzdata", "2025b-0+deb12u1", 3_396),
    ("libglib2.0-0", "2.74.6-2+deb12u6", 4_312),
    ("python3-cryptography", "38.0.4-3+deb12u1", 3_400),
    ("grub-efi-amd64-bin", "2.06-13+deb12u1", 7_096),
    ("grub-pc-bin", "2.06-13+deb12u1", 3_748),
    ("gpgv", "2.2.40-1.1", 896),
    ("libdb5.3", "5.3.28+dfsg2-1", 1_996),
    ("ca-certificates", "20230311+deb12u1", 406),
    ("python3-jinja2", "3.1.2-1+deb12u2", 1_000),
    ("libsqlite3-0", "3.40.1-2+deb12u1", 1_648),
    ("findutils", "4.9.0-4", 1_972),
    ("tar", "1.34+dfsg-1.2+deb12u1", 3_152),
];

/// Word stems for the long tail of small packages.
const STEMS: &[&str] = &[
    "acl",
    "attr",
    "audit",
    "bz2",
    "cap",
    "crypt",
    "curl",
    "dbus",
    "debconf",
    "ext2fs",
    "fdisk",
    "ffi",
    "gcrypt",
    "gmp",
    "gpg-error",
    "hogweed",
    "idn2",
    "kmod",
    "lz4",
    "lzma",
    "mnl",
    "mount",
    "ncurses",
    "nettle",
    "nftnl",
    "pam",
    "pcre2",
    "popt",
    "readline",
    "seccomp",
    "selinux",
    "semanage",
    "sepol",
    "smartcols",
    "tasn1",
    "tinfo",
    "udev",
    "unistring",
    "uuid",
    "xxhash",
];

fn sample_packages() -> Vec<PackageSize> {
    let mut packages: Vec<PackageSize> = BIG_PACKAGES
        .iter()
        .map(|(name, version, kib)| PackageSize {
            name: (*name).into(),
            version: (*version).into(),
            bytes: kib * 1024,
        })
        .collect();
    // The long tail: small libraries and their tools, sizes falling off.
    let kinds = ["lib{}1", "{}-utils", "lib{}-dev", "python3-{}"];
    for (i, (kind, stem)) in kinds
        .iter()
        .flat_map(|k| STEMS.iter().map(move |s| (k, s)))
        .take(160)
        .enumerate()
    {
        let jitter = (i as u64 * 7919) % 211;
        packages.push(PackageSize {
            name: kind.replace("{}", stem),
            version: format!("{}.{}-{}", 1 + i % 4, i % 13, 1 + i % 3),
            bytes: (900 - (i as u64 * 5) + jitter) * 1024,
        });
    }
    packages.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    packages
}

fn sample_contents() -> Contents {
    let dirs: &[(&str, u64)] = &[
        ("/usr", 1_148 * MIB),
        ("/usr/lib", 801 * MIB),
        ("/usr/lib/modules", 396 * MIB),
        ("/usr/share", 232 * MIB),
        ("/usr/lib/x86_64-linux-gnu", 221 * MIB),
        ("/usr/lib/python3", 58 * MIB),
        ("/usr/share/locale", 41 * MIB),
        ("/usr/bin", 79 * MIB),
        ("/var", 96 * MIB),
        ("/var/lib", 61 * MIB),
        ("/usr/share/vim", 36 * MIB),
        ("/var/cache", 31 * MIB),
        ("/boot", 74 * MIB),
        ("/usr/lib/grub", 29 * MIB),
        ("/etc", 6 * MIB),
    ];
    let mut directories: Vec<DirSize> = dirs
        .iter()
        .map(|(path, bytes)| DirSize {
            path: (*path).into(),
            bytes: *bytes,
        })
        .collect();
    directories.sort_by_key(|d| std::cmp::Reverse(d.bytes));
    Contents {
        packages: sample_packages(),
        directories,
        total_bytes: 1_318_658_048,
        files: 41_872,
    }
}

fn sample_inputs() -> Inputs {
    let shipped = "/usr/share/dib-create/elements";
    let element = |name: &str, requested: bool| ElementInput {
        name: name.into(),
        path: format!("{shipped}/{name}"),
        overrides: Vec::new(),
        requested,
    };
    let elements = vec![
        element("vm", true),
        element("debian", true),
        element("debian-minimal", false),
        element("debootstrap", false),
        element("package-installs", false),
        element("dib-init-system", false),
        element("block-device-efi", false),
        ElementInput {
            name: "bootloader".into(),
            path: "/home/ada/elements/bootloader".into(),
            overrides: vec![shipped.into()],
            requested: false,
        },
    ];
    Inputs {
        elements,
        lockfile: Some(LockInput {
            path: "/home/ada/images/debian-12.lock".into(),
            sha256: "5d41b6f0c0a8e2b1f3d0e6a97c4b2f18e37d9a0c6b5e4f3a2d1c0b9a8f7e6d5c".into(),
        }),
        source_date_epoch: Some(1_748_736_000),
        outputs: vec![
            output("debian-12.qcow2", "qcow2", 618_987_520, "9f2c"),
            output("debian-12.tar", "tar", 1_402_388_480, "31ab"),
            output(
                "debian-12.d/dib-manifests.tar.gz",
                "manifest",
                48_213,
                "c07e",
            ),
            output("debian-12.packages", "packages", 9_214, "7d10"),
        ],
    }
}

/// An output with a made-up but full-length digest, seeded by `seed`.
fn output(path: &str, kind: &str, bytes: u64, seed: &str) -> OutputFile {
    OutputFile {
        path: format!("/home/ada/images/{path}"),
        kind: kind.into(),
        bytes,
        sha256: seed.repeat(16),
    }
}
