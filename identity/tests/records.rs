//! Records: the canonical bytes are exactly as documented, JSON is only storage, and every
//! single-record check has its own error.

mod common;

use common::{app, id, publisher};
use elastos_identity::{
    Claim, PublisherId, Record, RecordError, RecordSigner, UserKey, RECORD_DOMAIN,
};

#[test]
fn the_canonical_bytes_of_a_bind_are_as_documented() {
    let claim = Claim::Bind {
        app_id: uuid::Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
        publisher: PublisherId([0xaa; 32]),
        first_version: "1.2.3".to_owned(),
        bundle_digest: [0xdd; 32],
        time: 0x0102_0304,
    };
    let mut expected = b"elastos-identity-record-v1\0".to_vec();
    expected.push(1); // kind: bind
    expected.extend(1u8..=16); // the UUID's 16 bytes in RFC 4122 order
    expected.extend([0xaa; 32]);
    expected.extend([5, 0, 0, 0]); // u32 LE length
    expected.extend(b"1.2.3");
    expected.extend([0xdd; 32]);
    expected.extend([4, 3, 2, 1, 0, 0, 0, 0]); // u64 LE
    assert_eq!(claim.canonical_bytes(), expected);
    assert_eq!(RECORD_DOMAIN, b"elastos-identity-record-v1\0");
}

#[test]
fn json_is_storage_only_and_any_change_changes_the_id_or_breaks_the_signature() {
    let user = UserKey::from_secret_seed([5; 32]);
    let record = Record::bind(&user, app(1), id(&publisher(1)), "1.0.0", [9; 32], 100);
    record.verify().unwrap();
    let json = record.to_json();
    let parsed = Record::from_json(&json).unwrap();
    assert_eq!(parsed, record);
    assert_eq!(parsed.id(), record.id());
    // The same claim, pretty-printed or with keys reordered, is the same record.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    assert_eq!(Record::from_json(&pretty).unwrap().id(), record.id());

    // Changing any field is caught.
    let leaf = record.leaf_bytes();
    for changed in [
        Record::bind(&user, app(2), id(&publisher(1)), "1.0.0", [9; 32], 100),
        Record::bind(&user, app(1), id(&publisher(2)), "1.0.0", [9; 32], 100),
        Record::bind(&user, app(1), id(&publisher(1)), "1.0.1", [9; 32], 100),
        Record::bind(&user, app(1), id(&publisher(1)), "1.0.0", [8; 32], 100),
        Record::bind(&user, app(1), id(&publisher(1)), "1.0.0", [9; 32], 101),
    ] {
        assert_ne!(changed.id(), record.id());
        // Its claim under the old signature does not verify.
        let forged = Record {
            claim: changed.claim,
            ..record.clone()
        };
        assert!(matches!(
            forged.verify(),
            Err(RecordError::BadSignature { kind: "bind", .. })
        ));
    }
    // A changed signature byte: another id, and no longer valid.
    let mut bad = record.clone();
    bad.signature[10] ^= 1;
    assert_ne!(bad.leaf_bytes(), leaf);
    assert_ne!(bad.id(), record.id());
    assert!(matches!(
        bad.verify(),
        Err(RecordError::BadSignature { .. })
    ));
    // Unknown fields are refused, not ignored.
    let extra = json.replacen('{', "{\"extra\":1,", 1);
    assert!(matches!(
        Record::from_json(&extra),
        Err(RecordError::Json { .. })
    ));
}

#[test]
fn a_rotation_must_be_signed_by_the_old_key_and_not_to_itself() {
    let (old, new, other) = (publisher(1), publisher(2), publisher(3));
    let mut record = Record::rotate(&old, &new, 10);
    record.verify().unwrap();
    // Re-signed by another key that names itself as signer.
    record.signature = other.sign_message(&record.claim.canonical_bytes());
    record.signer = other.public_key();
    match record.verify() {
        Err(RecordError::WrongSigner { kind, expected, .. }) => {
            assert_eq!(kind, "rotate");
            assert!(expected.contains(&id(&old).to_string()));
        }
        other => panic!("expected WrongSigner, got {other:?}"),
    }
    assert!(matches!(
        Record::rotate(&old, &old, 10).verify(),
        Err(RecordError::RotateToSelf { .. })
    ));
}

#[test]
fn only_rotations_carry_a_counter_signature_and_versions_are_bounded() {
    let user = UserKey::from_secret_seed([5; 32]);
    let mut record = Record::bind(&user, app(1), id(&publisher(1)), "1.0.0", [9; 32], 100);
    record.cosignature = Some([0; 64]);
    assert!(matches!(
        record.verify(),
        Err(RecordError::UnexpectedCosignature { kind: "bind" })
    ));
    for version in [String::new(), "9".repeat(257)] {
        let record = Record::bind(&user, app(1), id(&publisher(1)), &version, [9; 32], 1);
        assert!(matches!(
            record.verify(),
            Err(RecordError::BadVersionLength { .. })
        ));
    }
}

mod properties {
    use elastos_identity::{Claim, PublisherId, Record, UserKey};
    use proptest::prelude::*;
    use uuid::Uuid;

    fn claim() -> impl Strategy<Value = Claim> {
        let uuid = any::<u128>().prop_map(Uuid::from_u128);
        let key = any::<[u8; 32]>().prop_map(PublisherId);
        let version = "[0-9a-z.+-]{1,20}";
        prop_oneof![
            (
                uuid.clone(),
                key.clone(),
                version,
                any::<[u8; 32]>(),
                any::<u64>()
            )
                .prop_map(|(app_id, publisher, v, bundle_digest, time)| Claim::Bind {
                    app_id,
                    publisher,
                    first_version: v,
                    bundle_digest,
                    time
                }),
            (uuid.clone(), uuid.clone(), key.clone(), any::<u64>()).prop_map(
                |(service, app_id, publisher, time)| Claim::BindService {
                    service,
                    app_id,
                    publisher,
                    time
                }
            ),
            (key.clone(), key.clone(), any::<u64>()).prop_map(|(old_key, new_key, time)| {
                Claim::Rotate {
                    old_key,
                    new_key,
                    time,
                }
            }),
            (key.clone(), any::<u64>(), any::<u64>()).prop_map(|(key, from_time, time)| {
                Claim::Revoke {
                    key,
                    from_time,
                    time,
                }
            }),
            (uuid, key, version, any::<[u8; 32]>(), any::<u64>()).prop_map(
                |(app_id, publisher, version, bundle_digest, time)| Claim::Version {
                    app_id,
                    publisher,
                    version,
                    bundle_digest,
                    time
                }
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The canonical encoding is injective: two different claims never sign the same bytes.
        #[test]
        fn different_claims_have_different_canonical_bytes(a in claim(), b in claim()) {
            prop_assert_eq!(a == b, a.canonical_bytes() == b.canonical_bytes());
        }

        /// Storing a record as JSON and reading it back gives the same record and id.
        #[test]
        fn json_round_trips_to_the_same_record(c in claim()) {
            let record = Record::sign(c, &UserKey::from_secret_seed([5; 32]));
            let back = Record::from_json(&record.to_json()).unwrap();
            prop_assert_eq!(back.id(), record.id());
            prop_assert_eq!(back, record);
        }
    }
}
