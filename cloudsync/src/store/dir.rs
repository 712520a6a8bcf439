//! A store in a local directory, with plain blocking file calls: no runtime, no threads. The
//! default store is local, and `elastos run` syncs around every launch, so its fast path (one
//! directory listing, no write) must cost microseconds, not a runtime's start-up.
//!
//! The layout is `object_store`'s `LocalFileSystem`'s (an object is the file at its name), so a
//! store written by one reads with the other; listings skip both implementations' staging files
//! (`.NAME.tmp-*` here, `NAME#N` there).

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use elastos_identity::fsutil;

use super::Listed;
use crate::SyncError;

pub(super) struct DirStore {
    root: PathBuf,
}

/// Store objects are ciphertext; the directory's own permissions decide who reads it.
const OBJECT_MODE: u32 = 0o644;

impl DirStore {
    pub(super) fn open(root: &Path) -> Result<Self, SyncError> {
        std::fs::create_dir_all(root)
            .map_err(|e| SyncError::io("create store directory", root, e))?;
        Ok(DirStore {
            root: root.to_owned(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub(super) fn get(&self, name: &str) -> Result<Option<Bytes>, SyncError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SyncError::io("read store object", path, e)),
        }
    }

    /// Writes `name` through a synced temporary file: replacing it (`Replace::Yes`) or only if
    /// absent (`Replace::No`, a hard link: `Ok(false)` when it exists).
    fn write(&self, name: &str, bytes: &[u8], replace: fsutil::Replace) -> Result<bool, SyncError> {
        let path = self.path(name);
        let mut result = fsutil::write_atomically(&path, bytes, OBJECT_MODE, replace);
        if matches!(&result, Err(e) if e.kind() == ErrorKind::NotFound) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| SyncError::io("create store directory", parent, e))?;
            }
            result = fsutil::write_atomically(&path, bytes, OBJECT_MODE, replace);
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && replace == fsutil::Replace::No => {
                Ok(false)
            }
            Err(e) => Err(SyncError::io("write store object", path, e)),
        }
    }

    pub(super) fn put(&self, name: &str, bytes: &[u8]) -> Result<(), SyncError> {
        self.write(name, bytes, fsutil::Replace::Yes).map(drop)
    }

    pub(super) fn create(&self, name: &str, bytes: &[u8]) -> Result<bool, SyncError> {
        self.write(name, bytes, fsutil::Replace::No)
    }

    /// The objects directly in `dir/` whose names sort after `after`, with an e-tag made like
    /// `LocalFileSystem`'s (inode, mtime in µs, size) so indexes written with either match.
    pub(super) fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<Listed>, SyncError> {
        let path = self.path(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SyncError::io("list store directory", path, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SyncError::io("list store directory", &path, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.contains('#') || after.is_some_and(|a| *name <= *a) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(SyncError::io("stat store object", entry.path(), e)),
            };
            let mtime_us = meta.mtime() as i128 * 1_000_000 + meta.mtime_nsec() as i128 / 1000;
            out.push(Listed {
                e_tag: Some(format!("{:x}-{:x}-{:x}", meta.ino(), mtime_us, meta.len())),
                size: meta.len(),
                modified: meta.modified().ok(),
                name,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every object under `dir/` at any depth, named relative to it.
    pub(super) fn list_all(&self, dir: &str) -> Result<Vec<Listed>, SyncError> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(sub) = stack.pop() {
            let at = if sub.is_empty() {
                dir.to_owned()
            } else {
                format!("{dir}/{sub}")
            };
            let path = self.path(&at);
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(SyncError::io("list store directory", path, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| SyncError::io("list store directory", &path, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || name.contains('#') {
                    continue;
                }
                let rel = if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                };
                match entry.file_type() {
                    Ok(t) if t.is_dir() => stack.push(rel),
                    Ok(t) if t.is_file() => {
                        let meta = match entry.metadata() {
                            Ok(meta) => meta,
                            Err(e) if e.kind() == ErrorKind::NotFound => continue,
                            Err(e) => {
                                return Err(SyncError::io("stat store object", entry.path(), e))
                            }
                        };
                        out.push(Listed {
                            name: rel,
                            size: meta.len(),
                            e_tag: None,
                            modified: meta.modified().ok(),
                        });
                    }
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) fn delete(&self, name: &str) -> Result<(), SyncError> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SyncError::io("delete store object", path, e)),
        }
    }
}
