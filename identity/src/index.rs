//! The ownership index file (`state.bin`): the [`State`] after replaying the log, plus what it
//! was built from, in a compact binary form that loads in microseconds.
//!
//! It is a cache of the log, never a source of truth: anything unreadable, from another format
//! version or for other log files makes the ledger rebuild it from the log. Layout (integers
//! little-endian; `str` = u32 length + UTF-8; `opt` = one byte 0/1 then the value if 1):
//!
//! ```text
//! magic "elastos-identity-index-v1\0" | log_id [32]
//! records: opt fingerprint | heads: opt fingerprint      fingerprint = len u64, ino u64,
//! size u64 | root [32]                                                 ctime_ns i128, mtime_ns i128
//! latest head: size u64, root [32], time u64, signer [32], signature [64]
//! keys u32, each: key [32], opt (successor [32], time u64, record u64), opt predecessor [32],
//!                 opt revoked_from u64
//! apps u32, each: app_id [16], publisher [32], bind_record u64, highest_version str
//! services u32, each: service [16], app_id [16], publisher [32], bind_record u64
//! ```

use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use uuid::Uuid;

use crate::head::SignedTreeHead;
use crate::key::{PublisherId, UserId};
use crate::state::{AppState, KeyState, ServiceState, State};

const MAGIC: &[u8] = b"elastos-identity-index-v1\0";

/// What identifies a file's content for the index's freshness check. `ctime` cannot be set from
/// user space, so any write through the filesystem leaves a different fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    len: u64,
    ino: u64,
    ctime_ns: i128,
    mtime_ns: i128,
}

/// The fingerprint of `path`, `None` if it does not exist.
pub(crate) fn fingerprint(path: &Path) -> io::Result<Option<Fingerprint>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Fingerprint {
            len: m.len(),
            ino: m.ino(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The contents of the index file.
pub(crate) struct Index {
    pub log_id: UserId,
    pub records: Option<Fingerprint>,
    pub heads: Option<Fingerprint>,
    pub size: u64,
    pub root: [u8; 32],
    pub latest_head: SignedTreeHead,
    pub state: State,
}

impl Index {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(1024 + 128 * self.state.apps.len());
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(self.log_id.as_bytes());
        for fp in [&self.records, &self.heads] {
            put_opt(&mut w, fp.as_ref(), |w, fp| {
                w.extend_from_slice(&fp.len.to_le_bytes());
                w.extend_from_slice(&fp.ino.to_le_bytes());
                w.extend_from_slice(&fp.ctime_ns.to_le_bytes());
                w.extend_from_slice(&fp.mtime_ns.to_le_bytes());
            });
        }
        w.extend_from_slice(&self.size.to_le_bytes());
        w.extend_from_slice(&self.root);
        let head = &self.latest_head;
        w.extend_from_slice(&head.size.to_le_bytes());
        w.extend_from_slice(&head.root);
        w.extend_from_slice(&head.time.to_le_bytes());
        w.extend_from_slice(head.signer.as_bytes());
        w.extend_from_slice(&head.signature);

        put_len(&mut w, self.state.keys.len());
        for (key, k) in &self.state.keys {
            w.extend_from_slice(key.as_bytes());
            put_opt(&mut w, k.successor.as_ref(), |w, (next, time, record)| {
                w.extend_from_slice(next.as_bytes());
                w.extend_from_slice(&time.to_le_bytes());
                w.extend_from_slice(&record.to_le_bytes());
            });
            put_opt(&mut w, k.predecessor.as_ref(), |w, p| {
                w.extend_from_slice(p.as_bytes())
            });
            put_opt(&mut w, k.revoked_from.as_ref(), |w, t| {
                w.extend_from_slice(&t.to_le_bytes())
            });
        }
        put_len(&mut w, self.state.apps.len());
        for (app_id, app) in &self.state.apps {
            w.extend_from_slice(app_id.as_bytes());
            w.extend_from_slice(app.publisher.as_bytes());
            w.extend_from_slice(&app.bind_record.to_le_bytes());
            put_len(&mut w, app.highest_version.len());
            w.extend_from_slice(app.highest_version.as_bytes());
        }
        put_len(&mut w, self.state.services.len());
        for (service, s) in &self.state.services {
            w.extend_from_slice(service.as_bytes());
            w.extend_from_slice(s.app_id.as_bytes());
            w.extend_from_slice(s.publisher.as_bytes());
            w.extend_from_slice(&s.bind_record.to_le_bytes());
        }
        w
    }

    /// Parses an index file; `None` for anything that is not exactly one.
    pub fn decode(bytes: &[u8]) -> Option<Index> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let log_id = UserId(r.array()?);
        let mut fingerprint = || {
            r.opt(|r| {
                Some(Fingerprint {
                    len: r.u64()?,
                    ino: r.u64()?,
                    ctime_ns: i128::from_le_bytes(r.array()?),
                    mtime_ns: i128::from_le_bytes(r.array()?),
                })
            })
        };
        let records = fingerprint()?;
        let heads = fingerprint()?;
        let size = r.u64()?;
        let root = r.array()?;
        let latest_head = SignedTreeHead {
            size: r.u64()?,
            root: r.array()?,
            time: r.u64()?,
            signer: UserId(r.array()?),
            signature: r.array()?,
        };
        let mut state = State::default();
        for _ in 0..r.u32()? {
            let key = PublisherId(r.array()?);
            let k = KeyState {
                successor: r.opt(|r| Some((PublisherId(r.array()?), r.u64()?, r.u64()?)))?,
                predecessor: r.opt(|r| Some(PublisherId(r.array()?)))?,
                revoked_from: r.opt(Reader::u64)?,
            };
            state.keys.insert(key, k);
        }
        for _ in 0..r.u32()? {
            let app_id = Uuid::from_bytes(r.array()?);
            let app = AppState {
                publisher: PublisherId(r.array()?),
                bind_record: r.u64()?,
                highest_version: r.string()?,
            };
            state.apps.insert(app_id, app);
        }
        for _ in 0..r.u32()? {
            let service = Uuid::from_bytes(r.array()?);
            let s = ServiceState {
                app_id: Uuid::from_bytes(r.array()?),
                publisher: PublisherId(r.array()?),
                bind_record: r.u64()?,
            };
            state.services.insert(service, s);
        }
        r.0.is_empty().then_some(Index {
            log_id,
            records,
            heads,
            size,
            root,
            latest_head,
            state,
        })
    }
}

fn put_len(w: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("fewer than 2^32 entries");
    w.extend_from_slice(&len.to_le_bytes());
}

fn put_opt<T>(w: &mut Vec<u8>, value: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match value {
        None => w.push(0),
        Some(value) => {
            w.push(1);
            put(w, value);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// Outer `None`: malformed; inner: absent.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.take(1)?[0] {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::UserKey;

    #[test]
    fn an_index_survives_encoding_and_a_damaged_one_is_refused() {
        let key = UserKey::from_secret_seed([1; 32]);
        let mut state = State::default();
        let p = PublisherId([2; 32]);
        state.keys.insert(
            p,
            KeyState {
                successor: Some((PublisherId([3; 32]), 5, 6)),
                predecessor: None,
                revoked_from: Some(7),
            },
        );
        state.apps.insert(
            Uuid::from_u128(1),
            AppState {
                publisher: p,
                bind_record: 0,
                highest_version: "1.2.3".into(),
            },
        );
        state.services.insert(
            Uuid::from_u128(2),
            ServiceState {
                app_id: Uuid::from_u128(1),
                publisher: p,
                bind_record: 1,
            },
        );
        let index = Index {
            log_id: key.user_id(),
            records: Some(Fingerprint {
                len: 1,
                ino: 2,
                ctime_ns: -3,
                mtime_ns: 4,
            }),
            heads: None,
            size: 2,
            root: [9; 32],
            latest_head: SignedTreeHead::sign(&key, 2, [9; 32], 10),
            state,
        };
        let bytes = index.encode();
        let back = Index::decode(&bytes).expect("decodes");
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.records, index.records);
        assert_eq!(
            back.state.apps[&Uuid::from_u128(1)].highest_version,
            "1.2.3"
        );
        assert!(back.latest_head.verify_signature());
        for cut in [0, 10, bytes.len() - 1] {
            assert!(Index::decode(&bytes[..cut]).is_none());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Index::decode(&longer).is_none());
    }
}
