# shellcheck shell=bash
# Ubuntu: release, components and the mirror that serves this architecture.
export DISTRO_NAME=${DISTRO_NAME:-ubuntu}
export DIB_RELEASE=${DIB_RELEASE:-noble}
export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main,universe}
export EFI_BOOT_DIR=EFI/ubuntu
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}

# Only amd64 and i386 are on the main archive; the rest is on ports.
case ${ARCH:-amd64} in
    amd64|i386) _ubuntu_default_mirror=http://archive.ubuntu.com/ubuntu ;;
    *) _ubuntu_default_mirror=http://ports.ubuntu.com/ubuntu-ports ;;
esac
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-$_ubuntu_default_mirror}
unset _ubuntu_default_mirror
