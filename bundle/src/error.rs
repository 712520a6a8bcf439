//! The one error type of this crate.
//!
//! Paths that come from an archive or a bundle directory are printed with `{:?}` so that a hostile
//! name cannot inject terminal escape sequences into an error message.

use std::io;
use std::path::PathBuf;

use crate::format::BundleDigest;
use crate::key::PublisherId;

/// Everything that can go wrong while handling keys and bundles.
///
/// Each failure has its own variant so callers (and tests) can tell them apart; the CLI maps
/// [`BundleError::EntryMissing`] to exit code 127 and [`BundleError::EntryNotExecutable`] to 126.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    // ---- reading and writing bundle files -------------------------------------------------
    /// The bundle file could not be read.
    #[error("cannot read bundle {}: {source}", path.display())]
    ReadBundle {
        /// The bundle file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The bundle file could not be written.
    #[error("cannot write bundle {}: {source}", path.display())]
    WriteBundle {
        /// The output file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The bundle is bigger than [`crate::MAX_BUNDLE_SIZE`].
    #[error(
        "bundle is too large: {size} bytes, the limit is {max} bytes; \
         hint: ship large data outside the bundle"
    )]
    BundleTooLarge {
        /// Size of the bundle (or of the file being read), in bytes.
        size: u64,
        /// The limit, in bytes.
        max: u64,
    },

    // ---- structure of a bundle ------------------------------------------------------------
    /// The file does not start with [`crate::MAGIC`].
    #[error(
        "not an elastos bundle: the file does not start with \"ELASTOSB\"; \
         hint: bundles are written by `elastos bundle pack`"
    )]
    BadMagic,
    /// The file ends before a field it announces.
    #[error(
        "bundle is truncated: the {what} needs {needed} bytes but only {available} remain; \
         hint: the file was cut short (an interrupted copy or download?), fetch it again"
    )]
    Truncated {
        /// The field that did not fit (`"header"`, `"manifest"`, ...).
        what: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The format version is not one this build understands.
    #[error(
        "unsupported bundle format version {found}, expected {}; \
         hint: the bundle was written by a newer elastos, upgrade to run it",
        crate::FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The version found in the file.
        found: u16,
    },
    /// The manifest is longer than [`crate::MAX_MANIFEST_LEN`].
    #[error("manifest is {len} bytes, the limit is {max} bytes; hint: keep manifest.toml short")]
    ManifestTooLarge {
        /// Length of the manifest, in bytes.
        len: u64,
        /// The limit, in bytes.
        max: u64,
    },
    /// Bytes follow the payload.
    #[error(
        "bundle has {count} unexpected bytes after the payload; \
         hint: the file was modified after packing, fetch it again"
    )]
    TrailingBytes {
        /// How many bytes follow the payload.
        count: u64,
    },
    /// The stored digest does not match the bundle contents.
    #[error(
        "bundle is corrupt or was tampered with: its contents hash to {computed}, \
         but the signed digest is {stored}; hint: do not run it, fetch it again from its publisher"
    )]
    DigestMismatch {
        /// The digest written in the bundle header.
        stored: BundleDigest,
        /// The digest of the bytes actually present.
        computed: BundleDigest,
    },
    /// The signature does not verify under the bundle's publisher key.
    #[error(
        "bundle signature is not valid for publisher {publisher}; \
         hint: the bundle was re-signed or tampered with, do not run it"
    )]
    BadSignature {
        /// The publisher the bundle claims.
        publisher: PublisherId,
    },
    /// The manifest is not UTF-8.
    #[error("manifest is not valid UTF-8: {source}; hint: save manifest.toml as UTF-8")]
    ManifestNotUtf8 {
        /// Where decoding failed.
        source: std::str::Utf8Error,
    },
    /// The manifest does not parse or is invalid.
    #[error("invalid manifest.toml: {source}")]
    Manifest {
        /// The manifest parser's error.
        #[from]
        source: elastos_policy::ManifestError,
    },

    // ---- publisher keys --------------------------------------------------------------------
    /// There is no key file at the expected path.
    #[error("no publisher key at {}; hint: run `elastos key generate`", path.display())]
    KeyNotFound {
        /// The key file that does not exist.
        path: PathBuf,
    },
    /// A key file could not be read or written.
    #[error("cannot access publisher key {}: {source}", path.display())]
    KeyIo {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// Saving a key would replace an existing one.
    #[error(
        "a publisher key already exists at {}; hint: replacing it changes your publisher ID, \
         pass --force if you really mean to",
        path.display()
    )]
    KeyExists {
        /// The existing key file.
        path: PathBuf,
    },
    /// A key file is not in the `elastos-publisher-key-v1 <hex seed>` format.
    #[error(
        "publisher key {} is malformed: {reason}; expected one line \
         `elastos-publisher-key-v1 <64 hex digits>`",
        path.display()
    )]
    KeyMalformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key file is readable or writable by other users.
    #[error(
        "publisher key {} has mode {mode:04o}, which lets other users read it; \
         hint: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissionsTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system's random number generator failed.
    #[error("cannot get random bytes from the operating system: {source}")]
    Random {
        /// The getrandom error.
        source: getrandom::Error,
    },

    // ---- packing ---------------------------------------------------------------------------
    /// The app directory has no `manifest.toml`.
    #[error("no manifest.toml in {}; hint: an app directory needs a manifest.toml", dir.display())]
    ManifestNotFound {
        /// The app directory.
        dir: PathBuf,
    },
    /// A file of the app directory could not be read.
    #[error("cannot read {} while packing: {source}", path.display())]
    PackIo {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The app directory holds a Unix socket.
    #[error(
        "refusing to pack socket {path:?}; hint: bundles hold only files, directories and symlinks"
    )]
    Socket {
        /// The socket, relative to the app directory.
        path: PathBuf,
    },

    // ---- rules shared by packing and unpacking ----------------------------------------------
    /// A FIFO (named pipe).
    #[error("refusing FIFO {path:?}; hint: bundles hold only files, directories and symlinks")]
    Fifo {
        /// The entry path.
        path: PathBuf,
    },
    /// A character or block device node.
    #[error("refusing {kind} {path:?}; hint: bundles hold only files, directories and symlinks")]
    DeviceFile {
        /// The entry path.
        path: PathBuf,
        /// Which kind of device.
        kind: DeviceKind,
    },
    /// A file with the setuid or setgid bit.
    #[error(
        "refusing {path:?} with mode {mode:04o}: setuid and setgid bits are not allowed in bundles"
    )]
    SetIdBit {
        /// The entry path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A symlink with an absolute target.
    #[error(
        "refusing symlink {path:?} -> {target:?}: the target is absolute; \
         expected a relative target inside the bundle"
    )]
    SymlinkAbsolute {
        /// The symlink.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// A symlink whose target resolves outside the bundle.
    #[error(
        "refusing symlink {path:?} -> {target:?}: the target resolves outside the bundle; \
         expected a target inside the bundle"
    )]
    SymlinkEscapes {
        /// The symlink.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// An entry lies below a symlink of the same archive.
    #[error("refusing {path:?}: it lies below the symlink {symlink:?}; entries must be reached without symlinks")]
    ThroughSymlink {
        /// The entry path.
        path: PathBuf,
        /// The symlink it would be written through.
        symlink: PathBuf,
    },
    /// An entry whose parent directory is not an earlier entry.
    #[error(
        "refusing {path:?}: its parent directory is not an earlier entry of the archive; \
         expected every directory before its contents"
    )]
    ParentNotDirectory {
        /// The entry path.
        path: PathBuf,
    },
    /// Two entries with the same path.
    #[error("refusing duplicate entry {path:?}; each path may appear once")]
    DuplicateEntry {
        /// The entry path.
        path: PathBuf,
    },
    /// More entries than [`UnpackLimits::max_entries`](crate::UnpackLimits::max_entries).
    #[error(
        "refusing archive with more than {limit} entries; \
         hint: the limit guards against archive bombs, bundle fewer files"
    )]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// More decompressed bytes than
    /// [`UnpackLimits::max_unpacked_bytes`](crate::UnpackLimits::max_unpacked_bytes).
    #[error(
        "refusing archive larger than {limit} bytes once decompressed; \
         hint: the limit guards against archive bombs, ship large data outside the bundle"
    )]
    TooManyBytes {
        /// The limit, in bytes.
        limit: u64,
    },
    /// An entry path longer than
    /// [`UnpackLimits::max_path_bytes`](crate::UnpackLimits::max_path_bytes).
    #[error("refusing entry path of {len} bytes, the limit is {max}: {path:?}")]
    PathTooLong {
        /// The entry path.
        path: PathBuf,
        /// Its length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The manifest's entry is not in the bundle.
    #[error(
        "the entry {entry:?} named in manifest.toml is not in the bundle; \
         hint: check `app.entry` and that the file is in the app directory"
    )]
    EntryMissing {
        /// The entry path from the manifest.
        entry: PathBuf,
    },
    /// The manifest's entry is not an executable regular file.
    #[error(
        "the entry {entry:?} named in manifest.toml is {found}; expected an executable \
         regular file; hint: point `app.entry` at the program itself and `chmod +x` it"
    )]
    EntryNotExecutable {
        /// The entry path from the manifest.
        entry: PathBuf,
        /// What was found instead.
        found: EntryKind,
    },

    // ---- unpacking -----------------------------------------------------------------------
    /// An entry path with a `..` component.
    #[error("refusing entry {path:?}: `..` components could escape the bundle")]
    PathTraversal {
        /// The raw entry path.
        path: PathBuf,
    },
    /// An absolute entry path.
    #[error("refusing absolute entry path {path:?}; expected paths relative to the bundle")]
    AbsolutePath {
        /// The raw entry path.
        path: PathBuf,
    },
    /// An entry that names the bundle root itself (`.` or empty).
    #[error("refusing entry {path:?}: it names the bundle root itself")]
    RootEntry {
        /// The raw entry path.
        path: PathBuf,
    },
    /// A hard link entry.
    #[error("refusing hard link {path:?} -> {target:?}; bundles may not contain hard links")]
    HardLink {
        /// The link.
        path: PathBuf,
        /// What it links to.
        target: PathBuf,
    },
    /// A tar entry type other than file, directory, symlink, hard link, device or FIFO.
    #[error("refusing entry {path:?} of unsupported tar type {type_byte:#04x}")]
    UnsupportedEntryType {
        /// The entry path.
        path: PathBuf,
        /// The tar type flag byte.
        type_byte: u8,
    },
    /// The payload is not a well-formed gzip-compressed tar stream.
    #[error("bundle payload is not a valid gzip-compressed tar archive: {source}")]
    Archive {
        /// The decoding error.
        source: io::Error,
    },
    /// The bundle cache could not be written or read.
    #[error("cannot unpack into the bundle cache at {}: {source}", path.display())]
    Cache {
        /// The cache path involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A cache directory for this digest exists but was not completed by elastos.
    #[error(
        "the bundle cache directory {} exists but is incomplete; \
         hint: remove it and run again",
        path.display()
    )]
    CacheEntryIncomplete {
        /// The cache directory.
        path: PathBuf,
    },
}

/// Which kind of device node an entry was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device.
    Character,
    /// A block device.
    Block,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Character => "character device",
            Self::Block => "block device",
        })
    }
}

/// What the manifest's entry turned out to be when it is not an executable regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A symlink (the entry must be the file itself).
    Symlink,
    /// A regular file without any execute bit.
    NonExecutableFile,
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Directory => "a directory",
            Self::Symlink => "a symlink",
            Self::NonExecutableFile => "a file without execute permission",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;

    use super::*;

    fn io_error() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    /// One value of every variant.
    fn every_variant() -> Vec<BundleError> {
        let path = || PathBuf::from("some/path");
        let digest = BundleDigest([0xab; 32]);
        vec![
            BundleError::ReadBundle {
                path: path(),
                source: io_error(),
            },
            BundleError::WriteBundle {
                path: path(),
                source: io_error(),
            },
            BundleError::BundleTooLarge {
                size: 2 << 30,
                max: 1 << 30,
            },
            BundleError::BadMagic,
            BundleError::Truncated {
                what: "manifest",
                needed: 10,
                available: 3,
            },
            BundleError::UnsupportedVersion { found: 9 },
            BundleError::ManifestTooLarge {
                len: 70_000,
                max: 65_536,
            },
            BundleError::TrailingBytes { count: 4 },
            BundleError::DigestMismatch {
                stored: digest,
                computed: BundleDigest([0xcd; 32]),
            },
            BundleError::BadSignature {
                publisher: PublisherId([7; 32]),
            },
            BundleError::ManifestNotUtf8 {
                source: std::str::from_utf8(&[0xff_u8][..]).unwrap_err(),
            },
            BundleError::from(elastos_policy::Manifest::from_toml("[app").unwrap_err()),
            BundleError::KeyNotFound { path: path() },
            BundleError::KeyIo {
                path: path(),
                source: io_error(),
            },
            BundleError::KeyExists { path: path() },
            BundleError::KeyMalformed {
                path: path(),
                reason: "the seed is not 64 hex digits",
            },
            BundleError::KeyPermissionsTooOpen {
                path: path(),
                mode: 0o644,
            },
            BundleError::Random {
                source: getrandom::Error::UNSUPPORTED,
            },
            BundleError::ManifestNotFound { dir: path() },
            BundleError::PackIo {
                path: path(),
                source: io_error(),
            },
            BundleError::Socket { path: path() },
            BundleError::Fifo { path: path() },
            BundleError::DeviceFile {
                path: path(),
                kind: DeviceKind::Block,
            },
            BundleError::SetIdBit {
                path: path(),
                mode: 0o4755,
            },
            BundleError::SymlinkAbsolute {
                path: path(),
                target: PathBuf::from("/etc"),
            },
            BundleError::SymlinkEscapes {
                path: path(),
                target: PathBuf::from(".."),
            },
            BundleError::ThroughSymlink {
                path: path(),
                symlink: PathBuf::from("some"),
            },
            BundleError::ParentNotDirectory { path: path() },
            BundleError::DuplicateEntry { path: path() },
            BundleError::TooManyEntries { limit: 100_000 },
            BundleError::TooManyBytes { limit: 1 << 30 },
            BundleError::PathTooLong {
                path: path(),
                len: 3000,
                max: 2048,
            },
            BundleError::EntryMissing { entry: path() },
            BundleError::EntryNotExecutable {
                entry: path(),
                found: EntryKind::Directory,
            },
            BundleError::PathTraversal { path: path() },
            BundleError::AbsolutePath { path: path() },
            BundleError::RootEntry {
                path: PathBuf::from("."),
            },
            BundleError::HardLink {
                path: path(),
                target: PathBuf::from("other"),
            },
            BundleError::UnsupportedEntryType {
                path: path(),
                type_byte: b'7',
            },
            BundleError::Archive { source: io_error() },
            BundleError::Cache {
                path: path(),
                source: io_error(),
            },
            BundleError::CacheEntryIncomplete { path: path() },
        ]
    }

    /// Exhaustive on purpose: a new variant does not compile until it is added here and to
    /// `every_variant`.
    fn variant_index(error: &BundleError) -> usize {
        use BundleError::*;
        match error {
            ReadBundle { .. } => 0,
            WriteBundle { .. } => 1,
            BundleTooLarge { .. } => 2,
            BadMagic => 3,
            Truncated { .. } => 4,
            UnsupportedVersion { .. } => 5,
            ManifestTooLarge { .. } => 6,
            TrailingBytes { .. } => 7,
            DigestMismatch { .. } => 8,
            BadSignature { .. } => 9,
            ManifestNotUtf8 { .. } => 10,
            Manifest { .. } => 11,
            KeyNotFound { .. } => 12,
            KeyIo { .. } => 13,
            KeyExists { .. } => 14,
            KeyMalformed { .. } => 15,
            KeyPermissionsTooOpen { .. } => 16,
            Random { .. } => 17,
            ManifestNotFound { .. } => 18,
            PackIo { .. } => 19,
            Socket { .. } => 20,
            Fifo { .. } => 21,
            DeviceFile { .. } => 22,
            SetIdBit { .. } => 23,
            SymlinkAbsolute { .. } => 24,
            SymlinkEscapes { .. } => 25,
            ThroughSymlink { .. } => 26,
            ParentNotDirectory { .. } => 27,
            DuplicateEntry { .. } => 28,
            TooManyEntries { .. } => 29,
            TooManyBytes { .. } => 30,
            PathTooLong { .. } => 31,
            EntryMissing { .. } => 32,
            EntryNotExecutable { .. } => 33,
            PathTraversal { .. } => 34,
            AbsolutePath { .. } => 35,
            RootEntry { .. } => 36,
            HardLink { .. } => 37,
            UnsupportedEntryType { .. } => 38,
            Archive { .. } => 39,
            Cache { .. } => 40,
            CacheEntryIncomplete { .. } => 41,
        }
    }
    const VARIANT_COUNT: usize = 42;

    #[test]
    fn every_variant_formats_as_a_lowercase_sentence() {
        let errors = every_variant();
        let covered: HashSet<usize> = errors.iter().map(variant_index).collect();
        assert_eq!(
            covered.len(),
            VARIANT_COUNT,
            "every_variant misses a variant"
        );
        for error in &errors {
            let message = error.to_string();
            println!("{message}");
            let first = message.chars().next().unwrap();
            assert!(!first.is_uppercase(), "starts uppercase: {message}");
            assert!(!message.ends_with('.'), "ends with a period: {message}");
        }
    }

    #[test]
    fn hostile_names_are_quoted_in_messages() {
        let error = BundleError::PathTraversal {
            path: Path::new("../\x1b[2Jgone").to_owned(),
        };
        assert!(!error.to_string().contains('\x1b'), "{error}");
    }
}
