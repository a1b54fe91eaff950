# shellcheck shell=bash
# Suites added next to the release, and the packages bootstrapped into every image.
export DIB_UBUNTU_MIRROR_DISTS=${DIB_UBUNTU_MIRROR_DISTS:-updates,security,backports}
export DIB_DEBOOTSTRAP_INCLUDE=${DIB_DEBOOTSTRAP_INCLUDE:-systemd-sysv,busybox,sudo,python3}
