# shellcheck shell=bash
# Sourced before each phase. Sorted before debian-minimal's environment, so
# that the archive component with the Pi's firmware is in the defaults.

case "${ARCH:-}" in
    arm64 | aarch64) ;;
    *)
        echo "rpi3: the Raspberry Pi 3 image is arm64 only (ARCH=${ARCH:-unset}); build with -a arm64" >&2
        exit 1
        ;;
esac

# raspi-firmware lives in non-free-firmware (bookworm and later).
case ",${DIB_DEBIAN_COMPONENTS:-main}," in
    *,non-free-firmware,*) export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main} ;;
    *) export DIB_DEBIAN_COMPONENTS=${DIB_DEBIAN_COMPONENTS:-main},non-free-firmware ;;
esac

# The Pi 3's console UART is the mini UART, ttyS1 under Linux (the PL011,
# ttyAMA0, drives Bluetooth). "none" leaves the console to the screen only.
export DIB_RPI_SERIAL_CONSOLE=${DIB_RPI_SERIAL_CONSOLE:-ttyS1,115200}
# Extra kernel arguments for cmdline.txt.
export DIB_RPI_EXTRA_CMDLINE=${DIB_RPI_EXTRA_CMDLINE:-}
# Elements such as the bootloader read this to learn the partition style.
export DIB_BLOCK_DEVICE=rpi3
