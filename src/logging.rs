//! Log set-up (JSON or human-readable, chosen in `[log]`) and the gate that
//! keeps one repeated error from flooding the log.
//!
//! Every line is structured: fields first, then a short message. Secrets
//! never reach a field: the password and the admin token are [`Secret`]s
//! that print as `***`, and store URLs are logged through `redact_url`.
//!
//! [`Secret`]: crate::settings::Secret

use crate::settings::{LogFormat, LogSettings};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Installs the process's subscriber on stderr (once; later calls do
/// nothing). The filter is `COMPLYD_LOG` when set, else `settings.level`,
/// else `default_level`. `auto` resolves to `auto_format`.
pub fn init(settings: Option<&LogSettings>, auto_format: LogFormat, default_level: &str) {
    let filter = filter(settings, default_level);
    let format = match settings.map_or(LogFormat::Auto, |s| s.format) {
        LogFormat::Auto => auto_format,
        f => f,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Human | LogFormat::Auto => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
        }
    };
}

/// The demo on a terminal: the whole log (filtered as `[log]` says,
/// human-readable) goes to `file`, and only warnings and errors to stderr,
/// so the live status stays readable (once; later calls do nothing).
pub fn init_split(settings: Option<&LogSettings>, default_level: &str, file: std::fs::File) {
    use tracing_subscriber::prelude::*;
    let filter = filter(settings, default_level);
    let to_file = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(Mutex::new(file)).with_filter(filter);
    let to_terminal = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    let _ = tracing_subscriber::registry().with(to_file).with(to_terminal).try_init();
}

/// The filter: `COMPLYD_LOG` when set, else `[log] level`, else
/// `default_level`; sets the repeat limit on the way.
fn filter(settings: Option<&LogSettings>, default_level: &str) -> tracing_subscriber::EnvFilter {
    let level = settings.map_or(default_level, |s| s.level.as_str());
    if let Some(s) = settings {
        set_repeat_limit(s.repeat_per_minute);
    }
    tracing_subscriber::EnvFilter::try_from_env("COMPLYD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
}

static LIMIT: AtomicU32 = AtomicU32::new(5);

/// Lines a minute allowed for one repeated error (`log.repeat_per_minute`).
pub fn set_repeat_limit(per_minute: u32) {
    LIMIT.store(per_minute.max(1), Relaxed);
}

/// One error's window.
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Rate-limits one repeated error: `key` names the place and the reason
/// (`"commit-again:status"`, `"stream-failed:3:network"`). Returns `Some(n)` when this
/// occurrence may be logged, `n` being how many were suppressed since the
/// last logged one (put it in a `suppressed` field); `None` to stay quiet.
pub fn allow(key: &str) -> Option<u64> {
    allow_at(key, Instant::now())
}

fn allow_at(key: &str, now: Instant) -> Option<u64> {
    static WINDOWS: OnceLock<Mutex<HashMap<String, Window>>> = OnceLock::new();
    let limit = LIMIT.load(Relaxed);
    let mut map = WINDOWS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    // Keys are few (places x partitions x reasons); forget idle ones anyway.
    if map.len() > 4096 {
        map.retain(|_, w| now.duration_since(w.started) < Duration::from_secs(60));
    }
    let w = map.entry(key.to_owned()).or_insert(Window { started: now, logged: 0, suppressed: 0 });
    if now.duration_since(w.started) >= Duration::from_secs(60) {
        w.started = now;
        w.logged = 0;
    }
    if w.logged < limit {
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    } else {
        w.suppressed += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_logged_a_few_times_a_minute_then_summarised() {
        let t0 = Instant::now();
        let key = "test:repeat";
        let limit = LIMIT.load(Relaxed) as usize;
        let first: Vec<Option<u64>> = (0..limit + 3).map(|_| allow_at(key, t0)).collect();
        assert!(first[..limit].iter().all(|a| *a == Some(0)), "{first:?}");
        assert!(first[limit..].iter().all(Option::is_none), "{first:?}");
        // A minute later: allowed again, with the count of the quiet ones.
        assert_eq!(allow_at(key, t0 + Duration::from_secs(61)), Some(3));
        assert_eq!(allow_at("test:other", t0), Some(0), "keys are independent");
    }
}
