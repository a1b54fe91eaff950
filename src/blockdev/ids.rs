//! Identifiers (disk signatures, GUIDs, filesystem UUIDs) that are derived
//! from a seed when one is given, so that builds can be reproducible, and
//! random otherwise.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// 32 bytes for `what`: sha256(seed, what) with a seed, random without.
pub fn bytes_for(seed: Option<u64>, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    match seed {
        Some(s) => h.update(s.to_le_bytes()),
        None => h.update(random_bytes()),
    }
    h.update(what.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

/// Random bytes from the kernel; falls back to time, pid and a counter,
/// which is unique enough for identifiers if /dev/urandom is unreadable.
fn random_bytes() -> [u8; 32] {
    let mut buf = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        buf.copy_from_slice(&h.finalize());
    }
    buf
}

/// A version-4-shaped UUID in text order (RFC 4122 byte order).
pub fn uuid_bytes(seed: Option<u64>, what: &str) -> [u8; 16] {
    let b = bytes_for(seed, what);
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// A UUID as lower-case text, e.g. for `mkfs -U`.
pub fn uuid_string(seed: Option<u64>, what: &str) -> String {
    format_uuid(&uuid_bytes(seed, what))
}

/// Formats 16 bytes in text order as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into text-order bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Text-order UUID bytes to the mixed-endian layout GPT stores on disk
/// (the first three groups little-endian).
pub fn to_gpt_bytes(u: &[u8; 16]) -> [u8; 16] {
    let mut g = *u;
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// A non-zero MBR disk signature.
pub fn mbr_signature(seed: Option<u64>, what: &str) -> [u8; 4] {
    let b = bytes_for(seed, what);
    let mut sig = [b[0], b[1], b[2], b[3]];
    if sig == [0; 4] {
        sig[0] = 1;
    }
    sig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_are_stable_and_distinct() {
        assert_eq!(uuid_string(Some(7), "root"), uuid_string(Some(7), "root"));
        assert_ne!(uuid_string(Some(7), "root"), uuid_string(Some(8), "root"));
        assert_ne!(uuid_string(Some(7), "root"), uuid_string(Some(7), "boot"));
        assert_ne!(uuid_string(None, "root"), uuid_string(None, "root"));
        assert_eq!(mbr_signature(Some(1), "d"), mbr_signature(Some(1), "d"));
    }

    #[test]
    fn v4_shape_and_roundtrip() {
        let s = uuid_string(Some(1), "x");
        let b = parse_uuid(&s).unwrap();
        assert_eq!(b[6] >> 4, 4);
        assert_eq!(b[8] & 0xc0, 0x80);
        assert_eq!(format_uuid(&b), s);
        assert!(parse_uuid("nope").is_none());
        assert!(parse_uuid("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz").is_none());
    }

    #[test]
    fn gpt_mixed_endian() {
        let u = parse_uuid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(
            to_gpt_bytes(&u),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
    }
}
