//! Records: the signed claims the ledger holds, their JSON form and their canonical bytes.
//!
//! The JSON form (one record per line of `records.jsonl`) is for storage and people; signatures
//! and hashes are always over the canonical bytes, recomputed from the typed fields, never over
//! whatever a JSON printer produced. See `docs/identity.md` for the byte layout.

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::key::{verify_strict, PublisherId, RecordSigner, UserId};

/// Domain-separation prefix of the canonical bytes of every record claim.
pub const RECORD_DOMAIN: &[u8] = b"elastos-identity-record-v1\0";
/// Prefix of the message a rotation's new key signs to accept the rotation.
pub const ROTATE_ACCEPT_DOMAIN: &[u8] = b"elastos-identity-rotate-accept-v1\0";
/// Longest version string a record may carry, in bytes.
pub const MAX_VERSION_LEN: usize = 256;

/// Errors of a single record, checked without looking at any other record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The Ed25519 signature does not verify against the signer key over the canonical bytes.
    #[error("{kind} record {id}: the signature by {signer} does not verify over its canonical bytes; expected a valid Ed25519 signature (the record was altered or forged)")]
    BadSignature {
        /// The claim kind (`bind`, `rotate`, ...).
        kind: &'static str,
        /// The record id as stored (hex), of the altered bytes.
        id: String,
        /// The signer key the record names.
        signer: String,
    },
    /// A rotation lacks the new key's counter-signature, or it does not verify.
    #[error("rotate record {old} -> {new}: the new key's counter-signature is missing or invalid; expected a signature by the new key proving it accepts the rotation")]
    BadCosignature {
        /// The old key.
        old: PublisherId,
        /// The new key.
        new: PublisherId,
    },
    /// A record kind that needs a particular signer names another one.
    #[error("{kind} record is signed by {signer}, expected {expected}")]
    WrongSigner {
        /// The claim kind.
        kind: &'static str,
        /// The signer it names.
        signer: String,
        /// Who must sign this kind of record.
        expected: String,
    },
    /// Only rotation records carry a counter-signature.
    #[error("{kind} record carries a counter-signature; only rotate records may")]
    UnexpectedCosignature {
        /// The claim kind.
        kind: &'static str,
    },
    /// A rotation to the same key.
    #[error("rotate record rotates {key} to itself; expected a different new key")]
    RotateToSelf {
        /// The key.
        key: PublisherId,
    },
    /// A version string is empty or longer than [`MAX_VERSION_LEN`].
    #[error("{kind} record has a version of {len} bytes; expected 1 to {MAX_VERSION_LEN}")]
    BadVersionLength {
        /// The claim kind.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// A JSON line could not be parsed as a record.
    #[error("not a record; expected one JSON object per line as written by the ledger")]
    Json {
        /// The parse error.
        source: serde_json::Error,
    },
}

/// What a record claims. Times are seconds since the Unix epoch (UTC) as stated by the signer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Claim {
    /// Trust on first use: the first verified bundle with `app_id` that this machine saw was
    /// signed by `publisher`. Attested (signed) by the user key of the machine that saw it.
    Bind {
        /// The app id of the bundle's manifest.
        app_id: Uuid,
        /// The key that signed the bundle.
        publisher: PublisherId,
        /// The manifest version of that bundle.
        first_version: String,
        /// The bundle's SHA-256 digest, so anyone holding the bundle can check the claim.
        #[serde(with = "hex_array")]
        bundle_digest: [u8; 32],
        /// When the bind was made.
        time: u64,
    },
    /// A service UUID is owned by the app (and its publisher) that first provided it.
    /// Attested by a user key.
    BindService {
        /// The service UUID.
        service: Uuid,
        /// The app that provides it.
        app_id: Uuid,
        /// That app's publisher.
        publisher: PublisherId,
        /// When the bind was made.
        time: u64,
    },
    /// The publisher key `old_key` hands everything it owns to `new_key`; later signatures by
    /// `old_key` are refused. Signed by `old_key`, counter-signed by `new_key`.
    Rotate {
        /// The key that retires.
        old_key: PublisherId,
        /// Its successor.
        new_key: PublisherId,
        /// When the rotation takes effect.
        time: u64,
    },
    /// Bundles signed by `key` at or after `from_time` are refused. Signed by `key` itself or
    /// by a key it rotated to (directly or through a chain).
    Revoke {
        /// The revoked key.
        key: PublisherId,
        /// From when its signatures are refused.
        from_time: u64,
        /// When the revocation was made.
        time: u64,
    },
    /// A higher version of a bound app was seen (the downgrade check compares against the
    /// highest). Attested by a user key.
    Version {
        /// The app id.
        app_id: Uuid,
        /// The key that signed the bundle.
        publisher: PublisherId,
        /// The manifest version.
        version: String,
        /// The bundle's SHA-256 digest.
        #[serde(with = "hex_array")]
        bundle_digest: [u8; 32],
        /// When it was seen.
        time: u64,
    },
}

impl Claim {
    /// The short name of the kind, as in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Claim::Bind { .. } => "bind",
            Claim::BindService { .. } => "bind_service",
            Claim::Rotate { .. } => "rotate",
            Claim::Revoke { .. } => "revoke",
            Claim::Version { .. } => "version",
        }
    }

    /// The canonical bytes that are signed: [`RECORD_DOMAIN`], a kind byte, then the fields in
    /// declaration order; UUIDs as 16 bytes (RFC 4122 order), keys and digests as 32 raw bytes,
    /// times as u64 little-endian, strings as a u32 little-endian byte length and UTF-8.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(RECORD_DOMAIN);
        match self {
            Claim::Bind {
                app_id,
                publisher,
                first_version,
                bundle_digest,
                time,
            } => {
                out.push(1);
                out.extend_from_slice(app_id.as_bytes());
                out.extend_from_slice(publisher.as_bytes());
                put_str(&mut out, first_version);
                out.extend_from_slice(bundle_digest);
                out.extend_from_slice(&time.to_le_bytes());
            }
            Claim::BindService {
                service,
                app_id,
                publisher,
                time,
            } => {
                out.push(2);
                out.extend_from_slice(service.as_bytes());
                out.extend_from_slice(app_id.as_bytes());
                out.extend_from_slice(publisher.as_bytes());
                out.extend_from_slice(&time.to_le_bytes());
            }
            Claim::Rotate {
                old_key,
                new_key,
                time,
            } => {
                out.push(3);
                out.extend_from_slice(old_key.as_bytes());
                out.extend_from_slice(new_key.as_bytes());
                out.extend_from_slice(&time.to_le_bytes());
            }
            Claim::Revoke {
                key,
                from_time,
                time,
            } => {
                out.push(4);
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(&from_time.to_le_bytes());
                out.extend_from_slice(&time.to_le_bytes());
            }
            Claim::Version {
                app_id,
                publisher,
                version,
                bundle_digest,
                time,
            } => {
                out.push(5);
                out.extend_from_slice(app_id.as_bytes());
                out.extend_from_slice(publisher.as_bytes());
                put_str(&mut out, version);
                out.extend_from_slice(bundle_digest);
                out.extend_from_slice(&time.to_le_bytes());
            }
        }
        out
    }

    /// The version string a claim carries, if any.
    fn version(&self) -> Option<&str> {
        match self {
            Claim::Bind { first_version, .. } => Some(first_version),
            Claim::Version { version, .. } => Some(version),
            _ => None,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("record strings are at most MAX_VERSION_LEN bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A signed claim: one line of the ledger, one leaf of its Merkle tree.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// What is claimed.
    pub claim: Claim,
    /// The Ed25519 public key that signed [`Claim::canonical_bytes`].
    #[serde(with = "hex_array")]
    pub signer: [u8; 32],
    /// The signature.
    #[serde(with = "hex_array")]
    pub signature: [u8; 64],
    /// Rotations only: the new key's signature over [`ROTATE_ACCEPT_DOMAIN`] ‖ canonical bytes.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_option")]
    pub cosignature: Option<[u8; 64]>,
}

impl Record {
    /// Signs `claim` with `signer`. For attestations (`Bind`, `BindService`, `Version`) the
    /// signer is the user key; use [`Record::rotate`] and [`Record::revoke`] for the others.
    pub fn sign(claim: Claim, signer: &impl RecordSigner) -> Record {
        let signature = signer.sign_message(&claim.canonical_bytes());
        Record {
            claim,
            signer: signer.public_key(),
            signature,
            cosignature: None,
        }
    }

    /// A bind record attested by the user key.
    pub fn bind(
        user: &crate::UserKey,
        app_id: Uuid,
        publisher: PublisherId,
        first_version: &str,
        bundle_digest: [u8; 32],
        time: u64,
    ) -> Record {
        let claim = Claim::Bind {
            app_id,
            publisher,
            first_version: first_version.to_owned(),
            bundle_digest,
            time,
        };
        Record::sign(claim, user)
    }

    /// A rotation from `old` to `new`, signed by `old` and counter-signed by `new`.
    pub fn rotate(old: &impl RecordSigner, new: &impl RecordSigner, time: u64) -> Record {
        let claim = Claim::Rotate {
            old_key: PublisherId(old.public_key()),
            new_key: PublisherId(new.public_key()),
            time,
        };
        let cosignature = new.sign_message(&cosign_message(&claim));
        Record {
            cosignature: Some(cosignature),
            ..Record::sign(claim, old)
        }
    }

    /// A revocation of `key` from `from_time`, signed by `signer` (the key itself or one of its
    /// successors; the ledger checks which).
    pub fn revoke(
        signer: &impl RecordSigner,
        key: PublisherId,
        from_time: u64,
        time: u64,
    ) -> Record {
        Record::sign(
            Claim::Revoke {
                key,
                from_time,
                time,
            },
            signer,
        )
    }

    /// The bytes of the Merkle leaf: canonical claim bytes ‖ signer (32) ‖ signature (64) ‖
    /// counter-signature (64, rotations only).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let mut out = self.claim.canonical_bytes();
        out.extend_from_slice(&self.signer);
        out.extend_from_slice(&self.signature);
        if let Some(cosignature) = &self.cosignature {
            out.extend_from_slice(cosignature);
        }
        out
    }

    /// The record id: the RFC 6962 leaf hash, SHA-256(0x00 ‖ leaf bytes). The same record made
    /// on two machines has the same id; any change of any byte changes it.
    pub fn id(&self) -> RecordId {
        RecordId(leaf_hash(&self.leaf_bytes()))
    }

    /// Checks what one record can prove on its own: the signature (and a rotation's
    /// counter-signature) over the canonical bytes, who must sign a rotation, and field bounds.
    /// Who may revoke a key needs the rotation history; the ledger checks that.
    pub fn verify(&self) -> Result<(), RecordError> {
        let kind = self.claim.kind();
        if let Some(version) = self.claim.version() {
            if version.is_empty() || version.len() > MAX_VERSION_LEN {
                return Err(RecordError::BadVersionLength {
                    kind,
                    len: version.len(),
                });
            }
        }
        if !verify_strict(&self.signer, &self.claim.canonical_bytes(), &self.signature) {
            return Err(RecordError::BadSignature {
                kind,
                id: self.id().to_string(),
                signer: hex::encode(self.signer),
            });
        }
        match (&self.claim, &self.cosignature) {
            (
                Claim::Rotate {
                    old_key, new_key, ..
                },
                cosignature,
            ) => {
                if old_key == new_key {
                    return Err(RecordError::RotateToSelf { key: *old_key });
                }
                if self.signer != old_key.0 {
                    return Err(RecordError::WrongSigner {
                        kind,
                        signer: hex::encode(self.signer),
                        expected: format!("the old key {old_key}"),
                    });
                }
                let accepted =
                    cosignature.is_some_and(|c| new_key.verify(&cosign_message(&self.claim), &c));
                if !accepted {
                    return Err(RecordError::BadCosignature {
                        old: *old_key,
                        new: *new_key,
                    });
                }
            }
            (_, Some(_)) => return Err(RecordError::UnexpectedCosignature { kind }),
            (_, None) => {}
        }
        Ok(())
    }

    /// The signer as a user id (meaningful for attestations).
    pub fn attester(&self) -> UserId {
        UserId(self.signer)
    }

    /// Parses one JSON line (without checking signatures).
    pub fn from_json(line: &str) -> Result<Record, RecordError> {
        serde_json::from_str(line).map_err(|source| RecordError::Json { source })
    }

    /// The JSON form, one line without a newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }
}

/// Prints the record as its JSON line, so errors can show both sides of a conflict in full.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Record({})", self.to_json())
    }
}

fn cosign_message(claim: &Claim) -> Vec<u8> {
    let mut message = ROTATE_ACCEPT_DOMAIN.to_vec();
    message.extend_from_slice(&claim.canonical_bytes());
    message
}

/// SHA-256(0x00 ‖ leaf): the RFC 6962 leaf hash, as ct-merkle computes it.
pub(crate) fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// A record id (see [`Record::id`]); displays as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub [u8; 32]);

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({self})")
    }
}

/// Serde helper: a byte array as a hex string.
pub(crate) mod hex_array {
    pub fn serialize<S: serde::Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(text.as_bytes(), &mut out)
            .map_err(|_| serde::de::Error::custom(format_args!("expected {} hex digits", 2 * N)))?;
        Ok(out)
    }
}

/// Serde helper: an optional byte array as a hex string.
mod hex_option {
    pub fn serialize<S: serde::Serializer, const N: usize>(
        bytes: &Option<[u8; N]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::hex_array::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wrap<const M: usize>(#[serde(with = "super::hex_array")] [u8; M]);
        let wrapped: Option<Wrap<N>> = serde::Deserialize::deserialize(deserializer)?;
        Ok(wrapped.map(|Wrap(bytes)| bytes))
    }
}
