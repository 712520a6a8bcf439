//! Trust policy data: which publishers the user trusts, and whether only those may run.
//! Pure data and functions; the CLI decides where the file lives and when to ask.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::fsutil::{write_atomically, Replace};
use crate::key::PublisherId;

/// Errors of the trust file and the trust decision.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The trust file could not be read or written.
    #[error("cannot access trust file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The trust file is not valid.
    #[error("trust file {} is malformed; expected JSON {{\"policy\": \"any\" | \"trusted_only\", \"publishers\": [{{\"id\": \"<64 hex>\", \"name\": \"...\"}}]}}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The policy is `trusted_only` and the publisher is not on the list.
    #[error("publisher {publisher} is not trusted and the policy is trusted_only; expected one of the {trusted} trusted publishers; hint: add it to the trust list if you trust it")]
    Untrusted {
        /// The publisher (and the chain it belongs to was checked too).
        publisher: PublisherId,
        /// How many publishers are trusted.
        trusted: usize,
    },
    /// A name is empty or has control characters.
    #[error("publisher name {name:?} is not allowed; expected 1 to 100 printable characters")]
    BadName {
        /// The name.
        name: String,
    },
}

/// Which publishers may run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Any publisher (ownership checks still apply). The default.
    #[default]
    Any,
    /// Only publishers on the trust list (or keys they rotated to).
    TrustedOnly,
}

/// A trusted publisher and the name the user knows it by.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedPublisher {
    /// Its key.
    pub id: PublisherId,
    /// A name for people.
    pub name: String,
}

/// The trust file: `{"policy": "any", "publishers": [{"id": "<hex>", "name": "..."}]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustList {
    /// The policy.
    #[serde(default)]
    pub policy: Policy,
    /// The trusted publishers.
    #[serde(default)]
    pub publishers: Vec<TrustedPublisher>,
}

impl TrustList {
    /// Loads the file; a missing file is the default (policy `any`, nobody listed).
    pub fn load(path: &Path) -> Result<TrustList, TrustError> {
        match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|source| TrustError::Malformed {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(TrustList::default()),
            Err(source) => Err(TrustError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the file atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), TrustError> {
        let json = serde_json::to_vec_pretty(self).expect("a trust list always serializes");
        write_atomically(path, &json, 0o600, Replace::Yes).map_err(|source| TrustError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Adds `id` under `name`, or renames it if listed.
    pub fn add(&mut self, id: PublisherId, name: &str) -> Result<(), TrustError> {
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(TrustError::BadName {
                name: name.to_owned(),
            });
        }
        match self.publishers.iter_mut().find(|p| p.id == id) {
            Some(known) => known.name = name.to_owned(),
            None => self.publishers.push(TrustedPublisher {
                id,
                name: name.to_owned(),
            }),
        }
        Ok(())
    }

    /// Removes `id`; returns whether it was listed.
    pub fn remove(&mut self, id: PublisherId) -> bool {
        let before = self.publishers.len();
        self.publishers.retain(|p| p.id != id);
        self.publishers.len() != before
    }

    /// The entry of `id`, if trusted.
    pub fn get(&self, id: PublisherId) -> Option<&TrustedPublisher> {
        self.publishers.iter().find(|p| p.id == id)
    }

    /// Decides whether `publisher` may run under the policy. `chain` holds the keys it is
    /// known to succeed by rotation (e.g. from [`crate::Ledger::predecessors`]): trusting a
    /// key extends to the keys it rotated to.
    pub fn allows(
        &self,
        publisher: PublisherId,
        chain: &[PublisherId],
    ) -> Result<Option<&TrustedPublisher>, TrustError> {
        let trusted = std::iter::once(&publisher)
            .chain(chain)
            .find_map(|id| self.get(*id));
        match (self.policy, trusted) {
            (_, Some(entry)) => Ok(Some(entry)),
            (Policy::Any, None) => Ok(None),
            (Policy::TrustedOnly, None) => Err(TrustError::Untrusted {
                publisher,
                trusted: self.publishers.len(),
            }),
        }
    }
}
