//! The root filesystem: the build chroot and foreign architectures. The
//! bootstrap itself is an element (`debootstrap`'s root.d), as in DIB.

pub mod binfmt;
pub mod chroot;
pub mod native;
