//! Arbitrary bytes, pushed in pieces whose sizes the input's first byte chooses, through both frame
//! decoders and the shape checks: nothing may panic, and the pieces must not change the outcome.

#![no_main]

use elastos_proto::v1::{BrokerFrame, ClientFrame};
use elastos_proto::{check_client_frame, Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

/// Frames decoded, then the first error or the end-of-stream result, as text.
fn decode<F: Frame + PartialEq>(bytes: &[u8], piece: usize) -> (Vec<F>, Result<(), String>) {
    let mut decoder = FrameDecoder::<F>::new();
    let mut frames = Vec::new();
    for chunk in bytes.chunks(piece) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Err(error.to_string())),
            }
        }
    }
    let end = decoder.finish().map_err(|error| error.to_string());
    (frames, end)
}

fuzz_target!(|input: &[u8]| {
    let Some((&piece, bytes)) = input.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let (frames, end) = decode::<ClientFrame>(bytes, piece);
    for frame in &frames {
        let _ = check_client_frame(frame);
    }
    assert_eq!((frames, end), decode::<ClientFrame>(bytes, usize::MAX));
    let broker = decode::<BrokerFrame>(bytes, piece);
    assert_eq!(broker, decode::<BrokerFrame>(bytes, usize::MAX));
});
