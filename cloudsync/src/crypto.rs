//! The key hierarchy and the sealed object format (see `docs/cloud.md`, "Format").
//!
//! Every object in the store is `MAGIC | kind | nonce (24) | XChaCha20-Poly1305(padded plaintext)`
//! with the object's full name in the associated data, so an object moved to another name
//! (another chunk id, another version, another home) fails authentication like a modified one.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{HomeRef, SyncError, UserSecret};

/// First bytes of every object: format name and version.
pub(crate) const MAGIC: &[u8; 4] = b"ECS1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes added around a plaintext: magic, kind, nonce, tag.
pub(crate) const OVERHEAD: usize = MAGIC.len() + 1 + NONCE_LEN + TAG_LEN;
/// The smallest padded plaintext: tiny files all look alike.
const MIN_PADDED: usize = 512;
/// HKDF salt: names the scheme, so keys of another scheme from the same secret differ.
const SALT: &[u8] = b"elastos-cloudsync v1";

/// What an object holds; part of the authenticated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// The store's key check (`elastos-cloudsync`).
    KeyCheck = 1,
    /// A content chunk.
    Chunk = 2,
    /// A home's snapshot.
    Snapshot = 3,
    /// The garbage collector's state (`gc/mark`, `gc/candidates`), under the snapshot key.
    GcState = 4,
    /// A home's snapshot written as the changes against the version before it, under the
    /// snapshot key (a reader needing it asks for [`Kind::Snapshot`] or [`Kind::Delta`]).
    Delta = 5,
}

impl Kind {
    /// The kind a sealed object claims (authenticated only when it is opened as that kind).
    pub(crate) fn claimed(sealed: &[u8]) -> Option<Kind> {
        if sealed.len() < MAGIC.len() + 1 || &sealed[..MAGIC.len()] != MAGIC {
            return None;
        }
        [
            Kind::KeyCheck,
            Kind::Chunk,
            Kind::Snapshot,
            Kind::GcState,
            Kind::Delta,
        ]
        .into_iter()
        .find(|k| *k as u8 == sealed[MAGIC.len()])
    }
}

/// A chunk id: HMAC-SHA256 of the plaintext under the user's chunk-id key. Equal content of
/// one user dedups; across users the ids differ.
pub(crate) type ChunkId = [u8; 32];

/// Every key of one user, derived from the [`UserSecret`] with HKDF-SHA256 (info strings in
/// `docs/cloud.md`).
pub(crate) struct Keys {
    chunk_id: [u8; 32],
    home_name: [u8; 32],
    chunk_aead: XChaCha20Poly1305,
    snapshot_aead: XChaCha20Poly1305,
    check_aead: XChaCha20Poly1305,
}

fn derive(secret: &UserSecret, info: &str) -> [u8; 32] {
    let hkdf = Hkdf::<Sha256>::new(Some(SALT), &secret.0);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    hkdf.expand(info.as_bytes(), &mut out)
        .expect("32-byte HKDF output");
    out
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Keys {
    pub(crate) fn new(secret: &UserSecret) -> Self {
        let aead = |info| XChaCha20Poly1305::new(&derive(secret, info).into());
        Keys {
            chunk_id: derive(secret, "chunk-id"),
            home_name: derive(secret, "home-name"),
            chunk_aead: aead("chunk-key"),
            snapshot_aead: aead("snapshot-key"),
            check_aead: aead("key-check"),
        }
    }

    pub(crate) fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        hmac(&self.chunk_id, &[plaintext])
    }

    /// The opaque name of a home: the store cannot tell which app (or publisher) it is.
    pub(crate) fn home_id(&self, home: &HomeRef) -> String {
        let publisher = home.publisher.as_bytes();
        let len = (publisher.len() as u64).to_le_bytes();
        hex::encode(hmac(
            &self.home_name,
            &[&len, publisher, home.app_id.as_bytes()],
        ))
    }

    fn aead(&self, kind: Kind) -> &XChaCha20Poly1305 {
        match kind {
            Kind::KeyCheck => &self.check_aead,
            Kind::Chunk => &self.chunk_aead,
            Kind::Snapshot | Kind::GcState | Kind::Delta => &self.snapshot_aead,
        }
    }

    /// Pads `plaintext` (Padmé) and encrypts it as object `name`.
    pub(crate) fn seal(&self, kind: Kind, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let padded_len = padded_len(plaintext.len() + 8);
        let mut padded = Vec::with_capacity(padded_len);
        padded.extend_from_slice(&(plaintext.len() as u64).to_le_bytes());
        padded.extend_from_slice(plaintext);
        padded.resize(padded_len, 0);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).expect("the kernel's random source");
        let header = header(kind, &nonce);
        let aad = [&header[..], name.as_bytes()].concat();
        let ciphertext = self
            .aead(kind)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &padded,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any length we produce");
        let mut out = Vec::with_capacity(header.len() + ciphertext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Authenticates and decrypts object `name`; any change of bytes, name, kind or length is
    /// [`SyncError::Tampered`].
    pub(crate) fn open(&self, kind: Kind, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SyncError> {
        let tampered = |what| SyncError::Tampered {
            object: name.to_owned(),
            what,
        };
        if sealed.len() < OVERHEAD + 8 {
            return Err(tampered("shorter than the smallest object"));
        }
        let (head, ciphertext) = sealed.split_at(MAGIC.len() + 1 + NONCE_LEN);
        if &head[..4] != MAGIC {
            return Err(tampered("not an elastos-cloudsync object"));
        }
        if head[4] != kind as u8 {
            return Err(tampered("object of another kind"));
        }
        let aad = [head, name.as_bytes()].concat();
        let padded = self
            .aead(kind)
            .decrypt(
                XNonce::from_slice(&head[5..]),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| tampered("authentication tag mismatch"))?;
        let len = u64::from_le_bytes(padded[..8].try_into().expect("8 bytes")) as usize;
        if len > padded.len() - 8 || padded_len(len + 8) != padded.len() {
            return Err(tampered("bad padding"));
        }
        let mut plain = padded;
        plain.truncate(len + 8);
        plain.drain(..8);
        Ok(plain)
    }
}

fn header(kind: Kind, nonce: &[u8; NONCE_LEN]) -> [u8; 4 + 1 + NONCE_LEN] {
    let mut h = [0u8; 4 + 1 + NONCE_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind as u8;
    h[5..].copy_from_slice(nonce);
    h
}

/// Padmé padding (Nikitin et al., "Reducing metadata leakage from encrypted files", 2019): at
/// most 12% overhead, and a padded length reveals only O(log log L) bits of the length L.
pub(crate) fn padded_len(len: usize) -> usize {
    let len = len.max(MIN_PADDED);
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> Keys {
        Keys::new(&UserSecret::from_bytes([byte; 32]))
    }

    #[test]
    fn seal_open_round_trip_and_every_tamper_is_refused() {
        let k = keys(1);
        let data = b"hello, cloud".to_vec();
        let sealed = k.seal(Kind::Chunk, "chunks/ab/abcd", &data);
        assert_eq!(
            k.open(Kind::Chunk, "chunks/ab/abcd", &sealed).unwrap(),
            data
        );
        assert_eq!(
            sealed.len(),
            OVERHEAD + MIN_PADDED,
            "tiny objects are padded to the minimum"
        );
        // Swapped: another name.
        assert!(matches!(
            k.open(Kind::Chunk, "chunks/ab/abce", &sealed),
            Err(SyncError::Tampered { .. })
        ));
        // Another kind.
        assert!(k.open(Kind::Snapshot, "chunks/ab/abcd", &sealed).is_err());
        // Another user's key.
        assert!(keys(2)
            .open(Kind::Chunk, "chunks/ab/abcd", &sealed)
            .is_err());
        // Every single flipped byte, and every truncation.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                k.open(Kind::Chunk, "chunks/ab/abcd", &bad).is_err(),
                "flip at {i}"
            );
        }
        for len in [0, 10, OVERHEAD, sealed.len() - 1] {
            assert!(
                k.open(Kind::Chunk, "chunks/ab/abcd", &sealed[..len])
                    .is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn padme_sizes() {
        assert_eq!(padded_len(1), 512);
        assert_eq!(padded_len(512), 512);
        for len in [513, 1000, 4097, 100_000, 1 << 20, (1 << 22) + 7] {
            let p = padded_len(len);
            assert!(
                p >= len && (p - len) as f64 <= len as f64 * 0.12,
                "{len} -> {p}"
            );
        }
        assert_eq!(
            padded_len(1_000_001),
            padded_len(1_000_002),
            "nearby sizes share a bucket"
        );
    }

    #[test]
    fn ids_are_keyed() {
        assert_ne!(keys(1).chunk_id(b"x"), keys(2).chunk_id(b"x"));
        let home = HomeRef {
            publisher: "p".into(),
            app_id: "a".into(),
        };
        let other = HomeRef {
            publisher: "pa".into(),
            app_id: "".into(),
        };
        assert_ne!(keys(1).home_id(&home), keys(1).home_id(&other));
    }
}
