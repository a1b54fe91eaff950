# shellcheck shell=bash
# Which kernel package family the image gets.
export DIB_UBUNTU_KERNEL=${DIB_UBUNTU_KERNEL:-linux-image-generic}
