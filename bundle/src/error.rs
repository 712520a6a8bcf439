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
    #[error("cannot read bundle {}", path.display())]
    ReadBundle {
        /// The bundle file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The bundle file could not be written.
    #[error("cannot write bundle {}", path.display())]
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
    #[error("manifest is not valid UTF-8; hint: save manifest.toml as UTF-8")]
    ManifestNotUtf8 {
        /// Where decoding failed.
        source: std::str::Utf8Error,
    },
    /// The manifest does not parse or is invalid.
    #[error("invalid manifest.toml")]
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
    /// A key file exists but could not be read.
    #[error(
        "cannot read publisher key {}; hint: the key must be readable by the user who signs",
        path.display()
    )]
    KeyRead {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A key file (or its parent directory) could not be written.
    #[error(
        "cannot write publisher key {}; hint: choose a path in a directory you can write to",
        path.display()
    )]
    KeyWrite {
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
    /// The operating system's random number generator failed (for a new key, or for the name
    /// of a cache staging directory).
    #[error("cannot get random bytes from the operating system")]
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
    #[error("cannot read {} while packing", path.display())]
    PackRead {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The tar and gzip encoders failed to finish the payload in memory.
    #[error("cannot compress the bundle payload")]
    Compress {
        /// The encoder's error.
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
    #[error("bundle payload is not a valid gzip-compressed tar archive")]
    Archive {
        /// The decoding error.
        source: io::Error,
    },
    /// Whether the bundle is already in the cache could not be checked.
    #[error("cannot check the bundle cache entry {}", path.display())]
    CacheCheck {
        /// The cache path involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The bundle could not be unpacked into the cache.
    #[error("cannot unpack into the bundle cache at {}", path.display())]
    CacheWrite {
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

impl BundleError {
    /// The message followed by those of its sources, joined with ": " as the CLI prints an
    /// error: for a report that keeps the error as text. The message alone leaves the cause out.
    pub fn with_sources(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            text.push_str(": ");
            text.push_str(&error.to_string());
            source = error.source();
        }
        text
    }
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

    /// One value of every variant, with its message.
    fn every_variant() -> Vec<(BundleError, &'static str)> {
        let path = || PathBuf::from("some/path");
        let digest = BundleDigest([0xab; 32]);
        vec![
            (
                BundleError::ReadBundle {
                    path: path(),
                    source: io_error(),
                },
                "cannot read bundle some/path",
            ),
            (
                BundleError::WriteBundle {
                    path: path(),
                    source: io_error(),
                },
                "cannot write bundle some/path",
            ),
            (
                BundleError::BundleTooLarge {
                    size: 2 << 30,
                    max: 1 << 30,
                },
                "bundle is too large: 2147483648 bytes, the limit is 1073741824 bytes; hint: ship large data outside the bundle",
            ),
            (
                BundleError::BadMagic,
                "not an elastos bundle: the file does not start with \"ELASTOSB\"; hint: bundles are written by `elastos bundle pack`",
            ),
            (
                BundleError::Truncated {
                    what: "manifest",
                    needed: 10,
                    available: 3,
                },
                "bundle is truncated: the manifest needs 10 bytes but only 3 remain; hint: the file was cut short (an interrupted copy or download?), fetch it again",
            ),
            (
                BundleError::UnsupportedVersion { found: 9 },
                "unsupported bundle format version 9, expected 1; hint: the bundle was written by a newer elastos, upgrade to run it",
            ),
            (
                BundleError::ManifestTooLarge {
                    len: 70_000,
                    max: 65_536,
                },
                "manifest is 70000 bytes, the limit is 65536 bytes; hint: keep manifest.toml short",
            ),
            (
                BundleError::TrailingBytes { count: 4 },
                "bundle has 4 unexpected bytes after the payload; hint: the file was modified after packing, fetch it again",
            ),
            (
                BundleError::DigestMismatch {
                    stored: digest,
                    computed: BundleDigest([0xcd; 32]),
                },
                "bundle is corrupt or was tampered with: its contents hash to cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd, but the signed digest is abababababababababababababababababababababababababababababababab; hint: do not run it, fetch it again from its publisher",
            ),
            (
                BundleError::BadSignature {
                    publisher: PublisherId([7; 32]),
                },
                "bundle signature is not valid for publisher 0707070707070707070707070707070707070707070707070707070707070707; hint: the bundle was re-signed or tampered with, do not run it",
            ),
            (
                BundleError::ManifestNotUtf8 {
                    source: std::str::from_utf8(&[0xff_u8][..]).unwrap_err(),
                },
                "manifest is not valid UTF-8; hint: save manifest.toml as UTF-8",
            ),
            (
                BundleError::from(elastos_policy::Manifest::from_toml("[app").unwrap_err()),
                "invalid manifest.toml",
            ),
            (
                BundleError::KeyNotFound { path: path() },
                "no publisher key at some/path; hint: run `elastos key generate`",
            ),
            (
                BundleError::KeyRead {
                    path: path(),
                    source: io_error(),
                },
                "cannot read publisher key some/path; hint: the key must be readable by the user who signs",
            ),
            (
                BundleError::KeyWrite {
                    path: path(),
                    source: io_error(),
                },
                "cannot write publisher key some/path; hint: choose a path in a directory you can write to",
            ),
            (
                BundleError::KeyExists { path: path() },
                "a publisher key already exists at some/path; hint: replacing it changes your publisher ID, pass --force if you really mean to",
            ),
            (
                BundleError::KeyMalformed {
                    path: path(),
                    reason: "the seed is not 64 hex digits",
                },
                "publisher key some/path is malformed: the seed is not 64 hex digits; expected one line `elastos-publisher-key-v1 <64 hex digits>`",
            ),
            (
                BundleError::KeyPermissionsTooOpen {
                    path: path(),
                    mode: 0o644,
                },
                "publisher key some/path has mode 0644, which lets other users read it; hint: run `chmod 600 some/path`",
            ),
            (
                BundleError::Random {
                    source: getrandom::Error::UNSUPPORTED,
                },
                "cannot get random bytes from the operating system",
            ),
            (
                BundleError::ManifestNotFound { dir: path() },
                "no manifest.toml in some/path; hint: an app directory needs a manifest.toml",
            ),
            (
                BundleError::PackRead {
                    path: path(),
                    source: io_error(),
                },
                "cannot read some/path while packing",
            ),
            (
                BundleError::Compress { source: io_error() },
                "cannot compress the bundle payload",
            ),
            (
                BundleError::Socket { path: path() },
                "refusing to pack socket \"some/path\"; hint: bundles hold only files, directories and symlinks",
            ),
            (
                BundleError::Fifo { path: path() },
                "refusing FIFO \"some/path\"; hint: bundles hold only files, directories and symlinks",
            ),
            (
                BundleError::DeviceFile {
                    path: path(),
                    kind: DeviceKind::Block,
                },
                "refusing block device \"some/path\"; hint: bundles hold only files, directories and symlinks",
            ),
            (
                BundleError::SetIdBit {
                    path: path(),
                    mode: 0o4755,
                },
                "refusing \"some/path\" with mode 4755: setuid and setgid bits are not allowed in bundles",
            ),
            (
                BundleError::SymlinkAbsolute {
                    path: path(),
                    target: PathBuf::from("/etc"),
                },
                "refusing symlink \"some/path\" -> \"/etc\": the target is absolute; expected a relative target inside the bundle",
            ),
            (
                BundleError::SymlinkEscapes {
                    path: path(),
                    target: PathBuf::from(".."),
                },
                "refusing symlink \"some/path\" -> \"..\": the target resolves outside the bundle; expected a target inside the bundle",
            ),
            (
                BundleError::ThroughSymlink {
                    path: path(),
                    symlink: PathBuf::from("some"),
                },
                "refusing \"some/path\": it lies below the symlink \"some\"; entries must be reached without symlinks",
            ),
            (
                BundleError::ParentNotDirectory { path: path() },
                "refusing \"some/path\": its parent directory is not an earlier entry of the archive; expected every directory before its contents",
            ),
            (
                BundleError::DuplicateEntry { path: path() },
                "refusing duplicate entry \"some/path\"; each path may appear once",
            ),
            (
                BundleError::TooManyEntries { limit: 100_000 },
                "refusing archive with more than 100000 entries; hint: the limit guards against archive bombs, bundle fewer files",
            ),
            (
                BundleError::TooManyBytes { limit: 1 << 30 },
                "refusing archive larger than 1073741824 bytes once decompressed; hint: the limit guards against archive bombs, ship large data outside the bundle",
            ),
            (
                BundleError::PathTooLong {
                    path: path(),
                    len: 3000,
                    max: 2048,
                },
                "refusing entry path of 3000 bytes, the limit is 2048: \"some/path\"",
            ),
            (
                BundleError::EntryMissing { entry: path() },
                "the entry \"some/path\" named in manifest.toml is not in the bundle; hint: check `app.entry` and that the file is in the app directory",
            ),
            (
                BundleError::EntryNotExecutable {
                    entry: path(),
                    found: EntryKind::Directory,
                },
                "the entry \"some/path\" named in manifest.toml is a directory; expected an executable regular file; hint: point `app.entry` at the program itself and `chmod +x` it",
            ),
            (
                BundleError::PathTraversal { path: path() },
                "refusing entry \"some/path\": `..` components could escape the bundle",
            ),
            (
                BundleError::AbsolutePath { path: path() },
                "refusing absolute entry path \"some/path\"; expected paths relative to the bundle",
            ),
            (
                BundleError::RootEntry {
                    path: PathBuf::from("."),
                },
                "refusing entry \".\": it names the bundle root itself",
            ),
            (
                BundleError::HardLink {
                    path: path(),
                    target: PathBuf::from("other"),
                },
                "refusing hard link \"some/path\" -> \"other\"; bundles may not contain hard links",
            ),
            (
                BundleError::UnsupportedEntryType {
                    path: path(),
                    type_byte: b'7',
                },
                "refusing entry \"some/path\" of unsupported tar type 0x37",
            ),
            (
                BundleError::Archive { source: io_error() },
                "bundle payload is not a valid gzip-compressed tar archive",
            ),
            (
                BundleError::CacheCheck {
                    path: path(),
                    source: io_error(),
                },
                "cannot check the bundle cache entry some/path",
            ),
            (
                BundleError::CacheWrite {
                    path: path(),
                    source: io_error(),
                },
                "cannot unpack into the bundle cache at some/path",
            ),
            (
                BundleError::CacheEntryIncomplete { path: path() },
                "the bundle cache directory some/path exists but is incomplete; hint: remove it and run again",
            ),
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
            KeyRead { .. } => 13,
            KeyWrite { .. } => 14,
            KeyExists { .. } => 15,
            KeyMalformed { .. } => 16,
            KeyPermissionsTooOpen { .. } => 17,
            Random { .. } => 18,
            ManifestNotFound { .. } => 19,
            PackRead { .. } => 20,
            Compress { .. } => 21,
            Socket { .. } => 22,
            Fifo { .. } => 23,
            DeviceFile { .. } => 24,
            SetIdBit { .. } => 25,
            SymlinkAbsolute { .. } => 26,
            SymlinkEscapes { .. } => 27,
            ThroughSymlink { .. } => 28,
            ParentNotDirectory { .. } => 29,
            DuplicateEntry { .. } => 30,
            TooManyEntries { .. } => 31,
            TooManyBytes { .. } => 32,
            PathTooLong { .. } => 33,
            EntryMissing { .. } => 34,
            EntryNotExecutable { .. } => 35,
            PathTraversal { .. } => 36,
            AbsolutePath { .. } => 37,
            RootEntry { .. } => 38,
            HardLink { .. } => 39,
            UnsupportedEntryType { .. } => 40,
            Archive { .. } => 41,
            CacheCheck { .. } => 42,
            CacheWrite { .. } => 43,
            CacheEntryIncomplete { .. } => 44,
        }
    }
    const VARIANT_COUNT: usize = 45;

    #[test]
    fn every_variant_formats_as_a_lowercase_sentence() {
        let errors = every_variant();
        let covered: HashSet<usize> = errors
            .iter()
            .map(|(error, _)| variant_index(error))
            .collect();
        assert_eq!(
            covered.len(),
            VARIANT_COUNT,
            "every_variant misses a variant"
        );
        for (error, expected) in &errors {
            let message = error.to_string();
            assert_eq!(&message, expected);
            let first = message.chars().next().unwrap();
            assert!(!first.is_uppercase(), "starts uppercase: {message}");
            assert!(!message.ends_with('.'), "ends with a period: {message}");
        }
    }

    /// The CLI prints `error: source: source...`; a message that also quoted its source would
    /// print the cause twice.
    #[test]
    fn no_message_repeats_its_source() {
        for (error, _) in every_variant() {
            let message = error.to_string();
            if let Some(source) = std::error::Error::source(&error) {
                let cause = source.to_string();
                assert!(!message.contains(&cause), "{message:?} repeats {cause:?}");
                assert_eq!(error.with_sources(), format!("{message}: {cause}"));
            }
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
