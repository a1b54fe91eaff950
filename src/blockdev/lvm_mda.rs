//! The bytes lvm2 leaves on a physical volume, read and made reproducible.
//!
//! `vgcfgrestore` writes the volume group's text from the metadata we give
//! it, but it frames that text with what changes on every run: the time in
//! its header comment, the command line (with the build directory) as the
//! description, the build host's name and kernel, and each physical
//! volume's device path on the host (`/dev/loop3p2`, a hint only). Here the
//! text is rewritten without them and the checksums are recomputed, so two
//! builds of one layout give the same disk.
//!
//! The format (lvm2's `format_text/layout.h`): sector 1 holds the label,
//! whose PV header lists the metadata areas; a metadata area begins with a
//! 512-byte header (checksum, magic, version, area start and size, then the
//! locations of the text within the area), and the text follows, NUL
//! terminated. All integers are little-endian.

use std::fmt;

use super::lvm::{BUILD_VG_FLAGS, CREATION_HOST};

/// Where lvm2 puts the label: the second sector of the physical volume.
pub const LABEL_OFFSET: u64 = 512;
pub const SECTOR: usize = 512;
const LABEL_ID: &[u8] = b"LABELONE";
const LABEL_TYPE: &[u8] = b"LVM2 001";
const MDA_MAGIC: &[u8] = b" LVM2 x[5A%r0N*>";
/// The checksum lvm2 writes: CRC-32 (reflected, poly 0x04C11DB7) from its
/// own initial value, with no final inversion.
const LVM_CRC: crc::Algorithm<u32> = crc::Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    // lvm2's INITIAL_CRC 0xf597a6cf, bit-reversed as the model takes it.
    init: 0xf365_e9af,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0x4991_cf02,
    residue: 0,
};

#[derive(Debug, PartialEq)]
pub struct FormatError(String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LVM metadata: {}", self.0)
    }
}

impl std::error::Error for FormatError {}

fn bad(what: impl Into<String>) -> FormatError {
    FormatError(what.into())
}

pub fn checksum(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&LVM_CRC).checksum(bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The offset of the first metadata area, from the label sector.
pub fn mda_offset(label: &[u8]) -> Result<u64, FormatError> {
    if label.len() < SECTOR || &label[..8] != LABEL_ID || &label[24..32] != LABEL_TYPE {
        return Err(bad("no LVM2 label in sector 1"));
    }
    if u32_at(label, 16) != checksum(&label[20..SECTOR]) {
        return Err(bad("the label's checksum does not match"));
    }
    // The PV header: UUID (32), device size (8), then two lists of
    // (offset, size) pairs, each ended by a zero pair: data, then metadata.
    let mut at = u32_at(label, 20) as usize + 40;
    for list in ["data", "metadata"] {
        loop {
            if at + 16 > SECTOR {
                return Err(bad(format!("the {list} area list runs past the label")));
            }
            let (offset, size) = (u64_at(label, at), u64_at(label, at + 8));
            at += 16;
            if offset == 0 && size == 0 {
                break;
            }
            if list == "metadata" {
                return Ok(offset);
            }
        }
    }
    Err(bad("the physical volume has no metadata area"))
}

/// A metadata area's header and where its one copy of the text lies.
#[derive(Clone, Debug, PartialEq)]
pub struct MdaHeader {
    bytes: Vec<u8>,
    /// Area size in bytes.
    pub size: u64,
    /// The text's offset from the area's start, and its length (with NUL).
    pub text_offset: u64,
    pub text_len: u64,
}

impl MdaHeader {
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < SECTOR || &bytes[4..20] != MDA_MAGIC {
            return Err(bad("no metadata area header"));
        }
        if u32_at(bytes, 0) != checksum(&bytes[4..SECTOR]) {
            return Err(bad("the metadata area header's checksum does not match"));
        }
        let (size, text_offset, text_len) =
            (u64_at(bytes, 32), u64_at(bytes, 40), u64_at(bytes, 48));
        if text_len == 0 {
            return Err(bad("the metadata area holds no volume group"));
        }
        if text_offset + text_len > size {
            // lvm2 wraps the text round to the area's start when it reaches
            // the end; a freshly restored group never does.
            return Err(bad("the text wraps round the metadata area"));
        }
        Ok(MdaHeader {
            bytes: bytes[..SECTOR].to_vec(),
            size,
            text_offset,
            text_len,
        })
    }

    /// The header for `text` (NUL included) at the same place.
    pub fn with_text(&self, text: &[u8]) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        b[56..60].copy_from_slice(&checksum(text).to_le_bytes());
        let sum = checksum(&b[4..SECTOR]);
        b[0..4].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

/// The text without what differs between runs (the header comment's time,
/// the description, the host, the creation time (`time` instead) and the
/// device hints) and without the flag the build held the group under
/// ([`BUILD_VG_FLAGS`]). `text` is the area's copy, NUL included; so is the
/// result.
pub fn reproducible_text(text: &[u8], time: u64) -> Result<Vec<u8>, FormatError> {
    let body = text.strip_suffix(b"\0").unwrap_or(text);
    let body = std::str::from_utf8(body).map_err(|_| bad("the text is not UTF-8"))?;
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        let fixed = if line.starts_with("# Generated by") {
            // "# Generated by LVM2 version ...: <date>": keep the version.
            match line.rfind("): ") {
                Some(i) => format!("{})\n", &line[..i]),
                None => line.to_string(),
            }
        } else if line.starts_with("description = ") {
            "description = \"\"\n".to_string()
        } else if line.starts_with("creation_host = ") {
            format!("creation_host = \"{CREATION_HOST}\"\n")
        } else if line.starts_with("creation_time = ") {
            format!("creation_time = {time}\n")
        } else if line.trim_end() == BUILD_VG_FLAGS {
            // Only the group has flags of its own; lvm2 writes the area's
            // copy without indentation.
            "flags = []\n".to_string()
        } else if line.starts_with("device = ") {
            // A hint of where lvm2 last saw the physical volume; lvm2
            // scans for the UUID without it.
            continue;
        } else {
            line.to_string()
        };
        out.push_str(&fixed);
    }
    let mut bytes = out.into_bytes();
    bytes.push(0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lvm2's checksum of the usual check string, from its reference
    /// implementation (calc_crc in lib/misc/crc.c).
    #[test]
    fn checksum_is_lvm2s() {
        assert_eq!(checksum(b"123456789"), 0x4991_cf02);
    }

    fn label(mdas: &[(u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; SECTOR];
        b[..8].copy_from_slice(LABEL_ID);
        b[8..16].copy_from_slice(&1u64.to_le_bytes());
        b[20..24].copy_from_slice(&32u32.to_le_bytes());
        b[24..32].copy_from_slice(LABEL_TYPE);
        let mut at = 32 + 40;
        for (o, s) in [(1u64 << 20, 0u64), (0, 0)]
            .iter()
            .chain(mdas)
            .chain(&[(0, 0)])
        {
            b[at..at + 8].copy_from_slice(&o.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&s.to_le_bytes());
            at += 16;
        }
        let sum = checksum(&b[20..]);
        b[16..20].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn header(offset: u64, text: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; SECTOR];
        b[4..20].copy_from_slice(MDA_MAGIC);
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&4096u64.to_le_bytes());
        b[32..40].copy_from_slice(&(1_044_480u64).to_le_bytes());
        b[40..48].copy_from_slice(&offset.to_le_bytes());
        MdaHeader {
            bytes: b,
            size: 0,
            text_offset: 0,
            text_len: 0,
        }
        .with_text(text)
    }

    #[test]
    fn label_gives_the_metadata_area() {
        assert_eq!(mda_offset(&label(&[(4096, 1_044_480)])), Ok(4096));
        let none = mda_offset(&label(&[]));
        assert!(none.unwrap_err().to_string().contains("no metadata area"));
        let mut damaged = label(&[(4096, 1_044_480)]);
        damaged[100] ^= 1;
        assert!(
            mda_offset(&damaged)
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        assert!(mda_offset(&[0u8; SECTOR]).is_err());
    }

    #[test]
    fn header_is_read_and_rewritten_with_valid_checksums() {
        let h = MdaHeader::parse(&header(512, b"vg {\n}\n\0")).unwrap();
        assert_eq!((h.text_offset, h.text_len, h.size), (512, 8, 1_044_480));
        let again = MdaHeader::parse(&h.with_text(b"longer text\n\0")).unwrap();
        assert_eq!((again.text_offset, again.text_len), (512, 13));
        let mut damaged = header(512, b"x\0");
        damaged[44] ^= 1;
        assert!(MdaHeader::parse(&damaged).is_err());
        let wraps = header(1_044_000, &[b'x'; 600]);
        assert!(
            MdaHeader::parse(&wraps)
                .unwrap_err()
                .to_string()
                .contains("wraps")
        );
    }

    /// The frame vgcfgrestore writes around a group (lvm2 2.03.16).
    const WRITTEN: &str = "vg {\nid = \"x\"\nseqno = 2\nflags = [\"NOAUTOACTIVATE\"]\n\nphysical_volumes {\n\npv0 {\n\
        id = \"y\"\ndevice = \"/dev/loop3p2\"\n\nstatus = [\"ALLOCATABLE\"]\n}\n}\n\n\
        logical_volumes {\n\nlv1 {\ncreation_time = 1700000000\n\
        creation_host = \"dib-create\"\n}\n}\n\n}\n\
        # Generated by LVM2 version 2.03.16(2) (2022-05-18): Thu Dec  3 13:53:02 2026\n\n\
        contents = \"Text Format Volume Group\"\nversion = 1\n\n\
        description = \"Write from vgcfgrestore --driverloaded n --file /var/tmp/b/lvm/vg.vg vg.\"\n\n\
        creation_host = \"vm\"\t# Linux vm 6.18.44 #1 SMP x86_64\n\
        creation_time = 1796305982\t# Thu Dec  3 13:53:02 2026\n\n";

    #[test]
    fn text_keeps_the_group_and_drops_the_run() {
        let mut written = WRITTEN.as_bytes().to_vec();
        written.push(0);
        let out = reproducible_text(&written, 1_700_000_000).unwrap();
        let text = std::str::from_utf8(&out[..out.len() - 1]).unwrap();
        assert_eq!(out.last(), Some(&0));
        for gone in [
            "loop3",
            "13:53",
            "vgcfgrestore",
            "\"vm\"",
            "1796305982",
            "Linux",
            "NOAUTOACTIVATE",
        ] {
            assert!(!text.contains(gone), "{gone} left in:\n{text}");
        }
        for kept in [
            "seqno = 2\nflags = []\n",
            "id = \"y\"\n\nstatus",
            "# Generated by LVM2 version 2.03.16(2) (2022-05-18)\n",
            "description = \"\"\n",
            "creation_host = \"dib-create\"\ncreation_time = 1700000000\n\n",
        ] {
            assert!(text.contains(kept), "{kept:?} missing from:\n{text}");
        }
        // Rewriting twice changes nothing more.
        assert_eq!(reproducible_text(&out, 1_700_000_000).unwrap(), out);
    }
}
