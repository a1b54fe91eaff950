//! `sfdisk -J` output as types, to check partition tables with an
//! independent tool (tests, and the executor's sanity checks).

use std::path::Path;

use serde::Deserialize;

use crate::host::{Cmd, CmdError};

/// The top level of `sfdisk -J`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SfdiskDump {
    pub partitiontable: SfdiskTable,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SfdiskTable {
    /// `dos` or `gpt`.
    pub label: String,
    /// Disk identifier: `0x1234abcd` (dos) or a GUID (gpt).
    pub id: String,
    pub device: String,
    pub unit: String,
    #[serde(default)]
    pub firstlba: Option<u64>,
    #[serde(default)]
    pub lastlba: Option<u64>,
    #[serde(default)]
    pub sectorsize: Option<u64>,
    #[serde(default)]
    pub partitions: Vec<SfdiskPartition>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SfdiskPartition {
    pub node: String,
    /// In sectors.
    pub start: u64,
    /// In sectors.
    pub size: u64,
    /// A hex byte without `0x` (dos) or a type GUID (gpt).
    #[serde(rename = "type")]
    pub part_type: String,
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub bootable: bool,
    /// GPT attributes, e.g. `LegacyBIOSBootable`.
    #[serde(default)]
    pub attrs: Option<String>,
}

impl SfdiskPartition {
    /// The partition number, from the end of the node name (`disk.img5` → 5).
    pub fn number(&self) -> Option<u32> {
        let digits = self.node.len()
            - self
                .node
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .len();
        self.node[self.node.len() - digits..].parse().ok()
    }
}

/// Reads the partition table of an image file or device with `sfdisk -J`.
pub fn dump(path: &Path) -> Result<SfdiskDump, CmdError> {
    Cmd::new("reading the partition table", "sfdisk")
        .arg("-J")
        .arg(path)
        .run_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let gpt: SfdiskDump =
            serde_json::from_str(&std::fs::read_to_string(dir.join("sfdisk-efi.json")).unwrap())
                .unwrap();
        let t = &gpt.partitiontable;
        assert_eq!(t.label, "gpt");
        assert_eq!(t.sectorsize, Some(512));
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[0].name.as_deref(), Some("ESP"));
        assert_eq!(t.partitions[0].start, 2048);
        assert_eq!(t.partitions[2].attrs, None);
        assert_eq!(t.partitions[2].size, 950272);
        assert_eq!(t.partitions[2].number(), Some(3));
        let mbr: SfdiskDump = serde_json::from_str(
            &std::fs::read_to_string(dir.join("sfdisk-mbr-logical.json")).unwrap(),
        )
        .unwrap();
        let t = &mbr.partitiontable;
        assert_eq!(t.label, "dos");
        let numbers: Vec<Option<u32>> = t.partitions.iter().map(|p| p.number()).collect();
        assert_eq!(numbers, [Some(1), Some(2), Some(5), Some(6)]);
        assert!(t.partitions[0].bootable);
        assert_eq!(t.partitions[1].part_type, "f");
    }
}
