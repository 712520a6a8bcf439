//! Two-way, end-to-end encrypted sync of app homes with the user's cloud disk.
//!
//! An app's home on this machine is a cache; the user's cloud disk (a local directory, an S3
//! bucket or a WebDAV collection, through `object_store`) is the permanent copy. The store sees
//! only padded ciphertext under keyed-hash names. The format, the key hierarchy, what the store
//! learns, the conflict names and the handling of files that change while read are in
//! `docs/cloud.md`.
//!
//! ```no_run
//! use elastos_cloudsync::*;
//! # fn main() -> Result<(), SyncError> {
//! let store = StoreConfig::new("/srv/cloud".parse()?);
//! let engine = SyncEngine::open(&store, &UserSecret::from_bytes([7; 32]), "/var/lib/me/sync".as_ref())?;
//! let home = HomeRef { publisher: "ed25519:…".into(), app_id: "6f0c…".into() };
//! let report = engine.sync(&home, "/home/me/.elastos/homes/6f0c".as_ref(), &SyncOptions::default())?;
//! println!("{}", serde_json::to_string(&report).unwrap());
//! # Ok(()) }
//! ```
//!
//! # Non-features
//! - No garbage collection of chunks: chunk objects are immutable and never deleted, so every
//!   version stays restorable; tombstones leave the tree after [`TOMBSTONE_RETENTION`], their
//!   snapshots stay.
//! - No protection against a store that withholds new snapshots from a device that never saw
//!   them (a rollback is detected only against what this device's state has seen).
//! - No continuous mode: the caller (broker, `elastos run`, `elastos sync now`) decides when to
//!   sync.

#![forbid(unsafe_code)]
// Skeleton commit: the engine that uses these modules follows.
#![allow(dead_code)]

mod crypto;
mod local;
mod tree;
mod error;
mod report;
mod store;
pub mod time;
mod url;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use error::SyncError;
pub use report::{
    Conflict, FileVersion, HomeRef, HomeStatus, Phase, Progress, SyncOptions, SyncReport, VersionKind,
};
pub use url::{S3Credentials, StoreConfig, StoreUrl};

/// How long a deleted path stays in the tree as a tombstone (listed by `versions`, restorable
/// with `restore`): 30 days.
pub const TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The user's root secret for the cloud disk (32 bytes). The caller derives it from the user's
/// key; every key of the store is derived from it with HKDF-SHA256 (see `docs/cloud.md`).
pub struct UserSecret([u8; 32]);

impl UserSecret {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        UserSecret(bytes)
    }
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSecret(<redacted>)")
    }
}

/// The name given to this device's version of a file both sides changed:
/// `STEM.conflict-DEVICE-YYYYMMDDTHHMMSSZ.EXT` (`.EXT` only when the name has one), e.g.
/// `notes.conflict-3fa2b19c-20261207T153000Z.txt`.
pub fn conflict_name(path: &Path, device: &str, at: SystemTime) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A leading dot is part of the stem (".bashrc" has no extension).
    let split = name.rfind('.').filter(|&i| i > 0);
    let (stem, ext) = match split {
        Some(i) => (&name[..i], &name[i..]),
        None => (name.as_str(), ""),
    };
    let file = format!("{stem}.conflict-{device}-{}{ext}", time::format_compact(at));
    path.with_file_name(file)
}

/// Whether a file name is a conflict copy made by [`conflict_name`].
pub fn is_conflict_name(name: &str) -> bool {
    name.contains(".conflict-")
}

/// Syncs homes of one user with one store. Cheap to keep; blocking.
pub struct SyncEngine {
    #[allow(dead_code)] // skeleton: used by the engine
    remote: store::Remote,
    #[allow(dead_code)]
    keys: crypto::Keys,
}

impl SyncEngine {
    /// Opens the store and this device's private state directory (created 0700 if missing: the
    /// per-home indexes, the highest version seen of each home, the device id).
    pub fn open(store: &StoreConfig, secret: &UserSecret, state_dir: &Path) -> Result<Self, SyncError> {
        let _ = (store, secret, state_dir);
        todo!()
    }

    /// This device's short id, as used in conflict names and [`FileVersion::device`].
    pub fn device(&self) -> &str {
        todo!()
    }

    /// Two-way sync of `home` with the local directory `dir`. A missing or empty `dir` with a
    /// known remote is a lost cache: it is restored, never taken as "delete everything".
    pub fn sync(&self, home: &HomeRef, dir: &Path, opts: &SyncOptions) -> Result<SyncReport, SyncError> {
        let _ = (home, dir, opts);
        todo!()
    }

    /// Pending changes each way, last sync, conflict copies and size, without changing anything
    /// (one small remote read when nothing changed remotely).
    pub fn status(&self, home: &HomeRef, dir: &Path) -> Result<HomeStatus, SyncError> {
        let _ = (home, dir);
        todo!()
    }

    /// Every version of `path` (relative to the home) in the store's history, newest first,
    /// tombstones included.
    pub fn versions(&self, home: &HomeRef, path: &Path) -> Result<Vec<FileVersion>, SyncError> {
        let _ = (home, path);
        todo!()
    }

    /// Restores `path` (a file or a directory; `None`: the whole home) as it was at `at`
    /// (`None`: the newest version, deleted paths included) into `dir`, and commits the result
    /// as a new version so other devices get it too.
    pub fn restore(
        &self,
        home: &HomeRef,
        dir: &Path,
        path: Option<&Path>,
        at: Option<SystemTime>,
        opts: &SyncOptions,
    ) -> Result<SyncReport, SyncError> {
        let _ = (home, dir, path, at, opts);
        todo!()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names() {
        let at = time::parse_rfc3339("2026-12-07T15:30:00Z").unwrap();
        let name = |p: &str| conflict_name(Path::new(p), "3fa2b19c", at);
        assert_eq!(name("notes.txt"), Path::new("notes.conflict-3fa2b19c-20261207T153000Z.txt"));
        assert_eq!(name("a/b/.bashrc"), Path::new("a/b/.bashrc.conflict-3fa2b19c-20261207T153000Z"));
        assert_eq!(name("x.tar.gz"), Path::new("x.tar.conflict-3fa2b19c-20261207T153000Z.gz"));
        assert_eq!(name("Makefile"), Path::new("Makefile.conflict-3fa2b19c-20261207T153000Z"));
        assert!(is_conflict_name("notes.conflict-3fa2b19c-20261207T153000Z.txt"));
    }
}
