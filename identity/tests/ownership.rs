//! Ownership attacks, each refused with its own error.

mod common;

use common::{app, id, offer, publisher, Machine};
use elastos_identity::{Conflict, LedgerError, Ownership, OwnershipError, Record, RecordError};
use uuid::Uuid;

#[test]
fn a_new_app_id_is_new_and_then_owned_by_its_first_publisher() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let alice = publisher(1);
    let first = offer(app(1), &alice, "1.0.0");
    assert_eq!(ledger.check_bundle(&first, false).unwrap(), Ownership::New);
    assert!(ledger.record_run(&first).unwrap().is_some());
    // The same bundle again appends nothing.
    assert!(ledger.record_run(&first).unwrap().is_none());
    let owned = Ownership::OwnedBy {
        owner: id(&alice),
        bound_to: id(&alice),
    };
    assert_eq!(ledger.check_bundle(&first, false).unwrap(), owned);
    // And it survives reopening (from the index) and a rebuild (from the log).
    assert_eq!(machine.open().check_bundle(&first, false).unwrap(), owned);
}

#[test]
fn the_same_app_id_signed_by_another_key_is_refused() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let (alice, mallory) = (publisher(1), publisher(66));
    ledger.record_run(&offer(app(1), &alice, "1.0.0")).unwrap();

    let hijack = offer(app(1), &mallory, "9.0.0");
    match ledger.check_bundle(&hijack, false) {
        Err(OwnershipError::OwnedByOther {
            app_id,
            owner,
            offered,
        }) => {
            assert_eq!((app_id, owner, offered), (app(1), id(&alice), id(&mallory)));
        }
        other => panic!("expected OwnedByOther, got {other:?}"),
    }
    // allow_downgrade does not lift ownership.
    assert!(matches!(
        ledger.check_bundle(&hijack, true),
        Err(OwnershipError::OwnedByOther { .. })
    ));
    // Recording it anyway is refused the same way, and nothing is appended.
    assert!(matches!(
        ledger.record_run(&hijack),
        Err(OwnershipError::OwnedByOther { .. })
    ));
    assert_eq!(ledger.size(), 1);
}

#[test]
fn a_service_uuid_cannot_be_hijacked_by_another_app_or_publisher() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let (alice, mallory) = (publisher(1), publisher(66));
    let echo = Uuid::from_u128(0xec40);
    assert_eq!(
        ledger.check_service(echo, app(1), id(&alice)).unwrap(),
        Ownership::New
    );
    ledger.record_service(echo, app(1), id(&alice)).unwrap();
    assert!(ledger
        .record_service(echo, app(1), id(&alice))
        .unwrap()
        .is_none());
    assert!(matches!(
        ledger.check_service(echo, app(1), id(&alice)),
        Ok(Ownership::OwnedBy { .. })
    ));

    for (app_id, key) in [(app(2), &mallory), (app(1), &mallory), (app(2), &alice)] {
        match ledger.check_service(echo, app_id, id(key)) {
            Err(OwnershipError::ServiceOwnedByOther {
                service,
                owner_app,
                owner,
                offered_app,
                offered,
            }) => {
                assert_eq!((service, owner_app, owner), (echo, app(1), id(&alice)));
                assert_eq!((offered_app, offered), (app_id, id(key)));
            }
            other => panic!("expected ServiceOwnedByOther, got {other:?}"),
        }
    }
    assert!(matches!(
        ledger.record_service(echo, app(2), id(&mallory)),
        Err(OwnershipError::ServiceOwnedByOther { .. })
    ));
    assert_eq!(ledger.size(), 1);
}

#[test]
fn a_downgrade_is_refused_unless_allowed() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let alice = publisher(1);
    ledger.record_run(&offer(app(1), &alice, "1.2.0")).unwrap();
    ledger.record_run(&offer(app(1), &alice, "1.10.0")).unwrap();
    assert_eq!(ledger.highest_version(app(1)), Some("1.10.0"));

    match ledger.check_bundle(&offer(app(1), &alice, "1.9.9"), false) {
        Err(OwnershipError::Downgrade {
            app_id,
            installed,
            offered,
        }) => assert_eq!(
            (app_id, installed.as_str(), offered.as_str()),
            (app(1), "1.10.0", "1.9.9")
        ),
        other => panic!("expected Downgrade, got {other:?}"),
    }
    assert!(ledger
        .check_bundle(&offer(app(1), &alice, "1.9.9"), true)
        .is_ok());
    assert!(ledger
        .check_bundle(&offer(app(1), &alice, "1.10.0"), false)
        .is_ok());
    assert!(ledger
        .check_bundle(&offer(app(1), &alice, "2.0.0"), false)
        .is_ok());
    // A pre-release is lower than its release.
    assert!(matches!(
        ledger.check_bundle(&offer(app(1), &alice, "1.10.0-rc.1"), false),
        Err(OwnershipError::Downgrade { .. })
    ));
    // Running an allowed downgrade does not lower the highest version.
    ledger.record_run(&offer(app(1), &alice, "1.9.9")).unwrap();
    assert_eq!(machine.open().highest_version(app(1)), Some("1.10.0"));
}

#[test]
fn versions_that_are_not_semver_are_not_guessed() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let alice = publisher(1);
    ledger
        .record_run(&offer(app(1), &alice, "2024-05"))
        .unwrap();
    assert!(ledger
        .check_bundle(&offer(app(1), &alice, "2024-05"), false)
        .is_ok());
    match ledger.check_bundle(&offer(app(1), &alice, "2024-06"), false) {
        Err(OwnershipError::VersionIncomparable {
            installed, offered, ..
        }) => assert_eq!(
            (installed.as_str(), offered.as_str()),
            ("2024-05", "2024-06")
        ),
        other => panic!("expected VersionIncomparable, got {other:?}"),
    }
    assert!(ledger
        .check_bundle(&offer(app(1), &alice, "2024-06"), true)
        .is_ok());
}

#[test]
fn a_bundle_signed_after_revocation_is_refused_and_one_signed_before_is_accepted() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let alice = publisher(1);
    ledger.record_run(&offer(app(1), &alice, "1.0.0")).unwrap();
    let revoked_from = 1_700_000_000;
    ledger
        .append(Record::revoke(
            &alice,
            id(&alice),
            revoked_from,
            revoked_from + 5,
        ))
        .unwrap();

    let at = |signed_at| elastos_identity::Offer {
        signed_at,
        ..offer(app(1), &alice, "1.0.0")
    };
    assert!(matches!(
        ledger.check_bundle(&at(Some(revoked_from - 1)), false),
        Ok(Ownership::OwnedBy { .. })
    ));
    for refused in [Some(revoked_from), Some(revoked_from + 1), None] {
        match ledger.check_bundle(&at(refused), false) {
            Err(OwnershipError::Revoked { key, since }) => {
                assert_eq!((key, since), (id(&alice), revoked_from));
            }
            other => panic!("expected Revoked for {refused:?}, got {other:?}"),
        }
    }
    // Also for a new app id, and from a rebuilt index.
    std::fs::remove_file(machine.file(elastos_identity::STATE_FILE)).unwrap();
    let ledger = machine.open();
    assert!(matches!(
        ledger.check_bundle(&offer(app(2), &alice, "1.0.0"), false),
        Err(OwnershipError::Revoked { .. })
    ));
}

#[test]
fn only_the_key_or_its_successor_can_revoke_it() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let (alice, mallory) = (publisher(1), publisher(66));
    match ledger.append(Record::revoke(&mallory, id(&alice), 0, 10)) {
        Err(LedgerError::Conflict { conflict }) => match *conflict {
            Conflict::UnauthorizedRevocation { key, signer, .. } => {
                assert_eq!(key, id(&alice));
                assert_eq!(signer, id(&mallory).to_string());
            }
            other => panic!("expected UnauthorizedRevocation, got {other:?}"),
        },
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(ledger.size(), 0);
}

#[test]
fn a_rotation_chain_of_three_keys_hands_ownership_to_the_last_key() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let (key1, key2, key3) = (publisher(1), publisher(2), publisher(3));
    ledger.record_run(&offer(app(1), &key1, "1.0.0")).unwrap();
    let echo = Uuid::from_u128(0xec40);
    ledger.record_service(echo, app(1), id(&key1)).unwrap();
    ledger.append(Record::rotate(&key1, &key2, 1_000)).unwrap();
    ledger.append(Record::rotate(&key2, &key3, 2_000)).unwrap();

    for ledger in [ledger, {
        // The same answers from an index rebuilt from the log.
        std::fs::remove_file(machine.file(elastos_identity::STATE_FILE)).unwrap();
        machine.open()
    }] {
        assert_eq!(
            ledger
                .check_bundle(&offer(app(1), &key3, "1.1.0"), false)
                .unwrap(),
            Ownership::OwnedBy {
                owner: id(&key3),
                bound_to: id(&key1)
            }
        );
        assert!(matches!(
            ledger.check_service(echo, app(1), id(&key3)),
            Ok(Ownership::OwnedBy { owner, .. }) if owner == id(&key3)
        ));
        for old in [&key1, &key2] {
            match ledger.check_bundle(&offer(app(1), old, "1.1.0"), false) {
                Err(OwnershipError::RotatedAway { old: o, new }) => {
                    assert_eq!((o, new), (id(old), id(&key3)));
                }
                other => panic!("expected RotatedAway, got {other:?}"),
            }
            // Also for app ids they never owned.
            assert!(matches!(
                ledger.check_bundle(&offer(app(9), old, "1.0.0"), false),
                Err(OwnershipError::RotatedAway { .. })
            ));
        }
        // A bundle key2 signed before its rotation (at 1500) is still accepted.
        let before = elastos_identity::Offer {
            signed_at: Some(1_500),
            ..offer(app(1), &key2, "1.1.0")
        };
        assert!(ledger.check_bundle(&before, false).is_ok());
        assert_eq!(ledger.current_key(id(&key1)), id(&key3));
        assert_eq!(ledger.predecessors(id(&key3)), vec![id(&key2), id(&key1)]);
    }

    // key3 may revoke key1; key1 may no longer rotate elsewhere.
    let mut ledger = machine.open();
    ledger
        .append(Record::revoke(&key3, id(&key1), 0, 3_000))
        .unwrap();
    let err = ledger
        .append(Record::rotate(&key1, &publisher(4), 4_000))
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Conflict { conflict } if matches!(**conflict, Conflict::Rotation { .. })),
        "{err}"
    );
}

#[test]
fn a_rotation_without_the_new_keys_counter_signature_is_refused() {
    let machine = Machine::new();
    let mut ledger = machine.open();
    let (old, new, mallory) = (publisher(1), publisher(2), publisher(66));
    let mut record = Record::rotate(&old, &new, 10);
    // Counter-signed by someone else: the new key never agreed.
    record.cosignature = Record::rotate(&old, &mallory, 10).cosignature;
    match ledger.append(record.clone()) {
        Err(LedgerError::InvalidRecord {
            source: RecordError::BadCosignature { old: o, new: n },
        }) => assert_eq!((o, n), (id(&old), id(&new))),
        other => panic!("expected BadCosignature, got {other:?}"),
    }
    record.cosignature = None;
    assert!(matches!(
        ledger.append(record),
        Err(LedgerError::InvalidRecord {
            source: RecordError::BadCosignature { .. }
        })
    ));
    // A rotation to a key already in a chain is refused.
    ledger.append(Record::rotate(&old, &new, 10)).unwrap();
    let err = ledger
        .append(Record::rotate(&mallory, &old, 20))
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Conflict { conflict } if matches!(**conflict, Conflict::KeyAlreadyInChain { .. })),
        "{err}"
    );
}
