//! Pack, verify, inspect and unpack: the round trip, determinism, and every way a bundle file
//! can be damaged.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{manifest_toml, sample_app, ENTRY};
use elastos_bundle::{
    inspect, pack, pack_to, read_bundle_file, seal, verify, BundleError, PublisherKey,
    SignatureStatus, UnpackLimits, VerifiedBundle, MAX_BUNDLE_SIZE, MAX_MANIFEST_LEN,
};

// Offsets from the format table in the crate documentation.
const VERSION_AT: usize = 8;
const PUBLISHER_AT: usize = 10;
const SIGNATURE_AT: usize = 42;
const DIGEST_AT: usize = 106;
const MANIFEST_LEN_AT: usize = 138;
const MANIFEST_AT: usize = 142;

fn packed_sample() -> (Vec<u8>, PublisherKey) {
    let dir = tempfile::tempdir().unwrap();
    sample_app(dir.path());
    let key = PublisherKey::generate().unwrap();
    (
        pack(dir.path(), &key, &UnpackLimits::default()).unwrap(),
        key,
    )
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn pack_verify_unpack_round_trip() {
    let (bytes, key) = packed_sample();
    let bundle = verify(bytes).unwrap();
    assert_eq!(bundle.publisher(), key.publisher_id());
    assert_eq!(bundle.manifest().entry(), Path::new(ENTRY));
    assert_eq!(bundle.manifest_text(), manifest_toml(ENTRY));

    let cache = tempfile::tempdir().unwrap();
    let unpacked = bundle
        .unpack_into_cache(cache.path(), &UnpackLimits::default())
        .unwrap();
    assert!(unpacked.freshly_unpacked());
    let root = unpacked.root();
    assert_eq!(
        root,
        cache.path().join(bundle.digest().to_string()).join("app")
    );
    assert_eq!(
        fs::read(root.join(ENTRY)).unwrap(),
        b"#!/bin/sh\necho hello\n"
    );
    assert_eq!(
        fs::read(root.join("share/data.txt")).unwrap(),
        b"some data\n"
    );
    assert_eq!(
        fs::read_link(root.join("bin/data")).unwrap(),
        Path::new("../share/data.txt")
    );
    assert!(
        !root.join("manifest.toml").exists(),
        "the manifest travels outside the payload"
    );
    // Modes are normalised and world-readable, whatever they were in the app directory.
    assert_eq!(mode(root), 0o755);
    assert_eq!(mode(&root.join("bin")), 0o755);
    assert_eq!(mode(&root.join(ENTRY)), 0o755);
    assert_eq!(mode(&root.join("share/data.txt")), 0o644);
}

#[test]
fn second_unpack_reuses_the_cache() {
    let (bytes, _) = packed_sample();
    let bundle = verify(bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let limits = UnpackLimits::default();
    let first = bundle.unpack_into_cache(cache.path(), &limits).unwrap();
    // A file added to the cached tree survives: the second call did not unpack again.
    fs::write(first.root().join("marker-from-test"), b"").unwrap();
    let second = bundle.unpack_into_cache(cache.path(), &limits).unwrap();
    assert!(!second.freshly_unpacked());
    assert_eq!(first.root(), second.root());
    assert!(second.root().join("marker-from-test").exists());
    let names: Vec<_> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [bundle.digest().to_string()],
        "no staging directory left behind"
    );
}

/// Failing to look into the cache and failing to write into it are told apart.
#[test]
fn a_cache_that_cannot_be_checked_or_written_is_reported_as_such() {
    let (bytes, _) = packed_sample();
    let bundle = verify(bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();

    // A cache path below a regular file cannot even be looked at (ENOTDIR).
    let err = bundle
        .unpack_into_cache(&file.join("cache"), &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, BundleError::CacheCheck { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot check the bundle cache entry "),
        "{err}"
    );

    // A dangling symlink: nothing is cached behind it, and it cannot become a directory.
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("missing/cache", &dangling).unwrap();
    let err = bundle
        .unpack_into_cache(&dangling, &UnpackLimits::default())
        .unwrap_err();
    assert!(matches!(err, BundleError::CacheWrite { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot unpack into the bundle cache at "),
        "{err}"
    );
}

#[test]
fn incomplete_cache_entry_is_reported() {
    let (bytes, _) = packed_sample();
    let bundle = verify(bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    fs::create_dir(cache.path().join(bundle.digest().to_string())).unwrap();
    let err = bundle
        .unpack_into_cache(cache.path(), &UnpackLimits::default())
        .unwrap_err();
    assert!(
        matches!(err, BundleError::CacheEntryIncomplete { .. }),
        "{err:?}"
    );
}

#[test]
fn packing_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    sample_app(dir.path());
    let key = PublisherKey::generate().unwrap();
    let limits = UnpackLimits::default();
    let first = pack(dir.path(), &key, &limits).unwrap();
    // Neither timestamps nor non-execute permission bits may leak into the bundle.
    let data = dir.path().join("share/data.txt");
    fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o640)).unwrap();
    let second = pack(dir.path(), &key, &limits).unwrap();
    assert!(first == second, "packing the same directory twice differs");
}

#[test]
fn pack_to_writes_the_bundle_atomically() {
    let dir = tempfile::tempdir().unwrap();
    sample_app(dir.path());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("app.bundle");
    fs::write(&out, b"old contents").unwrap();
    let key = PublisherKey::generate().unwrap();
    let packed = pack_to(dir.path(), &out, &key, &UnpackLimits::default()).unwrap();
    let bundle = VerifiedBundle::open(&out).unwrap();
    assert_eq!(packed.digest, bundle.digest());
    assert_eq!(packed.publisher, key.publisher_id());
    assert_eq!(packed.size, fs::metadata(&out).unwrap().len());
    let names: Vec<_> = fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "temporary file left behind: {names:?}");
}

#[test]
fn flipped_byte_in_digest_manifest_or_payload_is_a_digest_mismatch() {
    let (bytes, _) = packed_sample();
    for at in [
        DIGEST_AT,
        DIGEST_AT + 31,
        MANIFEST_AT,
        MANIFEST_AT + 10,
        bytes.len() - 1,
    ] {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x01;
        let err = verify(tampered).unwrap_err();
        assert!(
            matches!(err, BundleError::DigestMismatch { .. }),
            "byte {at}: {err:?}"
        );
    }
}

#[test]
fn flipped_byte_in_signature_or_publisher_is_a_bad_signature() {
    let (bytes, _) = packed_sample();
    for at in [
        SIGNATURE_AT,
        SIGNATURE_AT + 63,
        PUBLISHER_AT,
        PUBLISHER_AT + 31,
    ] {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x01;
        let err = verify(tampered).unwrap_err();
        assert!(
            matches!(err, BundleError::BadSignature { .. }),
            "byte {at}: {err:?}"
        );
    }
}

#[test]
fn publisher_replaced_by_another_key_is_a_bad_signature() {
    let (mut bytes, _) = packed_sample();
    let impostor =
        hex::decode(PublisherKey::generate().unwrap().publisher_id().to_string()).unwrap();
    bytes[PUBLISHER_AT..PUBLISHER_AT + 32].copy_from_slice(&impostor);
    let err = verify(bytes).unwrap_err();
    assert!(matches!(err, BundleError::BadSignature { .. }), "{err:?}");
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    let key = PublisherKey::generate().unwrap();
    let bytes = seal(manifest_toml(ENTRY).as_bytes(), b"payload", &key).unwrap();
    for len in 0..bytes.len() {
        let err = verify(bytes[..len].to_vec()).unwrap_err();
        assert!(
            matches!(err, BundleError::Truncated { .. }),
            "length {len}: {err:?}"
        );
    }
}

#[test]
fn bad_magic_is_refused() {
    let (mut bytes, _) = packed_sample();
    bytes[0] = b'X';
    assert!(matches!(verify(bytes).unwrap_err(), BundleError::BadMagic));
    assert!(matches!(
        verify(b"#!/bin/sh".to_vec()).unwrap_err(),
        BundleError::BadMagic
    ));
}

#[test]
fn unknown_version_is_refused() {
    let (mut bytes, _) = packed_sample();
    bytes[VERSION_AT] = 2;
    let err = verify(bytes).unwrap_err();
    assert!(
        matches!(err, BundleError::UnsupportedVersion { found: 2 }),
        "{err:?}"
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let (mut bytes, _) = packed_sample();
    bytes.extend_from_slice(b"xy");
    let err = verify(bytes).unwrap_err();
    assert!(
        matches!(err, BundleError::TrailingBytes { count: 2 }),
        "{err:?}"
    );
}

#[test]
fn oversized_manifest_length_is_refused() {
    let (mut bytes, _) = packed_sample();
    let len = (MAX_MANIFEST_LEN as u32 + 1).to_le_bytes();
    bytes[MANIFEST_LEN_AT..MANIFEST_LEN_AT + 4].copy_from_slice(&len);
    let err = verify(bytes).unwrap_err();
    assert!(
        matches!(err, BundleError::ManifestTooLarge { .. }),
        "{err:?}"
    );

    let key = PublisherKey::generate().unwrap();
    let err = seal(&vec![b'#'; MAX_MANIFEST_LEN + 1], b"", &key).unwrap_err();
    assert!(
        matches!(err, BundleError::ManifestTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn signed_but_invalid_manifest_is_refused() {
    let key = PublisherKey::generate().unwrap();
    let err = verify(seal(b"\xff\xfe", b"", &key).unwrap()).unwrap_err();
    assert!(
        matches!(err, BundleError::ManifestNotUtf8 { .. }),
        "{err:?}"
    );
    let err = verify(seal(b"[app\nname = ", b"", &key).unwrap()).unwrap_err();
    assert!(matches!(err, BundleError::Manifest { .. }), "{err:?}");
}

#[test]
fn reading_bundle_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_bundle_file(&dir.path().join("missing.bundle")).unwrap_err();
    assert!(matches!(err, BundleError::ReadBundle { .. }), "{err:?}");

    // Sparse, so the test costs no disk space.
    let huge = dir.path().join("huge.bundle");
    fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_BUNDLE_SIZE + 1)
        .unwrap();
    let err = VerifiedBundle::open(&huge).unwrap_err();
    assert!(matches!(err, BundleError::BundleTooLarge { .. }), "{err:?}");
}

#[test]
fn inspect_reports_valid_bundles() {
    let (bytes, key) = packed_sample();
    let report = inspect(&bytes);
    assert_eq!(report.signature, SignatureStatus::Valid);
    assert_eq!(report.publisher, Some(key.publisher_id()));
    assert_eq!(report.format_version, Some(1));
    assert_eq!(report.digest, Some(verify(bytes).unwrap().digest()));
    assert_eq!(report.manifest.unwrap().entry(), Path::new(ENTRY));
    assert_eq!(
        report.manifest_text.as_deref(),
        Some(manifest_toml(ENTRY).as_str())
    );
    assert!(report.manifest_error.is_none());
}

#[test]
fn inspect_reports_damaged_bundles_without_failing() {
    let (bytes, _) = packed_sample();
    let mut tampered = bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let report = inspect(&tampered);
    assert_eq!(report.signature, SignatureStatus::DigestMismatch);
    assert!(report.manifest.is_some(), "the manifest is still readable");

    let mut resigned = bytes.clone();
    resigned[SIGNATURE_AT] ^= 1;
    assert_eq!(inspect(&resigned).signature, SignatureStatus::BadSignature);

    let report = inspect(&bytes[..100]);
    assert!(
        matches!(report.signature, SignatureStatus::Malformed(_)),
        "{report:?}"
    );
    assert!(report.publisher.is_none() && report.manifest_text.is_none());

    let key = PublisherKey::generate().unwrap();
    let report = inspect(&seal(b"not = [toml", b"", &key).unwrap());
    assert_eq!(report.signature, SignatureStatus::Valid);
    assert_eq!(report.manifest_text.as_deref(), Some("not = [toml"));
    assert!(report.manifest.is_none() && report.manifest_error.is_some());
}

#[test]
fn inspect_report_serialises_to_json() {
    let (bytes, key) = packed_sample();
    let json = serde_json::to_value(inspect(&bytes)).unwrap();
    assert_eq!(json["signature"], serde_json::json!({"status": "valid"}));
    assert_eq!(json["publisher"], key.publisher_id().to_string());
    assert_eq!(json["digest"].as_str().unwrap().len(), 64);

    let json = serde_json::to_value(inspect(b"nope")).unwrap();
    assert_eq!(json["signature"]["status"], "malformed");
    assert!(json["signature"]["reason"]
        .as_str()
        .unwrap()
        .contains("not an elastos bundle"));
}
