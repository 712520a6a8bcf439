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
use crate::state::{HomeIndex, State};
use crate::store::{Remote, PARALLEL};
use crate::tree::{self, as_path, ChunkRef, Node, RelPath, Snapshot, Tombstone, Tree};
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
    pub(crate) fn read_snapshot(
        &self,
        home_id: &str,
        version: u64,
    ) -> Result<(Snapshot, [u8; 32], u64), SyncError> {
        let name = snapshot_name(home_id, version);
        let bytes = self
            .remote
            .get(&name)?
            .ok_or_else(|| SyncError::MissingObject {
                object: name.clone(),
                version,
            })?;
        let plain = self.keys.open(Kind::Snapshot, &name, &bytes)?;
        let snapshot = Snapshot::decode(&plain).ok_or_else(|| SyncError::Tampered {
            object: name.clone(),
            what: "undecodable snapshot",
        })?;
        if snapshot.version != version || snapshot.home != home_id {
            return Err(SyncError::Tampered {
                object: name,
                what: "snapshot of another version or home",
            });
        }
        Ok((snapshot, Sha256::digest(&bytes).into(), bytes.len() as u64))
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
        let (snapshot, hash, size) = self.read_snapshot(home_id, found)?;
        let forked = if known == 0 {
            false
        } else if found == known {
            // Same version, other bytes (listed size or e-tag differed): replaced or not.
            hash != index.head_hash
        } else if found == known + 1 {
            snapshot.parent != Some(index.head_hash)
        } else {
            match self.read_snapshot(home_id, known + 1) {
                Ok((next, _, _)) => next.parent != Some(index.head_hash),
                // Garbage collection deleted it (this device was away longer than the
                // retention period): without the chain, merge without a base, which keeps both
                // sides' files rather than lose any.
                Err(SyncError::MissingObject { .. }) => true,
                Err(e) => return Err(e),
            }
        };
        if forked {
            tracing::warn!(home = home_id, version = known, "the snapshot this device built on was replaced by another device's; merging without a base");
        }
        Ok(Fetched::New {
            head: Box::new(Head {
                snapshot,
                hash,
                size,
                e_tag: listed.e_tag.clone(),
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
            .filter(|(p, n)| !n.is_dir() && !plan.merged.contains_key(*p))
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
            .filter(|p| !plan.merged.contains_key(*p) && !skipped.contains(*p))
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
        let writes: Vec<(&RelPath, &Node)> = plan
            .merged
            .iter()
            .filter(|(p, n)| {
                !skipped.contains(*p) && !local_after.get(*p).is_some_and(|l| local_same(l, n))
            })
            .collect();
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
            for node in commit_tree.values() {
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
            let name = snapshot_name(home_id, version + 1);
            let sealed = self.keys.seal(Kind::Snapshot, &name, &snapshot.encode());
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
        if let Some(head) = head {
            index.highest_seen = index.highest_seen.max(head.snapshot.version);
            index.head_hash = head.hash;
            index.head_size = head.size;
            index.head_e_tag = head.e_tag;
            index.head = Some(head.snapshot);
        }
        let head_tree = index.head.as_ref().map(|h| &h.live);
        let recorded = now_ms();
        // A stat that is unchanged (and for a file, was settled when recorded) keeps its time:
        // the next scan trusts it either way, and an index that did not change is not written.
        let stats: BTreeMap<RelPath, (LocalStat, u64)> = local_stats
            .into_iter()
            .filter(|(p, _)| !skipped.contains(p) && head_tree.is_some_and(|t| t.contains_key(p)))
            .map(|(p, st)| {
                let at = match index.stats.get(&p) {
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
            index.stats = stats;
            index.last_sync_ms = Some(recorded);
            index.home_identity = Some(identity);
            self.state.save(home_id, &index)?;
        }
        report.version = committed_version;
        report.busy = busy.iter().map(|p| as_path(p).to_owned()).collect();
        Ok(Pass::Done(std::mem::take(report)))
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
