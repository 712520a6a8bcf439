//! Looking up services, and waiting for a provider to be started.

use super::*;

impl Session {
    pub(super) fn lookup(&mut self, lookup: v1::Lookup, activation: Activation) {
        let service = service_id(&lookup.service_id);
        if !self.conn.may_use(&service) {
            let denied = self.deny("lookup", service, "uses");
            return self.respond(lookup.request_id, Err(denied));
        }
        if let Some(builtin) = builtin::find(&service) {
            return self.respond(lookup.request_id, Ok(Some(builtin.info(service))));
        }
        let inner = Arc::clone(&self.inner);
        let mut registry = inner.registry.write();
        if let Some(provider) = registry
            .services
            .get_mut(&service)
            .and_then(|entry| entry.provider.as_mut())
        {
            if let Some(denied) = self.pinned_elsewhere(service, &provider.conn) {
                drop(registry);
                return self.respond(lookup.request_id, Err(denied));
            }
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

    /// A lookup or subscribe found no provider: wait for an activation, or answer.
    pub(super) fn wait_for_provider(
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
}
