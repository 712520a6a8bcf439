//! Every message kind survives encode -> decode, alone, in a stream and split byte by byte; and the
//! bytes on the wire are pinned.

mod common;

use std::collections::BTreeSet;

use common::{broker_frame, client_frame, BROKER_KINDS, CLIENT_KINDS};
use elastos_proto::v1::{self, client_frame::Body, BrokerFrame, ClientFrame};
use elastos_proto::{encode_frame, Frame, FrameDecoder, FrameError, MAX_FRAME_LEN};

fn encode<F: Frame>(frame: &F) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(frame, &mut out).expect("sample frames encode");
    out
}

/// Decodes every frame in `bytes`, pushed in chunks of `chunk` bytes.
fn decode_all<F: Frame>(bytes: &[u8], chunk: usize) -> Vec<F> {
    let mut decoder = FrameDecoder::<F>::new();
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk) {
        decoder.push(piece);
        while let Some(frame) = decoder.next_frame().expect("sample frames decode") {
            frames.push(frame);
        }
    }
    decoder.finish().expect("stream ends between frames");
    frames
}

/// The same kinds with a spread of values: zero, small, all bits set; empty, short and 64 KiB
/// payloads; short and longest-allowed names.
fn variations() -> Vec<(u64, Vec<u8>, String)> {
    vec![
        (0, Vec::new(), "a".to_owned()),
        (1, vec![0xAB; 64], "say_hello".to_owned()),
        (
            u64::MAX,
            (0..=255).cycle().take(64 << 10).collect(),
            "m".repeat(128),
        ),
    ]
}

#[test]
fn every_client_frame_kind_round_trips() {
    for (id, payload, name) in variations() {
        for kind in 0..CLIENT_KINDS {
            let frame = client_frame(kind, id, &payload, &name);
            let decoded: Vec<ClientFrame> = decode_all(&encode(&frame), usize::MAX);
            assert_eq!(decoded, [frame], "client kind {kind}, id {id}");
        }
    }
}

#[test]
fn every_broker_frame_kind_round_trips() {
    for (id, payload, name) in variations() {
        for kind in 0..BROKER_KINDS {
            let frame = broker_frame(kind, id, &payload, &name);
            let decoded: Vec<BrokerFrame> = decode_all(&encode(&frame), usize::MAX);
            assert_eq!(decoded, [frame], "broker kind {kind}, id {id}");
        }
    }
}

#[test]
fn samples_cover_every_body_kind() {
    let client: BTreeSet<_> = (0..CLIENT_KINDS)
        .map(|kind| {
            client_frame(kind, 1, b"", "n")
                .body
                .as_ref()
                .unwrap()
                .name()
        })
        .collect();
    let broker: BTreeSet<_> = (0..BROKER_KINDS)
        .map(|kind| {
            broker_frame(kind, 1, b"", "n")
                .body
                .as_ref()
                .unwrap()
                .name()
        })
        .collect();
    assert_eq!(client.len(), 12, "{client:?}");
    assert_eq!(broker.len(), 9, "{broker:?}");
}

#[test]
fn a_stream_of_frames_decodes_in_order_whatever_the_read_sizes() {
    let frames: Vec<ClientFrame> = variations()
        .iter()
        .flat_map(|(id, payload, name)| {
            (0..CLIENT_KINDS).map(move |kind| client_frame(kind, *id, payload, name))
        })
        .collect();
    let mut stream = Vec::new();
    for frame in &frames {
        encode_frame(frame, &mut stream).unwrap();
    }
    for chunk in [1, 3, 4, 5, 4096, usize::MAX] {
        assert_eq!(
            decode_all::<ClientFrame>(&stream, chunk),
            frames,
            "chunk {chunk}"
        );
    }
}

/// The smallest possible frame, byte for byte: any implementation in any language must agree.
#[test]
fn wire_format_is_a_little_endian_u32_length_then_the_protobuf_body() {
    let cancel = ClientFrame {
        body: Some(Body::Cancel(v1::Cancel { call_id: 1 })),
    };
    // Length 4; field 6 (`cancel`), wire type 2, 2 bytes; inside: field 1 varint 1.
    assert_eq!(encode(&cancel), [4, 0, 0, 0, 0x32, 0x02, 0x08, 0x01]);

    let hello = ClientFrame {
        body: Some(Body::Hello(v1::ClientHello::supported())),
    };
    assert_eq!(
        encode(&hello),
        [6, 0, 0, 0, 0x0A, 0x04, 0x08, 0x01, 0x10, 0x01]
    );
}

/// A call whose payload makes the encoded body exactly `body_len` bytes.
fn call_with_body_len(body_len: usize) -> ClientFrame {
    // Body: 1 (ClientFrame tag) + 3 (length varint, for these sizes) + call;
    // call: 2 + 16 (service id) + 3 (method "m") + 1 + 3 (payload tag and length) + payload.
    let payload = vec![7; body_len - (1 + 3 + 2 + 16 + 3 + 1 + 3)];
    let frame = client_frame(4, 0, &payload, "m");
    assert_eq!(prost::Message::encoded_len(&frame), body_len);
    frame
}

#[test]
fn a_frame_of_exactly_the_maximum_size_round_trips() {
    let frame = call_with_body_len(MAX_FRAME_LEN);
    let bytes = encode(&frame);
    assert_eq!(bytes.len(), 4 + MAX_FRAME_LEN);
    assert_eq!(decode_all::<ClientFrame>(&bytes, 64 << 10), [frame]);
}

#[test]
fn encoding_one_byte_over_the_maximum_is_refused_and_writes_nothing() {
    let frame = call_with_body_len(MAX_FRAME_LEN + 1);
    let mut out = vec![9];
    let error = encode_frame(&frame, &mut out).unwrap_err();
    assert!(
        matches!(error, FrameError::Oversize { len, max } if len == MAX_FRAME_LEN as u64 + 1 && max == MAX_FRAME_LEN),
        "{error:?}"
    );
    assert_eq!(out, [9]);
}

#[test]
fn encoding_a_frame_without_a_body_is_refused() {
    let mut out = Vec::new();
    let error = encode_frame(&BrokerFrame::default(), &mut out).unwrap_err();
    assert!(
        matches!(
            error,
            FrameError::NoBody {
                frame: "BrokerFrame"
            }
        ),
        "{error:?}"
    );
    assert!(out.is_empty());
}
