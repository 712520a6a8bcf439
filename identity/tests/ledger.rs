//! Ledger integrity: tampering, truncation, forks, split views on import, crash recovery, lost
//! index, lost ledger, and the proofs.

mod common;

use common::{app, id, lines, offer, publisher, write_lines, Machine};
use elastos_identity::{
    Claim, Conflict, Ledger, LedgerError, Ownership, OwnershipError, Problem, Record, RecordError,
    UserKey, HEADS_FILE, RECORDS_FILE, STATE_FILE,
};

/// A machine whose ledger holds `n` binds of apps 0..n by publisher 1, one head per record.
fn machine_with_binds(n: u128) -> Machine {
    let machine = Machine::new();
    let mut ledger = machine.open();
    for i in 0..n {
        ledger
            .record_run(&offer(app(i), &publisher(1), "1.0.0"))
            .unwrap();
    }
    machine
}

fn verify(machine: &Machine) -> elastos_identity::VerifyReport {
    Ledger::verify_dir(&machine.ledger_dir(), machine.user_key().user_id()).unwrap()
}

fn open_err(machine: &Machine) -> LedgerError {
    Ledger::open(&machine.ledger_dir(), machine.user_key()).unwrap_err()
}

#[test]
fn an_untouched_ledger_verifies() {
    let machine = machine_with_binds(5);
    let report = verify(&machine);
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.heads), (5, 6)); // the size-0 head and one per append
    assert_eq!(report.root, machine.open().root());
}

#[test]
fn a_tampered_record_is_detected_and_named() {
    let machine = machine_with_binds(5);
    let records = machine.file(RECORDS_FILE);
    let mut log = lines(&records);
    assert!(log[2].contains("\"1.0.0\""));
    log[2] = log[2].replace("\"1.0.0\"", "\"9.0.0\"");
    write_lines(&records, &log);

    let report = verify(&machine);
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::BadRecord {
                index: 2,
                source: RecordError::BadSignature { kind: "bind", .. }
            }
        )),
        "{report}"
    );
    // Every head from size 3 on contradicts the log, and says from where.
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::HeadInconsistent {
                size: 3,
                changed_from: 2,
                ..
            }
        )),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("record 2: bind record"), "{text}");
    assert!(text.contains("tree head #3 (size 3, root"), "{text}");
    // The index is stale (ctime changed), so opening replays the log and refuses it.
    assert!(matches!(open_err(&machine), LedgerError::Invalid { .. }));
}

#[test]
fn a_log_rewritten_with_valid_signatures_contradicts_its_tree_heads() {
    let machine = machine_with_binds(5);
    let records = machine.file(RECORDS_FILE);
    let mut log = lines(&records);
    // The user key itself re-signs record 3 with another publisher: every signature is valid,
    // but the history differs from what the heads signed.
    let forged = Record::bind(
        &machine.user_key(),
        app(3),
        id(&publisher(66)),
        "1.0.0",
        [7; 32],
        1,
    );
    log[3] = forged.to_json();
    write_lines(&records, &log);

    let report = verify(&machine);
    assert!(
        report.problems.iter().all(|p| matches!(
            p,
            Problem::HeadInconsistent {
                changed_from: 3,
                ..
            }
        )),
        "{report}"
    );
    assert_eq!(report.problems.len(), 2, "{report}"); // heads of size 4 and 5
    let text = report.to_string();
    assert!(
        text.contains("tree head #4 (size 4, root")
            && text.contains("is not consistent with the log")
            && text.contains("tree head #3 (size 3, root"),
        "{text}"
    );
}

#[test]
fn a_truncated_log_is_detected_and_named() {
    let machine = machine_with_binds(5);
    let records = machine.file(RECORDS_FILE);
    let log = lines(&records);
    write_lines(&records, &log[..3]);

    let report = verify(&machine);
    let beyond: Vec<_> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::HeadBeyondLog { size, log_size, .. } => Some((*size, *log_size)),
            _ => None,
        })
        .collect();
    assert_eq!(beyond, vec![(4, 3), (5, 3)], "{report}");
    assert!(
        report.to_string().contains("records 3..5 are missing"),
        "{report}"
    );
    assert!(matches!(open_err(&machine), LedgerError::Invalid { .. }));
}

#[test]
fn a_truncated_log_with_its_heads_deleted_is_caught_by_the_index() {
    let machine = machine_with_binds(5);
    let records = machine.file(RECORDS_FILE);
    write_lines(&records, &lines(&records)[..3]);
    std::fs::remove_file(machine.file(HEADS_FILE)).unwrap();
    match open_err(&machine) {
        LedgerError::Invalid { report, .. } => assert!(
            report.problems.iter().any(|p| matches!(
                p,
                Problem::HeadBeyondLog { head, size: 5, log_size: 3 } if head.contains("index")
            )),
            "{report}"
        ),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_forked_log_is_detected_on_import() {
    let original = machine_with_binds(3);
    // A copy of the same ledger, with the same user key, then both grow differently.
    let copy = tempfile::tempdir().unwrap();
    for dir in ["keys", "ledger"] {
        std::fs::create_dir(copy.path().join(dir)).unwrap();
        for entry in std::fs::read_dir(original.tmp.path().join(dir)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(dir).join(entry.file_name())).unwrap();
        }
    }
    let copy_key = UserKey::load_or_create(&copy.path().join("keys"))
        .unwrap()
        .0;
    let mut forked = Ledger::open(&copy.path().join("ledger"), copy_key).unwrap();
    forked
        .record_run(&offer(app(10), &publisher(2), "1.0.0"))
        .unwrap();
    let mut ledger = original.open();
    ledger
        .record_run(&offer(app(20), &publisher(3), "1.0.0"))
        .unwrap();

    let export = copy.path().join("fork.json");
    forked.export(&export).unwrap();
    match ledger.import(&export) {
        Err(LedgerError::Fork {
            first_difference,
            ours,
            theirs,
            ours_head,
            theirs_head,
            ..
        }) => {
            assert_eq!(first_difference, 3);
            assert!(matches!(ours.claim, Claim::Bind { app_id, .. } if app_id == app(20)));
            assert!(matches!(theirs.claim, Claim::Bind { app_id, .. } if app_id == app(10)));
            assert!(ours_head.starts_with("tree head #4 (size 4"), "{ours_head}");
            assert!(
                theirs_head.starts_with("tree head #4 (size 4"),
                "{theirs_head}"
            );
        }
        other => panic!("expected Fork, got {other:?}"),
    }
    assert_eq!(ledger.size(), 4);

    // A copy that is only behind (a backup) is not a fork: it brings nothing new.
    let backup = copy.path().join("backup.json");
    ledger.export(&backup).unwrap();
    let report = ledger.import(&backup).unwrap();
    assert_eq!((report.added, report.already_known), (0, 4));
}

#[test]
fn an_import_with_a_conflicting_binding_is_refused_with_both_records() {
    let (home, laptop) = (Machine::new(), Machine::new());
    let mut home_ledger = home.open();
    let mut laptop_ledger = laptop.open();
    home_ledger
        .record_run(&offer(app(1), &publisher(1), "1.0.0"))
        .unwrap();
    laptop_ledger
        .record_run(&offer(app(1), &publisher(66), "1.0.0"))
        .unwrap();

    let export = home.tmp.path().join("home.json");
    home_ledger.export(&export).unwrap();
    let err = laptop_ledger.import(&export).unwrap_err();
    match &err {
        LedgerError::Conflict { conflict } => match &**conflict {
            Conflict::AppOwner {
                app_id,
                ours,
                theirs,
            } => {
                assert_eq!(*app_id, app(1));
                assert_eq!(ours.attester(), laptop_ledger.user_id());
                assert_eq!(theirs.attester(), home_ledger.user_id());
                assert!(
                    matches!(ours.claim, Claim::Bind { publisher: p, .. } if p == id(&publisher(66)))
                );
                assert!(
                    matches!(theirs.claim, Claim::Bind { publisher: p, .. } if p == id(&publisher(1)))
                );
            }
            other => panic!("expected AppOwner, got {other:?}"),
        },
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The message shows both records in full.
    let text = err.to_string();
    assert!(
        text.contains("split view") && text.matches("\"kind\":\"bind\"").count() == 2,
        "{text}"
    );
    assert_eq!(laptop_ledger.size(), 1, "nothing was imported");
}

#[test]
fn compatible_logs_from_two_machines_merge() {
    let (home, laptop) = (Machine::new(), Machine::new());
    let mut home_ledger = home.open();
    let mut laptop_ledger = laptop.open();
    home_ledger
        .record_run(&offer(app(1), &publisher(1), "1.0.0"))
        .unwrap();
    home_ledger
        .record_run(&offer(app(2), &publisher(2), "1.0.0"))
        .unwrap();
    laptop_ledger
        .record_run(&offer(app(2), &publisher(2), "1.1.0"))
        .unwrap();
    let before = laptop_ledger.latest_head().clone();

    let export = home.tmp.path().join("home.json");
    home_ledger.export(&export).unwrap();
    let report = laptop_ledger.import(&export).unwrap();
    assert_eq!((report.added, report.already_known), (2, 0));
    assert!(matches!(
        laptop_ledger.check_bundle(&offer(app(1), &publisher(66), "1.0.0"), false),
        Err(OwnershipError::OwnedByOther { .. })
    ));
    // The laptop's highest version stays.
    assert_eq!(laptop_ledger.highest_version(app(2)), Some("1.1.0"));
    // Importing again adds nothing, and the laptop's log only grew.
    assert_eq!(laptop_ledger.import(&export).unwrap().added, 0);
    let (proof, head) = laptop_ledger.consistency_proof(before.size).unwrap();
    proof.verify(&before, &head).unwrap();
    assert!(laptop_ledger.verify().unwrap().is_ok());
}

#[test]
fn a_tampered_export_is_refused() {
    let machine = machine_with_binds(3);
    let export = machine.tmp.path().join("export.json");
    machine.open().export(&export).unwrap();
    let text = std::fs::read_to_string(&export).unwrap();
    std::fs::write(&export, text.replacen("\"1.0.0\"", "\"0.0.1\"", 1)).unwrap();
    let other = Machine::new();
    match other.open().import(&export) {
        Err(LedgerError::ImportRefused { report, .. }) => assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, Problem::BadRecord { index: 0, .. })),
            "{report}"
        ),
        other => panic!("expected ImportRefused, got {other:?}"),
    }
    std::fs::write(&export, "{\"format\":\"something else\"}").unwrap();
    assert!(matches!(
        other.open().import(&export),
        Err(LedgerError::ImportMalformed { .. })
    ));
}

#[test]
fn a_deleted_index_is_rebuilt_from_the_log() {
    let machine = machine_with_binds(3);
    std::fs::remove_file(machine.file(STATE_FILE)).unwrap();
    let ledger = machine.open();
    assert!(machine.file(STATE_FILE).exists());
    assert!(matches!(
        ledger.check_bundle(&offer(app(1), &publisher(66), "1.0.0"), false),
        Err(OwnershipError::OwnedByOther { .. })
    ));
    // A garbled index is rebuilt the same way.
    std::fs::write(machine.file(STATE_FILE), "{").unwrap();
    assert_eq!(machine.open().size(), 3);
}

#[test]
fn a_deleted_ledger_is_reported_so_the_caller_can_refuse_old_state() {
    let machine = machine_with_binds(2);
    std::fs::remove_dir_all(machine.ledger_dir()).unwrap();
    assert!(!Ledger::exists(&machine.ledger_dir()));
    assert!(matches!(open_err(&machine), LedgerError::Missing { .. }));
    match Ledger::open_for_run(&machine.ledger_dir(), machine.user_key(), true) {
        Err(OwnershipError::LedgerMissing { dir }) => assert_eq!(dir, machine.ledger_dir()),
        other => panic!("expected LedgerMissing, got {other:?}"),
    }
    // With no other state, a new ledger is made.
    let ledger = Ledger::open_for_run(&machine.ledger_dir(), machine.user_key(), false).unwrap();
    assert_eq!(ledger.size(), 0);
    assert!(matches!(
        Ledger::create(&machine.ledger_dir(), machine.user_key()),
        Err(LedgerError::AlreadyExists { .. })
    ));
}

#[test]
fn a_torn_last_line_is_cut_off_and_reported() {
    let machine = machine_with_binds(2);
    let records = machine.file(RECORDS_FILE);
    let mut text = std::fs::read(&records).unwrap();
    text.extend_from_slice(b"{\"claim\":{\"kind\":\"bi");
    std::fs::write(&records, &text).unwrap();

    let report = verify(&machine);
    assert!(
        matches!(
            report.problems[..],
            [Problem::TornTail {
                file: RECORDS_FILE,
                bytes: 20
            }]
        ),
        "{report}"
    );
    let ledger = machine.open();
    assert_eq!(ledger.recovered().len(), 1);
    assert_eq!(ledger.recovered()[0].bytes, 20);
    assert_eq!(ledger.size(), 2);
    assert_eq!(
        std::fs::read(machine.ledger_dir().join("records.jsonl.torn")).unwrap(),
        b"{\"claim\":{\"kind\":\"bi"
    );
    assert!(ledger.verify().unwrap().is_ok());
}

#[test]
fn a_record_written_without_its_tree_head_gets_one_on_open() {
    // A crash between the record's fsync and the head's.
    let machine = machine_with_binds(2);
    let record = Record::bind(
        &machine.user_key(),
        app(7),
        id(&publisher(1)),
        "1.0.0",
        [1; 32],
        5,
    );
    let records = machine.file(RECORDS_FILE);
    let mut log = lines(&records);
    log.push(record.to_json());
    write_lines(&records, &log);

    let ledger = machine.open();
    assert_eq!(ledger.size(), 3);
    assert_eq!(ledger.latest_head().size, 3);
    assert_eq!(lines(&machine.file(HEADS_FILE)).len(), 4);
    assert!(matches!(
        ledger.check_bundle(&offer(app(7), &publisher(66), "1.0.0"), false),
        Err(OwnershipError::OwnedByOther { .. })
    ));
}

#[test]
fn a_second_process_sees_the_first_ones_appends() {
    let machine = Machine::new();
    let mut first = machine.open();
    let mut second = machine.open();
    first
        .record_run(&offer(app(1), &publisher(1), "1.0.0"))
        .unwrap();
    let echo = uuid::Uuid::from_u128(0xec40);
    first
        .record_service(echo, app(1), id(&publisher(1)))
        .unwrap();

    // `second` has a stale index: its own check says "new", but the append re-checks under the
    // lock against the log as it is, and refuses both hijacks as split views.
    match second.record_run(&offer(app(1), &publisher(66), "2.0.0")) {
        Err(OwnershipError::Ledger(LedgerError::Conflict { conflict })) => {
            assert!(matches!(*conflict, Conflict::AppOwner { .. }), "{conflict}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut third = machine.open();
    first
        .record_service(uuid::Uuid::from_u128(0xec41), app(1), id(&publisher(1)))
        .unwrap();
    match third.record_service(uuid::Uuid::from_u128(0xec41), app(2), id(&publisher(66))) {
        Err(OwnershipError::Ledger(LedgerError::Conflict { conflict })) => {
            assert!(
                matches!(*conflict, Conflict::ServiceOwner { .. }),
                "{conflict}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A compatible append from the stale process keeps everything.
    second
        .record_run(&offer(app(2), &publisher(2), "1.0.0"))
        .unwrap();
    assert_eq!(second.size(), 4);
    assert!(machine.open().verify().unwrap().is_ok());
}

#[test]
fn inclusion_and_consistency_proofs_verify_and_catch_lies() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let mut heads = Vec::new();
    for i in 0..7 {
        heads.push(
            ledger
                .record_run(&offer(app(i), &publisher(1), "1.0.0"))
                .unwrap()
                .unwrap(),
        );
    }
    let records = ledger.records().unwrap().to_vec();
    for (index, record) in records.iter().enumerate() {
        let (proof, head) = ledger.inclusion_proof(index as u64).unwrap();
        proof.verify(record, &head).unwrap();
        let other = &records[(index + 1) % records.len()];
        assert!(proof.verify(other, &head).is_err());
    }
    for old in &heads {
        let (proof, head) = ledger.consistency_proof(old.size).unwrap();
        proof.verify(old, &head).unwrap();
    }
    // A head of another history does not pass.
    let stranger = Machine::new();
    let mut stranger_ledger = stranger.open();
    stranger_ledger
        .record_run(&offer(app(9), &publisher(1), "1.0.0"))
        .unwrap();
    let (proof, head) = ledger.consistency_proof(1).unwrap();
    assert!(proof.verify(stranger_ledger.latest_head(), &head).is_err());
    assert!(matches!(
        ledger.inclusion_proof(7),
        Err(LedgerError::NoSuchRecord { index: 7, size: 7 })
    ));
    assert!(matches!(
        ledger.consistency_proof(0),
        Err(LedgerError::BadOldSize { .. })
    ));
    // Proof of a bind made on the user's machine, checked against a head, after reopening.
    let mut reopened = machine.open();
    let (proof, head) = reopened.inclusion_proof(3).unwrap();
    proof.verify(&records[3], &head).unwrap();
    assert_eq!(head, *reopened.latest_head());
    assert!(matches!(
        reopened.check_bundle(&offer(app(3), &publisher(1), "1.0.0"), false),
        Ok(Ownership::OwnedBy { .. })
    ));
}

#[test]
fn a_log_changed_while_the_ledger_is_open_is_verified_before_use() {
    let machine = machine_with_binds(3);
    let mut ledger = machine.open();
    let records = machine.file(RECORDS_FILE);
    let mut log = lines(&records);
    log[1] = log[1].replace("\"1.0.0\"", "\"7.0.0\"");
    write_lines(&records, &log);

    // Loading the log for a proof notices it no longer matches the index.
    assert!(matches!(
        ledger.inclusion_proof(0),
        Err(LedgerError::Invalid { .. })
    ));
    // An append refreshes the index under the lock and refuses too.
    let err = ledger
        .record_run(&offer(app(9), &publisher(1), "1.0.0"))
        .unwrap_err();
    assert!(
        matches!(err, OwnershipError::Ledger(LedgerError::Invalid { .. })),
        "{err}"
    );
    assert_eq!(lines(&records).len(), 3, "nothing was appended");
}

#[test]
fn first_runs_at_the_same_time_agree_on_one_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let key = UserKey::from_secret_seed([1; 32]);
                let mut ledger = Ledger::open_for_run(&dir, key, false).unwrap();
                ledger
                    .record_run(&offer(app(n), &publisher(1), "1.0.0"))
                    .unwrap();
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let ledger = Ledger::open(&dir, UserKey::from_secret_seed([1; 32])).unwrap();
    assert_eq!(ledger.size(), 4);
    let report = ledger.verify().unwrap();
    assert!(report.is_ok(), "{report}");
}
