//! The plan the program runs on: the configuration checked once, every
//! problem gathered, and turned into typed values (the way ripgrep turns its
//! raw flags into the arguments it runs on). Durations are [`Duration`]s, the
//! store is a parsed [`StoreUrl`], secrets are resolved, the paths beside the
//! store are decided, the TLS configuration is built (its CA file read). The
//! daemon takes a [`Plan`], the offline commands a [`StorePlan`]; neither
//! looks at the file's values again.

use super::{ConfigErrors, Secret, Settings, StreamSettings};
use crate::backoff::{BackoffPolicy, Intensity};
use crate::store::StoreUrl;
use base64::Engine as _;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything the daemon (`complyd run`, `complyd demo`) runs on.
#[derive(Debug, Clone)]
pub struct Plan {
    pub store: StorePlan,
    pub stream: StreamPlan,
    pub handlers: HandlerPlan,
    pub backoff: BackoffPolicy,
    pub limiter: LimiterPlan,
    pub restart: Intensity,
    /// None when `replay.enabled` is false.
    pub replay: Option<ReplayPlan>,
    /// None when `http.enabled` is false.
    pub http: Option<HttpPlan>,
    pub log: super::LogSettings,
    pub shutdown_timeout: Duration,
    /// Values that work but deserve a line in the log when the daemon starts
    /// (and, for [`Settings::plan_with_password`], values against X's rules).
    pub warnings: Vec<String>,
}

/// The store and the files kept beside it: all an offline command needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    pub url: StoreUrl,
    /// Where bad lines go (`store.dead_letter`, else beside the store).
    pub dead_letter: PathBuf,
}

/// What every stream connection shares.
#[derive(Clone)]
pub struct StreamPlan {
    /// The stream URL with `{account}` and `{label}` replaced.
    base_url: String,
    pub partitions: Vec<u8>,
    /// `Basic base64(user:password)`.
    pub authorization: Secret,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longer lines are dead-lettered.
    pub max_line: usize,
    /// Threads (actix arbiters) the streams run on.
    pub threads: usize,
    /// `backfillMinutes` asked for on a reconnect after a gap (0: never).
    pub backfill_max: u32,
    /// A batch is handed on at this many events...
    pub batch_max: usize,
    /// ...or when its oldest event has waited this long.
    pub linger: Duration,
    /// What the connections trust (`stream.ca_file`, else the built-in
    /// roots): [`crate::tls::http_client`] builds on it.
    pub tls: Arc<rustls::ClientConfig>,
}

impl StreamPlan {
    /// The stream URL of one partition, with `backfillMinutes` when asked.
    pub fn partition_url(&self, partition: u8, backfill_minutes: Option<u32>) -> String {
        partition_url(&self.base_url, partition, backfill_minutes)
    }
}

impl fmt::Debug for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamPlan")
            .field("base_url", &crate::store::redact_url(&self.base_url))
            .field("partitions", &self.partitions)
            .field("authorization", &self.authorization)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_line", &self.max_line)
            .field("threads", &self.threads)
            .field("backfill_max", &self.backfill_max)
            .field("batch_max", &self.batch_max)
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

/// Repairing the ledger's gaps through X's Replay endpoint.
#[derive(Clone)]
pub struct ReplayPlan {
    /// The Replay URL, `{account}` and `{label}` replaced, without dates.
    url: String,
    /// The stream's `Basic` header: Replay takes the same account.
    pub authorization: Secret,
    /// A gap is replayed once its end is this old.
    pub freshness: Duration,
    /// At most this much event time per request.
    pub max_window_ms: i64,
    pub max_requests: usize,
    pub window: Duration,
    pub check_interval: Duration,
    pub connect_timeout: Duration,
    /// No byte for this long: the request is broken (and asked again).
    pub idle_timeout: Duration,
    pub max_line: usize,
    /// Events handed to the handlers at a time.
    pub batch_max: usize,
    /// The stream's TLS configuration (`stream.ca_file`).
    pub tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ReplayPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayPlan")
            .field("url", &crate::store::redact_url(&self.url))
            .field("authorization", &self.authorization)
            .field("freshness", &self.freshness)
            .field("max_window_ms", &self.max_window_ms)
            .field("max_requests", &self.max_requests)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl ReplayPlan {
    /// The request for event time `[from_ms, to_ms)`, both whole minutes.
    pub fn window_url(&self, from_ms: i64, to_ms: i64) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}fromDate={}&toDate={}",
            self.url,
            crate::gaps::replay_date(from_ms),
            crate::gaps::replay_date(to_ms)
        )
    }
}

/// The status and user handlers.
#[derive(Debug, Clone)]
pub struct HandlerPlan {
    /// Events waiting for each handler: `handlers.in_flight x batch.max_events`.
    pub queue_events: usize,
    pub commit_retry: Duration,
    pub maintain_interval: Duration,
    pub maintain_max_users: usize,
}

/// The connection limiter shared by every partition.
#[derive(Debug, Clone)]
pub struct LimiterPlan {
    pub max_requests: usize,
    pub window: Duration,
    pub margin: Duration,
    /// The recent connection requests, kept across restarts.
    pub state_file: PathBuf,
}

/// `/healthz`, `/readyz`, `/metrics` and the query API.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub listen: SocketAddr,
    pub workers: usize,
    pub query: bool,
    pub read_connections: usize,
    /// The admin endpoint is on when a token is configured.
    pub admin_token: Option<Secret>,
}

/// Running X API v2 batch compliance jobs (`complyd batch-job run`).
#[derive(Clone)]
pub struct BatchJobPlan {
    /// `.../2/compliance/jobs`.
    pub jobs_url: String,
    /// `Bearer <token>`.
    pub authorization: Secret,
    pub max_ids: u64,
    pub poll_interval: Duration,
    pub max_wait: Duration,
    pub attempts: u32,
    pub connect_timeout: Duration,
    /// What its requests trust: the stream's (`stream.ca_file`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Where the id lists and the results are kept while a job runs.
    pub dir: PathBuf,
}

impl fmt::Debug for BatchJobPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchJobPlan")
            .field("jobs_url", &crate::store::redact_url(&self.jobs_url))
            .field("authorization", &self.authorization)
            .field("max_ids", &self.max_ids)
            .field("poll_interval", &self.poll_interval)
            .field("max_wait", &self.max_wait)
            .field("attempts", &self.attempts)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What [`Settings::check`] parsed on the way.
struct Checked {
    store: Option<StoreUrl>,
    /// The stream's and Replay's TLS configuration.
    tls: Option<Arc<rustls::ClientConfig>>,
    listen: Option<SocketAddr>,
    /// The Replay URL (when replay is on), `{account}` and `{label}` replaced.
    replay_url: Option<String>,
}

impl Settings {
    /// The plan `complyd run` and `complyd validate` use: X's rules are
    /// enforced, and the password and the admin token are looked up.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every problem at once (never a secret).
    pub fn plan(&self) -> Result<Plan, ConfigErrors> {
        let mut p = self.rule_problems();
        let password = self.stream.password().map_err(|e| p.push(e)).ok();
        self.build(password, p, Vec::new())
    }

    /// The plan for a caller that supplies the password itself (the demo,
    /// tests, benchmarks): values against X's rules are only warnings.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every other problem at once.
    pub fn plan_with_password(&self, password: Secret) -> Result<Plan, ConfigErrors> {
        self.build(Some(password), Vec::new(), self.rule_problems())
    }

    /// The store an offline command works on: `db` (the `--db` flag) or
    /// `store.url`, and its dead-letter file.
    ///
    /// # Errors
    /// [`ConfigErrors`] when the URL is not a store URL.
    pub fn store_plan(&self, db: Option<&str>) -> Result<StorePlan, ConfigErrors> {
        let (key, raw) = match db {
            Some(db) => ("--db", db),
            None => ("store.url", self.store.url.as_str()),
        };
        let url = StoreUrl::parse(raw).map_err(|e| ConfigErrors(vec![format!("{key} {e}")]))?;
        if let Some(problem) = ca_file_problem(key, &url) {
            return Err(ConfigErrors(vec![problem]));
        }
        Ok(self.store_plan_for(url))
    }

    /// What `complyd batch-job run` needs beyond the store: the API, the
    /// bearer token, the limits, and the directory beside `store`.
    ///
    /// # Errors
    /// [`ConfigErrors`] listing every problem of `[batch_job]` at once.
    pub fn batch_job_plan(&self, store: &StorePlan) -> Result<BatchJobPlan, ConfigErrors> {
        let b = &self.batch_job;
        let mut p = Vec::new();
        let base = b.url.trim().trim_end_matches('/');
        let jobs_url = format!("{base}/2/compliance/jobs");
        if !(base.starts_with("https://") || base.starts_with("http://"))
            || awc::http::Uri::try_from(jobs_url.as_str()).is_err()
        {
            p.push(format!("batch_job.url {:?} is not an http(s) URL", crate::store::redact_url(base)));
        } else if let Some(host) = plain_http_host(base).filter(|h| !is_loopback(h)) {
            p.push(format!(
                "batch_job.url uses http:// to {host}, which is not loopback: the bearer token would cross the network in clear; use https://"
            ));
        }
        if b.max_ids == 0 {
            p.push("batch_job.max_ids must be at least 1".to_owned());
        }
        if b.poll_interval_ms == 0 || b.max_wait_ms == 0 {
            p.push("batch_job.poll_interval_ms and batch_job.max_wait_ms must be > 0".to_owned());
        }
        if b.attempts == 0 {
            p.push("batch_job.attempts must be at least 1".to_owned());
        }
        let tls = crate::tls::client_config(self.stream.ca_file.as_deref())
            .map_err(|e| p.push(format!("stream.ca_file: {e}")))
            .ok();
        let token = b.bearer_token().map_err(|e| p.push(e)).ok();
        let (Some(token), Some(tls), true) = (token, tls, p.is_empty()) else {
            return Err(ConfigErrors(p));
        };
        Ok(BatchJobPlan {
            jobs_url,
            authorization: Secret::new(format!("Bearer {}", token.expose())),
            max_ids: b.max_ids,
            poll_interval: Duration::from_millis(b.poll_interval_ms),
            max_wait: Duration::from_millis(b.max_wait_ms),
            attempts: b.attempts,
            connect_timeout: Duration::from_millis(self.stream.connect_timeout_ms),
            tls,
            dir: store.url.beside("batch-jobs"),
        })
    }

    fn store_plan_for(&self, url: StoreUrl) -> StorePlan {
        let dead_letter = self.store.dead_letter.clone().unwrap_or_else(|| url.beside("deadletter.jsonl"));
        StorePlan { url, dead_letter }
    }

    fn build(
        &self,
        password: Option<Secret>,
        mut p: Vec<String>,
        mut warnings: Vec<String>,
    ) -> Result<Plan, ConfigErrors> {
        let checked = self.check(&mut p);
        let token = self.http.admin_token().map_err(|e| p.push(e)).ok();
        if let (true, Some(addr), Some(None)) = (self.http.enabled, checked.listen, &token) {
            if !addr.ip().is_loopback() {
                p.push(format!(
                    "http.listen {addr} is not loopback and no admin token is configured: the HTTP API would face the network unguarded; set http.admin_token_env or http.admin_token_file, or listen on 127.0.0.1"
                ));
            }
        }
        let (Some(store), Some(password), Some(admin_token), Some(tls), true) =
            (checked.store, password, token, checked.tls, p.is_empty())
        else {
            return Err(ConfigErrors(p));
        };
        warnings.extend(self.warnings());
        let s = &self.stream;
        let credentials = format!("{}:{}", s.username, password.expose());
        let authorization =
            Secret::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)));
        let ms = Duration::from_millis;
        let store = self.store_plan_for(store);
        let limiter = LimiterPlan {
            max_requests: self.limiter.max_requests,
            window: ms(self.limiter.window_ms),
            margin: ms(self.limiter.margin_ms),
            state_file: self.limiter.state_file.clone().unwrap_or_else(|| store.url.beside("connections.json")),
        };
        let replay = match (self.replay.enabled, checked.replay_url) {
            (true, Some(url)) => Some(ReplayPlan {
                url,
                authorization: authorization.clone(),
                freshness: ms(self.replay.freshness_ms),
                max_window_ms: self.replay.max_window_ms as i64,
                max_requests: self.replay.max_requests,
                window: ms(self.replay.window_ms),
                check_interval: ms(self.replay.check_interval_ms),
                connect_timeout: ms(s.connect_timeout_ms),
                idle_timeout: ms(s.idle_timeout_ms),
                max_line: s.max_line_bytes,
                batch_max: self.batch.max_events,
                tls: tls.clone(),
            }),
            _ => None,
        };
        let http = match (self.http.enabled, checked.listen) {
            (true, Some(listen)) => Some(HttpPlan {
                listen,
                workers: self.http.workers,
                query: self.http.query,
                read_connections: self.http.read_connections,
                admin_token,
            }),
            _ => None,
        };
        Ok(Plan {
            store,
            stream: StreamPlan {
                base_url: stream_base(s),
                partitions: s.partitions.clone(),
                authorization,
                connect_timeout: ms(s.connect_timeout_ms),
                idle_timeout: ms(s.idle_timeout_ms),
                max_line: s.max_line_bytes,
                threads: s.threads,
                backfill_max: s.backfill_minutes,
                batch_max: self.batch.max_events,
                linger: ms(self.batch.linger_ms),
                tls,
            },
            handlers: HandlerPlan {
                queue_events: self.handlers.in_flight * self.batch.max_events,
                commit_retry: ms(self.handlers.commit_retry_ms),
                maintain_interval: ms(self.handlers.maintain_interval_ms),
                maintain_max_users: self.handlers.maintain_max_users,
            },
            backoff: self.backoff.policy(),
            limiter,
            restart: self.restart.intensity(),
            replay,
            http,
            log: self.log.clone(),
            shutdown_timeout: ms(self.shutdown.timeout_ms),
            warnings,
        })
    }

    /// Every problem of the values themselves (X's rules and secrets
    /// aside), with the values parsed on the way.
    fn check(&self, p: &mut Vec<String>) -> Checked {
        let s = &self.stream;
        if s.url.trim().is_empty() {
            p.push("stream.url is empty: set the stream URL from the console".to_owned());
        } else {
            let url = partition_url(&stream_base(s), 1, None);
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
        let tls =
            crate::tls::client_config(s.ca_file.as_deref()).map_err(|e| p.push(format!("stream.ca_file: {e}"))).ok();
        let store = StoreUrl::parse(&self.store.url).map_err(|e| p.push(format!("store.url {e}"))).ok();
        if let Some(problem) = store.as_ref().and_then(|url| ca_file_problem("store.url", url)) {
            p.push(problem);
        }
        let listen = match self.http.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) if !self.http.enabled => None,
            Err(_) => {
                p.push(format!("http.listen {:?} is not an address:port", self.http.listen));
                None
            }
        };
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
        let r = &self.replay;
        let replay_url = if r.enabled {
            let url = if r.url.trim().is_empty() {
                let base = stream_base(s);
                base.contains("/stream/").then(|| base.replacen("/stream/", "/replay/", 1))
            } else {
                Some(r.url.replace("{account}", &s.account).replace("{label}", &s.label))
            };
            match url {
                // Not derivable: replay is off, with a warning (`warnings`).
                None => None,
                Some(url) => {
                    if !(url.starts_with("https://") || url.starts_with("http://"))
                        || awc::http::Uri::try_from(url.as_str()).is_err()
                    {
                        p.push(format!("replay.url {:?} is not an http(s) URL", crate::store::redact_url(&url)));
                    }
                    if let Some(host) = plain_http_host(&url).filter(|h| !is_loopback(h)) {
                        p.push(format!("replay.url uses http:// to {host}, which is not loopback: the password would cross the network in clear; use https://"));
                    }
                    Some(url)
                }
            }
        } else {
            None
        };
        if !(60_000..=7_200_000).contains(&r.max_window_ms) {
            p.push(format!("replay.max_window_ms {} must be 60000 (a minute) to 7200000 (2 hours)", r.max_window_ms));
        }
        for (name, v) in [
            ("replay.max_requests", r.max_requests as u64),
            ("replay.window_ms", r.window_ms),
            ("replay.check_interval_ms", r.check_interval_ms),
        ] {
            if v == 0 {
                p.push(format!("{name} must be > 0"));
            }
        }
        Checked { store, tls, listen, replay_url }
    }

    /// Values that work mechanically but break X's rules: `complyd run` and
    /// `complyd validate` refuse them; the library (tests, benchmarks with
    /// short timeouts) only warns.
    pub(super) fn rule_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.stream.idle_timeout_ms <= 30_000 {
            p.push(format!(
                "stream.idle_timeout_ms {} breaks X's rules: the read timeout must be above 30000 (heartbeats come every 10-15 s)",
                self.stream.idle_timeout_ms
            ));
        }
        if self.replay.enabled && (self.replay.max_requests > 5 || self.replay.window_ms < 300_000) {
            p.push(format!(
                "replay allows {} requests per {} ms: X allows 5 per 300000",
                self.replay.max_requests, self.replay.window_ms
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

    /// Values that work but deserve a line in the log.
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.replay.enabled && self.replay.freshness_ms < 30 * 60_000 {
            w.push(format!(
                "replay.freshness_ms {} is under 30 minutes: X's Replay serves nothing that recent (its requests will be refused and asked again)",
                self.replay.freshness_ms
            ));
        }
        if self.replay.enabled && self.replay.url.trim().is_empty() && !stream_base(&self.stream).contains("/stream/") {
            w.push("replay.url is empty and stream.url has no /stream/ to derive it from: gaps will not be repaired through Replay; set replay.url".to_owned());
        }
        if self.stream.partitions.len() < 8 {
            w.push(format!(
                "only {} of the 8 partitions configured: the stream is incomplete",
                self.stream.partitions.len()
            ));
        }
        w
    }
}

/// Why the CA file a store URL names (`sslrootcert`) is not usable; the
/// store reads it again on each connection.
fn ca_file_problem(key: &str, url: &StoreUrl) -> Option<String> {
    let ca_file = url.ca_file()?;
    crate::tls::client_config(Some(&ca_file)).err().map(|e| format!("{key} sslrootcert: {e}"))
}

/// The stream URL with `{account}` and `{label}` replaced.
fn stream_base(s: &StreamSettings) -> String {
    s.url.replace("{account}", &s.account).replace("{label}", &s.label)
}

/// `base` with `partition=N` and, when asked, `backfillMinutes` (at most 5).
fn partition_url(base: &str, partition: u8, backfill_minutes: Option<u32>) -> String {
    let mut url = base.to_owned();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("partition={partition}"));
    if let Some(m) = backfill_minutes.filter(|m| *m > 0) {
        url.push_str(&format!("&backfillMinutes={}", m.min(5)));
    }
    url
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
