//! Files on demand: evicted files are placeholders (same name, size, mode, mtime and owner, no
//! content), fetched back on first use (docs/cloud.md, "Files on demand").
//!
//! A placeholder is a sparse file carrying the xattr [`PLACEHOLDER_XATTR`] (`trusted.*`: only a
//! process with `CAP_SYS_ADMIN` in the initial user namespace can read or set it, so an app
//! cannot make or hide one) whose value names the content (a hash of its chunk list) and the size
//! the placeholder was made with. Every access to a placeholder's content raises the daemon's
//! fanotify event first, except `open(O_TRUNC)`: a file that no longer has the marker's size was
//! truncated by the app and is a real file again. (Not its mtime: `touch` changes it without
//! touching the content.) The engine also keeps, per home, the paths it
//! evicted with their placeholder's stat (`homes/HOME.ondemand`), so a scan checks the marker of
//! those paths only, and never reads (or uploads) a placeholder's zeros.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::engine::{chunk_list, Ctx};
use crate::local::{set_mtime, HomeDir, LocalKind, LocalStat};
use crate::store::PARALLEL;
use crate::tree::{as_path, is_within, rel_from_path, ChunkRef, Node, RelPath, Tree};
use crate::SyncError;

/// The xattr that marks a placeholder. In the `trusted.` namespace: an app (without
/// `CAP_SYS_ADMIN` in the initial user namespace) can neither read, set nor remove it.
pub const PLACEHOLDER_XATTR: &str = "trusted.elastos.placeholder";
const MARKER_MAGIC: &[u8; 4] = b"ECP1";
const MARKER_LEN: usize = 4 + 8 + 32;

/// What a placeholder's xattr says: the size it was made with (a file that no longer has it was
/// truncated), and which content it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub size: u64,
    pub content: [u8; 32],
}

impl Marker {
    fn encode(&self) -> [u8; MARKER_LEN] {
        let mut out = [0u8; MARKER_LEN];
        out[..4].copy_from_slice(MARKER_MAGIC);
        out[4..12].copy_from_slice(&self.size.to_le_bytes());
        out[12..].copy_from_slice(&self.content);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Marker> {
        if bytes.len() != MARKER_LEN || &bytes[..4] != MARKER_MAGIC {
            return None;
        }
        Some(Marker {
            size: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
            content: bytes[12..].try_into().ok()?,
        })
    }

    /// Whether the file still is the placeholder (not truncated since).
    pub(crate) fn matches(&self, st: &LocalStat) -> bool {
        st.kind == LocalKind::File && st.size == self.size
    }
}

/// Which content a chunk list is (the marker's `content`).
pub(crate) fn content_key(chunks: &[ChunkRef]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"elastos placeholder content v1");
    for c in chunks {
        h.update(c.id);
        h.update(c.len.to_le_bytes());
    }
    h.finalize().into()
}

/// The marker of an open file, if it has one.
pub(crate) fn read_marker(file: &File) -> std::io::Result<Option<Marker>> {
    let mut buf = [0u8; MARKER_LEN + 1];
    match rustix::fs::fgetxattr(file, PLACEHOLDER_XATTR, &mut buf[..]) {
        Ok(n) => Ok(Marker::decode(&buf[..n])),
        // No marker, or a file system without xattrs.
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_marker(file: &File, marker: &Marker) -> std::io::Result<()> {
    rustix::fs::fsetxattr(
        file,
        PLACEHOLDER_XATTR,
        &marker.encode(),
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::PERM => std::io::Error::other(
            "setting a trusted.* xattr needs CAP_SYS_ADMIN (files on demand need root: the \
             broker daemon evicts and fetches)",
        ),
        e => e.into(),
    })
}

fn remove_marker(file: &File) -> std::io::Result<()> {
    match rustix::fs::fremovexattr(file, PLACEHOLDER_XATTR) {
        Ok(()) | Err(rustix::io::Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Every placeholder under `dir` (a file carrying a marker), symlinks not followed: the broker
/// daemon marks them for fanotify when it starts, before it opens any store (one `lgetxattr`
/// per file).
pub fn placeholders_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mut buf = [0u8; MARKER_LEN + 1];
                if let Ok(n) = rustix::fs::lgetxattr(&path, PLACEHOLDER_XATTR, &mut buf[..]) {
                    if Marker::decode(&buf[..n]).is_some() {
                        out.push(path);
                    }
                }
            }
        }
    }
    out
}

/// Called with every placeholder the engine makes (the open file, and the path it is about to
/// be renamed to), before it is renamed into place: the broker daemon puts its fanotify
/// pre-content mark on it here, so no read ever sees its zeros.
pub type PlaceholderHook = Box<dyn Fn(&File, &Path) -> std::io::Result<()> + Send + Sync>;

/// Per home: the paths this device evicted (with their placeholder's stat) and the pinned ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OnDemand {
    pub evicted: BTreeMap<RelPath, LocalStat>,
    /// Pinned files and directories (everything inside a pinned directory is pinned).
    pub pinned: BTreeSet<RelPath>,
}

impl OnDemand {
    pub(crate) fn is_pinned(&self, rel: &[u8]) -> bool {
        self.pinned.iter().any(|p| is_within(rel, p))
    }
}

/// What `evict` did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EvictReport {
    /// Files whose content was dropped (paths relative to the home).
    pub evicted: Vec<PathBuf>,
    /// Their bytes: what the home no longer holds here.
    pub bytes: u64,
    /// Files left alone because they are pinned.
    pub pinned: Vec<PathBuf>,
    /// Files that already were placeholders.
    pub already: Vec<PathBuf>,
}

/// What a fetch (`pin`, `fetch`) brought back.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FetchReport {
    /// Files whose content came back from the store.
    pub fetched: Vec<PathBuf>,
    /// Their bytes.
    pub bytes: u64,
    /// The pinned paths after the call (files and directories).
    pub pinned: Vec<PathBuf>,
}

/// What [`crate::SyncEngine::fill`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// The content was written: this many bytes.
    Fetched(u64),
    /// No marker: not a placeholder (or already filled).
    NotPlaceholder,
    /// The marker was stale (the app truncated or rewrote the file): removed, nothing fetched.
    Rewritten,
}

/// Finds the file node a placeholder stands for: at `rel` in `tree` if it matches, else any
/// file of the tree with that content (an evicted file the app renamed).
pub(crate) fn node_for(tree: &Tree, rel: &[u8], marker: &Marker) -> Option<Node> {
    let matching =
        |n: &Node| matches!(n, Node::File { chunks, .. } if content_key(chunks) == marker.content);
    tree.get(rel)
        .filter(|n| matching(n))
        .or_else(|| tree.values().find(|n| matching(n)))
        .cloned()
}

fn rel(path: &Path) -> Result<RelPath, SyncError> {
    rel_from_path(path)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| SyncError::BadPath {
            path: path.to_owned(),
        })
}

impl Ctx<'_> {
    /// Writes `node`'s content into `file` (a placeholder, opened for writing) at its offsets,
    /// gives it back the mtime it had (`mtime_ns`: the writes change it) and removes the marker.
    pub(crate) fn fill(
        &self,
        file: &File,
        node: &Node,
        mtime_ns: i64,
        path: &Path,
        version: u64,
    ) -> Result<u64, SyncError> {
        let Node::File { chunks, .. } = node else {
            unreachable!("fill of a file")
        };
        let mut report = crate::SyncReport::default();
        let mut offset = 0u64;
        for window in chunks.chunks(PARALLEL) {
            for (c, plain) in window
                .iter()
                .zip(self.fetch_chunks(window, &mut report, version)?)
            {
                file.write_all_at(&plain, offset)
                    .map_err(|e| SyncError::io("write", path, e))?;
                offset += u64::from(c.len);
            }
        }
        set_mtime(file, mtime_ns).map_err(|e| SyncError::io("set mtime", path, e))?;
        remove_marker(file).map_err(|e| SyncError::io("remove placeholder marker", path, e))?;
        Ok(offset)
    }

    /// Replaces file `rel` (still as `expect` says) with a placeholder of `node`, owned by
    /// `owner` (else by the home's sync owner).
    pub(crate) fn write_placeholder(
        &self,
        home: &HomeDir,
        rel: &[u8],
        node: &Node,
        expect: Option<&LocalStat>,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<LocalStat>, SyncError> {
        let Node::File {
            size,
            mode,
            mtime_ns,
            chunks,
        } = node
        else {
            unreachable!("placeholder of a file")
        };
        let marker = Marker {
            size: *size,
            content: content_key(chunks),
        };
        home.write_file(rel, *mode, *mtime_ns, expect, |file: &mut File| {
            file.set_len(*size)
                .map_err(|e| SyncError::io("truncate", home.full(rel), e))?;
            write_marker(file, &marker)
                .map_err(|e| SyncError::io("mark placeholder", home.full(rel), e))?;
            if let Some((uid, gid)) = owner {
                rustix::fs::fchown(
                    &*file,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(|e| SyncError::io("chown", home.full(rel), e.into()))?;
            }
            if let Some(hook) = self.placeholder_hook {
                hook(file, &home.full(rel))
                    .map_err(|e| SyncError::io("watch placeholder", home.full(rel), e))?;
            }
            Ok(())
        })
    }

    /// Whether `rel` (stat `st`) is a placeholder: it was evicted with this stat, or (renamed,
    /// or unknown to this index) it carries a valid marker for content of `base`. Returns the
    /// file node it stands for, with its current stat.
    pub(crate) fn placeholder(
        &self,
        home: &HomeDir,
        od: &OnDemand,
        rel: &[u8],
        st: &LocalStat,
        base: &Tree,
        known_only: bool,
    ) -> Result<Option<Node>, SyncError> {
        let evicted = od.evicted.get(rel) == Some(st);
        if known_only && !evicted {
            return Ok(None);
        }
        let file = match home.open_file(rel) {
            Ok((file, _)) => file,
            Err(SyncError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let marker =
            read_marker(&file).map_err(|e| SyncError::io("read xattr", home.full(rel), e))?;
        let Some(marker) = marker.filter(|m| m.matches(st)) else {
            return Ok(None);
        };
        match node_for(base, rel, &marker) {
            Some(Node::File { chunks, .. }) => Ok(Some(Node::File {
                size: st.size,
                mode: st.mode,
                mtime_ns: st.mtime_ns,
                chunks,
            })),
            _ => {
                tracing::warn!(path = %home.full(rel).display(), "a placeholder whose content this device does not know; left for the next sync");
                Err(SyncError::Placeholder {
                    path: home.full(rel),
                    reason: "its content is in no version this device synced".into(),
                })
            }
        }
    }

    /// Evicts the files of `scopes` (all of the home when empty); see [`crate::SyncEngine::evict`].
    pub(crate) fn evict(
        &self,
        home_id: &str,
        dir: &Path,
        scopes: &[PathBuf],
    ) -> Result<EvictReport, SyncError> {
        let _lock = self.state.lock(home_id)?;
        let mut index = self.state.load(home_id)?;
        let mut od = self.state.load_ondemand(home_id)?;
        // No sync owner: each placeholder gets the owner of the file it replaces.
        let home = HomeDir::open(dir, false, None)?.ok_or_else(|| SyncError::Unsynced {
            paths: vec![dir.to_owned()],
            hint: "the home does not exist here",
        })?;
        let head: Tree = index
            .head
            .as_ref()
            .map(|h| h.live.clone())
            .unwrap_or_default();
        let scopes: Vec<RelPath> = scopes.iter().map(|p| rel(p)).collect::<Result<_, _>>()?;
        for scope in &scopes {
            if !head.keys().any(|p| is_within(p, scope)) {
                return Err(match home.stat(scope)? {
                    Some(_) => SyncError::Unsynced {
                        paths: vec![as_path(scope).to_owned()],
                        hint:
                            "it is not on your cloud disk yet; sync first (`elastos sync now APP`)",
                    },
                    None => SyncError::NotInHome {
                        path: as_path(scope).to_owned(),
                    },
                });
            }
        }
        let targets: Vec<(&RelPath, &Node)> = head
            .iter()
            .filter(|(p, n)| {
                matches!(n, Node::File { .. })
                    && (scopes.is_empty() || scopes.iter().any(|s| is_within(p, s)))
            })
            .collect();
        // Check every file first: nothing is evicted when one of them has unsynced changes.
        let mut report = EvictReport::default();
        let mut todo = Vec::new();
        let mut unsynced = Vec::new();
        for (path, node) in targets {
            if od.is_pinned(path) {
                report.pinned.push(as_path(path).to_owned());
                continue;
            }
            let Some(st) = home.stat(path)? else {
                unsynced.push(as_path(path).to_owned());
                continue;
            };
            if self
                .placeholder(&home, &od, path, &st, &head, false)?
                .is_some()
            {
                report.already.push(as_path(path).to_owned());
                continue;
            }
            // Safely in the store at the synced version: the content, hashed now, is the
            // head's, and nothing is waiting to be merged for it.
            let (file, before) = home.open_file(path)?;
            let ids = rustix::fs::fstat(&file)
                .map_err(|e| SyncError::io("stat", home.full(path), e.into()))?;
            let chunks = chunk_list(self.keys, &file, &home.full(path))?;
            let after = crate::local::fstat(&file)
                .map_err(|e| SyncError::io("stat", home.full(path), e))?;
            let same = matches!(node, Node::File { chunks: want, mode, .. } if *want == chunks && *mode == before.mode);
            if !same || after != before || index.base_overrides.contains_key(path) {
                unsynced.push(as_path(path).to_owned());
                continue;
            }
            todo.push((path.clone(), node.clone(), before, (ids.st_uid, ids.st_gid)));
        }
        if !unsynced.is_empty() {
            return Err(SyncError::Unsynced {
                paths: unsynced,
                hint: "their content here is not the synced version; sync first (`elastos sync now APP`)",
            });
        }
        let now = crate::engine::now_ms();
        for (path, node, before, owner) in todo {
            let node = match node {
                // The placeholder keeps this file's own mtime (what `ls -l` showed).
                Node::File {
                    size, mode, chunks, ..
                } => Node::File {
                    size,
                    mode,
                    mtime_ns: before.mtime_ns,
                    chunks,
                },
                other => other,
            };
            match self.write_placeholder(&home, &path, &node, Some(&before), Some(owner))? {
                Some(st) => {
                    report.bytes += st.size;
                    report.evicted.push(as_path(&path).to_owned());
                    od.evicted.insert(path.clone(), st);
                    index.stats.insert(path, (st, now));
                }
                // Changed meanwhile: it keeps its content.
                None => unsynced.push(as_path(&path).to_owned()),
            }
        }
        self.state.save(home_id, &index)?;
        self.state.save_ondemand(home_id, &od)?;
        if !unsynced.is_empty() {
            tracing::info!(
                files = unsynced.len(),
                "files changed while being evicted keep their content"
            );
        }
        Ok(report)
    }

    /// Pins (or unpins) `scopes`; pinning fetches what of them is evicted.
    pub(crate) fn pin(
        &self,
        home_id: &str,
        dir: &Path,
        scopes: &[PathBuf],
        pin: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<FetchReport, SyncError> {
        let scopes: Vec<RelPath> = scopes.iter().map(|p| rel(p)).collect::<Result<_, _>>()?;
        {
            let _lock = self.state.lock(home_id)?;
            let mut od = self.state.load_ondemand(home_id)?;
            for scope in &scopes {
                if pin {
                    od.pinned.insert(scope.clone());
                } else if !od.pinned.remove(scope) {
                    return Err(SyncError::NotPinned {
                        path: as_path(scope).to_owned(),
                        pinned: od.pinned.iter().map(|p| as_path(p).to_owned()).collect(),
                    });
                }
            }
            self.state.save_ondemand(home_id, &od)?;
        }
        let mut report = if pin {
            self.fetch(home_id, dir, &scopes, owner)?
        } else {
            FetchReport::default()
        };
        report.pinned = self
            .state
            .load_ondemand(home_id)?
            .pinned
            .iter()
            .map(|p| as_path(p).to_owned())
            .collect();
        Ok(report)
    }

    /// Fetches every evicted file within `scopes` (all when empty) into its placeholder.
    pub(crate) fn fetch(
        &self,
        home_id: &str,
        dir: &Path,
        scopes: &[RelPath],
        owner: Option<(u32, u32)>,
    ) -> Result<FetchReport, SyncError> {
        let _lock = self.state.lock(home_id)?;
        let index = self.state.load(home_id)?;
        let mut od = self.state.load_ondemand(home_id)?;
        let mut report = FetchReport::default();
        let Some(home) = HomeDir::open(dir, false, owner)? else {
            return Ok(report);
        };
        let base = index.base();
        let wanted: Vec<RelPath> = od
            .evicted
            .keys()
            .filter(|p| scopes.is_empty() || scopes.iter().any(|s| is_within(p, s)))
            .cloned()
            .collect();
        for path in wanted {
            let full = home.full(&path);
            let file = match home.open_file_for_fill(&path) {
                Ok(file) => file,
                Err(SyncError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    od.evicted.remove(&path);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let st = crate::local::fstat(&file).map_err(|e| SyncError::io("stat", &full, e))?;
            let marker = read_marker(&file).map_err(|e| SyncError::io("read xattr", &full, e))?;
            match marker {
                Some(m) if m.matches(&st) => {
                    let node =
                        node_for(&base, &path, &m).ok_or_else(|| SyncError::Placeholder {
                            path: full.clone(),
                            reason: "its content is in no version this device synced".into(),
                        })?;
                    report.bytes += self.fill(&file, &node, st.mtime_ns, &full, index.version())?;
                    report.fetched.push(as_path(&path).to_owned());
                }
                Some(_) => remove_marker(&file)
                    .map_err(|e| SyncError::io("remove placeholder marker", &full, e))?,
                None => {}
            }
            od.evicted.remove(&path);
        }
        self.state.save_ondemand(home_id, &od)?;
        Ok(report)
    }

    /// Fills one placeholder through `file` (the broker daemon's fanotify event descriptor,
    /// whose writes raise no event); takes no lock, so a sync under way never delays a read.
    pub(crate) fn fill_open(
        &self,
        home_id: &str,
        file: &File,
        rel_path: &Path,
    ) -> Result<Filled, SyncError> {
        let st = crate::local::fstat(file).map_err(|e| SyncError::io("stat", rel_path, e))?;
        let Some(marker) =
            read_marker(file).map_err(|e| SyncError::io("read xattr", rel_path, e))?
        else {
            return Ok(Filled::NotPlaceholder);
        };
        if !marker.matches(&st) {
            remove_marker(file)
                .map_err(|e| SyncError::io("remove placeholder marker", rel_path, e))?;
            return Ok(Filled::Rewritten);
        }
        let index = self.state.load(home_id)?;
        let rel = rel_from_path(rel_path).unwrap_or_default();
        let node =
            node_for(&index.base(), &rel, &marker).ok_or_else(|| SyncError::Placeholder {
                path: rel_path.to_owned(),
                reason: "its content is in no version this device synced".into(),
            })?;
        Ok(Filled::Fetched(self.fill(
            file,
            &node,
            st.mtime_ns,
            rel_path,
            index.version(),
        )?))
    }
}

/// Counts of a home's placeholders and pinned files, for `status`.
pub(crate) fn counts(
    placeholders: &BTreeMap<RelPath, LocalStat>,
    od: &OnDemand,
    tree: &Tree,
) -> (u64, u64, u64, u64) {
    let evicted_bytes = placeholders.values().map(|st| st.size).sum();
    let pinned: Vec<&Node> = tree
        .iter()
        .filter(|(p, n)| matches!(n, Node::File { .. }) && od.is_pinned(p))
        .map(|(_, n)| n)
        .collect();
    (
        placeholders.len() as u64,
        evicted_bytes,
        pinned.len() as u64,
        pinned.iter().map(|n| n.size()).sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_goes_stale_when_the_file_is_truncated() {
        let m = Marker {
            size: 5 << 20,
            content: [7; 32],
        };
        assert_eq!(Marker::decode(&m.encode()), Some(m));
        assert_eq!(Marker::decode(b"ECP0"), None);
        let st = LocalStat {
            kind: LocalKind::File,
            ino: 1,
            size: m.size,
            mtime_ns: 1_765_000_000_123_456_789,
            mode: 0o644,
        };
        assert!(m.matches(&st));
        assert!(
            m.matches(&LocalStat { mtime_ns: 1, ..st }),
            "touched: still no content"
        );
        assert!(!m.matches(&LocalStat { size: 0, ..st }), "truncated");
        assert!(!m.matches(&LocalStat {
            kind: LocalKind::Dir,
            ..st
        }));
    }
}
