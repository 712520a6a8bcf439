//! Providing: registering and unregistering services.

use super::*;

impl Session {
    pub(super) fn register(&mut self, register: v1::Register) {
        let service = service_id(&register.service_id);
        let request_id = register.request_id;
        if builtin::find(&service).is_some() {
            return self.respond(
                request_id,
                Err(error(
                    v1::Status::PermissionDenied,
                    format!("service {service} is built into the broker; no app may register it"),
                )),
            );
        }
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
                entry.provider = Some(Provider::new(
                    Arc::clone(&self.conn),
                    register.methods,
                    register.topics,
                ));
                if !ours {
                    self.registered.push(service);
                }
                self.respond(request_id, Ok(None));
                entry.announce(service);
                activation::registered(&mut registry, service);
                tracing::debug!(connection = %self.conn.id, %service, "service registered");
            }
        }
    }

    pub(super) fn unregister(&mut self, request_id: u64, service: Uuid) {
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
                .map(|entry| entry.remove_provider(service, v1::GoneReason::Unregistered))
                .unwrap_or_default();
            registry.prune(service);
            told
        };
        self.respond(request_id, Ok(None));
        for conn in told {
            send_gone(&conn, service, v1::GoneReason::Unregistered);
        }
    }
}
