//! The daemon's configuration (`complyd run --config FILE`): the stream, the
//! batching, the reconnect policy, the connection limiter, the restart
//! intensity, the store, the HTTP endpoint and the shutdown budget. Every key
//! has a default (X's guidance where X gives one); `validate` lists every
//! problem at once.
//!
//! The password is never a flag and never logged: it comes from the file
//! named by `stream.password_file`, or else from the environment variable
//! named by `stream.password_env` (default `COMPLYD_STREAM_PASSWORD`).
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
use crate::settings::{ConfigErrors, StoreSettings};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable the password is read from by default.
pub const DEFAULT_PASSWORD_ENV: &str = "COMPLYD_STREAM_PASSWORD";

/// Everything `complyd run` reads from its config file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    pub stream: StreamSettings,
    pub batch: BatchSettings,
    pub handlers: HandlerSettings,
    pub backoff: BackoffSettings,
    pub limiter: LimiterSettings,
    pub restart: RestartSettings,
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

impl HttpSettings {
    /// The admin token: None when none is configured (the endpoint is off).
    ///
    /// # Errors
    /// A configured source that holds no token (never the value).
    pub fn admin_token(&self) -> Result<Option<Secret>, String> {
        if let Some(path) = &self.admin_token_file {
            return read_secret_file(path, "http.admin_token_file").map(Some);
        }
        if self.admin_token_env.is_empty() {
            return Ok(None);
        }
        match std::env::var(&self.admin_token_env) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(format!(
                "http.admin_token_env names {}, which is not set: set it, or clear http.admin_token_env to turn the admin endpoint off",
                self.admin_token_env
            )),
        }
    }
}

/// The first line of a secret file.
fn read_secret_file(path: &Path, key: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{key} {}: empty", path.display()));
    }
    Ok(Secret(line.to_owned()))
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

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself: only for building the Authorization header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl StreamSettings {
    /// The stream URL of one partition, with `backfillMinutes` when asked.
    pub fn partition_url(&self, partition: u8, backfill_minutes: Option<u32>) -> String {
        let mut url = self.url.replace("{account}", &self.account).replace("{label}", &self.label);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("partition={partition}"));
        if let Some(m) = backfill_minutes.filter(|m| *m > 0) {
            url.push_str(&format!("&backfillMinutes={}", m.min(5)));
        }
        url
    }

    /// The password: the first line of `password_file`, or the variable named
    /// by `password_env`.
    ///
    /// # Errors
    /// Where it was looked for and why it was not found (never the value).
    pub fn password(&self) -> Result<Secret, String> {
        if let Some(path) = &self.password_file {
            return read_secret_file(path, "stream.password_file");
        }
        if self.password_env.is_empty() {
            return Err("stream: no password source: set stream.password_file or stream.password_env".to_owned());
        }
        match std::env::var(&self.password_env) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            _ => Err(format!(
                "stream: the password is missing: set the environment variable {} (stream.password_env) or stream.password_file",
                self.password_env
            )),
        }
    }
}

impl DaemonSettings {
    /// Loads `path` (TOML), then `COMPLYD_SECTION__KEY` environment
    /// overrides (e.g. `COMPLYD_STORE__URL`, `COMPLYD_STREAM__USERNAME`).
    /// Variables without `__` (`COMPLYD_LOG`, the password variable) are not
    /// configuration keys and are left alone.
    ///
    /// # Errors
    /// [`ConfigErrors`] naming every unknown key and every value of the
    /// wrong type at once.
    pub fn load(path: Option<&Path>) -> Result<DaemonSettings, ConfigErrors> {
        let (s, problems) = DaemonSettings::load_lenient(path)?;
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// [`DaemonSettings::load`] that goes on past unknown keys and values of
    /// the wrong type: the settings read (defaults where a value was
    /// refused) and every such problem, so that `validate` can list them
    /// with the others.
    ///
    /// # Errors
    /// A file that is missing or is not TOML (nothing more can be checked).
    pub fn load_lenient(path: Option<&Path>) -> Result<(DaemonSettings, Vec<String>), ConfigErrors> {
        let mut b = config::Config::builder();
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigErrors(vec![format!("{}: no such config file", p.display())]));
            }
            b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
        }
        let overrides: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.strip_prefix("COMPLYD_").is_some_and(|rest| rest.contains("__")))
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("COMPLYD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let cfg = b.build().map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        let tree: serde_json::Value = cfg.try_deserialize().map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        Ok(DaemonSettings::from_tree(tree))
    }

    /// Typed settings from a parsed tree: unknown keys are listed and
    /// dropped, then each value of the wrong type is listed and replaced by
    /// its default, so one pass reports every such problem.
    pub fn from_tree(mut tree: serde_json::Value) -> (DaemonSettings, Vec<String>) {
        let mut problems = Vec::new();
        let known = serde_json::to_value(DaemonSettings::default()).unwrap_or_default();
        drop_unknown_keys(&known, &mut tree, "", &mut problems);
        // Each refused value is removed (its default applies) and the rest
        // read again: at most one round per key.
        for _ in 0..256 {
            match serde_path_to_error::deserialize::<_, DaemonSettings>(&tree) {
                Ok(s) => return (s, problems),
                Err(e) => {
                    let at = e.path().to_string();
                    problems.push(format!("{at}: {}", e.inner()));
                    if !remove_path(&mut tree, &at) {
                        break;
                    }
                }
            }
        }
        (DaemonSettings::default(), problems)
    }

    /// Parses TOML text (tests, the demo's embedded defaults).
    ///
    /// # Errors
    /// The TOML error, or every unknown key and refused value.
    pub fn from_toml(text: &str) -> Result<DaemonSettings, ConfigErrors> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        let tree = serde_json::to_value(table).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        match DaemonSettings::from_tree(tree) {
            (s, p) if p.is_empty() => Ok(s),
            (_, p) => Err(ConfigErrors(p)),
        }
    }

    /// Every problem of the configuration (empty when it is usable),
    /// including values X's rules forbid ([`DaemonSettings::rule_problems`]).
    /// The password and the admin token are looked up (never printed).
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.validate_without_password();
        p.extend(self.rule_problems());
        if let Err(e) = self.stream.password() {
            p.push(e);
        }
        if let Err(e) = self.http.admin_token() {
            p.push(e);
        }
        p
    }

    /// Values that work mechanically but break X's rules: `complyd run` and
    /// `complyd validate` refuse them; the library (tests, benchmarks with
    /// short timeouts) only warns.
    pub fn rule_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.stream.idle_timeout_ms <= 30_000 {
            p.push(format!(
                "stream.idle_timeout_ms {} breaks X's rules: the read timeout must be above 30000 (heartbeats come every 10-15 s)",
                self.stream.idle_timeout_ms
            ));
        }
        if self.limiter.max_requests > 10 || self.limiter.window_ms < 60_000 {
            p.push(format!(
                "limiter allows {} connection requests per {} ms: X allows 10 per 60000 (HTTP 429 past that)",
                self.limiter.max_requests, self.limiter.window_ms
            ));
        }
        p
    }

    /// [`DaemonSettings::validate`] without the password lookup (for a
    /// caller that supplies the password itself).
    pub fn validate_without_password(&self) -> Vec<String> {
        let mut p = Vec::new();
        let s = &self.stream;
        if s.url.trim().is_empty() {
            p.push("stream.url is empty: set the stream URL from the console".to_owned());
        } else {
            let url = s.partition_url(1, None);
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                p.push(format!("stream.url {:?} is not an http(s) URL", s.url));
            } else if awc::http::Uri::try_from(url.as_str()).is_err() {
                p.push(format!(
                    "stream.url {:?} is not a valid URL (after replacing {{account}} and {{label}})",
                    s.url
                ));
            }
            if let Some(host) = plain_http_host(&url).filter(|h| !is_loopback(h)) {
                p.push(format!(
                    "stream.url uses http:// to {host}, which is not loopback: the password would cross the network in clear; use https://"
                ));
            }
            if s.url.contains("partition=") {
                p.push("stream.url must not carry partition=: set stream.partitions instead".to_owned());
            }
            if s.url.contains("{account}") && s.account.trim().is_empty() {
                p.push("stream.account is empty but stream.url uses {account}".to_owned());
            }
            if s.url.contains("{label}") && s.label.trim().is_empty() {
                p.push("stream.label is empty but stream.url uses {label}".to_owned());
            }
        }
        if s.username.trim().is_empty() {
            p.push("stream.username is empty: set the console account's e-mail".to_owned());
        }
        if s.partitions.is_empty() {
            p.push("stream.partitions is empty: list 1 to 8".to_owned());
        }
        for (i, n) in s.partitions.iter().enumerate() {
            if !(1..=8).contains(n) {
                p.push(format!("stream.partitions: {n} is not a partition (1-8)"));
            }
            if s.partitions[..i].contains(n) {
                p.push(format!("stream.partitions: {n} is listed twice"));
            }
        }
        if s.connect_timeout_ms == 0 {
            p.push("stream.connect_timeout_ms must be > 0".to_owned());
        }
        if s.idle_timeout_ms == 0 {
            p.push("stream.idle_timeout_ms must be > 0 (X requires more than 30000)".to_owned());
        }
        if s.max_line_bytes < 1024 {
            p.push(format!("stream.max_line_bytes {} is too small (at least 1024)", s.max_line_bytes));
        }
        if s.max_line_bytes > 64 << 20 {
            p.push(format!("stream.max_line_bytes {} is too large (at most 64 MiB)", s.max_line_bytes));
        }
        if s.threads == 0 || s.threads > 64 {
            p.push(format!("stream.threads {} must be 1 to 64", s.threads));
        }
        if s.backfill_minutes > 5 {
            p.push(format!("stream.backfill_minutes {} must be 0 (off) to 5", s.backfill_minutes));
        }
        if self.batch.max_events == 0 {
            p.push("batch.max_events must be > 0".to_owned());
        }
        if self.batch.linger_ms > 60_000 {
            p.push(format!("batch.linger_ms {} is over a minute", self.batch.linger_ms));
        }
        let h = &self.handlers;
        if h.in_flight == 0 || h.in_flight > 64 {
            p.push(format!("handlers.in_flight {} must be 1 to 64", h.in_flight));
        }
        if h.commit_retry_ms == 0 {
            p.push("handlers.commit_retry_ms must be > 0".to_owned());
        }
        if h.maintain_interval_ms == 0 {
            p.push("handlers.maintain_interval_ms must be > 0".to_owned());
        }
        if h.maintain_max_users == 0 {
            p.push("handlers.maintain_max_users must be > 0".to_owned());
        }
        let b = &self.backoff;
        if !(0.0..=1.0).contains(&b.jitter) {
            p.push(format!("backoff.jitter {} must be within 0 and 1", b.jitter));
        }
        for (name, v) in [
            ("backoff.network_step_ms", b.network_step_ms),
            ("backoff.network_max_ms", b.network_max_ms),
            ("backoff.server_initial_ms", b.server_initial_ms),
            ("backoff.server_max_ms", b.server_max_ms),
            ("backoff.rate_limited_initial_ms", b.rate_limited_initial_ms),
            ("backoff.rate_limited_max_ms", b.rate_limited_max_ms),
            ("backoff.config_retry_ms", b.config_retry_ms),
        ] {
            if v == 0 {
                p.push(format!("{name} must be > 0 (never reconnect in a tight loop)"));
            }
        }
        for (lo, lo_v, hi, hi_v) in [
            ("backoff.network_step_ms", b.network_step_ms, "backoff.network_max_ms", b.network_max_ms),
            ("backoff.server_initial_ms", b.server_initial_ms, "backoff.server_max_ms", b.server_max_ms),
            (
                "backoff.rate_limited_initial_ms",
                b.rate_limited_initial_ms,
                "backoff.rate_limited_max_ms",
                b.rate_limited_max_ms,
            ),
        ] {
            if lo_v > hi_v {
                p.push(format!("{lo} ({lo_v}) is larger than {hi} ({hi_v})"));
            }
        }
        let l = &self.limiter;
        if l.max_requests == 0 {
            p.push("limiter.max_requests must be > 0".to_owned());
        }
        if l.window_ms == 0 {
            p.push("limiter.window_ms must be > 0".to_owned());
        }
        let r = &self.restart;
        if r.max_failures == 0 {
            p.push("restart.max_failures must be > 0".to_owned());
        }
        if r.window_ms == 0 {
            p.push("restart.window_ms must be > 0".to_owned());
        }
        if r.failed_retry_ms == 0 {
            p.push("restart.failed_retry_ms must be > 0".to_owned());
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            p.push(format!("store.url {:?} is not sqlite:PATH or postgres://...", crate::store::redact_url(url)));
        } else if url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).is_some_and(str::is_empty) {
            p.push("store.url sqlite: has no path".to_owned());
        }
        if self.http.enabled && self.http.listen.parse::<SocketAddr>().is_err() {
            p.push(format!("http.listen {:?} is not an address:port", self.http.listen));
        }
        if self.http.workers == 0 || self.http.workers > 64 {
            p.push(format!("http.workers {} must be 1 to 64", self.http.workers));
        }
        if self.http.read_connections == 0 || self.http.read_connections > 64 {
            p.push(format!("http.read_connections {} must be 1 to 64", self.http.read_connections));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(format!(
                "log.level {:?} is not a log filter (e.g. info, debug, complyd=debug): {e}",
                self.log.level
            ));
        }
        if self.log.repeat_per_minute == 0 {
            p.push("log.repeat_per_minute must be > 0".to_owned());
        }
        if self.shutdown.timeout_ms == 0 || self.shutdown.timeout_ms > 60_000 {
            p.push(format!("shutdown.timeout_ms {} must be 1 to 60000", self.shutdown.timeout_ms));
        }
        p
    }

    /// Values that work but deserve a line in the log.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.stream.partitions.len() < 8 {
            w.push(format!(
                "only {} of the 8 partitions configured: the stream is incomplete",
                self.stream.partitions.len()
            ));
        }
        w
    }

    /// The connection limiter's state file.
    pub fn limiter_state_path(&self) -> PathBuf {
        if let Some(p) = &self.limiter.state_file {
            return p.clone();
        }
        crate::settings::beside_store(&self.store.url, "connections.json")
    }

    /// The dead-letter file of this store.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.store.dead_letter_for(&self.store.url)
    }
}

/// The host of an `http://` URL (None for https and anything else).
fn plain_http_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    Some(host.to_ascii_lowercase())
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Lists (and removes) every key of `got` that `known` (the defaults) does
/// not have, with the keys its section does have.
fn drop_unknown_keys(known: &serde_json::Value, got: &mut serde_json::Value, prefix: &str, problems: &mut Vec<String>) {
    let (Some(k), Some(g)) = (known.as_object(), got.as_object_mut()) else { return };
    let unknown: Vec<String> = g.keys().filter(|key| !k.contains_key(key.as_str())).cloned().collect();
    for key in unknown {
        g.remove(&key);
        let valid: Vec<&str> = k.keys().map(String::as_str).collect();
        if prefix.is_empty() {
            problems.push(format!("unknown section [{key}] (sections: {})", valid.join(", ")));
        } else {
            problems.push(format!(
                "unknown key {prefix}{key} (keys of [{}]: {})",
                prefix.trim_end_matches('.'),
                valid.join(", ")
            ));
        }
    }
    for (key, value) in g.iter_mut() {
        if let Some(kv) = k.get(key).filter(|v| v.is_object()) {
            drop_unknown_keys(kv, value, &format!("{prefix}{key}."), problems);
        }
    }
}

/// Removes the value at a dotted path (`stream.idle_timeout_ms`, or
/// `stream.partitions[2]`'s whole key); false when there is nothing to remove.
fn remove_path(tree: &mut serde_json::Value, path: &str) -> bool {
    let keys: Vec<&str> =
        path.split('.').map(|k| k.split('[').next().unwrap_or(k)).filter(|k| !k.is_empty() && *k != "?").collect();
    let Some((last, parents)) = keys.split_last() else { return false };
    let mut node = tree;
    for k in parents {
        match node.get_mut(*k) {
            Some(n) => node = n,
            None => return false,
        }
    }
    node.as_object_mut().is_some_and(|o| o.remove(*last).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> DaemonSettings {
        let mut s = DaemonSettings::default();
        s.stream.account = "acme".into();
        s.stream.username = "ops@acme.example".into();
        s.stream.password_env = "COMPLYD_TEST_PASSWORD_VALID".into();
        std::env::set_var("COMPLYD_TEST_PASSWORD_VALID", "hunter2");
        s
    }

    #[test]
    fn defaults_follow_x_guidance() {
        let s = DaemonSettings::default();
        assert_eq!(s.stream.idle_timeout_ms, 35_000);
        assert_eq!(s.stream.max_line_bytes, 1 << 20);
        assert_eq!(s.stream.partitions, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!((s.limiter.max_requests, s.limiter.window_ms), (10, 60_000));
        assert_eq!(s.backoff.policy(), BackoffPolicy::default());
        assert_eq!(s.restart.intensity(), Intensity::default());
    }

    #[test]
    fn a_complete_config_is_valid() {
        assert_eq!(valid().validate(), Vec::<String>::new());
        assert!(valid().warnings().is_empty());
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let mut s = valid();
        s.stream.username.clear();
        s.stream.partitions = vec![0, 3, 3, 9];
        s.stream.password_env = "COMPLYD_TEST_PASSWORD_SURELY_UNSET".into();
        s.backoff.jitter = 2.0;
        s.limiter.max_requests = 0;
        s.store.url = "mysql://x".into();
        s.http.listen = "nowhere".into();
        let p = s.validate();
        let joined = p.join("\n");
        for needle in [
            "stream.username",
            "0 is not a partition",
            "3 is listed twice",
            "9 is not a partition",
            "COMPLYD_TEST_PASSWORD_SURELY_UNSET",
            "backoff.jitter",
            "limiter.max_requests",
            "store.url",
            "http.listen",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
    }

    #[test]
    fn partition_urls() {
        let s = valid();
        assert_eq!(
            s.stream.partition_url(3, None),
            "https://gnip-stream.x.com/stream/compliance/accounts/acme/publishers/twitter/prod.json?partition=3"
        );
        let mut t = s.stream.clone();
        t.url = "http://127.0.0.1:9/stream?x=1".into();
        assert_eq!(t.partition_url(8, Some(7)), "http://127.0.0.1:9/stream?x=1&partition=8&backfillMinutes=5");
        assert_eq!(t.partition_url(8, Some(0)), "http://127.0.0.1:9/stream?x=1&partition=8");
    }

    #[test]
    fn the_password_never_prints() {
        let s = valid();
        let pw = s.stream.password().unwrap();
        assert_eq!(pw.expose(), "hunter2");
        assert!(!format!("{pw:?} {pw} {s:?}").contains("hunter2"));
    }

    #[test]
    fn password_file_wins_and_reads_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\r\nignored\n").unwrap();
        let mut s = valid();
        s.stream.password_file = Some(f);
        assert_eq!(s.stream.password().unwrap().expose(), "s3cret");
        s.stream.password_file = Some(dir.path().join("missing"));
        assert!(s.stream.password().unwrap_err().contains("missing"));
    }

    #[test]
    fn toml_keys_and_unknown_keys() {
        let s = DaemonSettings::from_toml(
            "[stream]\nurl = \"http://127.0.0.1:1/s\"\npartitions = [1, 2]\nidle_timeout_ms = 2000\n[limiter]\nmax_requests = 5\n",
        )
        .unwrap();
        assert_eq!(s.stream.partitions, vec![1, 2]);
        assert_eq!(s.limiter.max_requests, 5);
        assert_eq!(s.limiter.window_ms, 60_000);
        assert!(!s.warnings().is_empty());
        assert!(s.rule_problems()[0].contains("stream.idle_timeout_ms 2000"), "{:?}", s.rule_problems());
        assert!(DaemonSettings::from_toml("[stream]\npasword = \"x\"\n").is_err());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_all_listed_with_the_other_problems() {
        let tree = serde_json::json!({
            "stream": {"pasword": "x", "idle_timeout_ms": "soon", "partitions": [1, 9]},
            "batch": {"max_events": -1},
            "strem": {},
            "http": {"listen": "nowhere", "admin_tokn": "t"}
        });
        let (s, mut p) = DaemonSettings::from_tree(tree);
        p.extend(s.validate_without_password());
        p.extend(s.rule_problems());
        let joined = p.join("\n");
        for needle in [
            "unknown key stream.pasword",
            "unknown section [strem]",
            "unknown key http.admin_tokn",
            "stream.idle_timeout_ms: invalid type",
            "batch.max_events: invalid value",
            "9 is not a partition",
            "http.listen",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
        // A refused value falls back to its default; the rest is kept.
        assert_eq!(s.stream.idle_timeout_ms, 35_000);
        assert_eq!(s.stream.partitions, vec![1, 9]);
    }

    #[test]
    fn plain_http_is_refused_unless_loopback() {
        let mut s = valid();
        for (url, refused) in [
            ("http://127.0.0.1:8080/s", false),
            ("http://localhost/s", false),
            ("http://[::1]:9/s", false),
            ("http://user@127.0.0.2:9/s", false),
            ("https://stream.example.com/s", false),
            ("http://stream.example.com/s", true),
            ("http://10.0.0.7:8080/s", true),
        ] {
            s.stream.url = url.into();
            let p = s.validate_without_password();
            assert_eq!(p.iter().any(|m| m.contains("in clear")), refused, "{url}: {p:?}");
        }
    }

    #[test]
    fn x_rules_are_problems_for_validate() {
        let mut s = valid();
        s.stream.idle_timeout_ms = 30_000;
        s.limiter.max_requests = 11;
        let p = s.validate();
        assert!(p.iter().any(|m| m.contains("stream.idle_timeout_ms 30000")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("limiter allows 11")), "{p:?}");
        assert!(s.validate_without_password().is_empty(), "the library only warns");
    }

    #[test]
    fn the_admin_token_is_off_by_default_and_never_printed() {
        let mut s = valid();
        assert_eq!(s.http.admin_token(), Ok(None));
        s.http.admin_token_env = "COMPLYD_TEST_ADMIN_TOKEN_SURELY_UNSET".into();
        let e = s.validate().join("\n");
        assert!(e.contains("COMPLYD_TEST_ADMIN_TOKEN_SURELY_UNSET"), "{e}");
        std::env::set_var("COMPLYD_TEST_ADMIN_TOKEN_SET", "tok-123");
        s.http.admin_token_env = "COMPLYD_TEST_ADMIN_TOKEN_SET".into();
        let t = s.http.admin_token().unwrap().unwrap();
        assert_eq!(t.expose(), "tok-123");
        assert!(!format!("{t:?} {t} {s:?}").contains("tok-123"));
    }

    #[test]
    fn log_level_must_be_a_filter() {
        let mut s = valid();
        s.log.level = "complyd=loud".into();
        assert!(s.validate().iter().any(|m| m.contains("log.level")));
    }

    #[test]
    fn load_reads_a_file_and_ignores_non_key_variables() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[store]\nurl = \"sqlite:/tmp/x.db\"\n[batch]\nmax_events = 7\n").unwrap();
        std::env::set_var("COMPLYD_LOG", "debug");
        let s = DaemonSettings::load(Some(&f)).unwrap();
        assert_eq!(s.store.url, "sqlite:/tmp/x.db");
        assert_eq!(s.batch.max_events, 7);
        assert!(DaemonSettings::load(Some(&dir.path().join("nope.toml"))).is_err());
    }
}

#[cfg(test)]
mod shipped_config {
    use super::*;

    #[test]
    fn config_complyd_toml_documents_exactly_the_defaults() {
        let text = include_str!("../config/complyd.toml");
        assert_eq!(DaemonSettings::from_toml(text).unwrap(), DaemonSettings::default());
    }
}
