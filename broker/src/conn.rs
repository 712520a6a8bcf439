//! One app connection: its shared state, its reader task (socket to frames to [`Session`]), its
//! writer task ([`outbox::write_loop`]), and how it ends.
//!
//! The reader receives with `recvmsg` and a control-message buffer rather than `read`, because a
//! plain read silently accepts file descriptors sent with `SCM_RIGHTS` into the broker's fd table:
//! with `recvmsg` the broker sees them, closes them at once and closes the connection.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use elastos_proto::v1::{self, broker_frame, BrokerFrame, ClientFrame};
use elastos_proto::{FrameDecoder, FrameError, InvalidFrame};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use parking_lot::Mutex;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use crate::fair::Fair;
use crate::outbox::{self, Outbox, Refused};
use crate::session::{Resumed, Session};
use crate::{AppIdentity, ConnectionId, Inner, Origin};

/// Bytes one `recvmsg` may return.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes a reader handles before it lets other tasks run, so a flooding app cannot hog a worker.
const READ_BUDGET: usize = 256 * 1024;
/// Control-message space for the most descriptors one `SCM_RIGHTS` message can carry
/// (`SCM_MAX_FD`, 253), so that every descriptor passed is seen, and closed.
const CMSG_SPACE: usize = 1100;
/// An incoming-frame decoder that took in more than this since it was last empty is replaced,
/// freeing the buffer a big frame left behind.
const DECODER_KEPT: usize = 64 * 1024;

/// Why a connection ended. Logged; the `goodbye` (when one is sent) carries the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CloseReason {
    /// The app closed its end between frames.
    #[error("the app closed the connection")]
    PeerClosed,
    /// The bytes are not a valid stream of frames (oversize or zero length, undecodable body,
    /// unknown body, stream ended inside a frame).
    #[error("bad frame")]
    Frame(#[from] FrameError),
    /// The app sent ancillary data: file descriptors (closed on receipt) or other control
    /// messages.
    #[error(
        "the app sent ancillary data ({fds} file descriptors, closed); \
         frames carry bytes only and the broker refuses SCM_RIGHTS"
    )]
    AncillaryData {
        /// Descriptors received and closed.
        fds: usize,
    },
    /// The first frame was not `hello`.
    #[error("the first frame is {got}; expected hello")]
    NoHello {
        /// The body that came instead.
        got: &'static str,
    },
    /// No `hello` within the handshake timeout.
    #[error("no hello within {0:?}; expected it as the first frame")]
    NoHelloInTime(Duration),
    /// `hello` came again after the handshake.
    #[error("a second hello; expected it only as the first frame")]
    RepeatedHello,
    /// `hello` offered no version this broker speaks (or a malformed range).
    #[error(
        "hello offers protocol versions {min}..={max}; this broker speaks {}..={}",
        elastos_proto::SUPPORTED_VERSIONS.start(),
        elastos_proto::SUPPORTED_VERSIONS.end()
    )]
    NoCommonVersion {
        /// `min_version` offered.
        min: u32,
        /// `max_version` offered.
        max: u32,
    },
    /// A `publish` on a service this connection did not register, or on a topic it did not
    /// declare.
    #[error("publish on service {service} topic {topic:?} refused: {why}")]
    ForbiddenPublish {
        /// The service id.
        service: Uuid,
        /// The topic.
        topic: String,
        /// Which rule it broke.
        why: &'static str,
    },
    /// A `publish` that breaks a shape rule: it has no answer, so it closes the connection.
    #[error("malformed publish")]
    InvalidPublish(#[source] InvalidFrame),
    /// The app let its outbound queue pass the hard bound: it is not reading.
    #[error("the app is not reading: {queued} bytes are queued towards it")]
    NotReading {
        /// Bytes queued when the bound was hit.
        queued: usize,
    },
    /// The app kept sending requests its manifest does not allow, which can never succeed.
    #[error(
        "the app sent {denied} requests its manifest does not allow within {window:?} \
         ({unlogged} of them not logged); such requests can never succeed"
    )]
    TooManyDenials {
        /// Denied requests in the window.
        denied: u32,
        /// The window.
        window: Duration,
        /// Denials counted but not logged.
        unlogged: u64,
    },
    /// An activated provider sat idle too long.
    #[error("stopped after {:?} idle", idle)]
    Idle {
        /// How long it had been idle.
        idle: Duration,
    },
    /// [`Broker::disconnect`](crate::Broker::disconnect).
    #[error("stopped by the operator")]
    Stopped,
    /// Reading or writing the socket failed.
    #[error("socket error")]
    Io(#[from] io::Error),
}

impl CloseReason {
    /// The reason and its chain of causes on one line (`bad frame: frame body is not ...: ...`),
    /// for the log and the `goodbye`: no message repeats its source.
    fn described(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(source) = cause {
            text.push_str(": ");
            text.push_str(&source.to_string());
            cause = source.source();
        }
        text
    }

    /// The status of the `goodbye` telling the app, or `None` when the socket is gone (or the app
    /// will not read it).
    fn goodbye_status(&self) -> Option<v1::Status> {
        match self {
            CloseReason::PeerClosed | CloseReason::Io(_) | CloseReason::NotReading { .. } => None,
            CloseReason::Frame(_)
            | CloseReason::AncillaryData { .. }
            | CloseReason::NoHello { .. }
            | CloseReason::NoHelloInTime(_)
            | CloseReason::RepeatedHello
            | CloseReason::NoCommonVersion { .. }
            | CloseReason::InvalidPublish(_) => Some(v1::Status::InvalidArgument),
            CloseReason::ForbiddenPublish { .. } | CloseReason::TooManyDenials { .. } => {
                Some(v1::Status::PermissionDenied)
            }
            CloseReason::Idle { .. } | CloseReason::Stopped => Some(v1::Status::Unavailable),
        }
    }

    /// What the clients linked to this connection's services are told.
    pub(crate) fn gone_reason(&self) -> v1::GoneReason {
        match self {
            CloseReason::Idle { .. } | CloseReason::Stopped => v1::GoneReason::Stopped,
            _ => v1::GoneReason::Disconnected,
        }
    }
}

/// A call this connection made and has not had answered.
pub(crate) struct Outgoing {
    pub(crate) deadline: Instant,
    pub(crate) route: Route,
    /// When it was routed to its provider: the start of its latency (for a call waiting on an
    /// activation, when it began waiting; the entry is replaced once the call is routed).
    pub(crate) routed_at: Instant,
}

pub(crate) enum Route {
    /// Sent to `provider` as its incoming call `broker_call_id`.
    Routed {
        provider: Arc<Conn>,
        broker_call_id: u64,
    },
    /// Waiting for the provider to be started; `activation` tells this wait from a later call
    /// reusing the id.
    Activating { activation: u64 },
}

/// A call routed to this connection and not yet answered.
pub(crate) struct Incoming {
    pub(crate) caller: Arc<Conn>,
    pub(crate) caller_call_id: u64,
    pub(crate) service: Uuid,
    /// Written to the provider; until then it waits in [`Calls::queued`], and the provider
    /// cannot answer it (it could guess the id).
    pub(crate) delivered: Option<Delivered>,
}

/// When an incoming call was written to its provider, for the provider's
/// [`DelayWindow`](crate::fair::DelayWindow).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivered {
    pub(crate) at: Instant,
    /// Calls delivered to the provider and unanswered then, this one included.
    pub(crate) outstanding: usize,
    /// Its delivery number, in [`Calls::queued`].
    pub(crate) number: u64,
}

/// The calls of a connection, both ways. Locked briefly by its own reader and by the readers of
/// its peers; never together with another connection's `Calls` or with the registry.
#[derive(Default)]
pub(crate) struct Calls {
    /// Set when the connection is cleaned up; nothing is added after.
    pub(crate) closed: bool,
    /// By the caller's call id.
    pub(crate) outgoing: HashMap<u64, Outgoing>,
    /// `(deadline, caller's call id)` of every entry in `outgoing`.
    pub(crate) deadlines: BTreeSet<(Instant, u64)>,
    /// By the broker's call id, delivered and queued.
    pub(crate) incoming: HashMap<u64, Incoming>,
    /// The `incoming_call` frames not yet delivered, per caller, by the broker's call id.
    pub(crate) queued: Fair<Queued>,
}

/// An `incoming_call` waiting in [`Calls::queued`]: its `deadline_ms` is set when it goes out.
pub(crate) struct Queued {
    pub(crate) deadline: Instant,
    pub(crate) frame: BrokerFrame,
}

impl Calls {
    /// Removes outgoing call `call_id`, if it is the one routed as `broker_call_id`, and says
    /// when it was routed.
    pub(crate) fn take_routed(&mut self, call_id: u64, broker_call_id: u64) -> Option<Instant> {
        let matches = matches!(
            self.outgoing.get(&call_id),
            Some(Outgoing { route: Route::Routed { broker_call_id: routed, .. }, .. })
                if *routed == broker_call_id
        );
        if !matches {
            return None;
        }
        self.take(call_id).map(|outgoing| outgoing.routed_at)
    }

    /// Removes outgoing call `call_id` with its deadline.
    pub(crate) fn take(&mut self, call_id: u64) -> Option<Outgoing> {
        let outgoing = self.outgoing.remove(&call_id)?;
        self.deadlines.remove(&(outgoing.deadline, call_id));
        Some(outgoing)
    }
}

/// Where a connection is in closing.
enum Closing {
    Open,
    /// Another task asked the reader to close it, for this reason.
    Requested(CloseReason),
    /// The reader has stopped and cleans up.
    Closed,
}

pub(crate) struct Conn {
    pub(crate) id: ConnectionId,
    pub(crate) identity: AppIdentity,
    /// The identity as apps see it, built once.
    pub(crate) peer: v1::PeerIdentity,
    provides: HashSet<Uuid>,
    uses: HashSet<Uuid>,
    pub(crate) origin: Origin,
    pub(crate) since: SystemTime,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) calls: Mutex<Calls>,
    closing: Mutex<Closing>,
    closer: Notify,
    /// Set once the connection has ended and left the registry.
    pub(crate) ended: tokio::sync::watch::Sender<bool>,
    /// [`Inner::now_ms`] of the last call routed to or answered by this connection, or lookup or
    /// subscription of one of its services: what idle stop measures.
    last_active_ms: AtomicU64,
}

impl Conn {
    pub(crate) fn new(
        inner: &Inner,
        id: ConnectionId,
        identity: AppIdentity,
        origin: Origin,
    ) -> Self {
        Self {
            id,
            peer: v1::PeerIdentity {
                app_id: identity.app_id.as_bytes().to_vec(),
                app_name: identity.name.clone(),
                publisher: identity.publisher.to_vec(),
            },
            provides: identity.provides.iter().copied().collect(),
            uses: identity.uses.iter().copied().collect(),
            identity,
            origin,
            since: SystemTime::now(),
            outbox: Arc::new(Outbox::new(inner.config.queue_bytes)),
            calls: Mutex::new(Calls::default()),
            closing: Mutex::new(Closing::Open),
            closer: Notify::new(),
            ended: tokio::sync::watch::Sender::new(false),
            last_active_ms: AtomicU64::new(inner.now_ms()),
        }
    }

    pub(crate) fn may_provide(&self, service: &Uuid) -> bool {
        self.provides.contains(service)
    }

    pub(crate) fn may_use(&self, service: &Uuid) -> bool {
        self.uses.contains(service)
    }

    /// Asks the reader to close the connection; the first reason given wins.
    pub(crate) fn close(&self, reason: CloseReason) {
        let mut closing = self.closing.lock();
        if matches!(*closing, Closing::Open) {
            *closing = Closing::Requested(reason);
            self.closer.notify_one();
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        !matches!(*self.closing.lock(), Closing::Open)
    }

    /// For the reader, once it stops: the reason another task gave, if one did first, else
    /// `own`. The connection counts as closing from here on.
    fn closed(&self, own: CloseReason) -> CloseReason {
        match std::mem::replace(&mut *self.closing.lock(), Closing::Closed) {
            Closing::Requested(reason) => reason,
            Closing::Open | Closing::Closed => own,
        }
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn last_active_ms(&self) -> u64 {
        self.last_active_ms.load(Ordering::Relaxed)
    }

    /// Queues a frame that must reach the app; an app that lets its queue pass the hard bound is
    /// closed. Returns whether the frame was queued.
    pub(crate) fn send(&self, body: broker_frame::Body) -> bool {
        let frame = BrokerFrame { body: Some(body) };
        match self.outbox.push(&frame) {
            Ok(()) => true,
            Err(Refused::Full { queued }) => {
                self.close(CloseReason::NotReading { queued });
                false
            }
            Err(Refused::Closed | Refused::Oversize) => false,
        }
    }
}

/// Starts the reader and writer tasks of a new connection, and its idle watch when it is an
/// activated one.
pub(crate) fn spawn(inner: Arc<Inner>, conn: Arc<Conn>, stream: UnixStream) {
    if let (Origin::Activated { .. }, Some(idle_after)) =
        (conn.origin, inner.config.idle_stop_after)
    {
        tokio::spawn(crate::activation::watch_idle(
            Arc::clone(&inner),
            Arc::clone(&conn),
            idle_after,
        ));
    }
    tokio::spawn(run(inner, conn, Arc::new(stream)));
}

async fn run(inner: Arc<Inner>, conn: Arc<Conn>, stream: Arc<UnixStream>) {
    let mut writer = tokio::spawn({
        let (outbox, stream, conn) = (
            Arc::clone(&conn.outbox),
            Arc::clone(&stream),
            Arc::clone(&conn),
        );
        async move {
            if let Err(error) = outbox::write_loop(outbox, stream).await {
                conn.close(CloseReason::Io(error));
            }
        }
    });
    let (mut session, resumed) = Session::new(Arc::clone(&inner), Arc::clone(&conn));
    let reason = serve(&mut session, resumed, &stream).await;
    // A reason given by another task (operator, idle watch, a peer finding the queue full) came
    // first if there is one.
    let reason = conn.closed(reason);
    log_close(&conn, &reason);
    let goodbye = reason.goodbye_status().map(|status| BrokerFrame {
        body: Some(broker_frame::Body::Goodbye(v1::Goodbye {
            reason: Some(crate::session::error(status, reason.described())),
        })),
    });
    conn.outbox.close(goodbye.as_ref());
    session.end(reason.gone_reason());
    conn.ended.send_replace(true);
    let flush = match reason {
        CloseReason::PeerClosed | CloseReason::Io(_) | CloseReason::NotReading { .. } => {
            Duration::ZERO
        }
        _ => inner.config.close_flush_timeout,
    };
    if tokio::time::timeout(flush, &mut writer).await.is_err() {
        writer.abort();
    }
    if let (Origin::Activated { instance, .. }, Some(activator)) = (conn.origin, &inner.activator) {
        activator.stop(instance);
    }
}

fn log_close(conn: &Conn, reason: &CloseReason) {
    let (app, app_id, id) = (&conn.identity.name, conn.identity.app_id, conn.id);
    match reason {
        CloseReason::PeerClosed => {
            tracing::debug!(connection = %id, app = %app, %app_id, "connection closed by the app")
        }
        CloseReason::Idle { .. } | CloseReason::Stopped => {
            let reason = reason.described();
            tracing::info!(connection = %id, app = %app, %app_id, %reason, "closing connection")
        }
        _ => {
            let reason = reason.described();
            tracing::warn!(connection = %id, app = %app, %app_id, %reason, "closing connection")
        }
    }
}

/// Reads and handles frames until the connection must close, and says why.
async fn serve(
    session: &mut Session,
    mut resumed: mpsc::UnboundedReceiver<Resumed>,
    stream: &UnixStream,
) -> CloseReason {
    let conn = Arc::clone(session.conn());
    let mut decoder = FrameDecoder::<ClientFrame>::new();
    let mut taken_in = 0;
    let mut deadline = pin!(tokio::time::sleep_until(Instant::now()));
    let mut armed = None;
    let handshake = session.handshake_timeout();
    let mut handshake_over = pin!(tokio::time::sleep(handshake));
    loop {
        let next = session.next_deadline();
        if next != armed {
            if let Some(at) = next {
                deadline.as_mut().reset(at);
            }
            armed = next;
        }
        tokio::select! {
            biased;
            // The reason is the one the closing task gave; `Conn::closed` takes it.
            () = conn.closer.notified() => return CloseReason::Stopped,
            Some(resumed) = resumed.recv() => {
                if let Err(reason) = session.resume(resumed) {
                    return reason;
                }
            }
            () = &mut deadline, if armed.is_some() => {
                session.expire(Instant::now());
                armed = None;
            }
            () = &mut handshake_over, if !session.welcomed() => {
                return CloseReason::NoHelloInTime(handshake);
            }
            ready = stream.readable() => {
                if let Err(error) = ready {
                    return CloseReason::Io(error);
                }
                if let Err(reason) = read_frames(session, stream, &mut decoder, &mut taken_in).await {
                    return reason;
                }
            }
        }
    }
}

/// Reads what the socket has (up to [`READ_BUDGET`]) and handles every whole frame in it.
async fn read_frames(
    session: &mut Session,
    stream: &UnixStream,
    decoder: &mut FrameDecoder<ClientFrame>,
    taken_in: &mut usize,
) -> Result<(), CloseReason> {
    let mut budget = READ_BUDGET;
    loop {
        let received = match stream.try_io(Interest::READABLE, || receive(stream, decoder)) {
            Ok(received) => received,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CloseReason::Io(error)),
        };
        let bytes = match received {
            Received::Bytes(bytes) => bytes,
            Received::End => {
                while let Some(frame) = decoder.next_frame()? {
                    session.handle(frame)?;
                }
                std::mem::take(decoder).finish()?;
                return Err(CloseReason::PeerClosed);
            }
            Received::Ancillary { fds } => return Err(CloseReason::AncillaryData { fds }),
        };
        *taken_in += bytes;
        while let Some(frame) = decoder.next_frame()? {
            session.handle(frame)?;
        }
        if *taken_in > DECODER_KEPT && decoder.buffered_len() == 0 {
            *decoder = FrameDecoder::new();
            *taken_in = 0;
        }
        budget = budget.saturating_sub(bytes);
        if budget == 0 {
            tokio::task::yield_now().await;
            return Ok(());
        }
    }
}

enum Received {
    Bytes(usize),
    End,
    Ancillary { fds: usize },
}

/// Buffers every reader on a worker thread shares: a read is handled before the next `await`,
/// so one per thread is enough and an idle connection holds none.
struct Scratch {
    data: Vec<u8>,
    cmsg: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        data: vec![0; READ_CHUNK],
        cmsg: Vec::with_capacity(CMSG_SPACE),
    });
}

/// One `recvmsg`: bytes go into `decoder`; descriptors are closed and reported.
fn receive(stream: &UnixStream, decoder: &mut FrameDecoder<ClientFrame>) -> io::Result<Received> {
    SCRATCH.with_borrow_mut(|Scratch { data, cmsg }| {
        cmsg.clear();
        let mut iov = [IoSliceMut::new(data)];
        let (bytes, ancillary) = {
            let message = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut *cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            let ancillary = match message.cmsgs() {
                Ok(cmsgs) => {
                    let mut found = None;
                    for cmsg in cmsgs {
                        let fds = match cmsg {
                            ControlMessageOwned::ScmRights(fds) => close_all(&fds),
                            _ => 0,
                        };
                        *found.get_or_insert(0) += fds;
                    }
                    found
                }
                // The control buffer was too small: some descriptors were discarded by the
                // kernel, the rest are in the part that fit. Either way the app passed some.
                Err(_) => Some(0),
            };
            (message.bytes, ancillary)
        };
        if let Some(fds) = ancillary {
            return Ok(Received::Ancillary { fds });
        }
        if bytes == 0 {
            return Ok(Received::End);
        }
        decoder.push(&data[..bytes]);
        Ok(Received::Bytes(bytes))
    })
}

/// Closes descriptors received from an app; returns how many.
fn close_all(fds: &[RawFd]) -> usize {
    for &fd in fds {
        // The descriptor is ours (just received) and referenced nowhere else; a failure to close
        // it leaves nothing to do.
        let _ = nix::unistd::close(fd);
    }
    fds.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_formats_and_maps_to_a_goodbye_and_a_gone_reason() {
        let service = Uuid::from_u128(7);
        let reasons = [
            CloseReason::PeerClosed,
            FrameError::Empty.into(),
            CloseReason::AncillaryData { fds: 2 },
            CloseReason::NoHello { got: "lookup" },
            CloseReason::NoHelloInTime(Duration::from_secs(10)),
            CloseReason::RepeatedHello,
            CloseReason::NoCommonVersion { min: 2, max: 9 },
            CloseReason::ForbiddenPublish {
                service,
                topic: "said".into(),
                why: "the service did not declare the topic",
            },
            CloseReason::InvalidPublish(InvalidFrame::NameLength {
                field: "Publish.topic",
                len: 0,
            }),
            CloseReason::NotReading { queued: 5 },
            CloseReason::TooManyDenials {
                denied: 101,
                window: Duration::from_secs(10),
                unlogged: 98,
            },
            CloseReason::Idle {
                idle: Duration::from_secs(61),
            },
            CloseReason::Stopped,
            io::Error::from(io::ErrorKind::BrokenPipe).into(),
        ];
        let expected = [
            ("closed the connection", None),
            ("zero-length", Some(v1::Status::InvalidArgument)),
            ("2 file descriptors", Some(v1::Status::InvalidArgument)),
            ("first frame is lookup", Some(v1::Status::InvalidArgument)),
            ("no hello within 10s", Some(v1::Status::InvalidArgument)),
            ("second hello", Some(v1::Status::InvalidArgument)),
            ("versions 2..=9", Some(v1::Status::InvalidArgument)),
            ("did not declare", Some(v1::Status::PermissionDenied)),
            ("Publish.topic", Some(v1::Status::InvalidArgument)),
            ("5 bytes are queued", None),
            ("101 requests", Some(v1::Status::PermissionDenied)),
            ("61s idle", Some(v1::Status::Unavailable)),
            ("operator", Some(v1::Status::Unavailable)),
            ("socket error", None),
        ];
        for (reason, (says, goodbye)) in reasons.iter().zip(expected) {
            // What the log and the goodbye say: the reason with its causes, each once.
            let described = reason.described();
            assert!(described.contains(says), "{described}");
            if let Some(source) = std::error::Error::source(reason) {
                assert!(
                    !reason.to_string().contains(&source.to_string()),
                    "{reason} repeats its source"
                );
            }
            assert_eq!(reason.goodbye_status(), goodbye, "{reason}");
            let gone = match reason {
                CloseReason::Idle { .. } | CloseReason::Stopped => v1::GoneReason::Stopped,
                _ => v1::GoneReason::Disconnected,
            };
            assert_eq!(reason.gone_reason(), gone, "{reason}");
        }
    }
}
