//! Starting providers on demand, and stopping activated ones that sit idle.
//!
//! A request for a service nobody provides joins the service's activation (starting one if none
//! runs), and a small task waits for its outcome and hands the request back to the connection's
//! reader ([`Resumed`]), which answers or routes it as if it had just arrived. The connection keeps
//! reading meanwhile; everything about it still happens on its reader.

use std::sync::Arc;
use std::time::Duration;

use elastos_proto::v1::{self, client_frame};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::conn::{CloseReason, Conn};
use crate::registry::{Activation, Registry};
use crate::session::{error, Resumed};
use crate::{ActivationError, Activator, Inner};

/// How much longer than the activation timeout a waiting request waits for the activation's
/// outcome before it gives up on its own.
pub(crate) const RESUME_GRACE: Duration = Duration::from_secs(1);

/// Where an activation is.
#[derive(Clone, Debug)]
pub(crate) enum ActivationState {
    Pending,
    /// The service is registered now.
    Registered,
    /// It will not be registered by this activation: answer with this.
    Failed(v1::Error),
}

impl ActivationState {
    fn is_pending(&self) -> bool {
        matches!(self, ActivationState::Pending)
    }
}

/// Joins the activation of `service`, starting one if none runs. `None` when the broker has no
/// activator: nothing can provide the service.
pub(crate) fn join(
    inner: &Arc<Inner>,
    registry: &mut Registry,
    service: Uuid,
) -> Option<watch::Receiver<ActivationState>> {
    let activator = inner.activator.as_ref()?;
    let entry = registry.services.entry(service).or_default();
    if let Some(activation) = &entry.activation {
        return Some(activation.done.subscribe());
    }
    let id = inner
        .next_activation
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (done, waiting) = watch::channel(ActivationState::Pending);
    entry.activation = Some(Activation { id, done });
    tracing::debug!(%service, "activating a provider");
    tokio::spawn(activate(
        Arc::clone(inner),
        Arc::clone(activator),
        service,
        id,
        waiting.clone(),
    ));
    Some(waiting)
}

/// Marks the activation of `service`, if one runs, as done: it registered.
pub(crate) fn registered(registry: &mut Registry, service: Uuid) {
    if let Some(activation) = registry
        .services
        .get_mut(&service)
        .and_then(|entry| entry.activation.take())
    {
        activation.done.send_replace(ActivationState::Registered);
    }
}

async fn activate(
    inner: Arc<Inner>,
    activator: Arc<dyn Activator>,
    service: Uuid,
    id: u64,
    mut state: watch::Receiver<ActivationState>,
) {
    let timeout = inner.config.activation_timeout;
    let deadline = Instant::now() + timeout;
    let started =
        tokio::time::timeout_at(deadline, activator.activate(inner.broker(), service)).await;
    let failure = match started {
        Ok(Ok(())) => {
            let registration =
                tokio::time::timeout_at(deadline, state.wait_for(|state| !state.is_pending()))
                    .await;
            if registration.is_ok() {
                return;
            }
            error(
                v1::Status::Unavailable,
                format!(
                    "the provider of service {service} started but did not register it within \
                     {timeout:?}"
                ),
            )
        }
        Ok(Err(not_installed @ ActivationError::NotInstalled { .. })) => {
            error(v1::Status::NotFound, not_installed.to_string())
        }
        Ok(Err(failed)) => error(v1::Status::Unavailable, failed.to_string()),
        Err(_) => error(
            v1::Status::Unavailable,
            format!("the provider of service {service} did not start within {timeout:?}"),
        ),
    };
    // Debug, not warn: an app may ask for an uninstalled service in a loop, and the answer
    // (NOT_FOUND or UNAVAILABLE, with this reason) goes to it anyway.
    tracing::debug!(%service, reason = %failure.message, "activation failed");
    let mut registry = inner.registry.write();
    let ours = registry
        .services
        .get_mut(&service)
        .and_then(|entry| entry.activation.take_if(|activation| activation.id == id));
    if let Some(activation) = ours {
        activation
            .done
            .send_replace(ActivationState::Failed(failure));
    }
    registry.prune(service);
}

/// Waits (until `until` at most) for an activation to end, then hands `body` back to its
/// connection's reader with the outcome.
pub(crate) fn resume_when_done(
    mut state: watch::Receiver<ActivationState>,
    until: Instant,
    body: client_frame::Body,
    token: u64,
    resume: mpsc::UnboundedSender<Resumed>,
) {
    tokio::spawn(async move {
        let waited = tokio::time::timeout_at(until, state.wait_for(|state| !state.is_pending()))
            .await
            .map(|state| state.map(|state| state.clone()));
        let outcome = match waited {
            Ok(Ok(state)) => state,
            // The sender went away without an outcome; the activation task always gives one
            // before it lets go, so this is a broken invariant, not the caller's fault.
            Ok(Err(_)) => ActivationState::Failed(error(
                v1::Status::Internal,
                "the activation ended without an outcome",
            )),
            Err(_) => ActivationState::Failed(error(
                v1::Status::Unavailable,
                "timed out waiting for the provider to start",
            )),
        };
        // The reader is gone if this fails: nobody is left to answer.
        let _ = resume.send(Resumed {
            body,
            outcome,
            token,
        });
    });
}

/// Closes an activated connection once it has been idle for `idle_after`: no call in flight to
/// it, no subscriber to its services, and no call, reply, lookup or subscription touching it in
/// that time.
pub(crate) async fn watch_idle(inner: Arc<Inner>, conn: Arc<Conn>, idle_after: Duration) {
    let period = (idle_after / 4).max(Duration::from_millis(10));
    let idle_after_ms = u64::try_from(idle_after.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(period).await;
        if conn.is_closing() {
            return;
        }
        let idle_ms = inner.now_ms().saturating_sub(conn.last_active_ms());
        if idle_ms < idle_after_ms {
            continue;
        }
        // One lock at a time: a connection's calls are never held while taking the registry.
        let answering = !conn.calls.lock().incoming.is_empty();
        if answering || inner.registry.read().has_subscribers(conn.id) {
            continue;
        }
        conn.close(CloseReason::Idle {
            idle: Duration::from_millis(idle_ms),
        });
        return;
    }
}
