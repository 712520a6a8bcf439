//! The trust list: a file of trusted publishers and the policy.

mod common;

use common::{id, publisher};
use elastos_identity::{Policy, TrustError, TrustList};

#[test]
fn trusted_only_refuses_strangers_and_follows_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trust.json");
    let mut list = TrustList::load(&path).unwrap();
    assert_eq!(list.policy, Policy::Any);
    assert_eq!(list.allows(id(&publisher(66)), &[]).unwrap(), None);

    list.add(id(&publisher(1)), "Alice Apps").unwrap();
    list.policy = Policy::TrustedOnly;
    list.save(&path).unwrap();
    let list = TrustList::load(&path).unwrap();
    assert_eq!(
        list.allows(id(&publisher(1)), &[]).unwrap().unwrap().name,
        "Alice Apps"
    );
    // Alice's rotated key is trusted through its chain.
    assert!(list
        .allows(id(&publisher(2)), &[id(&publisher(1))])
        .unwrap()
        .is_some());
    match list.allows(id(&publisher(66)), &[]) {
        Err(TrustError::Untrusted {
            publisher: refused,
            trusted,
        }) => {
            assert_eq!((refused, trusted), (id(&publisher(66)), 1));
        }
        other => panic!("expected Untrusted, got {other:?}"),
    }
}

#[test]
fn names_and_files_are_checked() {
    let mut list = TrustList::default();
    assert!(matches!(
        list.add(id(&publisher(1)), "bad\x1b[2Jname"),
        Err(TrustError::BadName { .. })
    ));
    list.add(id(&publisher(1)), "a").unwrap();
    list.add(id(&publisher(1)), "b").unwrap();
    assert_eq!(list.publishers.len(), 1);
    assert!(list.remove(id(&publisher(1))));
    assert!(!list.remove(id(&publisher(1))));

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trust.json");
    std::fs::write(&path, r#"{"policy":"everyone"}"#).unwrap();
    assert!(matches!(
        TrustList::load(&path),
        Err(TrustError::Malformed { .. })
    ));
}
