//! Services the broker provides itself. Their ids are fixed (`elastos_proto::cloud`); an app
//! uses one like any service (listed in `services.uses`, then `lookup` and `subscribe`), but no
//! app can register one, nothing is started for it, and its events go to one app only: the host
//! ([`Broker::notify_app`]) names the app an event is about, and only that app's connections
//! that subscribed receive it. Today there is one: the cloud disk's `Changes` (docs/cloud.md).

use elastos_proto::cloud::{CHANGES_TOPIC, CLOUD_SYNC_SERVICE};
use elastos_proto::v1::{self, broker_frame, BrokerFrame};
use uuid::Uuid;

use crate::Broker;

/// A service whose provider is the broker.
pub(crate) struct Builtin {
    /// Its topics; it has no methods.
    pub(crate) topics: &'static [&'static str],
}

/// The cloud disk's service: what a sync changed in the app's own home.
const CLOUD_SYNC: Builtin = Builtin {
    topics: &[CHANGES_TOPIC],
};

/// The built-in service with this id, if it is one.
pub(crate) fn find(service: &Uuid) -> Option<&'static Builtin> {
    (*service.as_bytes() == CLOUD_SYNC_SERVICE).then_some(&CLOUD_SYNC)
}

impl Builtin {
    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains(&topic)
    }

    /// What `lookup` and `subscribe` answer: no methods, its topics, and the broker as provider
    /// (app id all zeros, name `elastos-broker`, publisher 32 zero bytes: no app has them).
    pub(crate) fn info(&self, service: Uuid) -> v1::ServiceInfo {
        v1::ServiceInfo {
            service_id: service.as_bytes().to_vec(),
            methods: Vec::new(),
            topics: self.topics.iter().map(|t| (*t).to_owned()).collect(),
            provider: Some(v1::PeerIdentity {
                app_id: vec![0; 16],
                app_name: "elastos-broker".into(),
                publisher: vec![0; 32],
            }),
        }
    }
}

impl Broker {
    /// Publishes `payload` on `topic` of the built-in `service` to the connections of the app
    /// `app_id` signed by `publisher` that subscribed to it, and to no other connection. Returns
    /// how many connections it was queued for (an event a full queue drops is counted in that
    /// subscriber's next `event.dropped`, as for any event). `service` must be a built-in one.
    pub fn notify_app(
        &self,
        app_id: Uuid,
        publisher: [u8; 32],
        service: Uuid,
        topic: &str,
        payload: Vec<u8>,
    ) -> usize {
        debug_assert!(find(&service).is_some(), "{service} is no built-in service");
        let registry = self.inner.registry.read();
        let Some(subscribers) = registry
            .services
            .get(&service)
            .and_then(|entry| entry.subscribers.get(topic))
        else {
            return 0;
        };
        let mut frame = BrokerFrame {
            body: Some(broker_frame::Body::Event(v1::Event {
                service_id: service.as_bytes().to_vec(),
                topic: topic.to_owned(),
                payload,
                dropped: 0,
            })),
        };
        subscribers
            .iter()
            .filter(|s| s.conn.identity.app_id == app_id && s.conn.identity.publisher == publisher)
            .filter(|s| s.deliver(&mut frame))
            .count()
    }
}
