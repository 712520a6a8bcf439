//! Keys: the user's own Ed25519 key (made on first use) and the public key types of this crate.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::fsutil::{
    create_private_dir, key_file_text, read_key_file, write_atomically, KeyFileError, Replace,
};

/// First word of `user.key`; the version lets the format change without guessing.
const USER_KEY_TAG: &str = "elastos-user-key-v1";
/// HKDF salt of [`UserKey::derive_key`]: fixed, so that a derived key depends only on the secret
/// and the context, and never equals a key derived by another program from the same seed.
const DERIVE_SALT: &[u8] = b"elastos-user-key-v1 derive";

/// Errors of loading and creating the user key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file or its directory could not be read or written.
    #[error("cannot access user key {}", path.display())]
    Io {
        /// The key file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The key file can be read or written by other users.
    #[error(
        "user key {} has mode {mode:04o}, expected 0600 or stricter; \
         hint: chmod 600 {}",
        path.display(),
        path.display()
    )]
    PermissionsTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is not in the `elastos-user-key-v1 <64 hex digits>` format.
    #[error("user key {} is malformed: {reason}; expected one line `elastos-user-key-v1 <64 hex digits>`", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The operating system gave no randomness for a new key.
    #[error("cannot get randomness for a new user key")]
    Random {
        /// The error of `getrandom`.
        source: getrandom::Error,
    },
}

/// Declares a newtype over a 32-byte Ed25519 public key that prints and parses as 64 hex digits.
macro_rules! public_key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw Ed25519 public key.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Checks an Ed25519 signature by this key over `message` (strict verification:
            /// weak keys and non-canonical signatures are refused).
            pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
                verify_strict(&self.0, message, signature)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = hex::FromHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes)?;
                Ok(Self(bytes))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(|_| {
                    serde::de::Error::custom(concat!(
                        stringify!($name),
                        ": expected 64 hex digits (an Ed25519 public key)"
                    ))
                })
            }
        }
    };
}

public_key_type!(
    /// A publisher's Ed25519 public key: who signed a bundle, and who owns app ids and service
    /// UUIDs. The same 32 bytes as `elastos_bundle::PublisherId`; displays as 64 hex digits.
    PublisherId
);

public_key_type!(
    /// The public half of a [`UserKey`]: who attested a bind record and signed a tree head.
    /// Displays as 64 hex digits.
    UserId
);

/// Strict Ed25519 verification of `signature` by the public key `key` over `message`.
pub(crate) fn verify_strict(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let signature = Signature::from_bytes(signature);
    key.verify_strict(message, &signature).is_ok()
}

/// Something that signs records: the user key, or a publisher's [`SigningKey`] (for rotation and
/// revocation records, which only a publisher can make).
pub trait RecordSigner {
    /// The Ed25519 public key of the signer.
    fn public_key(&self) -> [u8; 32];
    /// An Ed25519 signature over `message`.
    fn sign_message(&self, message: &[u8]) -> [u8; 64];
}

impl RecordSigner for SigningKey {
    fn public_key(&self) -> [u8; 32] {
        self.verifying_key().to_bytes()
    }
    fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.sign(message).to_bytes()
    }
}

/// The user's own Ed25519 key: it attests what this machine saw (bind records) and signs the
/// ledger's tree heads.
///
/// Stored as `KEYS_DIR/user.key`, mode 0600 in a 0700 directory, one line:
/// `elastos-user-key-v1 <64 hex digits of the Ed25519 seed>\n`. The secret leaves this type only
/// through [`UserKey::derive_key`] (one-way) and [`UserKey::export_secret_seed`] (explicit).
/// `Debug` shows the public [`UserId`] only.
pub struct UserKey {
    signing: SigningKey,
}

impl UserKey {
    /// Name of the key file inside the keys directory.
    pub const FILE_NAME: &'static str = "user.key";

    /// Loads `dir/user.key`, or creates it (and `dir`, mode 0700) if it does not exist.
    /// Returns the key and whether it was created now.
    ///
    /// Creation is atomic and never replaces a key: if two processes race, one key wins and
    /// both return it. Refuses a key file that other users can access, like ssh does.
    pub fn load_or_create(dir: &Path) -> Result<(UserKey, bool), KeyError> {
        let path = dir.join(Self::FILE_NAME);
        match Self::load(&path) {
            Err(KeyError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            other => return other.map(|key| (key, false)),
        }
        let io_error = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        create_private_dir(dir).map_err(io_error)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|source| KeyError::Random { source })?;
        let key = Self::from_secret_seed(seed);
        let text = key_file_text(USER_KEY_TAG, &seed);
        match write_atomically(&path, text.as_bytes(), 0o600, Replace::No) {
            Ok(()) => Ok((key, true)),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(&path).map(|k| (k, false)),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Writes this key as `dir/user.key` (mode 0600; `dir` made 0700), atomically: a reader
    /// sees the old key or the new one. With [`Replace::No`] an existing key file is kept and
    /// the error is `AlreadyExists`.
    pub fn save(&self, dir: &Path, replace: Replace) -> Result<(), KeyError> {
        let path = dir.join(Self::FILE_NAME);
        let io_error = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        create_private_dir(dir).map_err(io_error)?;
        let text = key_file_text(USER_KEY_TAG, &self.signing.to_bytes());
        write_atomically(&path, text.as_bytes(), 0o600, replace).map_err(io_error)
    }

    /// Loads a key file written by [`UserKey::load_or_create`].
    pub fn load(path: &Path) -> Result<UserKey, KeyError> {
        let seed = read_key_file(path, USER_KEY_TAG).map_err(|error| match error {
            KeyFileError::Io(source) => KeyError::Io {
                path: path.to_owned(),
                source,
            },
            KeyFileError::PermissionsTooOpen(mode) => KeyError::PermissionsTooOpen {
                path: path.to_owned(),
                mode,
            },
            KeyFileError::Malformed(reason) => KeyError::Malformed {
                path: path.to_owned(),
                reason,
            },
        })?;
        Ok(Self::from_secret_seed(seed))
    }

    /// A key from its 32-byte Ed25519 seed (the inverse of [`UserKey::export_secret_seed`]).
    pub fn from_secret_seed(seed: [u8; 32]) -> UserKey {
        UserKey {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte Ed25519 seed: the whole secret. Only for an explicit export by the user
    /// (passphrase-protected export is a separate feature); never log or send it.
    pub fn export_secret_seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public user id: the Ed25519 public key.
    pub fn user_id(&self) -> UserId {
        UserId(self.signing.verifying_key().to_bytes())
    }

    /// A 32-byte key for another purpose, derived one-way from the user's secret:
    /// HKDF-SHA256 (RFC 5869) with the Ed25519 seed as input key material, the salt
    /// `"elastos-user-key-v1 derive"`, and `context` as info.
    ///
    /// Different contexts give independent keys, and a derived key reveals nothing about the
    /// user key. Name contexts `elastos/<feature>/<purpose>/v<n>`, e.g.
    /// `"elastos/cloud-disk/encryption/v1"`, `"elastos/federation/node-key/v1"`; a context, once
    /// used, must never change meaning.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        let seed = self.signing.to_bytes();
        let hkdf = Hkdf::<Sha256>::new(Some(DERIVE_SALT), &seed);
        let mut out = [0u8; 32];
        hkdf.expand(context.as_bytes(), &mut out)
            .expect("32 bytes is far below HKDF-SHA256's limit of 8160");
        out
    }
}

impl RecordSigner for UserKey {
    fn public_key(&self) -> [u8; 32] {
        self.user_id().0
    }
    fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKey")
            .field("user_id", &self.user_id())
            .finish_non_exhaustive()
    }
}
