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
use crate::{ActivationError, Activator, ConnectionId, Inner, InstanceExit, InstanceId, Origin};

/// How much longer than the activation timeout a waiting request waits for the activation's
/// outcome before it gives up on its own.
pub(crate) const RESUME_GRACE: Duration = Duration::from_secs(1);

/// How long an activation whose provider closed its connection before registering waits for the
/// activator to report how the process ended ([`exited`]). The socket closes when the process
/// dies and the supervisor reaps it at about the same moment; either may be noticed first.
const EXIT_REPORT_GRACE: Duration = Duration::from_millis(250);

/// Exits kept for activations to find ([`Inner::exits`]): more than activations can be
/// starting at once in any realistic case; an exit pushed out only costs the message its code.
pub(crate) const KEPT_EXITS: usize = 64;

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
    inner.metrics.activation();
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
        Ok(Ok(conn)) => match registration(&inner, service, &mut state, conn, deadline).await {
            None => return,
            Some(failure) => failure,
        },
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
    inner.metrics.activation_failed();
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

/// Waits until the activated provider on connection `conn` registers `service` (`None`), or until
/// that connection ends first or `deadline` passes: then the failure to answer with.
async fn registration(
    inner: &Inner,
    service: Uuid,
    state: &mut watch::Receiver<ActivationState>,
    conn: ConnectionId,
    deadline: Instant,
) -> Option<v1::Error> {
    let conn = inner.registry.read().connections.get(&conn).cloned();
    // Gone from the registry already: it ended before we got here.
    let mut ended = conn.as_ref().map(|conn| conn.ended.subscribe());
    let instance = conn.as_ref().and_then(|conn| match conn.origin {
        Origin::Activated { instance, .. } => Some(instance),
        Origin::Launched { .. } => None,
    });
    tokio::select! {
        // A registration that came before the end wins: the reader handles the app's frames
        // before it sees the socket close, and only then marks the connection ended.
        biased;
        registered = tokio::time::timeout_at(deadline, state.wait_for(|state| !state.is_pending())) => {
            return match registered {
                Ok(_) => None,
                Err(_) => Some(error(
                    v1::Status::Unavailable,
                    format!(
                        "the provider of service {service} started but did not register it \
                         within {:?}",
                        inner.config.activation_timeout
                    ),
                )),
            };
        }
        _ = async {
            if let Some(ended) = &mut ended {
                // An error means the connection is gone: ended all the same.
                let _ = ended.wait_for(|ended| *ended).await;
            }
        } => {}
    }
    if !state.borrow().is_pending() {
        return None;
    }
    let how = match instance {
        Some(instance) => exit_of(inner, instance).await,
        None => None,
    };
    let how = how.map_or_else(
        || "closed its connection".to_owned(),
        |exit| exit.to_string(),
    );
    Some(error(
        v1::Status::Unavailable,
        format!("the provider of service {service} {how} before it registered the service"),
    ))
}

/// How `instance` ended, once its activator reports it; `None` if it does not within
/// [`EXIT_REPORT_GRACE`].
async fn exit_of(inner: &Inner, instance: InstanceId) -> Option<InstanceExit> {
    let find = || {
        inner
            .exits
            .lock()
            .iter()
            .rev()
            .find(|(id, _)| *id == instance)
            .map(|&(_, exit)| exit)
    };
    let until = Instant::now() + EXIT_REPORT_GRACE;
    loop {
        let reported = inner.exit_reported.notified();
        let mut reported = std::pin::pin!(reported);
        // Registered before looking, so a report between the look and the wait is not missed.
        reported.as_mut().enable();
        if let Some(exit) = find() {
            return Some(exit);
        }
        if tokio::time::timeout_at(until, reported).await.is_err() {
            return None;
        }
    }
}

/// Records how an activated instance ended ([`Broker::instance_exited`](crate::Broker)).
pub(crate) fn exited(inner: &Inner, instance: InstanceId, exit: InstanceExit) {
    {
        let mut exits = inner.exits.lock();
        if exits.len() >= KEPT_EXITS {
            exits.pop_front();
        }
        exits.push_back((instance, exit));
    }
    inner.exit_reported.notify_waiters();
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
