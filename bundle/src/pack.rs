//! Packing an app directory into a signed bundle.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Take, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use elastos_policy::Manifest;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{BundleError, DeviceKind};
use crate::format::{parse_manifest, seal, BundleDigest, Layout, MAX_MANIFEST_LEN};
use crate::key::{PublisherId, PublisherKey};
use crate::tree::{Node, TreeIndex};
use crate::unpack::UnpackLimits;
use elastos_identity::fsutil::{write_atomically, Replace};

/// The manifest's file name in an app directory; it travels outside the payload.
const MANIFEST_FILE: &str = "manifest.toml";

/// What [`pack_to`] wrote.
#[derive(Debug, Clone)]
pub struct PackedBundle {
    /// Digest of the bundle's manifest and payload.
    pub digest: BundleDigest,
    /// The publisher whose key signed it.
    pub publisher: PublisherId,
    /// Size of the bundle file, in bytes.
    pub size: u64,
}

/// Packs the app directory `dir` into a bundle signed with `key`, returning its bytes.
///
/// `dir/manifest.toml` must parse, and its `app.entry` must be an executable regular file in
/// `dir`. Every other file of `dir` goes into the payload, and the tree must satisfy `limits`
/// and the unpack rules, so the bundle can always be unpacked. Refused: symlinks that are
/// absolute or lead outside `dir`, FIFOs, sockets, device nodes, setuid/setgid files. Packing
/// the same directory twice gives identical bytes.
pub fn pack(dir: &Path, key: &PublisherKey, limits: &UnpackLimits) -> Result<Vec<u8>, BundleError> {
    let manifest_bytes = read_manifest(dir)?;
    let (_, manifest) = parse_manifest(&manifest_bytes)?;
    let payload = build_payload(dir, &manifest, limits)?;
    seal(&manifest_bytes, &payload, key)
}

/// Like [`pack`], then writes the bundle to `out` atomically (a reader never sees a partial
/// file), replacing any existing file.
pub fn pack_to(
    dir: &Path,
    out: &Path,
    key: &PublisherKey,
    limits: &UnpackLimits,
) -> Result<PackedBundle, BundleError> {
    let bytes = pack(dir, key, limits)?;
    write_atomically(out, &bytes, 0o644, Replace::Yes).map_err(|source| {
        BundleError::WriteBundle {
            path: out.to_owned(),
            source,
        }
    })?;
    // Re-parsing the header we just wrote is cheaper than threading the digest out of `seal`.
    let layout = Layout::parse(&bytes)?;
    Ok(PackedBundle {
        digest: layout.header.digest,
        publisher: layout.header.publisher,
        size: bytes.len() as u64,
    })
}

fn read_manifest(dir: &Path) -> Result<Vec<u8>, BundleError> {
    let path = dir.join(MANIFEST_FILE);
    let file = File::open(&path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => BundleError::ManifestNotFound {
            dir: dir.to_owned(),
        },
        _ => BundleError::PackRead {
            path: path.clone(),
            source,
        },
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| BundleError::PackRead {
            path: path.clone(),
            source,
        })?;
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(BundleError::ManifestTooLarge {
            len: fs::metadata(&path).map_or(bytes.len() as u64, |m| m.len()),
            max: MAX_MANIFEST_LEN as u64,
        });
    }
    Ok(bytes)
}

/// Builds the gzip-compressed tar payload from `dir` and checks the manifest's entry in it.
fn build_payload(
    dir: &Path,
    manifest: &Manifest,
    limits: &UnpackLimits,
) -> Result<Vec<u8>, BundleError> {
    let gzip = GzEncoder::new(Vec::new(), Compression::default());
    let mut packer = Packer {
        root: dir,
        tar: tar::Builder::new(CountingWriter {
            inner: gzip,
            count: 0,
        }),
        tree: TreeIndex::new(limits),
        limits,
    };
    packer.add_dir(Path::new(""))?;
    packer.tree.check_symlinks()?;
    packer.tree.check_entry(manifest.entry())?;

    let finish_error = |source| BundleError::Compress { source };
    let counting = packer.tar.into_inner().map_err(finish_error)?;
    // The zero blocks that end the archive count too: the unpacker reads into them, and
    // counting them all keeps packing on the safe side of the limit.
    check_archive_size(counting.count, limits)?;
    counting.inner.finish().map_err(finish_error)
}

fn check_archive_size(count: u64, limits: &UnpackLimits) -> Result<(), BundleError> {
    if count > limits.max_unpacked_bytes {
        return Err(BundleError::TooManyBytes {
            limit: limits.max_unpacked_bytes,
        });
    }
    Ok(())
}

/// Counts the uncompressed tar bytes, which is what the unpacker's byte limit measures.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.count += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Yields exactly the length the tar header announced, failing if the file shrank meanwhile
/// (a short entry would corrupt every header after it).
struct ExactLength(Take<File>);

impl Read for ExactLength {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.0.read(buf)?;
        if read == 0 && !buf.is_empty() && self.0.limit() > 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "file shrank while it was being packed",
            ));
        }
        Ok(read)
    }
}

struct Packer<'a> {
    root: &'a Path,
    tar: tar::Builder<CountingWriter<GzEncoder<Vec<u8>>>>,
    tree: TreeIndex<'a>,
    limits: &'a UnpackLimits,
}

/// A tar header with everything but the type, mode and size normalised away.
fn header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

impl Packer<'_> {
    /// Adds the contents of the directory `rel` (relative to the root), sorted by name.
    fn add_dir(&mut self, rel: &Path) -> Result<(), BundleError> {
        let abs = self.root.join(rel);
        let io_error = |source| BundleError::PackRead {
            path: abs.clone(),
            source,
        };
        let mut names = fs::read_dir(&abs)
            .map_err(io_error)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<OsString>, _>>()
            .map_err(io_error)?;
        names.sort();
        for name in names {
            if rel.as_os_str().is_empty() && name == MANIFEST_FILE {
                continue;
            }
            self.add(&rel.join(name))?;
        }
        Ok(())
    }

    fn add(&mut self, rel: &Path) -> Result<(), BundleError> {
        let abs = self.root.join(rel);
        let io_error = |source| BundleError::PackRead {
            path: abs.clone(),
            source,
        };
        let metadata = fs::symlink_metadata(&abs).map_err(io_error)?;
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            self.tree.add(rel, Node::Directory)?;
            let mut header = header(tar::EntryType::Directory, 0o755, 0);
            self.tar
                .append_data(&mut header, rel, io::empty())
                .map_err(io_error)?;
            self.check_size()?;
            return self.add_dir(rel);
        }
        if file_type.is_file() {
            return self.add_file(rel, &abs);
        }
        if file_type.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_error)?;
            self.tree.add(
                rel,
                Node::Symlink {
                    target: target.clone(),
                },
            )?;
            let mut header = header(tar::EntryType::Symlink, 0o777, 0);
            self.tar
                .append_link(&mut header, rel, &target)
                .map_err(io_error)?;
            return self.check_size();
        }
        let path = rel.to_owned();
        Err(if file_type.is_fifo() {
            BundleError::Fifo { path }
        } else if file_type.is_socket() {
            BundleError::Socket { path }
        } else if file_type.is_char_device() {
            BundleError::DeviceFile {
                path,
                kind: DeviceKind::Character,
            }
        } else {
            BundleError::DeviceFile {
                path,
                kind: DeviceKind::Block,
            }
        })
    }

    fn add_file(&mut self, rel: &Path, abs: &Path) -> Result<(), BundleError> {
        let io_error = |source| BundleError::PackRead {
            path: abs.to_owned(),
            source,
        };
        // O_NOFOLLOW plus a second look at the opened file: if the path was swapped for a
        // symlink or a special file since `symlink_metadata`, packing fails instead of reading it.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(abs)
            .map_err(io_error)?;
        let metadata = file.metadata().map_err(io_error)?;
        if !metadata.is_file() {
            return Err(io_error(io::Error::new(
                ErrorKind::InvalidData,
                "file changed type while it was being packed",
            )));
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o6000 != 0 {
            return Err(BundleError::SetIdBit {
                path: rel.to_owned(),
                mode,
            });
        }
        let executable = mode & 0o111 != 0;
        self.tree.add(rel, Node::File { executable })?;
        let size = metadata.len();
        let mut header = header(
            tar::EntryType::Regular,
            if executable { 0o755 } else { 0o644 },
            size,
        );
        self.tar
            .append_data(&mut header, rel, ExactLength(file.take(size)))
            .map_err(io_error)?;
        self.check_size()
    }

    /// Stops as soon as the archive outgrows the limit, rather than compressing all of it first.
    fn check_size(&mut self) -> Result<(), BundleError> {
        check_archive_size(self.tar.get_ref().count, self.limits)
    }
}
