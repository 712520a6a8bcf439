//! Fair sharing of one provider between its callers: calls routed to a provider wait in one
//! queue per caller connection and are delivered, a few at a time, in deficit round robin by
//! bytes (Shreedhar and Varghese, 1995).
//!
//! Why: the provider's socket and its SDK read eagerly (every incoming call becomes a task), so
//! whatever the broker writes to a provider is in effect a FIFO shared by all its callers. With
//! one shared FIFO, an app keeping hundreds of calls in flight made a well-behaved caller wait
//! behind all of them (p50 from 0.76 ms to 159 ms against a provider spending 0.5 ms a call), and
//! with one shared bound a flood of large calls got other callers' calls refused. So the broker
//! keeps what it has *delivered and not yet had answered* under two windows, one per caller
//! ([`BrokerConfig::caller_delivery_window`](crate::BrokerConfig::caller_delivery_window)) and one
//! per provider ([`BrokerConfig::delivery_window`](crate::BrokerConfig::delivery_window)), and
//! holds the rest here; each answer (or cancel, or passed deadline) of a delivered call frees a
//! slot that goes to the next caller under its own window, in round-robin order. The caller's
//! window bounds what one caller can put ahead of a newcomer (the newcomer's call goes out at
//! once while the provider's window has room); the provider's window, larger, bounds what all
//! callers together have delivered, and beyond it the round robin decides. A flooder then only ever waits behind itself, and its
//! own queue's bound ([`BrokerConfig::caller_queue_bytes`](crate::BrokerConfig::caller_queue_bytes))
//! refuses only its own excess.
//!
//! The windows are fixed, not adaptive: a delay-based window (grow while answers come near the
//! fastest seen, shrink on queueing delay) would fit each provider better, but it is a control
//! loop whose failure modes need measuring. Fixed windows bound a newcomer's wait behind one
//! flooder to about one caller window of the provider's work, and keep a fast provider as
//! pipelined as before (a provider window of 32 alone cut the benchmark's 4 clients x 32 in
//! flight to about half).

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
    delivered: usize,
    /// The same, per caller; callers with none are absent.
    delivered_by: HashMap<ConnectionId, usize>,
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
            delivered_by: HashMap::new(),
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

    /// Calls delivered and not yet answered.
    pub(crate) fn delivered(&self) -> usize {
        self.delivered
    }

    /// Counts a call of `caller` as delivered.
    pub(crate) fn deliver(&mut self, caller: ConnectionId) {
        self.delivered += 1;
        *self.delivered_by.entry(caller).or_default() += 1;
    }

    /// Counts a delivered call of `caller` as answered (or cancelled, or expired).
    pub(crate) fn answered(&mut self, caller: ConnectionId) {
        self.delivered = self.delivered.saturating_sub(1);
        if let Some(count) = self.delivered_by.get_mut(&caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.delivered_by.remove(&caller);
            }
        }
    }

    /// The call to deliver next, by deficit round robin among the callers with fewer than
    /// `caller_window` calls delivered: the caller whose turn it is gets its head call if its
    /// deficit covers it, else [`QUANTUM`] more deficit and the end of the line. Only moves
    /// turns; [`Fair::pop`] takes the call.
    pub(crate) fn peek(&mut self, caller_window: usize) -> Option<(u64, &mut T)> {
        // Callers passed over in a row for being at their window: a whole line of them means
        // nobody may have a call delivered now.
        let mut passed = 0;
        let first = loop {
            if passed >= self.turns.len() {
                return None;
            }
            let first = *self.turns.front()?;
            let delivered = self.delivered_by.get(&first).copied().unwrap_or(0);
            let queue = self.callers.get_mut(&first)?;
            let (_, cost, _) = queue.calls.front()?;
            if delivered >= caller_window {
                passed += 1;
            } else if queue.deficit >= *cost {
                break first;
            } else {
                passed = 0;
                queue.deficit += QUANTUM;
            }
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
        self.delivered_by.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(fair: &mut Fair<&'static str>) -> Vec<&'static str> {
        let mut order = Vec::new();
        while fair.peek(usize::MAX).is_some() {
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
    fn a_caller_at_its_window_is_passed_over() {
        let mut fair = Fair::default();
        let (busy, other) = (ConnectionId(1), ConnectionId(2));
        fair.push(busy, 1, 10, "busy");
        fair.deliver(busy);
        assert!(fair.peek(1).is_none());
        fair.push(other, 2, 10, "other");
        assert_eq!(fair.peek(1).map(|(id, _)| id), Some(2));
        assert_eq!(fair.pop(), Some((other, "other")));
        fair.answered(busy);
        assert_eq!(fair.delivered(), 0);
        assert_eq!(fair.peek(1).map(|(id, _)| id), Some(1));
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
        assert!(fair.peek(usize::MAX).is_none());
        assert!(fair.pop().is_none());
    }
}
