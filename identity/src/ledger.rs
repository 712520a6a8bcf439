//! The ledger: an append-only log of [`Record`]s under a Merkle tree, with signed tree heads,
//! inclusion and consistency proofs, export/import between machines, and the ownership index
//! that `elastos run` consults.
//!
//! Files in the ledger directory (mode 0700, like the rest of the user's state):
//!
//! - `records.jsonl`: one [`Record`] as JSON per line, in log order; line n is leaf n.
//! - `heads.jsonl`: every [`SignedTreeHead`] this ledger issued, one per line.
//! - `state.bin`: the ownership index, rebuilt from the log when missing or stale.
//! - `lock`: taken (`flock`) by every writer and by rebuilds.
//! - `records.jsonl.torn`, `heads.jsonl.torn`: bytes of torn last lines cut off by a recovery.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use sha2::Sha256;
use uuid::Uuid;

use crate::fsutil::{create_private_dir, write_atomically, Replace};
use crate::head::{ConsistencyProof, InclusionProof, SignedTreeHead};
use crate::index::{fingerprint, Index};
use crate::key::{PublisherId, UserId, UserKey};
use crate::ownership::{compare_versions, Offer, Ownership, OwnershipError, VersionOrder};
use crate::record::{Claim, Record, RecordError, RecordId};
use crate::state::{Conflict, State};

/// The log of records.
pub const RECORDS_FILE: &str = "records.jsonl";
/// Every tree head issued.
pub const HEADS_FILE: &str = "heads.jsonl";
/// The ownership index.
pub const STATE_FILE: &str = "state.bin";
const LOCK_FILE: &str = "lock";
/// The `format` field of an export file.
pub const EXPORT_FORMAT: &str = "elastos-ledger-export-v1";

type Tree = MemoryBackedTree<Sha256, Vec<u8>>;

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A ledger file could not be read or written.
    #[error("cannot access ledger file {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// There is no ledger in the directory.
    #[error("no ledger in {}: {RECORDS_FILE} is missing; expected a ledger made by Ledger::create", dir.display())]
    Missing {
        /// The ledger directory.
        dir: PathBuf,
    },
    /// `create` found a ledger already there.
    #[error("a ledger already exists in {}; expected an empty directory; hint: open it instead", dir.display())]
    AlreadyExists {
        /// The ledger directory.
        dir: PathBuf,
    },
    /// The log failed verification when its index had to be rebuilt.
    #[error("ledger {} failed verification, refusing to use it: {report}", dir.display())]
    Invalid {
        /// The ledger directory.
        dir: PathBuf,
        /// Everything found.
        report: Box<VerifyReport>,
    },
    /// A record handed to `append` does not verify on its own.
    #[error("refusing to append")]
    InvalidRecord {
        /// What is wrong with it.
        source: RecordError,
    },
    /// A record contradicts the log (a split view) or was made without authority.
    #[error("refusing to append: {conflict}")]
    Conflict {
        /// Both sides, in full.
        conflict: Box<Conflict>,
    },
    /// An imported log has the same identity (user key) as this one but another history.
    #[error("fork: log {log_id} has two histories that agree on the first {first_difference} records and differ at record {first_difference}; expected one history per log (one user key signs one log)\n  this log ({ours_head}): {ours}\n  imported ({theirs_head}): {theirs}")]
    Fork {
        /// The log identity both claim.
        log_id: UserId,
        /// Index of the first record that differs.
        first_difference: u64,
        /// Our record at that index.
        ours: Box<Record>,
        /// Theirs.
        theirs: Box<Record>,
        /// Our first tree head covering it, described, or "no tree head".
        ours_head: String,
        /// Their first tree head covering it, described, or "no tree head".
        theirs_head: String,
    },
    /// An export file is not JSON of the expected shape.
    #[error("{} is not a ledger export: {reason}; expected a file written by Ledger::export ({EXPORT_FORMAT})", path.display())]
    ImportMalformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An export file failed verification.
    #[error("refusing to import {}: it failed verification: {report}", path.display())]
    ImportRefused {
        /// The file.
        path: PathBuf,
        /// Everything found.
        report: Box<VerifyReport>,
    },
    /// A proof was asked for a record the log does not have.
    #[error("no record {index}: the log has {size} records; expected an index below {size}")]
    NoSuchRecord {
        /// The index asked for.
        index: u64,
        /// The log size.
        size: u64,
    },
    /// A consistency proof was asked from an impossible size.
    #[error("cannot prove consistency from size {old_size} to {size}; expected an old size from 1 to {size}")]
    BadOldSize {
        /// The old size asked for.
        old_size: u64,
        /// The log size.
        size: u64,
    },
}

/// One thing found wrong by a verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A line that is not a record or tree head.
    #[error("{file} line {line}: {reason}")]
    MalformedLine {
        /// The file.
        file: &'static str,
        /// 1-based line number.
        line: u64,
        /// Why it does not parse.
        reason: String,
    },
    /// A last line without its newline: an interrupted write.
    #[error("{file} ends with a torn line of {bytes} bytes (an interrupted write); expected every line to end with a newline")]
    TornTail {
        /// The file.
        file: &'static str,
        /// Length of the torn line.
        bytes: u64,
    },
    /// A record whose signature (or form) is wrong.
    #[error("record {index}")]
    BadRecord {
        /// The record index (line number - 1).
        index: u64,
        /// What is wrong.
        source: RecordError,
    },
    /// A record that contradicts an earlier one.
    #[error("record {index}: {conflict}")]
    Conflict {
        /// The record index.
        index: u64,
        /// Both sides.
        conflict: Box<Conflict>,
    },
    /// A tree head whose signature fails or that another key signed.
    #[error("{head} is not signed by {expected}: signer {signer}, signature {}; expected a valid signature by this log's user key", if *.signature_valid { "valid" } else { "invalid" })]
    HeadBadSignature {
        /// The head, described.
        head: String,
        /// The key it names.
        signer: UserId,
        /// Whether its signature verifies for that key.
        signature_valid: bool,
        /// The log's key.
        expected: UserId,
    },
    /// A tree head whose root is not the root of the log's first `size` records: those records
    /// were changed, replaced or reordered after the head was signed.
    #[error("{head} is not consistent with the log: its first {size} records hash to {}..; records changed at or after index {changed_from} ({since}); expected the log to only ever grow", &hex::encode(actual_root)[..16])]
    HeadInconsistent {
        /// The head, described.
        head: String,
        /// Its size.
        size: u64,
        /// The root the log has at that size.
        actual_root: [u8; 32],
        /// The first index that can have changed: the size of the largest earlier head that
        /// still matches (0 if none).
        changed_from: u64,
        /// Which head still matches, described.
        since: String,
    },
    /// A tree head covering more records than the log has: the log was truncated.
    #[error("{head} covers {size} records but the log has only {log_size}: records {log_size}..{size} are missing (the log was truncated); expected the log to only ever grow")]
    HeadBeyondLog {
        /// The head, described.
        head: String,
        /// Its size.
        size: u64,
        /// The records the log has.
        log_size: u64,
    },
}

/// The result of a full verification.
#[derive(Debug)]
pub struct VerifyReport {
    /// Records in the log.
    pub records: u64,
    /// Tree heads checked.
    pub heads: u64,
    /// The Merkle root of the whole log.
    pub root: [u8; 32],
    /// Everything found wrong; empty when the log is sound.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing was found wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records, {} tree heads, root {}: ",
            self.records,
            self.heads,
            hex::encode(self.root)
        )?;
        if self.problems.is_empty() {
            return f.write_str("ok");
        }
        write!(f, "{} problems", self.problems.len())?;
        for problem in &self.problems {
            // With its causes: no message repeats its source.
            write!(f, "\n  - {problem}")?;
            let mut cause = std::error::Error::source(problem);
            while let Some(source) = cause {
                write!(f, ": {source}")?;
                cause = source.source();
            }
        }
        Ok(())
    }
}

/// A torn last line cut off by recovery; its bytes were appended to `<file>.torn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The file that ended with it.
    pub file: PathBuf,
    /// Where the torn line started (the file's new length).
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
}

/// What [`Ledger::import`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// Records appended.
    pub added: u64,
    /// Records already in this log.
    pub already_known: u64,
    /// The tree head issued after appending, if anything was added.
    pub head: Option<SignedTreeHead>,
}

/// One line of `records.jsonl`, parsed or not.
#[allow(clippy::large_enum_variant)] // almost every line is a record; boxing would cost an allocation each
enum Entry {
    Record(Record),
    Malformed { raw: Vec<u8>, reason: String },
}

/// A head to check, with how to describe it.
struct HeadToCheck {
    head: SignedTreeHead,
    describe: String,
}

/// The outcome of replaying a log.
struct Checked {
    records: Vec<Record>,
    tree: Tree,
    state: State,
    problems: Vec<Problem>,
}

/// Replays `entries`: checks every record's signature and its consistency with the earlier
/// ones, builds the Merkle tree, and checks every head against the tree at its size.
fn check_log(entries: Vec<Entry>, heads: Vec<HeadToCheck>, log_id: UserId) -> Checked {
    let mut problems = Vec::new();
    let mut records: Vec<Option<Record>> = Vec::with_capacity(entries.len());
    let mut tree = Tree::new();
    let mut state = State::default();

    let mut heads: Vec<HeadToCheck> = heads
        .into_iter()
        .filter(|h| {
            let valid = h.head.verify_signature();
            if valid && h.head.signer == log_id {
                return true;
            }
            problems.push(Problem::HeadBadSignature {
                head: h.describe.clone(),
                signer: h.head.signer,
                signature_valid: valid,
                expected: log_id,
            });
            false
        })
        .collect();
    heads.sort_by_key(|h| h.head.size);
    let mut heads = heads.into_iter().peekable();
    let mut last_match: Option<(u64, String)> = None;
    let mut check_heads_at = |size: u64, root: [u8; 32], problems: &mut Vec<Problem>| {
        while let Some(h) = heads.next_if(|h| h.head.size == size) {
            if h.head.root == root {
                last_match = Some((size, h.describe));
            } else {
                let (changed_from, since) = last_match
                    .clone()
                    .unwrap_or_else(|| (0, "no earlier tree head matches".to_owned()));
                let since = if changed_from > 0 {
                    format!("{since} still matches")
                } else {
                    since
                };
                problems.push(Problem::HeadInconsistent {
                    head: h.describe,
                    size,
                    actual_root: root,
                    changed_from,
                    since,
                });
            }
        }
    };
    check_heads_at(0, root_bytes(&tree), &mut problems);

    for (index, entry) in entries.into_iter().enumerate() {
        let index = index as u64;
        match entry {
            Entry::Record(record) => {
                if let Err(source) = record.verify() {
                    problems.push(Problem::BadRecord { index, source });
                } else if let Err(clash) = state.apply(index, &record) {
                    let lookup = |i: u64| {
                        records[i as usize]
                            .clone()
                            .expect("a clash names a record that was applied")
                    };
                    problems.push(Problem::Conflict {
                        index,
                        conflict: Box::new(clash.into_conflict(&record, lookup)),
                    });
                }
                tree.push(record.leaf_bytes());
                records.push(Some(record));
            }
            Entry::Malformed { raw, reason } => {
                problems.push(Problem::MalformedLine {
                    file: RECORDS_FILE,
                    line: index + 1,
                    reason,
                });
                tree.push(raw);
                records.push(None);
            }
        }
        check_heads_at(tree.len(), root_bytes(&tree), &mut problems);
    }
    for h in heads {
        problems.push(Problem::HeadBeyondLog {
            head: h.describe,
            size: h.head.size,
            log_size: tree.len(),
        });
    }
    Checked {
        records: records.into_iter().flatten().collect(),
        tree,
        state,
        problems,
    }
}

fn root_bytes(tree: &Tree) -> [u8; 32] {
    tree.root()
        .as_bytes()
        .as_slice()
        .try_into()
        .expect("SHA-256 output is 32 bytes")
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An export file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportFile {
    format: String,
    log_id: UserId,
    records: Vec<Record>,
    heads: Vec<SignedTreeHead>,
}

/// Whether the caller of [`Ledger::loaded_log`] holds the ledger's lock.
#[derive(Clone, Copy)]
enum Lock {
    Held,
    NotHeld,
}

/// The log, loaded for appending, proofs and exports.
struct LoadedLog {
    records: Vec<Record>,
    tree: Tree,
}

/// An open ledger: the log of one user key, and its ownership index.
///
/// Opening is cheap when the index is fresh (two `stat`s and one small JSON file); it replays
/// and fully verifies the log otherwise. See the crate documentation for the trust argument.
pub struct Ledger {
    dir: PathBuf,
    key: UserKey,
    size: u64,
    root: [u8; 32],
    latest_head: SignedTreeHead,
    state: State,
    log: Option<LoadedLog>,
    recovered: Vec<TornTail>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.dir)
            .field("log_id", &self.key.user_id())
            .field("size", &self.size)
            .field("root", &hex::encode(self.root))
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Whether `dir` holds a ledger (its `records.jsonl` exists).
    pub fn exists(dir: &Path) -> bool {
        fs::symlink_metadata(dir.join(RECORDS_FILE)).is_ok()
    }

    /// Makes a new, empty ledger in `dir` (created with mode 0700) owned by `key`, and issues
    /// its first tree head (size 0). Refuses if a ledger exists.
    pub fn create(dir: &Path, key: UserKey) -> Result<Ledger, LedgerError> {
        if !Self::make_files(dir)? {
            return Err(LedgerError::AlreadyExists {
                dir: dir.to_owned(),
            });
        }
        Self::open(dir, key)
    }

    /// Creates `dir` and an empty log under the ledger's lock, unless a log exists (then
    /// returns false). The lock makes two first runs at the same time agree on one ledger.
    fn make_files(dir: &Path) -> Result<bool, LedgerError> {
        create_private_dir(dir).map_err(|source| LedgerError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let _lock = lock_dir(dir)?;
        if Self::exists(dir) {
            return Ok(false);
        }
        // The heads file first: a log without heads is a ledger whose first head is missing
        // (the next open issues it); records.jsonl is what makes the directory a ledger.
        for name in [HEADS_FILE, RECORDS_FILE] {
            let path = dir.join(name);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|source| LedgerError::Io { path, source })?;
        }
        Ok(true)
    }

    /// Opens the ledger in `dir`, owned by `key`. Uses the index if it is fresh; otherwise
    /// recovers torn last lines, replays and verifies the whole log, issues a tree head if the
    /// last one does not cover the log, and rewrites the index. Refuses a log that fails
    /// verification ([`LedgerError::Invalid`]).
    pub fn open(dir: &Path, key: UserKey) -> Result<Ledger, LedgerError> {
        if !Self::exists(dir) {
            return Err(LedgerError::Missing {
                dir: dir.to_owned(),
            });
        }
        let mut ledger = Ledger {
            dir: dir.to_owned(),
            // Replaced by the index or the rebuild below before anyone can see it.
            latest_head: SignedTreeHead {
                size: 0,
                root: [0; 32],
                time: 0,
                signer: key.user_id(),
                signature: [0; 64],
            },
            key,
            size: 0,
            root: [0; 32],
            state: State::default(),
            log: None,
            recovered: Vec::new(),
        };
        if !ledger.load_state_if_fresh()? {
            let _lock = ledger.lock()?;
            if !ledger.load_state_if_fresh()? {
                ledger.rebuild()?;
            }
        }
        Ok(ledger)
    }

    /// The policy hook of `elastos run`: opens the ledger, or creates it when there is none and
    /// no other state exists. When the ledger is missing but `app_state_exists` (app homes or
    /// installed apps are there), returns [`OwnershipError::LedgerMissing`]: every binding was
    /// lost, so the caller must not let any bundle reuse that state (the app home must be keyed
    /// by publisher as well as app id, or the user must restore the ledger first).
    pub fn open_for_run(
        dir: &Path,
        key: UserKey,
        app_state_exists: bool,
    ) -> Result<Ledger, OwnershipError> {
        if Self::exists(dir) {
            return Ok(Self::open(dir, key)?);
        }
        if app_state_exists {
            return Err(OwnershipError::LedgerMissing {
                dir: dir.to_owned(),
            });
        }
        // Another process may have made it meanwhile: then this opens theirs.
        Self::make_files(dir)?;
        Ok(Self::open(dir, key)?)
    }

    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user key that attests records and signs tree heads.
    pub fn user_key(&self) -> &UserKey {
        &self.key
    }

    /// The log's identity: the user id of its key.
    pub fn user_id(&self) -> UserId {
        self.key.user_id()
    }

    /// Number of records.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Merkle root of the whole log.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// The last tree head issued; it covers the whole log.
    pub fn latest_head(&self) -> &SignedTreeHead {
        &self.latest_head
    }

    /// Torn last lines that opening this ledger cut off (empty normally).
    pub fn recovered(&self) -> &[TornTail] {
        &self.recovered
    }

    /// The key that now speaks for `key`: the end of its rotation chain.
    pub fn current_key(&self, key: PublisherId) -> PublisherId {
        self.state.current(key)
    }

    /// The keys that rotated into `key`, nearest first (for [`crate::TrustList::allows`]).
    pub fn predecessors(&self, key: PublisherId) -> Vec<PublisherId> {
        self.state.predecessors(key)
    }

    /// The highest version of `app_id` seen, if it is bound.
    pub fn highest_version(&self, app_id: Uuid) -> Option<&str> {
        self.state
            .apps
            .get(&app_id)
            .map(|a| a.highest_version.as_str())
    }

    /// All records, in log order.
    pub fn records(&mut self) -> Result<&[Record], LedgerError> {
        Ok(&self.loaded_log(Lock::NotHeld)?.records)
    }

    /// The ownership decision for a verified bundle (from the index, no I/O). Accepts
    /// [`Ownership::New`] or [`Ownership::OwnedBy`]; refuses another owner, a revoked or
    /// rotated-away key, and a downgrade unless `allow_downgrade`.
    pub fn check_bundle(
        &self,
        offer: &Offer,
        allow_downgrade: bool,
    ) -> Result<Ownership, OwnershipError> {
        self.state.check_bundle(offer, allow_downgrade)
    }

    /// The ownership decision for app `app_id` of `publisher` offering `service`.
    pub fn check_service(
        &self,
        service: Uuid,
        app_id: Uuid,
        publisher: PublisherId,
    ) -> Result<Ownership, OwnershipError> {
        self.state.check_service(service, app_id, publisher)
    }

    /// Records a run of an accepted bundle: appends a bind (attested by the user key) when the
    /// app id is new, a version record when the version is higher than any seen, nothing
    /// otherwise. Returns the new tree head if something was appended.
    ///
    /// Refuses what [`Ledger::check_bundle`] refuses (except a downgrade, which the caller may
    /// have allowed: it is recorded as a run but never lowers the highest version), so a refused
    /// bundle can never be bound. The append re-checks against the log as it is under the lock,
    /// so a binding made meanwhile by another process is a [`LedgerError::Conflict`].
    pub fn record_run(&mut self, offer: &Offer) -> Result<Option<SignedTreeHead>, OwnershipError> {
        self.state.check_bundle(offer, true)?;
        let claim = match self.state.apps.get(&offer.app_id) {
            None => Claim::Bind {
                app_id: offer.app_id,
                publisher: offer.publisher,
                first_version: offer.version.clone(),
                bundle_digest: offer.digest,
                time: now(),
            },
            Some(app)
                if compare_versions(&app.highest_version, &offer.version)
                    == VersionOrder::Higher =>
            {
                Claim::Version {
                    app_id: offer.app_id,
                    publisher: offer.publisher,
                    version: offer.version.clone(),
                    bundle_digest: offer.digest,
                    time: now(),
                }
            }
            Some(_) => return Ok(None),
        };
        let record = Record::sign(claim, &self.key);
        Ok(self.append(record).map(|(_, head)| Some(head))?)
    }

    /// Records that app `app_id` of `publisher` provides `service`, if nobody owns it yet.
    /// Returns the new tree head if something was appended. Refuses what
    /// [`Ledger::check_service`] refuses, and (under the lock) a binding made meanwhile by
    /// another process ([`LedgerError::Conflict`]).
    pub fn record_service(
        &mut self,
        service: Uuid,
        app_id: Uuid,
        publisher: PublisherId,
    ) -> Result<Option<SignedTreeHead>, OwnershipError> {
        if let Ownership::OwnedBy { .. } = self.state.check_service(service, app_id, publisher)? {
            return Ok(None);
        }
        let claim = Claim::BindService {
            service,
            app_id,
            publisher,
            time: now(),
        };
        let record = Record::sign(claim, &self.key);
        Ok(self.append(record).map(|(_, head)| Some(head))?)
    }

    /// Appends one record and issues a tree head covering it. The record must verify on its
    /// own and agree with the log. The line is written with one `write` in append mode and
    /// synced before the head is written, so a crash leaves at most a torn last line, which
    /// the next open cuts off and reports ([`Ledger::recovered`]).
    pub fn append(&mut self, record: Record) -> Result<(u64, SignedTreeHead), LedgerError> {
        let _lock = self.lock()?;
        self.refresh_locked()?;
        let index = self.size;
        let head = self.append_locked(vec![record])?;
        Ok((index, head))
    }

    /// Fully verifies this ledger's files (see [`Ledger::verify_dir`]).
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        Self::verify_dir(&self.dir, self.key.user_id())
    }

    /// Fully verifies the ledger in `dir` whose heads `log_id` signs, without changing anything:
    /// recomputes the tree, checks every record's signature and its agreement with the earlier
    /// records, and checks every tree head ever issued (and the index's last head) against the
    /// tree at its size. A rewritten, reordered or truncated log is reported with the heads it
    /// contradicts.
    pub fn verify_dir(dir: &Path, log_id: UserId) -> Result<VerifyReport, LedgerError> {
        if !Self::exists(dir) {
            return Err(LedgerError::Missing {
                dir: dir.to_owned(),
            });
        }
        let (entries, mut problems) = read_records(&dir.join(RECORDS_FILE))?;
        let (heads, head_problems) = read_heads(dir, log_id)?;
        problems.extend(head_problems);
        let head_count = heads.len() as u64;
        let checked = check_log(entries, heads, log_id);
        problems.extend(checked.problems);
        Ok(VerifyReport {
            records: checked.tree.len(),
            heads: head_count,
            root: root_bytes(&checked.tree),
            problems,
        })
    }

    /// An inclusion proof of record `index` in the whole log, and the tree head it verifies
    /// against.
    pub fn inclusion_proof(
        &mut self,
        index: u64,
    ) -> Result<(InclusionProof, SignedTreeHead), LedgerError> {
        let log = self.loaded_log(Lock::NotHeld)?;
        if index >= log.tree.len() {
            return Err(LedgerError::NoSuchRecord {
                index,
                size: log.tree.len(),
            });
        }
        let proof = InclusionProof {
            index,
            size: log.tree.len(),
            path: log.tree.prove_inclusion(index as usize).as_bytes().to_vec(),
        };
        Ok((proof, self.latest_head.clone()))
    }

    /// A consistency proof from the log's first `old_size` records to the whole log, and the
    /// tree head of the whole log.
    pub fn consistency_proof(
        &mut self,
        old_size: u64,
    ) -> Result<(ConsistencyProof, SignedTreeHead), LedgerError> {
        let log = self.loaded_log(Lock::NotHeld)?;
        let size = log.tree.len();
        if old_size == 0 || old_size > size {
            return Err(LedgerError::BadOldSize { old_size, size });
        }
        let proof = ConsistencyProof {
            old_size,
            new_size: size,
            path: log
                .tree
                .prove_consistency((size - old_size) as usize)
                .as_bytes()
                .to_vec(),
        };
        Ok((proof, self.latest_head.clone()))
    }

    /// Writes the whole log and every tree head to `path` (mode 0600, atomically), for
    /// [`Ledger::import`] on another machine.
    pub fn export(&mut self, path: &Path) -> Result<(), LedgerError> {
        let log_id = self.key.user_id();
        let (heads, _) = read_heads(&self.dir, log_id)?;
        let export = ExportFile {
            format: EXPORT_FORMAT.to_owned(),
            log_id,
            records: self.loaded_log(Lock::NotHeld)?.records.clone(),
            heads: heads.into_iter().map(|h| h.head).collect(),
        };
        let json = serde_json::to_vec(&export).expect("an export always serializes");
        write_atomically(path, &json, 0o600, Replace::Yes).map_err(|source| LedgerError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Merges the log exported to `path` into this one.
    ///
    /// First the other log is verified as a whole, like [`Ledger::verify`] (signatures,
    /// agreement, every head of it against its tree); then, if it has this log's identity, its
    /// history must agree with this one on their common length ([`LedgerError::Fork`]
    /// otherwise). Then its records that this log lacks are appended in their order, each
    /// checked against everything known: a record that contradicts this log (two owners of one
    /// app id or service, two successors of one key) refuses the whole import with both
    /// records ([`LedgerError::Conflict`]), and nothing is appended.
    pub fn import(&mut self, path: &Path) -> Result<ImportReport, LedgerError> {
        let malformed = |reason: String| LedgerError::ImportMalformed {
            path: path.to_owned(),
            reason,
        };
        let text = fs::read(path).map_err(|source| LedgerError::Io {
            path: path.to_owned(),
            source,
        })?;
        let export: ExportFile =
            serde_json::from_slice(&text).map_err(|e| malformed(e.to_string()))?;
        if export.format != EXPORT_FORMAT {
            return Err(malformed(format!("format is {:?}", export.format)));
        }
        let their_heads: Vec<HeadToCheck> = export
            .heads
            .iter()
            .enumerate()
            .map(|(n, head)| HeadToCheck {
                describe: format!("imported {}", head.describe(n)),
                head: head.clone(),
            })
            .collect();
        let head_count = their_heads.len() as u64;
        let entries = export.records.into_iter().map(Entry::Record).collect();
        let theirs = check_log(entries, their_heads, export.log_id);
        if !theirs.problems.is_empty() {
            return Err(LedgerError::ImportRefused {
                path: path.to_owned(),
                report: Box::new(VerifyReport {
                    records: theirs.tree.len(),
                    heads: head_count,
                    root: root_bytes(&theirs.tree),
                    problems: theirs.problems,
                }),
            });
        }

        let _lock = self.lock()?;
        self.refresh_locked()?;
        let log_id = self.key.user_id();
        let ours = &self.loaded_log(Lock::Held)?.records;
        if export.log_id == log_id {
            let first_difference = ours
                .iter()
                .zip(&theirs.records)
                .position(|(a, b)| a.leaf_bytes() != b.leaf_bytes());
            if let Some(i) = first_difference {
                let (our_heads, _) = read_heads(&self.dir, log_id)?;
                let covering = |heads: &mut dyn Iterator<Item = (String, u64)>| {
                    heads
                        .filter(|(_, size)| *size > i as u64)
                        .min_by_key(|(_, size)| *size)
                        .map_or_else(|| "no tree head".to_owned(), |(d, _)| d)
                };
                let ours_head =
                    covering(&mut our_heads.into_iter().map(|h| (h.describe, h.head.size)));
                let theirs_head = covering(
                    &mut export
                        .heads
                        .iter()
                        .enumerate()
                        .map(|(n, h)| (h.describe(n), h.size)),
                );
                let ours = &self.loaded_log(Lock::Held)?.records;
                return Err(LedgerError::Fork {
                    log_id,
                    first_difference: i as u64,
                    ours: Box::new(ours[i].clone()),
                    theirs: Box::new(theirs.records[i].clone()),
                    ours_head,
                    theirs_head,
                });
            }
        }
        let mut known: HashSet<RecordId> = ours.iter().map(Record::id).collect();
        let total = theirs.records.len() as u64;
        let new: Vec<Record> = theirs
            .records
            .into_iter()
            .filter(|r| known.insert(r.id()))
            .collect();
        let added = new.len() as u64;
        let head = if new.is_empty() {
            None
        } else {
            Some(self.append_locked(new)?)
        };
        Ok(ImportReport {
            added,
            already_known: total - added,
            head,
        })
    }

    // ---- internals ---------------------------------------------------------------------------

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn io_error(&self, name: &str) -> impl FnOnce(io::Error) -> LedgerError {
        let path = self.path(name);
        move |source| LedgerError::Io { path, source }
    }

    fn lock(&self) -> Result<File, LedgerError> {
        lock_dir(&self.dir)
    }

    /// Loads `state.bin` if it was built from the files as they are now, for this key.
    fn load_state_if_fresh(&mut self) -> Result<bool, LedgerError> {
        let text = match fs::read(self.path(STATE_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error(STATE_FILE)(e)),
        };
        // An unreadable index is not an error: it is rebuilt from the log.
        let Some(file) = Index::decode(&text) else {
            return Ok(false);
        };
        let records = fingerprint(&self.path(RECORDS_FILE)).map_err(self.io_error(RECORDS_FILE))?;
        let heads = fingerprint(&self.path(HEADS_FILE)).map_err(self.io_error(HEADS_FILE))?;
        let fresh =
            file.log_id == self.key.user_id() && file.records == records && file.heads == heads;
        if fresh {
            if self.log.as_ref().is_some_and(|l| l.tree.len() != file.size) {
                self.log = None;
            }
            self.size = file.size;
            self.root = file.root;
            self.latest_head = file.latest_head;
            self.state = file.state;
        }
        Ok(fresh)
    }

    /// With the lock held: makes sure the index describes the files as they are now.
    fn refresh_locked(&mut self) -> Result<(), LedgerError> {
        if !self.load_state_if_fresh()? {
            self.rebuild()?;
        }
        Ok(())
    }

    /// With the lock held: recovers torn tails, verifies everything, rebuilds the index.
    fn rebuild(&mut self) -> Result<(), LedgerError> {
        for name in [RECORDS_FILE, HEADS_FILE] {
            if let Some(torn) = cut_torn_tail(&self.path(name)).map_err(self.io_error(name))? {
                self.recovered.push(torn);
            }
        }
        let log_id = self.key.user_id();
        let (entries, mut problems) = read_records(&self.path(RECORDS_FILE))?;
        let (mut heads, head_problems) = read_heads(&self.dir, log_id)?;
        problems.extend(head_problems);
        let head_count = heads.len() as u64;
        let last_head = heads.last().map(|h| h.head.clone());
        heads.extend(self.previous_index_head());
        let checked = check_log(entries, heads, log_id);
        problems.extend(checked.problems);
        if !problems.is_empty() {
            return Err(LedgerError::Invalid {
                dir: self.dir.clone(),
                report: Box::new(VerifyReport {
                    records: checked.tree.len(),
                    heads: head_count,
                    root: root_bytes(&checked.tree),
                    problems,
                }),
            });
        }
        self.size = checked.tree.len();
        self.root = root_bytes(&checked.tree);
        self.state = checked.state;
        self.log = Some(LoadedLog {
            records: checked.records,
            tree: checked.tree,
        });
        match last_head.filter(|h| h.size == self.size) {
            Some(head) => {
                self.latest_head = head;
                self.write_state()
            }
            // The last write was interrupted between the record and its head, or the log is
            // new: sign a head for the log as it is (this also writes the index).
            None => self.issue_head().map(|_| ()),
        }
    }

    /// The last head of the index being replaced, if it is this log's: a check that survives
    /// the loss of `heads.jsonl`.
    fn previous_index_head(&self) -> Option<HeadToCheck> {
        let text = fs::read(self.path(STATE_FILE)).ok()?;
        let file = Index::decode(&text)?;
        (file.log_id == self.key.user_id()).then(|| HeadToCheck {
            describe: format!(
                "the index's last tree head (size {}, root {}..)",
                file.latest_head.size,
                &hex::encode(file.latest_head.root)[..16]
            ),
            head: file.latest_head,
        })
    }

    /// The log in memory, loaded (without re-verifying signatures: the index is fresh, so the
    /// file is the one that was verified) on first use. If the file no longer matches the index,
    /// it is rebuilt under the lock (taken here unless the caller holds it: `flock` on a second
    /// descriptor of the same process would wait forever).
    fn loaded_log(&mut self, lock: Lock) -> Result<&LoadedLog, LedgerError> {
        if self.log.as_ref().is_none_or(|l| l.tree.len() != self.size) {
            let (entries, problems) = read_records(&self.path(RECORDS_FILE))?;
            let mut tree = Tree::new();
            let mut records = Vec::with_capacity(entries.len());
            for entry in entries {
                match entry {
                    Entry::Record(record) => {
                        tree.push(record.leaf_bytes());
                        records.push(record);
                    }
                    Entry::Malformed { .. } => break,
                }
            }
            if !problems.is_empty() || root_bytes(&tree) != self.root || tree.len() != self.size {
                // Changed behind the index's back: verify it all and use what verifies.
                let _lock = match lock {
                    Lock::Held => None,
                    Lock::NotHeld => Some(self.lock()?),
                };
                self.rebuild()?;
            } else {
                self.log = Some(LoadedLog { records, tree });
            }
        }
        Ok(self.log.as_ref().expect("loaded or rebuilt above"))
    }

    /// With the lock held and the index fresh: checks and appends `records`, then issues one
    /// head. Nothing is written if any record is refused.
    fn append_locked(&mut self, records: Vec<Record>) -> Result<SignedTreeHead, LedgerError> {
        let base = self.size;
        let mut state = self.state.clone();
        let log = self.loaded_log(Lock::Held)?;
        for (k, record) in records.iter().enumerate() {
            record
                .verify()
                .map_err(|source| LedgerError::InvalidRecord { source })?;
            let index = base + k as u64;
            if let Err(clash) = state.apply(index, record) {
                let lookup = |i: u64| {
                    let i = i as usize;
                    log.records
                        .get(i)
                        .unwrap_or_else(|| &records[i - log.records.len()])
                        .clone()
                };
                return Err(LedgerError::Conflict {
                    conflict: Box::new(clash.into_conflict(record, lookup)),
                });
            }
        }
        let mut lines = String::new();
        for record in &records {
            lines.push_str(&record.to_json());
            lines.push('\n');
        }
        append_and_sync(&self.path(RECORDS_FILE), lines.as_bytes())
            .map_err(self.io_error(RECORDS_FILE))?;
        let log = self.log.as_mut().expect("loaded above");
        for record in records {
            log.tree.push(record.leaf_bytes());
            log.records.push(record);
        }
        self.size = log.tree.len();
        self.root = root_bytes(&log.tree);
        self.state = state;
        self.issue_head()
    }

    /// Signs a head for the whole log, appends it to `heads.jsonl`, rewrites the index.
    fn issue_head(&mut self) -> Result<SignedTreeHead, LedgerError> {
        let head = SignedTreeHead::sign(&self.key, self.size, self.root, now());
        let mut line = serde_json::to_string(&head).expect("a head always serializes");
        line.push('\n');
        append_and_sync(&self.path(HEADS_FILE), line.as_bytes())
            .map_err(self.io_error(HEADS_FILE))?;
        self.latest_head = head.clone();
        self.write_state()?;
        Ok(head)
    }

    fn write_state(&self) -> Result<(), LedgerError> {
        let file = Index {
            log_id: self.key.user_id(),
            records: fingerprint(&self.path(RECORDS_FILE)).map_err(self.io_error(RECORDS_FILE))?,
            heads: fingerprint(&self.path(HEADS_FILE)).map_err(self.io_error(HEADS_FILE))?,
            size: self.size,
            root: self.root,
            latest_head: self.latest_head.clone(),
            state: self.state.clone(),
        };
        write_atomically(&self.path(STATE_FILE), &file.encode(), 0o600, Replace::Yes)
            .map_err(self.io_error(STATE_FILE))
    }
}

/// Takes the exclusive lock of the ledger in `dir` (released when the file is dropped).
fn lock_dir(dir: &Path) -> Result<File, LedgerError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|source| LedgerError::Io { path, source })?;
    Ok(file)
}

/// Appends `bytes` with one `write` in append mode and syncs the data.
fn append_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// If `path` ends without a newline, moves the torn last line to `<path>.torn` and truncates
/// the file to the end of its last complete line.
fn cut_torn_tail(path: &Path) -> io::Result<Option<TornTail>> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if data.is_empty() || data.ends_with(b"\n") {
        return Ok(None);
    }
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let mut torn_name = path.as_os_str().to_owned();
    torn_name.push(".torn");
    append_and_sync(Path::new(&torn_name), &data[keep..])?;
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_all()?;
    Ok(Some(TornTail {
        file: path.to_owned(),
        offset: keep as u64,
        bytes: (data.len() - keep) as u64,
    }))
}

/// Splits a file into complete lines; a last line without newline is reported as torn.
fn read_lines(
    path: &Path,
    file: &'static str,
) -> Result<(Vec<Vec<u8>>, Vec<Problem>), LedgerError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == ErrorKind::NotFound && file == HEADS_FILE => Vec::new(),
        Err(source) => {
            return Err(LedgerError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let last = lines.pop().unwrap_or_default();
    let mut problems = Vec::new();
    if !last.is_empty() {
        problems.push(Problem::TornTail {
            file,
            bytes: last.len() as u64,
        });
    }
    Ok((lines, problems))
}

fn read_records(path: &Path) -> Result<(Vec<Entry>, Vec<Problem>), LedgerError> {
    let (lines, problems) = read_lines(path, RECORDS_FILE)?;
    let entries = lines
        .into_iter()
        .map(|raw| {
            let parsed = std::str::from_utf8(&raw)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|text| Record::from_json(text).map_err(|e| e.to_string()));
            match parsed {
                Ok(record) => Entry::Record(record),
                Err(reason) => Entry::Malformed { raw, reason },
            }
        })
        .collect();
    Ok((entries, problems))
}

fn read_heads(dir: &Path, log_id: UserId) -> Result<(Vec<HeadToCheck>, Vec<Problem>), LedgerError> {
    let (lines, mut problems) = read_lines(&dir.join(HEADS_FILE), HEADS_FILE)?;
    let mut heads = Vec::with_capacity(lines.len());
    for (n, raw) in lines.into_iter().enumerate() {
        match serde_json::from_slice::<SignedTreeHead>(&raw) {
            Ok(head) => heads.push(HeadToCheck {
                describe: head.describe(n),
                head,
            }),
            Err(e) => problems.push(Problem::MalformedLine {
                file: HEADS_FILE,
                line: n as u64 + 1,
                reason: format!("not a tree head of log {log_id}: {e}"),
            }),
        }
    }
    Ok((heads, problems))
}
