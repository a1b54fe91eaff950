# The initramfs builder the image gets: initramfs-tools, unless an element
# brings another (ostree-deploy: dracut), since the two conflict.
export DIB_INITRAMFS_BUILDER=${DIB_INITRAMFS_BUILDER:-initramfs-tools}
