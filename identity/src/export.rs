//! The user key sealed with a passphrase, to move it to another machine (`elastos id export` /
//! `elastos id import`): Argon2id turns the passphrase into a key, XChaCha20-Poly1305 seals the
//! Ed25519 seed with it.
//!
//! The file is one JSON document (format in `docs/identity.md`, "Moving the user key"). Every
//! parameter needed to open it is stored in it, so the defaults can grow stronger without
//! breaking old files, and every stored parameter is bound to the ciphertext as associated data:
//! a file whose parameters or user id were changed does not open.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::key::{UserId, UserKey};

/// The `format` of an export file.
pub const KEY_EXPORT_FORMAT: &str = "elastos-user-key-export-v1";

/// Argon2id cost of new exports: 64 MiB and 3 passes, one lane (RFC 9106's second recommended
/// option, with one lane so that a 2-core machine is not monopolised). About half a second on a
/// small VM; paid once per export and import.
pub const DEFAULT_KDF: KdfParams = KdfParams {
    memory_kib: 64 * 1024,
    iterations: 3,
    parallelism: 1,
};

/// The most an import asks of the machine, so that a crafted file cannot exhaust its memory or
/// run for hours: 1 GiB, 64 passes, 16 lanes. And the least it accepts (8 MiB, 1 pass): a file
/// weaker than that was not made by elastos.
const MAX_KDF: KdfParams = KdfParams {
    memory_kib: 1024 * 1024,
    iterations: 64,
    parallelism: 16,
};
const MIN_KDF: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};

/// Longest export file read (a valid one is about 500 bytes).
const MAX_EXPORT_LEN: u64 = 16 * 1024;

/// Errors of sealing and opening an exported user key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The passphrase is empty.
    #[error("the passphrase is empty; expected at least one character")]
    EmptyPassphrase,
    /// The file is not an export of a user key.
    #[error(
        "not an elastos user key export: {reason}; expected a file written by `elastos id export`"
    )]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The file's Argon2id parameters are outside what an import accepts.
    #[error("the file asks for Argon2id with {found}; expected memory {min_memory}..={max_memory} KiB, iterations {min_iterations}..={max_iterations}, parallelism {min_parallelism}..={max_parallelism}", min_memory = MIN_KDF.memory_kib, max_memory = MAX_KDF.memory_kib, min_iterations = MIN_KDF.iterations, max_iterations = MAX_KDF.iterations, min_parallelism = MIN_KDF.parallelism, max_parallelism = MAX_KDF.parallelism)]
    KdfOutOfRange {
        /// The parameters found.
        found: KdfParams,
    },
    /// The passphrase does not open the file (or the file was altered: AEAD cannot tell).
    #[error("wrong passphrase (or the file was altered): it does not open this export")]
    WrongPassphrase,
    /// The sealed seed opened but is not the key the file names.
    #[error("the sealed key is user {found}, but the file says {expected}: the file was altered")]
    UserMismatch {
        /// The user id stored in the file.
        expected: UserId,
        /// The user id of the sealed seed.
        found: UserId,
    },
    /// The operating system gave no randomness.
    #[error("cannot get randomness for the salt and nonce")]
    Random {
        /// The error of `getrandom`.
        source: getrandom::Error,
    },
    /// The file could not be read.
    #[error("cannot read the export {}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Argon2id cost parameters, as stored in an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl std::fmt::Display for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory {} KiB, iterations {}, parallelism {}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

impl KdfParams {
    fn in_range(&self) -> bool {
        (MIN_KDF.memory_kib..=MAX_KDF.memory_kib).contains(&self.memory_kib)
            && (MIN_KDF.iterations..=MAX_KDF.iterations).contains(&self.iterations)
            && (MIN_KDF.parallelism..=MAX_KDF.parallelism).contains(&self.parallelism)
    }
}

/// The JSON of an export file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    format: String,
    /// The public user id of the sealed key: lets `id import` say whose key it is before asking
    /// for the passphrase, and is checked against the seed once opened.
    user: UserId,
    kdf: Kdf,
    cipher: Cipher,
    /// Hex of the sealed 32-byte seed and its 16-byte tag.
    sealed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    /// Always `argon2id`.
    algorithm: String,
    /// Argon2 version number (0x13 = 19).
    version: u32,
    #[serde(flatten)]
    params: KdfParams,
    /// Hex of the 16-byte random salt.
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    /// Always `xchacha20poly1305`.
    algorithm: String,
    /// Hex of the 24-byte random nonce.
    nonce: String,
}

const KDF_ALGORITHM: &str = "argon2id";
const CIPHER_ALGORITHM: &str = "xchacha20poly1305";

/// The associated data: everything in the file except the nonce and the ciphertext, in a fixed
/// binary layout, so that no stored parameter can be changed without the file failing to open.
fn associated_data(user: &UserId, version: u32, params: &KdfParams, salt: &[u8; 16]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96);
    aad.extend_from_slice(KEY_EXPORT_FORMAT.as_bytes());
    aad.push(0);
    aad.extend_from_slice(user.as_bytes());
    for value in [
        version,
        params.memory_kib,
        params.iterations,
        params.parallelism,
    ] {
        aad.extend_from_slice(&value.to_le_bytes());
    }
    aad.extend_from_slice(salt);
    aad
}

/// The 32-byte sealing key from the passphrase.
fn derive(passphrase: &[u8], params: &KdfParams, salt: &[u8; 16]) -> Result<[u8; 32], ExportError> {
    let argon_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|_| ExportError::KdfOutOfRange { found: *params })?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
        .hash_password_into(passphrase, salt, &mut key)
        .map_err(|_| ExportError::KdfOutOfRange { found: *params })?;
    Ok(key)
}

fn decode_hex<const N: usize>(field: &str, text: &str) -> Result<[u8; N], ExportError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| ExportError::Malformed {
        reason: format!("{field} is not {} hex digits", 2 * N),
    })?;
    Ok(out)
}

impl UserKey {
    /// The export file of this key sealed with `passphrase` (Argon2id with `params`, then
    /// XChaCha20-Poly1305 under a random salt and nonce).
    pub fn seal_with_passphrase(
        &self,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<Vec<u8>, ExportError> {
        if passphrase.is_empty() {
            return Err(ExportError::EmptyPassphrase);
        }
        if !params.in_range() {
            return Err(ExportError::KdfOutOfRange { found: params });
        }
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut salt).map_err(|source| ExportError::Random { source })?;
        getrandom::getrandom(&mut nonce).map_err(|source| ExportError::Random { source })?;
        let key = derive(passphrase, &params, &salt)?;
        let user = self.user_id();
        let version = Version::V0x13 as u32;
        let aad = associated_data(&user, version, &params, &salt);
        let seed = self.export_secret_seed();
        let sealed = XChaCha20Poly1305::new(&key.into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &seed,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals 32 bytes");
        let file = ExportFile {
            format: KEY_EXPORT_FORMAT.to_owned(),
            user,
            kdf: Kdf {
                algorithm: KDF_ALGORITHM.to_owned(),
                version,
                params,
                salt: hex::encode(salt),
            },
            cipher: Cipher {
                algorithm: CIPHER_ALGORITHM.to_owned(),
                nonce: hex::encode(nonce),
            },
            sealed: hex::encode(sealed),
        };
        let mut json = serde_json::to_vec_pretty(&file).expect("an export always serializes");
        json.push(b'\n');
        Ok(json)
    }

    /// The user id an export file names, without opening it (to say whose key it is).
    pub fn exported_user(bytes: &[u8]) -> Result<UserId, ExportError> {
        Ok(parse(bytes)?.user)
    }

    /// Opens an export file made by [`UserKey::seal_with_passphrase`]. A wrong passphrase, or
    /// any change to the file, is refused.
    pub fn open_with_passphrase(bytes: &[u8], passphrase: &[u8]) -> Result<UserKey, ExportError> {
        if passphrase.is_empty() {
            return Err(ExportError::EmptyPassphrase);
        }
        let file = parse(bytes)?;
        let params = file.kdf.params;
        let salt = decode_hex::<16>("kdf.salt", &file.kdf.salt)?;
        let nonce = decode_hex::<24>("cipher.nonce", &file.cipher.nonce)?;
        let sealed = decode_hex::<48>("sealed", &file.sealed)?;
        let key = derive(passphrase, &params, &salt)?;
        let aad = associated_data(&file.user, file.kdf.version, &params, &salt);
        let seed = XChaCha20Poly1305::new(&key.into())
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| ExportError::WrongPassphrase)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| ExportError::Malformed {
            reason: "the sealed seed is not 32 bytes".into(),
        })?;
        let key = UserKey::from_secret_seed(seed);
        if key.user_id() != file.user {
            return Err(ExportError::UserMismatch {
                expected: file.user,
                found: key.user_id(),
            });
        }
        Ok(key)
    }

    /// Reads an export file (at most 16 KiB).
    pub fn read_export(path: &Path) -> Result<Vec<u8>, ExportError> {
        use std::io::Read;
        let io_error = |source| ExportError::Io {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io_error)?
            .take(MAX_EXPORT_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_EXPORT_LEN {
            return Err(ExportError::Malformed {
                reason: format!("it is larger than {MAX_EXPORT_LEN} bytes"),
            });
        }
        Ok(bytes)
    }
}

fn parse(bytes: &[u8]) -> Result<ExportFile, ExportError> {
    let file: ExportFile = serde_json::from_slice(bytes).map_err(|e| ExportError::Malformed {
        reason: e.to_string(),
    })?;
    if file.format != KEY_EXPORT_FORMAT {
        return Err(ExportError::Malformed {
            reason: format!(
                "format is {:?}, this elastos reads {KEY_EXPORT_FORMAT:?}",
                file.format
            ),
        });
    }
    if file.kdf.algorithm != KDF_ALGORITHM || file.kdf.version != Version::V0x13 as u32 {
        return Err(ExportError::Malformed {
            reason: format!(
                "kdf is {} version {}, expected {KDF_ALGORITHM} version 19",
                file.kdf.algorithm, file.kdf.version
            ),
        });
    }
    if file.cipher.algorithm != CIPHER_ALGORITHM {
        return Err(ExportError::Malformed {
            reason: format!(
                "cipher is {:?}, expected {CIPHER_ALGORITHM}",
                file.cipher.algorithm
            ),
        });
    }
    if !file.kdf.params.in_range() {
        return Err(ExportError::KdfOutOfRange {
            found: file.kdf.params,
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest accepted cost, so the unit tests stay fast.
    const CHEAP: KdfParams = MIN_KDF;

    fn key() -> UserKey {
        UserKey::from_secret_seed([7; 32])
    }

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let sealed = key().seal_with_passphrase(b"correct horse", CHEAP).unwrap();
        let opened = UserKey::open_with_passphrase(&sealed, b"correct horse").unwrap();
        assert_eq!(opened.export_secret_seed(), [7; 32]);
        assert_eq!(UserKey::exported_user(&sealed).unwrap(), key().user_id());
        assert!(matches!(
            UserKey::open_with_passphrase(&sealed, b"correct horsf"),
            Err(ExportError::WrongPassphrase)
        ));
        assert!(matches!(
            UserKey::open_with_passphrase(&sealed, b""),
            Err(ExportError::EmptyPassphrase)
        ));
        // Fresh salt and nonce each time: two exports of one key differ.
        assert_ne!(
            sealed,
            key().seal_with_passphrase(b"correct horse", CHEAP).unwrap()
        );
    }

    #[test]
    fn the_seed_is_not_in_the_file() {
        let sealed = key().seal_with_passphrase(b"pw", CHEAP).unwrap();
        let text = String::from_utf8(sealed).unwrap();
        assert!(!text.contains(&hex::encode([7u8; 32])));
    }

    /// Changing any stored parameter makes the file fail to open, even with the right
    /// passphrase: the parameters are associated data.
    #[test]
    fn every_stored_field_is_authenticated() {
        let sealed = key().seal_with_passphrase(b"pw", CHEAP).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let other_user = UserKey::from_secret_seed([8; 32]).user_id().to_string();
        let edits: Vec<(&str, serde_json::Value)> = vec![
            ("/kdf/iterations", 2.into()),
            ("/kdf/memory_kib", (9 * 1024).into()),
            ("/kdf/salt", hex::encode([0u8; 16]).into()),
            ("/cipher/nonce", hex::encode([0u8; 24]).into()),
            ("/user", other_user.into()),
        ];
        for (pointer, new) in edits {
            let mut changed = value.clone();
            *changed.pointer_mut(pointer).unwrap() = new;
            let bytes = serde_json::to_vec(&changed).unwrap();
            assert!(
                matches!(
                    UserKey::open_with_passphrase(&bytes, b"pw"),
                    Err(ExportError::WrongPassphrase)
                ),
                "{pointer}"
            );
        }
    }

    #[test]
    fn malformed_and_costly_files_are_refused_before_any_work() {
        let sealed = key().seal_with_passphrase(b"pw", CHEAP).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let refused = |pointer: &str, new: serde_json::Value| {
            let mut changed = value.clone();
            *changed.pointer_mut(pointer).unwrap() = new;
            UserKey::open_with_passphrase(&serde_json::to_vec(&changed).unwrap(), b"pw")
                .unwrap_err()
        };
        assert!(matches!(
            refused("/kdf/memory_kib", (4u32 << 20).into()),
            ExportError::KdfOutOfRange { .. }
        ));
        assert!(matches!(
            refused("/kdf/iterations", 0.into()),
            ExportError::KdfOutOfRange { .. }
        ));
        assert!(matches!(
            refused("/format", "elastos-user-key-export-v9".into()),
            ExportError::Malformed { .. }
        ));
        assert!(matches!(
            refused("/kdf/algorithm", "argon2i".into()),
            ExportError::Malformed { .. }
        ));
        assert!(matches!(
            refused("/sealed", "00".into()),
            ExportError::Malformed { .. }
        ));
        assert!(matches!(
            UserKey::open_with_passphrase(b"elastos-user-key-v1 00", b"pw"),
            Err(ExportError::Malformed { .. })
        ));
    }
}
