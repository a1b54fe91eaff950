//! SHA256 digests, shared by the cache, the lockfiles and the outputs. A leaf
//! module: it imports nothing of ours, so every layer may use it.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The SHA256 (hex) of bytes in memory.
pub fn sha256_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// SHA256 (hex) and length of everything `r` yields.
pub fn hash_reader(r: &mut dyn Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// SHA256 (hex) and size of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    hash_reader(&mut std::fs::File::open(path)?)
}

/// The SHA256 (hex) of a file, with the path in the error.
pub fn sha256_of(path: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    Ok(sha256_file(path)
        .with_context(|| format!("reading {}", path.display()))?
        .0)
}

/// A digest over fields, each prefixed by its length, so that no two lists
/// of fields give the same bytes.
pub fn fields<S: AsRef<[u8]>>(fields: &[S]) -> String {
    let mut h = Sha256::new();
    for f in fields {
        let f = f.as_ref();
        h.update((f.len() as u64).to_le_bytes());
        h.update(f);
    }
    hex(&h.finalize())
}

/// What a path holds, as a digest that never fails: a file's content, a
/// symlink's target, or a description of why it could not be read (which
/// then differs from every content digest).
pub fn path_digest(path: &Path) -> String {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(path) {
            Ok(t) => fields(&["symlink".as_bytes(), t.as_os_str().as_encoded_bytes()]),
            Err(e) => format!("unreadable link: {e}"),
        },
        Ok(_) => match sha256_file(path) {
            Ok((h, _)) => h,
            Err(e) => format!("unreadable: {e}"),
        },
        Err(e) => format!("missing: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(fields(&["ab", "c"]), fields(&["a", "bc"]));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        assert_eq!(path_digest(&f), sha256_bytes(b"abc"));
        assert_eq!(sha256_file(&f).unwrap().1, 3);
        assert!(path_digest(&d.path().join("none")).starts_with("missing"));
    }
}
