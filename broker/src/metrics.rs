//! Counters of what the broker core does, for the daemon's Prometheus metrics: calls and their
//! latency, denials, activations, connections and restarts. Each is bumped where the event
//! happens (a relaxed atomic add: nothing else is synchronised on them), and
//! [`Broker::metrics`](crate::Broker::metrics) reads them all.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::Origin;

/// Upper bounds of the call latency histogram's buckets, in microseconds (the last bucket,
/// `+Inf`, is implied). From a fast provider on an idle host (~25 µs) to the longest deadline.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000, 5_000_000, 30_000_000,
];

/// The actions a denial is counted under: the request the manifest did not allow, or `pinned`
/// (the app's manifest pins the service to another publisher than its provider's).
pub const DENIAL_ACTIONS: [&str; 7] = [
    "register",
    "lookup",
    "call",
    "subscribe",
    "watch",
    "publish",
    "pinned",
];

/// The live counters, in [`Inner`](crate::Inner).
#[derive(Default)]
pub(crate) struct Metrics {
    calls: AtomicU64,
    answered: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    denials: [AtomicU64; DENIAL_ACTIONS.len()],
    activations: AtomicU64,
    activation_failures: AtomicU64,
    connections: AtomicU64,
    restarts: AtomicU64,
    /// App ids ever attached as activated: a second activation of one is a restart. Bounded by
    /// the installed apps, which are the only ones an activator starts.
    activated_apps: Mutex<HashSet<Uuid>>,
}

impl Metrics {
    /// A call frame arrived (whatever becomes of it).
    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A routed call's reply reached its caller's queue, `took` after the call was routed.
    pub(crate) fn answered(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        // Only the first bucket that holds it: the snapshot makes them cumulative.
        if let Some(bucket) = LATENCY_BUCKETS_US.iter().position(|&bound| us <= bound) {
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request was denied; `action` is one of [`DENIAL_ACTIONS`].
    pub(crate) fn denied(&self, action: &str) {
        if let Some(index) = DENIAL_ACTIONS.iter().position(|&a| a == action) {
            self.denials[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An activation of a provider began.
    pub(crate) fn activation(&self) {
        self.activations.fetch_add(1, Ordering::Relaxed);
    }

    /// An activation ended without its service registered.
    pub(crate) fn activation_failed(&self) {
        self.activation_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was attached.
    pub(crate) fn attached(&self, app_id: Uuid, origin: Origin) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        if matches!(origin, Origin::Activated { .. }) && !self.activated_apps.lock().insert(app_id)
        {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut cumulative = 0;
        MetricsSnapshot {
            calls: load(&self.calls),
            answered: load(&self.answered),
            latency_sum: Duration::from_micros(load(&self.latency_sum_us)),
            latency_buckets: std::array::from_fn(|i| {
                cumulative += load(&self.latency_buckets[i]);
                (LATENCY_BUCKETS_US[i], cumulative)
            }),
            denials: std::array::from_fn(|i| (DENIAL_ACTIONS[i], load(&self.denials[i]))),
            activations: load(&self.activations),
            activation_failures: load(&self.activation_failures),
            connections: load(&self.connections),
            restarts: load(&self.restarts),
        }
    }
}

/// The broker's counters at one moment, since it was made ([`Broker::metrics`](crate::Broker)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Call frames received from apps (denied and refused ones included).
    pub calls: u64,
    /// Calls routed to a provider whose reply reached the caller.
    pub answered: u64,
    /// Sum of the latencies of the `answered` calls: from routing the call to queueing the
    /// provider's reply to the caller.
    pub latency_sum: Duration,
    /// The latency histogram: (upper bound in microseconds, answered calls that took at most
    /// that), cumulative; calls above the last bound count only in `answered`.
    pub latency_buckets: [(u64, u64); LATENCY_BUCKETS_US.len()],
    /// Denied requests by action ([`DENIAL_ACTIONS`]).
    pub denials: [(&'static str, u64); DENIAL_ACTIONS.len()],
    /// Activations of providers begun (concurrent requests for one service share one).
    pub activations: u64,
    /// Activations that ended without the service registered (not installed, failed to start,
    /// timed out, exited first).
    pub activation_failures: u64,
    /// Connections attached, of every origin.
    pub connections: u64,
    /// Activated connections of an app that had been activated before by this broker: a
    /// provider started again after its earlier instance ended (idle stop, crash, `elastos
    /// stop`).
    pub restarts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_cumulative_buckets_and_restarts_count_second_activations() {
        let metrics = Metrics::default();
        metrics.answered(Duration::from_micros(30));
        metrics.answered(Duration::from_millis(2));
        metrics.answered(Duration::from_secs(60));
        metrics.denied("call");
        metrics.denied("not an action");
        let app = Uuid::from_u128(1);
        let activated = Origin::Activated {
            instance: crate::InstanceId(1),
            pid: None,
        };
        metrics.attached(app, activated);
        metrics.attached(app, Origin::Launched { pid: None });
        metrics.attached(app, activated);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.answered, 3);
        assert_eq!(snapshot.latency_buckets[0], (25, 0));
        assert_eq!(snapshot.latency_buckets[1], (50, 1));
        assert_eq!(snapshot.latency_buckets[6], (2_500, 2));
        // 60 s is beyond the last bound: only in the count.
        assert_eq!(snapshot.latency_buckets.last(), Some(&(30_000_000, 2)));
        assert_eq!(
            snapshot.latency_sum,
            Duration::from_micros(30 + 2_000 + 60_000_000)
        );
        assert_eq!(snapshot.denials[2], ("call", 1));
        assert_eq!(snapshot.denials.iter().map(|(_, n)| n).sum::<u64>(), 1);
        assert_eq!((snapshot.connections, snapshot.restarts), (3, 1));
    }
}
