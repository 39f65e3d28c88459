//! `complyd sim`: a Compliance Firehose simulator.
//!
//! A real HTTP server (actix-web) speaking the stream and replay endpoints of
//! docs/protocol.md (sections 1 and 4.3), fed by a deterministic generator of the
//! 14 message types of section 2 (traps included), and able to misbehave on
//! command. Use [`main`] for the blocking command, or [`start`] inside an
//! actix System (tests, `complyd demo`), then [`SimHandle::stop`].
//!
//! # Endpoints
//! ```text
//! GET    /stream/compliance/accounts/:account/publishers/twitter/:label.json?partition=N[&backfillMinutes=M]
//! GET    /replay/compliance/accounts/:account/publishers/twitter/:label.json?fromDate=YYYYMMDDHHMM&toDate=YYYYMMDDHHMM
//! POST   /admin/faults   body: one fault object or an array of them  -> {"armed":N}
//! GET    /admin/faults   -> {"faults":[...armed, with remaining counts]}
//! DELETE /admin/faults   -> {"cleared":N}
//! GET    /admin/stats    -> SimStats as JSON
//! ```
//! Stream checks, in order: path (404, JSON body), method (405), an armed
//! `status` fault, Basic auth (401), the connection-rate limit (429),
//! `Accept-Encoding: gzip` (406), `partition` 1..=8 (400), `backfillMinutes`
//! (400). Every authenticated stream request counts toward the limit,
//! whatever its answer (429s too unless `rate_limit.count_rejected = false`);
//! 401s and fault-forced answers do not. Replay has its own limit and checks
//! auth, limit, gzip, then the date rules (400).
//!
//! # The timeline
//! Event `i` (any `i64`) has event time `epoch_ms + i * 1000 / rate` and is
//! released live `i / rate` seconds after the start; it goes to partition
//! `id % 8 + 1` of its routing id (Post id, or user id for user events and
//! `scrub_geo`). A connection gets the events released while it is open;
//! backfill and replay regenerate earlier ones (negative `i` lie before the
//! start). With `rate = 0` events flow as fast as the slowest client reads.
//!
//! # Faults
//! See [`FaultKind`]. Connection faults aimed at a partition act on its open
//! connection(s) at once, or wait for the next one; `count` connections take
//! one copy each; `after_events` delays the fault until the connection has
//! sent that many events (exactly: the batch is split there). Without a
//! `partition`, each of the 8 partitions gets its own copy.
//!
//! # Record
//! With `record` set (`--record FILE`), every message written to a client
//! (events, error, info, malformed and oversized lines; not heartbeats) is
//! appended as `<partition>\t<sent_unix_ms>\t<the exact JSON line>`,
//! partition 0 for replays, once its last byte has been handed to the HTTP
//! layer. Events a fault threw away are never recorded.

#![warn(missing_docs)]

mod config;
mod conn;
mod ctx;
mod fault;
mod gen;
mod gz;
mod jobs;
mod limiter;
mod producer;
mod record;
mod replay;
mod server;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{BackfillConfig, GeneratorConfig, MixConfig, RateLimitConfig, ReplayConfig, SimConfig};
pub use fault::{Fault, FaultKind, ReplayOutcome};
pub use jobs::{verdict, JobType, JobsConfig};
pub use stats::{PartitionStats, SimStats};

/// Command-line overrides for `complyd sim` (each replaces the config value).
#[derive(Clone, Debug, Default)]
pub struct SimArgs {
    /// TOML config file (defaults apply without one).
    pub config: Option<PathBuf>,
    /// `--listen ADDR` (port 0 picks a free port).
    pub listen: Option<String>,
    /// `--seed N`.
    pub seed: Option<u64>,
    /// `--rate EVENTS_PER_SEC` across all partitions (0 = unlimited).
    pub rate: Option<f64>,
    /// `--record FILE`.
    pub record: Option<PathBuf>,
}

/// Blocking entry for `complyd sim`: loads the config (file, then the
/// overrides from `args`), starts its own actix System, prints exactly one
/// line `listening on http://ADDR` and then the stream URL of partition 1 on
/// standard output, and serves until SIGINT or SIGTERM.
///
/// # Errors
/// A bad config, an address that cannot be bound, a record file that cannot
/// be created, or a failure to install the signal handlers.
pub fn main(args: SimArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let mut cfg = SimConfig::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(r) = args.rate {
        cfg.rate = r;
    }
    if let Some(r) = args.record {
        cfg.record = Some(r);
    }
    cfg.validate().map_err(crate::settings::ConfigErrors)?;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let listen = cfg.listen.clone();
        let handle = start(cfg).await.with_context(|| format!("starting the simulator on {listen}"))?;
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{}", handle.addr())?;
            writeln!(out, "{}", handle.stream_url(1))?;
            out.flush()?;
        }
        let res = wait_for_signal().await;
        tracing::info!("Stopping the simulator");
        handle.stop().await;
        res
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    account: String,
    label: String,
    ctx: Arc<ctx::Ctx>,
    server: actix_web::dev::ServerHandle,
    shutdown: watch::Sender<bool>,
    producer_done: Option<oneshot::Receiver<()>>,
    stopped: bool,
}

/// Starts the simulator inside the running actix System / actix_rt runtime:
/// binds (port 0 = a free port), arms the configured faults and returns at
/// once. The server runs until [`SimHandle::stop`] (or the System ends).
///
/// # Errors
/// `InvalidInput` for a bad config; the bind or record-file error otherwise.
pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    cfg.validate().map_err(|p| std::io::Error::new(std::io::ErrorKind::InvalidInput, p.join("; ")))?;
    let started = Instant::now();
    let epoch_ms = cfg.epoch_ms.unwrap_or_else(crate::clock::now_ms);
    let gen = Arc::new(gen::Generator::new(cfg.seed, cfg.posts, cfg.rate, epoch_ms, &cfg.generator));
    let recorder = match &cfg.record {
        Some(p) => Some(
            record::Recorder::create(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("creating record file {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let stats = Arc::new(stats::Stats::default());
    let (reg_tx, reg_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut hb = gz::SegmentCompressor::new(cfg.gzip_level);
    let heartbeat = gz::piece(&mut hb, b"\r\n");
    let faults = fault::FaultBoard::new();
    for f in &cfg.faults {
        faults.arm(f.clone());
    }
    let ctx = Arc::new(ctx::Ctx {
        gen: gen.clone(),
        faults,
        stats: stats.clone(),
        recorder,
        stream_limit: limiter::Limiter::new(
            cfg.rate_limit.connections,
            cfg.rate_limit.window_ms,
            cfg.rate_limit.count_rejected,
        ),
        replay_limit: limiter::Limiter::new(cfg.replay.requests, cfg.replay.window_ms, true),
        regs: reg_tx,
        heartbeat,
        jobs: jobs::Jobs::new(&cfg.jobs),
        cfg: cfg.clone(),
    });
    let data = web::Data::from(ctx.clone());
    // A job's ids arrive in one request body: room for `jobs.max_ids` ids
    // and then some (more ids fail the job, as X's would).
    let upload_limit = web::PayloadConfig::new(
        usize::try_from(cfg.jobs.max_ids.saturating_mul(24)).unwrap_or(usize::MAX).max(1 << 20),
    );
    let srv = HttpServer::new(move || {
        App::new().app_data(data.clone()).app_data(upload_limit.clone()).default_service(web::to(server::route))
    })
    .workers(cfg.workers)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(cfg.listen.as_str())?;
    let addr = srv
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address bound"))?;
    let (done_tx, done_rx) = oneshot::channel();
    producer::spawn(
        producer::ProducerParams {
            gen,
            rate: cfg.rate,
            batch_interval: Duration::from_millis(cfg.batch_interval_ms),
            max_batch_events: cfg.max_batch_events,
            gzip_level: cfg.gzip_level,
            stats,
            start: started,
        },
        reg_rx,
        shutdown_rx,
        done_tx,
    )?;
    let server = srv.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(
        addr = %addr,
        seed = cfg.seed,
        rate = cfg.rate,
        epoch_ms,
        account = %cfg.account,
        username = %cfg.username,
        "Simulator listening"
    );
    Ok(SimHandle {
        addr,
        account: cfg.account.clone(),
        label: cfg.label.clone(),
        ctx,
        server: handle,
        shutdown: shutdown_tx,
        producer_done: Some(done_rx),
        stopped: false,
    })
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/stream/compliance/accounts/:account/publishers/twitter/:label.json?partition=N`
    pub fn stream_url(&self, partition: u8) -> String {
        format!(
            "http://{}/stream/compliance/accounts/{}/publishers/twitter/{}.json?partition={partition}",
            self.addr, self.account, self.label
        )
    }

    /// `http://ADDR/replay/compliance/accounts/:account/publishers/twitter/:label.json` (no query).
    pub fn replay_url(&self) -> String {
        format!(
            "http://{}/replay/compliance/accounts/{}/publishers/twitter/{}.json",
            self.addr, self.account, self.label
        )
    }

    /// Arms a fault, exactly like `POST /admin/faults`. An invalid fault is
    /// logged and ignored.
    pub fn trigger(&self, fault: Fault) {
        match fault.validate() {
            Ok(()) => {
                tracing::info!(fault = fault.name(), partition = ?fault.partition, count = fault.count, "Fault armed");
                self.ctx.faults.arm(fault);
            }
            Err(e) => tracing::warn!(error = %e, "Invalid fault ignored"),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> SimStats {
        self.ctx.stats.snapshot()
    }

    /// Event time of event 0 (the configured `epoch_ms`, or the start time).
    pub fn epoch_ms(&self) -> i64 {
        self.ctx.gen.epoch_ms()
    }

    /// Stops the server (open streams are dropped), the producer, and flushes
    /// the record file.
    pub async fn stop(mut self) {
        self.stopped = true;
        self.server.stop(false).await;
        let _ = self.shutdown.send(true);
        if let Some(done) = self.producer_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
        if let Some(r) = &self.ctx.recorder {
            r.flush();
        }
        tracing::info!(addr = %self.addr, "Simulator stopped");
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if !self.stopped {
            // Best effort: the stop command is sent at once, even unawaited.
            drop(self.server.stop(false));
            let _ = self.shutdown.send(true);
            if let Some(r) = &self.ctx.recorder {
                r.flush();
            }
        }
    }
}

/// The posts dataset matching the generator's ids: post `k` of
/// `generate_posts(seed, n)` is the post the events of a simulator with the
/// same `seed` and `posts = n` refer to. One X API v1.1 JSON object per item
/// (`id`, `id_str`, `user{id,id_str}`, `text`, `created_at`,
/// `coordinates`/`geo`/`place` on some, `retweeted_status` with its own user
/// on about 15%). A longer dataset extends a shorter one.
pub fn generate_posts(seed: u64, count: usize) -> impl Iterator<Item = String> {
    let ds = gen::Dataset::new(seed, count as u64);
    (0..count as u64).map(move |k| ds.post_json(k))
}
