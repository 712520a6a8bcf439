//! What the engine tells its caller: options in, reports out (all `Serialize`, for
//! `--format json`).

use std::path::PathBuf;
use std::time::SystemTime;

/// One home of one user: the app's publisher and its app id. The store never sees these
/// strings: they are mixed into a keyed hash that names the home's objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct HomeRef {
    /// The publisher's id (the key that signs the app's bundles), as the caller spells it.
    pub publisher: String,
    /// The app id (a UUID from the manifest).
    pub app_id: String,
}

/// How one sync behaves.
#[derive(Default)]
pub struct SyncOptions {
    /// Go ahead even when the sync would delete more than half of the home's files
    /// (otherwise [`crate::SyncError::MassDelete`]).
    pub confirm_mass_delete: bool,
    /// `(uid, gid)` given to every file and directory the sync creates or restores locally (the
    /// app's host uid when running as root); `None` keeps the caller's.
    pub owner: Option<(u32, u32)>,
    /// Called as the sync advances (from the calling thread).
    pub progress: Option<Box<dyn Fn(Progress) + Send + Sync>>,
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("confirm_mass_delete", &self.confirm_mass_delete)
            .field("owner", &self.owner)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Which part of a sync is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Reading the home and hashing changed files.
    Scan,
    /// Encrypting and uploading new chunks.
    Upload,
    /// Downloading, decrypting and writing files.
    Download,
    /// Writing the snapshot that makes the change visible.
    Commit,
}

/// A progress event: `done` of `total` bytes in this phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub phase: Phase,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// The file being worked on, relative to the home.
    pub path: Option<PathBuf>,
}

/// A file kept twice because both sides changed it: the remote version keeps the name, this
/// device's version is saved as `copy`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// The path both sides changed (relative to the home).
    pub path: PathBuf,
    /// Where the other version now lives (relative to the home), named per
    /// [`crate::conflict_name`].
    pub copy: PathBuf,
}

/// What one sync (or restore) did (deserializable: the broker daemon sends it to `elastos run`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SyncReport {
    /// The home's version in the store after this sync (0: the store has nothing for it).
    pub version: u64,
    /// Whether this sync wrote a new snapshot.
    pub committed: bool,
    /// Files and links sent to the store (changed or new), relative to the home.
    pub uploaded: Vec<PathBuf>,
    /// Files and links written locally from the store.
    pub downloaded: Vec<PathBuf>,
    /// Paths deleted locally because they were deleted elsewhere.
    pub deleted_locally: Vec<PathBuf>,
    /// Paths deleted in the store (kept as tombstones) because they were deleted here.
    pub deleted_remotely: Vec<PathBuf>,
    /// Concurrent edits kept twice.
    pub conflicts: Vec<Conflict>,
    /// Files that changed while they were read: left for the next sync.
    pub busy: Vec<PathBuf>,
    /// Encrypted bytes uploaded (chunks and snapshot, after padding).
    pub bytes_uploaded: u64,
    /// Encrypted bytes downloaded.
    pub bytes_downloaded: u64,
    /// Chunks uploaded / chunks that were already in the store (dedup).
    pub chunks_uploaded: u64,
    pub chunks_deduplicated: u64,
    /// Whether the local home was missing or empty and was restored from the store.
    pub restored_lost_cache: bool,
}

/// The state of one home as `elastos sync status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HomeStatus {
    /// The version this device last synced (0: never).
    pub synced_version: u64,
    /// The newest version in the store.
    pub remote_version: u64,
    /// When this device last synced this home.
    #[serde(with = "crate::time::rfc3339_opt")]
    pub last_sync: Option<SystemTime>,
    /// Local changes not yet in the store (paths relative to the home).
    pub pending_up: Vec<PathBuf>,
    /// Store changes not yet here.
    pub pending_down: Vec<PathBuf>,
    /// Conflict copies present in the home.
    pub conflicts: Vec<PathBuf>,
    /// Bytes of regular files in the home as last synced.
    pub bytes: u64,
    /// Number of files, links and directories as last synced.
    pub entries: u64,
    /// Files on demand: what is evicted and pinned here.
    pub on_demand: OnDemandStatus,
}

/// A home's evicted and pinned files on this device.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnDemandStatus {
    /// Placeholders: files whose content is only in the store.
    pub evicted_files: u64,
    /// Their size (what they would take here).
    pub evicted_bytes: u64,
    /// Files that are pinned (never evicted).
    pub pinned_files: u64,
    /// Their size.
    pub pinned_bytes: u64,
    /// The pinned paths, files and directories, as given to `pin`.
    pub pinned: Vec<PathBuf>,
}

/// One version of a path in the store's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileVersion {
    /// The snapshot version that introduced this state.
    pub version: u64,
    /// When that snapshot was written (the writing device's clock).
    #[serde(with = "crate::time::rfc3339")]
    pub time: SystemTime,
    /// What the path was: file, symlink, dir, or deleted (a tombstone).
    pub kind: VersionKind,
    /// File size in bytes (0 for others).
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Which device wrote it (the short device id, also used in conflict names).
    pub device: String,
}

/// The kind of a [`FileVersion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    File,
    Symlink,
    Dir,
    Deleted,
}
