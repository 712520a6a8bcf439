//! This device's private sync state (`state_dir`, 0700): its device id, and per store and home
//! an index (base tree, file stats, last synced and highest seen version) plus the set of chunk
//! ids known to be in the store. Plain files written atomically, no database: the `elastos`
//! binary links this crate and must not link RocksDB.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use elastos_identity::fsutil;
use sha2::{Digest, Sha256};

use crate::crypto::ChunkId;
use crate::local::LocalStat;
use crate::ondemand::OnDemand;
use crate::tree::{Node, RelPath, Snapshot, Tree};
use crate::SyncError;

const INDEX_FORMAT: u32 = 1;

/// The index of one home on this device.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct HomeIndex {
    pub format: u32,
    /// The newest snapshot this device read or wrote (`None`: none yet); its `live` tree is the
    /// merge base, except for `base_overrides`.
    pub head: Option<Snapshot>,
    /// SHA-256 of `head`'s sealed object.
    pub head_hash: [u8; 32],
    /// Size and e-tag of `head`'s object when last listed: a cheap check that it is unchanged.
    pub head_size: u64,
    pub head_e_tag: Option<String>,
    /// The highest version this device has seen of this home: a store showing less rolled back.
    pub highest_seen: u64,
    /// Paths whose merge base differs from `head` (a local change that could not be applied
    /// because the app changed the file meanwhile): `None` = absent in the base.
    pub base_overrides: BTreeMap<RelPath, Option<Node>>,
    /// What each synced path looked like locally right after the sync (or when last hashed).
    pub stats: BTreeMap<RelPath, (LocalStat, u64)>,
    /// The home directory's identity (inode, birth time) at the last sync: an empty home with
    /// another identity is a lost cache.
    pub home_identity: Option<(u64, Option<i64>)>,
    /// Unix milliseconds of the last successful sync.
    pub last_sync_ms: Option<u64>,
}

impl HomeIndex {
    pub(crate) fn version(&self) -> u64 {
        self.head.as_ref().map_or(0, |h| h.version)
    }

    /// The merge base: the head's tree with the overrides applied (borrowed when there are
    /// none, the usual case).
    pub(crate) fn base(&self) -> Cow<'_, Tree> {
        let mut base = match (&self.head, self.base_overrides.is_empty()) {
            (Some(head), true) => return Cow::Borrowed(&head.live),
            (None, true) => return Cow::Owned(Tree::new()),
            (Some(head), false) => head.live.clone(),
            (None, false) => Tree::new(),
        };
        for (path, node) in &self.base_overrides {
            match node {
                Some(node) => base.insert(path.clone(), node.clone()),
                None => base.remove(path),
            };
        }
        Cow::Owned(base)
    }
}

/// The state directory of one store on this device.
pub(crate) struct State {
    dir: PathBuf,
    known: known::Known,
}

mod known {
    use super::*;
    use std::sync::Mutex;

    /// Chunk ids known to be in the store (uploaded by this device or referenced by a snapshot
    /// it read), backed by an append-only file of 32-byte records. A torn last record (a crash
    /// mid-append) is ignored; a missing id only costs a re-upload.
    pub(crate) struct Known {
        pub(super) set: Mutex<HashSet<ChunkId>>,
        pub(super) path: PathBuf,
    }
}

impl State {
    /// Opens (creating, 0700) the state of the store named `store_url` under `state_dir`.
    pub(crate) fn open(state_dir: &Path, store_url: &str) -> Result<State, SyncError> {
        let store_tag = hex::encode(&Sha256::digest(store_url.as_bytes())[..8]);
        let dir = state_dir.join(format!("store-{store_tag}"));
        for d in [state_dir, &dir, &dir.join("homes")] {
            create_private_dir(d)?;
        }
        let path = dir.join("chunks.known");
        let mut set = HashSet::new();
        match File::open(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .map_err(|e| SyncError::io("read", &path, e))?;
                for record in bytes.chunks_exact(32) {
                    set.insert(record.try_into().expect("32 bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SyncError::io("read", &path, e)),
        }
        // Records are appended whole; a crash can leave a torn one: cut it so later appends stay
        // aligned.
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() % 32 != 0 {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| SyncError::io("open", &path, e))?;
                f.set_len(meta.len() / 32 * 32)
                    .map_err(|e| SyncError::io("truncate", &path, e))?;
            }
        }
        Ok(State {
            dir,
            known: known::Known {
                set: std::sync::Mutex::new(set),
                path,
            },
        })
    }

    /// This device's short id (8 hex digits, random, made once per state directory).
    pub(crate) fn device(state_dir: &Path) -> Result<String, SyncError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join("device");
        match std::fs::read_to_string(&path) {
            Ok(id) if id.trim().len() == 8 && id.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(id.trim().to_owned())
            }
            Ok(_) => Err(SyncError::State {
                path,
                reason: "expected 8 hex digits".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut r = [0u8; 4];
                getrandom::getrandom(&mut r)
                    .map_err(|e| SyncError::io("random", &path, std::io::Error::other(e)))?;
                let id = hex::encode(r);
                write_atomically(&path, id.as_bytes())?;
                // Another process may have raced us: whoever renamed last wins, both read it.
                Ok(std::fs::read_to_string(&path)
                    .map_err(|e| SyncError::io("read", &path, e))?
                    .trim()
                    .to_owned())
            }
            Err(e) => Err(SyncError::io("read", &path, e)),
        }
    }

    /// This store's state directory (named in errors).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn is_known(&self, id: &ChunkId) -> bool {
        self.known.set.lock().expect("not poisoned").contains(id)
    }

    /// Remembers chunk ids as present in the store (only after they were written or read).
    pub(crate) fn add_known(&self, ids: &[ChunkId]) -> Result<(), SyncError> {
        let mut set = self.known.set.lock().expect("not poisoned");
        let new: Vec<u8> = ids
            .iter()
            .filter(|id| set.insert(**id))
            .flat_map(|id| id.iter().copied())
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let path = &self.known.path;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SyncError::io("open", path, e))?;
        f.write_all(&new)
            .map_err(|e| SyncError::io("append", path, e))
    }

    /// Records the store's garbage collection epoch (`gc/mark`); when it differs from the one
    /// recorded, forgets every chunk known to be in the store (a collection may have deleted
    /// them) and returns true.
    pub(crate) fn gc_epoch_changed(&self, epoch: Option<u64>) -> Result<bool, SyncError> {
        let Some(epoch) = epoch else {
            return Ok(false);
        };
        let path = self.dir.join("gc.epoch");
        match std::fs::read(&path) {
            Ok(bytes) if bytes == epoch.to_le_bytes() => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SyncError::io("read", &path, e)),
        }
        let mut set = self.known.set.lock().expect("not poisoned");
        set.clear();
        match std::fs::remove_file(&self.known.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SyncError::io("remove", &self.known.path, e)),
        }
        // Only once the known chunks are forgotten: a crash in between forgets them again.
        write_atomically(&path, &epoch.to_le_bytes())?;
        Ok(true)
    }

    fn index_path(&self, home_id: &str) -> PathBuf {
        self.dir.join("homes").join(format!("{home_id}.idx"))
    }

    /// Takes the home's lock for the life of the returned file: one sync per home and state
    /// directory at a time; others wait up to a minute, then get [`SyncError::Busy`].
    pub(crate) fn lock(&self, home_id: &str) -> Result<File, SyncError> {
        let path = self.dir.join("homes").join(format!("{home_id}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| SyncError::io("open", &path, e))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(f),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SyncError::Busy {
                        home: home_id.to_owned(),
                        lock: path,
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(SyncError::io("lock", &path, e))
                }
            }
        }
    }

    pub(crate) fn load(&self, home_id: &str) -> Result<HomeIndex, SyncError> {
        let path = self.index_path(home_id);
        let read = File::open(&path).and_then(|mut f| {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            Ok((bytes, f.metadata()?.modified()?))
        });
        let (bytes, modified) = match read {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(HomeIndex {
                    format: INDEX_FORMAT,
                    ..Default::default()
                })
            }
            Err(e) => return Err(SyncError::io("read", &path, e)),
        };
        let mut index: HomeIndex = postcard::from_bytes(&bytes).map_err(|e| SyncError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if index.format != INDEX_FORMAT {
            return Err(SyncError::State {
                path,
                reason: format!("index format {} (expected {INDEX_FORMAT})", index.format),
            });
        }
        // A sync that changed nothing only touched the file (`touch`).
        let touched_ms = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        index.last_sync_ms = index.last_sync_ms.map(|ms| ms.max(touched_ms));
        Ok(index)
    }

    /// Records a sync that changed nothing: the index's mtime becomes the last sync time, without
    /// rewriting or syncing the file.
    pub(crate) fn touch(&self, home_id: &str) -> Result<(), SyncError> {
        let path = self.index_path(home_id);
        let now = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        };
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: now,
        };
        rustix::fs::utimensat(rustix::fs::CWD, &path, &times, rustix::fs::AtFlags::empty())
            .map_err(|e| SyncError::io("touch", path, e.into()))
    }

    pub(crate) fn save(&self, home_id: &str, index: &HomeIndex) -> Result<(), SyncError> {
        let bytes = postcard::to_stdvec(index).expect("an index always serializes");
        write_atomically(&self.index_path(home_id), &bytes)
    }

    /// The home's evicted and pinned paths (`homes/HOME.ondemand`; none when missing). A file of
    /// its own beside the index: most homes never evict, and their index stays as it was.
    pub(crate) fn load_ondemand(&self, home_id: &str) -> Result<OnDemand, SyncError> {
        let path = self.dir.join("homes").join(format!("{home_id}.ondemand"));
        match std::fs::read(&path) {
            Ok(bytes) => postcard::from_bytes(&bytes).map_err(|e| SyncError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OnDemand::default()),
            Err(e) => Err(SyncError::io("read", &path, e)),
        }
    }

    /// Writes the home's evicted and pinned paths (removes the file when both are empty).
    pub(crate) fn save_ondemand(&self, home_id: &str, od: &OnDemand) -> Result<(), SyncError> {
        let path = self.dir.join("homes").join(format!("{home_id}.ondemand"));
        if od == &OnDemand::default() {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(SyncError::io("remove", &path, e)),
            };
        }
        write_atomically(&path, &postcard::to_stdvec(od).expect("always serializes"))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), SyncError> {
    fsutil::create_private_dir(dir).map_err(|e| SyncError::io("create state directory", dir, e))
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), SyncError> {
    fsutil::write_atomically(path, data, 0o600, fsutil::Replace::Yes)
        .map_err(|e| SyncError::io("write", path, e))
}
