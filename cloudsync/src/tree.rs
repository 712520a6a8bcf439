//! A home's tree as the store keeps it (inside an encrypted snapshot) and as the merge sees it.
//!
//! Paths are the raw bytes of Linux file names joined with `/`, relative to the home; sorted as
//! bytes, a directory comes before everything inside it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::crypto::ChunkId;

/// A path relative to the home, as bytes (`a/b/c`).
pub(crate) type RelPath = Vec<u8>;

pub(crate) fn as_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

/// Checks a caller's path: relative, no `..`, no `.` (only `Normal` components).
pub(crate) fn rel_from_path(path: &Path) -> Option<RelPath> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name.as_bytes());
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The parent of `rel` (`None` for a top-level name).
pub(crate) fn parent(rel: &[u8]) -> Option<&[u8]> {
    rel.iter().rposition(|&b| b == b'/').map(|i| &rel[..i])
}

/// Whether `rel` is `dir` or inside it (`dir` empty: everything).
pub(crate) fn is_within(rel: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || rel == dir || (rel.starts_with(dir) && rel.get(dir.len()) == Some(&b'/'))
}

/// One chunk of a file: its id and plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Node {
    File {
        size: u64,
        mode: u32,
        mtime_ns: i64,
        chunks: Vec<ChunkRef>,
    },
    /// The link's target bytes, stored as they are; never followed.
    Symlink {
        target: Vec<u8>,
    },
    Dir {
        mode: u32,
    },
}

impl Node {
    /// Same content and permissions (a file's mtime does not count: two devices writing the
    /// same bytes agree).
    pub(crate) fn same(&self, other: &Node) -> bool {
        match (self, other) {
            (
                Node::File {
                    mode: m1,
                    chunks: c1,
                    ..
                },
                Node::File {
                    mode: m2,
                    chunks: c2,
                    ..
                },
            ) => m1 == m2 && c1 == c2,
            (a, b) => a == b,
        }
    }

    pub(crate) fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }

    pub(crate) fn size(&self) -> u64 {
        match self {
            Node::File { size, .. } => *size,
            _ => 0,
        }
    }
}

pub(crate) fn same(a: Option<&Node>, b: Option<&Node>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same(b),
        (None, None) => true,
        _ => false,
    }
}

/// The paths whose nodes differ ([`same`]) between two trees, in order: one walk of both
/// sorted trees, no lookups.
pub(crate) fn differing<'a>(a: &'a Tree, b: &'a Tree) -> Vec<&'a RelPath> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some((pa, _)), None) => {
                out.push(*pa);
                a.next();
            }
            (None, Some((pb, _))) => {
                out.push(*pb);
                b.next();
            }
            (Some((pa, na)), Some((pb, nb))) => match pa.cmp(pb) {
                Ordering::Less => {
                    out.push(*pa);
                    a.next();
                }
                Ordering::Greater => {
                    out.push(*pb);
                    b.next();
                }
                Ordering::Equal => {
                    if !na.same(nb) {
                        out.push(*pa);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}

/// Looks up keys of a sorted map in increasing order by walking it once: a scan of a sorted
/// listing against an index costs one comparison per entry, not a tree search per path.
pub(crate) struct Cursor<'a, V> {
    iter: std::iter::Peekable<std::collections::btree_map::Iter<'a, RelPath, V>>,
}

impl<'a, V> Cursor<'a, V> {
    pub(crate) fn new(map: &'a BTreeMap<RelPath, V>) -> Self {
        Cursor {
            iter: map.iter().peekable(),
        }
    }

    /// The value of `key`; keys must be asked for in increasing order.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<&'a V> {
        while let Some(&(k, v)) = self.iter.peek() {
            match k.as_slice().cmp(key) {
                std::cmp::Ordering::Less => {
                    self.iter.next();
                }
                std::cmp::Ordering::Equal => return Some(v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// A deleted path, kept for [`crate::TOMBSTONE_RETENTION`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Tombstone {
    /// Unix milliseconds of the snapshot that deleted it.
    pub deleted_ms: u64,
    /// What it was before.
    pub last: Node,
}

pub(crate) type Tree = BTreeMap<RelPath, Node>;

/// The plaintext of a snapshot object (postcard, then deflate, then sealed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Snapshot {
    /// The home id it belongs to (also in the object name and the AEAD's associated data).
    pub home: String,
    pub version: u64,
    /// SHA-256 of the sealed object of `version - 1`: a chain, so a device notices when the
    /// snapshot it built on was replaced.
    pub parent: Option<[u8; 32]>,
    /// Unix milliseconds, the writer's clock.
    pub time_ms: u64,
    /// The writer's short device id.
    pub device: String,
    pub live: Tree,
    pub deleted: BTreeMap<RelPath, Tombstone>,
}

impl Snapshot {
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// `None` when the bytes (already authenticated) do not decode: a format bug or another
    /// version of this crate, reported by the caller.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Snapshot> {
        decode(bytes)
    }
}

/// Postcard, then deflate: the plaintext of a snapshot or delta object.
fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    use std::io::Write;
    let plain = postcard::to_stdvec(value).expect("a snapshot always serializes");
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&plain).expect("writing to memory");
    z.finish().expect("writing to memory")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    use std::io::Read;
    let mut plain = Vec::new();
    flate2::read::DeflateDecoder::new(bytes)
        .read_to_end(&mut plain)
        .ok()?;
    postcard::from_bytes(&plain).ok()
}

/// Where a snapshot sits in its delta chain: the full snapshot the chain starts at, and how
/// many entries the deltas after it hold (0 for a full snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Chain {
    pub full: u64,
    pub entries: u64,
}

/// A snapshot written as the changes against the version before it (sealed as a delta
/// object): a commit of a few files costs a few entries whatever the size of the home. The tree
/// it stands for is the previous version's with `live` and `deleted` applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Delta {
    /// The home id it belongs to (also in the object name and the AEAD's associated data).
    pub home: String,
    pub version: u64,
    /// SHA-256 of the sealed object of `version - 1`, the tree this delta applies to: a reader
    /// applies it only on that exact object.
    pub parent: [u8; 32],
    /// Where this delta sits: a reader that does not hold `version - 1` reads the full snapshot
    /// `chain.full` and the deltas after it (at most [`MAX_CHAIN`] objects in all).
    pub chain: Chain,
    /// Unix milliseconds, the writer's clock.
    pub time_ms: u64,
    /// The writer's short device id.
    pub device: String,
    /// Live paths that changed: the new node, or `None` when the path left the live tree.
    pub live: Vec<(RelPath, Option<Node>)>,
    /// Tombstones that changed: the new one, or `None` when it went (expired, or the path
    /// came back).
    pub deleted: Vec<(RelPath, Option<Tombstone>)>,
}

/// The most objects a reader reads for one version: a full snapshot and the deltas after it.
pub(crate) const MAX_CHAIN: u64 = 32;

/// The entries of `b` that differ from `a` (exact equality: a file's mtime counts), each with
/// `b`'s value or `None` where `b` lacks it; one walk of both sorted maps.
pub(crate) fn changes<V: PartialEq + Clone>(
    a: &BTreeMap<RelPath, V>,
    b: &BTreeMap<RelPath, V>,
) -> Vec<(RelPath, Option<V>)> {
    use std::cmp::Ordering;
    let mut out = Vec::new();
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((pa, _)), Some((pb, _))) => pa.cmp(pb),
        };
        match order {
            Ordering::Less => out.push((a.next().expect("peeked").0.clone(), None)),
            Ordering::Greater => {
                let (p, v) = b.next().expect("peeked");
                out.push((p.clone(), Some(v.clone())));
            }
            Ordering::Equal => {
                let ((p, va), (_, vb)) = (a.next().expect("peeked"), b.next().expect("peeked"));
                if va != vb {
                    out.push((p.clone(), Some(vb.clone())));
                }
            }
        }
    }
}

impl Delta {
    /// The delta that turns `prev` (whose sealed object hashes to `parent`, at `chain`) into
    /// `next` (its successor version).
    pub(crate) fn between(
        prev: &Snapshot,
        next: &Snapshot,
        parent: [u8; 32],
        chain: Chain,
    ) -> Delta {
        let live = changes(&prev.live, &next.live);
        let deleted = changes(&prev.deleted, &next.deleted);
        Delta {
            home: next.home.clone(),
            version: next.version,
            parent,
            chain: Chain {
                full: chain.full,
                entries: chain.entries + (live.len() + deleted.len()) as u64,
            },
            time_ms: next.time_ms,
            device: next.device.clone(),
            live,
            deleted,
        }
    }

    /// Turns `tree`, the snapshot this delta was made against, into this version's snapshot.
    pub(crate) fn apply(self, tree: &mut Snapshot) {
        tree.version = self.version;
        tree.parent = Some(self.parent);
        tree.time_ms = self.time_ms;
        tree.device = self.device;
        for (path, node) in self.live {
            match node {
                Some(node) => tree.live.insert(path, node),
                None => tree.live.remove(&path),
            };
        }
        for (path, tombstone) in self.deleted {
            match tombstone {
                Some(t) => tree.deleted.insert(path, t),
                None => tree.deleted.remove(&path),
            };
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Delta> {
        decode(bytes)
    }
}

/// One snapshot object as stored: a full tree or a delta.
pub(crate) enum Stored {
    Full(Snapshot),
    Delta(Delta),
}

impl Stored {
    pub(crate) fn version(&self) -> u64 {
        match self {
            Stored::Full(s) => s.version,
            Stored::Delta(d) => d.version,
        }
    }

    pub(crate) fn home(&self) -> &str {
        match self {
            Stored::Full(s) => &s.home,
            Stored::Delta(d) => &d.home,
        }
    }

    /// The hash of the previous version's object it names.
    pub(crate) fn parent(&self) -> Option<[u8; 32]> {
        match self {
            Stored::Full(s) => s.parent,
            Stored::Delta(d) => Some(d.parent),
        }
    }

    pub(crate) fn time_ms(&self) -> u64 {
        match self {
            Stored::Full(s) => s.time_ms,
            Stored::Delta(d) => d.time_ms,
        }
    }

    pub(crate) fn chain(&self) -> Chain {
        match self {
            Stored::Full(s) => Chain {
                full: s.version,
                entries: 0,
            },
            Stored::Delta(d) => d.chain,
        }
    }

    /// Every node it holds (live and tombstones; a delta: only the ones it changes).
    pub(crate) fn nodes(&self) -> Box<dyn Iterator<Item = &Node> + '_> {
        match self {
            Stored::Full(s) => Box::new(s.live.values().chain(s.deleted.values().map(|t| &t.last))),
            Stored::Delta(d) => Box::new(
                d.live.iter().filter_map(|(_, n)| n.as_ref()).chain(
                    d.deleted
                        .iter()
                        .filter_map(|(_, t)| t.as_ref().map(|t| &t.last)),
                ),
            ),
        }
    }
}
