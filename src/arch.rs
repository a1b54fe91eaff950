//! The one table of architectures: the names DIB and the tools use for each,
//! the qemu-user emulator that runs its binaries on another host, its OCI
//! name, and the disk layout `vm` picks for it. A leaf module.

use serde::Serialize;

/// One architecture a build can target.
#[derive(Debug, PartialEq, Eq)]
pub struct Arch {
    /// The dpkg name, which is what DIB's `ARCH` holds (amd64, arm64, ...).
    pub dpkg: &'static str,
    /// Other names accepted for `-a`, as DIB accepts them (x86_64, aarch64, ...).
    pub aliases: &'static [&'static str],
    /// The kernel's name (`uname -m`).
    pub uname: &'static str,
    /// The qemu-system that boots its images (`qemu-system-<name>`).
    pub qemu_system: &'static str,
    /// The qemu-user name (`qemu-<name>-static`, binfmt entry `qemu-<name>`).
    pub qemu_user: &'static str,
    /// The OCI/Go architecture and variant.
    pub oci: (&'static str, Option<&'static str>),
    /// The block-device element `vm` adds when the user names none.
    pub vm_layout: &'static str,
}

/// Every architecture dib-create knows, by dpkg name.
pub const ARCHES: &[Arch] = &[
    Arch {
        dpkg: "amd64",
        aliases: &["x86_64"],
        uname: "x86_64",
        qemu_system: "x86_64",
        qemu_user: "x86_64",
        oci: ("amd64", None),
        vm_layout: "block-device-mbr",
    },
    Arch {
        dpkg: "arm64",
        aliases: &["aarch64"],
        uname: "aarch64",
        qemu_system: "aarch64",
        qemu_user: "aarch64",
        oci: ("arm64", Some("v8")),
        // arm64 machines boot through UEFI only.
        vm_layout: "block-device-efi",
    },
    Arch {
        dpkg: "armhf",
        aliases: &["armv7l", "armv7", "arm"],
        uname: "armv7l",
        qemu_system: "arm",
        qemu_user: "arm",
        oci: ("arm", Some("v7")),
        vm_layout: "block-device-efi",
    },
    Arch {
        dpkg: "i386",
        aliases: &["x86", "i686", "i586"],
        uname: "i686",
        qemu_system: "x86_64",
        qemu_user: "i386",
        oci: ("386", None),
        vm_layout: "block-device-mbr",
    },
    Arch {
        dpkg: "ppc64el",
        aliases: &["ppc64le", "powerpc64le"],
        uname: "ppc64le",
        qemu_system: "ppc64",
        qemu_user: "ppc64le",
        oci: ("ppc64le", None),
        // block-device-gpt has a ppc64el layout: a PReP boot partition,
        // which Open Firmware loads GRUB from, and the root.
        vm_layout: "block-device-gpt",
    },
    Arch {
        dpkg: "s390x",
        aliases: &[],
        uname: "s390x",
        qemu_system: "s390x",
        qemu_user: "s390x",
        oci: ("s390x", None),
        vm_layout: "block-device-mbr",
    },
    Arch {
        dpkg: "riscv64",
        aliases: &[],
        uname: "riscv64",
        qemu_system: "riscv64",
        qemu_user: "riscv64",
        oci: ("riscv64", None),
        vm_layout: "block-device-efi",
    },
];

/// `-a` named an architecture this table does not have.
#[derive(Debug, thiserror::Error)]
#[error("-a {0}: unknown architecture; use one of {known}", known = known())]
pub struct UnknownArch(pub String);

impl Arch {
    /// The architecture `name` stands for: a dpkg name or an alias.
    pub fn parse(name: &str) -> Result<&'static Arch, UnknownArch> {
        ARCHES
            .iter()
            .find(|a| a.dpkg == name || a.aliases.contains(&name))
            .ok_or_else(|| UnknownArch(name.to_string()))
    }

    /// The architecture of this host (the one dib-create was built for).
    pub fn host() -> &'static Arch {
        let rust = match std::env::consts::ARCH {
            "x86" => "i386",
            "arm" => "armhf",
            "powerpc64" => "ppc64el",
            other => other,
        };
        Arch::parse(rust).unwrap_or(&ARCHES[0])
    }

    /// True when this host's kernel may run this architecture's binaries
    /// itself: its own, and i386 on amd64, where the kernel can have IA-32
    /// emulation (`crate::host::runs_natively` asks the kernel whether it has).
    pub fn may_run_natively(&self) -> bool {
        let host = Arch::host();
        self == host || (host.dpkg == "amd64" && self.dpkg == "i386")
    }
}

impl Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.dpkg)
    }
}

/// Every name `-a` takes, for messages.
fn known() -> String {
    ARCHES
        .iter()
        .map(|a| {
            if a.aliases.is_empty() {
                a.dpkg.to_string()
            } else {
                format!("{} ({})", a.dpkg, a.aliases.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        assert_eq!(Arch::parse("x86_64").unwrap().dpkg, "amd64");
        assert_eq!(Arch::parse("aarch64").unwrap().dpkg, "arm64");
        assert_eq!(Arch::parse("armv7l").unwrap().dpkg, "armhf");
        assert_eq!(Arch::parse("ppc64le").unwrap().dpkg, "ppc64el");
        assert_eq!(Arch::parse("i686").unwrap().dpkg, "i386");
        let e = Arch::parse("vax").unwrap_err().to_string();
        assert!(e.contains("vax") && e.contains("arm64 (aarch64)"), "{e}");
    }

    #[test]
    fn the_host_runs_its_own_binaries() {
        assert!(Arch::host().may_run_natively());
        let names: Vec<&str> = ARCHES.iter().map(|a| a.dpkg).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique);
    }
}
