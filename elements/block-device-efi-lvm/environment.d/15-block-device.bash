# Sourced before each phase. POWER firmware does not boot from an EFI
# system partition, so refuse the layout there.
case "${ARCH:-}" in
    ppc64|ppc64le|ppc64el)
        echo "block-device-efi-lvm does not work on POWER (${ARCH}); use block-device-gpt or block-device-mbr" >&2
        exit 1
        ;;
esac

# Elements such as the bootloader read this to learn the partition style.
export DIB_BLOCK_DEVICE=efi
