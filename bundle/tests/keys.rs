//! Publisher key files: format, permissions, and refusing to overwrite.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use elastos_bundle::{BundleError, PublisherKey};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn saved_key_loads_with_the_same_publisher_id() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("keys/nested/publisher.key");
    let key = PublisherKey::generate().unwrap();
    key.save(&path, false).unwrap();

    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&home.path().join("keys")), 0o700);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("elastos-publisher-key-v1 ") && text.ends_with('\n'));
    assert_eq!(text.len(), "elastos-publisher-key-v1 ".len() + 64 + 1);

    let loaded = PublisherKey::load(&path).unwrap();
    assert_eq!(loaded.publisher_id(), key.publisher_id());
    assert_eq!(key.publisher_id().to_string().len(), 64);
}

#[test]
fn generated_keys_differ() {
    let a = PublisherKey::generate().unwrap();
    let b = PublisherKey::generate().unwrap();
    assert_ne!(a.publisher_id(), b.publisher_id());
}

#[test]
fn existing_key_is_replaced_only_when_asked() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("publisher.key");
    let first = PublisherKey::generate().unwrap();
    first.save(&path, false).unwrap();

    let second = PublisherKey::generate().unwrap();
    let err = second.save(&path, false).unwrap_err();
    assert!(matches!(err, BundleError::KeyExists { .. }), "{err:?}");
    assert_eq!(
        PublisherKey::load(&path).unwrap().publisher_id(),
        first.publisher_id()
    );

    second.save(&path, true).unwrap();
    assert_eq!(
        PublisherKey::load(&path).unwrap().publisher_id(),
        second.publisher_id()
    );
    let names: Vec<_> = fs::read_dir(home.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "temporary file left behind: {names:?}");
}

#[test]
fn missing_key_is_reported_as_not_found() {
    let home = tempfile::tempdir().unwrap();
    let err = PublisherKey::load(&home.path().join("none.key")).unwrap_err();
    assert!(matches!(err, BundleError::KeyNotFound { .. }), "{err:?}");
}

#[test]
fn malformed_key_files_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("publisher.key");
    let good_seed = "00".repeat(32);
    for text in [
        String::new(),
        format!("elastos-publisher-key-v2 {good_seed}\n"),
        format!("elastos-publisher-key-v1  {good_seed}\n"),
        format!("elastos-publisher-key-v1 {}\n", "zz".repeat(32)),
        format!("elastos-publisher-key-v1 {}\n", "00".repeat(31)),
        format!("elastos-publisher-key-v1 {good_seed}\nmore\n"),
    ] {
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = PublisherKey::load(&path).unwrap_err();
        assert!(
            matches!(err, BundleError::KeyMalformed { .. }),
            "{text:?}: {err:?}"
        );
    }
}

#[test]
fn key_readable_by_others_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("publisher.key");
    PublisherKey::generate()
        .unwrap()
        .save(&path, false)
        .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = PublisherKey::load(&path).unwrap_err();
    assert!(
        matches!(err, BundleError::KeyPermissionsTooOpen { mode: 0o644, .. }),
        "{err:?}"
    );
}

#[test]
fn debug_output_does_not_reveal_the_seed() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("publisher.key");
    let key = PublisherKey::generate().unwrap();
    key.save(&path, false).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let seed = text.trim_end().rsplit(' ').next().unwrap();
    let debug = format!("{key:?}");
    assert!(!debug.contains(seed), "{debug}");
    assert!(debug.contains(&key.publisher_id().to_string()));
}

/// A key that exists but cannot be read, and one that cannot be written, are told apart.
#[test]
fn unreadable_and_unwritable_keys_are_reported_as_such() {
    let home = tempfile::tempdir().unwrap();
    // A directory opens, passes the mode check at 0700, and then fails to read (EISDIR).
    let dir = home.path().join("dir.key");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let err = PublisherKey::load(&dir).unwrap_err();
    assert!(matches!(err, BundleError::KeyRead { .. }), "{err:?}");
    assert!(
        !err.to_string().contains("directory"),
        "repeats its source: {err}"
    );

    // A parent that is a regular file cannot become a directory.
    let file = home.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = PublisherKey::generate()
        .unwrap()
        .save(&file.join("publisher.key"), false)
        .unwrap_err();
    assert!(matches!(err, BundleError::KeyWrite { .. }), "{err:?}");
}
