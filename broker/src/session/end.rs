//! The end of a connection: everything of it leaves the broker.

use super::calls::cancel_incoming;
use super::*;
use crate::ConnectionId;

impl Session {
    /// Removes everything of this connection from the broker: its services (linked clients,
    /// watchers and callers with calls in flight get `provider_gone` with `reason`, those calls
    /// UNAVAILABLE), subscriptions, watches and links, and cancels its own calls towards their
    /// providers.
    pub(crate) fn end(&mut self, reason: v1::GoneReason) {
        let id = self.conn.id;
        let mut told: Vec<(Uuid, Arc<Conn>)> = Vec::new();
        // Watchers had their notice from `remove_provider`.
        let mut noticed: HashSet<(Uuid, ConnectionId)> = HashSet::new();
        {
            let mut registry = self.inner.registry.write();
            registry.connections.remove(&id);
            for service in std::mem::take(&mut self.registered) {
                if let Some(entry) = registry.services.get_mut(&service) {
                    noticed.extend(entry.watchers.iter().map(|watcher| (service, watcher.id)));
                    told.extend(
                        entry
                            .remove_provider(service, reason)
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
            // Queued calls are in `incoming` too, and are answered UNAVAILABLE with the rest.
            calls.queued.clear();
            (
                std::mem::take(&mut calls.outgoing),
                std::mem::take(&mut calls.incoming),
            )
        };
        let mut routed: Vec<(u64, Arc<Conn>)> = outgoing
            .into_values()
            .filter_map(|outgoing| match outgoing.route {
                Route::Routed {
                    provider,
                    broker_call_id,
                } => Some((broker_call_id, provider)),
                Route::Activating { .. } => None,
            })
            .collect();
        // Newest first: a caller's calls to one provider go out in the order they came, so its
        // queued calls leave before a delivered one frees a slot that one of them would take.
        routed.sort_unstable_by_key(|(broker_call_id, _)| std::cmp::Reverse(*broker_call_id));
        for (broker_call_id, provider) in routed {
            cancel_incoming(&provider, broker_call_id, &self.inner.config);
        }
        for (broker_call_id, incoming) in incoming {
            let caller = incoming.caller;
            if caller
                .calls
                .lock()
                .take_routed(incoming.caller_call_id, broker_call_id)
                .is_some()
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
            if conn.id != id && !noticed.contains(&(service, conn.id)) {
                send_gone(&conn, service, reason);
            }
        }
    }
}
