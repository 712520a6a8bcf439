//! The store is not trusted: every modified, truncated, swapped, replayed or rolled-back object
//! is refused with a typed error, and nothing local changes.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use elastos_cloudsync::{
    HomeRef, StoreConfig, StoreUrl, SyncEngine, SyncError, SyncOptions, UserSecret,
};

struct Setup {
    _root: tempfile::TempDir,
    store: PathBuf,
    a: Device,
    b: Device,
}

/// A syncs two files (version 1) and then an edit (version 2); B has never synced.
fn setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let a = device(root.path(), "A", &store);
    let b = device(root.path(), "B", &store);
    std::fs::create_dir_all(&a.home).unwrap();
    std::fs::write(a.home.join("one.txt"), b"first file").unwrap();
    std::fs::write(a.home.join("two.bin"), random_bytes(600_000, 5)).unwrap();
    a.sync().unwrap();
    std::fs::write(a.home.join("one.txt"), b"first file, edited").unwrap();
    a.sync().unwrap();
    Setup {
        _root: root,
        store,
        a,
        b,
    }
}

fn objects(store: &Path, under: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = store_objects(store)
        .into_iter()
        .map(|(n, _)| store.join(n))
        .filter(|p| p.strip_prefix(store).unwrap().starts_with(under))
        .collect();
    out.sort();
    out
}

fn snapshots(store: &Path) -> Vec<PathBuf> {
    objects(store, "homes")
}

fn assert_refused(
    result: Result<elastos_cloudsync::SyncReport, SyncError>,
    what: &str,
) -> SyncError {
    match result {
        Ok(report) => panic!("{what}: accepted: {report:?}"),
        Err(
            e @ (SyncError::Tampered { .. }
            | SyncError::Rollback { .. }
            | SyncError::MissingObject { .. }),
        ) => {
            // Every refusal names what it refused.
            assert!(!e.to_string().is_empty());
            e
        }
        Err(e) => panic!("{what}: wrong error {e:?}"),
    }
}

#[test]
fn modified_chunk_is_refused_and_nothing_is_written() {
    let s = setup();
    for chunk in objects(&s.store, "chunks") {
        let mut bytes = std::fs::read(&chunk).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&chunk, bytes).unwrap();
    }
    let e = assert_refused(s.b.sync(), "flipped chunk byte");
    assert!(matches!(e, SyncError::Tampered { .. }), "{e:?}");
    let names: Vec<_> = std::fs::read_dir(&s.b.home)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().ends_with(".txt")
                && !n.to_string_lossy().ends_with(".bin")),
        "nothing half-written: {names:?}"
    );
}

#[test]
fn truncated_chunk_is_refused() {
    let s = setup();
    for chunk in objects(&s.store, "chunks") {
        let bytes = std::fs::read(&chunk).unwrap();
        std::fs::write(&chunk, &bytes[..bytes.len() - 17]).unwrap();
    }
    assert!(matches!(
        assert_refused(s.b.sync(), "truncated chunk"),
        SyncError::Tampered { .. }
    ));
}

#[test]
fn swapped_chunks_are_refused() {
    let s = setup();
    let chunks = objects(&s.store, "chunks");
    assert!(chunks.len() >= 2);
    let (x, y) = (
        std::fs::read(&chunks[0]).unwrap(),
        std::fs::read(&chunks[1]).unwrap(),
    );
    std::fs::write(&chunks[0], y).unwrap();
    std::fs::write(&chunks[1], x).unwrap();
    assert!(matches!(
        assert_refused(s.b.sync(), "swapped chunks"),
        SyncError::Tampered { .. }
    ));
}

#[test]
fn deleted_chunk_is_reported_missing() {
    let s = setup();
    for chunk in objects(&s.store, "chunks") {
        std::fs::remove_file(chunk).unwrap();
    }
    assert!(matches!(
        assert_refused(s.b.sync(), "deleted chunks"),
        SyncError::MissingObject { .. }
    ));
}

#[test]
fn modified_snapshot_is_refused() {
    let s = setup();
    let head = snapshots(&s.store).pop().unwrap();
    let mut bytes = std::fs::read(&head).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&head, bytes).unwrap();
    assert!(matches!(
        assert_refused(s.b.sync(), "modified snapshot"),
        SyncError::Tampered { .. }
    ));
}

#[test]
fn replayed_snapshot_under_a_new_version_is_refused() {
    let s = setup();
    let snaps = snapshots(&s.store);
    // The store replays version 1 as version 3 (to undo the edit of version 2).
    let v3 = snaps[0].with_file_name(format!("{:016x}", 3));
    std::fs::copy(&snaps[0], &v3).unwrap();
    assert!(matches!(
        assert_refused(s.a.sync(), "replayed snapshot"),
        SyncError::Tampered { .. }
    ));
    assert!(matches!(
        assert_refused(s.b.sync(), "replayed snapshot, new device"),
        SyncError::Tampered { .. }
    ));
}

#[test]
fn snapshot_of_another_home_is_refused() {
    let s = setup();
    // Another app's home of the same user, then its snapshot moved over this home's head.
    let other = HomeRef {
        publisher: "ed25519:other".into(),
        app_id: "other-app".into(),
    };
    let other_home = s.a.home.with_file_name("other-home");
    std::fs::create_dir_all(&other_home).unwrap();
    std::fs::write(other_home.join("x.txt"), b"other app").unwrap();
    s.a.engine
        .sync(&other, &other_home, &SyncOptions::default())
        .unwrap();
    let mine = snapshots(&s.store)
        .into_iter()
        .filter(|p| p.ends_with(format!("{:016x}", 2)))
        .collect::<Vec<_>>();
    let theirs = snapshots(&s.store)
        .into_iter()
        .find(|p| !mine.iter().any(|m| m.parent() == p.parent()))
        .unwrap();
    let target = mine[0].with_file_name(format!("{:016x}", 3));
    std::fs::copy(theirs, target).unwrap();
    assert!(matches!(
        assert_refused(s.a.sync(), "another home's snapshot"),
        SyncError::Tampered { .. }
    ));
}

/// The kind byte of a sealed object (3: full snapshot, 5: delta).
fn kind(path: &Path) -> u8 {
    std::fs::read(path).unwrap()[4]
}

/// After `setup` (version 2 a delta of one file among two), 20 files more (version 3: a delta
/// that size would cost more than the tree, so a full snapshot) and four one-file edits by A:
/// versions 4 to 7 are deltas on version 3's chain. B synced version 5 in between.
fn delta_setup() -> Setup {
    let s = setup();
    for i in 0..20 {
        std::fs::write(s.a.home.join(format!("more-{i}")), format!("more {i}")).unwrap();
    }
    s.a.sync().unwrap();
    for i in 0..4 {
        std::fs::write(s.a.home.join("one.txt"), format!("edit {i}")).unwrap();
        s.a.sync().unwrap();
        if i == 1 {
            s.b.sync().unwrap();
        }
    }
    let kinds: Vec<u8> = snapshots(&s.store).iter().map(|p| kind(p)).collect();
    assert_eq!(kinds, [3, 5, 3, 5, 5, 5, 5]);
    s
}

#[test]
fn modified_dropped_or_swapped_deltas_are_refused() {
    // A delta in the middle of the chain, modified: a new device and one that has the chain's
    // start both refuse the head.
    let s = delta_setup();
    let v6 = snapshots(&s.store)[5].clone();
    let mut bytes = std::fs::read(&v6).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&v6, bytes).unwrap();
    let c = device(s._root.path(), "C", &s.store);
    assert!(matches!(
        assert_refused(c.sync(), "modified delta, new device"),
        SyncError::Tampered { .. }
    ));
    assert!(matches!(
        assert_refused(s.b.sync(), "modified delta, device at version 5"),
        SyncError::Tampered { .. }
    ));
    assert!(!c.home.join("one.txt").exists());
    assert_eq!(
        std::fs::read(s.b.home.join("one.txt")).unwrap(),
        b"edit 1",
        "nothing written"
    );

    // Dropped: the chain has a hole.
    let s = delta_setup();
    std::fs::remove_file(&snapshots(&s.store)[5]).unwrap();
    let c = device(s._root.path(), "C", &s.store);
    assert!(matches!(
        assert_refused(c.sync(), "dropped delta, new device"),
        SyncError::MissingObject { version: 6, .. }
    ));
    assert!(matches!(
        assert_refused(s.b.sync(), "dropped delta, device at version 5"),
        SyncError::MissingObject { version: 6, .. }
    ));

    // The store swaps two deltas, or replays one under the next version: each is sealed under
    // its own name.
    let s = delta_setup();
    let snaps = snapshots(&s.store);
    let (v5, v6) = (
        std::fs::read(&snaps[4]).unwrap(),
        std::fs::read(&snaps[5]).unwrap(),
    );
    std::fs::write(&snaps[4], &v6).unwrap();
    std::fs::write(&snaps[5], &v5).unwrap();
    let c = device(s._root.path(), "C", &s.store);
    assert!(matches!(
        assert_refused(c.sync(), "swapped deltas"),
        SyncError::Tampered { .. }
    ));
    let s = delta_setup();
    let snaps = snapshots(&s.store);
    std::fs::copy(&snaps[6], snaps[6].with_file_name(format!("{:016x}", 8))).unwrap();
    assert!(matches!(
        assert_refused(s.a.sync(), "replayed delta"),
        SyncError::Tampered { .. }
    ));

    // A delta's kind byte changed to a full snapshot's: authentication fails.
    let s = delta_setup();
    let head = snapshots(&s.store).pop().unwrap();
    let mut bytes = std::fs::read(&head).unwrap();
    bytes[4] = 3;
    std::fs::write(&head, bytes).unwrap();
    assert!(matches!(
        assert_refused(s.b.sync(), "delta relabeled as a full snapshot"),
        SyncError::Tampered { .. }
    ));
}

#[test]
fn rolled_back_store_is_refused() {
    let s = setup();
    // The store forgets version 2 (served from an old backup).
    let head = snapshots(&s.store).pop().unwrap();
    std::fs::remove_file(&head).unwrap();
    let e = assert_refused(s.a.sync(), "rollback");
    assert!(
        matches!(
            e,
            SyncError::Rollback {
                seen: 2,
                found: 1,
                ..
            }
        ),
        "{e:?}"
    );
    // The local file keeps the edit.
    assert_eq!(
        std::fs::read(s.a.home.join("one.txt")).unwrap(),
        b"first file, edited"
    );
    // And the whole home deleted from the store is a rollback too, not an empty remote.
    for snap in snapshots(&s.store) {
        std::fs::remove_file(snap).unwrap();
    }
    assert!(matches!(
        s.a.sync(),
        Err(SyncError::Rollback {
            seen: 2,
            found: 0,
            ..
        })
    ));
}

#[test]
fn another_users_key_is_refused() {
    let s = setup();
    let state = s.store.with_file_name("state-mallory");
    let other = SyncEngine::open(
        &StoreConfig::new(StoreUrl::LocalDir(s.store.clone())),
        &UserSecret::from_bytes([7; 32]),
        &state,
    );
    assert!(
        matches!(other, Err(SyncError::WrongKey { .. })),
        "{other:?}"
    );
}

#[test]
fn store_holds_only_padded_ciphertext() {
    let s = setup();
    for (name, bytes) in store_objects(&s.store) {
        assert!(!name.contains("one") && !name.contains("two"), "{name}");
        assert!(bytes.starts_with(b"ECS1"), "{name}");
        assert!(
            !bytes.windows(10).any(|w| w == b"first file"),
            "{name} shows plaintext"
        );
        // Padmé: the smallest object is 512 bytes of padded plaintext.
        assert!(bytes.len() >= 512, "{name} is {} bytes", bytes.len());
    }
    // Two users storing the same file get different chunk ids (keyed hashes).
    let root = tempfile::tempdir().unwrap();
    let other_store = root.path().join("store");
    let state = root.path().join("state");
    let other = SyncEngine::open(
        &StoreConfig::new(StoreUrl::LocalDir(other_store.clone())),
        &UserSecret::from_bytes([9; 32]),
        &state,
    )
    .unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("two.bin"), random_bytes(600_000, 5)).unwrap();
    other
        .sync(&home_ref(), &home, &SyncOptions::default())
        .unwrap();
    let mine: Vec<String> = store_objects(&s.store)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("chunks"))
        .collect();
    for (name, _) in store_objects(&other_store) {
        assert!(
            !mine.contains(&name),
            "same chunk name across users: {name}"
        );
    }
}
