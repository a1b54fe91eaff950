# shellcheck shell=bash
# Suites added next to the release, and the packages bootstrapped into every image.
export DIB_UBUNTU_MIRROR_DISTS=${DIB_UBUNTU_MIRROR_DISTS:-updates,security,backports}

# DIB installs systemd-sysv, busybox, sudo and python3 with apt's Recommends
# on, after a bootstrap without them; ours bootstraps everything in one run
# without Recommends. So the Recommends DIB's images get from those packages
# are named here: systemd's (resolved, time sync, networkd-dispatcher, the NSS
# and user-session modules), then those of what they pull in (GLib's
# xdg-user-dirs and shared-mime-info, libdevmapper's dmsetup). Before noble,
# systemd-resolved was part of systemd itself.
ubuntu_recommends=systemd-timesyncd,libnss-systemd,networkd-dispatcher,dbus-user-session,xdg-user-dirs,shared-mime-info,dmsetup
case ${DIB_RELEASE:-} in
    trusty | xenial | bionic | focal | jammy) ;;
    *) ubuntu_recommends=systemd-resolved,$ubuntu_recommends ;;
esac
export DIB_DEBOOTSTRAP_INCLUDE=${DIB_DEBOOTSTRAP_INCLUDE:-systemd-sysv,$ubuntu_recommends,busybox,sudo,python3}
unset ubuntu_recommends
