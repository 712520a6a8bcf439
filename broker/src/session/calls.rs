//! Calls: checking, routing (or waiting for an activation), cancelling, expiring and answering.

use super::*;

impl Session {
    pub(super) fn call(&mut self, call: v1::Call, activation: Activation) {
        let service = service_id(&call.service_id);
        let call_id = call.call_id;
        self.inner.metrics.call();
        if !self.conn.may_use(&service) {
            let denied = self.deny("call", service, "uses");
            return self.reply_error(call_id, denied);
        }
        if builtin::find(&service).is_some() {
            let none = error(
                v1::Status::NotFound,
                format!("service {service} is built into the broker and has no methods"),
            );
            return self.reply_error(call_id, none);
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
                    // A provider this app's manifest pins away is not even asked for its methods.
                    match self.pinned_elsewhere(service, &provider.conn) {
                        Some(denied) => Err(denied),
                        None => Ok(provider
                            .has_method(&call.method)
                            .then(|| Arc::clone(&provider.conn))),
                    }
                })
        };
        match found {
            Some(Err(denied)) => self.reply_error(call.call_id, denied),
            Some(Ok(Some(provider))) => self.send_call(call, service, provider, deadline),
            Some(Ok(None)) => {
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
                routed_at: Instant::now(),
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

    pub(super) fn resume_call(&mut self, call: v1::Call, outcome: ActivationState, token: u64) {
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
                    routed_at: Instant::now(),
                },
            );
            calls.deadlines.insert((deadline, call_id));
        }
        let cost = call.payload.len() + call.method.len() + fair::CALL_OVERHEAD;
        let queued = Queued {
            deadline,
            frame: BrokerFrame {
                body: Some(broker_frame::Body::IncomingCall(v1::IncomingCall {
                    call_id: broker_call_id,
                    service_id: call.service_id,
                    method: call.method,
                    payload: call.payload,
                    // Set when it goes out: what is left of the deadline then.
                    deadline_ms: 0,
                    caller: Some(self.conn.peer.clone()),
                })),
            },
        };
        let config = &self.inner.config;
        let (refused, undelivered) = {
            let mut theirs = provider.calls.lock();
            let own_bytes = theirs.queued.queued_bytes(self.conn.id);
            if theirs.closed {
                let gone = error(
                    v1::Status::Unavailable,
                    format!("the provider of service {service} is going away"),
                );
                (Some(gone), Vec::new())
            } else if theirs.incoming.len() >= config.max_incoming_calls {
                let full = error(
                    v1::Status::ResourceExhausted,
                    format!(
                        "the provider of service {service} has too much work queued; retry later"
                    ),
                );
                (Some(full), Vec::new())
            } else if own_bytes > 0 && own_bytes.saturating_add(cost) > config.caller_queue_bytes {
                // Only this caller's own excess is refused: its queue is its own.
                let full = error(
                    v1::Status::ResourceExhausted,
                    format!(
                        "this app has {own_bytes} bytes of calls waiting for the provider of \
                         service {service}, the most it may; retry when some are answered"
                    ),
                );
                (Some(full), Vec::new())
            } else {
                theirs.incoming.insert(
                    broker_call_id,
                    Incoming {
                        caller: Arc::clone(&self.conn),
                        caller_call_id: call_id,
                        service,
                        delivered: None,
                    },
                );
                theirs
                    .queued
                    .push(self.conn.id, broker_call_id, cost, queued);
                (None, deliver(&mut theirs, &provider, config))
            }
        };
        match refused {
            None => provider.touch(self.inner.now_ms()),
            Some(refused) => {
                self.conn.calls.lock().take(call_id);
                self.reply_error(call_id, refused);
            }
        }
        fail_undelivered(undelivered);
    }

    pub(super) fn cancel(&mut self, call_id: u64) {
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
            cancel_incoming(&provider, broker_call_id, &self.inner.config);
        }
    }

    pub(super) fn reply(&mut self, reply: v1::Reply) {
        // An id the broker did not send, or one already answered (cancelled, deadline passed),
        // is dropped, as the protocol says.
        // A queued call's id is refused too: the provider never got it (it guessed the id).
        let (incoming, undelivered) = {
            let mut calls = self.conn.calls.lock();
            let Some(delivered) = calls
                .incoming
                .get(&reply.call_id)
                .and_then(|incoming| incoming.delivered)
            else {
                return;
            };
            let Some(incoming) = calls.incoming.remove(&reply.call_id) else {
                return;
            };
            if !calls.queued.answered(incoming.caller.id, delivered.number) {
                calls
                    .queued
                    .window
                    .sample(delivered.at.elapsed(), delivered.outstanding);
            }
            (
                incoming,
                deliver(&mut calls, &self.conn, &self.inner.config),
            )
        };
        fail_undelivered(undelivered);
        self.conn.touch(self.inner.now_ms());
        let caller = incoming.caller;
        let Some(routed_at) = caller
            .calls
            .lock()
            .take_routed(incoming.caller_call_id, reply.call_id)
        else {
            return;
        };
        self.inner.metrics.answered(routed_at.elapsed());
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
}

/// Withdraws incoming call `broker_call_id` from `provider`, unless it has answered: a delivered
/// one is cancelled towards the provider and its slot in the window goes to the next queued
/// call; a queued one is dropped from its caller's queue and the provider never hears of it.
pub(super) fn cancel_incoming(provider: &Conn, broker_call_id: u64, config: &BrokerConfig) {
    let undelivered = {
        let mut calls = provider.calls.lock();
        let Some(incoming) = calls.incoming.remove(&broker_call_id) else {
            return;
        };
        let Some(delivered) = incoming.delivered else {
            calls.queued.remove(incoming.caller.id, broker_call_id);
            return;
        };
        calls.queued.withdrawn(incoming.caller.id, delivered.number);
        // Under the lock, so that the cancel goes out before the call that takes the slot.
        provider.send(broker_frame::Body::Cancel(v1::Cancel {
            call_id: broker_call_id,
        }));
        deliver(&mut calls, provider, config)
    };
    fail_undelivered(undelivered);
}

/// A queued call that cannot be delivered, to be answered once the provider's lock is released.
pub(super) struct Undelivered {
    caller: Arc<Conn>,
    caller_call_id: u64,
    broker_call_id: u64,
    error: v1::Error,
}

/// Delivers `provider`'s queued calls, in the order [`Fair`](crate::fair::Fair) picks, while
/// fewer than the provider's window are delivered and unanswered, each caller up to its own
/// window: both as its [`DelayWindow`](crate::fair::DelayWindow) says, within the configured
/// bounds. Called with the provider's calls locked, so that its reply cannot overtake the entry
/// being marked delivered.
fn deliver(calls: &mut Calls, provider: &Conn, config: &BrokerConfig) -> Vec<Undelivered> {
    let mut undelivered = Vec::new();
    // A window of 0 would deliver nothing, ever. Held calls do not count against it.
    let window = (calls.queued.window.size() + calls.queued.held())
        .min(config.delivery_window)
        .max(1);
    let caller_window = window.min(config.caller_delivery_window).max(1);
    while calls.queued.delivered() < window {
        let busy = calls.queued.delivered() > 0;
        let Some((broker_call_id, queued)) = calls.queued.peek(caller_window) else {
            break;
        };
        let now = Instant::now();
        if let Some(broker_frame::Body::IncomingCall(call)) = &mut queued.frame.body {
            let left_ms = queued.deadline.saturating_duration_since(now).as_millis();
            call.deadline_ms = u32::try_from(left_ms).unwrap_or(u32::MAX).max(1);
        }
        let failure = match provider.outbox.offer(&queued.frame) {
            Ok(()) => None,
            // The provider has calls to answer, and each answer tries again: keep it queued.
            Err(Refused::Full { .. }) if busy => break,
            // Its end answers every queued call UNAVAILABLE.
            Err(Refused::Closed) => break,
            // Nothing of this provider's work is outstanding yet its queue is full: it is not
            // reading.
            Err(Refused::Full { .. }) => Some((
                v1::Status::ResourceExhausted,
                "has too much work queued; retry later",
            )),
            Err(Refused::Oversize) => Some((
                v1::Status::ResourceExhausted,
                "cannot take the call: it does not fit in a frame once the caller's identity is \
                 added; hint: send a smaller payload",
            )),
        };
        let Some((caller, _)) = calls.queued.pop() else {
            break;
        };
        match failure {
            None => {
                let number = calls.queued.deliver(caller);
                if let Some(incoming) = calls.incoming.get_mut(&broker_call_id) {
                    incoming.delivered = Some(Delivered {
                        at: now,
                        outstanding: calls.queued.delivered(),
                        number,
                    });
                }
            }
            Some((status, why)) => {
                if let Some(incoming) = calls.incoming.remove(&broker_call_id) {
                    undelivered.push(Undelivered {
                        error: error(
                            status,
                            format!("the provider of service {} {why}", incoming.service),
                        ),
                        caller: incoming.caller,
                        caller_call_id: incoming.caller_call_id,
                        broker_call_id,
                    });
                }
            }
        }
    }
    undelivered
}

/// Answers the calls [`deliver`] could not deliver, unless they were answered meanwhile.
fn fail_undelivered(undelivered: Vec<Undelivered>) {
    for call in undelivered {
        let ours = call
            .caller
            .calls
            .lock()
            .take_routed(call.caller_call_id, call.broker_call_id)
            .is_some();
        if ours {
            call.caller.send(broker_frame::Body::Reply(v1::Reply {
                call_id: call.caller_call_id,
                outcome: Some(reply::Outcome::Error(call.error)),
            }));
        }
    }
}
