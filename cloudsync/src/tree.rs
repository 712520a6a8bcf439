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
        use std::io::Write;
        let plain = postcard::to_stdvec(self).expect("a snapshot always serializes");
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&plain).expect("writing to memory");
        z.finish().expect("writing to memory")
    }

    /// `None` when the bytes (already authenticated) do not decode: a format bug or another
    /// version of this crate, reported by the caller.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Snapshot> {
        use std::io::Read;
        let mut plain = Vec::new();
        flate2::read::DeflateDecoder::new(bytes)
            .read_to_end(&mut plain)
            .ok()?;
        postcard::from_bytes(&plain).ok()
    }
}
