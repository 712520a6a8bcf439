//! The user key: made on first use, private, stable, and the derivation hook.

use std::os::unix::fs::PermissionsExt;

use elastos_identity::{KeyError, UserKey};

#[test]
fn the_user_key_is_made_once_with_mode_0600_and_then_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let (key, created) = UserKey::load_or_create(&dir).unwrap();
    assert!(created);
    let path = dir.join(UserKey::FILE_NAME);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("elastos-user-key-v1 ") && text.ends_with('\n'));

    let (again, created) = UserKey::load_or_create(&dir).unwrap();
    assert!(!created);
    assert_eq!(again.user_id(), key.user_id());
    assert_eq!(key.user_id().to_string().len(), 64);
    assert!(!format!("{key:?}").contains(&hex::encode(key.export_secret_seed())));
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    UserKey::load_or_create(tmp.path()).unwrap();
    let path = tmp.path().join(UserKey::FILE_NAME);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    match UserKey::load_or_create(tmp.path()) {
        Err(KeyError::PermissionsTooOpen { mode, .. }) => assert_eq!(mode, 0o644),
        other => panic!("expected PermissionsTooOpen, got {other:?}"),
    }
}

#[test]
fn a_malformed_key_file_is_refused_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(UserKey::FILE_NAME);
    std::fs::write(&path, "elastos-user-key-v1 nothex\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        UserKey::load_or_create(tmp.path()),
        Err(KeyError::Malformed { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "elastos-user-key-v1 nothex\n"
    );
}

#[test]
fn derived_keys_depend_on_the_secret_and_the_context_only() {
    let key = UserKey::from_secret_seed([3; 32]);
    let disk = key.derive_key("elastos/cloud-disk/encryption/v1");
    assert_eq!(
        disk,
        UserKey::from_secret_seed([3; 32]).derive_key("elastos/cloud-disk/encryption/v1")
    );
    assert_ne!(disk, key.derive_key("elastos/federation/node-key/v1"));
    assert_ne!(
        disk,
        UserKey::from_secret_seed([4; 32]).derive_key("elastos/cloud-disk/encryption/v1")
    );
    assert_ne!(disk, key.export_secret_seed());
    assert_ne!(disk.to_vec(), key.user_id().as_bytes().to_vec());
    // RFC 5869 as specified, pinned: changing the derivation would lose every derived key.
    assert_eq!(
        hex::encode(UserKey::from_secret_seed([0; 32]).derive_key("test")),
        PINNED_DERIVATION
    );
}

/// HKDF-SHA256(salt "elastos-user-key-v1 derive", ikm 32 zero bytes, info "test"), computed
/// independently of this crate with Python's `hmac` module:
/// `prk = hmac(salt, ikm, sha256); okm = hmac(prk, b"test" + b"\x01", sha256)`.
const PINNED_DERIVATION: &str = "37449b333bb06ae3d900e4cc283dd9d74b5454d6385020e0e2b6ae1ef279cdcc";
