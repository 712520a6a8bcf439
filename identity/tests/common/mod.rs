//! Helpers shared by the integration tests: deterministic publisher keys, offers, and ledgers
//! in temporary directories.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use elastos_identity::{Ledger, Offer, PublisherId, UserKey};
use uuid::Uuid;

/// A publisher key made from a fixed seed, so failures are reproducible.
pub fn publisher(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn id(key: &SigningKey) -> PublisherId {
    PublisherId(key.verifying_key().to_bytes())
}

pub fn app(n: u128) -> Uuid {
    Uuid::from_u128(0xa450_0000_0000_4000_8000_0000_0000_0000 | n)
}

pub fn offer(app_id: Uuid, key: &SigningKey, version: &str) -> Offer {
    Offer {
        app_id,
        publisher: id(key),
        version: version.to_owned(),
        digest: [7; 32],
        signed_at: None,
    }
}

/// A machine: a keys dir and a ledger dir under one temporary directory.
pub struct Machine {
    pub tmp: tempfile::TempDir,
}

impl Machine {
    pub fn new() -> Machine {
        let machine = Machine {
            tmp: tempfile::tempdir().unwrap(),
        };
        let key = machine.user_key();
        Ledger::create(&machine.ledger_dir(), key).unwrap();
        machine
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.tmp.path().join("keys")
    }

    pub fn ledger_dir(&self) -> PathBuf {
        self.tmp.path().join("ledger")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.ledger_dir().join(name)
    }

    pub fn user_key(&self) -> UserKey {
        UserKey::load_or_create(&self.keys_dir()).unwrap().0
    }

    pub fn open(&self) -> Ledger {
        Ledger::open(&self.ledger_dir(), self.user_key()).unwrap()
    }
}

/// Lines of a file, without their newlines.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}
