//! The rules a bundle's file tree must follow, checked the same way when packing and when
//! unpacking, so that everything [`crate::pack`] writes can be unpacked.
//!
//! The index works on normalised relative paths (only `Normal` components) and never touches
//! the filesystem: symlinks are resolved against the index itself, the way the kernel would
//! resolve them once the tree is on disk.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::error::{BundleError, EntryKind};
use crate::unpack::UnpackLimits;

/// Linux gives up resolving a path after this many symlinks (`MAXSYMLINKS`) with `ELOOP`, so a
/// longer chain cannot lead anywhere.
const MAX_SYMLINK_HOPS: usize = 40;

/// What an entry of the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Directory,
    File { executable: bool },
    Symlink { target: PathBuf },
}

/// All entries seen so far, keyed by normalised relative path.
pub(crate) struct TreeIndex<'a> {
    limits: &'a UnpackLimits,
    nodes: HashMap<PathBuf, Node>,
}

impl<'a> TreeIndex<'a> {
    pub(crate) fn new(limits: &'a UnpackLimits) -> Self {
        Self {
            limits,
            nodes: HashMap::new(),
        }
    }

    /// Admits one entry, or says which rule it breaks. `path` must be normalised.
    pub(crate) fn add(&mut self, path: &Path, node: Node) -> Result<(), BundleError> {
        if self.nodes.len() as u64 >= self.limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let len = path.as_os_str().len();
        if len > self.limits.max_path_bytes {
            return Err(BundleError::PathTooLong {
                path: path.to_owned(),
                len,
                max: self.limits.max_path_bytes,
            });
        }
        if let Some(symlink) = path
            .ancestors()
            .skip(1)
            .find(|a| matches!(self.nodes.get(*a), Some(Node::Symlink { .. })))
        {
            return Err(BundleError::ThroughSymlink {
                path: path.to_owned(),
                symlink: symlink.to_owned(),
            });
        }
        let parent = path.parent().unwrap_or(Path::new(""));
        if !parent.as_os_str().is_empty() && self.nodes.get(parent) != Some(&Node::Directory) {
            return Err(BundleError::ParentNotDirectory {
                path: path.to_owned(),
            });
        }
        if self.nodes.contains_key(path) {
            return Err(BundleError::DuplicateEntry {
                path: path.to_owned(),
            });
        }
        if let Node::Symlink { target } = &node {
            // Checked now for an early, precise refusal; `check_symlinks` repeats the check
            // once every symlink that the target may pass through is known.
            self.check_symlink(path, target)?;
        }
        self.nodes.insert(path.to_owned(), node);
        Ok(())
    }

    /// Checks every symlink again against the complete tree, so that chains such as
    /// `a -> .` plus `b -> a/..` cannot escape.
    pub(crate) fn check_symlinks(&self) -> Result<(), BundleError> {
        self.nodes.iter().try_for_each(|(path, node)| match node {
            Node::Symlink { target } => self.check_symlink(path, target),
            _ => Ok(()),
        })
    }

    /// Checks that `entry` (the manifest's `app.entry`, which the manifest parser guarantees
    /// is made of plain components) is an executable regular file of the tree, reached without
    /// symlinks.
    pub(crate) fn check_entry(&self, entry: &Path) -> Result<(), BundleError> {
        let found = match self.nodes.get(entry) {
            None => {
                return Err(BundleError::EntryMissing {
                    entry: entry.to_owned(),
                })
            }
            Some(Node::File { executable: true }) => return Ok(()),
            Some(Node::File { executable: false }) => EntryKind::NonExecutableFile,
            Some(Node::Directory) => EntryKind::Directory,
            Some(Node::Symlink { .. }) => EntryKind::Symlink,
        };
        Err(BundleError::EntryNotExecutable {
            entry: entry.to_owned(),
            found,
        })
    }

    fn check_symlink(&self, path: &Path, target: &Path) -> Result<(), BundleError> {
        if target.has_root() {
            return Err(BundleError::SymlinkAbsolute {
                path: path.to_owned(),
                target: target.to_owned(),
            });
        }
        if self.resolves_outside(path, target) {
            return Err(BundleError::SymlinkEscapes {
                path: path.to_owned(),
                target: target.to_owned(),
            });
        }
        Ok(())
    }

    /// Resolves `target` relative to the directory of `link`, following the index's symlinks,
    /// and says whether any step leaves the root. Unknown names count as directories, which is
    /// the conservative choice: `..` after them is taken at face value.
    fn resolves_outside(&self, link: &Path, target: &Path) -> bool {
        let mut resolved: Vec<OsString> = link
            .parent()
            .into_iter()
            .flat_map(Path::iter)
            .map(OsString::from)
            .collect();
        // Components still to walk, in reverse so the next one is at the end.
        let mut pending: Vec<Component> = target.components().rev().collect();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component {
                Component::RootDir | Component::Prefix(_) => return true,
                Component::CurDir => {}
                Component::ParentDir => {
                    if resolved.pop().is_none() {
                        return true;
                    }
                }
                Component::Normal(name) => {
                    resolved.push(name.to_owned());
                    let here: PathBuf = resolved.iter().collect();
                    if let Some(Node::Symlink { target }) = self.nodes.get(&here) {
                        hops += 1;
                        if hops > MAX_SYMLINK_HOPS {
                            // The kernel fails this lookup with ELOOP: it leads nowhere.
                            return false;
                        }
                        resolved.pop();
                        pending.extend(target.components().rev());
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symlink(target: &str) -> Node {
        Node::Symlink {
            target: PathBuf::from(target),
        }
    }

    fn index_with(limits: &UnpackLimits, entries: &[(&str, Node)]) -> Result<(), BundleError> {
        let mut index = TreeIndex::new(limits);
        for (path, node) in entries {
            index.add(Path::new(path), node.clone())?;
        }
        index.check_symlinks()
    }

    #[test]
    fn symlinks_inside_the_tree_are_accepted() {
        let limits = UnpackLimits::default();
        let result = index_with(
            &limits,
            &[
                ("lib", Node::Directory),
                ("lib/real.so", Node::File { executable: false }),
                ("lib/alias.so", symlink("real.so")),
                ("bin", Node::Directory),
                ("bin/up", symlink("../lib/./alias.so")),
                ("self", symlink(".")),
                ("dangling", symlink("does/not/exist")),
            ],
        );
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn symlink_chain_escaping_through_another_symlink_is_refused() {
        // Lexically `b -> a/..` stays inside; through `a -> .` it names the parent of the root.
        let limits = UnpackLimits::default();
        let result = index_with(&limits, &[("b", symlink("a/..")), ("a", symlink("."))]);
        assert!(
            matches!(&result, Err(BundleError::SymlinkEscapes { path, .. }) if path == Path::new("b")),
            "{result:?}"
        );
    }

    #[test]
    fn symlink_loop_is_not_an_escape() {
        let limits = UnpackLimits::default();
        let result = index_with(&limits, &[("a", symlink("b")), ("b", symlink("a"))]);
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn entry_must_be_an_executable_file() {
        let limits = UnpackLimits::default();
        let mut index = TreeIndex::new(&limits);
        index.add(Path::new("dir"), Node::Directory).unwrap();
        index
            .add(Path::new("data"), Node::File { executable: false })
            .unwrap();
        index
            .add(Path::new("run"), Node::File { executable: true })
            .unwrap();
        index.add(Path::new("link"), symlink("run")).unwrap();

        assert!(index.check_entry(Path::new("run")).is_ok());
        for (entry, expected) in [
            ("dir", EntryKind::Directory),
            ("data", EntryKind::NonExecutableFile),
            ("link", EntryKind::Symlink),
        ] {
            let err = index.check_entry(Path::new(entry)).unwrap_err();
            assert!(
                matches!(err, BundleError::EntryNotExecutable { found, .. } if found == expected),
                "{entry}: {err:?}"
            );
        }
        let err = index.check_entry(Path::new("nope")).unwrap_err();
        assert!(matches!(err, BundleError::EntryMissing { .. }), "{err:?}");
    }
}
