//! The reconnect policy: how long a partition waits before its next
//! connection request, by failure class, following X's published guidance
//! for its enterprise streams (see `docs/protocol.md`, section 3.2 "Reconnecting"):
//!
//! | class | delay of the n-th consecutive failure |
//! |---|---|
//! | [`FailureClass::Dropped`] (an established, stable connection ended) | none: reconnect at once |
//! | [`FailureClass::Network`] (TCP, TLS, read error, idle timeout, or a drop of a connection that was not yet stable) | `n x 250 ms`, at most 16 s |
//! | [`FailureClass::Server`] (5xx) | `5 s x 2^(n-1)`, at most 320 s |
//! | [`FailureClass::RateLimited`] (429) | `60 s x 2^(n-1)`, at most 960 s |
//! | [`FailureClass::Config`] (401, 403, 406, 400, other 4xx) | a slow fixed pace (minutes) |
//!
//! Every delay gets jitter. The counters reset after a stable connection.
//! Past `max_failures` failures within the intensity window a partition is
//! *failed*: it keeps retrying, at the slowest pace, and the health endpoint
//! says so.
//!
//! Pure arithmetic: no clock, no randomness of its own, no actix. Time is a
//! monotonic millisecond count given by the caller; the jitter takes a random
//! number in `[0, 1)` from the caller.

use std::collections::VecDeque;
use std::time::Duration;

/// Why a connection ended, as far as the reconnect policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// An established connection ended (the server closed it, a forced
    /// disconnect). Reconnect at once, unless it was not yet stable: then it
    /// counts as a [`FailureClass::Network`] failure.
    Dropped,
    /// Connect, TLS, read or decode error, or the idle-read timeout.
    Network,
    /// HTTP 5xx (and "too many connections" disconnects).
    Server,
    /// HTTP 429: the account's connection rate limit.
    RateLimited,
    /// HTTP 401, 403, 406, 400 and other 4xx: the configuration is wrong.
    Config,
}

impl FailureClass {
    pub const ALL: [FailureClass; 5] = [
        FailureClass::Dropped,
        FailureClass::Network,
        FailureClass::Server,
        FailureClass::RateLimited,
        FailureClass::Config,
    ];

    /// A stable label (logs, metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureClass::Dropped => "dropped",
            FailureClass::Network => "network",
            FailureClass::Server => "server",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::Config => "config",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The class of an HTTP status other than 200.
    pub fn of_http_status(status: u16) -> FailureClass {
        match status {
            429 => FailureClass::RateLimited,
            500..=599 => FailureClass::Server,
            _ => FailureClass::Config,
        }
    }
}

/// The delays of each class. All numbers are configurable (`[backoff]`,
/// `src/settings/file.rs`); [`Default`] gives X's guidance.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    /// A connection that lasted at least this long is stable: it resets the
    /// counters, and its end is a [`FailureClass::Dropped`] (no delay).
    pub stable_after: Duration,
    /// Network errors: `n x network_step`, at most `network_max`.
    pub network_step: Duration,
    pub network_max: Duration,
    /// 5xx: `server_initial x 2^(n-1)`, at most `server_max`.
    pub server_initial: Duration,
    pub server_max: Duration,
    /// 429: `rate_limited_initial x 2^(n-1)`, at most `rate_limited_max`.
    pub rate_limited_initial: Duration,
    pub rate_limited_max: Duration,
    /// Configuration errors: this fixed delay.
    pub config_retry: Duration,
    /// Every delay is multiplied by a factor drawn from
    /// `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Added to every delay: a random extra in `[0, jitter_floor)`, so that a
    /// zero delay is spread too (eight partitions that drop together do not
    /// reconnect in the same millisecond).
    pub jitter_floor: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            stable_after: Duration::from_secs(10),
            network_step: Duration::from_millis(250),
            network_max: Duration::from_secs(16),
            server_initial: Duration::from_secs(5),
            server_max: Duration::from_secs(320),
            rate_limited_initial: Duration::from_secs(60),
            rate_limited_max: Duration::from_secs(960),
            config_retry: Duration::from_secs(300),
            jitter: 0.2,
            jitter_floor: Duration::from_millis(100),
        }
    }
}

impl BackoffPolicy {
    /// The delay before the next connection request after the `attempt`-th
    /// consecutive failure of `class` (`attempt` >= 1; 0 is treated as 1),
    /// without jitter.
    pub fn base_delay(&self, class: FailureClass, attempt: u32) -> Duration {
        let n = attempt.max(1);
        match class {
            FailureClass::Dropped => Duration::ZERO,
            FailureClass::Network => self.network_step.saturating_mul(n).min(self.network_max),
            FailureClass::Server => exponential(self.server_initial, n, self.server_max),
            FailureClass::RateLimited => exponential(self.rate_limited_initial, n, self.rate_limited_max),
            FailureClass::Config => self.config_retry,
        }
    }

    /// The slowest pace of the classes a partition retries at on its own
    /// (network, server, configuration errors).
    pub fn slowest(&self) -> Duration {
        self.network_max.max(self.server_max).max(self.config_retry)
    }

    /// `delay` with jitter: `unit` and `unit2` are random numbers in
    /// `[0, 1)`; the result is `delay x (1 - jitter + 2 x jitter x unit) +
    /// jitter_floor x unit2`.
    pub fn jittered(&self, delay: Duration, unit: f64, unit2: f64) -> Duration {
        let j = self.jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        let factor = 1.0 - j + 2.0 * j * unit;
        let extra = self.jitter_floor.mul_f64(unit2.clamp(0.0, 1.0));
        delay.mul_f64(factor.max(0.0)).saturating_add(extra)
    }
}

fn exponential(initial: Duration, n: u32, max: Duration) -> Duration {
    // 2^(n-1), saturating well before overflow.
    let shift = (n - 1).min(30);
    initial.saturating_mul(1u32 << shift).min(max)
}

/// Restart intensity: past `max_failures` failures within `window` a
/// partition is marked failed (OTP-style), and retries at `failed_retry`.
#[derive(Debug, Clone, PartialEq)]
pub struct Intensity {
    pub max_failures: usize,
    pub window: Duration,
    /// The delay of a failed partition (at least the class's own delay).
    pub failed_retry: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity { max_failures: 10, window: Duration::from_secs(300), failed_retry: Duration::from_secs(320) }
    }
}

/// What the policy decided about one ended connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The class the end was counted as (a non-stable drop becomes
    /// [`FailureClass::Network`]).
    pub class: FailureClass,
    /// The consecutive failures of that class, this one included (0 for a
    /// stable drop).
    pub attempt: u32,
    /// The delay before the next connection request, before jitter.
    pub delay: Duration,
    /// Whether this end counted as a failure.
    pub failure: bool,
    /// The partition is failed (past the restart intensity).
    pub failed: bool,
    /// It became failed with this end.
    pub newly_failed: bool,
}

/// The restart bookkeeping of one partition.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    attempts: [u32; 5],
    /// Monotonic ms of recent failures, oldest first.
    recent: VecDeque<u64>,
    failed: bool,
}

impl Restarts {
    pub fn new() -> Restarts {
        Restarts::default()
    }

    /// The partition is past its restart intensity.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Failures counted within the intensity window (as of the last call).
    pub fn recent_failures(&self) -> usize {
        self.recent.len()
    }

    /// The consecutive failures of `class`.
    pub fn attempts(&self, class: FailureClass) -> u32 {
        self.attempts[class.index()]
    }

    /// A connection has been up for `stable_after`: every counter resets and
    /// the failed mark is cleared.
    pub fn on_stable(&mut self) {
        self.attempts = [0; 5];
        self.recent.clear();
        self.failed = false;
    }

    /// A connection attempt ended with `class`; `connected_for` is how long
    /// the stream was open (None when it never opened); `now_ms` is a
    /// monotonic clock.
    pub fn on_exit(
        &mut self,
        policy: &BackoffPolicy,
        intensity: &Intensity,
        class: FailureClass,
        connected_for: Option<Duration>,
        now_ms: u64,
    ) -> Decision {
        let stable = connected_for.is_some_and(|d| d >= policy.stable_after);
        if stable {
            self.on_stable();
        }
        let class = match class {
            FailureClass::Dropped if !stable => FailureClass::Network,
            c => c,
        };
        if class == FailureClass::Dropped {
            return Decision {
                class,
                attempt: 0,
                delay: Duration::ZERO,
                failure: false,
                failed: false,
                newly_failed: false,
            };
        }
        let i = class.index();
        self.attempts[i] = self.attempts[i].saturating_add(1);
        let window_ms = intensity.window.as_millis() as u64;
        self.recent.push_back(now_ms);
        while self.recent.front().is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms) {
            self.recent.pop_front();
        }
        let was_failed = self.failed;
        if self.recent.len() > intensity.max_failures {
            self.failed = true;
        }
        let mut delay = policy.base_delay(class, self.attempts[i]);
        if self.failed {
            delay = delay.max(intensity.failed_retry);
        }
        Decision {
            class,
            attempt: self.attempts[i],
            delay,
            failure: true,
            failed: self.failed,
            newly_failed: self.failed && !was_failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn network_is_linear_250ms_a_try_up_to_16s() {
        let p = BackoffPolicy::default();
        assert_eq!(p.base_delay(FailureClass::Network, 1), ms(250));
        assert_eq!(p.base_delay(FailureClass::Network, 2), ms(500));
        assert_eq!(p.base_delay(FailureClass::Network, 10), ms(2500));
        assert_eq!(p.base_delay(FailureClass::Network, 64), ms(16_000));
        assert_eq!(p.base_delay(FailureClass::Network, 65), ms(16_000));
        assert_eq!(p.base_delay(FailureClass::Network, u32::MAX), ms(16_000));
    }

    #[test]
    fn server_errors_double_from_5s_up_to_320s() {
        let p = BackoffPolicy::default();
        let got: Vec<u64> = (1..=9).map(|n| p.base_delay(FailureClass::Server, n).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 80, 160, 320, 320, 320]);
        assert_eq!(p.base_delay(FailureClass::Server, u32::MAX).as_secs(), 320);
    }

    #[test]
    fn rate_limited_doubles_from_60s() {
        let p = BackoffPolicy::default();
        let got: Vec<u64> = (1..=6).map(|n| p.base_delay(FailureClass::RateLimited, n).as_secs()).collect();
        assert_eq!(got, vec![60, 120, 240, 480, 960, 960]);
    }

    #[test]
    fn config_errors_retry_slowly_and_drops_at_once() {
        let p = BackoffPolicy::default();
        assert_eq!(p.base_delay(FailureClass::Config, 1), Duration::from_secs(300));
        assert_eq!(p.base_delay(FailureClass::Config, 50), Duration::from_secs(300));
        assert_eq!(p.base_delay(FailureClass::Dropped, 3), Duration::ZERO);
        assert!(p.slowest() >= Duration::from_secs(300));
    }

    #[test]
    fn http_status_classes() {
        assert_eq!(FailureClass::of_http_status(429), FailureClass::RateLimited);
        assert_eq!(FailureClass::of_http_status(503), FailureClass::Server);
        assert_eq!(FailureClass::of_http_status(500), FailureClass::Server);
        for s in [400, 401, 403, 404, 406] {
            assert_eq!(FailureClass::of_http_status(s), FailureClass::Config, "{s}");
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let p = BackoffPolicy { jitter: 0.2, jitter_floor: ms(100), ..BackoffPolicy::default() };
        let d = Duration::from_secs(10);
        assert_eq!(p.jittered(d, 0.0, 0.0), ms(8000));
        assert_eq!(p.jittered(d, 0.5, 0.0), ms(10_000));
        assert!(p.jittered(d, 0.999_999, 0.999_999) <= ms(12_100));
        // A zero delay is spread by the floor only.
        assert_eq!(p.jittered(Duration::ZERO, 0.7, 0.5), ms(50));
        // Out-of-range randomness cannot produce a negative or huge delay.
        assert_eq!(p.jittered(d, -3.0, -1.0), ms(8000));
        assert!(p.jittered(d, 7.0, 9.0) <= ms(12_100));
    }

    #[test]
    fn stable_drop_reconnects_at_once_and_resets_counters() {
        let p = BackoffPolicy::default();
        let i = Intensity::default();
        let mut r = Restarts::new();
        let d1 = r.on_exit(&p, &i, FailureClass::Server, None, 0);
        let d2 = r.on_exit(&p, &i, FailureClass::Server, None, 1000);
        assert_eq!((d1.delay.as_secs(), d2.delay.as_secs()), (5, 10));
        let d = r.on_exit(&p, &i, FailureClass::Dropped, Some(Duration::from_secs(60)), 70_000);
        assert_eq!(d.delay, Duration::ZERO);
        assert!(!d.failure);
        assert_eq!(r.attempts(FailureClass::Server), 0);
        // After the reset, the next 5xx starts again at 5 s.
        let d = r.on_exit(&p, &i, FailureClass::Server, None, 71_000);
        assert_eq!(d.delay.as_secs(), 5);
    }

    #[test]
    fn a_drop_right_after_connecting_counts_as_a_network_failure() {
        let p = BackoffPolicy::default();
        let i = Intensity::default();
        let mut r = Restarts::new();
        let d = r.on_exit(&p, &i, FailureClass::Dropped, Some(ms(300)), 0);
        assert_eq!(d.class, FailureClass::Network);
        assert!(d.failure);
        assert_eq!(d.delay, ms(250));
        let d = r.on_exit(&p, &i, FailureClass::Dropped, Some(ms(300)), 500);
        assert_eq!(d.delay, ms(500), "never a tight loop: the delay grows");
    }

    #[test]
    fn a_stable_connection_that_then_fails_starts_the_count_again() {
        let p = BackoffPolicy::default();
        let i = Intensity::default();
        let mut r = Restarts::new();
        for n in 0..5 {
            r.on_exit(&p, &i, FailureClass::Network, None, n * 100);
        }
        assert_eq!(r.attempts(FailureClass::Network), 5);
        let d = r.on_exit(&p, &i, FailureClass::Network, Some(Duration::from_secs(30)), 40_000);
        assert_eq!(d.attempt, 1);
        assert_eq!(d.delay, ms(250));
    }

    #[test]
    fn classes_count_separately() {
        let p = BackoffPolicy::default();
        let i = Intensity::default();
        let mut r = Restarts::new();
        r.on_exit(&p, &i, FailureClass::Server, None, 0);
        r.on_exit(&p, &i, FailureClass::Server, None, 1);
        let d = r.on_exit(&p, &i, FailureClass::Network, None, 2);
        assert_eq!(d.delay, ms(250));
        let d = r.on_exit(&p, &i, FailureClass::Server, None, 3);
        assert_eq!(d.delay.as_secs(), 20);
    }

    #[test]
    fn restart_intensity_marks_failed_and_slows_to_the_slowest_pace() {
        let p = BackoffPolicy::default();
        let i = Intensity { max_failures: 3, window: Duration::from_secs(60), failed_retry: Duration::from_secs(320) };
        let mut r = Restarts::new();
        for n in 0..3 {
            let d = r.on_exit(&p, &i, FailureClass::Network, None, n * 1000);
            assert!(!d.failed);
        }
        let d = r.on_exit(&p, &i, FailureClass::Network, None, 3000);
        assert!(d.failed && d.newly_failed);
        assert_eq!(d.delay.as_secs(), 320);
        let d = r.on_exit(&p, &i, FailureClass::Network, None, 4000);
        assert!(d.failed && !d.newly_failed);
        assert!(r.is_failed());
        // A stable connection clears the mark.
        r.on_stable();
        assert!(!r.is_failed());
        assert_eq!(r.recent_failures(), 0);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let p = BackoffPolicy::default();
        let i = Intensity { max_failures: 3, window: Duration::from_secs(10), failed_retry: Duration::from_secs(320) };
        let mut r = Restarts::new();
        for n in 0..20u64 {
            // One failure every 4 s: at most 3 in any 10 s window.
            let d = r.on_exit(&p, &i, FailureClass::Server, None, n * 4000);
            assert!(!d.failed, "failure {n}");
        }
        assert!(r.recent_failures() <= 3);
    }
}
