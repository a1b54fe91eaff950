//! Which Debian package provides each host tool we call, so that a missing tool
//! is an error that says what to install. Data, not code paths.

const TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("mmdebstrap", "mmdebstrap"),
    ("mke2fs", "e2fsprogs"),
    ("mkfs.ext2", "e2fsprogs"),
    ("mkfs.ext3", "e2fsprogs"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("tune2fs", "e2fsprogs"),
    ("mkfs.xfs", "xfsprogs"),
    ("mkfs.btrfs", "btrfs-progs"),
    ("mkfs.vfat", "dosfstools"),
    ("mkswap", "util-linux"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("mdir", "mtools"),
    ("partx", "util-linux"),
    ("losetup", "mount"),
    ("sgdisk", "gdisk"),
    ("sfdisk", "fdisk"),
    ("mksquashfs", "squashfs-tools"),
    ("qemu-img", "qemu-utils"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-system-arm", "qemu-system-arm"),
    ("qemu-system-ppc64", "qemu-system-ppc"),
    ("qemu-aarch64-static", "qemu-user-static"),
    ("qemu-arm-static", "qemu-user-static"),
    ("qemu-i386-static", "qemu-user-static"),
    ("qemu-ppc64le-static", "qemu-user-static"),
    ("arch-test", "arch-test"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("pvcreate", "lvm2"),
    ("vgcfgrestore", "lvm2"),
    ("lvs", "lvm2"),
    ("grub-mkimage", "grub-common"),
    ("zstd", "zstd"),
    ("ostree", "ostree"),
    ("gpg", "gpg"),
    ("gpg-agent", "gpg-agent"),
    ("sudo", "sudo"),
];

/// The Debian package that ships `tool`, if we know it.
pub fn package_for(tool: &str) -> Option<&'static str> {
    TOOLS.iter().find(|(t, _)| *t == tool).map(|(_, p)| *p)
}

/// True if `tool` is found on PATH.
pub fn on_path(tool: &str) -> bool {
    find(tool).is_some()
}

/// The full path of `tool` on PATH.
pub fn find(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_tools() {
        assert_eq!(super::package_for("mcopy"), Some("mtools"));
        assert_eq!(super::package_for("nope"), None);
        assert!(super::on_path("sh"));
    }
}
