//! The crate's one error type: every way a sync can fail, with the path, object or count that
//! explains it.

use std::path::PathBuf;

/// Why a sync, status, versions or restore call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The store address could not be parsed.
    #[error("invalid store address {input:?}: {reason}; expected DIR, file://DIR, s3://BUCKET/PREFIX or webdav+http(s)://HOST/PATH")]
    BadStoreUrl { input: String, reason: String },
    /// S3 credentials are missing or their file is unsafe.
    #[error("S3 credentials: {reason}")]
    Credentials { reason: String },
    /// The backend could not be built from the configuration.
    #[error("cannot open the store {url}: {reason}")]
    StoreConfig { url: String, reason: String },
    /// The store holds another user's data (its key check does not open with this key).
    #[error("the store {url} belongs to another key: its key check does not authenticate with this user's key (wrong `elastos id`, or the wrong store)")]
    WrongKey { url: String },
    /// Another device committed again and again while this one tried to.
    #[error(
        "gave up after {attempts} attempts: another device kept committing to this home; try again"
    )]
    Contended { attempts: u32 },
    /// The store failed after every retry (5xx, timeouts, connection refused).
    #[error("store {op} of {object} failed after {attempts} attempts: {message}")]
    Store {
        op: String,
        object: String,
        attempts: u32,
        /// The network client's description (from the helper `elastos-cloud-remote`).
        message: String,
    },
    /// A network store did not answer within the caller's bound ([`crate::StoreWait`]); nothing
    /// was committed, local changes wait for the next sync.
    #[error("the store {url} did not answer within {} s; nothing was committed, and local changes stay pending for the next sync", waited.as_secs_f32())]
    StoreTimeout {
        url: String,
        waited: std::time::Duration,
    },
    /// The network store helper (`elastos-cloud-remote`) failed or broke the protocol.
    #[error("the network store helper for {url} failed: {reason}")]
    RemoteHelper { url: String, reason: String },
    /// An object the snapshot refers to is missing from the store.
    #[error("store object {object} is missing (referenced by snapshot {version} of this home)")]
    MissingObject { object: String, version: u64 },
    /// An object failed authentication: modified, truncated, swapped with another object, or
    /// written under another key. Never accepted.
    #[error("store object {object} failed authentication ({what}): it was modified, truncated, swapped or replayed")]
    Tampered { object: String, what: &'static str },
    /// The store shows an older state than this device has already seen.
    #[error("the store rolled back this home: it shows version {found} but this device has seen version {seen}; refusing to sync (restore the store or remove {state:?} to trust it again)")]
    Rollback {
        seen: u64,
        found: u64,
        state: PathBuf,
    },
    /// A sync would delete more than half of the home's files in the store (at least three).
    #[error("safety stop: this sync would delete {deletes} of the {files} files of this home in the cloud; nothing was changed. If that is intended, run it again confirmed (`elastos sync now APP --confirm-delete`); deleted files stay restorable for 30 days")]
    MassDelete { deletes: usize, files: usize },
    /// Another process syncs this home with the same state directory right now.
    #[error("home {home} is being synced by another process (lock {lock:?})")]
    Busy { home: String, lock: PathBuf },
    /// A path given by the caller is not a relative path inside the home.
    #[error("path {path:?} is not a relative path inside the home (no `..`, no leading `/`)")]
    BadPath { path: PathBuf },
    /// Files on demand: files whose content here is not the synced version (or not synced at
    /// all) cannot be evicted; nothing was evicted.
    #[error(
        "refusing to evict: {} has changes not on your cloud disk ({hint}); nothing was evicted",
        list(paths)
    )]
    Unsynced {
        paths: Vec<PathBuf>,
        hint: &'static str,
    },
    /// Files on demand: the path is neither in the home nor on the cloud disk.
    #[error(
        "{path:?} is not a file or directory of this home (paths are relative to the app's home)"
    )]
    NotInHome { path: PathBuf },
    /// `unpin` of a path that is not pinned.
    #[error("{path:?} is not pinned; pinned: {}", if pinned.is_empty() { "nothing".to_owned() } else { list(pinned) })]
    NotPinned { path: PathBuf, pinned: Vec<PathBuf> },
    /// A placeholder could not be filled or read as one.
    #[error("placeholder {path:?}: {reason}")]
    Placeholder { path: PathBuf, reason: String },
    /// No version of the path exists at the requested time.
    #[error("nothing to restore: {what}")]
    NothingToRestore { what: String },
    /// Local file system error with the path it concerns.
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The device's state directory holds data this version cannot read.
    #[error("corrupt sync state {path:?}: {reason}")]
    State { path: PathBuf, reason: String },
}

/// Up to 10 paths, then how many more.
fn list(paths: &[PathBuf]) -> String {
    let mut out: Vec<String> = paths
        .iter()
        .take(10)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > 10 {
        out.push(format!("and {} more", paths.len() - 10));
    }
    out.join(", ")
}

impl SyncError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SyncError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
