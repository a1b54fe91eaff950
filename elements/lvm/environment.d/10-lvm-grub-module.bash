# GRUB reads /boot from a logical volume only with its lvm module loaded.
case " ${DIB_BOOTLOADER_GRUB_MODULES:-} " in
    *" lvm "*) ;;
    *) export DIB_BOOTLOADER_GRUB_MODULES="${DIB_BOOTLOADER_GRUB_MODULES:+$DIB_BOOTLOADER_GRUB_MODULES }lvm" ;;
esac
