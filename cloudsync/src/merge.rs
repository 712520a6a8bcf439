//! The three-way merge of a home: the base (what this device and the store last agreed on),
//! this device's tree and the store's newest tree give the merged tree, the local renames that
//! keep conflicting versions, and the conflicts. Pure: no I/O, unit-tested here and through
//! the scenario tests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::tree::{as_path, parent, same, Node, RelPath, Tree};

pub(crate) struct Plan {
    pub merged: Tree,
    /// Local renames `(from, to)` that keep this device's version of a conflicting path.
    pub renames: Vec<(RelPath, RelPath)>,
    /// `(path, copy)` for each conflict.
    pub conflicts: Vec<(RelPath, RelPath)>,
}

pub(crate) struct Sides<'a> {
    pub base: &'a Tree,
    pub local: &'a Tree,
    pub remote: &'a Tree,
    /// Paths left as the store has them this round (files that changed while read).
    pub frozen: &'a BTreeSet<RelPath>,
    /// This device's id and the remote head's writer, for conflict names.
    pub device: &'a str,
    pub remote_device: &'a str,
    pub now: SystemTime,
}

fn conflict_copy(
    path: &[u8],
    device: &str,
    now: SystemTime,
    taken: &dyn Fn(&[u8]) -> bool,
) -> RelPath {
    use std::os::unix::ffi::OsStrExt;
    // A name already in use (two conflicts of one file in the same second): the next second's.
    (0u64..)
        .map(|s| {
            crate::conflict_name(
                as_path(path),
                device,
                now + std::time::Duration::from_secs(s),
            )
        })
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .find(|p| !taken(p))
        .expect("an unused second exists")
}

pub(crate) fn merge(s: &Sides) -> Plan {
    let mut merged = Tree::new();
    let mut renames = Vec::new();
    let mut conflicts = Vec::new();
    let paths: BTreeSet<&RelPath> = s
        .base
        .keys()
        .chain(s.local.keys())
        .chain(s.remote.keys())
        .collect();
    let taken =
        |p: &[u8]| s.base.contains_key(p) || s.local.contains_key(p) || s.remote.contains_key(p);
    let mut copies: BTreeMap<RelPath, Node> = BTreeMap::new();
    for path in paths {
        let (b, l, r) = (s.base.get(path), s.local.get(path), s.remote.get(path));
        let pick = if s.frozen.contains(path) {
            r
        } else {
            let local_changed = !same(l, b);
            let remote_changed = !same(r, b);
            match (local_changed, remote_changed) {
                (false, _) => r,
                (true, false) => l,
                (true, true) if same(l, r) => l,
                // A modification beats a deletion, on either side.
                (true, true) => match (l, r) {
                    (None, r) => r,
                    (l, None) => l,
                    (Some(l), Some(r)) if l.is_dir() && r.is_dir() => Some(r),
                    (Some(l), Some(r)) if l.is_dir() => {
                        // This device's directory keeps the name; the store's file moves aside.
                        let copy = conflict_copy(path, s.remote_device, s.now, &|p| {
                            taken(p) || copies.contains_key(p)
                        });
                        copies.insert(copy.clone(), r.clone());
                        conflicts.push((path.clone(), copy));
                        Some(l)
                    }
                    (Some(l), Some(r)) => {
                        // The store's version keeps the name (other devices already have it);
                        // this device's version moves aside, here and in the store.
                        let copy = conflict_copy(path, s.device, s.now, &|p| {
                            taken(p) || copies.contains_key(p)
                        });
                        copies.insert(copy.clone(), l.clone());
                        renames.push((path.clone(), copy.clone()));
                        conflicts.push((path.clone(), copy));
                        Some(r)
                    }
                },
            }
        };
        if let Some(node) = pick {
            merged.insert(path.clone(), node.clone());
        }
    }
    merged.extend(copies);
    // Every path needs its parent directories: a file added under a directory the other side
    // deleted brings the directory back; a file in the way of one moves aside.
    let paths: Vec<RelPath> = merged.keys().cloned().collect();
    for path in paths {
        // Sorted, a directory comes before its contents: when the parent is a directory here,
        // its own ancestors were seen to already (the common case, without an allocation).
        if parent(&path).is_none_or(|p| merged.get(p).is_some_and(Node::is_dir)) {
            continue;
        }
        let mut ancestors = Vec::new();
        let mut cur = parent(&path);
        while let Some(p) = cur {
            ancestors.push(p.to_vec());
            cur = parent(p);
        }
        for ancestor in ancestors.into_iter().rev() {
            match merged.get(&ancestor) {
                Some(node) if node.is_dir() => {}
                Some(_) => {
                    let node = merged.remove(&ancestor).expect("present");
                    let copy = conflict_copy(&ancestor, s.device, s.now, &|p| {
                        taken(p) || merged.contains_key(p)
                    });
                    if s.local.get(&ancestor) == Some(&node) {
                        renames.push((ancestor.clone(), copy.clone()));
                    }
                    conflicts.push((ancestor.clone(), copy.clone()));
                    merged.insert(copy, node);
                    merged.insert(ancestor, dir_like(&[s.local, s.remote, s.base], &path));
                }
                None => {
                    let node = dir_like(&[s.local, s.remote, s.base], &ancestor);
                    merged.insert(ancestor, node);
                }
            }
        }
    }
    Plan {
        merged,
        renames,
        conflicts,
    }
}

/// The directory node for `path` from whichever side has one (mode 0755 otherwise).
fn dir_like(sides: &[&Tree], path: &[u8]) -> Node {
    sides
        .iter()
        .filter_map(|t| t.get(path))
        .find(|n| n.is_dir())
        .cloned()
        .unwrap_or(Node::Dir { mode: 0o755 })
}
