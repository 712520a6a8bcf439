//! Garbage collection: old snapshots, then chunks no snapshot references, without a lock and
//! without breaking another device's sync under way.
//!
//! Chunks are shared by files, versions, homes and devices, so nothing can be deleted by looking
//! at one change. One run:
//!
//! 1. **The mark** (`gc/mark`, a random epoch): a device that syncs after it was written
//!    forgets which chunks it believed the store has, so it never builds a snapshot on a chunk
//!    it remembers but a run may delete; it trusts only chunks of the newest snapshot (which
//!    is never deleted) and the chunks it uploads itself.
//! 2. **Snapshots** older than the retention period are deleted, except, per home, the newest
//!    one (the current state) and the newest one older than the retention period (the state at
//!    the start of the period, which `restore --at` may ask for), and the chain a kept delta
//!    needs (from its full snapshot on); newest first, so a killed run leaves readable chains.
//! 3. **Chunks** that no remaining snapshot (live files and tombstones) references become
//!    candidates (`gc/candidates`), and are deleted only by a later run, at least the grace
//!    period after they were marked, if they are still unreferenced and were not written again
//!    within the grace period. A device that started its sync before the mark may still commit
//!    a snapshot using a chunk it remembered; it does so within one sync, far less than the
//!    grace period, so the later run sees that snapshot and keeps the chunk. A chunk another
//!    device uploads for a snapshot it has not committed yet is young: the grace period keeps it.
//!
//! Each step only deletes what the steps before made unneeded, and writes nothing a sync
//! reads except the mark, so a run killed at any point leaves a consistent store; the next run
//! picks up where it stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::crypto::{ChunkId, Kind};
use crate::engine::Ctx;
use crate::tree::{Node, Stored};
use crate::SyncError;

/// The mark of the latest run: devices compare its epoch with the one they last saw.
pub(crate) const GC_MARK: &str = "gc/mark";
/// The chunks the latest run found unreferenced, and when.
const GC_CANDIDATES: &str = "gc/candidates";

/// How a garbage collection behaves.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Snapshots younger than this stay (and the history `versions` and `restore --at` reach).
    /// Default [`crate::TOMBSTONE_RETENTION`] (30 days).
    pub retention: Duration,
    /// An unreferenced chunk is deleted only by a run at least this long after the run that
    /// first found it unreferenced, and only if it was not written within this long. Must be
    /// longer than any one sync takes. Default 1 day.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            retention: crate::TOMBSTONE_RETENTION,
            grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one garbage collection did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    /// Homes in the store.
    pub homes: u64,
    /// Snapshots kept / deleted.
    pub snapshots_kept: u64,
    pub snapshots_deleted: u64,
    /// Chunks referenced by the snapshots kept.
    pub chunks_referenced: u64,
    /// Unreferenced chunks deleted (marked by an earlier run at least the grace period ago).
    pub chunks_deleted: u64,
    /// Unreferenced chunks marked now, deleted by a later run if still unreferenced.
    pub chunks_marked: u64,
    /// Bytes of store objects deleted (snapshots and chunks).
    pub bytes_deleted: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Mark {
    epoch: u64,
    started_ms: u64,
}

/// Unreferenced chunks, each with when a run first found it unreferenced (Unix ms).
#[derive(serde::Serialize, serde::Deserialize)]
struct Candidates {
    chunks: Vec<(ChunkId, u64)>,
}

/// The chunks a snapshot object references (live files and tombstones).
fn chunk_refs(stored: &Stored) -> impl Iterator<Item = ChunkId> + '_ {
    stored.nodes().flat_map(|node| match node {
        Node::File { chunks, .. } => chunks.iter().map(|c| c.id).collect(),
        _ => Vec::new(),
    })
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Ctx<'_> {
    /// The epoch of the store's latest garbage collection (`None`: never collected).
    pub(crate) fn gc_epoch(&self) -> Result<Option<u64>, SyncError> {
        let Some(sealed) = self.remote.get(GC_MARK)? else {
            return Ok(None);
        };
        let plain = self.keys.open(Kind::GcState, GC_MARK, &sealed)?;
        let mark: Mark = postcard::from_bytes(&plain).map_err(|_| SyncError::Tampered {
            object: GC_MARK.into(),
            what: "undecodable garbage collection mark",
        })?;
        Ok(Some(mark.epoch))
    }

    fn put_sealed(&self, name: &str, plain: &[u8]) -> Result<(), SyncError> {
        let sealed = self.keys.seal(Kind::GcState, name, plain);
        self.remote
            .put_many(vec![(name.to_owned(), Bytes::from(sealed))])
    }

    pub(crate) fn gc(&self, opts: &GcOptions) -> Result<GcReport, SyncError> {
        let started = SystemTime::now();
        let mut report = GcReport::default();
        let mut epoch = [0u8; 8];
        getrandom::getrandom(&mut epoch).expect("the kernel's random source");
        let mark = Mark {
            epoch: u64::from_le_bytes(epoch),
            started_ms: ms(started),
        };
        self.put_sealed(
            GC_MARK,
            &postcard::to_stdvec(&mark).expect("a mark serializes"),
        )?;

        // Snapshots, per home.
        let mut homes: BTreeMap<String, Vec<(u64, crate::store::Listed)>> = BTreeMap::new();
        for listed in self.remote.list_all("homes")? {
            let Some((home, version)) = listed.name.split_once('/') else {
                continue;
            };
            match u64::from_str_radix(version, 16) {
                Ok(v) if version.len() == 16 && v > 0 => homes
                    .entry(home.to_owned())
                    .or_default()
                    .push((v, listed.clone())),
                _ => {
                    tracing::warn!(object = %listed.name, "ignoring a foreign object among the snapshots")
                }
            }
        }
        report.homes = homes.len() as u64;
        let cutoff_ms = ms(started).saturating_sub(opts.retention.as_millis() as u64);
        let mut referenced: HashSet<ChunkId> = HashSet::new();
        for (home, mut versions) in homes {
            versions.sort_by_key(|(v, _)| *v);
            let newest = versions.last().map_or(0, |(v, _)| *v);
            // Newest first: the first one older than the cutoff is kept, those after it go,
            // except the ones a kept delta's chain needs (from its full snapshot on).
            let mut found_boundary = false;
            let mut keep_from = u64::MAX;
            let mut older = Vec::new();
            for (version, listed) in versions.into_iter().rev() {
                let (stored, _, _) = self.read_object(&home, version)?;
                let keep = if version == newest || stored.time_ms() >= cutoff_ms {
                    true
                } else {
                    !std::mem::replace(&mut found_boundary, true)
                };
                if keep {
                    report.snapshots_kept += 1;
                    keep_from = keep_from.min(stored.chain().full);
                    // A delta's nodes are the ones it changes; its chain's full snapshot (kept
                    // too) holds the rest, so every tree it stands for is covered.
                    referenced.extend(chunk_refs(&stored));
                } else {
                    older.push((version, listed));
                }
            }
            // Newest first: a run killed here leaves the oldest versions, a chain from its
            // full snapshot on, readable.
            for (version, listed) in older {
                if version >= keep_from {
                    let (stored, _, _) = self.read_object(&home, version)?;
                    report.snapshots_kept += 1;
                    referenced.extend(chunk_refs(&stored));
                } else {
                    self.remote
                        .delete(&crate::engine::snapshot_name(&home, version))?;
                    report.snapshots_deleted += 1;
                    report.bytes_deleted += listed.size;
                }
            }
        }
        report.chunks_referenced = referenced.len() as u64;

        // Chunks: delete the earlier run's candidates still unreferenced and old, mark the rest.
        let earlier: Option<Candidates> = match self.remote.get(GC_CANDIDATES)? {
            Some(sealed) => {
                let plain = self.keys.open(Kind::GcState, GC_CANDIDATES, &sealed)?;
                Some(
                    postcard::from_bytes(&plain).map_err(|_| SyncError::Tampered {
                        object: GC_CANDIDATES.into(),
                        what: "undecodable garbage collection candidates",
                    })?,
                )
            }
            None => None,
        };
        let grace_ms = opts.grace.as_millis() as u64;
        let now = ms(started);
        let earlier: HashMap<ChunkId, u64> =
            earlier.map_or_else(HashMap::new, |c| c.chunks.into_iter().collect());
        let mut marked = Vec::new();
        for listed in self.remote.list_all("chunks")? {
            let Some(id) = listed
                .name
                .rsplit('/')
                .next()
                .and_then(|hex_id| hex::decode(hex_id).ok())
                .and_then(|bytes| ChunkId::try_from(bytes).ok())
            else {
                tracing::warn!(object = %listed.name, "ignoring a foreign object among the chunks");
                continue;
            };
            if referenced.contains(&id) {
                continue;
            }
            let written_ms = listed.modified.map_or(u64::MAX, ms);
            let marked_ms = earlier.get(&id).copied();
            let old = |at: u64| at.saturating_add(grace_ms) <= now;
            if marked_ms.is_some_and(old) && old(written_ms) {
                self.remote.delete(&crate::engine::chunk_name(&id))?;
                report.chunks_deleted += 1;
                report.bytes_deleted += listed.size;
            } else {
                marked.push((id, marked_ms.unwrap_or(now)));
            }
        }
        report.chunks_marked = marked.len() as u64;
        let candidates = Candidates { chunks: marked };
        self.put_sealed(
            GC_CANDIDATES,
            &postcard::to_stdvec(&candidates).expect("candidates serialize"),
        )?;
        Ok(report)
    }
}
