//! Who is connected and who provides, subscribes to and watches which service. One map behind one
//! `RwLock` in [`Inner`](crate::Inner): calls only read it, and every writer holds it for a few
//! map operations (and the frame encodes they trigger), never across an `await`.
//!
//! Lock order: the registry before a connection's outbox; never the registry while holding a
//! connection's `calls`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use elastos_proto::v1::{self, broker_frame};
use tokio::sync::watch;
use uuid::Uuid;

use crate::activation::ActivationState;
use crate::conn::Conn;
use crate::{AppSnapshot, ConnectionId, ServiceSnapshot, ServiceState};

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) connections: HashMap<ConnectionId, Arc<Conn>>,
    /// Entries exist while a service has a provider, subscribers, watchers or an activation;
    /// [`Registry::prune`] drops the others.
    pub(crate) services: HashMap<Uuid, Service>,
}

#[derive(Default)]
pub(crate) struct Service {
    pub(crate) provider: Option<Provider>,
    /// By topic. Subscriptions belong to the service and outlive its providers.
    pub(crate) subscribers: HashMap<String, Vec<Subscriber>>,
    pub(crate) watchers: Vec<Arc<Conn>>,
    pub(crate) activation: Option<Activation>,
}

pub(crate) struct Provider {
    pub(crate) conn: Arc<Conn>,
    methods: Vec<String>,
    method_set: HashSet<String>,
    topics: Vec<String>,
    topic_set: HashSet<String>,
    /// Connections told once when this provider goes (they looked it up or subscribed).
    linked: Vec<Arc<Conn>>,
}

pub(crate) struct Subscriber {
    pub(crate) conn: Arc<Conn>,
    /// Events dropped for this subscription since the last one delivered.
    pub(crate) dropped: AtomicU64,
}

impl Subscriber {
    /// Queues `frame` (an `Event`) for this subscriber, with its count of events dropped since
    /// the last one it got; a full queue drops it and counts it. Returns whether it was queued.
    pub(crate) fn deliver(&self, frame: &mut v1::BrokerFrame) -> bool {
        let dropped = self.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(broker_frame::Body::Event(event)) = &mut frame.body {
            event.dropped = dropped;
        }
        match self.conn.outbox.offer(frame) {
            Ok(()) => {
                self.dropped
                    .fetch_sub(dropped, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }
}

/// An activation under way; requests for the service wait on `done`.
pub(crate) struct Activation {
    pub(crate) id: u64,
    pub(crate) done: watch::Sender<ActivationState>,
}

impl Provider {
    pub(crate) fn new(conn: Arc<Conn>, methods: Vec<String>, topics: Vec<String>) -> Self {
        Self {
            conn,
            method_set: methods.iter().cloned().collect(),
            methods,
            topic_set: topics.iter().cloned().collect(),
            topics,
            linked: Vec::new(),
        }
    }

    /// Replaces the method and topic lists (a repeated `Register` on the same connection).
    pub(crate) fn redeclare(&mut self, methods: Vec<String>, topics: Vec<String>) {
        let linked = std::mem::take(&mut self.linked);
        *self = Self {
            linked,
            ..Self::new(Arc::clone(&self.conn), methods, topics)
        };
    }

    pub(crate) fn has_method(&self, method: &str) -> bool {
        self.method_set.contains(method)
    }

    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        self.topic_set.contains(topic)
    }

    pub(crate) fn link(&mut self, conn: &Arc<Conn>) {
        if !self.linked.iter().any(|linked| linked.id == conn.id) {
            self.linked.push(Arc::clone(conn));
        }
    }

    pub(crate) fn unlink(&mut self, id: ConnectionId) {
        self.linked.retain(|linked| linked.id != id);
    }

    pub(crate) fn info(&self, service: Uuid) -> v1::ServiceInfo {
        v1::ServiceInfo {
            service_id: service.as_bytes().to_vec(),
            methods: self.methods.clone(),
            topics: self.topics.clone(),
            provider: Some(self.conn.peer.clone()),
        }
    }
}

impl Service {
    /// Removes the provider and gives the service's watchers a `provider_gone` notice (coalesced
    /// per service, see [`Outbox::notice`](crate::outbox::Outbox::notice)); returns the linked
    /// clients that do not watch the service, to be sent `provider_gone` themselves.
    pub(crate) fn remove_provider(
        &mut self,
        service: Uuid,
        reason: v1::GoneReason,
    ) -> Vec<Arc<Conn>> {
        let Some(provider) = self.provider.take() else {
            return Vec::new();
        };
        for watcher in &self.watchers {
            watcher
                .outbox
                .notice(service, provider_gone(service, reason));
        }
        let mut linked = provider.linked;
        linked.retain(|conn| !self.is_watched_by(conn.id));
        linked
    }

    /// Gives every watcher a `service_available` notice about the provider (coalesced per
    /// service).
    pub(crate) fn announce(&self, service: Uuid) {
        for watcher in &self.watchers {
            self.announce_to(service, watcher);
        }
    }

    /// Gives `watcher` a `service_available` notice about the provider, if there is one.
    pub(crate) fn announce_to(&self, service: Uuid, watcher: &Conn) {
        if let Some(provider) = &self.provider {
            watcher.outbox.notice(
                service,
                broker_frame::Body::ServiceAvailable(v1::ServiceAvailable {
                    service: Some(provider.info(service)),
                }),
            );
        }
    }

    pub(crate) fn is_watched_by(&self, conn: ConnectionId) -> bool {
        self.watchers.iter().any(|watcher| watcher.id == conn)
    }

    fn subscriptions(&self) -> usize {
        self.subscribers.values().map(Vec::len).sum()
    }
}

/// A `provider_gone` about `service`.
pub(crate) fn provider_gone(service: Uuid, reason: v1::GoneReason) -> broker_frame::Body {
    broker_frame::Body::ProviderGone(v1::ProviderGone {
        service_id: service.as_bytes().to_vec(),
        reason: reason as i32,
    })
}

impl Registry {
    /// Drops the entry of `service` if nothing refers to it any more.
    pub(crate) fn prune(&mut self, service: Uuid) {
        let unused = self.services.get(&service).is_some_and(|entry| {
            entry.provider.is_none()
                && entry.subscribers.is_empty()
                && entry.watchers.is_empty()
                && entry.activation.is_none()
        });
        if unused {
            self.services.remove(&service);
        }
    }

    /// Whether anyone subscribes to a service `provider` provides.
    pub(crate) fn has_subscribers(&self, provider: ConnectionId) -> bool {
        self.services.values().any(|entry| {
            entry
                .provider
                .as_ref()
                .is_some_and(|registered| registered.conn.id == provider)
                && entry.subscriptions() > 0
        })
    }

    pub(crate) fn apps(&self) -> Vec<AppSnapshot> {
        let mut provided: HashMap<ConnectionId, Vec<Uuid>> = HashMap::new();
        for (service, entry) in &self.services {
            if let Some(provider) = &entry.provider {
                provided.entry(provider.conn.id).or_default().push(*service);
            }
        }
        let mut apps: Vec<AppSnapshot> = self
            .connections
            .values()
            .map(|conn| {
                let mut services = provided.remove(&conn.id).unwrap_or_default();
                services.sort_unstable();
                AppSnapshot {
                    id: conn.id,
                    app_id: conn.identity.app_id,
                    name: conn.identity.name.clone(),
                    publisher: conn.identity.publisher,
                    origin: conn.origin,
                    since: conn.since,
                    services,
                }
            })
            .collect();
        apps.sort_unstable_by_key(|app| app.id);
        apps
    }

    pub(crate) fn services(&self) -> Vec<ServiceSnapshot> {
        let known: BTreeMap<Uuid, ServiceState> = self
            .services
            .iter()
            .filter_map(|(service, entry)| {
                let state = match (&entry.provider, &entry.activation) {
                    (Some(provider), _) => ServiceState::Registered {
                        provider: provider.conn.id,
                        app_id: provider.conn.identity.app_id,
                        name: provider.conn.identity.name.clone(),
                        methods: provider.methods.clone(),
                        topics: provider.topics.clone(),
                        subscribers: entry.subscriptions(),
                    },
                    (None, Some(_)) => ServiceState::Activating,
                    (None, None) => return None,
                };
                Some((*service, state))
            })
            .collect();
        known
            .into_iter()
            .map(|(service, state)| ServiceSnapshot { service, state })
            .collect()
    }
}
