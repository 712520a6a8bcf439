//! Signed tree heads and the two kinds of Merkle proofs the ledger hands out.

use ct_merkle::RootHash;
use sha2::Sha256;

use crate::key::{RecordSigner, UserId};
use crate::record::{hex_array, Record};

/// Domain-separation prefix of the bytes a tree head signature covers.
pub const TREE_HEAD_DOMAIN: &[u8] = b"elastos-identity-tree-head-v1\0";

/// A signed tree head: the ledger's signed statement "my first `size` records hash to `root`".
///
/// The signature covers [`TREE_HEAD_DOMAIN`] ‖ size (u64 LE) ‖ root (32 bytes) ‖ time (u64 LE).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTreeHead {
    /// Number of records covered.
    pub size: u64,
    /// RFC 6962 Merkle tree hash of those records (SHA-256; the empty tree is SHA-256("")).
    #[serde(with = "hex_array")]
    pub root: [u8; 32],
    /// When the head was signed, unix seconds.
    pub time: u64,
    /// The user key of the ledger that issued it: the log's identity.
    pub signer: UserId,
    /// Ed25519 signature.
    #[serde(with = "hex_array")]
    pub signature: [u8; 64],
}

impl SignedTreeHead {
    pub(crate) fn sign(key: &impl RecordSigner, size: u64, root: [u8; 32], time: u64) -> Self {
        SignedTreeHead {
            size,
            root,
            time,
            signer: UserId(key.public_key()),
            signature: key.sign_message(&Self::message(size, &root, time)),
        }
    }

    fn message(size: u64, root: &[u8; 32], time: u64) -> Vec<u8> {
        let mut out = TREE_HEAD_DOMAIN.to_vec();
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(root);
        out.extend_from_slice(&time.to_le_bytes());
        out
    }

    /// Whether the signature by [`SignedTreeHead::signer`] verifies.
    pub fn verify_signature(&self) -> bool {
        self.signer.verify(
            &Self::message(self.size, &self.root, self.time),
            &self.signature,
        )
    }

    /// A short description for messages: `#n (size s, root abcd1234..)`.
    pub(crate) fn describe(&self, number: usize) -> String {
        format!(
            "tree head #{number} (size {}, root {}..)",
            self.size,
            &hex::encode(self.root)[..16]
        )
    }

    fn root_hash(&self) -> RootHash<Sha256> {
        RootHash::new(self.root.into(), self.size)
    }
}

/// Errors of checking a proof against tree heads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The head's signature does not verify.
    #[error("tree head of size {size} has an invalid signature by {signer}; expected a valid Ed25519 signature")]
    BadHeadSignature {
        /// The head's size.
        size: u64,
        /// The key it names.
        signer: UserId,
    },
    /// The proof is for another tree size than the head.
    #[error("the proof is for a tree of {proof} records, the tree head covers {head}; expected the same size")]
    SizeMismatch {
        /// Size the proof was made for.
        proof: u64,
        /// Size of the head.
        head: u64,
    },
    /// The record is not at that index of that tree.
    #[error("inclusion proof of record {index} does not lead to the root of the tree head")]
    Inclusion {
        /// The record index.
        index: u64,
        /// What ct-merkle found.
        source: ct_merkle::InclusionVerifError,
    },
    /// The old tree is not a prefix of the new one.
    #[error("consistency proof from size {old} to size {new} fails; the log was rewritten between the two heads")]
    Consistency {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
        /// What ct-merkle found.
        source: ct_merkle::ConsistencyVerifError,
    },
}

/// Proof that record `index` is in the tree of `size` records (RFC 6962 audit path).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InclusionProof {
    /// The record's index.
    pub index: u64,
    /// The tree size it was made for.
    pub size: u64,
    /// The audit path: concatenated 32-byte SHA-256 hashes, in hex.
    #[serde(with = "hex::serde")]
    pub path: Vec<u8>,
}

impl InclusionProof {
    /// Checks that `record` is record [`InclusionProof::index`] of the tree `head` signs.
    pub fn verify(&self, record: &Record, head: &SignedTreeHead) -> Result<(), ProofError> {
        check_head(head, self.size)?;
        let inclusion_error = |source| ProofError::Inclusion {
            index: self.index,
            source,
        };
        let proof = ct_merkle::InclusionProof::<Sha256>::try_from_bytes(self.path.clone())
            .map_err(inclusion_error)?;
        head.root_hash()
            .verify_inclusion(&record.leaf_bytes(), self.index, &proof)
            .map_err(inclusion_error)
    }
}

/// Proof that the tree of `old_size` records is a prefix of the tree of `new_size` records.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsistencyProof {
    /// The older, smaller size.
    pub old_size: u64,
    /// The newer size.
    pub new_size: u64,
    /// Concatenated 32-byte SHA-256 hashes, in hex.
    #[serde(with = "hex::serde")]
    pub path: Vec<u8>,
}

impl ConsistencyProof {
    /// Checks that the log signed by `old` is a prefix of the log signed by `new`.
    pub fn verify(&self, old: &SignedTreeHead, new: &SignedTreeHead) -> Result<(), ProofError> {
        check_head(old, self.old_size)?;
        check_head(new, self.new_size)?;
        let proof = ct_merkle::ConsistencyProof::<Sha256>::try_from_bytes(self.path.clone())
            .map_err(|source| ProofError::Consistency {
                old: self.old_size,
                new: self.new_size,
                source,
            })?;
        new.root_hash()
            .verify_consistency(&old.root_hash(), &proof)
            .map_err(|source| ProofError::Consistency {
                old: self.old_size,
                new: self.new_size,
                source,
            })
    }
}

fn check_head(head: &SignedTreeHead, size: u64) -> Result<(), ProofError> {
    if !head.verify_signature() {
        return Err(ProofError::BadHeadSignature {
            size: head.size,
            signer: head.signer,
        });
    }
    if head.size != size {
        return Err(ProofError::SizeMismatch {
            proof: size,
            head: head.size,
        });
    }
    Ok(())
}
