# Sourced before each phase. This layout boots through the BIOS, which
# arm64 machines do not have, so refuse it there and point at the EFI one.
case "${ARCH:-}" in
    arm64|aarch64)
        echo "block-device-mbr cannot boot on ${ARCH}; use block-device-efi instead" >&2
        exit 1
        ;;
esac

export DIB_BLOCK_DEVICE=mbr
