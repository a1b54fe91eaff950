# shellcheck shell=bash
# Debian: which release, from where, and which apt sources the image gets.
export DISTRO_NAME=debian
export DIB_RELEASE=${DIB_RELEASE:-bookworm}
export DIB_INIT_SYSTEM=${DIB_INIT_SYSTEM:-systemd}
export EFI_BOOT_DIR=EFI/debian

if [ -n "${DIB_DEBIAN_DISTRIBUTION_MIRROR:-}" ]; then
    DIB_DISTRIBUTION_MIRROR=$DIB_DEBIAN_DISTRIBUTION_MIRROR
fi
export DIB_DISTRIBUTION_MIRROR=${DIB_DISTRIBUTION_MIRROR:-http://deb.debian.org/debian}

# Security updates live next to the archive on Debian's mirrors
# (<host>/debian -> <host>/debian-security).
if [ -z "${DIB_DEBIAN_SECURITY_MIRROR:-}" ]; then
    case ${DIB_DISTRIBUTION_MIRROR%/} in
        */debian) DIB_DEBIAN_SECURITY_MIRROR=${DIB_DISTRIBUTION_MIRROR%/}-security ;;
        *) DIB_DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security ;;
    esac
fi
export DIB_DEBIAN_SECURITY_MIRROR
export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main}
export DIB_DEBIAN_COMPONENTS_WS=${DIB_DEBIAN_COMPONENTS//,/ }

# Packages bootstrapped into every Debian image. The bootstrap installs no
# Recommends, so systemd's own are named: dbus (hostnamectl, timedatectl,
# logind), time sync, and the PAM and NSS modules, as DIB's images have them.
export DIB_DEBOOTSTRAP_INCLUDE=${DIB_DEBOOTSTRAP_INCLUDE:-systemd-sysv,dbus,systemd-timesyncd,libpam-systemd,libnss-systemd,busybox,sudo,gnupg,python3}

if [ -z "${DIB_APT_SOURCES_CONF:-}" ]; then
    case $DIB_RELEASE in
        testing|unstable|sid)
            DIB_APT_SOURCES_CONF="default:deb $DIB_DISTRIBUTION_MIRROR $DIB_RELEASE $DIB_DEBIAN_COMPONENTS_WS"
            ;;
        *)
            DIB_APT_SOURCES_CONF="default:deb $DIB_DISTRIBUTION_MIRROR $DIB_RELEASE $DIB_DEBIAN_COMPONENTS_WS
updates:deb $DIB_DISTRIBUTION_MIRROR $DIB_RELEASE-updates $DIB_DEBIAN_COMPONENTS_WS
security:deb $DIB_DEBIAN_SECURITY_MIRROR $DIB_RELEASE-security${DIB_DEBIAN_SECURITY_SUBPATH:-} $DIB_DEBIAN_COMPONENTS_WS"
            ;;
    esac
fi
export DIB_APT_SOURCES_CONF
