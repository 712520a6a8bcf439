//! Behaviour that the scenario language does not express: files written while the sync reads
//! them, dedup across apps, owners of restored files, status and the store address syntax.

mod common;

use std::io::{Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use elastos_cloudsync::{HomeRef, StoreUrl, SyncError, SyncOptions};

#[test]
fn a_file_written_during_the_sync_waits_for_the_next_one() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (a, b) = (
        device(root.path(), "A", &store),
        device(root.path(), "B", &store),
    );
    std::fs::create_dir_all(&a.home).unwrap();
    std::fs::write(a.home.join("steady.txt"), b"steady content").unwrap();
    let busy = a.home.join("busy.db");
    std::fs::write(&busy, random_bytes(24 << 20, 1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                f.seek(std::io::SeekFrom::Start((n * 4096) % (24 << 20)))
                    .unwrap();
                f.write_all(&n.to_le_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let report = a.sync().unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(report.busy, vec![Path::new("busy.db")], "{report:?}");
    assert_eq!(report.uploaded, vec![Path::new("steady.txt")]);
    b.sync().unwrap();
    assert!(
        !b.home.join("busy.db").exists(),
        "a half-read file never reaches the store"
    );
    // Once quiet, the file goes up whole.
    let report = a.sync().unwrap();
    assert_eq!(report.uploaded, vec![Path::new("busy.db")]);
    b.sync().unwrap();
    assert_eq!(tree_hash(&a.home), tree_hash(&b.home));
}

#[test]
fn apps_of_one_user_share_chunks() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let a = device(root.path(), "A", &store);
    let data = random_bytes(3_000_000, 11);
    let (home1, home2) = (root.path().join("app1"), root.path().join("app2"));
    for home in [&home1, &home2] {
        std::fs::create_dir_all(home).unwrap();
        std::fs::write(home.join("same.bin"), &data).unwrap();
    }
    let app = |id: &str| HomeRef {
        publisher: "ed25519:p".into(),
        app_id: id.into(),
    };
    let first = a
        .engine
        .sync(&app("one"), &home1, &SyncOptions::default())
        .unwrap();
    let second = a
        .engine
        .sync(&app("two"), &home2, &SyncOptions::default())
        .unwrap();
    assert!(first.chunks_uploaded >= 2);
    assert_eq!(second.chunks_uploaded, 0, "{second:?}");
    assert!(second.committed);
}

#[test]
fn downloaded_files_get_the_apps_owner() {
    if !nix_is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (a, b) = (
        device(root.path(), "A", &store),
        device(root.path(), "B", &store),
    );
    std::fs::create_dir_all(a.home.join("sub")).unwrap();
    std::fs::write(a.home.join("sub/file.txt"), b"owned").unwrap();
    std::os::unix::fs::symlink("file.txt", a.home.join("sub/link")).unwrap();
    std::fs::write(a.home.join("sub/setuid"), b"#!/bin/sh").unwrap();
    std::fs::set_permissions(
        a.home.join("sub/setuid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o6755),
    )
    .unwrap();
    a.sync().unwrap();
    let opts = SyncOptions {
        owner: Some((12345, 23456)),
        ..Default::default()
    };
    b.engine.sync(&home_ref(), &b.home, &opts).unwrap();
    for path in ["", "sub", "sub/file.txt", "sub/link"] {
        let meta = std::fs::symlink_metadata(b.home.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 23456), "{path}");
    }
    let mode = std::fs::metadata(b.home.join("sub/setuid")).unwrap().mode() & 0o7777;
    assert_eq!(
        mode, 0o755,
        "set-uid and set-gid bits never come back from the store"
    );
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn status_shows_pending_work_without_doing_it() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (a, b) = (
        device(root.path(), "A", &store),
        device(root.path(), "B", &store),
    );
    std::fs::create_dir_all(&a.home).unwrap();
    std::fs::write(a.home.join("x.txt"), b"x content").unwrap();
    let status = a.engine.status(&home_ref(), &a.home).unwrap();
    assert_eq!(status.pending_up, vec![Path::new("x.txt")]);
    assert_eq!((status.synced_version, status.remote_version), (0, 0));
    a.sync().unwrap();
    let status = b.engine.status(&home_ref(), &b.home).unwrap();
    assert_eq!(status.pending_down, vec![Path::new("x.txt")]);
    assert_eq!(status.remote_version, 1);
    assert!(!b.home.join("x.txt").exists(), "status changes nothing");
    let status = a.engine.status(&home_ref(), &a.home).unwrap();
    assert!(
        status.pending_up.is_empty() && status.pending_down.is_empty(),
        "{status:?}"
    );
    assert!(status.last_sync.is_some());
    let json = serde_json::to_value(&status).unwrap();
    assert!(json["last_sync"].as_str().unwrap().ends_with('Z'), "{json}");
}

#[test]
fn store_addresses_parse_or_say_what_was_expected() {
    assert_eq!(
        "/srv/cloud".parse::<StoreUrl>().unwrap(),
        StoreUrl::LocalDir("/srv/cloud".into())
    );
    assert_eq!(
        "file:///srv/cloud".parse::<StoreUrl>().unwrap(),
        StoreUrl::LocalDir("/srv/cloud".into())
    );
    assert_eq!(
        "s3://my-bucket/homes/me".parse::<StoreUrl>().unwrap(),
        StoreUrl::S3 {
            bucket: "my-bucket".into(),
            prefix: "homes/me".into(),
            endpoint: None
        }
    );
    assert_eq!(
        "webdav+https://cloud.example/remote.php/dav/files/me/"
            .parse::<StoreUrl>()
            .unwrap(),
        StoreUrl::WebDav {
            url: "https://cloud.example/remote.php/dav/files/me".into()
        }
    );
    for bad in [
        "",
        "relative/dir",
        "s3://",
        "s3://UPPER/x",
        "s3://b/../x",
        "webdav+ftp://h/p",
        "gopher://x",
        "file://",
    ] {
        let e = bad.parse::<StoreUrl>().unwrap_err();
        assert!(matches!(e, SyncError::BadStoreUrl { .. }), "{bad}: {e:?}");
        assert!(
            e.to_string()
                .contains("expected DIR, file://DIR, s3://BUCKET/PREFIX"),
            "{e}"
        );
    }
}

#[test]
fn credentials_file_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds");
    std::fs::write(
        &path,
        "[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRET\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = elastos_cloudsync::S3Credentials::from_file(&path).unwrap_err();
    assert!(e.to_string().contains("0600"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let creds = elastos_cloudsync::S3Credentials::from_file(&path).unwrap();
    assert_eq!(
        (creds.access_key_id.as_str(), creds.region.as_str()),
        ("AKID", "us-east-1")
    );
    assert!(
        !format!("{creds:?}").contains("SECRET"),
        "the secret is never printed"
    );
}

/// The fast path of every `elastos run`: once the index is settled, a sync that finds nothing
/// changed on either side leaves the index file as it is (same inode: not replaced, so not
/// rewritten and synced) and only moves its mtime, the last sync time `status` reports. A change
/// on either side is still seen at the next sync.
#[test]
fn a_sync_that_changes_nothing_writes_no_index() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (a, b) = (
        device(root.path(), "A", &store),
        device(root.path(), "B", &store),
    );
    std::fs::create_dir_all(a.home.join("docs")).unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for name in ["docs/a.txt", "b.txt"] {
        let path = a.home.join(name);
        std::fs::write(&path, name.as_bytes()).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(past).unwrap();
    }
    assert!(a.sync().unwrap().committed);
    let index = |state: &Path| {
        let homes = std::fs::read_dir(state)
            .unwrap()
            .map(|e| e.unwrap().path().join("homes"))
            .find(|p| p.is_dir())
            .expect("a store state directory");
        std::fs::read_dir(homes)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "idx"))
            .expect("an index")
    };
    let idx = index(&a.state);
    let before = std::fs::metadata(&idx).unwrap();
    let content = std::fs::read(&idx).unwrap();
    let last_sync = |d: &Device| d.engine.status(&home_ref(), &d.home).unwrap().last_sync;
    let first = last_sync(&a).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = a.sync().unwrap();
    assert!(!again.committed && again.downloaded.is_empty(), "{again:?}");
    let after = std::fs::metadata(&idx).unwrap();
    assert_eq!(after.ino(), before.ino(), "the index was replaced");
    assert_eq!(std::fs::read(&idx).unwrap(), content);
    assert!(last_sync(&a).unwrap() > first, "the last sync time moved");

    // Changes on either side are still seen.
    b.sync().unwrap();
    std::fs::write(b.home.join("b.txt"), b"edited on B").unwrap();
    assert!(b.sync().unwrap().committed);
    let report = a.sync().unwrap();
    assert_eq!(report.downloaded, vec![Path::new("b.txt")]);
    std::fs::write(a.home.join("docs/a.txt"), b"edited on A, same second").unwrap();
    assert!(a.sync().unwrap().committed);
    b.sync().unwrap();
    assert_eq!(tree_hash(&a.home), tree_hash(&b.home));
}

#[test]
fn nothing_to_bring_is_true_only_when_a_sync_would_bring_nothing_here() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (a, b) = (
        device(root.path(), "A", &store),
        device(root.path(), "B", &store),
    );
    let ask = |d: &Device| d.engine.nothing_to_bring(&home_ref(), &d.home).unwrap();
    std::fs::create_dir_all(&a.home).unwrap();
    std::fs::write(a.home.join("one.txt"), b"one").unwrap();
    // Never synced here: the first sync has everything to do.
    assert!(!ask(&a));
    a.sync().unwrap();
    assert!(ask(&a));
    // Local changes are the app's own, sent after it runs: nothing to bring.
    std::fs::write(a.home.join("two.txt"), b"two").unwrap();
    assert!(ask(&a));
    // Another device committed: there is.
    b.sync().unwrap();
    std::fs::write(b.home.join("three.txt"), b"three").unwrap();
    b.sync().unwrap();
    assert!(!ask(&a));
    a.sync().unwrap();
    assert!(ask(&a));
    // A home deleted, or deleted and made again, is a lost cache to restore.
    std::fs::remove_dir_all(&a.home).unwrap();
    assert!(!ask(&a));
    std::fs::create_dir_all(&a.home).unwrap();
    assert!(!ask(&a));
    a.sync().unwrap();
    assert!(ask(&a));
}
