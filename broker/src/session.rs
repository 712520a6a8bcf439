//! What one connection's frames do: the protocol state machine run by the connection's reader.
//!
//! Every handler finishes without waiting: requests that need a provider started are handed to
//! [`activation`] and come back as [`Resumed`]. State only this connection changes (what it
//! registered, subscribed to, watches, is linked to) lives here, unlocked; state others change
//! lives in the registry and in the connections' [`Calls`](crate::conn::Calls).

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
use crate::conn::{CloseReason, Conn, Incoming, Outgoing, Route};
use crate::outbox::Refused;
use crate::registry::{Provider, Registry, Service, Subscriber};
use crate::{Inner, MAX_PENDING_REQUESTS, MAX_SERVICES, MAX_SUBSCRIPTIONS, MAX_WATCHES};

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
        self.dispatch(body, Activation::Allowed)
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

    /// PERMISSION_DENIED for `action` on `service`, logged.
    fn deny(&self, action: &'static str, service: Uuid, list: &'static str) -> v1::Error {
        let identity = &self.conn.identity;
        tracing::warn!(
            connection = %self.conn.id,
            app = %identity.name,
            app_id = %identity.app_id,
            %service,
            action,
            "permission denied: the service is not in the app's services.{list}"
        );
        error(
            v1::Status::PermissionDenied,
            format!(
                "{action} of service {service} denied: it is not in this app's services.{list}; \
                 hint: list it in the manifest"
            ),
        )
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

    // ---------------------------------------------------------------------------------------
    // Providing
    // ---------------------------------------------------------------------------------------

    fn register(&mut self, register: v1::Register) {
        let service = service_id(&register.service_id);
        let request_id = register.request_id;
        if !self.conn.may_provide(&service) {
            let denied = self.deny("register", service, "provides");
            return self.respond(request_id, Err(denied));
        }
        let ours = self.registered.contains(&service);
        if !ours && self.registered.len() >= MAX_SERVICES {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::ResourceExhausted,
                    format!("this connection already provides {MAX_SERVICES} services"),
                )),
            );
        }
        let mut registry = self.inner.registry.write();
        let entry = registry.services.entry(service).or_default();
        match &mut entry.provider {
            Some(provider) if ours => {
                provider.redeclare(register.methods, register.topics);
                drop(registry);
                self.respond(request_id, Ok(None));
            }
            Some(provider) => {
                let other = provider.conn.identity.name.clone();
                drop(registry);
                self.respond(
                    request_id,
                    Err(error(
                        v1::Status::Unavailable,
                        format!("service {service} is already provided by app {other}"),
                    )),
                );
            }
            None => {
                let provider =
                    Provider::new(Arc::clone(&self.conn), register.methods, register.topics);
                let available = provider.info(service);
                entry.provider = Some(provider);
                if !ours {
                    self.registered.push(service);
                }
                self.respond(request_id, Ok(None));
                for watcher in &entry.watchers {
                    watcher.send(broker_frame::Body::ServiceAvailable(v1::ServiceAvailable {
                        service: Some(available.clone()),
                    }));
                }
                activation::registered(&mut registry, service);
                tracing::debug!(connection = %self.conn.id, %service, "service registered");
            }
        }
    }

    fn unregister(&mut self, request_id: u64, service: Uuid) {
        let Some(index) = self.registered.iter().position(|ours| *ours == service) else {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::NotFound,
                    format!("this connection does not provide service {service}"),
                )),
            );
        };
        self.registered.swap_remove(index);
        let told = {
            let mut registry = self.inner.registry.write();
            let told = registry
                .services
                .get_mut(&service)
                .map(|entry| entry.remove_provider())
                .unwrap_or_default();
            registry.prune(service);
            told
        };
        self.respond(request_id, Ok(None));
        for conn in told {
            send_gone(&conn, service, v1::GoneReason::Unregistered);
        }
    }

    fn publish(&mut self, publish: v1::Publish) -> Result<(), CloseReason> {
        let service = service_id(&publish.service_id);
        let forbidden = |why| CloseReason::ForbiddenPublish {
            service,
            topic: publish.topic.clone(),
            why,
        };
        let registry = self.inner.registry.read();
        let entry = registry.services.get(&service);
        let provider = entry
            .and_then(|entry| entry.provider.as_ref())
            .filter(|provider| provider.conn.id == self.conn.id)
            .ok_or_else(|| forbidden("this connection did not register the service"))?;
        if !provider.has_topic(&publish.topic) {
            return Err(forbidden("the service did not declare the topic"));
        }
        let Some(subscribers) = entry.and_then(|entry| entry.subscribers.get(&publish.topic))
        else {
            return Ok(());
        };
        let mut frame = BrokerFrame {
            body: Some(broker_frame::Body::Event(v1::Event {
                service_id: publish.service_id,
                topic: publish.topic,
                payload: publish.payload,
                dropped: 0,
            })),
        };
        for subscriber in subscribers {
            let dropped = subscriber.dropped.load(Ordering::Relaxed);
            if let Some(broker_frame::Body::Event(event)) = &mut frame.body {
                event.dropped = dropped;
            }
            match subscriber.conn.outbox.offer(&frame) {
                Ok(()) => {
                    subscriber.dropped.fetch_sub(dropped, Ordering::Relaxed);
                }
                Err(_) => {
                    subscriber.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Finding
    // ---------------------------------------------------------------------------------------

    fn lookup(&mut self, lookup: v1::Lookup, activation: Activation) {
        let service = service_id(&lookup.service_id);
        if !self.conn.may_use(&service) {
            let denied = self.deny("lookup", service, "uses");
            return self.respond(lookup.request_id, Err(denied));
        }
        let inner = Arc::clone(&self.inner);
        let mut registry = inner.registry.write();
        if let Some(provider) = registry
            .services
            .get_mut(&service)
            .and_then(|entry| entry.provider.as_mut())
        {
            provider.link(&self.conn);
            provider.conn.touch(self.inner.now_ms());
            let info = provider.info(service);
            drop(registry);
            self.links.insert(service);
            return self.respond(lookup.request_id, Ok(Some(info)));
        }
        let request_id = lookup.request_id;
        self.wait_for_provider(
            registry,
            service,
            activation,
            request_id,
            client_frame::Body::Lookup(lookup),
        );
    }

    fn subscribe(&mut self, subscribe: v1::Subscribe, activation: Activation) {
        let service = service_id(&subscribe.service_id);
        let request_id = subscribe.request_id;
        if !self.conn.may_use(&service) {
            let denied = self.deny("subscribe", service, "uses");
            return self.respond(request_id, Err(denied));
        }
        let key = (service, subscribe.topic);
        let new = !self.subscriptions.contains(&key);
        if new && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::ResourceExhausted,
                    format!("this connection already holds {MAX_SUBSCRIPTIONS} subscriptions"),
                )),
            );
        }
        let inner = Arc::clone(&self.inner);
        let mut registry = inner.registry.write();
        let (provider, subscribers) = match registry.services.get_mut(&service) {
            Some(Service {
                provider: Some(provider),
                subscribers,
                ..
            }) => (provider, subscribers),
            _ => {
                let subscribe = v1::Subscribe {
                    request_id,
                    service_id: subscribe.service_id,
                    topic: key.1,
                };
                return self.wait_for_provider(
                    registry,
                    service,
                    activation,
                    request_id,
                    client_frame::Body::Subscribe(subscribe),
                );
            }
        };
        if !provider.has_topic(&key.1) {
            drop(registry);
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::NotFound,
                    format!("service {service} has no topic {:?}", key.1),
                )),
            );
        }
        provider.link(&self.conn);
        provider.conn.touch(self.inner.now_ms());
        let info = provider.info(service);
        if new {
            subscribers
                .entry(key.1.clone())
                .or_default()
                .push(Subscriber {
                    conn: Arc::clone(&self.conn),
                    dropped: Default::default(),
                });
            self.subscriptions.insert(key);
        }
        drop(registry);
        self.links.insert(service);
        self.respond(request_id, Ok(Some(info)));
    }

    fn unsubscribe(&mut self, unsubscribe: v1::Unsubscribe) {
        let service = service_id(&unsubscribe.service_id);
        let key = (service, unsubscribe.topic);
        if !self.subscriptions.remove(&key) {
            return self.respond(
                unsubscribe.request_id,
                Err(error(
                    v1::Status::NotFound,
                    format!(
                        "this connection is not subscribed to topic {:?} of service {service}",
                        key.1
                    ),
                )),
            );
        }
        self.remove_subscription(&mut self.inner.registry.write(), &key);
        self.respond(unsubscribe.request_id, Ok(None));
    }

    fn remove_subscription(&self, registry: &mut Registry, (service, topic): &(Uuid, String)) {
        if let Some(entry) = registry.services.get_mut(service) {
            if let Some(subscribers) = entry.subscribers.get_mut(topic) {
                subscribers.retain(|subscriber| subscriber.conn.id != self.conn.id);
                if subscribers.is_empty() {
                    entry.subscribers.remove(topic);
                }
            }
        }
        registry.prune(*service);
    }

    fn watch(&mut self, request_id: u64, service: Uuid) {
        if !self.conn.may_use(&service) {
            let denied = self.deny("watch", service, "uses");
            return self.respond(request_id, Err(denied));
        }
        let new = !self.watches.contains(&service);
        if new && self.watches.len() >= MAX_WATCHES {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::ResourceExhausted,
                    format!("this connection already watches {MAX_WATCHES} services"),
                )),
            );
        }
        let mut registry = self.inner.registry.write();
        let entry = registry.services.entry(service).or_default();
        if new {
            entry.watchers.push(Arc::clone(&self.conn));
            self.watches.insert(service);
        }
        // Under the registry lock, so that a registration cannot slip its `service_available`
        // in before this response.
        self.respond(request_id, Ok(None));
        if let Some(provider) = &entry.provider {
            self.conn
                .send(broker_frame::Body::ServiceAvailable(v1::ServiceAvailable {
                    service: Some(provider.info(service)),
                }));
        }
    }

    fn unwatch(&mut self, request_id: u64, service: Uuid) {
        if !self.watches.remove(&service) {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::NotFound,
                    format!("this connection does not watch service {service}"),
                )),
            );
        }
        let mut registry = self.inner.registry.write();
        if let Some(entry) = registry.services.get_mut(&service) {
            entry.watchers.retain(|watcher| watcher.id != self.conn.id);
        }
        registry.prune(service);
        drop(registry);
        self.respond(request_id, Ok(None));
    }

    /// A lookup or subscribe found no provider: wait for an activation, or answer.
    fn wait_for_provider(
        &mut self,
        mut registry: parking_lot::RwLockWriteGuard<'_, Registry>,
        service: Uuid,
        activation: Activation,
        request_id: u64,
        body: client_frame::Body,
    ) {
        if activation == Activation::Done {
            drop(registry);
            return self.respond(request_id, Err(Self::gone_after_start(service)));
        }
        if self.pending.len() >= MAX_PENDING_REQUESTS {
            drop(registry);
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::ResourceExhausted,
                    format!(
                        "this connection already has {MAX_PENDING_REQUESTS} requests waiting for \
                         providers to start"
                    ),
                )),
            );
        }
        let Some(state) = activation::join(&self.inner, &mut registry, service) else {
            drop(registry);
            return self.respond(request_id, Err(Self::not_found(service)));
        };
        drop(registry);
        self.pending.insert(request_id);
        // The activation ends by its own deadline, which started no later than now; the grace
        // only bounds this wait should it somehow not.
        let until =
            Instant::now() + self.inner.config.activation_timeout + activation::RESUME_GRACE;
        activation::resume_when_done(state, until, body, 0, self.resume.clone());
    }

    /// A request back from waiting for an activation.
    pub(crate) fn resume(&mut self, resumed: Resumed) -> Result<(), CloseReason> {
        let Resumed {
            body,
            outcome,
            token,
        } = resumed;
        if let client_frame::Body::Call(call) = body {
            self.resume_call(call, outcome, token);
            return Ok(());
        }
        let Some(request_id) = request_id(&body) else {
            return Ok(());
        };
        self.pending.remove(&request_id);
        match outcome {
            ActivationState::Failed(failure) => {
                self.respond(request_id, Err(failure));
                Ok(())
            }
            ActivationState::Registered | ActivationState::Pending => {
                self.dispatch(body, Activation::Done)
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Calls
    // ---------------------------------------------------------------------------------------

    fn call(&mut self, call: v1::Call, activation: Activation) {
        let service = service_id(&call.service_id);
        let call_id = call.call_id;
        if !self.conn.may_use(&service) {
            let denied = self.deny("call", service, "uses");
            return self.reply_error(call_id, denied);
        }
        let refused = {
            let calls = self.conn.calls.lock();
            if calls.outgoing.contains_key(&call_id) {
                Some(error(
                    v1::Status::InvalidArgument,
                    format!("call id {call_id} is already in use by an unanswered call"),
                ))
            } else if calls.outgoing.len() >= self.inner.config.max_calls_in_flight as usize {
                Some(error(
                    v1::Status::ResourceExhausted,
                    format!(
                        "this connection already has {} calls in flight",
                        self.inner.config.max_calls_in_flight
                    ),
                ))
            } else {
                None
            }
        };
        if let Some(refused) = refused {
            return self.reply_error(call_id, refused);
        }
        let max = self.max_deadline_ms();
        let deadline_ms = match call.deadline_ms {
            0 => max,
            given => given.min(max),
        };
        let deadline = Instant::now() + Duration::from_millis(deadline_ms.into());
        self.route(call, service, deadline, activation);
    }

    /// Sends a checked call to its provider, or waits for one to start, or answers it.
    fn route(&mut self, call: v1::Call, service: Uuid, deadline: Instant, activation: Activation) {
        let found = {
            let registry = self.inner.registry.read();
            registry
                .services
                .get(&service)
                .and_then(|entry| entry.provider.as_ref())
                .map(|provider| {
                    provider
                        .has_method(&call.method)
                        .then(|| Arc::clone(&provider.conn))
                })
        };
        match found {
            Some(Some(provider)) => self.send_call(call, service, provider, deadline),
            Some(None) => {
                let unknown = error(
                    v1::Status::NotFound,
                    format!("service {service} has no method {:?}", call.method),
                );
                self.reply_error(call.call_id, unknown);
            }
            None if activation == Activation::Done => {
                self.reply_error(call.call_id, Self::gone_after_start(service))
            }
            None => self.activate_for_call(call, service, deadline),
        }
    }

    fn activate_for_call(&mut self, call: v1::Call, service: Uuid, deadline: Instant) {
        let call_id = call.call_id;
        let state = {
            let mut registry = self.inner.registry.write();
            if registry
                .services
                .get(&service)
                .is_some_and(|entry| entry.provider.is_some())
            {
                // Registered between the two locks: route it now.
                drop(registry);
                return self.route(call, service, deadline, Activation::Done);
            }
            activation::join(&self.inner, &mut registry, service)
        };
        let Some(state) = state else {
            return self.reply_error(call_id, Self::not_found(service));
        };
        let token = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        let mut calls = self.conn.calls.lock();
        calls.outgoing.insert(
            call_id,
            Outgoing {
                deadline,
                route: Route::Activating { activation: token },
            },
        );
        calls.deadlines.insert((deadline, call_id));
        drop(calls);
        activation::resume_when_done(
            state,
            deadline,
            client_frame::Body::Call(call),
            token,
            self.resume.clone(),
        );
    }

    fn resume_call(&mut self, call: v1::Call, outcome: ActivationState, token: u64) {
        let call_id = call.call_id;
        let waiting = {
            let mut calls = self.conn.calls.lock();
            let ours = matches!(
                calls.outgoing.get(&call_id),
                Some(Outgoing { route: Route::Activating { activation }, .. })
                    if *activation == token
            );
            if ours {
                calls.take(call_id)
            } else {
                None
            }
        };
        // Answered meanwhile (cancelled, deadline passed): nothing left to do.
        let Some(waiting) = waiting else {
            return;
        };
        match outcome {
            ActivationState::Failed(failure) => self.reply_error(call_id, failure),
            ActivationState::Registered | ActivationState::Pending => {
                let service = service_id(&call.service_id);
                self.route(call, service, waiting.deadline, Activation::Done);
            }
        }
    }

    fn send_call(&mut self, call: v1::Call, service: Uuid, provider: Arc<Conn>, deadline: Instant) {
        let call_id = call.call_id;
        let broker_call_id = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        {
            let mut calls = self.conn.calls.lock();
            calls.outgoing.insert(
                call_id,
                Outgoing {
                    deadline,
                    route: Route::Routed {
                        provider: Arc::clone(&provider),
                        broker_call_id,
                    },
                },
            );
            calls.deadlines.insert((deadline, call_id));
        }
        let now = Instant::now();
        let left_ms = deadline.saturating_duration_since(now).as_millis();
        let frame = BrokerFrame {
            body: Some(broker_frame::Body::IncomingCall(v1::IncomingCall {
                call_id: broker_call_id,
                service_id: call.service_id,
                method: call.method,
                payload: call.payload,
                deadline_ms: u32::try_from(left_ms).unwrap_or(u32::MAX).max(1),
                caller: Some(self.conn.peer.clone()),
            })),
        };
        let refused = {
            let mut theirs = provider.calls.lock();
            if theirs.closed {
                Some(Refused::Closed)
            } else if theirs.incoming.len() >= self.inner.config.max_incoming_calls {
                Some(Refused::Full {
                    queued: theirs.incoming.len(),
                })
            } else {
                // Offered under the provider's lock, so its reply cannot overtake the entry.
                match provider.outbox.offer(&frame) {
                    Ok(()) => {
                        theirs.incoming.insert(
                            broker_call_id,
                            Incoming {
                                caller: Arc::clone(&self.conn),
                                caller_call_id: call_id,
                                service,
                            },
                        );
                        None
                    }
                    Err(refused) => Some(refused),
                }
            }
        };
        let Some(refused) = refused else {
            provider.touch(self.inner.now_ms());
            return;
        };
        self.conn.calls.lock().take(call_id);
        let failure = match refused {
            Refused::Closed => error(
                v1::Status::Unavailable,
                format!("the provider of service {service} is going away"),
            ),
            Refused::Full { .. } => error(
                v1::Status::ResourceExhausted,
                format!("the provider of service {service} has too much work queued; retry later"),
            ),
            Refused::Oversize => error(
                v1::Status::ResourceExhausted,
                "the call does not fit in a frame once the caller's identity is added; \
                 hint: send a smaller payload",
            ),
        };
        self.reply_error(call_id, failure);
    }

    fn cancel(&mut self, call_id: u64) {
        let Some(outgoing) = self.conn.calls.lock().take(call_id) else {
            return;
        };
        self.end_call(
            call_id,
            outgoing,
            v1::Status::Cancelled,
            "cancelled by the caller",
        );
    }

    /// The earliest deadline of this connection's calls in flight.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conn
            .calls
            .lock()
            .deadlines
            .first()
            .map(|&(deadline, _)| deadline)
    }

    /// Answers the calls whose deadline has passed by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        let expired: Vec<(u64, Outgoing)> = {
            let mut calls = self.conn.calls.lock();
            let mut expired = Vec::new();
            while let Some(&(deadline, call_id)) = calls.deadlines.first() {
                if deadline > now {
                    break;
                }
                if let Some(outgoing) = calls.take(call_id) {
                    expired.push((call_id, outgoing));
                }
            }
            expired
        };
        for (call_id, outgoing) in expired {
            self.end_call(
                call_id,
                outgoing,
                v1::Status::DeadlineExceeded,
                "the call's deadline passed before the provider answered",
            );
        }
    }

    /// Answers a call the broker ends itself and tells its provider, if it has one.
    fn end_call(&self, call_id: u64, outgoing: Outgoing, status: v1::Status, why: &str) {
        self.reply_error(call_id, error(status, why));
        if let Route::Routed {
            provider,
            broker_call_id,
        } = outgoing.route
        {
            cancel_incoming(&provider, broker_call_id);
        }
    }

    fn reply(&mut self, reply: v1::Reply) {
        // An id the broker did not send, or one already answered (cancelled, deadline passed),
        // is dropped, as the protocol says.
        let Some(incoming) = self.conn.calls.lock().incoming.remove(&reply.call_id) else {
            return;
        };
        self.conn.touch(self.inner.now_ms());
        let caller = incoming.caller;
        if !caller
            .calls
            .lock()
            .take_routed(incoming.caller_call_id, reply.call_id)
        {
            return;
        }
        let answer = BrokerFrame {
            body: Some(broker_frame::Body::Reply(v1::Reply {
                call_id: incoming.caller_call_id,
                outcome: Some(provider_outcome(reply.outcome)),
            })),
        };
        match caller.outbox.push(&answer) {
            Ok(()) => {}
            Err(Refused::Full { queued }) => caller.close(CloseReason::NotReading { queued }),
            Err(Refused::Closed) => {}
            Err(Refused::Oversize) => {
                let failure = error(
                    v1::Status::ResourceExhausted,
                    "the provider's reply does not fit in a frame",
                );
                caller.send(broker_frame::Body::Reply(v1::Reply {
                    call_id: incoming.caller_call_id,
                    outcome: Some(reply::Outcome::Error(failure)),
                }));
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // The end
    // ---------------------------------------------------------------------------------------

    /// Removes everything of this connection from the broker: its services (linked clients,
    /// watchers and callers with calls in flight get `provider_gone` with `reason`, those calls
    /// UNAVAILABLE), subscriptions, watches and links, and cancels its own calls towards their
    /// providers.
    pub(crate) fn end(&mut self, reason: v1::GoneReason) {
        let id = self.conn.id;
        let mut told: Vec<(Uuid, Arc<Conn>)> = Vec::new();
        {
            let mut registry = self.inner.registry.write();
            registry.connections.remove(&id);
            for service in std::mem::take(&mut self.registered) {
                if let Some(entry) = registry.services.get_mut(&service) {
                    told.extend(
                        entry
                            .remove_provider()
                            .into_iter()
                            .map(|conn| (service, conn)),
                    );
                }
                registry.prune(service);
            }
            for key in std::mem::take(&mut self.subscriptions) {
                self.remove_subscription(&mut registry, &key);
            }
            for service in std::mem::take(&mut self.watches) {
                if let Some(entry) = registry.services.get_mut(&service) {
                    entry.watchers.retain(|watcher| watcher.id != id);
                }
                registry.prune(service);
            }
            for service in std::mem::take(&mut self.links) {
                if let Some(provider) = registry
                    .services
                    .get_mut(&service)
                    .and_then(|entry| entry.provider.as_mut())
                {
                    provider.unlink(id);
                }
            }
        }
        let (outgoing, incoming) = {
            let mut calls = self.conn.calls.lock();
            calls.closed = true;
            calls.deadlines.clear();
            (
                std::mem::take(&mut calls.outgoing),
                std::mem::take(&mut calls.incoming),
            )
        };
        for outgoing in outgoing.into_values() {
            if let Route::Routed {
                provider,
                broker_call_id,
            } = outgoing.route
            {
                cancel_incoming(&provider, broker_call_id);
            }
        }
        for (broker_call_id, incoming) in incoming {
            let caller = incoming.caller;
            if caller
                .calls
                .lock()
                .take_routed(incoming.caller_call_id, broker_call_id)
            {
                let failure = error(
                    v1::Status::Unavailable,
                    format!(
                        "the provider of service {} went away during the call",
                        incoming.service
                    ),
                );
                caller.send(broker_frame::Body::Reply(v1::Reply {
                    call_id: incoming.caller_call_id,
                    outcome: Some(reply::Outcome::Error(failure)),
                }));
                told.push((incoming.service, caller));
            }
        }
        told.sort_unstable_by_key(|(service, conn)| (*service, conn.id));
        told.dedup_by_key(|(service, conn)| (*service, conn.id));
        for (service, conn) in told {
            if conn.id != id {
                send_gone(&conn, service, reason);
            }
        }
    }
}

fn send_gone(conn: &Conn, service: Uuid, reason: v1::GoneReason) {
    conn.send(broker_frame::Body::ProviderGone(v1::ProviderGone {
        service_id: service.as_bytes().to_vec(),
        reason: reason as i32,
    }));
}

/// Withdraws incoming call `broker_call_id` from `provider` and tells it, unless it has answered.
fn cancel_incoming(provider: &Conn, broker_call_id: u64) {
    let withdrawn = provider
        .calls
        .lock()
        .incoming
        .remove(&broker_call_id)
        .is_some();
    if withdrawn {
        provider.send(broker_frame::Body::Cancel(v1::Cancel {
            call_id: broker_call_id,
        }));
    }
}
