//! The configuration file as written: every section and key of
//! `config/complyd.toml`, with its default (X's guidance where X gives one).
//! Nothing here is checked: [`Settings::plan`](super::Settings::plan) turns
//! these values into the [`Plan`](super::Plan) the program runs on.
//!
//! ```toml
//! [stream]
//! url = "https://gnip-stream.x.com/stream/compliance/accounts/{account}/publishers/twitter/{label}.json"
//! account = "acme"
//! label = "prod"
//! username = "ops@acme.example"
//! partitions = [1, 2, 3, 4, 5, 6, 7, 8]
//! ```

use crate::backoff::{BackoffPolicy, Intensity};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable the password is read from by default.
pub const DEFAULT_PASSWORD_ENV: &str = "COMPLYD_STREAM_PASSWORD";

/// The whole config file: what `complyd run` reads, and the `[store]` the
/// other commands read.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub stream: StreamSettings,
    pub batch: BatchSettings,
    pub handlers: HandlerSettings,
    pub backoff: BackoffSettings,
    pub limiter: LimiterSettings,
    pub restart: RestartSettings,
    pub replay: ReplaySettings,
    pub batch_job: BatchJobSettings,
    pub store: StoreSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
}

/// `[stream]`: where and how to connect.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// The stream URL from the console, without `partition=`. `{account}` and
    /// `{label}` are replaced by the keys below.
    pub url: String,
    pub account: String,
    pub label: String,
    /// The console account's e-mail (HTTP Basic user).
    pub username: String,
    /// The environment variable holding the password.
    pub password_env: String,
    /// A file holding the password (first line); takes precedence over
    /// `password_env`.
    pub password_file: Option<PathBuf>,
    /// The partitions to consume (1-8; all 8 are needed for the whole stream).
    pub partitions: Vec<u8>,
    /// Connect + TLS + response headers.
    pub connect_timeout_ms: u64,
    /// No byte (heartbeats included) for this long: reconnect. X requires
    /// more than 30 s (heartbeats come every 10-15 s).
    pub idle_timeout_ms: u64,
    /// Longer lines are dead-lettered; memory stays bounded.
    pub max_line_bytes: usize,
    /// Threads (actix arbiters) the partition streams run on.
    pub threads: usize,
    /// On reconnect after a gap, ask for `backfillMinutes` (1-5) covering it.
    /// 0 (default) never asks: backfill is unconfirmed for the compliance
    /// stream.
    pub backfill_minutes: u32,
    /// A PEM file of CA certificates trusted instead of the built-in roots
    /// (Mozilla's) by every HTTPS request: the stream, Replay, the batch
    /// compliance jobs (`crate::tls`).
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for StreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No secret lives here, but keep the shape explicit.
        f.debug_struct("StreamSettings")
            .field("url", &self.url)
            .field("account", &self.account)
            .field("label", &self.label)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("partitions", &self.partitions)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("threads", &self.threads)
            .field("backfill_minutes", &self.backfill_minutes)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            url: "https://gnip-stream.x.com/stream/compliance/accounts/{account}/publishers/twitter/{label}.json"
                .to_owned(),
            account: String::new(),
            label: "prod".to_owned(),
            username: String::new(),
            password_env: DEFAULT_PASSWORD_ENV.to_owned(),
            password_file: None,
            partitions: (1..=8).collect(),
            connect_timeout_ms: 10_000,
            idle_timeout_ms: 35_000,
            max_line_bytes: 1 << 20,
            threads: 2,
            backfill_minutes: 0,
            ca_file: None,
        }
    }
}

/// `[batch]`: how a partition groups parsed events before handing them on.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// A batch is handed on when it holds this many events...
    pub max_events: usize,
    /// ...or when its oldest event has waited this long.
    pub linger_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings { max_events: 4096, linger_ms: 50 }
    }
}

/// `[handlers]`: the status and user handlers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerSettings {
    /// Events waiting for each handler, in batches: while a handler commits
    /// one transaction, up to `in_flight x batch.max_events` events wait and
    /// form its next transaction (group commit). Past this the router waits,
    /// and so do the partitions (backpressure).
    pub in_flight: usize,
    /// A failed commit is retried after this delay (never dropped).
    pub commit_retry_ms: u64,
    /// The per-post work kept off the event path (purges, geo removal) runs
    /// this often...
    pub maintain_interval_ms: u64,
    /// ...on at most this many users a pass.
    pub maintain_max_users: usize,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        HandlerSettings {
            in_flight: 16,
            commit_retry_ms: 1_000,
            maintain_interval_ms: 60_000,
            maintain_max_users: 1_000,
        }
    }
}

/// `[backoff]`: the reconnect delays per failure class (see `backoff.rs`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSettings {
    pub stable_after_ms: u64,
    pub network_step_ms: u64,
    pub network_max_ms: u64,
    pub server_initial_ms: u64,
    pub server_max_ms: u64,
    pub rate_limited_initial_ms: u64,
    pub rate_limited_max_ms: u64,
    pub config_retry_ms: u64,
    /// Every delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
    /// Plus a random extra in [0, jitter_floor_ms).
    pub jitter_floor_ms: u64,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        let p = BackoffPolicy::default();
        let ms = |d: Duration| d.as_millis() as u64;
        BackoffSettings {
            stable_after_ms: ms(p.stable_after),
            network_step_ms: ms(p.network_step),
            network_max_ms: ms(p.network_max),
            server_initial_ms: ms(p.server_initial),
            server_max_ms: ms(p.server_max),
            rate_limited_initial_ms: ms(p.rate_limited_initial),
            rate_limited_max_ms: ms(p.rate_limited_max),
            config_retry_ms: ms(p.config_retry),
            jitter: p.jitter,
            jitter_floor_ms: ms(p.jitter_floor),
        }
    }
}

impl BackoffSettings {
    pub fn policy(&self) -> BackoffPolicy {
        let d = Duration::from_millis;
        BackoffPolicy {
            stable_after: d(self.stable_after_ms),
            network_step: d(self.network_step_ms),
            network_max: d(self.network_max_ms),
            server_initial: d(self.server_initial_ms),
            server_max: d(self.server_max_ms),
            rate_limited_initial: d(self.rate_limited_initial_ms),
            rate_limited_max: d(self.rate_limited_max_ms),
            config_retry: d(self.config_retry_ms),
            jitter: self.jitter,
            jitter_floor: d(self.jitter_floor_ms),
        }
    }
}

/// `[limiter]`: connection requests of all partitions together.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimiterSettings {
    pub max_requests: usize,
    pub window_ms: u64,
    /// Added to the window, for the clock and network skew between us and
    /// the server.
    pub margin_ms: u64,
    /// Where the recent connection requests are kept, so that a restart
    /// counts those of the previous run (default: beside the SQLite store,
    /// `PATH.connections.json`).
    pub state_file: Option<PathBuf>,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        LimiterSettings { max_requests: 10, window_ms: 60_000, margin_ms: 1_000, state_file: None }
    }
}

/// `[replay]`: repairing the gaps of the ledger through X's Replay endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySettings {
    pub enabled: bool,
    /// The Replay URL; empty: the stream URL with `/stream/` replaced by
    /// `/replay/` (`{account}` and `{label}` are replaced too).
    pub url: String,
    /// A gap is replayed once its end is this old (X serves nothing more
    /// recent than about 30 minutes).
    pub freshness_ms: u64,
    /// At most this much event time per request (X recommends about 2 h).
    pub max_window_ms: u64,
    /// Requests allowed per `window_ms` (X: 5 per 5 minutes).
    pub max_requests: usize,
    pub window_ms: u64,
    /// How often the daemon looks for a gap to repair.
    pub check_interval_ms: u64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        ReplaySettings {
            enabled: true,
            url: String::new(),
            freshness_ms: 30 * 60_000,
            max_window_ms: 2 * 3_600_000,
            max_requests: 5,
            window_ms: 300_000,
            check_interval_ms: 5_000,
        }
    }
}

/// `[batch_job]`: X API v2 batch compliance jobs (`complyd batch-job`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchJobSettings {
    /// The X API's base URL (`/2/compliance/jobs` is appended).
    pub url: String,
    /// The environment variable holding the app's bearer token...
    pub bearer_token_env: String,
    /// ...or a file whose first line is the token (wins when set).
    pub bearer_token_file: Option<PathBuf>,
    /// Ids per job: a longer list is split into several jobs, one after
    /// the other (X allows one job of a type at a time).
    pub max_ids: u64,
    /// How often a job in progress is looked at, unless X estimates its
    /// completion (then complyd waits until then).
    pub poll_interval_ms: u64,
    /// The command stops waiting for one job after this long (exit 2; run it
    /// again to resume the same job).
    pub max_wait_ms: u64,
    /// Jobs one command creates for one part of the ids (a failed or expired
    /// job is replaced by a new one) before it gives up.
    pub attempts: u32,
}

/// The environment variable the bearer token is read from by default.
pub const DEFAULT_BEARER_TOKEN_ENV: &str = "COMPLYD_BEARER_TOKEN";

impl Default for BatchJobSettings {
    fn default() -> Self {
        BatchJobSettings {
            url: "https://api.x.com".to_owned(),
            bearer_token_env: DEFAULT_BEARER_TOKEN_ENV.to_owned(),
            bearer_token_file: None,
            max_ids: 1_000_000,
            poll_interval_ms: 30_000,
            max_wait_ms: 24 * 3_600_000,
            attempts: 3,
        }
    }
}

/// `[restart]`: restart intensity per partition.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RestartSettings {
    /// More failures than this within `window_ms` mark the partition failed
    /// (`/readyz` says so); it keeps retrying every `failed_retry_ms`.
    pub max_failures: usize,
    pub window_ms: u64,
    pub failed_retry_ms: u64,
}

impl Default for RestartSettings {
    fn default() -> Self {
        let i = Intensity::default();
        RestartSettings {
            max_failures: i.max_failures,
            window_ms: i.window.as_millis() as u64,
            failed_retry_ms: i.failed_retry.as_millis() as u64,
        }
    }
}

impl RestartSettings {
    pub fn intensity(&self) -> Intensity {
        Intensity {
            max_failures: self.max_failures,
            window: Duration::from_millis(self.window_ms),
            failed_retry: Duration::from_millis(self.failed_retry_ms),
        }
    }
}

/// `[store]`: the dataset, and where bad lines go.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite:PATH` or `postgres://...`.
    pub url: String,
    /// Where bad lines go; default: beside the store (`PATH.deadletter.jsonl`).
    pub dead_letter: Option<PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings { url: "sqlite:complyd.db".to_owned(), dead_letter: None }
    }
}

/// `[http]`: `/healthz`, `/readyz`, `/metrics` and the query API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub enabled: bool,
    pub listen: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// `GET /v1/posts/{id}` and `POST /v1/posts/check`.
    pub query: bool,
    /// Store connections kept for the query API (reads only).
    pub read_connections: usize,
    /// The environment variable holding the admin bearer token. The admin
    /// endpoint (`/v1/admin/explain/{id}`) is off unless a token is set here
    /// or in `admin_token_file`.
    pub admin_token_env: String,
    /// A file holding the admin bearer token (first line).
    pub admin_token_file: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            enabled: true,
            listen: "127.0.0.1:8080".to_owned(),
            workers: 2,
            query: true,
            read_connections: 4,
            admin_token_env: String::new(),
            admin_token_file: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON for `complyd run`, human-readable for `complyd demo`.
    #[default]
    Auto,
    /// One JSON object a line (for a log collector).
    Json,
    /// Human-readable lines.
    Human,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `complyd=debug,actix=warn`... The
    /// environment variable `COMPLYD_LOG` takes precedence.
    pub level: String,
    /// At most this many lines a minute for one repeated error (same place,
    /// same reason); the rest are counted and summarised.
    pub repeat_per_minute: u32,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { format: LogFormat::Auto, level: "info".to_owned(), repeat_per_minute: 5 }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// After SIGINT/SIGTERM: stop reading, commit what is in flight, exit;
    /// whatever is not committed by then is left uncommitted (its positions
    /// too, so the gap stays known).
    pub timeout_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings { timeout_ms: 9_000 }
    }
}
