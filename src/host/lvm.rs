//! The lvm2 tools, run with a private configuration in the build directory.
//!
//! Run with the host's own configuration, they would write backups and
//! archives to `/etc/lvm`, consult the devices file and udev, and see (and
//! clash with) the host's volume groups. The private one sees only the
//! build's own devices, keeps its locks in the build directory, writes no
//! backup, and never asks device-mapper for anything: the build writes
//! metadata only, and nothing is activated.

use std::fs;
use std::path::{Path, PathBuf};

use super::runner::Cmd;

/// A private `LVM_SYSTEM_DIR`.
pub struct LvmConfig {
    dir: PathBuf,
}

impl LvmConfig {
    /// Writes `lvm.conf` under `dir`, accepting only `devices`.
    pub fn create(dir: &Path, devices: &[PathBuf]) -> anyhow::Result<Self> {
        let locks = dir.join("lock");
        fs::create_dir_all(&locks)?;
        fs::write(dir.join("lvm.conf"), render(&locks, devices))?;
        Ok(LvmConfig {
            dir: dir.to_path_buf(),
        })
    }

    /// An lvm2 command under this configuration.
    pub fn cmd(&self, what: impl Into<String>, program: &str) -> Cmd {
        Cmd::new(what, program)
            .env("LVM_SYSTEM_DIR", &self.dir)
            // The runner's pipes are inherited on purpose; lvm2 warns of each.
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .arg("--driverloaded")
            .arg("n")
    }
}

/// The configuration text: a filter that accepts exactly `devices`.
pub fn render(locks: &Path, devices: &[PathBuf]) -> String {
    let accept: Vec<String> = devices
        .iter()
        .map(|d| format!("\"a|^{}$|\"", d.display()))
        .chain(std::iter::once("\"r|.*|\"".to_string()))
        .collect();
    let filter = accept.join(", ");
    format!(
        "# Written by dib-create for one build; the host's /etc/lvm is not read.\n\
         devices {{\n\
         \tobtain_device_list_from_udev = 0\n\
         \texternal_device_info_source = \"none\"\n\
         \tuse_devicesfile = 0\n\
         \thints = \"none\"\n\
         \tfilter = [ {filter} ]\n\
         \tglobal_filter = [ {filter} ]\n\
         }}\n\
         global {{\n\
         \tlocking_dir = \"{}\"\n\
         \tuse_lvmlockd = 0\n\
         \tevent_activation = 0\n\
         }}\n\
         backup {{\n\
         \tbackup = 0\n\
         \tarchive = 0\n\
         }}\n\
         activation {{\n\
         \tudev_sync = 0\n\
         \tudev_rules = 0\n\
         \tmonitoring = 0\n\
         }}\n",
        locks.display()
    )
}
