//! What `pack` refuses to put into a bundle, each with its own error.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{manifest_toml, sample_app, write_file, ENTRY};
use elastos_bundle::{pack, BundleError, EntryKind, PublisherKey, UnpackLimits};

fn pack_dir(dir: &Path) -> Result<Vec<u8>, BundleError> {
    pack_with(dir, &UnpackLimits::default())
}

fn pack_with(dir: &Path, limits: &UnpackLimits) -> Result<Vec<u8>, BundleError> {
    pack(dir, &PublisherKey::generate().unwrap(), limits)
}

fn app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    sample_app(dir.path());
    dir
}

#[test]
fn missing_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, BundleError::ManifestNotFound { .. }),
        "{err:?}"
    );
}

#[test]
fn invalid_manifest_is_refused() {
    let dir = app();
    fs::write(dir.path().join("manifest.toml"), "[app]\nentry = 42\n").unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(matches!(err, BundleError::Manifest { .. }), "{err:?}");
}

#[test]
fn missing_entry_is_refused() {
    let dir = app();
    fs::write(dir.path().join("manifest.toml"), manifest_toml("bin/nope")).unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(matches!(err, BundleError::EntryMissing { .. }), "{err:?}");
}

#[test]
fn entry_without_execute_permission_is_refused() {
    let dir = app();
    fs::set_permissions(dir.path().join(ENTRY), fs::Permissions::from_mode(0o644)).unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::EntryNotExecutable {
                found: EntryKind::NonExecutableFile,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn absolute_symlink_is_refused() {
    let dir = app();
    symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::SymlinkAbsolute { path, .. } if path == Path::new("passwd")),
        "{err:?}"
    );
}

#[test]
fn symlink_leading_outside_is_refused() {
    let dir = app();
    symlink("../../etc", dir.path().join("bin/etc")).unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::SymlinkEscapes { path, .. } if path == Path::new("bin/etc")),
        "{err:?}"
    );
}

#[test]
fn fifo_is_refused() {
    let dir = app();
    let fifo = dir.path().join("pipe");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, BundleError::Fifo { path } if path == Path::new("pipe")),
        "{err:?}"
    );
}

#[test]
fn socket_is_refused() {
    let dir = app();
    let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let err = pack_dir(dir.path()).unwrap_err();
    assert!(matches!(err, BundleError::Socket { .. }), "{err:?}");
}

#[test]
fn setuid_and_setgid_files_are_refused() {
    for mode in [0o4755, 0o2755] {
        let dir = app();
        write_file(&dir.path().join("bin/helper"), b"", mode);
        let err = pack_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, BundleError::SetIdBit { mode: m, .. } if m == mode),
            "{mode:o}: {err:?}"
        );
    }
}

#[test]
fn trees_beyond_the_unpack_limits_are_refused() {
    let dir = app();
    let few_entries = UnpackLimits {
        max_entries: 2,
        ..UnpackLimits::default()
    };
    let err = pack_with(dir.path(), &few_entries).unwrap_err();
    assert!(
        matches!(err, BundleError::TooManyEntries { limit: 2 }),
        "{err:?}"
    );

    write_file(&dir.path().join("big"), &vec![0u8; 64 << 10], 0o644);
    let few_bytes = UnpackLimits {
        max_unpacked_bytes: 32 << 10,
        ..UnpackLimits::default()
    };
    let err = pack_with(dir.path(), &few_bytes).unwrap_err();
    assert!(matches!(err, BundleError::TooManyBytes { .. }), "{err:?}");
}

#[test]
fn a_packed_bundle_fits_exactly_the_limits_it_was_packed_with() {
    // Packing measures the same quantities unpacking limits, so a bundle packed under some
    // limits unpacks under them.
    let dir = app();
    let exact = UnpackLimits {
        max_entries: 5, // bin, bin/app, bin/data, share, share/data.txt
        ..UnpackLimits::default()
    };
    let bundle = elastos_bundle::verify(pack_with(dir.path(), &exact).unwrap()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    bundle.unpack_into_cache(cache.path(), &exact).unwrap();
}
