//! Fair sharing of one provider between its callers: calls routed to a provider wait in one
//! queue per caller connection and are delivered, a few at a time, in deficit round robin by
//! bytes (Shreedhar and Varghese, 1995), under a window sized by the provider's own delay.
//!
//! Why: the provider's socket and its SDK read eagerly (every incoming call becomes a task), so
//! whatever the broker writes to a provider is in effect a FIFO shared by all its callers. With
//! one shared FIFO, an app keeping hundreds of calls in flight made a well-behaved caller wait
//! behind all of them (p50 from 0.76 ms to 159 ms against a provider spending 0.5 ms a call), and
//! with one shared bound a flood of large calls got other callers' calls refused. So the broker
//! keeps what it has *delivered and not yet had answered* under a window, and holds the rest
//! here, one queue per caller; each answer (or cancel, or passed deadline) of a delivered call
//! frees a slot that goes to the next caller in round-robin order. A flooder then only ever
//! waits behind itself, and its own queue's bound
//! ([`BrokerConfig::caller_queue_bytes`](crate::BrokerConfig::caller_queue_bytes)) refuses only
//! its own excess.
//!
//! Three choices keep a newcomer's wait near one call of the provider's work:
//! - **The window follows the provider's delay** ([`DelayWindow`]), like TCP Vegas: whatever is
//!   delivered sits inside the provider ahead of the next call, so the window is as large as the
//!   provider can take without calls queueing inside it. A fixed window of 32 per caller let a
//!   flooder keep 32 calls (16 ms of a 0.5 ms provider's work) ahead of every other caller's;
//!   a serial 0.5 ms provider now gets 1-2, and a fast one (answers in tens of µs) still gets
//!   hundreds, up to [`BrokerConfig::delivery_window`](crate::BrokerConfig::delivery_window)
//!   in all and [`BrokerConfig::caller_delivery_window`](crate::BrokerConfig::caller_delivery_window)
//!   per caller.
//! - **A caller with nothing queued goes first** (the "sparse flow" rule of FQ-CoDel, RFC 8290):
//!   it joins the line ahead of the callers with a backlog, with one quantum to spend, instead of
//!   behind them, where it would wait for the flooder's whole turn (7 of the 64-byte calls a
//!   quantum, twice: 3.5-7 ms of a 0.5 ms provider). It cannot abuse this to starve others: it
//!   is a newcomer only while its queue was empty, so with a backlog it is in the line like
//!   anyone, and its calls at the provider are bounded by the window like anyone's.
//! - **Calls the provider holds** while it answers later ones (long polls) do not count against
//!   the window ([`Fair::held`]): a window sized for the provider's pace would otherwise fill
//!   with them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::ConnectionId;

/// Bytes a caller's turn adds to its deficit. Small, so that a caller of many small calls gets
/// few of them per turn (a newcomer waits behind about this many bytes of each other caller's
/// calls), at the price of more turns to save up for a large call, which costs a few loop steps.
pub(crate) const QUANTUM: usize = 1024;

/// What one call costs in the deficit, besides its payload and method name: the frame's other
/// fields (ids, deadline, the caller's identity), roughly. Keeps empty calls from being free.
pub(crate) const CALL_OVERHEAD: usize = 64;

/// Delay under which an answer is never judged late: scheduling noise on a busy machine.
pub(crate) const DELAY_SLACK: Duration = Duration::from_micros(100);

/// Most delay inside a provider that never shrinks its window, however it comes about. A fast
/// provider's answers come back in batches, some hundreds of µs after delivery when a hundred
/// calls are in flight on a busy machine: that is the price of pipelining it (a window held
/// under 250 µs of delay stayed at 10-30 calls there, where 128 were in flight before, and the
/// benchmark's 4 clients x 32 in flight lost about half), not a queue worth fixing. It is also what a newcomer may wait behind others at a provider that is not serial.
pub(crate) const DELAY_CEILING: Duration = Duration::from_millis(1);

/// Answers of calls delivered alone that a window of 1 waits for before it tries 2.
const PROBE_ANSWERS: f64 = 4.0;

/// The most answers a window of 1 waits for before it tries 2 again, after tries that failed.
/// Each try costs a newcomer a call of waiting (it finds one more call ahead of it), so against
/// a serial provider the tries are spaced out like TCP's retransmission timer: the wait doubles
/// after each try that ends in a late answer, up to this. 256 answers of a 0.5 ms provider are
/// 0.1 s: a provider that starts serving calls concurrently is noticed that late at most, and
/// then grows as fast as ever. With a wait of 4 answers, the well-behaved client of the flood
/// benchmark found 2 calls ahead often enough to put its p99 at the target's edge (3 of 5
/// rounds met it).
const MAX_PROBE_ANSWERS: f64 = 256.0;

/// The window of a provider's [`DelayWindow`] before its first answers: small, so that a slow
/// provider's first burst does not pile up inside it; a fast one grows past it in a few thousand
/// calls.
const INITIAL_WINDOW: f64 = 8.0;

/// How many calls a provider may have delivered and unanswered, sized by its delay (after TCP
/// Vegas, Brakmo and Peterson, 1994, measured per call instead of per packet): each answer is a
/// sample of the time from delivery to answer. A call delivered while the provider had nothing
/// else outstanding measures the provider's own time for a call (its base); any more in a later
/// call is delay: time it waited inside the provider behind the calls delivered before it.
///
/// An answer is late when its delay is more than [`DELAY_SLACK`] and either each call that was
/// ahead of it cost at least half a base (the provider serves them one after the other, so more
/// calls outstanding only make each wait longer) or the delay is more than [`DELAY_CEILING`]
/// and more than an eighth of the base.
/// Each late answer takes half a call off the window (a window of late answers halves it); any
/// other grows it by one per window of answers, if at least half of it was in use (a caller
/// making one call at a time says nothing about how many more the provider could take), and
/// from 1 to 2 only after [`PROBE_ANSWERS`] answers, twice as many after each try of 2 that
/// ended in a late answer (up to [`MAX_PROBE_ANSWERS`]), and [`PROBE_ANSWERS`] again once the
/// window reaches 3.
///
/// For a provider serving one call at a time in S, the call delivered with n outstanding
/// answers after about n x S: at n = 2 the one call ahead cost S, so the window settles at 1,
/// trying 2 less and less often, and a newcomer's call waits for the call in progress and
/// rarely one queued. A provider that
/// serves calls concurrently answers in about S however many it has, and one that answers in
/// batches adds µs per call ahead, so their windows grow until the bounds or the ceiling.
///
/// The base follows only unqueued calls: at once when one is faster, by an eighth of the
/// difference when one is slower, so that a provider that became slower for good is judged by its
/// new speed. A queued provider gives no such samples, but its window shrinks until calls go out
/// alone. Nothing here uses a clock: the caller passes the times.
#[derive(Debug, Clone)]
pub(crate) struct DelayWindow {
    /// Fractional, so that growth can be a fraction of a call per answer.
    limit: f64,
    /// The provider's time for a call that found it idle; none before the first such answer.
    base: Option<Duration>,
    /// Answers of calls delivered alone a window of 1 waits for before it tries 2.
    probe_answers: f64,
}

impl Default for DelayWindow {
    fn default() -> Self {
        Self {
            limit: INITIAL_WINDOW,
            base: None,
            probe_answers: PROBE_ANSWERS,
        }
    }
}

impl DelayWindow {
    /// Calls the provider may have outstanding now, at least 1.
    pub(crate) fn size(&self) -> usize {
        // `as` saturates; the limit is at least 1.
        self.limit as usize
    }

    /// Learns from an answer that came `rtt` after its call was delivered, with `outstanding`
    /// calls delivered and unanswered at that moment, itself included.
    pub(crate) fn sample(&mut self, rtt: Duration, outstanding: usize) {
        if outstanding <= 1 {
            self.base = Some(match self.base {
                Some(base) if base < rtt => base + (rtt - base) / 8,
                _ => rtt,
            });
        }
        let Some(base) = self.base else {
            return;
        };
        let delay = rtt.saturating_sub(base);
        let ahead = u32::try_from(outstanding.saturating_sub(1)).unwrap_or(u32::MAX);
        let serial = ahead > 0 && delay >= (base / 2).saturating_mul(ahead);
        // A delay that is a small part of the provider's own time for a call is timer and
        // scheduling noise, however many ms: calls of a second answered concurrently come back
        // a tick or two apart, and judging that late starved a provider of long calls down to a
        // window of 1 (256 calls of 1 s then took minutes).
        let ceiling = DELAY_CEILING.max(base / 8);
        if delay > DELAY_SLACK && (serial || delay > ceiling) {
            let trying_two = self.size() == 2;
            self.limit = (self.limit - 0.5).max(1.0);
            if trying_two && self.size() == 1 {
                self.probe_answers = (self.probe_answers * 2.0).min(MAX_PROBE_ANSWERS);
            }
        } else if 2 * outstanding >= self.size() {
            // Only a window in use may grow: a caller making one call at a time says nothing
            // about how many more the provider could take. And a call alone says the provider
            // takes one; whether it takes two only a call with company tells, so a window of 1
            // tries 2 after a few answers, not after each, and after more of them each time a
            // try fails: a serial provider spends nearly all of its time at 1, the newcomer's
            // best case.
            let answers = if outstanding == 1 {
                self.probe_answers
            } else {
                1.0
            };
            self.limit += 1.0 / (answers * self.limit);
            if self.size() >= 3 {
                self.probe_answers = PROBE_ANSWERS;
            }
        }
    }
}

/// Calls waiting for a provider, one queue per caller, and how many were delivered.
pub(crate) struct Fair<T> {
    /// Calls delivered to the provider and not yet answered, cancelled or expired.
    delivered: usize,
    /// The same, per caller; callers with none are absent.
    delivered_by: HashMap<ConnectionId, usize>,
    callers: HashMap<ConnectionId, Caller<T>>,
    /// Callers with calls queued, in round-robin order; the one being served first.
    turns: VecDeque<ConnectionId>,
    /// How many callers at the front of `turns` joined with an empty queue and are in their
    /// first turn: newcomers join behind them and ahead of the rest.
    newcomers: usize,
    /// How many may be delivered.
    pub(crate) window: DelayWindow,
    /// The delivery number of the next call delivered: calls are numbered in delivery order.
    next_delivery: u64,
    /// Delivery numbers of the calls delivered and not yet answered, cancelled or expired.
    outstanding: BTreeSet<u64>,
    /// One more than the highest delivery number answered: outstanding calls below it were
    /// overtaken, held by the provider while it answered later ones.
    answered_up_to: u64,
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
            newcomers: 0,
            window: DelayWindow::default(),
            next_delivery: 0,
            outstanding: BTreeSet::new(),
            answered_up_to: 0,
        }
    }
}

impl<T> Fair<T> {
    /// Bytes `caller` has queued.
    pub(crate) fn queued_bytes(&self, caller: ConnectionId) -> usize {
        self.callers.get(&caller).map_or(0, |queue| queue.bytes)
    }

    /// Queues `call` of `caller` last in its queue. A caller that had nothing queued joins the
    /// line after the other newcomers, with a quantum to spend at once.
    pub(crate) fn push(&mut self, caller: ConnectionId, id: u64, cost: usize, call: T) {
        let queue = self.callers.entry(caller).or_insert_with(|| {
            self.turns.insert(self.newcomers, caller);
            self.newcomers += 1;
            Caller {
                calls: VecDeque::new(),
                bytes: 0,
                deficit: QUANTUM,
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
            if let Some(turn) = self.turns.iter().position(|turn| *turn == caller) {
                self.turns.remove(turn);
                if turn < self.newcomers {
                    self.newcomers -= 1;
                }
            }
        }
        Some(call)
    }

    /// Calls delivered and not yet answered.
    pub(crate) fn delivered(&self) -> usize {
        self.delivered
    }

    /// Delivered calls the provider holds while it answered calls delivered after them (long
    /// polls, slow requests among fast ones). They do not count against the window: a window
    /// sized for the provider's pace would otherwise be filled by calls that wait on something
    /// else, and nobody's calls would go out until one of them ended. A provider that answers
    /// in order (one serving a call at a time) holds none.
    pub(crate) fn held(&self) -> usize {
        self.outstanding.range(..self.answered_up_to).count()
    }

    /// Counts a call of `caller` as delivered; returns its delivery number.
    pub(crate) fn deliver(&mut self, caller: ConnectionId) -> u64 {
        self.delivered += 1;
        *self.delivered_by.entry(caller).or_default() += 1;
        let number = self.next_delivery;
        self.next_delivery += 1;
        self.outstanding.insert(number);
        number
    }

    /// Counts delivered call `number` of `caller` as answered by the provider. Returns whether
    /// it had been overtaken (see [`Fair::held`]): its time then says nothing of the
    /// provider's queue.
    pub(crate) fn answered(&mut self, caller: ConnectionId, number: u64) -> bool {
        self.withdrawn(caller, number);
        let overtaken = number < self.answered_up_to;
        self.answered_up_to = self.answered_up_to.max(number + 1);
        overtaken
    }

    /// Counts delivered call `number` of `caller` as cancelled or expired.
    pub(crate) fn withdrawn(&mut self, caller: ConnectionId, number: u64) {
        self.outstanding.remove(&number);
        self.delivered = self.delivered.saturating_sub(1);
        if let Some(count) = self.delivered_by.get_mut(&caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.delivered_by.remove(&caller);
            }
        }
    }

    /// Moves the caller at the front of the line to its end; a newcomer's first turn is over.
    fn next_turn(&mut self) {
        self.turns.rotate_left(1);
        self.newcomers = self.newcomers.saturating_sub(1);
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
            self.next_turn();
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
            self.newcomers = self.newcomers.saturating_sub(1);
        }
        Some((first, call))
    }

    /// Empties every queue (the provider is gone).
    pub(crate) fn clear(&mut self) {
        self.callers.clear();
        self.turns.clear();
        self.newcomers = 0;
        self.delivered = 0;
        self.delivered_by.clear();
        self.outstanding.clear();
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
        let number = fair.deliver(busy);
        assert!(fair.peek(1).is_none());
        fair.push(other, 2, 10, "other");
        assert_eq!(fair.peek(1).map(|(id, _)| id), Some(2));
        assert_eq!(fair.pop(), Some((other, "other")));
        assert!(!fair.answered(busy, number));
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

    #[test]
    fn a_newcomer_goes_ahead_of_a_caller_in_the_middle_of_its_turn() {
        let mut fair = Fair::default();
        let (flooder, steady) = (ConnectionId(1), ConnectionId(2));
        for id in 0..100 {
            fair.push(flooder, id, 100, "flood");
        }
        // The flooder is past its first turn (10 calls a quantum), with deficit left.
        for _ in 0..13 {
            assert!(fair.peek(usize::MAX).is_some());
            assert_eq!(fair.pop().map(|(caller, _)| caller), Some(flooder));
        }
        for id in 1000..1012 {
            fair.push(steady, id, 100, "steady");
        }
        assert_eq!(fair.peek(usize::MAX).map(|(id, _)| id), Some(1000));
        // One quantum first (10 of its calls); then it has a backlog like the flooder, and its
        // turn comes after the rest of the flooder's.
        let order = order(&mut fair);
        assert_eq!(order[..10], ["steady"; 10]);
        assert_eq!(order[10], "flood");
        assert_eq!(order.len(), 87 + 12);
    }

    #[test]
    fn removing_a_newcomers_call_keeps_the_others_order() {
        let mut fair = Fair::default();
        let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
        fair.push(a, 1, 2000, "a");
        // `a` spends its first turn saving up for its call: it is no newcomer after.
        assert_eq!(fair.peek(usize::MAX).map(|(id, _)| id), Some(1));
        fair.push(b, 2, 10, "b");
        fair.push(c, 3, 10, "c");
        assert_eq!(fair.remove(b, 2), Some("b"));
        let d = ConnectionId(4);
        fair.push(d, 4, 10, "d");
        assert_eq!(order(&mut fair), ["c", "d", "a"]);
    }

    const MS: Duration = Duration::from_millis(1);

    /// Drives `window` like a provider always given as many calls as it allows, which answers
    /// the call delivered with `n` outstanding after `rtt(n)`, for `answers` answers. Returns
    /// the window's size after each answer.
    fn backlogged(
        window: &mut DelayWindow,
        answers: usize,
        rtt: impl Fn(usize) -> Duration,
    ) -> Vec<usize> {
        // Outstanding calls: how many were outstanding when each was delivered, oldest first.
        let mut outstanding: VecDeque<usize> = VecDeque::new();
        let mut sizes = Vec::new();
        for _ in 0..answers {
            while outstanding.len() < window.size() {
                outstanding.push_back(outstanding.len() + 1);
            }
            let at_delivery = outstanding.pop_front().expect("a call is outstanding");
            window.sample(rtt(at_delivery), at_delivery);
            sizes.push(window.size());
        }
        sizes
    }

    #[test]
    fn a_serial_provider_gets_a_window_of_one_or_two() {
        // 0.5 ms a call, one at a time: the call delivered with n outstanding waits for n - 1.
        let mut window = DelayWindow::default();
        let sizes = backlogged(&mut window, 400, |n| n as u32 * MS / 2);
        assert!(
            sizes[100..].iter().all(|&size| (1..=2).contains(&size)),
            "{sizes:?}"
        );
        // Mostly 1: 2 is only tried now and then.
        let ones = sizes[100..].iter().filter(|&&size| size == 1).count();
        assert!(ones * 2 > sizes.len() - 100, "{sizes:?}");
        assert_eq!(window.base, Some(MS / 2));
    }

    #[test]
    fn a_serial_provider_tries_a_second_call_less_and_less_often() {
        let mut window = DelayWindow::default();
        let sizes = backlogged(&mut window, 4_000, |n| n as u32 * MS / 2);
        // Every try of 2 puts a newcomer a call further back: after the first few hundred
        // answers, fewer than 1 in 100 answers find the window at 2 (with a try every 4
        // answers, about 1 in 4 did).
        let twos = sizes[1_000..].iter().filter(|&&size| size == 2).count();
        assert!(
            twos * 100 < sizes.len() - 1_000,
            "{twos} of {}",
            sizes.len() - 1_000
        );
        assert_eq!(window.probe_answers, MAX_PROBE_ANSWERS);
        // A provider that then serves calls concurrently is noticed within a few hundred
        // answers, and its window grows as fast as a new one's.
        let sizes = backlogged(&mut window, 2_000, |_| MS / 2);
        let first_three = sizes
            .iter()
            .position(|&size| size >= 3)
            .expect("grows past 2");
        assert!(first_three < 400, "{first_three}");
        assert_eq!(window.probe_answers, PROBE_ANSWERS);
        assert!(window.size() >= 32, "{}", window.size());
    }

    #[test]
    fn a_fast_provider_stays_pipelined() {
        // 80 µs alone, 3 µs more per call ahead of it (it answers in batches): 256 outstanding
        // wait 765 µs, under the ceiling.
        let mut window = DelayWindow::default();
        let sizes = backlogged(&mut window, 40_000, |n| {
            Duration::from_micros(80 + 3 * (n as u64 - 1))
        });
        assert!(
            sizes.last().is_some_and(|&size| size >= 256),
            "{:?}",
            sizes.last()
        );
    }

    #[test]
    fn a_provider_serving_calls_concurrently_stays_pipelined() {
        // 50 ms a call however many it has (it waits on something else, in parallel).
        let mut window = DelayWindow::default();
        let sizes = backlogged(&mut window, 10_000, |_| 50 * MS);
        assert!(
            sizes.last().is_some_and(|&size| size >= 128),
            "{:?}",
            sizes.last()
        );
    }

    #[test]
    fn a_provider_that_becomes_slow_for_good_is_judged_by_its_new_speed() {
        let mut window = DelayWindow::default();
        backlogged(&mut window, 20_000, |n| {
            Duration::from_micros(20 + n as u64)
        });
        assert!(window.size() >= 64);
        // Now 5 ms a call, one at a time: the window closes until calls go out alone, and the
        // base follows those to 5 ms.
        let sizes = backlogged(&mut window, 2_000, |n| n as u32 * 5 * MS);
        assert!(
            sizes[1_000..].iter().all(|&size| size <= 2),
            "{:?}",
            &sizes[1_000..]
        );
        let base = window.base.expect("a base");
        assert!(base > 4 * MS && base <= 5 * MS, "{base:?}");
        // And a caller making one call at a time says nothing about a larger window: it grows
        // only while at least half of it is in use.
        for _ in 0..100 {
            window.sample(5 * MS, 1);
        }
        assert!(window.size() <= 3, "{}", window.size());
    }

    #[test]
    fn long_calls_answered_together_a_few_ms_apart_grow_the_window() {
        // A provider whose calls take a second each and run concurrently: 8 delivered at once
        // (the first alone sets the base) come back over a few ms of timer ticks.
        let mut window = DelayWindow::default();
        window.sample(1000 * MS, 1);
        for round in 0..20 {
            let size = window.size();
            for k in 1..size {
                let late_by = (k % 4 + round % 2) as u32;
                window.sample(1000 * MS + late_by * MS, k + 1);
            }
        }
        assert!(window.size() > INITIAL_WINDOW as usize, "{}", window.size());
    }

    #[test]
    fn late_answers_shrink_the_window_and_never_below_one() {
        let mut window = DelayWindow::default();
        window.sample(MS, 1);
        let start = window.size();
        for _ in 0..start {
            window.sample(10 * MS, start);
        }
        assert_eq!(window.size(), start / 2);
        for _ in 0..100 {
            window.sample(10 * MS, 2);
        }
        assert_eq!(window.size(), 1);
        // Without a base there is nothing to judge by.
        let mut fresh = DelayWindow::default();
        fresh.sample(10 * MS, 5);
        assert_eq!(fresh.size(), INITIAL_WINDOW as usize);
    }

    #[test]
    fn calls_the_provider_holds_while_it_answers_later_ones_are_held() {
        let mut fair: Fair<&str> = Fair::default();
        let (poller, other) = (ConnectionId(1), ConnectionId(2));
        let polls: Vec<u64> = (0..3).map(|_| fair.deliver(poller)).collect();
        let quick = fair.deliver(other);
        // In order so far: nothing is held.
        assert_eq!(fair.held(), 0);
        assert!(!fair.answered(other, quick));
        assert_eq!((fair.held(), fair.delivered()), (3, 3));
        // A held call answered at last was overtaken; a cancelled one is simply gone.
        assert!(fair.answered(poller, polls[0]));
        fair.withdrawn(poller, polls[1]);
        assert_eq!((fair.held(), fair.delivered()), (1, 1));
        // A provider answering in order never holds any.
        let mut serial: Fair<&str> = Fair::default();
        let first = serial.deliver(other);
        let second = serial.deliver(other);
        assert!(!serial.answered(other, first));
        assert_eq!(serial.held(), 0);
        assert!(!serial.answered(other, second));
    }
}
