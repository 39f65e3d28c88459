//! The simulator's configuration (`config/sim.toml` documents every key with
//! its default).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::settings::ConfigErrors;
use serde::{Deserialize, Serialize};

use super::fault::{Fault, ReplayOutcome};

/// Smallest non-zero rate (one event every ~11.6 days).
const MIN_RATE: f64 = 0.000_001;
/// Largest rate accepted.
const MAX_RATE: f64 = 100_000_000.0;
/// Largest posts dataset (post ids must stay distinct 64-bit snowflakes).
const MAX_POSTS: u64 = 100_000_000;
const DAY_MS: u64 = 86_400_000;
/// Ten years.
const MAX_AGE_MINUTES: u64 = 10 * 366 * 24 * 60;

/// Everything the simulator can be told. Every field has a default, so an
/// empty file (or no file) is a valid configuration.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Address to listen on (`127.0.0.1:8080`); port 0 picks a free port.
    pub listen: String,
    /// actix-web worker threads serving connections.
    pub workers: usize,
    /// The `:account` path segment the stream and replay URLs accept.
    pub account: String,
    /// The `:label` path segment (the URL ends in `:label.json`).
    pub label: String,
    /// HTTP Basic user name (the console account's e-mail).
    pub username: String,
    /// HTTP Basic password. Never logged.
    pub password: String,
    /// Seed of the deterministic generator.
    pub seed: u64,
    /// Events per second across all 8 partitions; 0 = as fast as the
    /// clients read (event times then advance 1 ms per 1000 events).
    pub rate: f64,
    /// Event time of event 0 in Unix milliseconds; event `i` has time
    /// `epoch_ms + i * 1000 / rate`. Default: the moment the simulator starts.
    pub epoch_ms: Option<i64>,
    /// Size of the posts dataset the events refer to (see `generate_posts`,
    /// which must be called with the same seed and this count).
    pub posts: u64,
    /// A bare `\r\n` is sent after this long without any other byte.
    pub heartbeat_interval_ms: u64,
    /// How often the producer releases the events that became due, as one
    /// gzip-flushed batch per partition.
    pub batch_interval_ms: u64,
    /// Largest batch of events generated at once.
    pub max_batch_events: u64,
    /// Batches buffered per connection; a connection that falls further
    /// behind is cut with the "unable to keep up" error (live rates only; with
    /// `rate = 0` the producer waits for the slowest client instead).
    pub buffer_batches: usize,
    /// gzip level 0-9 (1 = fastest).
    pub gzip_level: u32,
    /// Share of data pieces written as two HTTP chunks cut at a random byte
    /// (with a 2 ms pause between them), so clients see chunks that end
    /// inside a message or a multi-byte character. 0 = one chunk per batch.
    pub split_chunks_ratio: f64,
    /// When set, every message written to a client is appended to this file as
    /// `<partition>\t<sent_unix_ms>\t<line>` (partition 0 = replay).
    pub record: Option<PathBuf>,
    /// Serve `/admin/faults` and `/admin/stats`.
    pub admin: bool,
    /// Message of the `forced_disconnect` fault unless the fault names one.
    pub forced_disconnect_message: String,
    /// The stream endpoint's connection-rate limit.
    pub rate_limit: RateLimitConfig,
    /// The replay endpoint.
    pub replay: ReplayConfig,
    /// `backfillMinutes` on the stream endpoint.
    pub backfill: BackfillConfig,
    /// The message mix and the traps.
    pub generator: GeneratorConfig,
    /// X API v2 batch compliance jobs (`/2/compliance/jobs`).
    pub jobs: super::jobs::JobsConfig,
    /// Faults armed at start (same objects as `POST /admin/faults`).
    pub faults: Vec<Fault>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: "127.0.0.1:8080".into(),
            workers: 2,
            account: "demo".into(),
            label: "prod".into(),
            username: "demo@example.com".into(),
            password: "sim-password".into(),
            seed: 1,
            rate: 1000.0,
            epoch_ms: None,
            posts: 10_000,
            heartbeat_interval_ms: 10_000,
            batch_interval_ms: 20,
            max_batch_events: 65_536,
            buffer_batches: 256,
            gzip_level: 1,
            split_chunks_ratio: 0.1,
            record: None,
            admin: true,
            forced_disconnect_message: "Forced Disconnect: Too many connections. (Allowed Connections = 2)".into(),
            rate_limit: RateLimitConfig::default(),
            replay: ReplayConfig::default(),
            backfill: BackfillConfig::default(),
            generator: GeneratorConfig::default(),
            jobs: super::jobs::JobsConfig::default(),
            faults: Vec::new(),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("workers", &self.workers)
            .field("account", &self.account)
            .field("label", &self.label)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("seed", &self.seed)
            .field("rate", &self.rate)
            .field("epoch_ms", &self.epoch_ms)
            .field("posts", &self.posts)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("batch_interval_ms", &self.batch_interval_ms)
            .field("max_batch_events", &self.max_batch_events)
            .field("buffer_batches", &self.buffer_batches)
            .field("gzip_level", &self.gzip_level)
            .field("split_chunks_ratio", &self.split_chunks_ratio)
            .field("record", &self.record)
            .field("admin", &self.admin)
            .field("rate_limit", &self.rate_limit)
            .field("replay", &self.replay)
            .field("backfill", &self.backfill)
            .field("generator", &self.generator)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// `[rate_limit]`: connection requests per window for the account, all
/// partitions together.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed per window (the documented 10).
    pub connections: u32,
    /// Window length in milliseconds (the documented 60 s), sliding.
    pub window_ms: u64,
    /// Whether a request refused with 429 itself counts toward the window
    /// (true: a client that keeps hammering stays locked out).
    pub count_rejected: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { connections: 10, window_ms: 60_000, count_rejected: true }
    }
}

/// `[replay]`: the replay endpoint's rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayConfig {
    /// Requests allowed per window (the documented 5).
    pub requests: u32,
    /// Window length in milliseconds (the documented 5 minutes).
    pub window_ms: u64,
    /// `fromDate` may not be older than this (the documented 5 days).
    pub max_age_minutes: u64,
    /// `toDate` may not be more recent than this (the documented ~30 min).
    pub min_age_minutes: u64,
    /// How replays end unless a `replay_outcome` fault says otherwise.
    pub outcome: ReplayOutcome,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            requests: 5,
            window_ms: 300_000,
            max_age_minutes: 5 * 24 * 60,
            min_age_minutes: 30,
            outcome: ReplayOutcome::Completed,
        }
    }
}

/// `[backfill]`: `backfillMinutes=N` on the stream endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackfillConfig {
    /// Accept the parameter (resend the partition's last N minutes, which
    /// creates duplicates); false answers 400, as an older client assumes.
    pub accepted: bool,
    /// Largest N accepted (the documented 5).
    pub max_minutes: u32,
    /// At most this many events (of all partitions) are scanned for one
    /// backfill, whatever N and the rate.
    pub max_events: u64,
    /// Accept the parameter but resend nothing (a server that ignores it:
    /// the client must notice that its backfill never came).
    pub ignored: bool,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig { accepted: true, max_minutes: 5, max_events: 2_000_000, ignored: false }
    }
}

/// `[generator]`: the traps' frequencies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Share of events that are exact copies of one of the 64 before.
    pub duplicate_ratio: f64,
    /// Share of messages of an undocumented type (`user_verify`).
    pub unknown_ratio: f64,
    /// Share of events carrying an unknown field (`"source":"complyd-sim"`).
    pub extra_field_ratio: f64,
    /// Share of post and user references that name the dataset (the rest name
    /// posts and users the dataset does not hold).
    pub dataset_ratio: f64,
    /// How many distinct dataset posts the events name, spread evenly over
    /// the dataset (0: all of them). Benchmarks comparing store sizes set it
    /// so that every size receives the same events' worth of distinct ids.
    pub active_posts: u64,
    /// Relative weights of the 14 message types.
    pub mix: MixConfig,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            duplicate_ratio: 0.005,
            unknown_ratio: 0.001,
            extra_field_ratio: 0.01,
            dataset_ratio: 0.9,
            active_posts: 0,
            mix: MixConfig::default(),
        }
    }
}

/// `[generator.mix]`: relative weights (any scale) of the 14 types.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixConfig {
    /// Weight of `delete` of a status (Post).
    pub delete: u32,
    /// Weight of `delete` of a favorite (like).
    pub delete_favorite: u32,
    /// Weight of `status_withheld`.
    pub status_withheld: u32,
    /// Weight of `drop`.
    pub drop: u32,
    /// Weight of `undrop`.
    pub undrop: u32,
    /// Weight of `tweet_edit`.
    pub tweet_edit: u32,
    /// Weight of `scrub_geo`.
    pub scrub_geo: u32,
    /// Weight of `user_delete`.
    pub user_delete: u32,
    /// Weight of `user_undelete`.
    pub user_undelete: u32,
    /// Weight of `user_protect`.
    pub user_protect: u32,
    /// Weight of `user_unprotect`.
    pub user_unprotect: u32,
    /// Weight of `user_suspend`.
    pub user_suspend: u32,
    /// Weight of `user_unsuspend`.
    pub user_unsuspend: u32,
    /// Weight of `user_withheld`.
    pub user_withheld: u32,
}

impl MixConfig {
    /// The 14 weights, in the generator's fixed order of message types.
    pub(crate) fn weights(&self) -> [u32; 14] {
        [
            self.delete,
            self.delete_favorite,
            self.status_withheld,
            self.drop,
            self.undrop,
            self.tweet_edit,
            self.scrub_geo,
            self.user_delete,
            self.user_undelete,
            self.user_protect,
            self.user_unprotect,
            self.user_suspend,
            self.user_unsuspend,
            self.user_withheld,
        ]
    }
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            delete: 560,
            delete_favorite: 80,
            status_withheld: 25,
            drop: 30,
            undrop: 20,
            tweet_edit: 40,
            scrub_geo: 20,
            user_delete: 40,
            user_undelete: 25,
            user_protect: 45,
            user_unprotect: 35,
            user_suspend: 30,
            user_unsuspend: 20,
            user_withheld: 30,
        }
    }
}

impl SimConfig {
    /// Reads a TOML file; `None` gives the defaults. The result is validated.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML for this structure, or
    /// fails validation (every problem is listed).
    pub fn load(path: Option<&Path>) -> Result<SimConfig, ConfigErrors> {
        let cfg = match path {
            None => SimConfig::default(),
            Some(p) => {
                let problem =
                    |e: &dyn std::fmt::Display| ConfigErrors(vec![format!("simulator config {}: {e}", p.display())]);
                let text = std::fs::read_to_string(p).map_err(|e| problem(&e))?;
                toml::from_str::<SimConfig>(&text).map_err(|e| problem(&e))?
            }
        };
        cfg.validate().map_err(ConfigErrors)?;
        Ok(cfg)
    }

    /// Checks every setting and returns all problems at once.
    ///
    /// # Errors
    /// One message per problem.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.listen.trim().is_empty() {
            p.push("listen must not be empty".to_string());
        }
        if self.workers == 0 {
            p.push("workers must be at least 1".into());
        }
        for (name, v) in [("account", &self.account), ("label", &self.label)] {
            if v.is_empty() || v.contains('/') || v.contains('?') {
                p.push(format!("{name} must be a non-empty path segment"));
            }
        }
        if self.username.is_empty() || self.username.contains(':') {
            p.push("username must be non-empty and contain no ':'".into());
        }
        if !(self.rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&self.rate)) {
            p.push(format!("rate must be 0 (unlimited) or within {MIN_RATE}..={MAX_RATE}, got {}", self.rate));
        }
        if !(1..=MAX_POSTS).contains(&self.posts) {
            p.push(format!("posts must be within 1..={MAX_POSTS}, got {}", self.posts));
        }
        if !(1..=DAY_MS).contains(&self.heartbeat_interval_ms) {
            p.push(format!("heartbeat_interval_ms must be within 1..={DAY_MS}"));
        }
        if !(1..=60_000).contains(&self.batch_interval_ms) {
            p.push("batch_interval_ms must be within 1..=60000".into());
        }
        if !(1..=10_000_000).contains(&self.max_batch_events) {
            p.push("max_batch_events must be within 1..=10000000".into());
        }
        if !(1..=1_000_000).contains(&self.buffer_batches) {
            p.push("buffer_batches must be within 1..=1000000".into());
        }
        if let Some(e) = self.epoch_ms {
            if !(0..=4_102_444_800_000).contains(&e) {
                p.push("epoch_ms must be a Unix time in milliseconds between 1970 and 2100".into());
            }
        }
        if !(0.0..=1.0).contains(&self.split_chunks_ratio) {
            p.push(format!("split_chunks_ratio must be within 0..=1, got {}", self.split_chunks_ratio));
        }
        if self.gzip_level > 9 {
            p.push(format!("gzip_level must be 0-9, got {}", self.gzip_level));
        }
        if self.rate_limit.connections == 0 || self.rate_limit.window_ms == 0 {
            p.push("rate_limit.connections and rate_limit.window_ms must be > 0".into());
        }
        if self.replay.requests == 0 || self.replay.window_ms == 0 {
            p.push("replay.requests and replay.window_ms must be > 0".into());
        }
        if self.replay.min_age_minutes > self.replay.max_age_minutes {
            p.push("replay.min_age_minutes must not exceed replay.max_age_minutes".into());
        }
        if self.replay.max_age_minutes > MAX_AGE_MINUTES {
            p.push(format!("replay.max_age_minutes must not exceed {MAX_AGE_MINUTES}"));
        }
        let j = &self.jobs;
        if j.bearer_token.is_empty() {
            p.push("jobs.bearer_token must not be empty".into());
        }
        if j.max_ids == 0 || j.create_requests == 0 || j.create_window_ms == 0 {
            p.push("jobs.max_ids, jobs.create_requests and jobs.create_window_ms must be > 0".into());
        }
        if j.action_per_mille > 1000 {
            p.push(format!("jobs.action_per_mille must be within 0..=1000, got {}", j.action_per_mille));
        }
        if self.backfill.max_minutes == 0 {
            p.push("backfill.max_minutes must be > 0".into());
        }
        let g = &self.generator;
        for (name, v) in [
            ("duplicate_ratio", g.duplicate_ratio),
            ("unknown_ratio", g.unknown_ratio),
            ("extra_field_ratio", g.extra_field_ratio),
            ("dataset_ratio", g.dataset_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!("generator.{name} must be within 0..=1, got {v}"));
            }
        }
        let m = &g.mix;
        let total: u64 = m.weights().iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            p.push("generator.mix weights must not all be 0".into());
        }
        for (k, f) in self.faults.iter().enumerate() {
            if let Err(e) = f.validate() {
                p.push(format!("faults[{k}]: {e}"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = SimConfig::default();
        let s = format!("{c:?}");
        assert!(!s.contains("sim-password"), "{s}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let c = SimConfig { rate: -1.0, workers: 0, gzip_level: 12, ..SimConfig::default() };
        let p = c.validate().unwrap_err();
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn the_shipped_sim_toml_documents_the_defaults() {
        let text = include_str!("../../config/sim.toml");
        let shipped: SimConfig = toml::from_str(text).expect("config/sim.toml parses");
        let a = serde_json::to_value(&shipped).expect("serializes");
        let b = serde_json::to_value(SimConfig::default()).expect("serializes");
        assert_eq!(a, b, "config/sim.toml must show every default");
    }

    #[test]
    fn load_reports_the_file_and_every_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "rate = -1\nworkers = 0\n").expect("write");
        let err = format!("{:#}", SimConfig::load(Some(&path)).unwrap_err());
        assert!(err.contains("rate") && err.contains("workers"), "{err}");
        assert!(SimConfig::load(None).is_ok());
        let missing = dir.path().join("missing.toml");
        let err = format!("{:#}", SimConfig::load(Some(&missing)).unwrap_err());
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn toml_with_faults_parses() {
        let c: SimConfig = toml::from_str(
            r#"
            rate = 0
            [rate_limit]
            connections = 3
            [[faults]]
            kind = "forced_disconnect"
            partition = 2
            after_events = 10
            [[faults]]
            kind = "status"
            status = 503
            count = 2
            "#,
        )
        .expect("parses");
        assert_eq!(c.faults.len(), 2);
        assert_eq!(c.rate_limit.connections, 3);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<SimConfig>("rat = 3").is_err(), "typos are refused");
    }
}
