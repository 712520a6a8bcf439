//! One sync, step by step: read the store's head (one list when nothing changed), scan the
//! home (hashing only files whose stat changed, uploading their new chunks as they are read),
//! merge, apply the store's changes locally, commit a snapshot, save the index.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::crypto::{ChunkId, Keys, Kind};
use crate::local::{HomeDir, LocalKind, LocalStat};
use crate::merge::{merge, Sides};
use crate::ondemand::{OnDemand, PlaceholderHook};
use crate::state::{HomeIndex, Prior, State};
use crate::store::{Remote, PARALLEL};
use crate::tree::{
    self, as_path, Chain, ChunkRef, Delta, Node, RelPath, Snapshot, Stored, Tombstone, Tree,
    MAX_CHAIN,
};
use crate::{Conflict, Phase, Progress, SyncError, SyncOptions, SyncReport};

/// Content-defined chunk sizes (FastCDC 2020): a small edit re-uploads about one average chunk.
pub(crate) const MIN_CHUNK: u32 = 256 << 10;
pub(crate) const AVG_CHUNK: u32 = 1 << 20;
pub(crate) const MAX_CHUNK: u32 = 4 << 20;
/// Sealed chunks queued for upload before they are sent (plus one chunk being read): with
/// [`MAX_CHUNK`] this bounds a sync's buffers to about 25 MiB whatever the file sizes.
const UPLOAD_BATCH_BYTES: usize = 16 << 20;
/// Attempts to read a file that keeps changing while read, before it waits for the next sync.
const READ_ATTEMPTS: u32 = 3;
/// A file modified this close to when it was recorded may have changed again within the
/// file system's timestamp granularity: it is hashed again next time ("racily clean").
const RACY: Duration = Duration::from_secs(2);

/// Whether a stat recorded at `at_ms` can be trusted: the file's mtime is more than [`RACY`]
/// away from it (otherwise an edit in the same instant could have kept the stat).
fn settled(st: &LocalStat, at_ms: u64) -> bool {
    (st.mtime_ns / 1_000_000).abs_diff(at_ms as i64) > RACY.as_millis() as u64
}
/// Attempts of a whole sync when another device commits between our read and our write.
pub(crate) const COMMIT_ATTEMPTS: u32 = 5;
/// The safety stop trips above half the files, from this many deletions on.
const MASS_DELETE_MIN: usize = 3;

pub(crate) fn snapshot_dir(home_id: &str) -> String {
    format!("homes/{home_id}")
}

pub(crate) fn snapshot_name(home_id: &str, version: u64) -> String {
    format!("homes/{home_id}/{version:016x}")
}

pub(crate) fn chunk_name(id: &ChunkId) -> String {
    let hex = hex::encode(id);
    format!("chunks/{}/{hex}", &hex[..2])
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the store has for a home.
pub(crate) struct Head {
    pub snapshot: Snapshot,
    pub hash: [u8; 32],
    pub size: u64,
    pub e_tag: Option<String>,
    /// Where its object sits in its delta chain.
    pub chain: Chain,
}

pub(crate) enum Fetched {
    /// The store has nothing newer than the index's head.
    Unchanged,
    /// A newer (or replaced) head; `forked`: it does not descend from the index's head.
    New { head: Box<Head>, forked: bool },
}

pub(crate) struct Ctx<'a> {
    pub remote: &'a Remote,
    pub keys: &'a Keys,
    pub state: &'a State,
    pub device: &'a str,
    pub placeholder_hook: Option<&'a PlaceholderHook>,
}

/// The chunk list of an open file (FastCDC, as a sync cuts it), without uploading anything.
pub(crate) fn chunk_list(
    keys: &Keys,
    file: &File,
    path: &std::path::Path,
) -> Result<Vec<ChunkRef>, SyncError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut out = Vec::new();
    for chunk in fastcdc::v2020::StreamCDC::new(&mut reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
        let chunk =
            chunk.map_err(|e| SyncError::io("read", path, std::io::Error::other(e.to_string())))?;
        out.push(ChunkRef {
            id: keys.chunk_id(&chunk.data),
            len: chunk.length as u32,
        });
    }
    Ok(out)
}

fn emit(opts: &SyncOptions, phase: Phase, done_bytes: u64, total_bytes: u64, path: Option<&[u8]>) {
    if let Some(progress) = &opts.progress {
        progress(Progress {
            phase,
            done_bytes,
            total_bytes,
            path: path.map(|p| as_path(p).to_owned()),
        });
    }
}

impl Ctx<'_> {
    /// Reads and authenticates snapshot object `version` of the home: a full snapshot or a
    /// delta. Returns it with the SHA-256 and size of its sealed bytes.
    pub(crate) fn read_object(
        &self,
        home_id: &str,
        version: u64,
    ) -> Result<(Stored, [u8; 32], u64), SyncError> {
        let name = snapshot_name(home_id, version);
        let bytes = self
            .remote
            .get(&name)?
            .ok_or_else(|| SyncError::MissingObject {
                object: name.clone(),
                version,
            })?;
        self.open_object(home_id, version, &name, &bytes)
    }

    fn open_object(
        &self,
        home_id: &str,
        version: u64,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Stored, [u8; 32], u64), SyncError> {
        // The kind byte is authenticated by `open`: claiming another kind fails there.
        let kind = match Kind::claimed(bytes) {
            Some(Kind::Delta) => Kind::Delta,
            _ => Kind::Snapshot,
        };
        let plain = self.keys.open(kind, name, bytes)?;
        let stored = match kind {
            Kind::Delta => Delta::decode(&plain).map(Stored::Delta),
            _ => Snapshot::decode(&plain).map(Stored::Full),
        }
        .ok_or_else(|| SyncError::Tampered {
            object: name.to_owned(),
            what: "undecodable snapshot",
        })?;
        if stored.version() != version || stored.home() != home_id {
            return Err(SyncError::Tampered {
                object: name.to_owned(),
                what: "snapshot of another version or home",
            });
        }
        if let Stored::Delta(d) = &stored {
            // A delta names a full snapshot before it, within the bound on a chain's length.
            if d.chain.full >= version || version - d.chain.full >= MAX_CHAIN {
                return Err(SyncError::Tampered {
                    object: name.to_owned(),
                    what: "delta outside its chain's bounds",
                });
            }
        }
        Ok((stored, Sha256::digest(bytes).into(), bytes.len() as u64))
    }

    /// Reads the snapshot objects `versions` (in parallel on a network store).
    fn read_objects(
        &self,
        home_id: &str,
        versions: std::ops::Range<u64>,
    ) -> Result<Vec<(Stored, [u8; 32])>, SyncError> {
        let names: Vec<String> = versions
            .clone()
            .map(|v| snapshot_name(home_id, v))
            .collect();
        let got = self.remote.get_many(&names)?;
        versions
            .zip(names.iter().zip(got))
            .map(|(version, (name, bytes))| {
                let bytes = bytes.ok_or_else(|| SyncError::MissingObject {
                    object: name.clone(),
                    version,
                })?;
                let (stored, hash, _) = self.open_object(home_id, version, name, &bytes)?;
                Ok((stored, hash))
            })
            .collect()
    }

    /// The whole snapshot of version `top`'s object: a full snapshot as it is; a delta applied
    /// on `from` (the snapshot of an earlier version of the same chain, with its object's hash)
    /// after the deltas between them, or else on its chain's full snapshot. Every delta must
    /// name the hash of the object it applies to: a chain with a replaced, reordered or foreign
    /// link is refused.
    pub(crate) fn assemble(
        &self,
        home_id: &str,
        top: Stored,
        top_hash: [u8; 32],
        from: Option<(Cow<'_, Snapshot>, [u8; 32])>,
    ) -> Result<Snapshot, SyncError> {
        let delta = match top {
            Stored::Full(s) => return Ok(s),
            Stored::Delta(d) => d,
        };
        let from = from.filter(|(s, _)| s.version >= delta.chain.full && s.version < delta.version);
        let (mut tree, mut hash, start) = match from {
            Some((s, hash)) => {
                let start = s.version + 1;
                (s.into_owned(), hash, start)
            }
            None => {
                let (full, hash, _) = self.read_object(home_id, delta.chain.full)?;
                match full {
                    Stored::Full(s) => (s, hash, delta.chain.full + 1),
                    Stored::Delta(_) => {
                        return Err(SyncError::Tampered {
                            object: snapshot_name(home_id, delta.chain.full),
                            what: "a delta where its chain's full snapshot should be",
                        })
                    }
                }
            }
        };
        let links = self.read_objects(home_id, start..delta.version)?;
        for (stored, link_hash) in links.into_iter().chain([(Stored::Delta(delta), top_hash)]) {
            let version = stored.version();
            let name = || snapshot_name(home_id, version);
            let Stored::Delta(d) = stored else {
                return Err(SyncError::Tampered {
                    object: name(),
                    what: "a full snapshot inside a delta chain",
                });
            };
            if d.parent != hash {
                return Err(SyncError::Tampered {
                    object: name(),
                    what: "delta does not apply to the snapshot before it",
                });
            }
            d.apply(&mut tree);
            hash = link_hash;
        }
        Ok(tree)
    }

    /// Every version of the home in the store, oldest first.
    pub(crate) fn list_versions(
        &self,
        home_id: &str,
        after: u64,
    ) -> Result<Vec<(u64, crate::store::Listed)>, SyncError> {
        let dir = snapshot_dir(home_id);
        let after_name = (after > 0).then(|| format!("{:016x}", after - 1));
        let listed = self.remote.list(&dir, after_name.as_deref())?;
        let mut out = Vec::with_capacity(listed.len());
        for entry in listed {
            match u64::from_str_radix(&entry.name, 16) {
                Ok(v) if entry.name.len() == 16 && v > 0 => out.push((v, entry)),
                _ => {
                    tracing::warn!(object = %entry.name, "ignoring a foreign object among the snapshots")
                }
            }
        }
        Ok(out)
    }

    /// The store's newest snapshot of the home, checked against what this device saw.
    pub(crate) fn fetch_head(
        &self,
        home_id: &str,
        index: &HomeIndex,
    ) -> Result<Fetched, SyncError> {
        let known = index.version();
        let versions = self.list_versions(home_id, known.min(index.highest_seen).max(1))?;
        let found = versions.last().map_or(0, |(v, _)| *v);
        if found < index.highest_seen {
            // Name the newest version the store still has.
            let found = self
                .list_versions(home_id, 1)?
                .last()
                .map_or(0, |(v, _)| *v);
            return Err(SyncError::Rollback {
                seen: index.highest_seen,
                found,
                state: self.state.dir().to_owned(),
            });
        }
        if found == 0 {
            return Ok(Fetched::Unchanged);
        }
        let (_, listed) = versions.last().expect("found > 0");
        if found == known
            && listed.size == index.head_size
            && listed.e_tag.is_some()
            && listed.e_tag == index.head_e_tag
        {
            return Ok(Fetched::Unchanged);
        }
        let (top, hash, size) = self.read_object(home_id, found)?;
        let chain = top.chain();
        let forked = if known == 0 {
            false
        } else if found == known {
            // Same version, other bytes (listed size or e-tag differed): replaced or not.
            hash != index.head_hash
        } else if found == known + 1 {
            top.parent() != Some(index.head_hash)
        } else {
            match self.read_object(home_id, known + 1) {
                Ok((next, _, _)) => next.parent() != Some(index.head_hash),
                // Garbage collection deleted it (this device was away longer than the
                // retention period): without the chain, merge without a base, which keeps both
                // sides' files rather than lose any.
                Err(SyncError::MissingObject { .. }) => true,
                Err(e) => return Err(e),
            }
        };
        // A delta applies on the index's head when that head is in its chain (the usual case
        // of a device that syncs often: only the new deltas are read).
        let from = match (&index.head, forked) {
            (Some(head), false) => Some((Cow::Borrowed(head), index.head_hash)),
            _ => None,
        };
        let snapshot = self.assemble(home_id, top, hash, from)?;
        if forked {
            tracing::warn!(home = home_id, version = known, "the snapshot this device built on was replaced by another device's; merging without a base");
        }
        Ok(Fetched::New {
            head: Box::new(Head {
                snapshot,
                hash,
                size,
                e_tag: listed.e_tag.clone(),
                chain,
            }),
            forked,
        })
    }
}

/// Sealed chunks waiting to be sent.
pub(crate) struct Uploads<'a> {
    ctx: &'a Ctx<'a>,
    batch: Vec<(String, Bytes)>,
    ids: Vec<ChunkId>,
    queued: BTreeSet<ChunkId>,
    bytes: usize,
}

impl<'a> Uploads<'a> {
    fn new(ctx: &'a Ctx<'a>) -> Self {
        Uploads {
            ctx,
            batch: Vec::new(),
            ids: Vec::new(),
            queued: BTreeSet::new(),
            bytes: 0,
        }
    }

    fn add(&mut self, id: ChunkId, plain: &[u8], report: &mut SyncReport) -> Result<(), SyncError> {
        if self.ctx.state.is_known(&id) || !self.queued.insert(id) {
            report.chunks_deduplicated += 1;
            return Ok(());
        }
        let name = chunk_name(&id);
        let sealed = self.ctx.keys.seal(Kind::Chunk, &name, plain);
        self.bytes += sealed.len();
        report.bytes_uploaded += sealed.len() as u64;
        report.chunks_uploaded += 1;
        self.batch.push((name, Bytes::from(sealed)));
        self.ids.push(id);
        if self.bytes >= UPLOAD_BATCH_BYTES || self.batch.len() >= 64 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SyncError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.ctx.remote.put_many(std::mem::take(&mut self.batch))?;
        self.ctx.state.add_known(&std::mem::take(&mut self.ids))?;
        self.bytes = 0;
        Ok(())
    }
}

/// The home as scanned: its tree, what each path looked like, the files that kept changing.
pub(crate) struct Scanned {
    pub tree: Tree,
    pub stats: BTreeMap<RelPath, LocalStat>,
    pub busy: BTreeSet<RelPath>,
    /// Paths whose stat differs from the index (the pending uploads of `status`).
    pub changed: BTreeSet<RelPath>,
    /// Placeholders of evicted files (their content is the base's; never read).
    pub placeholders: BTreeMap<RelPath, LocalStat>,
}

impl Ctx<'_> {
    /// Scans the home. With `uploads`, files whose stat changed are read, chunked, and their new
    /// chunks sealed and queued; without, their old chunk list stands in (for `status`).
    pub(crate) fn scan(
        &self,
        home: &HomeDir,
        index: &HomeIndex,
        base: &Tree,
        od: &OnDemand,
        mut uploads: Option<(&mut Uploads, &mut SyncReport)>,
        opts: &SyncOptions,
    ) -> Result<Scanned, SyncError> {
        let entries = home.scan()?;
        let total: u64 = entries.iter().map(|(_, st)| st.size).sum();
        let mut done = 0u64;
        // Paths come sorted, like the index and the base: both are walked alongside (no
        // lookup per path), and the trees are built in bulk from sorted vectors.
        let mut recorded_stats = tree::Cursor::new(&index.stats);
        let mut base_nodes = tree::Cursor::new(base);
        let mut tree = Vec::with_capacity(entries.len());
        let mut stats = Vec::with_capacity(entries.len());
        let mut busy = BTreeSet::new();
        let mut changed = BTreeSet::new();
        let mut placeholders = BTreeMap::new();
        for (rel, st) in entries {
            let recorded = recorded_stats.get(&rel);
            // A placeholder stands for the base's content: never read (its zeros must not be
            // uploaded, and a read would fetch it). Checked by marker only where the stat
            // differs from the index (renamed, or unknown to it) or the path was evicted.
            if st.kind == LocalKind::File
                && (od.evicted.contains_key(&rel)
                    || (uploads.is_some() && recorded.is_none_or(|(old, _)| old != &st)))
            {
                match self.placeholder(home, od, &rel, &st, base, false) {
                    Ok(Some(node)) => {
                        placeholders.insert(rel.clone(), st);
                        stats.push((rel.clone(), st));
                        tree.push((rel, node));
                        continue;
                    }
                    Ok(None) => {}
                    Err(SyncError::Placeholder { .. }) => {
                        busy.insert(rel);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let clean = recorded.is_some_and(|(old, at_ms)| old == &st && settled(&st, *at_ms));
            // Racily clean files are hashed again, but only a different stat counts as pending.
            if recorded.is_none_or(|(old, _)| old != &st) && st.kind != LocalKind::Dir {
                changed.insert(rel.clone());
            }
            let (node, st) = match st.kind {
                LocalKind::Dir => (Node::Dir { mode: st.mode }, st),
                LocalKind::Symlink => match home.read_link(&rel) {
                    Ok(target) => (Node::Symlink { target }, st),
                    Err(_) => continue, // gone meanwhile
                },
                LocalKind::File => match (clean, base_nodes.get(&rel)) {
                    (true, Some(Node::File { chunks, .. })) => (
                        Node::File {
                            size: st.size,
                            mode: st.mode,
                            mtime_ns: st.mtime_ns,
                            chunks: chunks.clone(),
                        },
                        st,
                    ),
                    _ => match uploads.as_mut() {
                        None => (
                            Node::File {
                                size: st.size,
                                mode: st.mode,
                                mtime_ns: st.mtime_ns,
                                chunks: Vec::new(),
                            },
                            st,
                        ),
                        Some((uploads, report)) => {
                            match self.read_file(home, &rel, uploads, report, opts)? {
                                Some((node, st)) => {
                                    done += st.size;
                                    emit(opts, Phase::Scan, done, total, Some(&rel));
                                    (node, st)
                                }
                                None => {
                                    busy.insert(rel);
                                    continue;
                                }
                            }
                        }
                    },
                },
                LocalKind::Other => continue,
            };
            stats.push((rel.clone(), st));
            tree.push((rel, node));
        }
        Ok(Scanned {
            tree: tree.into_iter().collect(),
            stats: stats.into_iter().collect(),
            busy,
            changed,
            placeholders,
        })
    }

    /// Reads, chunks and queues one file; `None` when it kept changing while read (or vanished).
    fn read_file(
        &self,
        home: &HomeDir,
        rel: &[u8],
        uploads: &mut Uploads,
        report: &mut SyncReport,
        opts: &SyncOptions,
    ) -> Result<Option<(Node, LocalStat)>, SyncError> {
        for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            let (file, before) = match home.open_file(rel) {
                Ok(opened) => opened,
                Err(SyncError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            let mut chunks = Vec::new();
            let mut read = 0u64;
            let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
            for chunk in
                fastcdc::v2020::StreamCDC::new(&mut reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
            {
                let chunk = chunk.map_err(|e| {
                    SyncError::io("read", home.full(rel), std::io::Error::other(e.to_string()))
                })?;
                let id = self.keys.chunk_id(&chunk.data);
                uploads.add(id, &chunk.data, report)?;
                read += chunk.length as u64;
                chunks.push(ChunkRef {
                    id,
                    len: chunk.length as u32,
                });
                emit(opts, Phase::Upload, read, before.size, Some(rel));
            }
            let after_fd =
                crate::local::fstat(&file).map_err(|e| SyncError::io("stat", home.full(rel), e))?;
            let after_path = home.stat(rel)?;
            if after_fd == before && after_path == Some(before) && read == before.size {
                let node = Node::File {
                    size: before.size,
                    mode: before.mode,
                    mtime_ns: before.mtime_ns,
                    chunks,
                };
                return Ok(Some((node, before)));
            }
            tracing::debug!(path = %home.full(rel).display(), attempt, "file changed while read; retrying");
        }
        tracing::info!(path = %home.full(rel).display(), "file keeps changing; left for the next sync");
        Ok(None)
    }

    /// Fetches, authenticates and checks chunks (in the order given), [`PARALLEL`] at a time.
    pub(crate) fn fetch_chunks(
        &self,
        refs: &[ChunkRef],
        report: &mut SyncReport,
        version: u64,
    ) -> Result<Vec<Vec<u8>>, SyncError> {
        let names: Vec<String> = refs.iter().map(|c| chunk_name(&c.id)).collect();
        let got = self.remote.get_many(&names)?;
        let mut out = Vec::with_capacity(refs.len());
        for ((r, name), bytes) in refs.iter().zip(&names).zip(got) {
            let bytes = bytes.ok_or_else(|| SyncError::MissingObject {
                object: name.clone(),
                version,
            })?;
            report.bytes_downloaded += bytes.len() as u64;
            let plain = self.keys.open(Kind::Chunk, name, &bytes)?;
            if plain.len() != r.len as usize || self.keys.chunk_id(&plain) != r.id {
                return Err(SyncError::Tampered {
                    object: name.clone(),
                    what: "chunk content does not match its id",
                });
            }
            out.push(plain);
        }
        self.state
            .add_known(&refs.iter().map(|c| c.id).collect::<Vec<_>>())?;
        Ok(out)
    }

    /// Writes one file from the store: chunks from `cache` when prefetched, else streamed
    /// [`PARALLEL`] at a time.
    #[allow(clippy::too_many_arguments)]
    fn download(
        &self,
        home: &HomeDir,
        rel: &[u8],
        node: &Node,
        expect: Option<&LocalStat>,
        cache: &mut HashMap<ChunkId, Vec<u8>>,
        report: &mut SyncReport,
        version: u64,
        opts: &SyncOptions,
    ) -> Result<Option<LocalStat>, SyncError> {
        let Node::File {
            size,
            mode,
            mtime_ns,
            chunks,
        } = node
        else {
            unreachable!("download of a file")
        };
        home.write_file(rel, *mode, *mtime_ns, expect, |file: &mut File| {
            let mut written = 0u64;
            for window in chunks.chunks(PARALLEL) {
                let missing: Vec<ChunkRef> = window
                    .iter()
                    .filter(|c| !cache.contains_key(&c.id))
                    .copied()
                    .collect();
                let fetched = self.fetch_chunks(&missing, report, version)?;
                for (c, plain) in missing.iter().zip(fetched) {
                    cache.insert(c.id, plain);
                }
                for c in window {
                    let plain = &cache[&c.id];
                    file.write_all(plain)
                        .map_err(|e| SyncError::io("write", home.full(rel), e))?;
                    written += plain.len() as u64;
                }
                for c in window {
                    // Keep prefetched chunks only while other files may need them.
                    if plain_is_large(c) {
                        cache.remove(&c.id);
                    }
                }
                emit(opts, Phase::Download, written, *size, Some(rel));
            }
            Ok(())
        })
    }

    /// Prefetches the chunks of the next small files in one parallel batch.
    fn prefetch(
        &self,
        files: &[&Node],
        cache: &mut HashMap<ChunkId, Vec<u8>>,
        report: &mut SyncReport,
        version: u64,
    ) -> Result<(), SyncError> {
        let mut refs: Vec<ChunkRef> = Vec::new();
        for node in files {
            if let Node::File { chunks, .. } = node {
                refs.extend(chunks.iter().filter(|c| !cache.contains_key(&c.id)));
            }
        }
        refs.sort_by_key(|c| c.id);
        refs.dedup_by_key(|c| c.id);
        for (c, plain) in refs.iter().zip(self.fetch_chunks(&refs, report, version)?) {
            cache.insert(c.id, plain);
        }
        Ok(())
    }
}

fn plain_is_large(c: &ChunkRef) -> bool {
    c.len >= MIN_CHUNK
}

/// A file small enough to be fetched with others in one batch.
fn small_file(node: &Node) -> bool {
    matches!(node, Node::File { size, .. } if *size < u64::from(MIN_CHUNK))
}

/// The outcome of one pass, for [`crate::SyncEngine::sync`].
pub(crate) enum Pass {
    Done(SyncReport),
    /// Another device committed first: read again and merge again.
    LostRace,
}

impl Ctx<'_> {
    pub(crate) fn sync_pass(
        &self,
        home_id: &str,
        dir: &std::path::Path,
        opts: &SyncOptions,
        report: &mut SyncReport,
    ) -> Result<Pass, SyncError> {
        let mut index = self.state.load(home_id)?;
        // After a garbage collection, chunks this device remembers may be gone: it trusts only
        // the chunks of the newest snapshot (never collected) and those it uploads (see gc.rs).
        let collected = self.state.gc_epoch_changed(self.gc_epoch()?)?;
        let fetched = self.fetch_head(home_id, &index)?;
        let home = HomeDir::open(dir, true, opts.owner)?.expect("created");
        let (remote_head, forked) = match fetched {
            Fetched::Unchanged => (None, false),
            Fetched::New { head, forked } => (Some(*head), forked),
        };
        // The base and the store's tree are borrowed, not copied: with 100k paths each copy of
        // a tree is ~20 MB and tens of milliseconds.
        let empty = Tree::new();
        let mut base: Cow<Tree> = if forked {
            Cow::Owned(Tree::new())
        } else {
            index.base()
        };
        let remote_tree: &Tree = match &remote_head {
            Some(h) => &h.snapshot.live,
            None => index.head.as_ref().map_or(&empty, |h| &h.live),
        };
        if remote_head.is_some() || collected {
            let ids: Vec<ChunkId> = remote_tree.values().flat_map(chunk_ids).collect();
            self.state.add_known(&ids)?;
        }
        let od = self.state.load_ondemand(home_id)?;
        let mut uploads = Uploads::new(self);
        let scanned = self.scan(
            &home,
            &index,
            &base,
            &od,
            Some((&mut uploads, report)),
            opts,
        )?;
        // A home that is missing, or empty and not the directory this device last synced, while
        // the store has files, is a lost cache: restore it, never read it as "delete all".
        let identity = home.identity()?;
        if scanned.tree.is_empty()
            && !remote_tree.is_empty()
            && index.home_identity != Some(identity)
        {
            base = Cow::Owned(Tree::new());
            report.restored_lost_cache = true;
        }
        let now = SystemTime::now();
        let remote_device = index
            .head
            .as_ref()
            .map(|h| h.device.clone())
            .unwrap_or_default();
        let remote_device = remote_head
            .as_ref()
            .map(|h| h.snapshot.device.clone())
            .unwrap_or(remote_device);
        let plan = merge(&Sides {
            base: &base,
            local: &scanned.tree,
            remote: remote_tree,
            frozen: &scanned.busy,
            device: self.device,
            remote_device: &remote_device,
            now,
        });

        // The safety stop, before anything changes: deletions this sync would commit to the
        // store (deletions it applies locally come from a sync that was itself checked).
        let files = |t: &Tree| t.values().filter(|n| !n.is_dir()).count();
        let deletes = remote_tree
            .iter()
            .filter({
                // Walked alongside, not searched: both trees are sorted.
                let mut merged = tree::Cursor::new(&plan.merged);
                move |(p, n)| !n.is_dir() && merged.get(p).is_none()
            })
            .count();
        let total = files(remote_tree);
        if !opts.confirm_mass_delete && deletes >= MASS_DELETE_MIN && deletes * 2 > total {
            return Err(SyncError::MassDelete {
                deletes,
                files: total,
            });
        }

        // Local changes: conflict renames, deletions (deepest first), writes (parents first).
        let Scanned {
            tree: mut local_after,
            stats: mut local_stats,
            busy,
            mut placeholders,
            ..
        } = scanned;
        let mut skipped: BTreeSet<RelPath> = busy.clone();
        for (from, to) in &plan.renames {
            let moved = match local_stats.get(from) {
                Some(st) => home.rename(from, to, st)?,
                None => false,
            };
            if moved {
                if let Some(st) = placeholders.remove(from) {
                    placeholders.insert(to.clone(), st);
                }
                let st = local_stats.remove(from).expect("checked");
                local_stats.insert(to.clone(), st);
                let node = local_after.remove(from).expect("scanned");
                local_after.insert(to.clone(), node);
            } else {
                skipped.insert(from.clone());
                skipped.insert(to.clone());
            }
        }
        report.conflicts = plan
            .conflicts
            .iter()
            .map(|(p, c)| Conflict {
                path: as_path(p).to_owned(),
                copy: as_path(c).to_owned(),
            })
            .collect();
        let deletions: Vec<RelPath> = local_after
            .keys()
            .filter({
                let mut merged = tree::Cursor::new(&plan.merged);
                let skipped = &skipped;
                move |p| merged.get(p).is_none() && !skipped.contains(*p)
            })
            .cloned()
            .collect();
        for path in deletions.iter().rev() {
            if home.remove(path, local_stats.get(path))? {
                placeholders.remove(path);
                local_stats.remove(path);
                if !local_after.remove(path).is_some_and(|n| n.is_dir()) {
                    report.deleted_locally.push(as_path(path).to_owned());
                }
            } else {
                skipped.insert(path.clone());
            }
        }
        let writes: Vec<(&RelPath, &Node)> = {
            let mut local_now = tree::Cursor::new(&local_after);
            plan.merged
                .iter()
                .filter(|(p, n)| {
                    !skipped.contains(*p) && !local_now.get(p).is_some_and(|l| local_same(l, n))
                })
                .collect()
        };
        let version = remote_head
            .as_ref()
            .map_or(index.version(), |h| h.snapshot.version);
        let mut cache: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        let total_down: u64 = writes.iter().map(|(_, n)| n.size()).sum();
        let mut done_down = 0u64;
        for (i, (path, node)) in writes.iter().enumerate() {
            let expect = local_stats.get(*path).copied();
            // A placeholder stays one when only its mode changes, and is updated (not
            // fetched) when its content changed elsewhere, unless it is pinned.
            let to_placeholder = placeholders.contains_key(*path)
                && match (local_after.get(*path), node) {
                    (Some(Node::File { chunks: have, .. }), Node::File { chunks: want, .. }) => {
                        have == want || !od.is_pinned(path)
                    }
                    _ => false,
                };
            let written = match node {
                Node::Dir { mode } => home.make_dir(path, *mode, expect.as_ref())?,
                Node::Symlink { target } => home.write_symlink(path, target, expect.as_ref())?,
                Node::File { .. } => {
                    let uncached = |n: &Node| matches!(n, Node::File { chunks, .. } if chunks.iter().any(|c| !cache.contains_key(&c.id)));
                    if small_file(node) && uncached(node) {
                        // The next small files' chunks in one parallel batch (at most 64 files
                        // under MIN_CHUNK each: 16 MiB).
                        let next: Vec<&Node> = writes[i..]
                            .iter()
                            .map(|(_, n)| *n)
                            .filter(|n| small_file(n))
                            .take(64)
                            .collect();
                        cache.clear();
                        self.prefetch(&next, &mut cache, report, version)?;
                    }
                    match (local_after.get(*path), node) {
                        // Same content, other permissions: chmod, nothing to download.
                        (
                            Some(Node::File { chunks: have, .. }),
                            Node::File {
                                chunks: want, mode, ..
                            },
                        ) if have == want => home.set_mode(path, *mode, expect.as_ref())?,
                        // An evicted file changed elsewhere: its placeholder is updated, its
                        // content stays in the store until it is read.
                        _ if to_placeholder => {
                            self.write_placeholder(&home, path, node, expect.as_ref(), None)?
                        }
                        _ => self.download(
                            &home,
                            path,
                            node,
                            expect.as_ref(),
                            &mut cache,
                            report,
                            version,
                            opts,
                        )?,
                    }
                }
            };
            match written {
                Some(st) => {
                    if to_placeholder {
                        placeholders.insert((*path).clone(), st);
                    } else {
                        placeholders.remove(*path);
                    }
                    local_stats.insert((*path).clone(), st);
                    local_after.insert((*path).clone(), (*node).clone());
                    if !node.is_dir() {
                        report.downloaded.push(as_path(path).to_owned());
                    }
                }
                None => {
                    skipped.insert((*path).clone());
                }
            }
            done_down += node.size();
            emit(opts, Phase::Download, done_down, total_down, Some(path));
        }

        // What goes to the store: the merged tree, except paths whose local change could not be
        // applied keep the store's state (their merge waits for the next sync).
        drop(writes);
        let mut commit_tree = plan.merged;
        for path in &skipped {
            match remote_tree.get(path) {
                Some(node) => commit_tree.insert(path.clone(), node.clone()),
                None => commit_tree.remove(path),
            };
        }
        let changed_remotely = tree::differing(&commit_tree, remote_tree);
        let mut committed_version = version;
        let mut new_head = None;
        if !changed_remotely.is_empty() {
            uploads.flush()?;
            // Paths the store's tree already has as they are: their chunks are in the store.
            for node in changed_remotely.iter().filter_map(|p| commit_tree.get(*p)) {
                for id in chunk_ids(node) {
                    if !self.state.is_known(&id) {
                        return Err(SyncError::State {
                            path: self.state.dir().to_owned(),
                            reason: format!(
                                "chunk {} of the new snapshot was never uploaded",
                                hex::encode(id)
                            ),
                        });
                    }
                }
            }
            for path in &changed_remotely {
                match (commit_tree.get(*path), remote_tree.get(*path)) {
                    (Some(n), _) if !n.is_dir() => report.uploaded.push(as_path(path).to_owned()),
                    (None, Some(n)) if !n.is_dir() => {
                        report.deleted_remotely.push(as_path(path).to_owned())
                    }
                    _ => {}
                }
            }
            let prior = remote_head
                .as_ref()
                .map(|h| &h.snapshot)
                .or(index.head.as_ref());
            let now_ms = now_ms();
            let mut deleted: BTreeMap<RelPath, Tombstone> =
                prior.map(|p| p.deleted.clone()).unwrap_or_default();
            for (path, node) in remote_tree {
                if !commit_tree.contains_key(path) {
                    deleted.insert(
                        path.clone(),
                        Tombstone {
                            deleted_ms: now_ms,
                            last: node.clone(),
                        },
                    );
                }
            }
            let retention = crate::TOMBSTONE_RETENTION.as_millis() as u64;
            deleted.retain(|path, t| {
                !commit_tree.contains_key(path) && now_ms.saturating_sub(t.deleted_ms) < retention
            });
            let parent_hash = remote_head
                .as_ref()
                .map(|h| h.hash)
                .or(index.head.as_ref().map(|_| index.head_hash));
            let snapshot = Snapshot {
                home: home_id.to_owned(),
                version: version + 1,
                parent: parent_hash,
                time_ms: now_ms,
                device: self.device.to_owned(),
                live: commit_tree,
                deleted,
            };
            let prior_chain = remote_head.as_ref().map_or(index.head_chain, |h| h.chain);
            let name = snapshot_name(home_id, version + 1);
            let (sealed, chain) = match self.delta(prior, &snapshot, parent_hash, prior_chain) {
                Some(delta) => (
                    self.keys.seal(Kind::Delta, &name, &delta.encode()),
                    delta.chain,
                ),
                None => (
                    self.keys.seal(Kind::Snapshot, &name, &snapshot.encode()),
                    Chain {
                        full: version + 1,
                        entries: 0,
                    },
                ),
            };
            emit(opts, Phase::Commit, 0, sealed.len() as u64, None);
            let size = sealed.len() as u64;
            let hash: [u8; 32] = Sha256::digest(&sealed).into();
            report.bytes_uploaded += size;
            if !self.remote.create(&name, Bytes::from(sealed))? {
                // Another device committed this version first; what we applied locally stays
                // and is merged again against its snapshot.
                report.uploaded.clear();
                report.deleted_remotely.clear();
                return Ok(Pass::LostRace);
            }
            let e_tag = self
                .list_versions(home_id, version + 1)?
                .into_iter()
                .find(|(v, _)| *v == version + 1)
                .and_then(|(_, l)| l.e_tag);
            new_head = Some(Head {
                snapshot,
                hash,
                size,
                e_tag,
                chain,
            });
            committed_version = version + 1;
            report.committed = true;
            emit(opts, Phase::Commit, size, size, None);
        }

        // The new index: head, base overrides for skipped paths, stats of what is now in place.
        let head = new_head.or(remote_head);
        let head_moved = head.is_some();
        let mut overrides = BTreeMap::new();
        {
            let head_tree = match &head {
                Some(head) => Some(&head.snapshot.live),
                None => index.head.as_ref().map(|h| &h.live),
            };
            for path in &skipped {
                let old = base.get(path).cloned();
                if head_tree.and_then(|t| t.get(path)) != old.as_ref() {
                    overrides.insert(path.clone(), old);
                }
            }
        }
        drop(base);
        let prior_hash = index.head_hash;
        let mut prior_head = None;
        if let Some(head) = head {
            index.highest_seen = index.highest_seen.max(head.snapshot.version);
            index.head_hash = head.hash;
            index.head_size = head.size;
            index.head_e_tag = head.e_tag;
            index.head_chain = head.chain;
            prior_head = index.head.replace(head.snapshot);
        }
        let head_tree = index.head.as_ref().map(|h| &h.live);
        let recorded = now_ms();
        // A stat that is unchanged (and for a file, was settled when recorded) keeps its time:
        // the next scan trusts it either way, and an index that did not change is not written.
        let mut recorded_stats = tree::Cursor::new(&index.stats);
        let stats: BTreeMap<RelPath, (LocalStat, u64)> = local_stats
            .into_iter()
            .filter({
                let mut head_paths = head_tree.map(tree::Cursor::new);
                let skipped = &skipped;
                move |(p, _)| {
                    !skipped.contains(p) && head_paths.as_mut().is_some_and(|t| t.get(p).is_some())
                }
            })
            .map(|(p, st)| {
                let at = match recorded_stats.get(&p) {
                    // Only a file's content is trusted from its stat.
                    Some((old, at))
                        if *old == st && (st.kind != LocalKind::File || settled(&st, *at)) =>
                    {
                        *at
                    }
                    _ => recorded,
                };
                (p, (st, at))
            })
            .collect();
        let od_after = crate::ondemand::OnDemand {
            evicted: placeholders
                .into_iter()
                .filter(|(p, st)| stats.get(p).map(|(now, _)| now) == Some(st))
                .collect(),
            pinned: od.pinned.clone(),
        };
        if od_after != od {
            self.state.save_ondemand(home_id, &od_after)?;
        }
        let unchanged = !head_moved
            && overrides == index.base_overrides
            && stats == index.stats
            && index.home_identity == Some(identity)
            && index.last_sync_ms.is_some();
        if unchanged {
            // The fast path of every launch: no rewrite, no fsync; the index's mtime records
            // the time of this sync.
            self.state.touch(home_id)?;
        } else {
            index.base_overrides = overrides;
            let prior_stats = std::mem::replace(&mut index.stats, stats);
            index.last_sync_ms = Some(recorded);
            index.home_identity = Some(identity);
            let prior = Prior {
                head: if head_moved {
                    prior_head.as_ref()
                } else {
                    index.head.as_ref()
                },
                head_hash: prior_hash,
                stats: &prior_stats,
            };
            self.state.save_changes(home_id, &index, prior)?;
        }
        report.version = committed_version;
        report.busy = busy.iter().map(|p| as_path(p).to_owned()).collect();
        Ok(Pass::Done(std::mem::take(report)))
    }
}

impl Ctx<'_> {
    /// The commit of `next` as a delta against `prior` (the store's head it was merged with,
    /// whose object hashes to `parent`), or `None` when it must be a full snapshot: no prior,
    /// a store without conditional create (on WebDAV two devices can overwrite one version, and
    /// a delta applied on the other device's tree would be wrong; full snapshots stay whole),
    /// a chain at its length bound, or deltas holding more than half as many entries as the
    /// tree (reading the chain would cost more than reading the tree).
    fn delta(
        &self,
        prior: Option<&Snapshot>,
        next: &Snapshot,
        parent: Option<[u8; 32]>,
        chain: Chain,
    ) -> Option<Delta> {
        let (prior, parent) = (prior?, parent?);
        if !self.remote.conditional_create() || next.version - chain.full >= MAX_CHAIN {
            return None;
        }
        let delta = Delta::between(prior, next, parent, chain);
        let entries = (next.live.len() + next.deleted.len()) as u64;
        (delta.chain.entries * 2 <= entries).then_some(delta)
    }
}

fn chunk_ids(node: &Node) -> Vec<ChunkId> {
    match node {
        Node::File { chunks, .. } => chunks.iter().map(|c| c.id).collect(),
        _ => Vec::new(),
    }
}

/// Whether the local node already is what the merged tree wants (a file's mtime aside).
fn local_same(local: &Node, want: &Node) -> bool {
    local.same(want)
}

impl Ctx<'_> {
    /// Writes `wanted` (a past state) into the home, replacing what is there; the caller syncs
    /// before (so nothing local is lost) and after (to commit it).
    pub(crate) fn restore_into(
        &self,
        home_id: &str,
        dir: &std::path::Path,
        wanted: &Tree,
        opts: &SyncOptions,
    ) -> Result<SyncReport, SyncError> {
        let _lock = self.state.lock(home_id)?;
        let home = HomeDir::open(dir, true, opts.owner)?.expect("created");
        let mut report = SyncReport::default();
        let mut cache = HashMap::new();
        for (path, node) in wanted {
            let expect = home.stat(path)?;
            let written = match node {
                Node::Dir { mode } => home.make_dir(path, *mode, expect.as_ref())?,
                Node::Symlink { target } => home.write_symlink(path, target, expect.as_ref())?,
                Node::File { .. } => self.download(
                    &home,
                    path,
                    node,
                    expect.as_ref(),
                    &mut cache,
                    &mut report,
                    0,
                    opts,
                )?,
            };
            match written {
                None => report.busy.push(as_path(path).to_owned()),
                Some(_) if !node.is_dir() => report.downloaded.push(as_path(path).to_owned()),
                Some(_) => {}
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HomeRef, StoreConfig, StoreUrl, SyncEngine, UserSecret};
    use std::path::Path;

    fn engine(root: &Path, name: &str) -> SyncEngine {
        SyncEngine::open(
            &StoreConfig::new(StoreUrl::LocalDir(root.join("store"))),
            &UserSecret::from_bytes([9; 32]),
            &root.join(format!("state-{name}")),
        )
        .unwrap()
    }

    fn home() -> HomeRef {
        HomeRef {
            publisher: "ed25519:delta-test".into(),
            app_id: "delta".into(),
        }
    }

    /// The kind byte of each snapshot object of the home, oldest first.
    fn kinds(root: &Path, home_id: &str) -> Vec<u8> {
        let dir = root.join("store").join(snapshot_dir(home_id));
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()[4]).collect()
    }

    /// The store's head as a device that never synced reads it.
    fn read_fresh(e: &SyncEngine, home_id: &str) -> Snapshot {
        match e.ctx().fetch_head(home_id, &HomeIndex::default()).unwrap() {
            Fetched::New { head, .. } => head.snapshot,
            Fetched::Unchanged => panic!("no head"),
        }
    }

    /// Round `i` of edits: rewrites, additions, deletions, a chmod, a rename, a directory.
    fn edit(dir: &Path, i: usize) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join(format!("f{:03}", i % 60)), format!("round {i}")).unwrap();
        match i % 5 {
            0 => std::fs::write(dir.join(format!("new{i}")), b"added").unwrap(),
            1 => {
                let _ = std::fs::remove_file(dir.join(format!("f{:03}", (i * 7) % 60)));
            }
            2 => std::fs::set_permissions(
                dir.join(format!("f{:03}", (i + 1) % 60)),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap_or(()),
            3 => {
                let _ = std::fs::rename(
                    dir.join(format!("f{:03}", (i + 2) % 60)),
                    dir.join(format!("moved{i}")),
                );
            }
            _ => std::fs::create_dir_all(dir.join(format!("d{i}/sub"))).unwrap(),
        }
    }

    #[test]
    fn a_delta_chain_reads_back_identically_to_the_full_tree_and_long_chains_are_compacted() {
        let root = tempfile::tempdir().unwrap();
        let a = engine(root.path(), "A");
        let b = engine(root.path(), "B");
        let home_id = a.keys.home_id(&home());
        let (dir_a, dir_b) = (root.path().join("home-A"), root.path().join("home-B"));
        std::fs::create_dir_all(&dir_a).unwrap();
        for i in 0..60 {
            std::fs::write(dir_a.join(format!("f{i:03}")), format!("file {i}")).unwrap();
        }
        std::os::unix::fs::symlink("f000", dir_a.join("link")).unwrap();
        let opts = SyncOptions::default();
        a.sync(&home(), &dir_a, &opts).unwrap();
        for i in 1..=80 {
            edit(&dir_a, i);
            assert!(
                a.sync(&home(), &dir_a, &opts).unwrap().committed,
                "round {i}"
            );
            // The writer's head (its index: image and change records) is the tree a device
            // that never synced assembles from the store, tombstones and mtimes included.
            let written = a.state.load(&home_id).unwrap().head.unwrap();
            assert_eq!(written.version, i as u64 + 1);
            assert_eq!(read_fresh(&a, &home_id), written, "round {i}");
            if i % 7 == 0 {
                // A device that synced a few versions ago applies only the new deltas.
                b.sync(&home(), &dir_b, &opts).unwrap();
                assert_eq!(b.state.load(&home_id).unwrap().head.unwrap(), written);
            }
        }
        let kinds = kinds(root.path(), &home_id);
        assert_eq!(kinds.len(), 81);
        assert_eq!(kinds[0], Kind::Snapshot as u8);
        let fulls: Vec<usize> = (0..kinds.len())
            .filter(|&v| kinds[v] == Kind::Snapshot as u8)
            .collect();
        // Every version but the full ones is a delta, and no chain is longer than the bound.
        assert!(kinds
            .iter()
            .all(|&k| k == Kind::Snapshot as u8 || k == Kind::Delta as u8));
        assert!(
            fulls.len() >= 3,
            "chains compacted: full snapshots at {fulls:?}"
        );
        for pair in fulls
            .windows(2)
            .chain([[*fulls.last().unwrap(), kinds.len()].as_slice()])
        {
            assert!(
                pair[1] - pair[0] <= MAX_CHAIN as usize,
                "fulls at {fulls:?}"
            );
        }
        assert!(
            kinds.iter().filter(|&&k| k == Kind::Delta as u8).count() > 60,
            "{kinds:?}"
        );

        // A change that would bring the chain's deltas past half the tree's entries is written
        // whole: reading the deltas would cost more than the tree (the home has about 150).
        for i in 0..200 {
            std::fs::write(dir_a.join(format!("bulk{i:03}")), format!("bulk {i}")).unwrap();
        }
        a.sync(&home(), &dir_a, &opts).unwrap();
        assert_eq!(
            *self::kinds(root.path(), &home_id).last().unwrap(),
            Kind::Snapshot as u8
        );
        assert_eq!(
            read_fresh(&a, &home_id),
            a.state.load(&home_id).unwrap().head.unwrap()
        );
    }
}
