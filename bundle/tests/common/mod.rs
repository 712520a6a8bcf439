//! Helpers shared by the integration tests: app directories, hand-built (hostile) archives,
//! and sealed bundles.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use elastos_bundle::{seal, verify, BundleError, PublisherKey, UnpackLimits, VerifiedBundle};
use flate2::write::GzEncoder;
use flate2::Compression;

/// The name of the executable every test manifest names as its entry.
pub const ENTRY: &str = "bin/app";

/// A valid manifest whose entry is `entry`.
pub fn manifest_toml(entry: &str) -> String {
    format!(
        "[app]\n\
         id = \"6f1c2a52-5d0e-4a8e-9d43-2f5b3c7e9a10\"\n\
         name = \"test-app\"\n\
         version = \"1.0.0\"\n\
         entry = \"{entry}\"\n"
    )
}

pub fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// An app directory with a manifest, an executable entry, a data file and a symlink.
pub fn sample_app(dir: &Path) {
    fs::write(dir.join("manifest.toml"), manifest_toml(ENTRY)).unwrap();
    write_file(&dir.join(ENTRY), b"#!/bin/sh\necho hello\n", 0o755);
    write_file(&dir.join("share/data.txt"), b"some data\n", 0o600);
    std::os::unix::fs::symlink("../share/data.txt", dir.join("bin/data")).unwrap();
}

/// Builds tar archives entry by entry, including entries `tar::Builder` would refuse to write.
pub struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    pub fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    /// An entry whose name is written into the header verbatim (no validation), < 100 bytes.
    pub fn raw(mut self, path: &[u8], entry_type: tar::EntryType, mode: u32, data: &[u8]) -> Self {
        let mut header = header(entry_type, mode, data.len() as u64);
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    pub fn dir(self, path: &str) -> Self {
        self.raw(path.as_bytes(), tar::EntryType::Directory, 0o755, b"")
    }

    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.raw(path.as_bytes(), tar::EntryType::Regular, mode, data)
    }

    /// A symlink or hard link entry pointing at `target`, written verbatim.
    pub fn link(mut self, entry_type: tar::EntryType, path: &str, target: &str) -> Self {
        let mut header = header(entry_type, 0o777, 0);
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_link_name_literal(target).unwrap();
        header.set_cksum();
        self.0.append(&header, &b""[..]).unwrap();
        self
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, path, target)
    }

    /// A regular file with a path of any length (GNU long-name record when needed).
    pub fn long_file(mut self, path: &str, data: &[u8]) -> Self {
        let mut header = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.0.append_data(&mut header, path, data).unwrap();
        self
    }

    /// Appends bytes as they are, for archives whose headers lie.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.get_mut().extend_from_slice(bytes);
        self
    }

    /// The minimal valid app: `bin/` and an executable `bin/app`.
    pub fn with_entry(self) -> Self {
        self.dir("bin").file(ENTRY, 0o755, b"#!/bin/sh\n")
    }

    pub fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }

    pub fn gzip(self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Seals `payload` with a valid signature, so only the unpack rules can catch what it holds.
pub fn sealed(payload: &[u8]) -> VerifiedBundle {
    let key = PublisherKey::generate().unwrap();
    verify(seal(manifest_toml(ENTRY).as_bytes(), payload, &key).unwrap()).unwrap()
}

/// Unpacks `payload` into a fresh cache and, if that fails, checks the cache holds nothing.
pub fn unpack_with(payload: &[u8], limits: &UnpackLimits) -> Result<(), BundleError> {
    let cache = tempfile::tempdir().unwrap();
    let result = sealed(payload).unpack_into_cache(cache.path(), limits);
    if result.is_err() {
        let leftovers: Vec<_> = fs::read_dir(cache.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "refused unpack left {leftovers:?}");
    }
    result.map(drop)
}

pub fn unpack(payload: &[u8]) -> Result<(), BundleError> {
    unpack_with(payload, &UnpackLimits::default())
}
