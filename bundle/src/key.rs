//! Publisher keys: Ed25519 signing keys stored as one line of text, and the public IDs derived
//! from them.

use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::error::BundleError;
use crate::fsutil::{write_atomically, Replace};

/// First word of a key file; the version lets the format change without guessing.
const KEY_FILE_TAG: &str = "elastos-publisher-key-v1";
/// A key file is one short line; anything much longer is not a key file.
const MAX_KEY_FILE_LEN: u64 = 256;

/// A publisher's Ed25519 public key: who signed a bundle. Displays as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublisherId(pub(crate) [u8; 32]);

impl PublisherId {
    /// The raw Ed25519 public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublisherId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublisherId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublisherId({self})")
    }
}

impl serde::Serialize for PublisherId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A publisher's secret signing key.
///
/// Stored on disk as one line, `elastos-publisher-key-v1 <hex seed>`, in a file only its owner
/// can read. `Debug` shows the public ID only.
pub struct PublisherKey {
    signing: SigningKey,
}

impl PublisherKey {
    /// Creates a new key from 32 bytes of operating-system randomness.
    pub fn generate() -> Result<Self, BundleError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|source| BundleError::Random { source })?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads a key file written by [`PublisherKey::save`].
    ///
    /// Refuses files that other users can access, like ssh does, because anyone who can read
    /// the key can publish bundles in its owner's name.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let io_error = |source: std::io::Error| match source.kind() {
            ErrorKind::NotFound => BundleError::KeyNotFound {
                path: path.to_owned(),
            },
            _ => BundleError::KeyRead {
                path: path.to_owned(),
                source,
            },
        };
        let file = File::open(path).map_err(io_error)?;
        let mode = file.metadata().map_err(io_error)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(BundleError::KeyPermissionsTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE_LEN)
            .read_to_string(&mut text)
            .map_err(io_error)?;
        let malformed = |reason| BundleError::KeyMalformed {
            path: path.to_owned(),
            reason,
        };
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let seed_hex = line
            .strip_prefix(KEY_FILE_TAG)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| malformed("it does not start with `elastos-publisher-key-v1 `"))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(seed_hex, &mut seed)
            .map_err(|_| malformed("the seed is not 64 hex digits"))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key to `path` with mode 0600, creating missing parent directories with mode
    /// 0700. Refuses to replace an existing key unless `overwrite` is true, because replacing a
    /// key changes the publisher ID. The file appears atomically, complete or not at all.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), BundleError> {
        let io_error = |source| BundleError::KeyWrite {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_error)?;
        }
        let text = format!("{KEY_FILE_TAG} {}\n", hex::encode(self.signing.to_bytes()));
        let replace = if overwrite { Replace::Yes } else { Replace::No };
        write_atomically(path, text.as_bytes(), 0o600, replace).map_err(|source| {
            match source.kind() {
                ErrorKind::AlreadyExists => BundleError::KeyExists {
                    path: path.to_owned(),
                },
                _ => io_error(source),
            }
        })
    }

    /// The public ID that bundles signed with this key carry.
    pub fn publisher_id(&self) -> PublisherId {
        PublisherId(self.signing.verifying_key().to_bytes())
    }

    /// The Ed25519 signing key, for signing records other than bundles (the ID ledger's key
    /// rotations and revocations).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherKey")
            .field("publisher_id", &self.publisher_id())
            .finish_non_exhaustive()
    }
}
