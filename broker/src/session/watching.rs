//! Watching services: `service_available` when one is registered, `provider_gone` when it goes,
//! coalesced per service (the latest state replaces a notice not yet written).

use super::*;

impl Session {
    pub(super) fn watch(&mut self, request_id: u64, service: Uuid) {
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
        entry.announce_to(service, &self.conn);
    }

    pub(super) fn unwatch(&mut self, request_id: u64, service: Uuid) {
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
        // Under the registry lock, which every notice is given under: none comes after this.
        self.conn.outbox.forget_notice(service);
        registry.prune(service);
        drop(registry);
        self.respond(request_id, Ok(None));
    }
}
