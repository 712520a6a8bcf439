//! The verification record: how `elastos run` skips re-reading and re-hashing a bundle file that
//! has not changed since it was verified.
//!
//! Once [`open_verified_cached`] has verified a bundle file in full and its tree is complete in
//! the cache, it writes `CACHE/<digest>/verified`: the file's identity from `fstat` of the
//! descriptor it read (device, inode, size, mtime, ctime), the verified header (magic through
//! digest) and the manifest exactly as signed. A later call reads only the header of the file,
//! fstats the same descriptor, and if the record matches both and `CACHE/<digest>/complete`
//! exists, it rebuilds the verified facts from the record without reading the rest of the file.
//!
//! Why this is sound:
//!
//! - Integrity does not rest on the identity check: on a hit no byte of the file beyond the
//!   header is used. The app runs from the cache tree that was unpacked from verified bytes, which
//!   the cache already trusts (see the crate documentation), and manifest and publisher come from
//!   the record written after that verification, in the same cache in the user's private state
//!   directory.
//! - The identity check gives freshness, i.e. a run reflects what the file holds now: any write,
//!   truncation, or rename-over or replacement of the file changes its ctime or its inode, and
//!   ctime cannot be set from user space (only by setting the system clock, which needs root).
//! - Timestamps are coarse (a clock tick; up to 2 s on FAT), so a write within the tick of the
//!   recorded ctime could leave it unchanged, and a replacement could reuse the inode number. So
//!   a record is only written for a file whose ctime was at least [`RECORD_MIN_AGE`] old when
//!   the file was opened: any later change then gets a newer ctime. (git's index has the same
//!   "racily clean" problem and the same answer.)
//!
//! Only regular files get records: a pipe's or a device's metadata says nothing about what it
//! will yield next.
//!
//! A record that cannot be read, does not parse strictly, has another version or does not match
//! is ignored: full verification runs and rewrites it. A record is never an error, and never
//! trusted in part.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elastos_policy::Manifest;
use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::format::{
    read_error, read_opened_bundle, verify, BundleDigest, Header, VerifiedBundle, HEADER_LEN,
    MAX_MANIFEST_LEN,
};
use crate::key::PublisherId;
use crate::unpack::{cache_entry, is_complete, UnpackLimits, UnpackedBundle};
use elastos_identity::fsutil::{write_atomically, Replace};

/// Name of the record inside a cache entry.
const RECORD_FILE: &str = "verified";
/// Version of the record format; a record of any other version is ignored.
const RECORD_VERSION: u32 = 1;
/// Largest record read: JSON spells a manifest byte in at most 6 bytes (`\u001f`), and the other
/// fields are well under 4 KiB.
const MAX_RECORD_LEN: u64 = 6 * MAX_MANIFEST_LEN as u64 + 4096;

/// How long before it was opened a bundle file must have last changed for a verification record
/// to be written for it: longer than the coarsest timestamp granularity of common Linux
/// filesystems (2 s on FAT) plus a clock tick, so that any later change gets a newer ctime.
pub const RECORD_MIN_AGE: Duration = Duration::from_secs(2);

/// How the facts in a [`VerifiedFacts`] were established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifiedBy {
    /// The whole file was read, and its digest and signature checked.
    Signature,
    /// The file is unchanged since a full verification, whose record supplied the facts.
    Record,
}

/// What verifying a bundle file established, without the file's bytes.
///
/// Only [`open_verified_cached`] constructs one, from a full verification or from the record a
/// full verification wrote, so holding one proves the checks happened.
#[derive(Debug)]
pub struct VerifiedFacts {
    manifest: Manifest,
    manifest_text: String,
    publisher: PublisherId,
    digest: BundleDigest,
    verified_by: VerifiedBy,
}

impl VerifiedFacts {
    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as signed.
    pub fn manifest_text(&self) -> &str {
        &self.manifest_text
    }

    /// Who signed the bundle.
    pub fn publisher(&self) -> PublisherId {
        self.publisher
    }

    /// The digest of manifest and payload; names the bundle's cache directory.
    pub fn digest(&self) -> BundleDigest {
        self.digest
    }

    /// Whether this call checked the signature or found the file unchanged since it was.
    pub fn verified_by(&self) -> VerifiedBy {
        self.verified_by
    }
}

/// Verifies the bundle file at `path` and makes its tree available in `cache_dir`, like
/// [`VerifiedBundle::open`] followed by [`VerifiedBundle::unpack_into_cache`], and returns the
/// same errors; but when the file is unchanged since an earlier call verified it, it reads only
/// the file's 138-byte header and takes the facts from the verification record
/// `cache_dir/<digest>/verified` instead of reading and hashing the rest.
///
/// "Unchanged" means that device, inode, size, mtime and ctime from `fstat` of the opened file
/// equal the recorded ones, and so does the header. This is sound because on a hit no byte of
/// the file beyond the header is used: the app runs from the cache tree unpacked from verified
/// bytes, which the cache trusts anyway. The identity check only keeps runs fresh: any write to
/// the file or replacement of it changes its ctime or inode, and ctime cannot be set without
/// root. Records are only written for files that last changed at least [`RECORD_MIN_AGE`]
/// before they were opened, so that a change within the same timestamp tick cannot go unseen.
/// A record that is unreadable, malformed, of another version or not matching is ignored (full
/// verification runs and rewrites it), never an error.
pub fn open_verified_cached(
    path: &Path,
    cache_dir: &Path,
    limits: &UnpackLimits,
) -> Result<(VerifiedFacts, UnpackedBundle), BundleError> {
    let file = File::open(path).map_err(read_error(path))?;
    // Taken before the fstat, so any change the fstat does not show happens after this instant.
    let checked_at = SystemTime::now();
    let metadata = file.metadata().map_err(read_error(path))?;
    let identity = FileIdentity::of(&metadata);
    if let Some(found) = identity
        .as_ref()
        .and_then(|identity| recorded(&file, identity, cache_dir))
    {
        return Ok(found);
    }

    let verified = verify(read_opened_bundle(&file, metadata.len(), path)?)?;
    let unpacked = verified.unpack_into_cache(cache_dir, limits)?;
    if let Some(identity) = identity.filter(|identity| identity.settled_before(checked_at)) {
        // Best effort: without a record the next call verifies in full, as it would anyway.
        let _ = write_record(cache_dir, identity, &verified);
    }
    let facts = VerifiedFacts {
        manifest: verified.manifest().clone(),
        manifest_text: verified.manifest_text().to_owned(),
        publisher: verified.publisher(),
        digest: verified.digest(),
        verified_by: VerifiedBy::Signature,
    };
    Ok((facts, unpacked))
}

/// The facts and tree recorded for `file`, if a record matches it; `None` means "verify in full".
fn recorded(
    file: &File,
    identity: &FileIdentity,
    cache_dir: &Path,
) -> Option<(VerifiedFacts, UnpackedBundle)> {
    let mut header_bytes = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header_bytes, 0).ok()?;
    let header = Header::parse(&header_bytes).ok()?;
    let entry = cache_entry(cache_dir, header.digest);
    let record = Record::read(&entry.join(RECORD_FILE))?;
    let matches = record.version == RECORD_VERSION
        && record.file == *identity
        && record.header == hex::encode(header_bytes);
    if !matches || !matches!(is_complete(&entry), Ok(true)) {
        return None;
    }
    // Parsed again rather than trusted: a newer elastos may have stricter manifest rules.
    let manifest = Manifest::from_toml(&record.manifest).ok()?;
    let facts = VerifiedFacts {
        manifest,
        manifest_text: record.manifest,
        publisher: header.publisher,
        digest: header.digest,
        verified_by: VerifiedBy::Record,
    };
    Some((facts, UnpackedBundle::in_cache(&entry, false)))
}

fn write_record(cache_dir: &Path, file: FileIdentity, verified: &VerifiedBundle) -> io::Result<()> {
    let record = Record {
        version: RECORD_VERSION,
        file,
        header: hex::encode(verified.header_bytes()),
        manifest: verified.manifest_text().to_owned(),
    };
    let path = cache_entry(cache_dir, verified.digest()).join(RECORD_FILE);
    write_atomically(&path, &serde_json::to_vec(&record)?, 0o644, Replace::Yes)
}

/// The contents of `CACHE/<digest>/verified`, as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// [`RECORD_VERSION`].
    version: u32,
    /// The bundle file that was verified.
    file: FileIdentity,
    /// The verified header, magic through digest, in lowercase hex.
    header: String,
    /// The verified manifest, exactly as signed.
    manifest: String,
}

impl Record {
    /// The record at `path`, if it exists and parses.
    fn read(path: &Path) -> Option<Self> {
        let mut bytes = Vec::new();
        File::open(path)
            .ok()?
            .take(MAX_RECORD_LEN + 1)
            .read_to_end(&mut bytes)
            .ok()?;
        if bytes.len() as u64 > MAX_RECORD_LEN {
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }
}

/// What `fstat` says about a bundle file that changes whenever its contents do.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
    ctime_sec: i64,
    ctime_nsec: i64,
}

impl FileIdentity {
    /// The identity of a regular file; other files (a pipe, a device) have none worth recording,
    /// as their contents are not tied to their metadata.
    fn of(metadata: &Metadata) -> Option<Self> {
        metadata.is_file().then(|| Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_sec: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
            ctime_sec: metadata.ctime(),
            ctime_nsec: metadata.ctime_nsec(),
        })
    }

    /// Whether the file last changed at least [`RECORD_MIN_AGE`] before `instant`. A ctime that
    /// cannot be compared (before 1970, or out of range) counts as not settled.
    fn settled_before(&self, instant: SystemTime) -> bool {
        let (Ok(sec), Ok(nsec)) = (
            u64::try_from(self.ctime_sec),
            u32::try_from(self.ctime_nsec),
        ) else {
            return false;
        };
        Duration::from_secs(sec)
            .checked_add(Duration::from_nanos(nsec.into()))
            .and_then(|since_epoch| UNIX_EPOCH.checked_add(since_epoch))
            .and_then(|changed| instant.duration_since(changed).ok())
            .is_some_and(|age| age >= RECORD_MIN_AGE)
    }
}
