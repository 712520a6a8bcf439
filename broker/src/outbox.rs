//! A connection's outbound queue: frames encoded straight into one byte buffer, which the
//! connection's writer task swaps out and sends with as few `write` calls as the socket allows.
//!
//! Encoding at enqueue time bounds the queue by what it really costs (bytes, not frames) and
//! batches writes for free: whatever piles up while one write is in progress goes out in the next.
//!
//! Availability notices to a watcher (`service_available`, `provider_gone`) are not queued as
//! bytes but kept per service, the latest replacing any not yet written: another app registering
//! and unregistering a watched service in a loop would otherwise fill a paused watcher's queue
//! with notices it must get, and get it disconnected. The latest state is all a watcher needs, so
//! what one service can cost a watcher is one frame.

use std::io;
use std::sync::Arc;

use elastos_proto::v1::{broker_frame, BrokerFrame};
use elastos_proto::{encode_frame, LENGTH_PREFIX_LEN, MAX_FRAME_LEN};
use parking_lot::Mutex;
use tokio::net::UnixStream;
use tokio::sync::Notify;
use uuid::Uuid;

/// Capacity a writer keeps between batches; a larger buffer left by a burst is freed, so an idle
/// connection does not keep a burst's memory.
const KEPT_CAPACITY: usize = 64 * 1024;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is past its bound (soft for [`Outbox::offer`], hard for [`Outbox::push`]).
    Full {
        /// Bytes queued.
        queued: usize,
    },
    /// The frame encodes to more than a frame may hold (a payload that filled a frame plus what
    /// the broker adds to it).
    Oversize,
    /// The connection is closing; nothing more goes out.
    Closed,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    soft_limit: usize,
    hard_limit: usize,
}

struct State {
    buf: Vec<u8>,
    /// The latest availability notice per service not yet written, in the order the services
    /// were first noticed; written after `buf`. At most one per watched service
    /// ([`MAX_WATCHES`](crate::MAX_WATCHES)), so a short list searched linearly.
    notices: Vec<(Uuid, broker_frame::Body)>,
    closing: bool,
}

impl Outbox {
    pub(crate) fn new(soft_limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                buf: Vec::new(),
                notices: Vec::new(),
                closing: false,
            }),
            wake: Notify::new(),
            soft_limit,
            hard_limit: soft_limit
                .saturating_mul(2)
                .saturating_add(MAX_FRAME_LEN + LENGTH_PREFIX_LEN),
        }
    }

    /// Queues a frame that must not be lost (replies, responses, notifications), up to the hard
    /// bound. A refusal with [`Refused::Full`] means the peer is not reading: close it.
    pub(crate) fn push(&self, frame: &BrokerFrame) -> Result<(), Refused> {
        self.enqueue(frame, self.hard_limit)
    }

    /// Queues a frame that may be refused for a full queue (events, incoming calls), up to the
    /// soft bound.
    pub(crate) fn offer(&self, frame: &BrokerFrame) -> Result<(), Refused> {
        self.enqueue(frame, self.soft_limit)
    }

    /// Queues availability notice `body` about `service`, replacing the one queued about it and
    /// not yet written, if any. Frames queued before it are written before it; a notice is never
    /// refused for a full queue, as it costs at most one frame per watched service.
    pub(crate) fn notice(&self, service: Uuid, body: broker_frame::Body) {
        let mut state = self.state.lock();
        if state.closing {
            return;
        }
        let idle = state.buf.is_empty() && state.notices.is_empty();
        match state
            .notices
            .iter_mut()
            .find(|(about, _)| *about == service)
        {
            Some((_, queued)) => *queued = body,
            None => state.notices.push((service, body)),
        }
        drop(state);
        if idle {
            self.wake.notify_one();
        }
    }

    /// Drops the notice about `service` not yet written (the app stopped watching it).
    pub(crate) fn forget_notice(&self, service: Uuid) {
        self.state
            .lock()
            .notices
            .retain(|(about, _)| *about != service);
    }

    /// Queues `goodbye` (if any) as the last frame and refuses everything after it. Notices not
    /// yet written are dropped: the app is going away.
    pub(crate) fn close(&self, goodbye: Option<&BrokerFrame>) {
        let mut state = self.state.lock();
        if state.closing {
            return;
        }
        state.notices.clear();
        if let Some(goodbye) = goodbye {
            // The hard bound does not apply to the last frame: it is small and ends the queue.
            // A goodbye always encodes (it has a body and a short message), so ignoring the
            // result loses nothing.
            let _ = encode_frame(goodbye, &mut state.buf);
        }
        state.closing = true;
        drop(state);
        self.wake.notify_one();
    }

    fn enqueue(&self, frame: &BrokerFrame, limit: usize) -> Result<(), Refused> {
        let mut state = self.state.lock();
        if state.closing {
            return Err(Refused::Closed);
        }
        let queued = state.buf.len();
        if queued >= limit {
            return Err(Refused::Full { queued });
        }
        encode_frame(frame, &mut state.buf).map_err(|_| Refused::Oversize)?;
        let idle = queued == 0 && state.notices.is_empty();
        drop(state);
        if idle {
            // The writer swaps the buffer out whole, so it only needs waking when the buffer goes
            // from empty to not; a wake-up it finds nothing for costs one loop.
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// The writer task's loop: sends everything queued, batch by batch, until the queue is closed
/// and drained. Returns on the first socket error.
pub(crate) async fn write_loop(outbox: Arc<Outbox>, stream: Arc<UnixStream>) -> io::Result<()> {
    let mut batch = Vec::new();
    loop {
        let closing = {
            let mut state = outbox.state.lock();
            std::mem::swap(&mut state.buf, &mut batch);
            for (_, body) in state.notices.drain(..) {
                // A notice that does not fit in a frame (a service declaring methods and topics
                // up to the frame limit, plus the provider's identity) cannot be sent at all.
                let _ = encode_frame(&BrokerFrame { body: Some(body) }, &mut batch);
            }
            state.closing
        };
        if batch.is_empty() {
            if closing {
                return Ok(());
            }
            outbox.wake.notified().await;
            continue;
        }
        write_all(&stream, &batch).await?;
        batch.clear();
        if batch.capacity() > KEPT_CAPACITY {
            batch = Vec::new();
        }
    }
}

async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use elastos_proto::v1::{self, broker_frame};

    fn cancel(call_id: u64) -> BrokerFrame {
        BrokerFrame {
            body: Some(broker_frame::Body::Cancel(v1::Cancel { call_id })),
        }
    }

    #[test]
    fn offers_stop_at_the_soft_bound_and_pushes_at_the_hard_one() {
        let outbox = Outbox::new(16);
        let mut offered = 0;
        while outbox.offer(&cancel(1)).is_ok() {
            offered += 1;
        }
        // 8 bytes a frame: accepted while fewer than 16 bytes were queued.
        assert_eq!(offered, 2);
        assert!(matches!(
            outbox.offer(&cancel(1)),
            Err(Refused::Full { queued: 16 })
        ));
        let mut pushed = 0;
        while outbox.push(&cancel(1)).is_ok() {
            pushed += 1;
        }
        let queued = 16 + pushed * 8;
        assert!(queued >= 32 + MAX_FRAME_LEN + LENGTH_PREFIX_LEN);
        assert!(queued < 32 + MAX_FRAME_LEN + LENGTH_PREFIX_LEN + 8);
    }

    #[test]
    fn nothing_is_queued_after_close_and_oversize_frames_are_refused() {
        let outbox = Outbox::new(1 << 30);
        let huge = BrokerFrame {
            body: Some(broker_frame::Body::Event(v1::Event {
                payload: vec![0; MAX_FRAME_LEN],
                ..Default::default()
            })),
        };
        assert_eq!(outbox.offer(&huge), Err(Refused::Oversize));
        outbox.close(Some(&cancel(2)));
        assert_eq!(outbox.push(&cancel(3)), Err(Refused::Closed));
        let queued = outbox.state.lock().buf.clone();
        assert_eq!(queued, [4, 0, 0, 0, 0x2a, 0x02, 0x08, 0x02]);
    }
}
