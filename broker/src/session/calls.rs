//! Calls: checking, routing (or waiting for an activation), cancelling, expiring and answering.

use super::*;

impl Session {
    pub(super) fn call(&mut self, call: v1::Call, activation: Activation) {
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
            cancel_incoming(&provider, broker_call_id);
        }
    }

    pub(super) fn reply(&mut self, reply: v1::Reply) {
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
}

/// Withdraws incoming call `broker_call_id` from `provider` and tells it, unless it has answered.
pub(super) fn cancel_incoming(provider: &Conn, broker_call_id: u64) {
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
