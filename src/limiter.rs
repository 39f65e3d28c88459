//! The connection-rate limiter shared by all partitions.
//!
//! X allows 10 connection requests per 60 s per account, all partitions
//! together, and answers 429 past that. Every connection request of every
//! partition asks this limiter first; it grants at most `max_requests` in any
//! window of `window` (a sliding log of the grant times), plus a safety
//! `margin` so that network delays between our clock and the server's cannot
//! squeeze an eleventh request into the server's window. Eight partitions
//! dropping at once therefore reconnect with what is left of the budget, and
//! the rest wait for the window to slide, instead of drawing a 429.
//!
//! A grant is counted from the moment it is given; once the attempt has an
//! answer (the response headers, or the failure), the caller *settles* the
//! grant at that later time: the server counted the request at its arrival,
//! which lies between the two, so counting from the answer is the safe side
//! even when a request leaves late (a busy machine, a slow TLS handshake).
//!
//! Pure: the caller passes a monotonic time in milliseconds.

use std::time::Duration;

/// Identifies one grant, to settle it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// A sliding-window limiter of connection requests.
#[derive(Debug, Clone)]
pub struct ConnectLimiter {
    max: usize,
    /// Window plus margin, in ms.
    span_ms: u64,
    /// Live grants: (ticket, monotonic ms it counts from); at most `max`.
    grants: Vec<(u64, u64)>,
    next_ticket: u64,
}

impl ConnectLimiter {
    /// At most `max_requests` grants in any `window + margin`. A
    /// `max_requests` of 0 is treated as 1 (a limiter that never grants
    /// would stop the daemon for good).
    pub fn new(max_requests: usize, window: Duration, margin: Duration) -> ConnectLimiter {
        let max = max_requests.max(1);
        ConnectLimiter {
            max,
            span_ms: window.saturating_add(margin).as_millis().min(u64::MAX as u128) as u64,
            grants: Vec::with_capacity(max),
            next_ticket: 1,
        }
    }

    /// The configured maximum per window.
    pub fn max_requests(&self) -> usize {
        self.max
    }

    fn expire(&mut self, now_ms: u64) {
        let span = self.span_ms;
        self.grants.retain(|(_, t)| now_ms.saturating_sub(*t) < span);
    }

    /// Asks for one connection request at `now_ms`.
    ///
    /// # Errors
    /// `Err(wait)`: the budget is spent; ask again after `wait`.
    pub fn try_acquire(&mut self, now_ms: u64) -> Result<Ticket, Duration> {
        self.expire(now_ms);
        if self.grants.len() < self.max {
            let id = self.next_ticket;
            self.next_ticket += 1;
            self.grants.push((id, now_ms));
            Ok(Ticket(id))
        } else {
            Err(self.wait(now_ms))
        }
    }

    /// The attempt of `ticket` got its answer at `now_ms`: count the grant
    /// from then (never earlier than it was). Unknown or expired tickets are
    /// ignored.
    pub fn settle(&mut self, ticket: Ticket, now_ms: u64) {
        if let Some(g) = self.grants.iter_mut().find(|(id, _)| *id == ticket.0) {
            g.1 = g.1.max(now_ms);
        }
    }

    /// How long until a request would be granted (zero when one would be
    /// now).
    pub fn wait(&self, now_ms: u64) -> Duration {
        let mut live: Vec<u64> =
            self.grants.iter().map(|(_, t)| *t).filter(|t| now_ms.saturating_sub(*t) < self.span_ms).collect();
        if live.len() < self.max {
            return Duration::ZERO;
        }
        live.sort_unstable();
        // The oldest grant that must leave the window for one slot to free.
        let oldest = live[live.len() - self.max];
        Duration::from_millis((oldest + self.span_ms).saturating_sub(now_ms).max(1))
    }

    /// Grants within the window at `now_ms`.
    pub fn in_window(&self, now_ms: u64) -> usize {
        self.grants.iter().filter(|(_, t)| now_ms.saturating_sub(*t) < self.span_ms).count()
    }

    /// A grant made earlier, by a previous run of the process (the budget is
    /// the account's, not the process's): it counts from `at_ms`.
    pub fn record(&mut self, at_ms: u64) {
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.grants.push((id, at_ms));
    }

    /// The times the live grants count from (to persist them).
    pub fn live(&self, now_ms: u64) -> Vec<u64> {
        let mut v: Vec<u64> =
            self.grants.iter().map(|(_, t)| *t).filter(|t| now_ms.saturating_sub(*t) < self.span_ms).collect();
        v.sort_unstable();
        v
    }

    /// The server answered 429: someone (another client of the account, or a
    /// restart of this process) spent the budget. Treat the window as full
    /// from now, so that no partition asks again before it has slid by.
    pub fn on_rate_limited(&mut self, now_ms: u64) {
        self.expire(now_ms);
        while self.grants.len() < self.max {
            self.grants.push((0, now_ms));
        }
        for g in self.grants.iter_mut() {
            g.1 = g.1.max(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: usize, window_ms: u64) -> ConnectLimiter {
        ConnectLimiter::new(max, Duration::from_millis(window_ms), Duration::ZERO)
    }

    /// Checks the invariant: no window of `span` holds more than `max` grants.
    fn assert_never_over(grants: &[u64], max: usize, span: u64) {
        for (i, t) in grants.iter().enumerate() {
            let n = grants[i..].iter().take_while(|u| **u < t + span).count();
            assert!(n <= max, "{n} grants in the window starting at {t}: {grants:?}");
        }
    }

    #[test]
    fn grants_up_to_max_then_says_how_long_to_wait() {
        let mut l = limiter(10, 60_000);
        for i in 0..10 {
            assert!(l.try_acquire(i * 10).is_ok());
        }
        assert_eq!(l.try_acquire(100), Err(Duration::from_millis(59_900)));
        assert_eq!(l.in_window(100), 10);
        assert_eq!(l.try_acquire(59_999), Err(Duration::from_millis(1)));
        assert!(l.try_acquire(60_000).is_ok());
        assert_eq!(l.try_acquire(60_001), Err(Duration::from_millis(9)));
    }

    #[test]
    fn a_late_answer_moves_the_grant_later() {
        // Granted at 0, but the request left late and was answered at 900:
        // the server may have counted it as late as 900.
        let mut l = limiter(1, 1000);
        let t = l.try_acquire(0).unwrap();
        l.settle(t, 900);
        assert_eq!(l.try_acquire(1000), Err(Duration::from_millis(900)));
        assert!(l.try_acquire(1900).is_ok());
        // Settling never moves a grant earlier, and a stale ticket is ignored.
        let mut l = limiter(1, 1000);
        let t = l.try_acquire(500).unwrap();
        l.settle(t, 100);
        assert!(l.try_acquire(1499).is_err());
        l.settle(Ticket(999), 5000);
        assert!(l.try_acquire(1500).is_ok());
    }

    #[test]
    fn eight_simultaneous_drops_after_the_initial_eight_connects() {
        // Start-up: 8 connects at t=0. All 8 drop at t=5 s: only 2 may go
        // now, the other 6 when the window has slid past the first connects.
        let mut l = limiter(10, 60_000);
        let mut granted = vec![0u64; 8];
        for _ in 0..8 {
            l.try_acquire(0).unwrap();
        }
        let mut waiting = 8;
        let mut now = 5_000;
        while waiting > 0 {
            match l.try_acquire(now) {
                Ok(_) => {
                    granted.push(now);
                    waiting -= 1;
                }
                Err(w) => now += w.as_millis() as u64,
            }
        }
        assert_eq!(&granted[8..10], &[5_000, 5_000]);
        assert!(granted[10..].iter().all(|t| *t >= 60_000), "{granted:?}");
        assert_never_over(&granted, 10, 60_000);
    }

    #[test]
    fn grants_of_a_previous_run_count() {
        let mut l = limiter(10, 60_000);
        for _ in 0..8 {
            l.record(1_000);
        }
        assert!(l.try_acquire(2_000).is_ok());
        assert!(l.try_acquire(2_000).is_ok());
        assert_eq!(l.try_acquire(2_000), Err(Duration::from_millis(59_000)));
        assert_eq!(l.live(2_000).len(), 10);
        assert_eq!(l.live(61_000), vec![2_000, 2_000]);
        // More recorded than the maximum: wait until enough have left.
        let mut l = limiter(2, 1_000);
        for t in [0, 100, 200] {
            l.record(t);
        }
        assert_eq!(l.try_acquire(300), Err(Duration::from_millis(800)));
        assert!(l.try_acquire(1_100).is_ok());
    }

    #[test]
    fn margin_widens_the_window() {
        let mut l = ConnectLimiter::new(1, Duration::from_secs(60), Duration::from_secs(1));
        l.try_acquire(0).unwrap();
        assert!(l.try_acquire(60_000).is_err());
        assert_eq!(l.wait(60_000), Duration::from_millis(1_000));
        assert!(l.try_acquire(61_000).is_ok());
    }

    #[test]
    fn zero_max_is_treated_as_one() {
        let mut l = limiter(0, 1000);
        assert_eq!(l.max_requests(), 1);
        assert!(l.try_acquire(0).is_ok());
        assert!(l.try_acquire(1).is_err());
    }

    #[test]
    fn a_429_fills_the_window_from_now() {
        let mut l = limiter(10, 60_000);
        l.try_acquire(0).unwrap();
        l.on_rate_limited(30_000);
        assert_eq!(l.try_acquire(30_001), Err(Duration::from_millis(59_999)));
        assert!(l.try_acquire(89_999).is_err());
        assert!(l.try_acquire(90_000).is_ok());
    }

    #[test]
    fn never_more_than_max_in_any_window_whatever_the_pattern() {
        // A deterministic pseudo-random storm of requests: whoever is told to
        // wait comes back after the wait (or earlier, impatiently).
        let mut l = limiter(10, 60_000);
        let mut granted = Vec::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = 0u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now += seed % 3_000;
            if l.try_acquire(now).is_ok() {
                granted.push(now);
            }
        }
        assert!(granted.len() > 100);
        assert_never_over(&granted, 10, 60_000);
    }

    #[test]
    fn wait_is_zero_when_a_slot_is_free() {
        let mut l = limiter(2, 1000);
        assert_eq!(l.wait(0), Duration::ZERO);
        l.try_acquire(0).unwrap();
        assert_eq!(l.wait(0), Duration::ZERO);
        l.try_acquire(10).unwrap();
        assert_eq!(l.wait(10), Duration::from_millis(990));
    }
}
