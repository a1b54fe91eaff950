//! Where the data we ship (elements, block-device layouts, `$_LIB`, helpers) lives.
//!
//! Order: `DIB_CREATE_DATA_DIR`; then the directory holding the executable and its
//! ancestors (an installed tree `share/dib-create`, or the source tree when run
//! from `target/`); then the source tree this binary was built from.

use std::path::{Path, PathBuf};

/// The root of the shipped data (holds `elements/`). For the plan only: the
/// executor takes it from the plan's settings.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DIB_CREATE_DATA_DIR") {
        return PathBuf::from(d);
    }
    installed_data_dir()
}

/// The shipped data found from the executable's place, else the source tree.
pub fn installed_data_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if let Some(found) = data_dir_at(dir) {
                return found;
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data_dir_at(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("share/dib-create")]
        .into_iter()
        .find(|d| d.join("elements").is_dir() && d.join("lib/dib").is_dir())
}

/// Our shipped elements (appended last to ELEMENTS_PATH).
pub fn elements_dir() -> PathBuf {
    data_dir().join(ELEMENTS)
}

/// Shipped block-device layouts.
pub fn blockdev_configs_dir() -> PathBuf {
    data_dir().join(BLOCKDEV_CONFIGS)
}

/// `$_LIB`: shell function libraries that upstream elements source.
pub fn lib_dir() -> PathBuf {
    data_dir().join(LIB)
}

/// Where each part of the shipped data lies below the data directory.
pub const ELEMENTS: &str = "elements";
pub const BLOCKDEV_CONFIGS: &str = "blockdev-configs";
/// `$_LIB`: shell function libraries that upstream elements source.
pub const LIB: &str = "lib/dib";
/// Helpers injected into the chroot for the build only (install-packages, ...).
pub const CHROOT_HELPERS: &str = "lib/chroot-bin";
/// Helpers put on PATH for hooks that run outside the chroot (sudo shim, ...).
pub const HOST_HELPERS: &str = "lib/host-bin";
