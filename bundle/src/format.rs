//! The bundle file format (see the crate documentation for the byte layout): writing with
//! [`seal`], checking with [`verify`].

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use elastos_policy::Manifest;
use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::key::{PublisherId, PublisherKey};

/// The first eight bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"ELASTOSB";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Prefix of the signed message: the signature is over `SIGNING_CONTEXT || digest`.
pub const SIGNING_CONTEXT: &[u8] = b"elastos-bundle-v1\0";
/// Largest accepted `manifest.toml`, in bytes (64 KiB).
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// Largest accepted bundle file, in bytes (1 GiB).
pub const MAX_BUNDLE_SIZE: u64 = 1 << 30;

const VERSION_RANGE: Range<usize> = 8..10;
const PUBLISHER_RANGE: Range<usize> = 10..42;
const SIGNATURE_RANGE: Range<usize> = 42..106;
const DIGEST_RANGE: Range<usize> = 106..138;
/// Length of the fixed header; everything from here to the end of the file is covered by the
/// digest.
pub(crate) const HEADER_LEN: usize = 138;

/// SHA-256 digest of a bundle's manifest and payload; its hex form names the cache directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BundleDigest(pub(crate) [u8; 32]);

impl BundleDigest {
    /// The raw SHA-256 digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn of(signed_bytes: &[u8]) -> Self {
        Self(Sha256::digest(signed_bytes).into())
    }
}

impl fmt::Display for BundleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for BundleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleDigest({self})")
    }
}

impl serde::Serialize for BundleDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The message a publisher signs for a bundle with this digest.
fn signed_message(digest: &BundleDigest) -> Vec<u8> {
    [SIGNING_CONTEXT, &digest.0].concat()
}

/// Writes a bundle around `manifest` and `payload`, signed with `key`.
///
/// This is the low-level writer: it checks only what the format itself needs (the manifest fits
/// in [`MAX_MANIFEST_LEN`], the result in [`MAX_BUNDLE_SIZE`]), not that the manifest parses or
/// that the payload is a valid archive. Use [`crate::pack`] to bundle an app directory.
pub fn seal(manifest: &[u8], payload: &[u8], key: &PublisherKey) -> Result<Vec<u8>, BundleError> {
    if manifest.len() > MAX_MANIFEST_LEN {
        return Err(BundleError::ManifestTooLarge {
            len: manifest.len() as u64,
            max: MAX_MANIFEST_LEN as u64,
        });
    }
    let total = HEADER_LEN + 4 + manifest.len() + 8 + payload.len();
    if total as u64 > MAX_BUNDLE_SIZE {
        return Err(BundleError::BundleTooLarge {
            size: total as u64,
            max: MAX_BUNDLE_SIZE,
        });
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&key.publisher_id().0);
    // Signature and digest are filled in once the bytes they cover are in place.
    out.resize(HEADER_LEN, 0);
    // Cannot truncate: the length was checked against MAX_MANIFEST_LEN above.
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);

    let digest = BundleDigest::of(&out[HEADER_LEN..]);
    let signature = key.sign(&signed_message(&digest));
    out[SIGNATURE_RANGE].copy_from_slice(&signature.to_bytes());
    out[DIGEST_RANGE].copy_from_slice(&digest.0);
    Ok(out)
}

/// The fixed-size start of a bundle (magic through digest); nothing about it is verified yet.
pub(crate) struct Header {
    pub(crate) version: u16,
    pub(crate) publisher: PublisherId,
    signature: [u8; 64],
    pub(crate) digest: BundleDigest,
}

impl Header {
    /// Checks magic, length and version, in that order. `bytes` is the whole file or at least
    /// its first [`HEADER_LEN`] bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(BundleError::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(BundleError::Truncated {
                what: "header",
                needed: HEADER_LEN as u64,
                available: bytes.len() as u64,
            });
        }
        let version = u16::from_le_bytes(bytes[VERSION_RANGE].try_into().expect("2 bytes"));
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion { found: version });
        }
        Ok(Self {
            version,
            publisher: PublisherId(bytes[PUBLISHER_RANGE].try_into().expect("32 bytes")),
            signature: bytes[SIGNATURE_RANGE].try_into().expect("64 bytes"),
            digest: BundleDigest(bytes[DIGEST_RANGE].try_into().expect("32 bytes")),
        })
    }
}

/// Where the fields of a structurally sound bundle are; nothing about it is verified yet.
pub(crate) struct Layout {
    pub(crate) header: Header,
    pub(crate) manifest: Range<usize>,
    pub(crate) payload: Range<usize>,
}

/// Reads fields front to back, turning "not enough bytes" into [`BundleError::Truncated`].
struct FieldReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl FieldReader<'_> {
    fn take(&mut self, what: &'static str, len: u64) -> Result<Range<usize>, BundleError> {
        let available = (self.bytes.len() - self.pos) as u64;
        if len > available {
            return Err(BundleError::Truncated {
                what,
                needed: len,
                available,
            });
        }
        // `len <= available`, which is a usize.
        let range = self.pos..self.pos + len as usize;
        self.pos = range.end;
        Ok(range)
    }

    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BundleError> {
        let range = self.take(what, N as u64)?;
        Ok(self.bytes[range].try_into().expect("range has length N"))
    }
}

impl Layout {
    /// Checks the [`Header`], then that the lengths add up to exactly the file size.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let header = Header::parse(bytes)?;
        let mut reader = FieldReader {
            bytes,
            pos: HEADER_LEN,
        };
        let manifest_len = u32::from_le_bytes(reader.take_array("manifest length")?);
        if manifest_len as usize > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestTooLarge {
                len: manifest_len.into(),
                max: MAX_MANIFEST_LEN as u64,
            });
        }
        let manifest = reader.take("manifest", manifest_len.into())?;
        let payload_len = u64::from_le_bytes(reader.take_array("payload length")?);
        let payload = reader.take("payload", payload_len)?;
        if reader.pos != bytes.len() {
            return Err(BundleError::TrailingBytes {
                count: (bytes.len() - reader.pos) as u64,
            });
        }
        Ok(Self {
            header,
            manifest,
            payload,
        })
    }

    /// Checks the digest, then the signature.
    pub(crate) fn integrity(&self, bytes: &[u8]) -> Integrity {
        let header = &self.header;
        let computed = BundleDigest::of(&bytes[HEADER_LEN..]);
        if computed != header.digest {
            return Integrity::DigestMismatch { computed };
        }
        let signature = Signature::from_bytes(&header.signature);
        let valid = VerifyingKey::from_bytes(&header.publisher.0).is_ok_and(|publisher| {
            publisher
                .verify_strict(&signed_message(&header.digest), &signature)
                .is_ok()
        });
        if valid {
            Integrity::Valid
        } else {
            Integrity::BadSignature
        }
    }
}

/// Outcome of [`Layout::integrity`].
pub(crate) enum Integrity {
    Valid,
    DigestMismatch { computed: BundleDigest },
    BadSignature,
}

/// Decodes and parses a manifest that is already known to be within [`MAX_MANIFEST_LEN`].
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<(&str, Manifest), BundleError> {
    let text =
        std::str::from_utf8(bytes).map_err(|source| BundleError::ManifestNotUtf8 { source })?;
    Ok((text, Manifest::from_toml(text)?))
}

/// A bundle whose digest and signature have been checked and whose manifest parses.
///
/// Only [`verify`] (and [`VerifiedBundle::open`]) can construct one, so holding a
/// `VerifiedBundle` proves the checks happened. It owns the verified bytes: what gets unpacked
/// is exactly what was verified.
pub struct VerifiedBundle {
    bytes: Vec<u8>,
    layout: Layout,
    manifest: Manifest,
}

/// Verifies a whole bundle held in memory; see the crate documentation for the order of checks.
pub fn verify(bytes: Vec<u8>) -> Result<VerifiedBundle, BundleError> {
    let layout = Layout::parse(&bytes)?;
    match layout.integrity(&bytes) {
        Integrity::Valid => {}
        Integrity::DigestMismatch { computed } => {
            return Err(BundleError::DigestMismatch {
                stored: layout.header.digest,
                computed,
            })
        }
        Integrity::BadSignature => {
            return Err(BundleError::BadSignature {
                publisher: layout.header.publisher,
            })
        }
    }
    let (_, manifest) = parse_manifest(&bytes[layout.manifest.clone()])?;
    Ok(VerifiedBundle {
        bytes,
        layout,
        manifest,
    })
}

/// Maps an I/O error on the bundle file at `path` to [`BundleError::ReadBundle`].
pub(crate) fn read_error(path: &Path) -> impl Fn(io::Error) -> BundleError + Copy + '_ {
    move |source| BundleError::ReadBundle {
        path: path.to_owned(),
        source,
    }
}

/// Reads a bundle file into memory, refusing files larger than [`MAX_BUNDLE_SIZE`].
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    let file = File::open(path).map_err(read_error(path))?;
    let size = file.metadata().map_err(read_error(path))?.len();
    read_opened_bundle(&file, size, path)
}

/// Reads the open bundle `file`, `size` bytes long when it was opened, from its current
/// position to its end; `path` is for error messages.
pub(crate) fn read_opened_bundle(
    file: &File,
    size: u64,
    path: &Path,
) -> Result<Vec<u8>, BundleError> {
    if size > MAX_BUNDLE_SIZE {
        return Err(BundleError::BundleTooLarge {
            size,
            max: MAX_BUNDLE_SIZE,
        });
    }
    // The file may grow after the size check; reading one byte past the limit detects that.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_BUNDLE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error(path))?;
    if bytes.len() as u64 > MAX_BUNDLE_SIZE {
        return Err(BundleError::BundleTooLarge {
            size: bytes.len() as u64,
            max: MAX_BUNDLE_SIZE,
        });
    }
    Ok(bytes)
}

impl VerifiedBundle {
    /// Reads the file at `path` once (see [`read_bundle_file`]) and [`verify`]s it.
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        verify(read_bundle_file(path)?)
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as signed.
    pub fn manifest_text(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.layout.manifest.clone()])
            .expect("verify checked that the manifest is UTF-8")
    }

    /// Who signed the bundle.
    pub fn publisher(&self) -> PublisherId {
        self.layout.header.publisher
    }

    /// The digest of manifest and payload; names the bundle's cache directory.
    pub fn digest(&self) -> BundleDigest {
        self.layout.header.digest
    }

    /// Size of the compressed payload, in bytes.
    pub fn payload_size(&self) -> u64 {
        self.layout.payload.len() as u64
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.layout.payload.clone()]
    }

    /// The verified header bytes, magic through digest.
    pub(crate) fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        self.bytes[..HEADER_LEN]
            .try_into()
            .expect("verify checked the header length")
    }
}

impl fmt::Debug for VerifiedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedBundle")
            .field("publisher", &self.publisher())
            .field("digest", &self.digest())
            .field("payload_size", &self.payload_size())
            .finish_non_exhaustive()
    }
}
