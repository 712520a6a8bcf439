//! The per-frame shape rules: well-formed frames pass, each broken rule has its own error.

mod common;

use common::{client_frame, CLIENT_KINDS};
use elastos_proto::v1::{self, client_frame::Body, ClientFrame};
use elastos_proto::validate::{MAX_METHODS, MAX_NAME_LEN, MAX_TOPICS};
use elastos_proto::{check_client_frame, InvalidFrame};

fn frame(body: Body) -> ClientFrame {
    ClientFrame { body: Some(body) }
}

fn register(methods: Vec<String>, topics: Vec<String>) -> ClientFrame {
    frame(Body::Register(v1::Register {
        request_id: 1,
        service_id: common::service_id(1),
        methods,
        topics,
    }))
}

#[test]
fn well_formed_frames_of_every_kind_pass() {
    let hello = frame(Body::Hello(v1::ClientHello::supported()));
    assert_eq!(check_client_frame(&hello), Ok(()));
    // The samples append up to two bytes to `name` for some of their names.
    let longest = "x".repeat(MAX_NAME_LEN - 2);
    for name in ["a", "say_hello", "Echo.Say-v2", "events/news", &longest] {
        // Kind 0 is a hello with arbitrary versions, checked above and below.
        for kind in 1..CLIENT_KINDS {
            let frame = client_frame(kind, 7, b"\0\xFF", name);
            assert_eq!(
                check_client_frame(&frame),
                Ok(()),
                "kind {kind}, name {name:?}"
            );
        }
    }
}

#[test]
fn service_ids_must_be_sixteen_bytes() {
    for len in [0, 15, 17, 36] {
        let lookup = frame(Body::Lookup(v1::Lookup {
            request_id: 0,
            service_id: vec![0; len],
        }));
        assert_eq!(
            check_client_frame(&lookup),
            Err(InvalidFrame::ServiceIdLength {
                field: "Lookup.service_id",
                len
            })
        );
    }
}

#[test]
fn every_service_id_field_is_checked() {
    for kind in 1..CLIENT_KINDS {
        let mut frame = client_frame(kind, 7, b"", "m");
        let id = match frame.body.as_mut().unwrap() {
            Body::Register(m) => &mut m.service_id,
            Body::Unregister(m) => &mut m.service_id,
            Body::Lookup(m) => &mut m.service_id,
            Body::Call(m) => &mut m.service_id,
            Body::Subscribe(m) => &mut m.service_id,
            Body::Unsubscribe(m) => &mut m.service_id,
            Body::Publish(m) => &mut m.service_id,
            Body::Watch(m) => &mut m.service_id,
            Body::Unwatch(m) => &mut m.service_id,
            Body::Hello(_) | Body::Cancel(_) | Body::Reply(_) => continue,
        };
        id.pop();
        assert!(
            matches!(
                check_client_frame(&frame),
                Err(InvalidFrame::ServiceIdLength { len: 15, .. })
            ),
            "kind {kind}"
        );
    }
}

#[test]
fn names_must_have_one_to_the_maximum_bytes() {
    for bad in [String::new(), "x".repeat(MAX_NAME_LEN + 1)] {
        let len = bad.len();
        for kind in [4, 7, 8, 9] {
            let error = check_client_frame(&client_frame(kind, 1, b"", &bad)).unwrap_err();
            assert!(
                matches!(error, InvalidFrame::NameLength { len: l, .. } if l == len),
                "kind {kind}: {error:?}"
            );
        }
    }
}

#[test]
fn names_must_use_the_allowed_bytes_only() {
    for (bad, byte, offset) in [
        ("a b", b' ', 1),
        ("é", 0xC3, 0),
        ("a\0", 0, 1),
        ("a:b", b':', 1),
    ] {
        let call = client_frame(4, 1, b"", bad);
        assert_eq!(
            check_client_frame(&call),
            Err(InvalidFrame::NameByte {
                field: "Call.method",
                byte,
                offset
            })
        );
    }
}

#[test]
fn registered_names_are_checked_bounded_and_distinct() {
    let names = |count: usize| (0..count).map(|i| format!("n{i}")).collect::<Vec<_>>();
    assert_eq!(
        check_client_frame(&register(names(MAX_METHODS), names(MAX_TOPICS))),
        Ok(())
    );
    assert_eq!(
        check_client_frame(&register(names(MAX_METHODS + 1), Vec::new())),
        Err(InvalidFrame::TooMany {
            field: "Register.methods",
            count: MAX_METHODS + 1,
            max: MAX_METHODS
        })
    );
    assert_eq!(
        check_client_frame(&register(Vec::new(), names(MAX_TOPICS + 1))),
        Err(InvalidFrame::TooMany {
            field: "Register.topics",
            count: MAX_TOPICS + 1,
            max: MAX_TOPICS
        })
    );
    let repeated = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
    assert_eq!(
        check_client_frame(&register(Vec::new(), repeated)),
        Err(InvalidFrame::Duplicate {
            field: "Register.topics",
            index: 2
        })
    );
    assert_eq!(
        check_client_frame(&register(
            vec!["ok".to_owned(), "not ok".to_owned()],
            Vec::new()
        )),
        Err(InvalidFrame::NameByte {
            field: "Register.methods",
            byte: b' ',
            offset: 3
        })
    );
}

#[test]
fn hello_must_offer_a_real_version_range() {
    for (min, max) in [(0, 0), (0, 3), (2, 1)] {
        let hello = frame(Body::Hello(v1::ClientHello {
            min_version: min,
            max_version: max,
        }));
        assert_eq!(
            check_client_frame(&hello),
            Err(InvalidFrame::VersionRange { min, max })
        );
    }
    // Well formed but unsupported is the handshake's business, not a shape error.
    let future = frame(Body::Hello(v1::ClientHello {
        min_version: 5,
        max_version: 9,
    }));
    assert_eq!(check_client_frame(&future), Ok(()));
}

#[test]
fn every_error_formats_as_a_lowercase_sentence_with_the_facts() {
    let cases = [
        (
            InvalidFrame::ServiceIdLength {
                field: "Call.service_id",
                len: 36,
            },
            "Call.service_id is 36 bytes; expected a 16-byte UUID",
        ),
        (
            InvalidFrame::NameLength {
                field: "Call.method",
                len: 0,
            },
            "Call.method is 0 bytes; expected 1 to 128",
        ),
        (
            InvalidFrame::NameByte {
                field: "Subscribe.topic",
                byte: b' ',
                offset: 4,
            },
            "Subscribe.topic has byte 0x20 at offset 4; expected only ASCII letters, digits and _ . - /",
        ),
        (
            InvalidFrame::TooMany {
                field: "Register.topics",
                count: 300,
                max: 256,
            },
            "Register.topics has 300 entries; expected at most 256",
        ),
        (
            InvalidFrame::Duplicate {
                field: "Register.methods",
                index: 3,
            },
            "Register.methods lists entry 3 twice; expected distinct names",
        ),
        (
            InvalidFrame::VersionRange { min: 2, max: 1 },
            "ClientHello offers versions 2..=1; expected 1 <= min_version <= max_version",
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error.to_string(), expected);
    }
}
