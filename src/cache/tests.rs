use super::*;
use crate::lock::serve::Server;

fn sha(data: &[u8]) -> String {
    crate::digest::hex(&Sha256::digest(data))
}

/// A served directory holding one file, and a Want for it.
fn setup(data: &[u8]) -> (tempfile::TempDir, Server, Want) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("srv")).unwrap();
    std::fs::write(dir.path().join("srv/a.deb"), data).unwrap();
    let server = Server::start(&dir.path().join("srv")).unwrap();
    let want = Want {
        label: "a 1.0 amd64".into(),
        sha256: sha(data),
        size: data.len() as u64,
        urls: vec![format!("{}/a.deb", server.url())],
    };
    (dir, server, want)
}

#[test]
fn downloads_once_and_repairs_corruption() {
    let data = b"a package".repeat(1000);
    let (dir, server, want) = setup(&data);
    let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
    let p = store.ensure(&want).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), data);
    assert_eq!(p.file_name().unwrap().to_str().unwrap(), want.sha256);

    // Served no more: a valid entry is used without the network.
    server.close();
    assert_eq!(store.ensure(&want).unwrap(), p);

    // Corrupt it: detected on use; with the server gone, the repair fails loudly.
    std::fs::write(&p, b"garbage").unwrap();
    let e = format!("{:#}", store.ensure(&want).unwrap_err());
    assert!(e.contains("could not download"), "{e}");
    assert!(!p.exists(), "the corrupt entry is removed");

    // With the server back, the entry is repaired.
    let server = Server::start(&dir.path().join("srv")).unwrap();
    let mut want2 = want.clone();
    want2.urls = vec![format!("{}/a.deb", server.url())];
    std::fs::write(&p, b"garbage").unwrap();
    assert_eq!(std::fs::read(store.ensure(&want2).unwrap()).unwrap(), data);
}

#[test]
fn killed_download_leftover_is_cleaned() {
    let (dir, _server, want) = setup(b"payload");
    let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
    let part = store.path(&want.sha256).with_extension("part");
    std::fs::write(&part, b"half").unwrap();
    store.ensure(&want).unwrap();
    assert!(!part.exists());
}

#[test]
fn hash_mismatch_is_an_error_never_cached() {
    let (dir, _server, mut want) = setup(b"payload");
    want.sha256 = sha(b"something else");
    let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
    let e = store.ensure(&want).unwrap_err();
    assert!(
        e.downcast_ref::<FetchError>()
            .is_some_and(|f| matches!(f, FetchError::HashMismatch { .. })),
        "{e:#}"
    );
    assert!(format!("{e:#}").contains("refusing it"));
    assert!(!store.path(&want.sha256).exists());
    assert!(!store.path(&want.sha256).with_extension("part").exists());
}

#[test]
fn offline_uses_only_the_cache() {
    let (dir, _server, want) = setup(b"payload");
    let cache = dir.path().join("cache");
    let offline = DebStore::open(&cache, true).unwrap();
    assert!(offline.ensure(&want).is_err());
    DebStore::open(&cache, false)
        .unwrap()
        .ensure(&want)
        .unwrap();
    offline.ensure(&want).unwrap();
}

#[test]
fn falls_back_to_later_urls() {
    let (dir, server, mut want) = setup(b"payload");
    want.urls.insert(0, format!("{}/missing.deb", server.url()));
    let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
    store.ensure(&want).unwrap();
}

#[test]
fn concurrent_builds_share_one_entry() {
    let data = b"concurrent".repeat(50_000);
    let (dir, _server, want) = setup(&data);
    let cache = dir.path().join("cache");
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (cache, want) = (cache.clone(), want.clone());
            s.spawn(move || {
                // A separate store per thread, as separate builds would have.
                let store = DebStore::open(&cache, false).unwrap();
                let p = store.ensure(&want).unwrap();
                assert_eq!(std::fs::read(p).unwrap().len(), 500_000);
            });
        }
    });
    let left: Vec<_> = std::fs::read_dir(cache.join("debs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(&want.sha256)]);
}

#[test]
fn ensure_all_reports_every_failure() {
    let (dir, server, want) = setup(b"payload");
    let mut bad = want.clone();
    bad.label = "b 2.0 amd64".into();
    bad.sha256 = sha(b"b");
    bad.urls = vec![format!("{}/b.deb", server.url())];
    let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
    let e = format!("{:#}", store.ensure_all(&[want, bad], 4).unwrap_err());
    // Both fail: b cannot be fetched, and a is no .deb (its control fields).
    assert!(
        e.contains("2 package(s)") && e.contains("b 2.0 amd64"),
        "{e}"
    );
    assert!(e.contains("a 1.0 amd64: reading its control fields"), "{e}");
}

#[test]
fn adopt_stores_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x_1_amd64.deb");
    std::fs::write(&f, b"some deb").unwrap();
    let store = DebStore::open(&dir.path().join("cache"), true).unwrap();
    let got = store.adopt(&f).unwrap();
    assert_eq!(got, sha(b"some deb"));
    assert_eq!(std::fs::read(store.path(&got)).unwrap(), b"some deb");
    // Twice is fine.
    assert_eq!(store.adopt(&f).unwrap(), got);
}

/// A server that sends far more than the pinned size is cut off one byte
/// past it: the partial file never grows beyond, and the mismatch is named.
#[test]
fn an_oversized_download_is_cut_off() {
    let big = vec![7u8; 1 << 20];
    let (dir, _server, mut want) = setup(&big);
    want.size = 100;
    let store = DebStore::open(&dir.path().join("cache"), false).unwrap();
    let e = format!("{:#}", store.ensure(&want).unwrap_err());
    assert!(e.contains("101 bytes"), "{e}");
    assert!(!store.path(&want.sha256).exists());
}
