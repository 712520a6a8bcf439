//! Two-way, end-to-end encrypted sync of app homes with the user's cloud disk.
//!
//! An app's home on this machine is a cache; the user's cloud disk (a local directory, read in
//! this process, or an S3 bucket or a WebDAV collection, reached through the helper process
//! `elastos-cloud-remote`, see [`remote_protocol`]) is the permanent copy. The store sees only padded ciphertext under keyed-hash names. The format, the
//! key hierarchy, what the store learns, the conflict names and the handling of files that
//! change while read are in `docs/cloud.md`.
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
//! # Garbage collection
//! [`SyncEngine::gc`] deletes snapshots older than the retention period (keeping each home's
//! newest, and its newest older than the period) and then, in two runs a grace period apart,
//! chunks no snapshot references; without a lock, safe against other devices syncing meanwhile
//! and against a crash at any point (see `gc.rs` and `docs/cloud.md`).
//!
//! # Non-features
//! - No protection against a store that withholds new snapshots from a device that never saw
//!   them (a rollback is detected only against what this device's state has seen).
//! - No continuous mode: the caller (broker, `elastos run`, `elastos sync now`) decides when to
//!   sync.

#![forbid(unsafe_code)]

mod crypto;
mod engine;
mod error;
mod gc;
mod local;
mod merge;
mod ondemand;
pub mod remote_protocol;
mod report;
mod state;
mod store;
pub mod time;
mod tree;
mod url;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use error::SyncError;
pub use gc::{GcOptions, GcReport};
pub use ondemand::{
    placeholders_under, EvictReport, FetchReport, Filled, PlaceholderHook, PLACEHOLDER_XATTR,
};
pub use report::{
    Conflict, FileVersion, HomeRef, HomeStatus, OnDemandStatus, Phase, Progress, SyncOptions,
    SyncReport, VersionKind,
};
pub use store::{HELPER_ENV, HELPER_NAME, HELPER_SOCKET_ENV};
pub use url::{S3Credentials, StoreConfig, StoreUrl, StoreWait};

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
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
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

/// Syncs homes of one user with one store. Blocking: from async code, call it on a blocking
/// thread (`spawn_blocking`); for a network store it drives its own current-thread runtime, a
/// local directory store is plain file calls.
pub struct SyncEngine {
    remote: store::Remote,
    keys: crypto::Keys,
    state: state::State,
    device: String,
    placeholder_hook: Option<PlaceholderHook>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("store", &self.remote.url)
            .field("device", &self.device)
            .finish()
    }
}

/// The object that proves a store belongs to this key.
const KEY_CHECK: &str = "elastos-cloudsync";
const KEY_CHECK_TEXT: &[u8] = b"elastos-cloudsync v1 key check";

impl SyncEngine {
    /// Opens the store and this device's private state directory (created 0700 if missing: the
    /// per-home indexes, the highest version seen of each home, the device id). Fails with
    /// [`SyncError::WrongKey`] when the store was made with another user's key.
    pub fn open(
        store: &StoreConfig,
        secret: &UserSecret,
        state_dir: &Path,
    ) -> Result<Self, SyncError> {
        let remote = store::Remote::open(store)?;
        let keys = crypto::Keys::new(secret);
        let wrong_key = || SyncError::WrongKey {
            url: remote.url.clone(),
        };
        match remote.get(KEY_CHECK)? {
            Some(sealed) => {
                let text = keys
                    .open(crypto::Kind::KeyCheck, KEY_CHECK, &sealed)
                    .map_err(|_| wrong_key())?;
                if text != KEY_CHECK_TEXT {
                    return Err(wrong_key());
                }
            }
            None => {
                let sealed = keys.seal(crypto::Kind::KeyCheck, KEY_CHECK, KEY_CHECK_TEXT);
                if !remote.create(KEY_CHECK, bytes::Bytes::from(sealed))? {
                    // Another device made it meanwhile: it must open with our key too.
                    let sealed = remote.get(KEY_CHECK)?.ok_or_else(wrong_key)?;
                    keys.open(crypto::Kind::KeyCheck, KEY_CHECK, &sealed)
                        .map_err(|_| wrong_key())?;
                }
            }
        }
        let device = state::State::device(state_dir)?;
        let state = state::State::open(state_dir, &remote.url)?;
        Ok(SyncEngine {
            remote,
            keys,
            state,
            device,
            placeholder_hook: None,
        })
    }

    /// This device's short id, as used in conflict names and [`FileVersion::device`].
    pub fn device(&self) -> &str {
        &self.device
    }

    fn ctx(&self) -> engine::Ctx<'_> {
        engine::Ctx {
            remote: &self.remote,
            keys: &self.keys,
            state: &self.state,
            device: &self.device,
            placeholder_hook: self.placeholder_hook.as_ref(),
        }
    }

    /// Calls `hook` with every placeholder this engine makes (eviction, and an evicted file
    /// another device changed), before it is renamed into place: the broker daemon puts its
    /// fanotify pre-content mark on it, so that no read ever sees a placeholder's zeros.
    pub fn set_placeholder_hook(&mut self, hook: PlaceholderHook) {
        self.placeholder_hook = Some(hook);
    }

    /// Files on demand: drops the content of the files of `paths` (files or directories,
    /// relative to the home; all of it when empty) and leaves placeholders with the same name,
    /// size, mode, mtime and owner, carrying the [`PLACEHOLDER_XATTR`] marker. Only files whose
    /// content here is, hashed now, the synced version in the store are evicted; if any file
    /// has unsynced changes nothing is evicted ([`SyncError::Unsynced`], naming them). Pinned
    /// files are skipped. Needs `CAP_SYS_ADMIN` (the marker is a `trusted.*` xattr), and a
    /// reader that fetches the content back on first use (the broker daemon's fanotify group).
    pub fn evict(
        &self,
        home: &HomeRef,
        dir: &Path,
        paths: &[PathBuf],
    ) -> Result<EvictReport, SyncError> {
        self.ctx().evict(&self.keys.home_id(home), dir, paths)
    }

    /// Pins `paths` (files or directories): never evicted, and fetched back now if they are.
    pub fn pin(
        &self,
        home: &HomeRef,
        dir: &Path,
        paths: &[PathBuf],
        owner: Option<(u32, u32)>,
    ) -> Result<FetchReport, SyncError> {
        self.ctx()
            .pin(&self.keys.home_id(home), dir, paths, true, owner)
    }

    /// Unpins `paths` (each must be pinned as given, else [`SyncError::NotPinned`]).
    pub fn unpin(&self, home: &HomeRef, paths: &[PathBuf]) -> Result<FetchReport, SyncError> {
        self.ctx()
            .pin(&self.keys.home_id(home), Path::new(""), paths, false, None)
    }

    /// Fetches every evicted file of the home back into its placeholder (`elastos run` does
    /// this before the app starts when no broker daemon serves reads).
    pub fn fetch_evicted(&self, home: &HomeRef, dir: &Path) -> Result<FetchReport, SyncError> {
        self.ctx().fetch(&self.keys.home_id(home), dir, &[], None)
    }

    /// The home's evicted files as this device recorded them (paths relative to the home);
    /// the broker daemon marks them for fanotify when it starts.
    pub fn evicted(&self, home: &HomeRef) -> Result<Vec<PathBuf>, SyncError> {
        let od = self.state.load_ondemand(&self.keys.home_id(home))?;
        Ok(od
            .evicted
            .keys()
            .map(|p| tree::as_path(p).to_owned())
            .collect())
    }

    /// Fills one placeholder through `file`, an open descriptor of it (the broker daemon's
    /// fanotify event descriptor: its writes raise no event), at `rel` in the home (a renamed
    /// placeholder is found by its content). Takes no lock: a sync under way never delays a
    /// read. A file whose marker is stale (the app truncated or rewrote it) only loses its
    /// marker.
    pub fn fill(
        &self,
        home: &HomeRef,
        file: &std::fs::File,
        rel: &Path,
    ) -> Result<Filled, SyncError> {
        self.ctx().fill_open(&self.keys.home_id(home), file, rel)
    }

    /// Two-way sync of `home` with the local directory `dir` (created if missing). A missing or
    /// empty `dir` with a known remote is a lost cache: it is restored, never taken as "delete
    /// everything".
    pub fn sync(
        &self,
        home: &HomeRef,
        dir: &Path,
        opts: &SyncOptions,
    ) -> Result<SyncReport, SyncError> {
        let home_id = self.keys.home_id(home);
        let _lock = self.state.lock(&home_id)?;
        let ctx = self.ctx();
        let mut report = SyncReport::default();
        for _ in 0..engine::COMMIT_ATTEMPTS {
            match ctx.sync_pass(&home_id, dir, opts, &mut report)? {
                engine::Pass::Done(report) => return Ok(report),
                engine::Pass::LostRace => {
                    tracing::info!(home = %home_id, "another device committed first; merging again")
                }
            }
        }
        Err(SyncError::Contended {
            attempts: engine::COMMIT_ATTEMPTS,
        })
    }

    /// Whether the store holds a version of the home this device has not synced yet: one
    /// listing of the home's snapshots when it does not (the broker daemon's periodic pull asks
    /// this before it scans a home). A store that rolled back is an error, as in [`Self::sync`].
    pub fn remote_changed(&self, home: &HomeRef) -> Result<bool, SyncError> {
        let home_id = self.keys.home_id(home);
        let index = self.state.load(&home_id)?;
        Ok(matches!(
            self.ctx().fetch_head(&home_id, &index)?,
            engine::Fetched::New { .. }
        ))
    }

    /// Whether a sync of `home` at `dir` would find nothing to bring here: the store holds no
    /// version this device has not synced, and `dir` is the directory this device last synced
    /// (a missing or new one is a lost cache to restore). Local changes are not looked at, and
    /// `dir` is only stat'ed, never read: `elastos run` asks this as a user who cannot read an
    /// app's home, and skips the sync before the app when nothing would arrive (the app's own
    /// changes go up after it exits).
    pub fn nothing_to_bring(&self, home: &HomeRef, dir: &Path) -> Result<bool, SyncError> {
        let home_id = self.keys.home_id(home);
        let index = self.state.load(&home_id)?;
        if index.home_identity.is_none() || local::identity_at(dir)? != index.home_identity {
            return Ok(false);
        }
        Ok(matches!(
            self.ctx().fetch_head(&home_id, &index)?,
            engine::Fetched::Unchanged
        ))
    }

    /// Pending changes each way, last sync, conflict copies and size, without changing anything
    /// (one small remote read when nothing changed remotely; local files whose stat changed
    /// count as pending without being read).
    pub fn status(&self, home: &HomeRef, dir: &Path) -> Result<HomeStatus, SyncError> {
        let home_id = self.keys.home_id(home);
        let ctx = self.ctx();
        let index = self.state.load(&home_id)?;
        let base = index.base();
        let remote = match ctx.fetch_head(&home_id, &index)? {
            engine::Fetched::Unchanged => None,
            engine::Fetched::New { head, .. } => Some(head.snapshot),
        };
        let od = self.state.load_ondemand(&home_id)?;
        let (local, changed, placeholders) = match local::HomeDir::open(dir, false, None)? {
            Some(home) => {
                let scanned = ctx.scan(&home, &index, &base, &od, None, &SyncOptions::default())?;
                (scanned.tree, scanned.changed, scanned.placeholders)
            }
            None => Default::default(),
        };
        let mut pending_up: Vec<PathBuf> = changed
            .iter()
            .map(|p| tree::as_path(p).to_owned())
            .collect();
        pending_up.extend(
            base.keys()
                .filter(|p| !local.contains_key(*p) && !local.is_empty())
                .map(|p| tree::as_path(p).to_owned()),
        );
        pending_up.extend(
            local
                .iter()
                .filter(|(p, n)| n.is_dir() && !base.contains_key(*p))
                .map(|(p, _)| tree::as_path(p).to_owned()),
        );
        pending_up.sort();
        let pending_down = match &remote {
            Some(snapshot) => tree::differing(&snapshot.live, &base)
                .into_iter()
                .map(|p| tree::as_path(p).to_owned())
                .collect(),
            None if local.is_empty() => base.keys().map(|p| tree::as_path(p).to_owned()).collect(),
            None => Vec::new(),
        };
        let conflicts = local
            .keys()
            .filter(|p| {
                tree::as_path(p)
                    .file_name()
                    .is_some_and(|n| is_conflict_name(&n.to_string_lossy()))
            })
            .map(|p| tree::as_path(p).to_owned())
            .collect();
        let head = remote.as_ref().or(index.head.as_ref());
        let (evicted_files, evicted_bytes, pinned_files, pinned_bytes) =
            ondemand::counts(&placeholders, &od, &local);
        Ok(HomeStatus {
            synced_version: index.version(),
            remote_version: head.map_or(0, |h| h.version),
            last_sync: index
                .last_sync_ms
                .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
            pending_up,
            pending_down,
            conflicts,
            bytes: head.map_or(0, |h| h.live.values().map(tree::Node::size).sum()),
            entries: head.map_or(0, |h| h.live.len() as u64),
            on_demand: OnDemandStatus {
                evicted_files,
                evicted_bytes,
                pinned_files,
                pinned_bytes,
                pinned: od
                    .pinned
                    .iter()
                    .map(|p| tree::as_path(p).to_owned())
                    .collect(),
            },
        })
    }

    /// Collects garbage in the whole store (every home of this user): see [`GcOptions`].
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport, SyncError> {
        self.ctx().gc(opts)
    }

    /// Walks every snapshot of the home, oldest first (authenticated, version by version; a
    /// delta applied on the version before it), until `f` returns false.
    fn walk_history(
        &self,
        home_id: &str,
        f: &mut dyn FnMut(&tree::Snapshot) -> bool,
    ) -> Result<(), SyncError> {
        let ctx = self.ctx();
        let index = self.state.load(home_id)?;
        let versions = ctx.list_versions(home_id, 1)?;
        let found = versions.last().map_or(0, |(v, _)| *v);
        if found < index.highest_seen {
            return Err(SyncError::Rollback {
                seen: index.highest_seen,
                found,
                state: self.state.dir().to_owned(),
            });
        }
        let mut current: Option<(tree::Snapshot, [u8; 32])> = None;
        for (version, _) in versions {
            let (stored, hash, _) = ctx.read_object(home_id, version)?;
            if let (Some((_, parent)), tree::Stored::Full(s)) = (&current, &stored) {
                if s.parent != Some(*parent) {
                    tracing::warn!(
                        home = home_id,
                        version,
                        "snapshot chain broken here (two devices committed the same version)"
                    );
                }
            }
            let from = current.take().map(|(s, h)| (std::borrow::Cow::Owned(s), h));
            let snapshot = ctx.assemble(home_id, stored, hash, from)?;
            if !f(&snapshot) {
                return Ok(());
            }
            current = Some((snapshot, hash));
        }
        Ok(())
    }

    /// Every version of `path` (relative to the home) in the store's history, newest first,
    /// deletions included ([`VersionKind::Deleted`]).
    pub fn versions(&self, home: &HomeRef, path: &Path) -> Result<Vec<FileVersion>, SyncError> {
        let rel = tree::rel_from_path(path)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| SyncError::BadPath {
                path: path.to_owned(),
            })?;
        let home_id = self.keys.home_id(home);
        let mut out: Vec<FileVersion> = Vec::new();
        let mut last: Option<Option<tree::Node>> = None;
        self.walk_history(&home_id, &mut |snapshot| {
            let now = snapshot.live.get(&rel).cloned();
            let changed = match (&last, &now) {
                (None, None) => false,
                (None, Some(_)) => true,
                (Some(prev), now) => {
                    !(tree::same(prev.as_ref(), now.as_ref())
                        && prev.as_ref().map(tree::Node::size)
                            == now.as_ref().map(tree::Node::size))
                }
            };
            if changed {
                let time = std::time::UNIX_EPOCH + Duration::from_millis(snapshot.time_ms);
                let (kind, size, mode) = match &now {
                    Some(tree::Node::File { size, mode, .. }) => (VersionKind::File, *size, *mode),
                    Some(tree::Node::Symlink { .. }) => (VersionKind::Symlink, 0, 0o777),
                    Some(tree::Node::Dir { mode }) => (VersionKind::Dir, 0, *mode),
                    None => (VersionKind::Deleted, 0, 0),
                };
                out.push(FileVersion {
                    version: snapshot.version,
                    time,
                    kind,
                    size,
                    mode,
                    device: snapshot.device.clone(),
                });
            }
            last = Some(now);
            true
        })?;
        out.reverse();
        Ok(out)
    }

    /// Restores `path` (a file or a directory; `None`: the whole home) as it was at `at`
    /// (`None`: the newest version, deleted paths included) into `dir`, and commits the result
    /// as a new version so other devices get it too. The home is synced first, so a local
    /// version that is replaced is in the store's history, never lost. Paths created after
    /// `at` are kept.
    pub fn restore(
        &self,
        home: &HomeRef,
        dir: &Path,
        path: Option<&Path>,
        at: Option<SystemTime>,
        opts: &SyncOptions,
    ) -> Result<SyncReport, SyncError> {
        let scope = match path {
            Some(p) => {
                tree::rel_from_path(p).ok_or_else(|| SyncError::BadPath { path: p.to_owned() })?
            }
            None => Vec::new(),
        };
        let home_id = self.keys.home_id(home);
        let first = self.sync(home, dir, opts)?;
        let what = || match path {
            Some(p) => format!("{} has no version", p.display()),
            None => "the home has no version".to_owned(),
        };
        // The version to restore: the newest written at or before `at`, else the newest. One
        // walk finds it, a second stops there (only one tree is ever held).
        let at_ms = at.map(|at| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
        let mut target = None;
        self.walk_history(&home_id, &mut |s| {
            if at_ms.is_none_or(|at_ms| s.time_ms <= at_ms) {
                target = Some(s.version);
            }
            true
        })?;
        let target = match (target, at) {
            (Some(target), _) => target,
            (None, Some(at)) => {
                return Err(SyncError::NothingToRestore {
                    what: format!(
                        "{} at {} (the oldest is newer)",
                        what(),
                        time::format_rfc3339(at)
                    ),
                })
            }
            (None, None) => return Err(SyncError::NothingToRestore { what: what() }),
        };
        let mut wanted = tree::Tree::new();
        self.walk_history(&home_id, &mut |s| {
            if s.version != target {
                return true;
            }
            wanted = s
                .live
                .iter()
                .filter(|(p, _)| tree::is_within(p, &scope))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect();
            if at.is_none() {
                for (p, t) in &s.deleted {
                    if tree::is_within(p, &scope) && !wanted.contains_key(p) {
                        wanted.insert(p.clone(), t.last.clone());
                    }
                }
            }
            false
        })?;
        if wanted.is_empty() {
            return Err(SyncError::NothingToRestore { what: what() });
        }
        let mut report = self.ctx().restore_into(&home_id, dir, &wanted, opts)?;
        let second = self.sync(home, dir, opts)?;
        report.version = second.version;
        report.committed = second.committed;
        report.uploaded = second.uploaded;
        report.bytes_uploaded += first.bytes_uploaded + second.bytes_uploaded;
        report.bytes_downloaded += first.bytes_downloaded + second.bytes_downloaded;
        report.downloaded.extend(first.downloaded);
        report.conflicts = first.conflicts;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names() {
        let at = time::parse_rfc3339("2026-12-07T15:30:00Z").unwrap();
        let name = |p: &str| conflict_name(Path::new(p), "3fa2b19c", at);
        assert_eq!(
            name("notes.txt"),
            Path::new("notes.conflict-3fa2b19c-20261207T153000Z.txt")
        );
        assert_eq!(
            name("a/b/.bashrc"),
            Path::new("a/b/.bashrc.conflict-3fa2b19c-20261207T153000Z")
        );
        assert_eq!(
            name("x.tar.gz"),
            Path::new("x.tar.conflict-3fa2b19c-20261207T153000Z.gz")
        );
        assert_eq!(
            name("Makefile"),
            Path::new("Makefile.conflict-3fa2b19c-20261207T153000Z")
        );
        assert!(is_conflict_name(
            "notes.conflict-3fa2b19c-20261207T153000Z.txt"
        ));
    }
}
