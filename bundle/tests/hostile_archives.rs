//! One test per unpack rule: each archive is sealed with a valid signature, so only the rule
//! under test can refuse it, and each test asserts that rule's specific error. `unpack_with`
//! also checks that a refused unpack leaves nothing in the cache.

mod common;

use std::path::Path;

use common::{unpack, unpack_with, TarBuilder, ENTRY};
use elastos_bundle::{BundleError, DeviceKind, EntryKind, UnpackLimits};
use tar::EntryType;

#[test]
fn well_formed_archive_unpacks() {
    let payload = TarBuilder::new()
        .with_entry()
        .dir("lib")
        .file("lib/a.so", 0o644, b"lib")
        .symlink("lib/b.so", "a.so")
        .gzip();
    unpack(&payload).unwrap();
}

#[test]
fn parent_dir_component_is_refused() {
    for path in ["../evil", "bin/../../evil"] {
        let payload = TarBuilder::new()
            .with_entry()
            .file(path, 0o644, b"x")
            .gzip();
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(&err, BundleError::PathTraversal { path: p } if p == Path::new(path)),
            "{path}: {err:?}"
        );
    }
}

#[test]
fn absolute_path_is_refused() {
    let payload = TarBuilder::new()
        .with_entry()
        .file("/etc/evil", 0o644, b"x")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(matches!(err, BundleError::AbsolutePath { .. }), "{err:?}");
}

#[test]
fn entry_naming_the_root_is_refused() {
    let payload = TarBuilder::new().dir("./").with_entry().gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(matches!(err, BundleError::RootEntry { .. }), "{err:?}");
}

#[test]
fn symlink_with_absolute_target_is_refused() {
    let payload = TarBuilder::new()
        .with_entry()
        .symlink("passwd", "/etc/passwd")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(
        matches!(err, BundleError::SymlinkAbsolute { .. }),
        "{err:?}"
    );
}

#[test]
fn symlink_escaping_the_root_is_refused() {
    for (path, target) in [
        ("up", ".."),
        ("bin/out", "../../x"),
        ("bin/deep", "../bin/../../x"),
    ] {
        let payload = TarBuilder::new().with_entry().symlink(path, target).gzip();
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(&err, BundleError::SymlinkEscapes { path: p, .. } if p == Path::new(path)),
            "{path} -> {target}: {err:?}"
        );
    }
}

#[test]
fn symlink_escaping_through_a_later_symlink_is_refused() {
    // `b -> a/..` looks inside until `a -> .` arrives; then it names the root's parent.
    let payload = TarBuilder::new()
        .with_entry()
        .symlink("b", "a/..")
        .symlink("a", ".")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(
        matches!(&err, BundleError::SymlinkEscapes { path, .. } if path == Path::new("b")),
        "{err:?}"
    );
}

#[test]
fn entry_below_a_symlink_is_refused() {
    let payload = TarBuilder::new()
        .with_entry()
        .symlink("link", "bin")
        .file("link/evil", 0o644, b"x")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(
        matches!(&err, BundleError::ThroughSymlink { symlink, .. } if symlink == Path::new("link")),
        "{err:?}"
    );
}

#[test]
fn entry_without_parent_directory_entry_is_refused() {
    for path in ["nodir/file", "bin/app/child"] {
        let payload = TarBuilder::new()
            .with_entry()
            .file(path, 0o644, b"x")
            .gzip();
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(err, BundleError::ParentNotDirectory { .. }),
            "{path}: {err:?}"
        );
    }
}

#[test]
fn hard_link_is_refused() {
    let payload = TarBuilder::new()
        .with_entry()
        .link(EntryType::Link, "hard", ENTRY)
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(matches!(err, BundleError::HardLink { .. }), "{err:?}");
}

#[test]
fn device_nodes_are_refused() {
    for (entry_type, expected) in [
        (EntryType::Char, DeviceKind::Character),
        (EntryType::Block, DeviceKind::Block),
    ] {
        let payload = TarBuilder::new()
            .with_entry()
            .raw(b"dev", entry_type, 0o644, b"")
            .gzip();
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(err, BundleError::DeviceFile { kind, .. } if kind == expected),
            "{err:?}"
        );
    }
}

#[test]
fn fifo_is_refused() {
    let payload = TarBuilder::new()
        .with_entry()
        .raw(b"pipe", EntryType::Fifo, 0o644, b"")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(matches!(err, BundleError::Fifo { .. }), "{err:?}");
}

#[test]
fn setuid_and_setgid_bits_are_refused() {
    for (entry_type, mode) in [
        (EntryType::Regular, 0o4755),
        (EntryType::Regular, 0o2755),
        (EntryType::Directory, 0o2755),
    ] {
        let payload = TarBuilder::new()
            .with_entry()
            .raw(b"x", entry_type, mode, b"")
            .gzip();
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(err, BundleError::SetIdBit { mode: m, .. } if m == mode),
            "{mode:o}: {err:?}"
        );
    }
}

#[test]
fn other_entry_types_are_refused() {
    for type_byte in [b'7', b'g', b'Z'] {
        let payload = TarBuilder::new()
            .with_entry()
            .raw(b"odd", EntryType::new(type_byte), 0o644, b"")
            .gzip();
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(err, BundleError::UnsupportedEntryType { type_byte: t, .. } if t == type_byte),
            "{}: {err:?}",
            type_byte as char
        );
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let payload = TarBuilder::new()
        .with_entry()
        .file("twice", 0o644, b"first")
        .file("./twice", 0o644, b"second")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(
        matches!(&err, BundleError::DuplicateEntry { path } if path == Path::new("twice")),
        "{err:?}"
    );
}

#[test]
fn too_many_entries_are_refused() {
    let limits = UnpackLimits {
        max_entries: 3,
        ..UnpackLimits::default()
    };
    let payload = TarBuilder::new()
        .with_entry()
        .file("one", 0o644, b"")
        .file("two", 0o644, b"")
        .gzip();
    let err = unpack_with(&payload, &limits).unwrap_err();
    assert!(
        matches!(err, BundleError::TooManyEntries { limit: 3 }),
        "{err:?}"
    );
}

#[test]
fn gzip_bomb_is_refused() {
    let limits = UnpackLimits {
        max_unpacked_bytes: 1 << 20,
        ..UnpackLimits::default()
    };
    let zeros = vec![0u8; 2 << 20];
    let payload = TarBuilder::new()
        .with_entry()
        .file("zeros", 0o644, &zeros)
        .gzip();
    assert!(payload.len() < 16 << 10, "the bomb should compress well");
    let err = unpack_with(&payload, &limits).unwrap_err();
    assert!(
        matches!(err, BundleError::TooManyBytes { limit } if limit == 1 << 20),
        "{err:?}"
    );
}

#[test]
fn header_lying_about_size_is_refused() {
    // The ustar header says 0 bytes; a PAX record overrides it with 2 MiB, which is what a
    // reader then consumes. A limit that summed header sizes would see nothing.
    let limits = UnpackLimits {
        max_unpacked_bytes: 1 << 20,
        ..UnpackLimits::default()
    };
    let record = b"16 size=2097152\n";
    let data = vec![7u8; 2 << 20];
    let payload = TarBuilder::new()
        .with_entry()
        .raw(b"PaxHeader", EntryType::XHeader, 0o644, record)
        .raw(b"big", EntryType::Regular, 0o644, b"")
        .bytes(&data)
        .gzip();
    let err = unpack_with(&payload, &limits).unwrap_err();
    assert!(matches!(err, BundleError::TooManyBytes { .. }), "{err:?}");

    // The same archive within the limit unpacks, so the refusal above is the limit's doing.
    unpack(&payload).unwrap();
}

#[test]
fn header_claiming_more_data_than_present_is_refused() {
    let mut header = common::header(EntryType::Regular, 0o644, 1 << 20);
    header.set_path("short").unwrap();
    header.set_cksum();
    let mut tar = TarBuilder::new().with_entry().tar();
    tar.truncate(tar.len() - 1024); // Drop the end-of-archive blocks.
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(b"only a few bytes");
    let err = unpack(&common::gzip(&tar)).unwrap_err();
    assert!(matches!(err, BundleError::Archive { .. }), "{err:?}");
}

#[test]
fn overlong_path_is_refused() {
    let long = format!("{}/file", "d".repeat(200)).repeat(11);
    assert!(long.len() > UnpackLimits::default().max_path_bytes);
    let payload = TarBuilder::new().with_entry().long_file(&long, b"x").gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(
        matches!(err, BundleError::PathTooLong { len, max: 2048, .. } if len == long.len()),
        "{err:?}"
    );
}

#[test]
fn payload_that_is_not_gzip_is_refused() {
    let err = unpack(b"this is not gzip").unwrap_err();
    assert!(matches!(err, BundleError::Archive { .. }), "{err:?}");
}

#[test]
fn missing_entry_is_refused() {
    let payload = TarBuilder::new()
        .dir("bin")
        .file("bin/other", 0o755, b"")
        .gzip();
    let err = unpack(&payload).unwrap_err();
    assert!(matches!(err, BundleError::EntryMissing { .. }), "{err:?}");
}

#[test]
fn entry_that_cannot_be_executed_is_refused() {
    let not_executable = TarBuilder::new().dir("bin").file(ENTRY, 0o644, b"").gzip();
    let symlink = TarBuilder::new()
        .dir("bin")
        .file("bin/real", 0o755, b"")
        .symlink(ENTRY, "real")
        .gzip();
    let directory = TarBuilder::new().dir("bin").dir(ENTRY).gzip();
    for (payload, expected) in [
        (not_executable, EntryKind::NonExecutableFile),
        (symlink, EntryKind::Symlink),
        (directory, EntryKind::Directory),
    ] {
        let err = unpack(&payload).unwrap_err();
        assert!(
            matches!(err, BundleError::EntryNotExecutable { found, .. } if found == expected),
            "{err:?}"
        );
    }
}
