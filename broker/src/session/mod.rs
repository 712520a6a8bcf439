//! What one connection's frames do: the protocol state machine run by the connection's reader.
//!
//! Every handler finishes without waiting: requests that need a provider started are handed to
//! [`activation`] and come back as [`Resumed`]. State only this connection changes (what it
//! registered, subscribed to, watches, is linked to) lives here, unlocked; state others change
//! lives in the registry and in the connections' [`Calls`](crate::conn::Calls). Each concern has a
//! file: the handshake, dispatch and answers here, then [`providing`], [`lookup`], [`calls`],
//! [`events`], [`watching`] and [`end`].

mod calls;
mod end;
mod events;
mod lookup;
mod providing;
mod watching;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use elastos_proto::v1::{self, broker_frame, client_frame, reply, BrokerFrame, ClientFrame};
use elastos_proto::{check_client_frame, FrameError, InvalidFrame};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use crate::activation::{self, ActivationState};
use crate::builtin::{self, Builtin};
use crate::conn::{Calls, CloseReason, Conn, Delivered, Incoming, Outgoing, Queued, Route};
use crate::denials::{self, Denials, Verdict};
use crate::fair;
use crate::outbox::Refused;
use crate::registry::{provider_gone, Provider, Registry, Service, Subscriber};
use crate::{
    BrokerConfig, Inner, MAX_PENDING_REQUESTS, MAX_SERVICES, MAX_SUBSCRIPTIONS, MAX_WATCHES,
};

/// Longest `Error.message` the broker sends, in bytes.
const MAX_ERROR_MESSAGE: usize = 1024;

/// A request that waited for an activation, back on its connection's reader.
pub(crate) struct Resumed {
    pub(crate) body: client_frame::Body,
    pub(crate) outcome: ActivationState,
    /// For a call: tells this wait from a later call that reuses the call id.
    pub(crate) token: u64,
}

/// Whether a request that finds no provider may start one. A request resumed after an
/// activation may not: it would wait again for the provider that just went away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Activation {
    Allowed,
    Done,
}

/// An `Error` with `message` cut to [`MAX_ERROR_MESSAGE`] bytes.
pub(crate) fn error(status: v1::Status, message: impl Into<String>) -> v1::Error {
    let mut message = message.into();
    if message.len() > MAX_ERROR_MESSAGE {
        let cut = (0..=MAX_ERROR_MESSAGE)
            .rev()
            .find(|&at| message.is_char_boundary(at))
            .unwrap_or(0);
        message.truncate(cut);
    }
    v1::Error {
        status: status as i32,
        message,
    }
}

/// The service id of a frame that passed [`check_client_frame`], which checked its length.
fn service_id(bytes: &[u8]) -> Uuid {
    Uuid::from_slice(bytes).unwrap_or_default()
}

/// The `request_id` of a request body, `None` for the bodies that have none.
fn request_id(body: &client_frame::Body) -> Option<u64> {
    use client_frame::Body;
    match body {
        Body::Register(r) => Some(r.request_id),
        Body::Unregister(r) => Some(r.request_id),
        Body::Lookup(r) => Some(r.request_id),
        Body::Subscribe(r) => Some(r.request_id),
        Body::Unsubscribe(r) => Some(r.request_id),
        Body::Watch(r) => Some(r.request_id),
        Body::Unwatch(r) => Some(r.request_id),
        Body::Hello(_) | Body::Call(_) | Body::Cancel(_) | Body::Reply(_) | Body::Publish(_) => {
            None
        }
    }
}

/// A provider's outcome as passed to the caller: statuses a provider may not send (unset, OK,
/// unknown) and a reply with no outcome become INTERNAL; messages are cut to size.
fn provider_outcome(outcome: Option<reply::Outcome>) -> reply::Outcome {
    match outcome {
        Some(reply::Outcome::Payload(payload)) => reply::Outcome::Payload(payload),
        Some(reply::Outcome::Error(sent)) => {
            let status = match v1::Status::try_from(sent.status) {
                Ok(v1::Status::Unspecified | v1::Status::Ok) | Err(_) => v1::Status::Internal,
                Ok(status) => status,
            };
            reply::Outcome::Error(error(status, sent.message))
        }
        None => reply::Outcome::Error(error(
            v1::Status::Internal,
            "the provider answered with neither a payload nor an error",
        )),
    }
}

pub(crate) struct Session {
    inner: Arc<Inner>,
    conn: Arc<Conn>,
    welcomed: bool,
    registered: Vec<Uuid>,
    subscriptions: HashSet<(Uuid, String)>,
    watches: HashSet<Uuid>,
    /// Services this connection looked up or subscribed to (links may have ended since).
    links: HashSet<Uuid>,
    /// Requests waiting for an activation.
    pending: HashSet<u64>,
    denials: Denials,
    /// Set by a handler that decided the connection must close once the frame is handled.
    closing: Option<CloseReason>,
    resume: mpsc::UnboundedSender<Resumed>,
}

impl Session {
    pub(crate) fn new(
        inner: Arc<Inner>,
        conn: Arc<Conn>,
    ) -> (Self, mpsc::UnboundedReceiver<Resumed>) {
        // Unbounded, yet bounded by what may wait: MAX_PENDING_REQUESTS requests and
        // max_calls_in_flight calls.
        let (resume, resumed) = mpsc::unbounded_channel();
        let session = Self {
            inner,
            conn,
            welcomed: false,
            registered: Vec::new(),
            subscriptions: HashSet::new(),
            watches: HashSet::new(),
            links: HashSet::new(),
            pending: HashSet::new(),
            denials: Denials::new(Instant::now()),
            closing: None,
            resume,
        };
        (session, resumed)
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Whether the handshake is done.
    pub(crate) fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// How long the app has to say `hello`.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.inner.config.handshake_timeout
    }

    /// Handles one frame from the app; an error closes the connection.
    pub(crate) fn handle(&mut self, frame: ClientFrame) -> Result<(), CloseReason> {
        use client_frame::Body;
        let checked = check_client_frame(&frame);
        let Some(body) = frame.body else {
            // The decoder refuses frames without a body; this keeps the rule in one place.
            return Err(FrameError::NoBody {
                frame: "ClientFrame",
            }
            .into());
        };
        if !self.welcomed {
            return match body {
                Body::Hello(hello) => self.hello(&hello),
                other => Err(CloseReason::NoHello { got: other.name() }),
            };
        }
        if let Err(invalid) = checked {
            return self.refuse_invalid(body, invalid);
        }
        if let Some(request_id) = request_id(&body) {
            if self.pending.contains(&request_id) {
                self.respond(
                    request_id,
                    Err(error(
                        v1::Status::InvalidArgument,
                        format!(
                            "request id {request_id} is already in use by an unanswered request"
                        ),
                    )),
                );
                return Ok(());
            }
        }
        self.dispatch(body, Activation::Allowed)?;
        self.closing.take().map_or(Ok(()), Err)
    }

    fn dispatch(
        &mut self,
        body: client_frame::Body,
        activation: Activation,
    ) -> Result<(), CloseReason> {
        use client_frame::Body;
        match body {
            Body::Hello(_) => return Err(CloseReason::RepeatedHello),
            Body::Register(register) => self.register(register),
            Body::Unregister(unregister) => {
                self.unregister(unregister.request_id, service_id(&unregister.service_id))
            }
            Body::Lookup(lookup) => self.lookup(lookup, activation),
            Body::Call(call) => self.call(call, activation),
            Body::Cancel(cancel) => self.cancel(cancel.call_id),
            Body::Reply(reply) => self.reply(reply),
            Body::Subscribe(subscribe) => self.subscribe(subscribe, activation),
            Body::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe),
            Body::Publish(publish) => return self.publish(publish),
            Body::Watch(watch) => self.watch(watch.request_id, service_id(&watch.service_id)),
            Body::Unwatch(unwatch) => {
                self.unwatch(unwatch.request_id, service_id(&unwatch.service_id))
            }
        }
        Ok(())
    }

    fn hello(&mut self, hello: &v1::ClientHello) -> Result<(), CloseReason> {
        let Some(version) = hello.negotiate() else {
            return Err(CloseReason::NoCommonVersion {
                min: hello.min_version,
                max: hello.max_version,
            });
        };
        let config = &self.inner.config;
        self.welcomed = true;
        self.conn.send(broker_frame::Body::Welcome(v1::ServerHello {
            version,
            identity: Some(self.conn.peer.clone()),
            limits: Some(v1::Limits {
                max_frame_bytes: u32::try_from(elastos_proto::MAX_FRAME_LEN).unwrap_or(u32::MAX),
                max_calls_in_flight: config.max_calls_in_flight,
                max_deadline_ms: self.max_deadline_ms(),
            }),
        }));
        Ok(())
    }

    fn max_deadline_ms(&self) -> u32 {
        u32::try_from(self.inner.config.max_deadline.as_millis())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Answers a frame that breaks a shape rule with INVALID_ARGUMENT, where the protocol has an
    /// answer for it; a malformed `publish` has none and closes the connection.
    fn refuse_invalid(
        &mut self,
        body: client_frame::Body,
        invalid: InvalidFrame,
    ) -> Result<(), CloseReason> {
        use client_frame::Body;
        let refusal = error(v1::Status::InvalidArgument, invalid.to_string());
        match body {
            Body::Call(call) => self.reply_error(call.call_id, refusal),
            Body::Publish(_) => return Err(CloseReason::InvalidPublish(invalid)),
            Body::Hello(_) => return Err(CloseReason::RepeatedHello),
            // No shape rules: nothing to refuse.
            Body::Cancel(_) | Body::Reply(_) => {}
            request => {
                if let Some(request_id) = request_id(&request) {
                    self.respond(request_id, Err(refusal));
                }
            }
        }
        Ok(())
    }

    fn respond(&self, request_id: u64, outcome: Result<Option<v1::ServiceInfo>, v1::Error>) {
        let (service, error) = match outcome {
            Ok(service) => (service, None),
            Err(error) => (None, Some(error)),
        };
        self.conn.send(broker_frame::Body::Response(v1::Response {
            request_id,
            error,
            service,
        }));
    }

    fn reply_error(&self, call_id: u64, error: v1::Error) {
        self.conn.send(broker_frame::Body::Reply(v1::Reply {
            call_id,
            outcome: Some(reply::Outcome::Error(error)),
        }));
    }

    /// PERMISSION_DENIED for `action` on `service`, logged at a bounded rate; too many in a
    /// window close the connection once the frame is handled ([`denials`](crate::denials)).
    fn deny(&mut self, action: &'static str, service: Uuid, list: &'static str) -> v1::Error {
        let identity = &self.conn.identity;
        self.inner.metrics.denied(action);
        match self.denials.record(action, Instant::now()) {
            Verdict::Log { suppressed: 0 } => tracing::warn!(
                connection = %self.conn.id,
                app = %identity.name,
                app_id = %identity.app_id,
                %service,
                action,
                "permission denied: the service is not in the app's services.{list}"
            ),
            Verdict::Log { suppressed } => tracing::warn!(
                connection = %self.conn.id,
                app = %identity.name,
                app_id = %identity.app_id,
                %service,
                action,
                suppressed,
                "permission denied: the service is not in the app's services.{list} \
                 ({suppressed} more {action} denials not logged since the last such line)"
            ),
            Verdict::Suppress => {}
            Verdict::Disconnect { denied } => {
                self.closing.get_or_insert(CloseReason::TooManyDenials {
                    denied,
                    window: denials::WINDOW,
                    unlogged: self.denials.unlogged(),
                });
            }
        }
        error(
            v1::Status::PermissionDenied,
            format!(
                "{action} of service {service} denied: it is not in this app's services.{list}; \
                 hint: list it in the manifest"
            ),
        )
    }

    /// PERMISSION_DENIED when this app's manifest pins `service` to another publisher than
    /// `provider`'s: it then never reaches that provider.
    fn pinned_elsewhere(&self, service: Uuid, provider: &Conn) -> Option<v1::Error> {
        let hex = |key: &[u8; 32]| key.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let (_, pinned) = self
            .conn
            .identity
            .pins
            .iter()
            .find(|(s, _)| *s == service)?;
        (provider.identity.publisher != *pinned).then(|| {
            self.inner.metrics.denied("pinned");
            error(
                v1::Status::PermissionDenied,
                format!(
                    "service {service} is provided by publisher {}, and this app's manifest pins \
                     it to publisher {}",
                    hex(&provider.identity.publisher),
                    hex(pinned)
                ),
            )
        })
    }

    fn not_found(service: Uuid) -> v1::Error {
        error(
            v1::Status::NotFound,
            format!("no running or installed app provides service {service}"),
        )
    }

    fn gone_after_start(service: Uuid) -> v1::Error {
        error(
            v1::Status::Unavailable,
            format!("the provider of service {service} went away right after it started"),
        )
    }
}

fn send_gone(conn: &Conn, service: Uuid, reason: v1::GoneReason) {
    conn.send(provider_gone(service, reason));
}
