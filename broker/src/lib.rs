//! The elastos broker: the matchmaker between jailed apps. An app cannot open a socket or start a
//! process; over its one connection (fd 3 in the jail) it registers services by UUID, looks them
//! up, calls them and subscribes to their events, and the broker carries all of it, checking every
//! request against the identity and the manifest of the verified bundle the app was started from.
//!
//! This crate is the routing core, and a trust boundary: it reads every byte an app sends, and
//! needs nothing but the wire format (`elastos-proto`, docs/protocol.md) and tokio. It holds no
//! privilege and touches no file: launching bundles, the control socket, state paths and the
//! installed apps are the host's work (crate `elastos-host`), which attaches connections with the
//! identity of the verified bundle and starts providers through an [`Activator`]. The daemon,
//! with the RocksDB state, is the crate `elastos-broker-daemon` (binary `elastos-broker`).
//!
//! What the core does:
//! - **Identity from the caller of [`Broker::attach`]**, never from the app: the launcher passes
//!   the [`AppIdentity`] of the verified bundle. `welcome`, `incoming_call.caller` and
//!   `service.provider` carry it to apps as attested identities.
//! - **Permissions**: register only what `provides` lists; lookup, call, subscribe and watch only
//!   what `uses` lists; publish only on a service the connection registered. Denials are answered
//!   PERMISSION_DENIED (a forbidden publish closes the connection) and logged with `warn`, at
//!   most one line per action and 10 s per connection; more than 100 denials in 10 s close the
//!   connection (`denials`).
//! - **Routing**: calls get a broker-assigned id on the provider's connection, a deadline
//!   (DEADLINE_EXCEEDED to the caller and `cancel` to the provider when it passes), and are
//!   answered exactly once. A provider's callers share it fairly: calls beyond a window (per
//!   caller and per provider, the provider's sized by its delay) delivered and unanswered wait in
//!   one queue per caller and go out in deficit round robin by bytes, a caller with nothing
//!   queued first, so a caller flooding a provider delays and gets refused only itself. Events fan out to subscribers; watchers hear `service_available`
//!   and `provider_gone`, coalesced per service (the latest state replaces a notice not yet
//!   written, so no other app can fill a watcher's queue); linked clients hear `provider_gone`.
//! - **On-demand activation** through an [`Activator`]: concurrent requests for one service share
//!   one activation, bounded by [`BrokerConfig::activation_timeout`]; a provider that exits
//!   before it registers fails them at once, naming how it ended ([`Broker::instance_exited`]).
//!   Activated providers that sit idle are stopped after [`BrokerConfig::idle_stop_after`].
//! - **Hostile input closes that one connection**, with a logged reason and, when the socket
//!   still takes it, a `goodbye`: bad framing, an unknown body, a frame before `hello`, file
//!   descriptors passed with `SCM_RIGHTS` (received with `recvmsg` and closed at once), a
//!   forbidden publish, a peer that stops reading while its queue passes the hard bound, more
//!   than 100 denied requests in 10 s.
//!
//! Memory per connection is bounded: the frame decoder holds at most one partial frame plus one
//! read, the outbound queue [`BrokerConfig::queue_bytes`] (events beyond it are dropped and
//! counted in `event.dropped`, calls to the provider answered RESOURCE_EXHAUSTED) and twice that
//! plus one frame for replies and responses (beyond it the connection is closed), calls in flight
//! [`BrokerConfig::max_calls_in_flight`] outgoing and [`BrokerConfig::max_incoming_calls`]
//! incoming (of which [`BrokerConfig::delivery_window`] delivered, at most
//! [`BrokerConfig::caller_delivery_window`] per caller, the rest queued per caller, at most
//! [`BrokerConfig::caller_queue_bytes`] each), and at most [`MAX_SERVICES`] services, [`MAX_SUBSCRIPTIONS`] subscriptions,
//! [`MAX_WATCHES`] watches and [`MAX_PENDING_REQUESTS`] requests waiting on an activation.
//!
//! Performance: one reader and one writer task per connection. Frames to a connection are encoded
//! straight into its outbound buffer by whoever routes them, and the writer sends the whole buffer
//! in one `write`; payloads move from the decoded `Call` into the `IncomingCall` (and from a
//! provider's `Reply` into the caller's) without a copy. The registry is a `parking_lot` lock held
//! for a few map operations and never across an `await`.
//!
//! Not here: who may run what (the launcher), where installed bundles are (the [`Activator`]),
//! encryption (the socket is a private socketpair), and file descriptor passing (refused).

#![deny(unsafe_code)]

mod activation;
mod builtin;
mod conn;
mod denials;
mod fair;
mod metrics;
mod outbox;
mod registry;
mod session;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use uuid::Uuid;

use crate::conn::Conn;
pub use crate::metrics::{MetricsSnapshot, DENIAL_ACTIONS, LATENCY_BUCKETS_US};
use crate::registry::Registry;

/// Most services one connection may register at once (protocol limit; RESOURCE_EXHAUSTED).
pub const MAX_SERVICES: usize = 64;
/// Most topic subscriptions one connection may hold (RESOURCE_EXHAUSTED).
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Most service ids one connection may watch (RESOURCE_EXHAUSTED).
pub const MAX_WATCHES: usize = 256;
/// Most lookups and subscribes of one connection waiting on an activation at once
/// (RESOURCE_EXHAUSTED). Calls waiting on one count against the calls in flight instead.
pub const MAX_PENDING_REQUESTS: usize = 64;

/// Who a connection is: set by the launcher from the VERIFIED bundle, never from the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppIdentity {
    /// `app.id` of the manifest.
    pub app_id: Uuid,
    /// `app.name` of the manifest; for display and logs only.
    pub name: String,
    /// The Ed25519 public key whose signature on the bundle was verified.
    pub publisher: [u8; 32],
    /// `services.provides`: the service ids this app may register.
    pub provides: Vec<Uuid>,
    /// `services.uses`: the service ids this app may look up, call, subscribe to and watch.
    pub uses: Vec<Uuid>,
    /// The `uses` entries the manifest pins to a publisher: the app reaches a provider of such a
    /// service only if that provider's bundle was signed by this key (PERMISSION_DENIED
    /// otherwise).
    pub pins: Vec<(Uuid, [u8; 32])>,
}

/// A connection's number, unique for the life of a [`Broker`]. What `elastos ps` shows and
/// `elastos stop` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An activated app instance, numbered by the [`Activator`] that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How the app on a connection was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// By a user (`elastos run`). Never stopped for being idle.
    Launched {
        /// The app's process id as the launcher sees it, when known.
        pid: Option<u32>,
    },
    /// By an [`Activator`], on demand. Stopped after [`BrokerConfig::idle_stop_after`] idle, and
    /// [`Activator::stop`] is called for it when its connection ends.
    Activated {
        /// The activator's number for the instance.
        instance: InstanceId,
        /// The app's process id as the launcher sees it, when known.
        pid: Option<u32>,
    },
}

impl Origin {
    /// The app's process id, when known.
    pub fn pid(&self) -> Option<u32> {
        match *self {
            Origin::Launched { pid } | Origin::Activated { pid, .. } => pid,
        }
    }
}

/// Tunables of a [`Broker`]. [`Default`] gives the values the daemon uses.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// How long a lookup, subscribe or call waits for an activated provider to start and register
    /// before it is answered UNAVAILABLE. Default 10 s.
    pub activation_timeout: Duration,
    /// How long an activated provider may sit idle (no calls in flight, no subscribers, no call
    /// routed to it or lookup of it) before it is stopped; `None` never stops one. Default 60 s.
    pub idle_stop_after: Option<Duration>,
    /// Soft bound, in bytes, of a connection's outbound queue: beyond it, events to the connection
    /// are dropped (and counted in `event.dropped`) and calls to it answered RESOURCE_EXHAUSTED.
    /// Replies and responses may take it to twice this plus one frame; a connection that lets its
    /// queue grow further is not reading and is closed. Default 1 MiB.
    pub queue_bytes: usize,
    /// Most outgoing calls one connection may have unanswered (`limits.max_calls_in_flight`);
    /// one more is answered RESOURCE_EXHAUSTED. Default 256.
    pub max_calls_in_flight: u32,
    /// Most unanswered calls routed to one provider connection, delivered and queued, from all
    /// its callers together; one more is answered RESOURCE_EXHAUSTED to its caller. A memory
    /// bound of last resort: the per-caller bound below refuses a flooder long before, unless
    /// more than `max_incoming_calls / max_calls_in_flight` callers flood one provider at once.
    /// Default 4096.
    pub max_incoming_calls: usize,
    /// Most calls delivered to one provider connection and not yet answered (nor cancelled nor
    /// expired), from all its callers together; the others wait in one queue per caller and are
    /// delivered in deficit round robin by bytes as delivered ones are answered (see the `fair`
    /// module). The bound of a window sized by the provider's delay: a provider that queues
    /// calls inside it (one serving a call at a time gets 1-2) gets fewer. Large enough for a
    /// fast provider to stay pipelined with many callers. Default 256.
    pub delivery_window: usize,
    /// Most calls of one caller delivered to one provider connection and not yet answered (and
    /// never more than the provider's delay-sized window); its others wait in its queue. Keeps
    /// one caller from taking a fast provider's whole window. Default 32.
    pub caller_delivery_window: usize,
    /// Most bytes (payload, method name and 64 of overhead per call) one caller may have queued
    /// for one provider beyond the delivery window; a call beyond it is answered
    /// RESOURCE_EXHAUSTED to that caller alone. One call is always accepted into an empty queue,
    /// whatever its size. Default 1 MiB.
    pub caller_queue_bytes: usize,
    /// Longest call deadline (`limits.max_deadline_ms`); a call without a deadline or with a
    /// longer one gets this. Whole milliseconds, at least 1. Default 30 s.
    pub max_deadline: Duration,
    /// How long a closing connection's queue (its `goodbye` last) may take to flush before the
    /// socket is closed anyway. Default 1 s.
    pub close_flush_timeout: Duration,
    /// How long a new connection may take to send `hello` before it is closed. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            activation_timeout: Duration::from_secs(10),
            idle_stop_after: Some(Duration::from_secs(60)),
            queue_bytes: 1 << 20,
            max_calls_in_flight: 256,
            max_incoming_calls: 4096,
            delivery_window: 256,
            caller_delivery_window: 32,
            caller_queue_bytes: 1 << 20,
            max_deadline: Duration::from_secs(30),
            close_flush_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// A boxed, sendable future, as [`Activator::activate`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an [`Activator`] could not start a provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationError {
    /// No installed bundle provides the service. The request is answered NOT_FOUND.
    #[error("no installed bundle provides service {service}; hint: `elastos install` one")]
    NotInstalled {
        /// The service asked for.
        service: Uuid,
    },
    /// An installed bundle provides it but could not be started. The request is answered
    /// UNAVAILABLE with this message.
    #[error("could not start the provider of service {service}: {reason}")]
    Failed {
        /// The service asked for.
        service: Uuid,
        /// What went wrong, for people.
        reason: String,
    },
}

/// How an activated app's process ended, as its supervisor saw it; see [`Broker::instance_exited`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceExit {
    /// It exited with this code.
    Exited(i32),
    /// A signal of this number killed it.
    Signaled(i32),
}

impl fmt::Display for InstanceExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceExit::Exited(code) => write!(f, "exited with code {code}"),
            InstanceExit::Signaled(signal) => write!(f, "was killed by signal {signal}"),
        }
    }
}

/// Starts installed providers on demand.
pub trait Activator: Send + Sync + 'static {
    /// Launches the installed app providing `service` and attaches it to `broker` with
    /// [`Origin::Activated`]; resolves once it is attached (not yet registered), with the
    /// connection [`Broker::attach`] returned. The broker then waits for the registration, all
    /// within [`BrokerConfig::activation_timeout`]; the future is dropped when that passes.
    /// Should that connection end first (the app exited or crashed), the requests waiting are
    /// answered UNAVAILABLE at once, naming how the app ended when the activator reports it with
    /// [`Broker::instance_exited`]. Concurrent requests for one service share one call.
    fn activate(
        &self,
        broker: Broker,
        service: Uuid,
    ) -> BoxFuture<'static, Result<ConnectionId, ActivationError>>;

    /// Called once when the connection of an activated instance ends, whatever the reason (idle
    /// stop, [`Broker::disconnect`], a protocol violation, the app closing it): make sure the
    /// instance is gone (kill its jail if it still runs).
    fn stop(&self, instance: InstanceId);
}

/// One connected app, for `elastos ps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSnapshot {
    /// The connection.
    pub id: ConnectionId,
    /// `app.id` of the manifest.
    pub app_id: Uuid,
    /// `app.name` of the manifest.
    pub name: String,
    /// The verified publisher key.
    pub publisher: [u8; 32],
    /// How it was started (and its pid, when known).
    pub origin: Origin,
    /// When it was attached.
    pub since: SystemTime,
    /// The services it has registered now, ordered.
    pub services: Vec<Uuid>,
}

/// One service the broker knows a provider for, for `elastos services`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSnapshot {
    /// The service id.
    pub service: Uuid,
    /// Whether it is registered or being started.
    pub state: ServiceState,
}

/// The state of a service in a [`ServiceSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// A connected app provides it.
    Registered {
        /// The provider's connection.
        provider: ConnectionId,
        /// The provider's app id.
        app_id: Uuid,
        /// The provider's app name.
        name: String,
        /// The methods registered, in registration order.
        methods: Vec<String>,
        /// The topics registered, in registration order.
        topics: Vec<String>,
        /// Subscriptions to its topics.
        subscribers: usize,
    },
    /// An activation is under way and nobody has registered it yet.
    Activating,
}

/// The broker: cheap to clone (an `Arc` inside). Needs a tokio runtime with I/O and time enabled.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// What every connection task shares.
pub(crate) struct Inner {
    pub(crate) config: BrokerConfig,
    pub(crate) activator: Option<Arc<dyn Activator>>,
    pub(crate) registry: RwLock<Registry>,
    next_connection: AtomicU64,
    /// Broker-assigned call ids: one counter for all providers makes them unique per provider.
    pub(crate) next_call: AtomicU64,
    pub(crate) next_activation: AtomicU64,
    /// The last exits reported by [`Broker::instance_exited`], newest last, at most
    /// [`activation::KEPT_EXITS`]: an activation whose provider closed its connection before
    /// registering looks its exit up here, whichever of the two was noticed first.
    pub(crate) exits: parking_lot::Mutex<std::collections::VecDeque<(InstanceId, InstanceExit)>>,
    pub(crate) exit_reported: tokio::sync::Notify,
    /// Origin of the millisecond clock connections record their last activity on.
    pub(crate) epoch: Instant,
    pub(crate) metrics: metrics::Metrics,
}

impl Inner {
    pub(crate) fn broker(self: &Arc<Self>) -> Broker {
        Broker {
            inner: Arc::clone(self),
        }
    }

    /// Milliseconds since the broker was made, on the monotonic clock.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Broker {
    /// A broker with no connections. Without an `activator`, requests for a service nobody
    /// provides are answered NOT_FOUND.
    pub fn new(config: BrokerConfig, activator: Option<Arc<dyn Activator>>) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                config,
                activator,
                registry: RwLock::new(Registry::default()),
                next_connection: AtomicU64::new(1),
                next_call: AtomicU64::new(1),
                next_activation: AtomicU64::new(1),
                exits: Default::default(),
                exit_reported: tokio::sync::Notify::new(),
                epoch: Instant::now(),
                metrics: metrics::Metrics::default(),
            }),
        }
    }

    /// Serves one app connection: spawns its tasks on the current tokio runtime (so call it from
    /// within one) and returns at once. `identity` must come from the verified bundle. The
    /// connection lives until the app closes it, breaks the protocol, is stopped for being idle
    /// ([`Origin::Activated`] only) or is [`disconnect`](Self::disconnect)ed.
    pub fn attach(
        &self,
        stream: tokio::net::UnixStream,
        identity: AppIdentity,
        origin: Origin,
    ) -> ConnectionId {
        let id = ConnectionId(self.inner.next_connection.fetch_add(1, Ordering::Relaxed));
        self.inner.metrics.attached(identity.app_id, origin);
        let conn = Arc::new(Conn::new(&self.inner, id, identity, origin));
        self.inner
            .registry
            .write()
            .connections
            .insert(id, Arc::clone(&conn));
        conn::spawn(Arc::clone(&self.inner), conn, stream);
        id
    }

    /// The connected apps, ordered by connection id.
    pub fn apps(&self) -> Vec<AppSnapshot> {
        self.inner.registry.read().apps()
    }

    /// The services that have a provider or an activation under way, ordered by id.
    pub fn services(&self) -> Vec<ServiceSnapshot> {
        self.inner.registry.read().services()
    }

    /// Its counters since it was made: calls, latency, denials, activations, restarts.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Tells the broker how the process of an activated instance ended (its supervisor calls this
    /// when it has reaped it), so that requests waiting for it to register are answered with that.
    pub fn instance_exited(&self, instance: InstanceId, exit: InstanceExit) {
        activation::exited(&self.inner, instance, exit);
    }

    /// Closes a connection (for `elastos stop`): its app gets a `goodbye` (UNAVAILABLE), its
    /// linked clients `provider_gone` (STOPPED). Returns whether the connection existed.
    pub fn disconnect(&self, id: ConnectionId) -> bool {
        let conn = self.inner.registry.read().connections.get(&id).cloned();
        match conn {
            Some(conn) => {
                conn.close(conn::CloseReason::Stopped);
                true
            }
            None => false,
        }
    }
}
