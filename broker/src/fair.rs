//! Fair sharing of one provider between its callers: calls routed to a provider wait in one
//! queue per caller connection and are delivered, a few at a time, in deficit round robin by
//! bytes (Shreedhar and Varghese, 1995).
//!
//! Why: the provider's socket and its SDK read eagerly (every incoming call becomes a task), so
//! whatever the broker writes to a provider is in effect a FIFO shared by all its callers. With
//! one shared FIFO, an app keeping hundreds of calls in flight made a well-behaved caller wait
//! behind all of them (p50 from 0.76 ms to 159 ms against a provider spending 0.5 ms a call), and
//! with one shared bound a flood of large calls got other callers' calls refused. So the broker
//! keeps what it has *delivered and not yet had answered* per provider under a window
//! ([`BrokerConfig::delivery_window`](crate::BrokerConfig::delivery_window)) and holds the rest
//! here; each answer (or cancel, or passed deadline) of a delivered call frees a slot that goes
//! to the next caller in round-robin order. A flooder then only ever waits behind itself, and its
//! own queue's bound ([`BrokerConfig::caller_queue_bytes`](crate::BrokerConfig::caller_queue_bytes))
//! refuses only its own excess.
//!
//! The window is fixed, not adaptive: a delay-based window (grow while answers come near the
//! fastest seen, shrink on queueing delay) would fit each provider better, but it is a control
//! loop whose failure modes need measuring; a fixed window bounds a newcomer's wait to about
//! one window of the provider's work and keeps a fast provider pipelined.

use std::collections::{HashMap, VecDeque};

use crate::ConnectionId;

/// Bytes a caller's turn adds to its deficit. Small, so that a caller of many small calls gets
/// few of them per turn (a newcomer waits behind about this many bytes of each other caller's
/// calls), at the price of more turns to save up for a large call, which costs a few loop steps.
pub(crate) const QUANTUM: usize = 1024;

/// What one call costs in the deficit, besides its payload and method name: the frame's other
/// fields (ids, deadline, the caller's identity), roughly. Keeps empty calls from being free.
pub(crate) const CALL_OVERHEAD: usize = 64;

/// Calls waiting for a provider, one queue per caller, and how many were delivered.
pub(crate) struct Fair<T> {
    /// Calls delivered to the provider and not yet answered, cancelled or expired.
    pub(crate) delivered: usize,
    callers: HashMap<ConnectionId, Caller<T>>,
    /// Callers with calls queued, in round-robin order; the one being served first.
    turns: VecDeque<ConnectionId>,
}

struct Caller<T> {
    /// `(call id, cost, call)`, oldest first.
    calls: VecDeque<(u64, usize, T)>,
    /// Sum of the costs in `calls`.
    bytes: usize,
    /// Bytes this caller may still have delivered in its current turn.
    deficit: usize,
}

impl<T> Default for Fair<T> {
    fn default() -> Self {
        Self {
            delivered: 0,
            callers: HashMap::new(),
            turns: VecDeque::new(),
        }
    }
}

impl<T> Fair<T> {
    /// Bytes `caller` has queued.
    pub(crate) fn queued_bytes(&self, caller: ConnectionId) -> usize {
        self.callers.get(&caller).map_or(0, |queue| queue.bytes)
    }

    /// Queues `call` of `caller` last in its queue.
    pub(crate) fn push(&mut self, caller: ConnectionId, id: u64, cost: usize, call: T) {
        let queue = self.callers.entry(caller).or_insert_with(|| {
            self.turns.push_back(caller);
            Caller {
                calls: VecDeque::new(),
                bytes: 0,
                deficit: 0,
            }
        });
        queue.calls.push_back((id, cost, call));
        queue.bytes += cost;
    }

    /// Removes queued call `id` of `caller` (cancelled, expired, its caller gone).
    pub(crate) fn remove(&mut self, caller: ConnectionId, id: u64) -> Option<T> {
        let queue = self.callers.get_mut(&caller)?;
        let at = queue.calls.iter().position(|(queued, ..)| *queued == id)?;
        let (_, cost, call) = queue.calls.remove(at)?;
        queue.bytes -= cost;
        if queue.calls.is_empty() {
            self.callers.remove(&caller);
            self.turns.retain(|turn| *turn != caller);
        }
        Some(call)
    }

    /// The call to deliver next, by deficit round robin: the caller whose turn it is gets its
    /// head call if its deficit covers it, else [`QUANTUM`] more deficit and the end of the line.
    /// Only moves turns; [`Fair::pop`] takes the call.
    pub(crate) fn peek(&mut self) -> Option<(u64, &mut T)> {
        let first = loop {
            let first = *self.turns.front()?;
            let queue = self.callers.get_mut(&first)?;
            let (_, cost, _) = queue.calls.front()?;
            if queue.deficit >= *cost {
                break first;
            }
            queue.deficit += QUANTUM;
            self.turns.rotate_left(1);
        };
        let (id, _, call) = self.callers.get_mut(&first)?.calls.front_mut()?;
        Some((*id, call))
    }

    /// Takes the call [`Fair::peek`] showed and charges its caller for it. A caller whose queue
    /// empties leaves the line and loses its deficit (a caller cannot save up while idle).
    pub(crate) fn pop(&mut self) -> Option<(ConnectionId, T)> {
        let first = *self.turns.front()?;
        let queue = self.callers.get_mut(&first)?;
        let (_, cost, call) = queue.calls.pop_front()?;
        queue.bytes -= cost;
        queue.deficit = queue.deficit.saturating_sub(cost);
        if queue.calls.is_empty() {
            self.callers.remove(&first);
            self.turns.pop_front();
        }
        Some((first, call))
    }

    /// Empties every queue (the provider is gone).
    pub(crate) fn clear(&mut self) {
        self.callers.clear();
        self.turns.clear();
        self.delivered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(fair: &mut Fair<&'static str>) -> Vec<&'static str> {
        let mut order = Vec::new();
        while fair.peek().is_some() {
            order.push(fair.pop().expect("peeked").1);
        }
        order
    }

    #[test]
    fn a_newcomer_is_served_before_the_backlog_of_a_caller_of_small_calls() {
        let mut fair = Fair::default();
        let (flooder, steady) = (ConnectionId(1), ConnectionId(2));
        for _ in 0..100 {
            fair.push(flooder, 1, 100, "flood");
        }
        fair.push(steady, 2, 100, "steady");
        let order = order(&mut fair);
        let at = order.iter().position(|call| *call == "steady");
        // One quantum of the flooder's calls, then the newcomer.
        assert!(at.is_some_and(|at| at <= QUANTUM / 100 + 1), "{at:?}");
        assert_eq!(order.len(), 101);
    }

    #[test]
    fn large_and_small_callers_share_by_bytes() {
        let mut fair = Fair::default();
        let (large, small) = (ConnectionId(1), ConnectionId(2));
        for _ in 0..8 {
            fair.push(large, 1, 4 * QUANTUM, "large");
        }
        for _ in 0..64 {
            fair.push(small, 2, QUANTUM / 2, "small");
        }
        // While both have calls queued, each gets about the same bytes: 8 small per large.
        let order = order(&mut fair);
        let larges_in_first_half = order[..36].iter().filter(|c| **c == "large").count();
        assert!((3..=5).contains(&larges_in_first_half), "{order:?}");
    }

    #[test]
    fn removing_a_callers_last_call_takes_it_out_of_the_line() {
        let mut fair = Fair::default();
        fair.push(ConnectionId(1), 7, 10, "a");
        fair.push(ConnectionId(2), 8, 10, "b");
        assert_eq!(fair.queued_bytes(ConnectionId(1)), 10);
        assert_eq!(fair.remove(ConnectionId(1), 7), Some("a"));
        assert_eq!(fair.remove(ConnectionId(1), 7), None);
        assert_eq!(fair.queued_bytes(ConnectionId(1)), 0);
        assert_eq!(order(&mut fair), ["b"]);
        assert!(fair.peek().is_none());
        assert!(fair.pop().is_none());
    }
}
