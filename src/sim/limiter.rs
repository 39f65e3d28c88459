//! Sliding-window request limiter (connection-rate and replay limits).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Limiter {
    limit: usize,
    window: Duration,
    count_rejected: bool,
    hits: Mutex<VecDeque<Instant>>,
}

impl Limiter {
    pub(crate) fn new(limit: u32, window_ms: u64, count_rejected: bool) -> Limiter {
        Limiter {
            limit: limit as usize,
            window: Duration::from_millis(window_ms),
            count_rejected,
            hits: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one request; false when it exceeds the limit.
    pub(crate) fn admit(&self, now: Instant) -> bool {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&t) = hits.front() {
            if now.saturating_duration_since(t) >= self.window {
                hits.pop_front();
            } else {
                break;
            }
        }
        let ok = hits.len() < self.limit;
        if ok || self.count_rejected {
            hits.push_back(now);
            // Never keep more than needed to decide.
            while hits.len() > self.limit.saturating_mul(4).max(64) {
                hits.pop_front();
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides() {
        let l = Limiter::new(2, 1000, false);
        let t0 = Instant::now();
        assert!(l.admit(t0));
        assert!(l.admit(t0 + Duration::from_millis(10)));
        assert!(!l.admit(t0 + Duration::from_millis(20)));
        assert!(l.admit(t0 + Duration::from_millis(1000)));
        assert!(!l.admit(t0 + Duration::from_millis(1005)));
        assert!(l.admit(t0 + Duration::from_millis(1010)));
    }

    #[test]
    fn rejected_requests_can_count() {
        let l = Limiter::new(1, 1000, true);
        let t0 = Instant::now();
        assert!(l.admit(t0));
        assert!(!l.admit(t0 + Duration::from_millis(900)));
        // The refused request at 900 ms keeps the window full until 1900 ms.
        assert!(!l.admit(t0 + Duration::from_millis(1500)));
        assert!(l.admit(t0 + Duration::from_millis(2600)));
    }
}
