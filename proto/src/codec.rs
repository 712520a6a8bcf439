//! Length-delimited framing: a 4-byte little-endian body length, then the protobuf body.
//!
//! ```text
//! +----------------------+---------------------------------------------+
//! | len: u32 LE (4 B)    | body: len bytes, one ClientFrame/BrokerFrame |
//! +----------------------+---------------------------------------------+
//!   1 <= len <= MAX_FRAME_LEN (1 MiB)
//! ```
//!
//! A fixed-width prefix rather than protobuf's varint: the decoder knows after exactly four bytes
//! whether a frame is acceptable, and rejects an oversize one before reading any of it.
//!
//! [`FrameDecoder`] is sans-IO: the caller reads from its socket however it likes, hands the bytes
//! to [`FrameDecoder::push`] and takes whole frames out with [`FrameDecoder::next_frame`]. Its memory
//! follows the bytes actually received, never a length prefix: a peer announcing a 1 MiB frame and
//! sending four bytes costs four bytes. The buffer holds what was pushed and not yet decoded, so a
//! caller that drains [`next_frame`](FrameDecoder::next_frame) until `Ok(None)` after each push
//! keeps it under one frame plus one pushed chunk.

use std::marker::PhantomData;

use crate::v1::{BrokerFrame, ClientFrame};

/// Largest frame body, in bytes, the length prefix excluded: 1 MiB. Frames carry calls and events,
/// not bulk data; the bound is what lets a broker hold a partial frame for every connection.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Size of the length prefix, in bytes.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Why a frame could not be encoded or decoded. After any decoding error the connection should be
/// closed: the protocol has no way to resynchronise, and a peer that sent a bad frame is broken or
/// hostile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix (decoding) or an encoded body (encoding) is larger than [`MAX_FRAME_LEN`].
    /// The decoder reports it as soon as the four prefix bytes are in, reads none of the body, and
    /// keeps reporting it: the frame boundary is lost.
    #[error(
        "frame of {len} bytes is larger than the maximum of {max} bytes; \
         hint: send large data in several calls"
    )]
    Oversize {
        /// The announced or encoded body length, in bytes.
        len: u64,
        /// [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// A length prefix of zero. Every frame holds a message with a body, which is never empty.
    #[error("zero-length frame; expected a length prefix of at least 1")]
    Empty,
    /// The body is not a valid protobuf encoding of the frame type (bad wire type, truncated
    /// field, invalid UTF-8 in a string, ...). The frame is consumed.
    #[error("frame body is not a valid {frame} message")]
    Undecodable {
        /// `"ClientFrame"` or `"BrokerFrame"`.
        frame: &'static str,
        /// What protobuf decoding found.
        source: prost::DecodeError,
    },
    /// The frame's `body` is not set, or is a field this protocol version does not know (a newer
    /// peer's message). Decoding consumes the frame; encoding refuses to write it.
    #[error("{frame} has no body, or one this protocol version does not know")]
    NoBody {
        /// `"ClientFrame"` or `"BrokerFrame"`.
        frame: &'static str,
    },
    /// The stream ended inside a frame (see [`FrameDecoder::finish`]).
    #[error("connection ended inside a frame, with {buffered} bytes of it received")]
    Truncated {
        /// Bytes of the unfinished frame, its length prefix included.
        buffered: usize,
    },
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::v1::ClientFrame {}
    impl Sealed for crate::v1::BrokerFrame {}
}

/// The two top-level messages that travel in frames: [`ClientFrame`] (app to broker) and
/// [`BrokerFrame`] (broker to app). Sealed.
pub trait Frame: prost::Message + Default + sealed::Sealed {
    /// The message's name, for errors.
    const NAME: &'static str;
    /// Whether `body` is set to a variant this version knows.
    fn has_body(&self) -> bool;
}

impl Frame for ClientFrame {
    const NAME: &'static str = "ClientFrame";
    fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

impl Frame for BrokerFrame {
    const NAME: &'static str = "BrokerFrame";
    fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

/// Appends `frame`, length prefix first, to `out`. Refuses a frame without a body
/// ([`FrameError::NoBody`]) or one whose body would exceed [`MAX_FRAME_LEN`]
/// ([`FrameError::Oversize`]); `out` is unchanged then.
pub fn encode_frame<F: Frame>(frame: &F, out: &mut Vec<u8>) -> Result<(), FrameError> {
    if !frame.has_body() {
        return Err(FrameError::NoBody { frame: F::NAME });
    }
    let len = frame.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(FrameError::Oversize {
            len: len as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let prefix = u32::try_from(len).expect("MAX_FRAME_LEN fits in u32");
    out.reserve(LENGTH_PREFIX_LEN + len);
    out.extend_from_slice(&prefix.to_le_bytes());
    frame.encode(out).expect("a Vec grows to fit any message");
    Ok(())
}

/// Incremental decoder of a stream of `F` frames. See the [module docs](self).
#[derive(Debug)]
pub struct FrameDecoder<F> {
    /// Bytes received; those before `start` are already decoded.
    buf: Vec<u8>,
    start: usize,
    frames: PhantomData<fn() -> F>,
}

impl<F: Frame> Default for FrameDecoder<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Frame> FrameDecoder<F> {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            frames: PhantomData,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed and not yet taken out as frames: a partial frame, or frames not yet asked for.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed first, or why the stream is bad.
    /// Checks the length prefix as soon as its four bytes are in.
    pub fn next_frame(&mut self) -> Result<Option<F>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some((prefix, rest)) = pending.split_first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix);
        let len = match usize::try_from(len) {
            Ok(0) => {
                self.start += LENGTH_PREFIX_LEN;
                return Err(FrameError::Empty);
            }
            Ok(len) if len <= MAX_FRAME_LEN => len,
            _ => {
                return Err(FrameError::Oversize {
                    len: len.into(),
                    max: MAX_FRAME_LEN,
                })
            }
        };
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        let decoded = F::decode(body);
        self.start += LENGTH_PREFIX_LEN + len;
        let frame = decoded.map_err(|source| FrameError::Undecodable {
            frame: F::NAME,
            source,
        })?;
        if !frame.has_body() {
            return Err(FrameError::NoBody { frame: F::NAME });
        }
        Ok(Some(frame))
    }

    /// Call when the stream has ended: `Ok` if it ended between frames, else
    /// [`FrameError::Truncated`]. Frames still buffered count as unfinished too, so drain
    /// [`next_frame`](Self::next_frame) first.
    pub fn finish(self) -> Result<(), FrameError> {
        match self.buffered_len() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}
