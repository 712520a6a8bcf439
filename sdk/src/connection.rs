//! The connection to the broker: one reader task that demultiplexes every frame the broker sends
//! (responses, replies, incoming calls, cancels, events, availability), one writer task that
//! drains an outbox, and the shared state both work on.
//!
//! Every frame to send is encoded straight into the outbox buffer under a short lock; the writer
//! swaps the whole buffer out and writes it with one `write_all`, so frames queued while a write is
//! in progress go out together. A frame that finds the writer idle is written at once by the task
//! that made it (see [`Outbox::idle`]). Nothing here holds a lock across an `.await`. Lock order: `state`
//! before `outbox`, never the reverse, so that a change of local state and the frame announcing it
//! reach the broker in the same order as they happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use elastos_proto::v1::broker_frame::Body as BrokerBody;
use elastos_proto::v1::client_frame::Body as ClientBody;
use elastos_proto::v1::{self, BrokerFrame, ClientFrame};
use elastos_proto::{encode_frame, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::error::{Disconnect, Error, Status};
use crate::handler::DynHandler;
use crate::messages::{uuid, Event, GoneReason, IncomingCall, ServiceInfo};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Above this many unsent bytes, [`Shared::wait_for_room`] makes publishers wait for the writer:
/// events are the one thing an app can send without bound (calls are bounded by the broker's
/// in-flight limit, replies by incoming calls).
const OUTBOX_HIGH_WATER: usize = 4 << 20;
/// Events (or availability notices) a subscription holds before the SDK starts dropping them.
pub(crate) const LOCAL_QUEUE: usize = 256;

/// State shared by the reader, the writer and every handle of one connection.
pub(crate) struct Shared {
    state: Mutex<State>,
    outbox: Mutex<Outbox>,
    /// Woken when the outbox goes from empty to not empty, or closes.
    wake_writer: Notify,
    /// Woken after each write, for publishers waiting for room.
    drained: Notify,
    /// The reason, once the connection has ended.
    closed: watch::Sender<Option<Disconnect>>,
    next_call_id: AtomicU64,
    next_request_id: AtomicU64,
    next_member_id: AtomicU64,
}

struct Outbox {
    buf: Vec<u8>,
    open: bool,
    /// The socket's write half while the writer task sleeps on an empty outbox (it takes it back
    /// when it wakes). A frame queued into the empty outbox then goes out at once, with one
    /// non-blocking write from the task that made it, under this lock, so writes never overlap or
    /// reorder; what does not fit waits for the writer. Why not just wake the writer: on a
    /// `current_thread` runtime the woken writer runs after every task that is already ready,
    /// so a provider whose handlers block (a synchronous 0.5 ms of work) sent each reply only
    /// after the *next* call's handler had run, one service time late; under a flood that delay
    /// held back the broker's delivery window, and a well-behaved caller waited about six
    /// service times instead of two or three (issue 12).
    idle: Option<OwnedWriteHalf>,
}

/// What a successful request answers: the service, for `Lookup` and `Subscribe`.
pub(crate) type ResponseOutcome = Result<Option<Linked>, Status>;
type CallOutcome = Result<Vec<u8>, Status>;

#[derive(Default)]
struct State {
    /// Set once, when the connection ends; from then on nothing new is accepted.
    ended: bool,
    requests: HashMap<u64, oneshot::Sender<ResponseOutcome>>,
    calls: HashMap<u64, oneshot::Sender<CallOutcome>>,
    services: HashMap<Uuid, Provided>,
    /// Incoming calls whose handler is running, by the broker's call id.
    incoming: HashMap<u64, AbortHandle>,
    topics: HashMap<(Uuid, String), Fanout<Event>>,
    watches: HashMap<Uuid, Fanout<ServiceInfo>>,
    /// The link to the current provider of each service looked up or subscribed to.
    links: HashMap<Uuid, watch::Sender<Option<GoneReason>>>,
}

/// A service this connection registered.
pub(crate) struct Provided {
    pub(crate) handler: Arc<dyn DynHandler>,
    pub(crate) topics: Vec<String>,
}

/// A service as a successful lookup or subscribe returned it, linked to its provider: `link`
/// gets the reason once that provider goes away. Each provider has its own link channel (replaced
/// when it goes), so a later lookup never sees an earlier provider's departure.
#[derive(Debug, Clone)]
pub(crate) struct Linked {
    pub(crate) info: ServiceInfo,
    pub(crate) link: watch::Receiver<Option<GoneReason>>,
}

/// The local receivers of one broker subscription or watch. The broker is asked once per
/// connection; the SDK fans out to each handle through a bounded queue, so a handle nobody reads
/// loses items (counted) instead of stalling the reader task.
pub(crate) struct Fanout<T> {
    members: Vec<Member<T>>,
}

struct Member<T> {
    id: u64,
    tx: mpsc::Sender<T>,
    /// Items this member lost since the last one it got.
    lost: u64,
}

impl<T> Fanout<T> {
    /// Offers one item to every member. `make(dropped)` builds the item for a member that lost
    /// `dropped` items before it (`upstream_dropped` plus the member's own losses).
    fn deliver(&mut self, upstream_dropped: u64, make: impl Fn(u64) -> T) {
        for member in &mut self.members {
            let dropped = upstream_dropped.saturating_add(member.lost);
            member.lost = match member.tx.try_send(make(dropped)) {
                Ok(()) => 0,
                // Full, or closed and about to be removed by its handle's drop.
                Err(_) => dropped.saturating_add(1),
            };
        }
    }
}

/// Which fanout a [`Membership`] belongs to.
#[derive(Debug)]
pub(crate) enum FanoutKey {
    Topic(Uuid, String),
    Watch(Uuid),
}

/// One handle's place in a fanout. Dropping it leaves; the last member to leave also ends the
/// broker subscription or watch.
#[derive(Debug)]
pub(crate) struct Membership {
    shared: Arc<Shared>,
    key: FanoutKey,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut state = self.shared.lock_state();
        let request_id = self.shared.next_request_id.fetch_add(1, Ordering::Relaxed);
        let last_frame = match &self.key {
            FanoutKey::Topic(service, topic) => {
                let key = (*service, topic.clone());
                leave(&mut state.topics, &key, self.id).then(|| {
                    ClientBody::Unsubscribe(v1::Unsubscribe {
                        request_id,
                        service_id: service.as_bytes().to_vec(),
                        topic: topic.clone(),
                    })
                })
            }
            FanoutKey::Watch(service) => leave(&mut state.watches, service, self.id).then(|| {
                ClientBody::Unwatch(v1::Unwatch {
                    request_id,
                    service_id: service.as_bytes().to_vec(),
                })
            }),
        };
        if let Some(body) = last_frame {
            // Nobody waits for the response (the reader ignores unknown request ids), and if the
            // connection is gone there is nothing left to end.
            let _ = self.shared.send(body, "unsubscribe");
        }
    }
}

/// Removes member `id`; true if it was the last one of its fanout.
fn leave<K: std::hash::Hash + Eq, T>(
    fanouts: &mut HashMap<K, Fanout<T>>,
    key: &K,
    id: u64,
) -> bool {
    let Some(fanout) = fanouts.get_mut(key) else {
        return false;
    };
    fanout.members.retain(|member| member.id != id);
    if fanout.members.is_empty() {
        fanouts.remove(key);
        true
    } else {
        false
    }
}

/// Removes a pending request or call when the future waiting for it is dropped; for a call it
/// also tells the broker (dropping a call future cancels the call).
pub(crate) struct PendingGuard<'a> {
    shared: &'a Shared,
    kind: Pending,
    id: u64,
    armed: bool,
}

#[derive(Clone, Copy)]
enum Pending {
    Request,
    Call,
}

impl PendingGuard<'_> {
    /// The answer came: nothing to clean up.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.shared.lock_state();
        match self.kind {
            Pending::Request => {
                state.requests.remove(&self.id);
            }
            Pending::Call => {
                if state.calls.remove(&self.id).is_some() {
                    let cancel = ClientBody::Cancel(v1::Cancel { call_id: self.id });
                    // If the connection is gone, so is the call.
                    let _ = self.shared.send(cancel, "cancel");
                }
            }
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("closed", &*self.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            outbox: Mutex::new(Outbox {
                buf: Vec::new(),
                open: true,
                idle: None,
            }),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            closed: watch::Sender::new(None),
            next_call_id: AtomicU64::new(1),
            next_request_id: AtomicU64::new(1),
            next_member_id: AtomicU64::new(1),
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still valid maps; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why the connection ended; [`Disconnect::Closed`] if it is still open (a caller only asks
    /// after seeing it end).
    pub(crate) fn disconnect(&self) -> Disconnect {
        self.closed.borrow().clone().unwrap_or(Disconnect::Closed)
    }

    /// Resolves once the connection has ended, with the reason.
    pub(crate) async fn closed(&self) -> Disconnect {
        let mut closed = self.closed.subscribe();
        let reason = match closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            // The sender lives in `self`.
            Err(_) => None,
        };
        reason.unwrap_or(Disconnect::Closed)
    }

    /// Queues one frame for the writer. `what` names it in a [`Error::TooLarge`].
    pub(crate) fn send(&self, body: ClientBody, what: &'static str) -> Result<(), Error> {
        let frame = ClientFrame { body: Some(body) };
        let mut outbox = self.lock_outbox();
        if !outbox.open {
            drop(outbox);
            return Err(self.disconnect().into());
        }
        let was_empty = outbox.buf.is_empty();
        encode_frame(&frame, &mut outbox.buf).map_err(|source| Error::TooLarge { what, source })?;
        if was_empty {
            outbox.write_now();
        }
        let wake = was_empty && !outbox.buf.is_empty();
        drop(outbox);
        // The writer only sleeps after finding the outbox empty, so only that transition needs a
        // wake-up; `notify_one` keeps it if the writer is not asleep yet.
        if wake {
            self.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Waits while the outbox holds more than [`OUTBOX_HIGH_WATER`] bytes.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let outbox = self.lock_outbox();
                if outbox.buf.len() <= OUTBOX_HIGH_WATER || !outbox.open {
                    return;
                }
            }
            drained.await;
        }
    }

    /// Sends a request and waits for its response. Dropping the future forgets the request.
    pub(crate) async fn request(
        &self,
        body: impl FnOnce(u64) -> ClientBody,
        what: &'static str,
    ) -> Result<Option<Linked>, Error> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock_state();
            if state.ended {
                drop(state);
                return Err(self.disconnect().into());
            }
            state.requests.insert(id, tx);
        }
        if let Err(error) = self.send(body(id), what) {
            self.lock_state().requests.remove(&id);
            return Err(error);
        }
        let guard = PendingGuard {
            shared: self,
            kind: Pending::Request,
            id,
            armed: true,
        };
        let outcome = rx.await;
        guard.disarm();
        match outcome {
            Ok(Ok(linked)) => Ok(linked),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(self.disconnect().into()),
        }
    }

    /// Sends a call and waits for its reply. Dropping the future cancels the call.
    pub(crate) async fn call(&self, call: v1::Call) -> Result<Vec<u8>, Error> {
        let id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock_state();
            if state.ended {
                drop(state);
                return Err(self.disconnect().into());
            }
            state.calls.insert(id, tx);
        }
        if let Err(error) = self.send(
            ClientBody::Call(v1::Call {
                call_id: id,
                ..call
            }),
            "call",
        ) {
            self.lock_state().calls.remove(&id);
            return Err(error);
        }
        let guard = PendingGuard {
            shared: self,
            kind: Pending::Call,
            id,
            armed: true,
        };
        let outcome = rx.await;
        guard.disarm();
        match outcome {
            Ok(Ok(payload)) => Ok(payload),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(self.disconnect().into()),
        }
    }

    /// Records the handler of a service about to be registered, returning the one it replaces.
    pub(crate) fn provide(&self, service: Uuid, provided: Provided) -> Option<Provided> {
        self.lock_state().services.insert(service, provided)
    }

    /// Restores what [`provide`](Self::provide) replaced (a failed registration).
    pub(crate) fn unprovide(&self, service: Uuid, previous: Option<Provided>) {
        let mut state = self.lock_state();
        match previous {
            Some(previous) => state.services.insert(service, previous),
            None => state.services.remove(&service),
        };
    }

    /// Checks a publish against the services this connection registered, then queues it.
    pub(crate) fn publish(&self, publish: v1::Publish, service: Uuid) -> Result<(), Error> {
        let state = self.lock_state();
        let reason = match state.services.get(&service) {
            None => Some("this app does not provide the service"),
            Some(provided) if !provided.topics.contains(&publish.topic) => {
                Some("the topic is not registered")
            }
            Some(_) => None,
        };
        drop(state);
        if let Some(reason) = reason {
            return Err(Error::NotPublishable {
                service,
                topic: publish.topic,
                reason,
            });
        }
        self.send(ClientBody::Publish(publish), "publish")
    }

    /// Joins the fanout of events on `topic` of `service`, creating it if needed.
    pub(crate) fn join_topic(
        self: &Arc<Self>,
        service: Uuid,
        topic: &str,
    ) -> Result<(Membership, mpsc::Receiver<Event>), Error> {
        let key = (service, topic.to_owned());
        self.join(
            |state| &mut state.topics,
            key,
            FanoutKey::Topic(service, topic.to_owned()),
        )
    }

    /// Joins the fanout of availability notices of `service`, creating it if needed.
    pub(crate) fn join_watch(
        self: &Arc<Self>,
        service: Uuid,
    ) -> Result<(Membership, mpsc::Receiver<ServiceInfo>), Error> {
        self.join(
            |state| &mut state.watches,
            service,
            FanoutKey::Watch(service),
        )
    }

    fn join<K: std::hash::Hash + Eq, T>(
        self: &Arc<Self>,
        fanouts: impl FnOnce(&mut State) -> &mut HashMap<K, Fanout<T>>,
        key: K,
        membership_key: FanoutKey,
    ) -> Result<(Membership, mpsc::Receiver<T>), Error> {
        let (tx, rx) = mpsc::channel(LOCAL_QUEUE);
        let id = self.next_member_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock_state();
        if state.ended {
            drop(state);
            return Err(self.disconnect().into());
        }
        fanouts(&mut state)
            .entry(key)
            .or_insert_with(|| Fanout {
                members: Vec::new(),
            })
            .members
            .push(Member { id, tx, lost: 0 });
        let membership = Membership {
            shared: Arc::clone(self),
            key: membership_key,
            id,
        };
        Ok((membership, rx))
    }

    /// Ends the connection: every pending request and call fails with `reason`, running handlers
    /// are aborted, subscriptions end, and the writer flushes what is queued and exits. Only the
    /// first reason counts.
    pub(crate) fn end(&self, reason: Disconnect) {
        let mut state = self.lock_state();
        if state.ended {
            return;
        }
        state.ended = true;
        self.closed.send_replace(Some(reason));
        // Dropping the senders wakes every waiter, which then reads the reason.
        state.requests.clear();
        state.calls.clear();
        state.services.clear();
        for (_, handler) in state.incoming.drain() {
            handler.abort();
        }
        state.topics.clear();
        state.watches.clear();
        state.links.clear();
        drop(state);
        self.lock_outbox().open = false;
        self.wake_writer.notify_one();
        self.drained.notify_waiters();
    }

    /// Acts on one frame from the broker. An error is a broker fault that ends the connection.
    fn dispatch(self: &Arc<Self>, frame: BrokerFrame) -> Result<(), Disconnect> {
        match frame.body {
            Some(BrokerBody::Response(response)) => self.on_response(response),
            Some(BrokerBody::Reply(reply)) => {
                self.on_reply(reply);
                Ok(())
            }
            Some(BrokerBody::IncomingCall(call)) => self.on_incoming_call(call),
            Some(BrokerBody::Cancel(cancel)) => {
                if let Some(handler) = self.lock_state().incoming.remove(&cancel.call_id) {
                    handler.abort();
                }
                Ok(())
            }
            Some(BrokerBody::Event(event)) => self.on_event(event),
            Some(BrokerBody::ProviderGone(gone)) => self.on_provider_gone(gone),
            Some(BrokerBody::ServiceAvailable(available)) => self.on_service_available(available),
            Some(BrokerBody::Goodbye(goodbye)) => {
                Err(Disconnect::Goodbye(Status::from_wire(goodbye.reason)))
            }
            Some(BrokerBody::Welcome(_)) => Err(Disconnect::Unexpected {
                what: "a second welcome",
                expected: "one welcome, as the first frame",
            }),
            // The decoder refuses frames without a body.
            None => Ok(()),
        }
    }

    fn on_response(&self, response: v1::Response) -> Result<(), Disconnect> {
        let info = response.service.map(ServiceInfo::from_wire).transpose()?;
        let mut state = self.lock_state();
        // Unknown ids: requests whose future was dropped, and unsubscribes nobody waits for.
        let Some(waiter) = state.requests.remove(&response.request_id) else {
            return Ok(());
        };
        let outcome = match response.error {
            Some(error) => Err(Status::from_wire(Some(error))),
            None => Ok(info.map(|info| {
                let link = state
                    .links
                    .entry(info.id)
                    .or_insert_with(|| watch::Sender::new(None));
                Linked {
                    link: link.subscribe(),
                    info,
                }
            })),
        };
        drop(state);
        // The waiter may have given up since; then nobody wants the answer.
        let _ = waiter.send(outcome);
        Ok(())
    }

    fn on_reply(&self, reply: v1::Reply) {
        let outcome = match reply.outcome {
            Some(v1::reply::Outcome::Payload(payload)) => Ok(payload),
            Some(v1::reply::Outcome::Error(error)) => Err(Status::from_wire(Some(error))),
            None => Err(Status::internal(
                "the reply carries neither a payload nor an error",
            )),
        };
        // Unknown ids: calls cancelled here before their reply crossed the cancel.
        let waiter = self.lock_state().calls.remove(&reply.call_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(outcome);
        }
    }

    fn on_incoming_call(self: &Arc<Self>, call: v1::IncomingCall) -> Result<(), Disconnect> {
        let call_id = call.call_id;
        let call = IncomingCall::from_wire(call)?;
        let mut state = self.lock_state();
        let Some(handler) = state.services.get(&call.service).map(|p| p.handler.clone()) else {
            drop(state);
            let status = Status::not_found(format!("this app does not provide {}", call.service));
            self.reply(call_id, Err(status));
            return Ok(());
        };
        let shared = Arc::clone(self);
        let task = tokio::spawn(async move {
            let outcome = handler.handle(call).await;
            shared.finish_incoming(call_id, outcome);
        });
        // Inserted under the same lock `finish_incoming` takes, so a handler finishing at once on
        // another thread still finds its entry.
        state.incoming.insert(call_id, task.abort_handle());
        Ok(())
    }

    /// Sends a handler's answer, unless the call was cancelled meanwhile.
    fn finish_incoming(&self, call_id: u64, outcome: Result<Vec<u8>, Status>) {
        if self.lock_state().incoming.remove(&call_id).is_some() {
            self.reply(call_id, outcome);
        }
    }

    fn reply(&self, call_id: u64, outcome: Result<Vec<u8>, Status>) {
        let reply = |outcome| ClientBody::Reply(v1::Reply { call_id, outcome });
        let sent = match outcome {
            Ok(payload) => self.send(reply(Some(v1::reply::Outcome::Payload(payload))), "reply"),
            Err(status) => self.send(
                reply(Some(v1::reply::Outcome::Error(status.to_wire()))),
                "reply",
            ),
        };
        if let Err(Error::TooLarge { source, .. }) = sent {
            let status = Status::internal(format!("the provider's reply is too large: {source}"));
            // Small, so it fits; if the connection is gone, nobody is waiting.
            let _ = self.send(
                reply(Some(v1::reply::Outcome::Error(status.to_wire()))),
                "reply",
            );
        }
    }

    fn on_event(&self, event: v1::Event) -> Result<(), Disconnect> {
        let key = (
            uuid(&event.service_id, "an event service id of the wrong length")?,
            event.topic,
        );
        let mut state = self.lock_state();
        if let Some(fanout) = state.topics.get_mut(&key) {
            fanout.deliver(event.dropped, |dropped| Event {
                payload: event.payload.clone(),
                dropped,
            });
        }
        Ok(())
    }

    fn on_provider_gone(&self, gone: v1::ProviderGone) -> Result<(), Disconnect> {
        let service = uuid(
            &gone.service_id,
            "a provider-gone service id of the wrong length",
        )?;
        let reason = GoneReason::from_wire(gone.reason);
        // The receivers keep the reason after the sender is gone; the next lookup links anew.
        if let Some(link) = self.lock_state().links.remove(&service) {
            link.send_replace(Some(reason));
        }
        Ok(())
    }

    fn on_service_available(&self, available: v1::ServiceAvailable) -> Result<(), Disconnect> {
        let info = available.service.ok_or(Disconnect::Unexpected {
            what: "a service-available notice without a service",
            expected: "the service",
        })?;
        let info = ServiceInfo::from_wire(info)?;
        let mut state = self.lock_state();
        if let Some(fanout) = state.watches.get_mut(&info.id) {
            fanout.deliver(0, |_| info.clone());
        }
        Ok(())
    }
}

/// Reads whole frames from the broker.
pub(crate) struct FrameReader {
    half: OwnedReadHalf,
    decoder: FrameDecoder<BrokerFrame>,
    buf: Vec<u8>,
}

impl FrameReader {
    pub(crate) fn new(half: OwnedReadHalf) -> FrameReader {
        FrameReader {
            half,
            decoder: FrameDecoder::new(),
            buf: vec![0; READ_CHUNK],
        }
    }

    /// The next frame, or why there is none.
    pub(crate) async fn next(&mut self) -> Result<BrokerFrame, Disconnect> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(error) => return Err(Disconnect::Frame(Arc::new(error))),
            }
            match self.half.read(&mut self.buf).await {
                Ok(0) => {
                    let decoder = std::mem::take(&mut self.decoder);
                    return Err(match decoder.finish() {
                        Ok(()) => Disconnect::Eof,
                        Err(error) => Disconnect::Frame(Arc::new(error)),
                    });
                }
                Ok(read) => self.decoder.push(&self.buf[..read]),
                Err(error) => {
                    return Err(Disconnect::Io {
                        op: "read",
                        source: Arc::new(error),
                    })
                }
            }
        }
    }
}

/// The reader task: dispatches frames until the connection ends, then ends it for everyone.
pub(crate) async fn read_loop(shared: Arc<Shared>, mut reader: FrameReader) {
    let reason = loop {
        match reader.next().await {
            Ok(frame) => {
                if let Err(reason) = shared.dispatch(frame) {
                    break reason;
                }
            }
            Err(reason) => break reason,
        }
    };
    shared.end(reason);
}

impl Outbox {
    /// Writes what the outbox holds with one non-blocking write, if the writer is idle. What
    /// does not go out (the socket is full, or the write failed: the writer then meets the same
    /// error and ends the connection) stays queued for the writer.
    fn write_now(&mut self) {
        let Some(half) = &self.idle else {
            return;
        };
        if let Ok(written) = half.try_write(&self.buf) {
            self.buf.drain(..written);
        }
    }
}

/// The writer task: writes the outbox in batches until the connection ends and the outbox is
/// flushed, then drops the write half (shutting down that direction of the socket). While it
/// sleeps, the half waits in [`Outbox::idle`].
pub(crate) async fn write_loop(shared: Arc<Shared>, half: OwnedWriteHalf) {
    let mut batch = Vec::new();
    // The half is here while the writer works, in the outbox while it sleeps; only the writer
    // moves it, under the outbox lock.
    let mut parked = Some(half);
    loop {
        let open = {
            let mut outbox = shared.lock_outbox();
            let half = parked.take().or_else(|| outbox.idle.take());
            std::mem::swap(&mut outbox.buf, &mut batch);
            if batch.is_empty() && outbox.open {
                outbox.idle = half;
            } else {
                parked = half;
            }
            outbox.open
        };
        if batch.is_empty() {
            if !open {
                return;
            }
            shared.wake_writer.notified().await;
            continue;
        }
        let Some(half) = parked.as_mut() else {
            unreachable!("the writer takes the half back before it writes");
        };
        if let Err(error) = half.write_all(&batch).await {
            shared.end(Disconnect::Io {
                op: "write",
                source: Arc::new(error),
            });
            return;
        }
        batch.clear();
        shared.drained.notify_waiters();
    }
}
