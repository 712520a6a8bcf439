//! Events: publishing, subscribing and unsubscribing.

use super::*;

impl Session {
    pub(super) fn publish(&mut self, publish: v1::Publish) -> Result<(), CloseReason> {
        let service = service_id(&publish.service_id);
        let forbidden = |why| {
            self.inner.metrics.denied("publish");
            CloseReason::ForbiddenPublish {
                service,
                topic: publish.topic.clone(),
                why,
            }
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
            subscriber.deliver(&mut frame);
        }
        Ok(())
    }

    pub(super) fn subscribe(&mut self, subscribe: v1::Subscribe, activation: Activation) {
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
        if let Some(builtin) = builtin::find(&service) {
            return self.subscribe_builtin(request_id, builtin, key, new);
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
        if let Some(denied) = self.pinned_elsewhere(service, &provider.conn) {
            drop(registry);
            return self.respond(request_id, Err(denied));
        }
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

    /// A subscription to a service the broker provides: nothing to start, no provider to link
    /// to (it never goes away).
    fn subscribe_builtin(
        &mut self,
        request_id: u64,
        builtin: &Builtin,
        key: (Uuid, String),
        new: bool,
    ) {
        if !builtin.has_topic(&key.1) {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::NotFound,
                    format!("service {} has no topic {:?}", key.0, key.1),
                )),
            );
        }
        let info = builtin.info(key.0);
        if new {
            self.inner
                .registry
                .write()
                .services
                .entry(key.0)
                .or_default()
                .subscribers
                .entry(key.1.clone())
                .or_default()
                .push(Subscriber {
                    conn: Arc::clone(&self.conn),
                    dropped: Default::default(),
                });
            self.subscriptions.insert(key);
        }
        self.respond(request_id, Ok(Some(info)));
    }

    pub(super) fn unsubscribe(&mut self, unsubscribe: v1::Unsubscribe) {
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

    pub(super) fn remove_subscription(
        &self,
        registry: &mut Registry,
        (service, topic): &(Uuid, String),
    ) {
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
}
