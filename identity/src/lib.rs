//! Who owns what, locally and verifiably: the user's identity key, signed ownership records for
//! app ids and service UUIDs, and a transparency-log ledger that holds them.
//!
//! This crate owns one concern: deciding, on every `elastos run`, whether a verified bundle's
//! publisher may use its app id (and so the app's home), and whether an app may offer a service
//! UUID, from a record of what this user's machines have seen. It answers with
//! [`Ledger::check_bundle`] and [`Ledger::check_service`] and remembers with
//! [`Ledger::record_run`] and [`Ledger::record_service`].
//!
//! # Model (details and byte layouts in `docs/identity.md`)
//!
//! - **User id**: the Ed25519 public key of the [`UserKey`], made on first use in the keys
//!   directory. It attests what this machine saw and signs the ledger's tree heads;
//!   [`UserKey::derive_key`] derives other keys from it (HKDF-SHA256).
//! - **Publisher id** ([`PublisherId`]): the Ed25519 key that signs bundles.
//! - **App id**: a UUID from the manifest. Trust on first use: the first verified bundle seen
//!   with an app id binds it to its publisher ([`Claim::Bind`]).
//! - **Service UUID**: owned by the app, and its publisher, that first provides it
//!   ([`Claim::BindService`]).
//! - Publishers hand their ids to a new key ([`Claim::Rotate`], signed by the old key and
//!   counter-signed by the new one) and revoke keys ([`Claim::Revoke`]).
//!
//! Bind records cannot be signed by the publisher (its key is not on the machine at run time,
//! only its signature over the bundle): they are attested by the user key and carry the bundle
//! digest, so anyone with the bundle can check them. Rotations and revocations are signed by
//! publisher keys.
//!
//! # The ledger and its index
//!
//! [`Ledger`] is an append-only log shaped like Certificate Transparency: a Merkle tree over the
//! records (RFC 6962 hashing, by `ct-merkle`), signed tree heads, inclusion and consistency
//! proofs, full verification ([`Ledger::verify`]) that names a rewritten or truncated log, and
//! export/import between machines that detects forks and split views.
//!
//! The decision on `elastos run` must be fast, so it reads an index (`state.bin`, binary) instead of
//! replaying the log. The index is trusted when the log files have the size, inode, ctime and
//! mtime it was built from, for the same user key; otherwise the log is replayed and fully
//! verified first. Trust argument: the ledger directory is the user's own 0700 state, with the
//! same trust as the rest of `ELASTOS_HOME` (keys, bundle cache, app homes): whoever can write it
//! can already run anything as the user. The index only saves work; `Ledger::verify` is the full
//! check, and any change to the log through the filesystem changes its ctime and forces a replay.
//!
//! # Non-features
//!
//! - No global consensus and no witnesses: the log is local until federation. It proves to this
//!   user what their machines saw and that their history was not rewritten; it cannot prove to a
//!   stranger that nobody saw another history. Deleting the whole ledger is detectable only as
//!   absence ([`Ledger::open_for_run`], [`OwnershipError::LedgerMissing`]).
//! - No trusted time: record times are the signer's word. Bundles carry no signing time yet, so
//!   a revoked or rotated-away key is refused for all bundles when no time is given.
//! - The user key moves between machines only sealed with a passphrase
//!   ([`UserKey::seal_with_passphrase`]: Argon2id, then XChaCha20-Poly1305). The CLI and the
//!   wiring into `run`, `install` and activation live in the callers (`elastos-host`'s
//!   `ownership` module, `elastos`).
//! - No publisher key handling beyond verifying its records: publisher secrets stay in the
//!   bundle crate's key files; rotation and revocation take any [`RecordSigner`].

#![forbid(unsafe_code)]

mod export;
pub mod fsutil;
mod head;
mod index;
mod key;
mod ledger;
mod ownership;
mod record;
mod state;
mod trust;

#[cfg(test)]
mod format_tests;

pub use export::{ExportError, KdfParams, DEFAULT_KDF, KEY_EXPORT_FORMAT};
pub use head::{ConsistencyProof, InclusionProof, ProofError, SignedTreeHead, TREE_HEAD_DOMAIN};
pub use key::{KeyError, PublisherId, RecordSigner, UserId, UserKey};
pub use ledger::{
    ImportReport, Ledger, LedgerError, Problem, TornTail, VerifyReport, EXPORT_FORMAT, HEADS_FILE,
    RECORDS_FILE, STATE_FILE,
};
pub use ownership::{Offer, Ownership, OwnershipError};
pub use record::{
    Claim, Record, RecordError, RecordId, MAX_VERSION_LEN, RECORD_DOMAIN, ROTATE_ACCEPT_DOMAIN,
};
pub use state::Conflict;
pub use trust::{Policy, TrustError, TrustList, TrustedPublisher};
