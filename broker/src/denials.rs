//! Denied requests: how often they are logged, and when an app that keeps sending them is
//! disconnected.
//!
//! A denial is an app asking for something its manifest does not allow: it can never succeed, so
//! a correct app sends a few at most (a bug, a missing `uses` line). Logging each one let a single
//! app grow the daemon's log by 170 MiB in 2 s; so a connection logs the first denial of each
//! action per [`WINDOW`] and counts the rest, reported with the next line it logs, and a
//! connection with more than [`MAX_DENIED`] denials in one window is closed.

use std::time::Duration;

use tokio::time::Instant;

/// The period denials are counted over.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Most denied requests one connection may send in a [`WINDOW`]; one more closes it.
pub(crate) const MAX_DENIED: u32 = 100;

/// What to do with one denial.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it, mentioning the denials of the same action not logged before it.
    Log {
        /// Denials of this action counted and not logged since the last line about it.
        suppressed: u64,
    },
    /// Count it, do not log it.
    Suppress,
    /// Close the connection: it sent `denied` denied requests within one window.
    Disconnect {
        /// Denials in the window, this one included.
        denied: u32,
    },
}

/// The denials of one connection, kept by its reader.
pub(crate) struct Denials {
    window_start: Instant,
    in_window: u32,
    /// By action: whether a line was logged in this window, and how many were not since.
    actions: Vec<(&'static str, bool, u64)>,
}

impl Denials {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            in_window: 0,
            actions: Vec::new(),
        }
    }

    /// Records one denial of `action` at `now`.
    pub(crate) fn record(&mut self, action: &'static str, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.in_window = 0;
            for (_, logged, _) in &mut self.actions {
                *logged = false;
            }
        }
        self.in_window += 1;
        if self.in_window > MAX_DENIED {
            return Verdict::Disconnect {
                denied: self.in_window,
            };
        }
        let index = match self.actions.iter().position(|(name, ..)| *name == action) {
            Some(index) => index,
            None => {
                // One entry per action: a handful at most.
                self.actions.push((action, false, 0));
                self.actions.len() - 1
            }
        };
        let (_, logged, suppressed) = &mut self.actions[index];
        if *logged {
            *suppressed += 1;
            Verdict::Suppress
        } else {
            *logged = true;
            Verdict::Log {
                suppressed: std::mem::take(suppressed),
            }
        }
    }

    /// Denials counted and never logged, over all actions.
    pub(crate) fn unlogged(&self) -> u64 {
        self.actions
            .iter()
            .map(|(_, _, suppressed)| suppressed)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_action_and_window_then_the_count_of_the_rest() {
        let start = Instant::now();
        let mut denials = Denials::new(start);
        assert_eq!(
            denials.record("lookup", start),
            Verdict::Log { suppressed: 0 }
        );
        for _ in 0..5 {
            assert_eq!(denials.record("lookup", start), Verdict::Suppress);
        }
        // Another action gets its own line.
        assert_eq!(
            denials.record("call", start),
            Verdict::Log { suppressed: 0 }
        );
        assert_eq!(denials.unlogged(), 5);
        // The next window logs again, with the count of what it did not log.
        let later = start + WINDOW;
        assert_eq!(
            denials.record("lookup", later),
            Verdict::Log { suppressed: 5 }
        );
        assert_eq!(denials.unlogged(), 0);
    }

    #[test]
    fn more_than_the_limit_in_one_window_disconnects() {
        let start = Instant::now();
        let mut denials = Denials::new(start);
        for _ in 0..MAX_DENIED {
            assert_ne!(
                denials.record("watch", start + WINDOW / 2),
                Verdict::Disconnect { denied: MAX_DENIED }
            );
        }
        assert_eq!(
            denials.record("watch", start + WINDOW / 2),
            Verdict::Disconnect {
                denied: MAX_DENIED + 1
            }
        );
        // Spread over windows, the same number is fine.
        let mut spread = Denials::new(start);
        for window in 0..3u32 {
            for _ in 0..MAX_DENIED {
                let verdict = spread.record("watch", start + WINDOW * window);
                assert!(!matches!(verdict, Verdict::Disconnect { .. }));
            }
        }
    }
}
