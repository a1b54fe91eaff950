# dracut builds the initramfs (its ostree module boots the deployment); it
# conflicts with initramfs-tools, which the vm element leaves out for it.
export DIB_INITRAMFS_BUILDER=dracut
