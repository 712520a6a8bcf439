//! Every error variant of the crate formats into a message that names what was wrong. Each
//! enum has an exhaustive `name` match, so a new variant does not compile until it is listed
//! here, and the count check fails until it is also constructed.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use uuid::Uuid;

use crate::head::ProofError;
use crate::key::{KeyError, PublisherId, UserId, UserKey};
use crate::ledger::{LedgerError, Problem, VerifyReport};
use crate::ownership::OwnershipError;
use crate::record::{Record, RecordError};
use crate::state::Conflict;
use crate::trust::TrustError;

fn record() -> Box<Record> {
    let user = UserKey::from_secret_seed([1; 32]);
    Box::new(Record::bind(
        &user,
        Uuid::from_u128(1),
        PublisherId([2; 32]),
        "1.0.0",
        [3; 32],
        4,
    ))
}

fn io_error() -> io::Error {
    io::Error::from(io::ErrorKind::PermissionDenied)
}

fn json_error() -> serde_json::Error {
    serde_json::from_str::<u8>("x").unwrap_err()
}

fn report() -> Box<VerifyReport> {
    Box::new(VerifyReport {
        records: 1,
        heads: 1,
        root: [0; 32],
        problems: vec![Problem::TornTail {
            file: "records.jsonl",
            bytes: 3,
        }],
    })
}

const P: PublisherId = PublisherId([9; 32]);
const U: UserId = UserId([8; 32]);

fn key_errors() -> Vec<KeyError> {
    vec![
        KeyError::Io {
            path: PathBuf::from("/k/user.key"),
            source: io_error(),
        },
        KeyError::PermissionsTooOpen {
            path: PathBuf::from("/k/user.key"),
            mode: 0o644,
        },
        KeyError::Malformed {
            path: PathBuf::from("/k/user.key"),
            reason: "the seed is not 64 hex digits",
        },
        KeyError::Random {
            source: getrandom::Error::UNSUPPORTED,
        },
    ]
}

fn key_name(e: &KeyError) -> &'static str {
    match e {
        KeyError::Io { .. } => "Io",
        KeyError::PermissionsTooOpen { .. } => "PermissionsTooOpen",
        KeyError::Malformed { .. } => "Malformed",
        KeyError::Random { .. } => "Random",
    }
}

fn record_errors() -> Vec<RecordError> {
    vec![
        RecordError::BadSignature {
            kind: "bind",
            id: "ab".into(),
            signer: "cd".into(),
        },
        RecordError::BadCosignature { old: P, new: P },
        RecordError::WrongSigner {
            kind: "rotate",
            signer: "cd".into(),
            expected: "the old key".into(),
        },
        RecordError::UnexpectedCosignature { kind: "bind" },
        RecordError::RotateToSelf { key: P },
        RecordError::BadVersionLength {
            kind: "bind",
            len: 0,
        },
        RecordError::Json {
            source: json_error(),
        },
    ]
}

fn record_name(e: &RecordError) -> &'static str {
    match e {
        RecordError::BadSignature { .. } => "BadSignature",
        RecordError::BadCosignature { .. } => "BadCosignature",
        RecordError::WrongSigner { .. } => "WrongSigner",
        RecordError::UnexpectedCosignature { .. } => "UnexpectedCosignature",
        RecordError::RotateToSelf { .. } => "RotateToSelf",
        RecordError::BadVersionLength { .. } => "BadVersionLength",
        RecordError::Json { .. } => "Json",
    }
}

fn conflicts() -> Vec<Conflict> {
    let id = Uuid::from_u128(5);
    vec![
        Conflict::AppOwner {
            app_id: id,
            ours: record(),
            theirs: record(),
        },
        Conflict::ServiceOwner {
            service: id,
            ours: record(),
            theirs: record(),
        },
        Conflict::Rotation {
            key: P,
            ours: record(),
            theirs: record(),
        },
        Conflict::KeyAlreadyInChain {
            key: P,
            record: record(),
        },
        Conflict::RotationAfterRevocation {
            key: P,
            since: 7,
            record: record(),
        },
        Conflict::UnauthorizedRevocation {
            key: P,
            signer: "cd".into(),
            record: record(),
        },
    ]
}

fn conflict_name(e: &Conflict) -> &'static str {
    match e {
        Conflict::AppOwner { .. } => "AppOwner",
        Conflict::ServiceOwner { .. } => "ServiceOwner",
        Conflict::Rotation { .. } => "Rotation",
        Conflict::KeyAlreadyInChain { .. } => "KeyAlreadyInChain",
        Conflict::RotationAfterRevocation { .. } => "RotationAfterRevocation",
        Conflict::UnauthorizedRevocation { .. } => "UnauthorizedRevocation",
    }
}

fn ledger_errors() -> Vec<LedgerError> {
    let dir = PathBuf::from("/home/u/.elastos/ledger");
    vec![
        LedgerError::Io {
            path: dir.join("records.jsonl"),
            source: io_error(),
        },
        LedgerError::Missing { dir: dir.clone() },
        LedgerError::AlreadyExists { dir: dir.clone() },
        LedgerError::Invalid {
            dir: dir.clone(),
            report: report(),
        },
        LedgerError::InvalidRecord {
            source: RecordError::RotateToSelf { key: P },
        },
        LedgerError::Conflict {
            conflict: Box::new(conflicts().remove(0)),
        },
        LedgerError::Fork {
            log_id: U,
            first_difference: 3,
            ours: record(),
            theirs: record(),
            ours_head: "tree head #4 (size 4, root ab..)".into(),
            theirs_head: "no tree head".into(),
        },
        LedgerError::ImportMalformed {
            path: PathBuf::from("x.json"),
            reason: "format is \"y\"".into(),
        },
        LedgerError::ImportRefused {
            path: PathBuf::from("x.json"),
            report: report(),
        },
        LedgerError::NoSuchRecord { index: 9, size: 3 },
        LedgerError::BadOldSize {
            old_size: 0,
            size: 3,
        },
    ]
}

fn ledger_name(e: &LedgerError) -> &'static str {
    match e {
        LedgerError::Io { .. } => "Io",
        LedgerError::Missing { .. } => "Missing",
        LedgerError::AlreadyExists { .. } => "AlreadyExists",
        LedgerError::Invalid { .. } => "Invalid",
        LedgerError::InvalidRecord { .. } => "InvalidRecord",
        LedgerError::Conflict { .. } => "Conflict",
        LedgerError::Fork { .. } => "Fork",
        LedgerError::ImportMalformed { .. } => "ImportMalformed",
        LedgerError::ImportRefused { .. } => "ImportRefused",
        LedgerError::NoSuchRecord { .. } => "NoSuchRecord",
        LedgerError::BadOldSize { .. } => "BadOldSize",
    }
}

fn problems() -> Vec<Problem> {
    vec![
        Problem::MalformedLine {
            file: "heads.jsonl",
            line: 2,
            reason: "expected value".into(),
        },
        Problem::TornTail {
            file: "records.jsonl",
            bytes: 3,
        },
        Problem::BadRecord {
            index: 1,
            source: RecordError::BadVersionLength {
                kind: "bind",
                len: 0,
            },
        },
        Problem::Conflict {
            index: 2,
            conflict: Box::new(conflicts().remove(1)),
        },
        Problem::HeadBadSignature {
            head: "tree head #1 (size 1, root ab..)".into(),
            signer: U,
            signature_valid: true,
            expected: UserId([7; 32]),
        },
        Problem::HeadInconsistent {
            head: "tree head #12 (size 40, root ab..)".into(),
            size: 40,
            actual_root: [1; 32],
            changed_from: 30,
            since: "tree head #11 (size 30, root cd..) still matches".into(),
        },
        Problem::HeadBeyondLog {
            head: "tree head #5 (size 10, root ab..)".into(),
            size: 10,
            log_size: 7,
        },
    ]
}

fn problem_name(e: &Problem) -> &'static str {
    match e {
        Problem::MalformedLine { .. } => "MalformedLine",
        Problem::TornTail { .. } => "TornTail",
        Problem::BadRecord { .. } => "BadRecord",
        Problem::Conflict { .. } => "Conflict",
        Problem::HeadBadSignature { .. } => "HeadBadSignature",
        Problem::HeadInconsistent { .. } => "HeadInconsistent",
        Problem::HeadBeyondLog { .. } => "HeadBeyondLog",
    }
}

fn ownership_errors() -> Vec<OwnershipError> {
    let id = Uuid::from_u128(5);
    vec![
        OwnershipError::OwnedByOther {
            app_id: id,
            owner: P,
            offered: PublisherId([1; 32]),
        },
        OwnershipError::ServiceOwnedByOther {
            service: id,
            owner_app: id,
            owner: P,
            offered_app: Uuid::from_u128(6),
            offered: PublisherId([1; 32]),
        },
        OwnershipError::Downgrade {
            app_id: id,
            installed: "1.2.0".into(),
            offered: "1.1.0".into(),
        },
        OwnershipError::VersionIncomparable {
            app_id: id,
            installed: "a".into(),
            offered: "b".into(),
        },
        OwnershipError::Revoked { key: P, since: 10 },
        OwnershipError::RotatedAway {
            old: P,
            new: PublisherId([1; 32]),
        },
        OwnershipError::LedgerMissing {
            dir: PathBuf::from("/l"),
        },
        OwnershipError::Ledger(LedgerError::Missing {
            dir: PathBuf::from("/l"),
        }),
    ]
}

fn ownership_name(e: &OwnershipError) -> &'static str {
    match e {
        OwnershipError::OwnedByOther { .. } => "OwnedByOther",
        OwnershipError::ServiceOwnedByOther { .. } => "ServiceOwnedByOther",
        OwnershipError::Downgrade { .. } => "Downgrade",
        OwnershipError::VersionIncomparable { .. } => "VersionIncomparable",
        OwnershipError::Revoked { .. } => "Revoked",
        OwnershipError::RotatedAway { .. } => "RotatedAway",
        OwnershipError::LedgerMissing { .. } => "LedgerMissing",
        OwnershipError::Ledger(_) => "Ledger",
    }
}

fn proof_errors() -> Vec<ProofError> {
    vec![
        ProofError::BadHeadSignature { size: 3, signer: U },
        ProofError::SizeMismatch { proof: 3, head: 4 },
        ProofError::Inclusion {
            index: 1,
            source: ct_merkle::InclusionVerifError::IncorrectHash,
        },
        ProofError::Consistency {
            old: 1,
            new: 3,
            source: ct_merkle::ConsistencyVerifError::VerificationFailure,
        },
    ]
}

fn proof_name(e: &ProofError) -> &'static str {
    match e {
        ProofError::BadHeadSignature { .. } => "BadHeadSignature",
        ProofError::SizeMismatch { .. } => "SizeMismatch",
        ProofError::Inclusion { .. } => "Inclusion",
        ProofError::Consistency { .. } => "Consistency",
    }
}

fn trust_errors() -> Vec<TrustError> {
    vec![
        TrustError::Io {
            path: PathBuf::from("/t.json"),
            source: io_error(),
        },
        TrustError::Malformed {
            path: PathBuf::from("/t.json"),
            source: json_error(),
        },
        TrustError::Untrusted {
            publisher: P,
            trusted: 2,
        },
        TrustError::BadName { name: "".into() },
    ]
}

fn trust_name(e: &TrustError) -> &'static str {
    match e {
        TrustError::Io { .. } => "Io",
        TrustError::Malformed { .. } => "Malformed",
        TrustError::Untrusted { .. } => "Untrusted",
        TrustError::BadName { .. } => "BadName",
    }
}

/// Formats every value, checks the message, and returns the distinct variant names seen.
fn check_all<E: std::error::Error>(values: &[E], name: fn(&E) -> &'static str) -> usize {
    let mut names = BTreeSet::new();
    for value in values {
        // What a caller prints: the message and its causes, none repeated.
        let mut message = value.to_string();
        if let Some(source) = value.source() {
            assert!(
                !message.contains(&source.to_string()),
                "{}: the message repeats its source: {message}",
                name(value)
            );
            message = format!("{message}: {source}");
        }
        let first = message.chars().next().expect("a message is never empty");
        assert!(
            !first.is_uppercase(),
            "{}: messages start lowercase: {message}",
            name(value)
        );
        assert!(
            message.len() > 20,
            "{}: too short to explain: {message}",
            name(value)
        );
        assert!(names.insert(name(value)), "{} listed twice", name(value));
    }
    names.len()
}

#[test]
fn every_error_variant_formats() {
    assert_eq!(check_all(&key_errors(), key_name), 4);
    assert_eq!(check_all(&record_errors(), record_name), 7);
    assert_eq!(check_all(&conflicts(), conflict_name), 6);
    assert_eq!(check_all(&ledger_errors(), ledger_name), 11);
    assert_eq!(check_all(&problems(), problem_name), 7);
    assert_eq!(check_all(&ownership_errors(), ownership_name), 8);
    assert_eq!(check_all(&proof_errors(), proof_name), 4);
    assert_eq!(check_all(&trust_errors(), trust_name), 4);

    // Spot checks that messages name what was wrong and what was expected.
    let problems = problems();
    let inconsistent = problems[5].to_string();
    assert!(
        inconsistent.contains("tree head #12 (size 40, root ab..) is not consistent with the log")
            && inconsistent.contains("index 30"),
        "{inconsistent}"
    );
    let split = conflicts()[0].to_string();
    assert_eq!(split.matches("\"kind\":\"bind\"").count(), 2, "{split}");
    let owned = ownership_errors()[0].to_string();
    assert!(
        owned.contains(&P.to_string()) && owned.contains("expected"),
        "{owned}"
    );
}
