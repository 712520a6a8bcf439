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
use crate::tree::{Chain, Delta, Node, RelPath, Snapshot, Tree};
use crate::SyncError;

/// Format 2: `head_chain` (delta snapshots) and change records after the image. A format 1
/// index (whose head is always a full snapshot) is read and upgraded.
const INDEX_FORMAT: u32 = 2;
/// The change records after an index's image may grow to a quarter of the image (at least
/// this) before the next save rewrites it whole.
const MIN_LOG_BYTES: u64 = 64 << 10;

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
    /// Where `head`'s object sits in its delta chain.
    pub head_chain: Chain,
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
    /// Where the file read ends: its image's length and the valid length of image and records.
    #[serde(skip)]
    log: LogPos,
}

#[derive(Debug, Clone, Copy, Default)]
struct LogPos {
    image: u64,
    valid: u64,
}

/// A format 1 index: the fields of [`HomeIndex`] but `head_chain`.
#[derive(serde::Deserialize)]
struct HomeIndexV1 {
    _format: u32,
    head: Option<Snapshot>,
    head_hash: [u8; 32],
    head_size: u64,
    head_e_tag: Option<String>,
    highest_seen: u64,
    base_overrides: BTreeMap<RelPath, Option<Node>>,
    stats: BTreeMap<RelPath, (LocalStat, u64)>,
    home_identity: Option<(u64, Option<i64>)>,
    last_sync_ms: Option<u64>,
}

/// One sync's changes to an index, appended after its image (`len u32 LE | the first 8 bytes of
/// the body's SHA-256 | body`, postcard): a sync of one file among 100k writes a few hundred
/// bytes instead of the whole index. A record cut short by a crash fails its check and is
/// ignored with everything after it (that sync's changes are lost to the index only: the
/// next sync merges them again, as after a crash before the save).
#[derive(serde::Serialize, serde::Deserialize)]
struct IndexChange {
    /// The head's changes (`None`: the same head); its `chain` is the new head's.
    head: Option<Delta>,
    head_hash: [u8; 32],
    head_size: u64,
    head_e_tag: Option<String>,
    highest_seen: u64,
    base_overrides: BTreeMap<RelPath, Option<Node>>,
    stats: Vec<(RelPath, Option<(LocalStat, u64)>)>,
    home_identity: Option<(u64, Option<i64>)>,
    last_sync_ms: Option<u64>,
}

impl IndexChange {
    fn apply(self, index: &mut HomeIndex) -> Result<(), &'static str> {
        if let Some(delta) = self.head {
            let head = index.head.as_mut().ok_or("a head change without a head")?;
            index.head_chain = delta.chain;
            delta.apply(head);
        }
        index.head_hash = self.head_hash;
        index.head_size = self.head_size;
        index.head_e_tag = self.head_e_tag;
        index.highest_seen = self.highest_seen;
        index.base_overrides = self.base_overrides;
        for (path, stat) in self.stats {
            match stat {
                Some(stat) => index.stats.insert(path, stat),
                None => index.stats.remove(&path),
            };
        }
        index.home_identity = self.home_identity;
        index.last_sync_ms = self.last_sync_ms;
        Ok(())
    }
}

/// What the index held before a sync changed it, for [`State::save_changes`].
pub(crate) struct Prior<'a> {
    /// The head it had, `None` when it had none; the head is the same when its hash is.
    pub head: Option<&'a Snapshot>,
    pub head_hash: [u8; 32],
    pub stats: &'a BTreeMap<RelPath, (LocalStat, u64)>,
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
        let bad = |reason: String| SyncError::State {
            path: path.clone(),
            reason,
        };
        let (format, _) =
            postcard::take_from_bytes::<u32>(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut index = match format {
            1 => {
                let v1: HomeIndexV1 =
                    postcard::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
                HomeIndex {
                    format: INDEX_FORMAT,
                    head_chain: Chain {
                        full: v1.head.as_ref().map_or(0, |h| h.version),
                        entries: 0,
                    },
                    head: v1.head,
                    head_hash: v1.head_hash,
                    head_size: v1.head_size,
                    head_e_tag: v1.head_e_tag,
                    highest_seen: v1.highest_seen,
                    base_overrides: v1.base_overrides,
                    stats: v1.stats,
                    home_identity: v1.home_identity,
                    last_sync_ms: v1.last_sync_ms,
                    // Rewritten whole by the next save.
                    log: LogPos::default(),
                }
            }
            INDEX_FORMAT => {
                let (mut index, mut rest) = postcard::take_from_bytes::<HomeIndex>(&bytes)
                    .map_err(|e| bad(e.to_string()))?;
                let image = (bytes.len() - rest.len()) as u64;
                index.log = LogPos {
                    image,
                    valid: image,
                };
                while let Some((change, len, next)) = next_record(rest) {
                    change.apply(&mut index).map_err(|e| bad(e.into()))?;
                    index.log.valid += len;
                    rest = next;
                }
                index
            }
            other => {
                return Err(bad(format!(
                    "index format {other} (expected {INDEX_FORMAT})"
                )))
            }
        };
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

    /// Writes the index whole (image only, no change records).
    pub(crate) fn save(&self, home_id: &str, index: &HomeIndex) -> Result<(), SyncError> {
        let bytes = postcard::to_stdvec(index).expect("an index always serializes");
        write_atomically(&self.index_path(home_id), &bytes)
    }

    /// Saves `index`, which a sync changed from `prior`: as a change record appended to the
    /// file when the file read is of this format and the records stay under a quarter of the
    /// image, else whole.
    pub(crate) fn save_changes(
        &self,
        home_id: &str,
        index: &HomeIndex,
        prior: Prior,
    ) -> Result<(), SyncError> {
        let head = match (prior.head, &index.head) {
            _ if index.log.image == 0 => return self.save(home_id, index),
            (Some(_), Some(_)) if prior.head_hash == index.head_hash => None,
            (Some(old), Some(new)) => match new.parent {
                Some(parent) => {
                    let mut delta = Delta::between(old, new, parent, index.head_chain);
                    delta.chain = index.head_chain;
                    Some(delta)
                }
                None => return self.save(home_id, index),
            },
            _ => return self.save(home_id, index),
        };
        let change = IndexChange {
            head,
            head_hash: index.head_hash,
            head_size: index.head_size,
            head_e_tag: index.head_e_tag.clone(),
            highest_seen: index.highest_seen,
            base_overrides: index.base_overrides.clone(),
            stats: crate::tree::changes(prior.stats, &index.stats),
            home_identity: index.home_identity,
            last_sync_ms: index.last_sync_ms,
        };
        let body = postcard::to_stdvec(&change).expect("a change always serializes");
        let record_len = (4 + 8 + body.len()) as u64;
        let log_len = index.log.valid - index.log.image;
        if log_len + record_len > (index.log.image / 4).max(MIN_LOG_BYTES) {
            return self.save(home_id, index);
        }
        let mut record = Vec::with_capacity(record_len as usize);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&Sha256::digest(&body)[..8]);
        record.extend_from_slice(&body);
        let path = self.index_path(home_id);
        let appended = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                // Cut what a crash may have left after the last valid record, so that this one is
                // read (a reader stops at the first invalid record).
                f.set_len(index.log.valid)?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0))?;
                f.write_all(&record)?;
                f.sync_data()
            });
        appended.map_err(|e| SyncError::io("append", &path, e))
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

/// The first change record of `bytes`, its length and what follows; `None` at the end or at a
/// record that is cut short or fails its check.
fn next_record(bytes: &[u8]) -> Option<(IndexChange, u64, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().expect("4 bytes")) as usize;
    let check = bytes.get(4..12)?;
    let body = bytes.get(12..12usize.checked_add(len)?)?;
    if Sha256::digest(body)[..8] != *check {
        return None;
    }
    let change = postcard::from_bytes(body).ok()?;
    Some((change, 12 + len as u64, &bytes[12 + len..]))
}

fn create_private_dir(dir: &Path) -> Result<(), SyncError> {
    fsutil::create_private_dir(dir).map_err(|e| SyncError::io("create state directory", dir, e))
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<(), SyncError> {
    fsutil::write_atomically(path, data, 0o600, fsutil::Replace::Yes)
        .map_err(|e| SyncError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalKind;
    use crate::tree::Node;

    fn stat(ino: u64) -> (LocalStat, u64) {
        let st = LocalStat {
            kind: LocalKind::File,
            ino,
            size: 1,
            mtime_ns: 0,
            mode: 0o644,
        };
        (st, 5)
    }

    fn snapshot(version: u64, files: u64) -> Snapshot {
        Snapshot {
            home: "h".into(),
            version,
            parent: Some([version as u8; 32]),
            time_ms: version,
            device: "d".into(),
            live: (0..files)
                .map(|i| (format!("f{i}").into_bytes(), Node::Dir { mode: 0o700 }))
                .collect(),
            deleted: BTreeMap::new(),
        }
    }

    #[test]
    fn changes_are_appended_and_a_torn_record_is_ignored() {
        let root = tempfile::tempdir().unwrap();
        let state = State::open(root.path(), "store").unwrap();
        let mut index = HomeIndex {
            format: INDEX_FORMAT,
            head: Some(snapshot(1, 1000)),
            head_hash: [1; 32],
            stats: (0..1000)
                .map(|i| (format!("f{i}").into_bytes(), stat(i)))
                .collect(),
            ..Default::default()
        };
        state.save("h", &index).unwrap();
        let path = state.index_path("h");
        let whole = std::fs::metadata(&path).unwrap().len();

        // One sync: a new head (one path changed) and one stat changed.
        let mut loaded = state.load("h").unwrap();
        let prior_head = loaded.head.replace({
            let mut s = snapshot(2, 1000);
            s.live.insert(b"f7".to_vec(), Node::Dir { mode: 0o755 });
            s
        });
        let prior_stats = std::mem::take(&mut loaded.stats);
        loaded.stats = prior_stats.clone();
        loaded.stats.insert(b"f3".to_vec(), stat(9999));
        loaded.head_hash = [2; 32];
        let prior = Prior {
            head: prior_head.as_ref(),
            head_hash: [1; 32],
            stats: &prior_stats,
        };
        state.save_changes("h", &loaded, prior).unwrap();
        let appended = std::fs::metadata(&path).unwrap().len();
        assert!(
            appended > whole && appended - whole < 500,
            "{whole} -> {appended}"
        );
        let after = state.load("h").unwrap();
        assert_eq!(after.head, loaded.head);
        assert_eq!(after.stats, loaded.stats);
        assert_eq!(after.head_hash, [2; 32]);

        // A crash mid-append: the cut record is ignored, the index is the one before it.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(appended - 3).unwrap();
        let torn = state.load("h").unwrap();
        assert_eq!(torn.head, index.head);
        assert_eq!(torn.stats, index.stats);
        // The next append cuts the torn bytes first, so it is read.
        index = torn;
        let prior_stats = index.stats.clone();
        index.stats.remove(b"f5".as_slice());
        let prior = Prior {
            head: index.head.as_ref(),
            head_hash: index.head_hash,
            stats: &prior_stats,
        };
        state.save_changes("h", &index, prior).unwrap();
        let after = state.load("h").unwrap();
        assert_eq!(after.stats, index.stats);
        assert_eq!(after.head, index.head);
    }
}
