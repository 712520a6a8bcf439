//! The ownership state: what the records of a log, replayed in order, say about who owns what.
//!
//! This is the index `elastos run` consults. It is rebuilt from the log whenever the log changed
//! behind its back (see [`crate::Ledger`]); replaying also finds records that contradict earlier
//! ones ([`Conflict`]), which is how split views between machines are detected.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::key::PublisherId;
use crate::ownership::{compare_versions, VersionOrder};
use crate::record::{Claim, Record};

/// A record that contradicts an earlier one, or that its signer had no authority to make.
/// Each variant carries the records involved in full.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// One app id bound to two unrelated publishers: a split view.
    #[error("split view: app id {app_id} is bound to two publishers that are not related by rotation; expected one owner per app id\n  known:   {ours}\n  offered: {theirs}")]
    AppOwner {
        /// The app id.
        app_id: Uuid,
        /// The bind already in the log.
        ours: Box<Record>,
        /// The contradicting bind.
        theirs: Box<Record>,
    },
    /// One service UUID bound to two different apps or unrelated publishers: a split view.
    #[error("split view: service {service} is bound to two owners; expected the app and publisher that first provided it\n  known:   {ours}\n  offered: {theirs}")]
    ServiceOwner {
        /// The service UUID.
        service: Uuid,
        /// The bind already in the log.
        ours: Box<Record>,
        /// The contradicting bind.
        theirs: Box<Record>,
    },
    /// One key rotated to two different successors: the key's holder equivocated (or leaked it).
    #[error("split view: key {key} was rotated to two different keys; expected at most one successor\n  known:   {ours}\n  offered: {theirs}")]
    Rotation {
        /// The old key.
        key: PublisherId,
        /// The rotation already in the log.
        ours: Box<Record>,
        /// The contradicting rotation.
        theirs: Box<Record>,
    },
    /// A rotation to a key that already has a place in a rotation chain (which could make a
    /// cycle or merge two chains).
    #[error("rotation to {key}, which is already part of a rotation chain; expected a fresh key\n  record: {record}")]
    KeyAlreadyInChain {
        /// The new key.
        key: PublisherId,
        /// The rotation.
        record: Box<Record>,
    },
    /// A rotation by a key at or after the time it was revoked from.
    #[error("rotation by {key}, which is revoked since {since} (unix seconds); expected a rotation before that\n  record: {record}")]
    RotationAfterRevocation {
        /// The old key.
        key: PublisherId,
        /// Its revocation time.
        since: u64,
        /// The rotation.
        record: Box<Record>,
    },
    /// A revocation signed by a key that is neither the revoked key nor one of its successors.
    #[error("revocation of {key} signed by {signer}; expected the key itself or a key it rotated to\n  record: {record}")]
    UnauthorizedRevocation {
        /// The revoked key.
        key: PublisherId,
        /// Who signed it.
        signer: String,
        /// The revocation.
        record: Box<Record>,
    },
}

/// A contradiction found by [`State::apply`], naming the earlier record by its index.
#[derive(Debug)]
pub(crate) enum Clash {
    AppOwner { app_id: Uuid, existing: u64 },
    ServiceOwner { service: Uuid, existing: u64 },
    Rotation { key: PublisherId, existing: u64 },
    KeyAlreadyInChain { key: PublisherId },
    RotationAfterRevocation { key: PublisherId, since: u64 },
    UnauthorizedRevocation { key: PublisherId },
}

impl Clash {
    /// The public form, with the records looked up: `theirs` is the record that was applied.
    pub(crate) fn into_conflict(self, theirs: &Record, lookup: impl Fn(u64) -> Record) -> Conflict {
        let theirs = Box::new(theirs.clone());
        match self {
            Clash::AppOwner { app_id, existing } => Conflict::AppOwner {
                app_id,
                ours: Box::new(lookup(existing)),
                theirs,
            },
            Clash::ServiceOwner { service, existing } => Conflict::ServiceOwner {
                service,
                ours: Box::new(lookup(existing)),
                theirs,
            },
            Clash::Rotation { key, existing } => Conflict::Rotation {
                key,
                ours: Box::new(lookup(existing)),
                theirs,
            },
            Clash::KeyAlreadyInChain { key } => Conflict::KeyAlreadyInChain {
                key,
                record: theirs,
            },
            Clash::RotationAfterRevocation { key, since } => Conflict::RotationAfterRevocation {
                key,
                since,
                record: theirs,
            },
            Clash::UnauthorizedRevocation { key } => Conflict::UnauthorizedRevocation {
                key,
                signer: hex::encode(theirs.signer),
                record: theirs,
            },
        }
    }
}

/// What the log says about one publisher key.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyState {
    /// The key it rotated to, when, and the index of the rotation record.
    pub successor: Option<(PublisherId, u64, u64)>,
    /// The key that rotated to it.
    pub predecessor: Option<PublisherId>,
    /// From when it is revoked.
    pub revoked_from: Option<u64>,
}

/// What the log says about one app id.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    /// The publisher of the first bind.
    pub publisher: PublisherId,
    /// Index of that bind record.
    pub bind_record: u64,
    /// The highest version seen.
    pub highest_version: String,
}

/// What the log says about one service UUID.
#[derive(Clone, Debug)]
pub(crate) struct ServiceState {
    pub app_id: Uuid,
    pub publisher: PublisherId,
    pub bind_record: u64,
}

/// The ownership state after replaying a log.
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub keys: BTreeMap<PublisherId, KeyState>,
    pub apps: BTreeMap<Uuid, AppState>,
    pub services: BTreeMap<Uuid, ServiceState>,
}

impl State {
    /// The last key of the rotation chain starting at `key` (`key` itself if it never rotated).
    pub fn current(&self, key: PublisherId) -> PublisherId {
        let mut key = key;
        // A chain never loops (KeyAlreadyInChain), and each step is one record, so this ends.
        while let Some((next, _, _)) = self.keys.get(&key).and_then(|k| k.successor) {
            key = next;
        }
        key
    }

    /// The keys that rotated into `key`, nearest first.
    pub fn predecessors(&self, key: PublisherId) -> Vec<PublisherId> {
        let mut out = Vec::new();
        let mut key = key;
        while let Some(previous) = self.keys.get(&key).and_then(|k| k.predecessor) {
            out.push(previous);
            key = previous;
        }
        out
    }

    /// Whether `later` is `key` or a key that `key` rotated to, directly or through a chain.
    pub fn is_successor_or_self(&self, key: PublisherId, later: PublisherId) -> bool {
        let mut key = key;
        loop {
            if key == later {
                return true;
            }
            match self.keys.get(&key).and_then(|k| k.successor) {
                Some((next, _, _)) => key = next,
                None => return false,
            }
        }
    }

    /// Whether `a` and `b` belong to the same rotation chain.
    pub fn related(&self, a: PublisherId, b: PublisherId) -> bool {
        self.current(a) == self.current(b)
    }

    /// Applies record number `index`, whose own signatures were already checked. Leaves the
    /// state unchanged when it returns a clash.
    pub fn apply(&mut self, index: u64, record: &Record) -> Result<(), Clash> {
        match &record.claim {
            Claim::Bind {
                app_id,
                publisher,
                first_version,
                ..
            } => self.see_app(index, *app_id, *publisher, first_version)?,
            Claim::BindService {
                service,
                app_id,
                publisher,
                ..
            } => match self.services.get(service) {
                Some(known)
                    if known.app_id == *app_id && self.related(known.publisher, *publisher) => {}
                Some(known) => {
                    return Err(Clash::ServiceOwner {
                        service: *service,
                        existing: known.bind_record,
                    })
                }
                None => {
                    self.services.insert(
                        *service,
                        ServiceState {
                            app_id: *app_id,
                            publisher: *publisher,
                            bind_record: index,
                        },
                    );
                }
            },
            Claim::Rotate {
                old_key,
                new_key,
                time,
            } => {
                let old = self.keys.get(old_key).cloned().unwrap_or_default();
                if let Some((successor, _, existing)) = old.successor {
                    if successor == *new_key {
                        return Ok(()); // the same rotation, seen again
                    }
                    return Err(Clash::Rotation {
                        key: *old_key,
                        existing,
                    });
                }
                if let Some(since) = old.revoked_from.filter(|since| time >= since) {
                    return Err(Clash::RotationAfterRevocation {
                        key: *old_key,
                        since,
                    });
                }
                let new = self.keys.get(new_key);
                if new.is_some_and(|k| k.successor.is_some() || k.predecessor.is_some()) {
                    return Err(Clash::KeyAlreadyInChain { key: *new_key });
                }
                self.keys.entry(*old_key).or_default().successor = Some((*new_key, *time, index));
                self.keys.entry(*new_key).or_default().predecessor = Some(*old_key);
            }
            Claim::Revoke { key, from_time, .. } => {
                if !self.is_successor_or_self(*key, PublisherId(record.signer)) {
                    return Err(Clash::UnauthorizedRevocation { key: *key });
                }
                let revoked = &mut self.keys.entry(*key).or_default().revoked_from;
                *revoked = Some(revoked.map_or(*from_time, |t| t.min(*from_time)));
            }
            Claim::Version {
                app_id,
                publisher,
                version,
                ..
            } => self.see_app(index, *app_id, *publisher, version)?,
        }
        Ok(())
    }

    /// A bind or version record for `app_id`: the first one binds the app to `publisher`; later
    /// ones must come from the same rotation chain and may raise the highest version. (A version
    /// record always follows its bind in a log the ledger wrote; one from another owner is a
    /// contradiction like a second bind.)
    fn see_app(
        &mut self,
        index: u64,
        app_id: Uuid,
        publisher: PublisherId,
        version: &str,
    ) -> Result<(), Clash> {
        let Some(owner) = self.apps.get(&app_id).map(|app| app.publisher) else {
            self.apps.insert(
                app_id,
                AppState {
                    publisher,
                    bind_record: index,
                    highest_version: version.to_owned(),
                },
            );
            return Ok(());
        };
        let related = self.related(owner, publisher);
        let app = self.apps.get_mut(&app_id).expect("looked up above");
        if !related {
            return Err(Clash::AppOwner {
                app_id,
                existing: app.bind_record,
            });
        }
        if compare_versions(&app.highest_version, version) == VersionOrder::Higher {
            app.highest_version = version.to_owned();
        }
        Ok(())
    }
}
