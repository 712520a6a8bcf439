//! Each way a byte stream can be bad gets its own `FrameError`, at the earliest byte that shows it.

mod common;

use elastos_proto::v1::{BrokerFrame, ClientFrame};
use elastos_proto::{encode_frame, FrameDecoder, FrameError, MAX_FRAME_LEN};

fn decoder_with(bytes: &[u8]) -> FrameDecoder<ClientFrame> {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    decoder
}

fn a_valid_frame() -> (ClientFrame, Vec<u8>) {
    let frame = common::client_frame(5, 42, b"", "x");
    let mut bytes = Vec::new();
    encode_frame(&frame, &mut bytes).unwrap();
    (frame, bytes)
}

#[test]
fn an_oversize_length_prefix_is_rejected_from_its_four_bytes_alone_and_stays_rejected() {
    for len in [MAX_FRAME_LEN as u32 + 1, u32::MAX] {
        let mut decoder = decoder_with(&len.to_le_bytes());
        for _ in 0..2 {
            let error = decoder.next_frame().unwrap_err();
            assert!(
                matches!(error, FrameError::Oversize { len: l, max } if l == u64::from(len) && max == MAX_FRAME_LEN),
                "{error:?}"
            );
        }
        // Nothing was read past the prefix, and nothing allocated for the announced body.
        assert_eq!(decoder.buffered_len(), 4);
    }
}

#[test]
fn a_partial_length_prefix_waits_for_more_bytes() {
    let mut decoder = decoder_with(&[0xFF, 0xFF, 0xFF]);
    assert!(decoder.next_frame().unwrap().is_none());
    decoder.push(&[0xFF]);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::Oversize { .. })
    ));
}

#[test]
fn a_zero_length_frame_is_rejected_and_consumed() {
    let (frame, bytes) = a_valid_frame();
    let mut decoder = decoder_with(&[0, 0, 0, 0]);
    decoder.push(&bytes);
    assert!(matches!(decoder.next_frame(), Err(FrameError::Empty)));
    assert_eq!(decoder.next_frame().unwrap(), Some(frame));
}

#[test]
fn a_body_that_is_not_protobuf_is_undecodable() {
    // 0xFF: field 31 with wire type 7, which does not exist.
    let mut decoder = decoder_with(&[1, 0, 0, 0, 0xFF]);
    let error = decoder.next_frame().unwrap_err();
    assert!(
        matches!(
            error,
            FrameError::Undecodable {
                frame: "ClientFrame",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(decoder.buffered_len(), 0, "the bad frame is consumed");
}

#[test]
fn a_string_field_with_invalid_utf8_is_undecodable() {
    // ClientFrame.call (field 5) { method (field 3): 0xC3 0x28 }, which is not UTF-8.
    let body = [0x2A, 0x04, 0x1A, 0x02, 0xC3, 0x28];
    let mut decoder = decoder_with(&[body.len() as u8, 0, 0, 0]);
    decoder.push(&body);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::Undecodable { .. })
    ));
}

#[test]
fn a_truncated_field_inside_a_whole_frame_is_undecodable() {
    // ClientFrame.cancel announcing 5 bytes with 1 present.
    let mut decoder = decoder_with(&[3, 0, 0, 0, 0x32, 0x05, 0x08]);
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::Undecodable { .. })
    ));
}

#[test]
fn a_frame_with_only_an_unknown_field_has_no_body() {
    // Field 99, varint 1: what a newer peer's new body kind looks like to this version.
    let mut decoder = decoder_with(&[3, 0, 0, 0, 0x98, 0x06, 0x01]);
    let error = decoder.next_frame().unwrap_err();
    assert!(
        matches!(
            error,
            FrameError::NoBody {
                frame: "ClientFrame"
            }
        ),
        "{error:?}"
    );
    assert_eq!(decoder.buffered_len(), 0, "the bad frame is consumed");
}

#[test]
fn a_broker_frame_sent_to_the_broker_is_undecodable() {
    // `welcome` and `hello` are both field 1, but `ServerHello.identity` (field 2, a message)
    // meets `ClientHello.max_version` (field 2, a varint): a wire type mismatch.
    let welcome = common::broker_frame(0, 3, b"", "x");
    let mut bytes = Vec::new();
    encode_frame(&welcome, &mut bytes).unwrap();
    let mut decoder = FrameDecoder::<BrokerFrame>::new();
    decoder.push(&bytes);
    assert_eq!(decoder.next_frame().unwrap(), Some(welcome));
    assert!(matches!(
        decoder_with(&bytes).next_frame(),
        Err(FrameError::Undecodable { .. })
    ));
}

#[test]
fn a_stream_ending_inside_a_frame_is_truncated() {
    let (_, bytes) = a_valid_frame();
    for cut in 1..bytes.len() {
        let mut decoder = decoder_with(&bytes[..cut]);
        assert!(decoder.next_frame().unwrap().is_none());
        let error = decoder.finish().unwrap_err();
        assert!(
            matches!(error, FrameError::Truncated { buffered } if buffered == cut),
            "{error:?}"
        );
    }
    let mut decoder = decoder_with(&bytes);
    assert!(decoder.next_frame().unwrap().is_some());
    decoder.finish().expect("ended between frames");
}

#[test]
fn every_error_formats_as_a_lowercase_sentence_with_the_facts() {
    let undecodable = decoder_with(&[1, 0, 0, 0, 0xFF]).next_frame().unwrap_err();
    let cases = [
        (
            FrameError::Oversize {
                len: 2_000_000,
                max: MAX_FRAME_LEN,
            },
            "frame of 2000000 bytes is larger than the maximum of 1048576 bytes; hint: send large data in several calls",
        ),
        (
            FrameError::Empty,
            "zero-length frame; expected a length prefix of at least 1",
        ),
        (
            undecodable,
            "frame body is not a valid ClientFrame message",
        ),
        (
            FrameError::NoBody {
                frame: "BrokerFrame",
            },
            "BrokerFrame has no body, or one this protocol version does not know",
        ),
        (
            FrameError::Truncated { buffered: 7 },
            "connection ended inside a frame, with 7 bytes of it received",
        ),
    ];
    for (error, expected) in cases {
        let text = error.to_string();
        assert_eq!(text, expected);
        // The cause is printed by whoever walks the chain; the message must not print it too.
        if let Some(source) = std::error::Error::source(&error) {
            let cause = source.to_string();
            assert!(
                cause.starts_with("failed to decode Protobuf message: "),
                "{cause}"
            );
            assert!(!text.contains(&cause), "{text:?} repeats {cause:?}");
        }
    }
}
