//! Unpacking a verified bundle into the content-addressed cache.
//!
//! Layout of the cache:
//!
//! ```text
//! CACHE/<digest>/app/        the app's files; the loader mounts this read-only at /app
//! CACHE/<digest>/complete    marker: written before the directory gets its final name
//! CACHE/<digest>/verified    the verification record, see crate::record (written later)
//! CACHE/.tmp-<digest>-<random>/   a staging directory while an unpack is in progress
//! ```
//!
//! An unpack fills a staging directory and renames it to `<digest>` in one step, so other
//! processes see either nothing or a complete tree; two concurrent unpacks of the same bundle
//! both succeed and one of them keeps its result. The marker sits beside `app/`, not in it, so
//! an app cannot ship a file that fakes it and the app never sees it. Directories get mode 0755
//! and files 0644 or 0755 whatever the umask, because the jail may run under another uid and
//! bundle contents are not secret.
//!
//! Entries are written with plain std calls, never through symlinks: `create_new` (O_EXCL)
//! never follows a symlink at the final component, and [`TreeIndex`] only admits entries whose
//! parent is an earlier directory entry, so every intermediate component is a directory this
//! unpack created.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::{BundleError, DeviceKind};
use crate::format::{BundleDigest, VerifiedBundle};
use crate::tree::{Node, TreeIndex};

/// Name of the app tree inside a cache entry.
const TREE_DIR: &str = "app";
/// Name of the completion marker inside a cache entry.
const COMPLETE_MARKER: &str = "complete";

/// The cache entry of the bundle with `digest`: `cache_dir/<digest>`.
pub(crate) fn cache_entry(cache_dir: &Path, digest: BundleDigest) -> PathBuf {
    cache_dir.join(digest.to_string())
}

/// Bounds on what an archive may expand to. [`crate::pack`] enforces the same bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most entries (files, directories, symlinks) an archive may hold. Default 100 000.
    pub max_entries: u64,
    /// Most bytes the decompressed tar stream (headers, data and padding) may have, counted as
    /// they are read rather than trusted from headers. Default 1 GiB.
    pub max_unpacked_bytes: u64,
    /// Longest entry path, in bytes, after normalisation. Default 2048, which leaves room
    /// under Linux's 4096-byte `PATH_MAX` for the cache directory in front of it.
    pub max_path_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_unpacked_bytes: 1 << 30,
            max_path_bytes: 2048,
        }
    }
}

/// A bundle's tree in the cache, ready to be mounted.
#[derive(Debug, Clone)]
pub struct UnpackedBundle {
    root: PathBuf,
    freshly_unpacked: bool,
}

impl UnpackedBundle {
    /// The tree of the cache entry `entry` (`CACHE/<digest>`).
    pub(crate) fn in_cache(entry: &Path, freshly_unpacked: bool) -> Self {
        Self {
            root: entry.join(TREE_DIR),
            freshly_unpacked,
        }
    }

    /// The directory holding the app's files (`CACHE/<digest>/app`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this call unpacked the bundle, rather than finding it already in the cache.
    pub fn freshly_unpacked(&self) -> bool {
        self.freshly_unpacked
    }
}

/// The lock between writing the cache's files and cloning processes that may execute them, as
/// Go's `syscall.ForkLock`: unpacking holds it shared while a file is open for writing; a caller
/// that clones a process (a `clone()` without exec copies every fd of its parent) takes it
/// exclusively around the clone. Without it, a jail cloned by one thread while another thread
/// unpacks a bundle could hold a copy of the write end of an app's file until it closes its
/// inherited fds, and the exec of that app would fail with ETXTBSY ("Text file busy"), which
/// concurrent activations in one broker showed.
pub fn exec_fork_lock() -> &'static std::sync::RwLock<()> {
    static LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());
    &LOCK
}

impl VerifiedBundle {
    /// Makes the bundle's files available under `cache_dir/<digest>/app`, unpacking them only
    /// if no earlier call already did.
    ///
    /// Refuses hostile archives (see the crate documentation for the rules) and leaves nothing
    /// behind in `cache_dir` when it does. After unpacking, the manifest's entry must be an
    /// executable regular file ([`BundleError::EntryMissing`], [`BundleError::EntryNotExecutable`]).
    pub fn unpack_into_cache(
        &self,
        cache_dir: &Path,
        limits: &UnpackLimits,
    ) -> Result<UnpackedBundle, BundleError> {
        let digest = self.digest();
        let target = cache_entry(cache_dir, digest);
        let found = |freshly_unpacked| UnpackedBundle::in_cache(&target, freshly_unpacked);
        if is_complete(&target)? {
            return Ok(found(false));
        }

        let cache_error = |path: &Path, source| BundleError::CacheWrite {
            path: path.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(cache_dir)
            .map_err(|source| cache_error(cache_dir, source))?;
        let suffix = random_suffix().map_err(|source| BundleError::Random { source })?;
        let staging = StagingDir::create(cache_dir.join(format!(".tmp-{digest}-{suffix}")))?;

        extract(
            self.payload(),
            &staging.path.join(TREE_DIR),
            limits,
            self.manifest().entry(),
        )?;
        let marker = staging.path.join(COMPLETE_MARKER);
        fs::write(&marker, b"").map_err(|source| cache_error(&marker, source))?;
        set_mode(&marker, 0o644).map_err(|source| cache_error(&marker, source))?;

        match fs::rename(&staging.path, &target) {
            Ok(()) => {
                staging.keep();
                Ok(found(true))
            }
            // Another process finished the same bundle first; its tree is as good as ours,
            // and dropping `staging` removes ours.
            Err(_) if is_complete(&target)? => Ok(found(false)),
            Err(source) => Err(cache_error(&target, source)),
        }
    }
}

/// Whether `target` is a finished cache entry; an unfinished one is an error, not a miss,
/// because elastos never leaves one behind and silently deleting it could hide a problem.
pub(crate) fn is_complete(target: &Path) -> Result<bool, BundleError> {
    let cache_error = |path: &Path, source| BundleError::CacheCheck {
        path: path.to_owned(),
        source,
    };
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(cache_error(target, source)),
        Ok(_) => {}
    }
    let marker = target.join(COMPLETE_MARKER);
    match fs::symlink_metadata(&marker) {
        Ok(metadata) if metadata.is_file() => Ok(true),
        Err(source) if source.kind() != ErrorKind::NotFound => Err(cache_error(&marker, source)),
        _ => Err(BundleError::CacheEntryIncomplete {
            path: target.to_owned(),
        }),
    }
}

/// A staging directory that is removed, with everything in it, unless it is kept.
struct StagingDir {
    path: PathBuf,
    kept: bool,
}

impl StagingDir {
    fn create(path: PathBuf) -> Result<Self, BundleError> {
        create_public_dir(&path).map_err(|source| BundleError::CacheWrite {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, kept: false })
    }

    /// Called once the directory has been renamed into place.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.kept {
            // Best effort; `remove_dir_all` does not follow symlinks inside the tree.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode))
}

/// `mkdir` with mode 0755 regardless of the umask. `mkdir` never follows a symlink at `path`.
fn create_public_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(0o755).create(path)?;
    set_mode(path, 0o755)
}

fn archive_error(source: io::Error) -> BundleError {
    BundleError::Archive { source }
}

/// Counts decompressed bytes as they are read and fails once they pass the limit, so neither a
/// gzip bomb nor a header that lies about sizes gets further than the limit.
struct LimitedReader<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R> LimitedReader<R> {
    fn exceeded(&self) -> bool {
        self.read > self.limit
    }
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.read += read as u64;
        if self.exceeded() {
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(read)
    }
}

/// Unpacks `payload` into the new directory `root` and checks the manifest's `entry` in it.
fn extract(
    payload: &[u8],
    root: &Path,
    limits: &UnpackLimits,
    entry: &Path,
) -> Result<(), BundleError> {
    let mut limited = LimitedReader {
        inner: GzDecoder::new(payload),
        read: 0,
        limit: limits.max_unpacked_bytes,
    };
    let result = extract_archive(&mut tar::Archive::new(&mut limited), root, limits, entry);
    // The tar crate may wrap the reader's error in its own; the counter is the reliable witness.
    if limited.exceeded() {
        return Err(BundleError::TooManyBytes {
            limit: limits.max_unpacked_bytes,
        });
    }
    result
}

fn extract_archive<R: Read>(
    archive: &mut tar::Archive<R>,
    root: &Path,
    limits: &UnpackLimits,
    entry: &Path,
) -> Result<(), BundleError> {
    create_public_dir(root).map_err(|source| BundleError::CacheWrite {
        path: root.to_owned(),
        source,
    })?;
    let mut tree = TreeIndex::new(limits);
    for archive_entry in archive.entries().map_err(archive_error)? {
        let mut archive_entry = archive_entry.map_err(archive_error)?;
        let path = normalise_entry_path(&archive_entry.path_bytes())?;
        let node = classify(&archive_entry, &path)?;
        tree.add(&path, node.clone())?;
        write_node(&mut archive_entry, root, &path, &node)?;
    }
    tree.check_symlinks()?;
    tree.check_entry(entry)
}

/// Turns a raw archive path into a relative path of `Normal` components only.
fn normalise_entry_path(raw: &[u8]) -> Result<PathBuf, BundleError> {
    let raw_path = Path::new(OsStr::from_bytes(raw));
    let mut path = PathBuf::new();
    for component in raw_path.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(BundleError::PathTraversal {
                    path: raw_path.to_owned(),
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(BundleError::AbsolutePath {
                    path: raw_path.to_owned(),
                })
            }
        }
    }
    if path.as_os_str().is_empty() {
        return Err(BundleError::RootEntry {
            path: raw_path.to_owned(),
        });
    }
    Ok(path)
}

/// Decides what an entry becomes on disk, refusing every type but file, directory and symlink.
fn classify<R: Read>(entry: &tar::Entry<R>, path: &Path) -> Result<Node, BundleError> {
    let header = entry.header();
    let path = path.to_owned();
    let link_target = || {
        let bytes = entry.link_name_bytes().unwrap_or_default();
        PathBuf::from(OsStr::from_bytes(&bytes))
    };
    let mode = header.mode().map_err(archive_error)? & 0o7777;
    let node = match header.entry_type() {
        tar::EntryType::Regular => Node::File {
            executable: mode & 0o111 != 0,
        },
        tar::EntryType::Directory => Node::Directory,
        tar::EntryType::Symlink => Node::Symlink {
            target: link_target(),
        },
        tar::EntryType::Link => {
            return Err(BundleError::HardLink {
                path,
                target: link_target(),
            })
        }
        tar::EntryType::Char => {
            return Err(BundleError::DeviceFile {
                path,
                kind: DeviceKind::Character,
            })
        }
        tar::EntryType::Block => {
            return Err(BundleError::DeviceFile {
                path,
                kind: DeviceKind::Block,
            })
        }
        tar::EntryType::Fifo => return Err(BundleError::Fifo { path }),
        other => {
            return Err(BundleError::UnsupportedEntryType {
                path,
                type_byte: other.as_byte(),
            })
        }
    };
    // The modes written are always 0755/0644, but a request for setuid/setgid shows the
    // archive was not made by `elastos bundle pack`; refuse rather than silently drop it.
    if mode & 0o6000 != 0 {
        return Err(BundleError::SetIdBit { path, mode });
    }
    Ok(node)
}

/// Creates `path` (already admitted by the tree index) below `root`.
fn write_node<R: Read>(
    entry: &mut tar::Entry<R>,
    root: &Path,
    path: &Path,
    node: &Node,
) -> Result<(), BundleError> {
    let dest = root.join(path);
    let cache_error = |source| BundleError::CacheWrite {
        path: dest.to_owned(),
        source,
    };
    match node {
        Node::Directory => create_public_dir(&dest).map_err(cache_error),
        Node::Symlink { target } => std::os::unix::fs::symlink(target, &dest).map_err(cache_error),
        Node::File { executable } => {
            let mode = if *executable { 0o755 } else { 0o644 };
            // Shared while the file is open for writing: see [`exec_fork_lock`].
            let _writing = exec_fork_lock()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&dest)
                .map_err(cache_error)?;
            // A read error is the archive's fault, a write error the cache's: copy by hand to
            // tell them apart.
            let mut buf = vec![0u8; 64 * 1024];
            let mut copied = 0u64;
            loop {
                let read = entry.read(&mut buf).map_err(archive_error)?;
                if read == 0 {
                    break;
                }
                file.write_all(&buf[..read]).map_err(cache_error)?;
                copied += read as u64;
            }
            if copied != entry.size() {
                return Err(archive_error(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "entry {path:?} has {copied} bytes, its header says {}",
                        entry.size()
                    ),
                )));
            }
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(cache_error)
        }
    }
}

/// Eight random bytes in hex, to name a staging directory nobody can predict.
fn random_suffix() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    Ok(hex::encode(bytes))
}
