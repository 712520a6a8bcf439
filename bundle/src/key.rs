//! Publisher keys: Ed25519 signing keys stored as one line of text, and the public IDs derived
//! from them.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey};

use crate::error::BundleError;
use elastos_identity::fsutil::{
    create_private_dir, key_file_text, read_key_file, write_atomically, KeyFileError, Replace,
};

/// First word of a key file; the version lets the format change without guessing.
const KEY_FILE_TAG: &str = "elastos-publisher-key-v1";

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
        let seed = read_key_file(path, KEY_FILE_TAG).map_err(|error| match error {
            KeyFileError::Io(source) if source.kind() == ErrorKind::NotFound => {
                BundleError::KeyNotFound {
                    path: path.to_owned(),
                }
            }
            KeyFileError::Io(source) => BundleError::KeyRead {
                path: path.to_owned(),
                source,
            },
            KeyFileError::PermissionsTooOpen(mode) => BundleError::KeyPermissionsTooOpen {
                path: path.to_owned(),
                mode,
            },
            KeyFileError::Malformed(reason) => BundleError::KeyMalformed {
                path: path.to_owned(),
                reason,
            },
        })?;
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
            create_private_dir(parent).map_err(io_error)?;
        }
        let text = key_file_text(KEY_FILE_TAG, &self.signing.to_bytes());
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
