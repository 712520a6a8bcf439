//! Property tests of the decoder: arbitrary bytes cut at arbitrary points never panic and never
//! decode differently from the same bytes in one piece; encoded frames cut anywhere decode to
//! themselves.

mod common;

use common::{broker_frame, client_frame, BROKER_KINDS, CLIENT_KINDS};
use elastos_proto::v1::{BrokerFrame, ClientFrame};
use elastos_proto::{
    check_client_frame, encode_frame, Frame, FrameDecoder, FrameError, MAX_FRAME_LEN,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// What decoding a stream gave: the frames, then how it ended.
#[derive(Debug, PartialEq)]
struct Outcome<F> {
    frames: Vec<F>,
    /// The first error (decoding stops there: a connection would be closed), or the result of
    /// `finish`.
    end: Result<(), String>,
}

/// Feeds `bytes` to a decoder in pieces cut at `cuts` (sorted, deduplicated offsets), draining
/// frames after each piece, and checks the decoder's memory on the way.
fn decode_in_pieces<F: Frame>(bytes: &[u8], cuts: &[usize]) -> Outcome<F> {
    let mut decoder = FrameDecoder::<F>::new();
    let mut frames = Vec::new();
    let mut edges: Vec<usize> = cuts.iter().map(|&cut| cut.min(bytes.len())).collect();
    edges.push(bytes.len());
    edges.sort_unstable();
    edges.dedup();
    let mut from = 0;
    for to in edges {
        decoder.push(&bytes[from..to]);
        from = to;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        frames,
                        end: Err(error.to_string()),
                    }
                }
            }
            // Whatever is left is less than one whole frame, prefix included.
            assert!(decoder.buffered_len() <= bytes.len());
        }
        assert!(decoder.buffered_len() < 4 + MAX_FRAME_LEN);
    }
    Outcome {
        frames,
        end: decoder.finish().map_err(|error| error.to_string()),
    }
}

/// Garbage that often has a plausible length prefix, so the body decoder sees garbage too.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    vec(vec(any::<u8>(), 0..40), 0..8).prop_map(|bodies| {
        let mut stream = Vec::new();
        for body in bodies {
            stream.extend_from_slice(&(body.len() as u32).to_le_bytes());
            stream.extend_from_slice(&body);
        }
        stream
    })
}

fn client_frames() -> impl Strategy<Value = Vec<ClientFrame>> {
    let frame = (
        0..CLIENT_KINDS,
        any::<u64>(),
        vec(any::<u8>(), 0..300),
        "[a-z_./-]{1,12}",
    )
        .prop_map(|(kind, id, payload, name)| client_frame(kind, id, &payload, &name));
    vec(frame, 0..12)
}

fn broker_frames() -> impl Strategy<Value = Vec<BrokerFrame>> {
    let frame = (
        0..BROKER_KINDS,
        any::<u64>(),
        vec(any::<u8>(), 0..300),
        "\\PC{0,12}",
    )
        .prop_map(|(kind, id, payload, name)| broker_frame(kind, id, &payload, &name));
    vec(frame, 0..12)
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(any::<usize>(), 0..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_and_cuts_do_not_change_the_outcome(
        bytes in vec(any::<u8>(), 0..600),
        cuts in cuts(),
    ) {
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
        let whole = decode_in_pieces::<ClientFrame>(&bytes, &[]);
        prop_assert_eq!(decode_in_pieces::<ClientFrame>(&bytes, &cuts), whole);
        // The broker's side of the same bytes.
        let whole = decode_in_pieces::<BrokerFrame>(&bytes, &[]);
        prop_assert_eq!(decode_in_pieces::<BrokerFrame>(&bytes, &cuts), whole);
    }

    #[test]
    fn framed_garbage_never_panics_nor_fails_validation_by_panicking(
        bytes in framed_garbage(),
        cuts in vec(0..400usize, 0..16),
    ) {
        let outcome = decode_in_pieces::<ClientFrame>(&bytes, &cuts);
        for frame in &outcome.frames {
            let _ = check_client_frame(frame);
        }
        prop_assert_eq!(outcome, decode_in_pieces::<ClientFrame>(&bytes, &[]));
        let _ = decode_in_pieces::<BrokerFrame>(&bytes, &cuts);
    }

    #[test]
    fn client_frames_cut_anywhere_decode_to_themselves(frames in client_frames(), cuts in cuts()) {
        let mut stream = Vec::new();
        for frame in &frames {
            encode_frame(frame, &mut stream).unwrap();
        }
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
        prop_assert_eq!(
            decode_in_pieces::<ClientFrame>(&stream, &cuts),
            Outcome { frames, end: Ok(()) }
        );
    }

    #[test]
    fn broker_frames_cut_anywhere_decode_to_themselves(frames in broker_frames(), cuts in cuts()) {
        let mut stream = Vec::new();
        for frame in &frames {
            encode_frame(frame, &mut stream).unwrap();
        }
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
        prop_assert_eq!(
            decode_in_pieces::<BrokerFrame>(&stream, &cuts),
            Outcome { frames, end: Ok(()) }
        );
    }

    #[test]
    fn a_valid_stream_with_a_flipped_byte_never_panics(
        frames in client_frames(),
        position in any::<usize>(),
        flip in 1..=255u8,
        cuts in cuts(),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            encode_frame(frame, &mut stream).unwrap();
        }
        prop_assume!(!stream.is_empty());
        let position = position % stream.len();
        stream[position] ^= flip;
        let cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
        prop_assert_eq!(
            decode_in_pieces::<ClientFrame>(&stream, &cuts),
            decode_in_pieces::<ClientFrame>(&stream, &[])
        );
    }
}

/// Not random: an oversize prefix anywhere in a stream stops decoding exactly there.
#[test]
fn an_oversize_prefix_after_good_frames_stops_decoding_there() {
    let good = client_frame(3, 9, b"", "x");
    let mut stream = Vec::new();
    encode_frame(&good, &mut stream).unwrap();
    stream.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_le_bytes());
    encode_frame(&good, &mut stream).unwrap();
    let outcome = decode_in_pieces::<ClientFrame>(&stream, &[1, 9, 13]);
    assert_eq!(outcome.frames, [good]);
    let expected = FrameError::Oversize {
        len: MAX_FRAME_LEN as u64 + 1,
        max: MAX_FRAME_LEN,
    };
    assert_eq!(outcome.end, Err(expected.to_string()));
}
