//! The supervisor: our own, because `actix::Supervisor` restarts at once,
//! forever, without backoff.
//!
//! It owns one [`ConnectLimiter`] for all partitions and one [`Restarts`]
//! record per partition. A partition's stream actor makes exactly one
//! connection request and then reports [`ChildExited`] with the reason; the
//! supervisor classifies the reason, asks the backoff policy for the delay
//! (with jitter), waits with `ctx.run_later`, then queues the partition for
//! the limiter, which starts it as soon as the account's connection budget
//! allows. Eight partitions that drop together therefore never draw a 429.
//!
//! Configuration errors (401, 403, 406, 400...) are logged at ERROR once,
//! with what to fix, and retried slowly. Past the restart intensity a
//! partition is marked failed (`/readyz` says so and why) and keeps retrying
//! at the slowest pace; a stable connection clears it.

use super::gap_keeper::GapNote;
use super::partition::{config_hint, ChildConnected, ChildExited, ExitReason, PartitionStream};
use super::router::Router;
use crate::backoff::{BackoffPolicy, FailureClass, Intensity, Restarts};
use crate::clock::now_ms;
use crate::deadletter::DeadLetter;
use crate::gaps::{self, GapCause};
use crate::health::{ExitRecord, Health, LinkState};
use crate::limiter::{ConnectLimiter, Ticket};
use crate::settings::StreamPlan;
use actix::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{oneshot, watch};

/// Stop every stream (each flushes its pending batch to the router first);
/// answered when all have exited.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// From this lead of X's clock on (an event newer than the byte that
/// brought it by this much), the operator is told to set the clock.
const CLOCK_LEAD_WARN_MS: i64 = 2_000;

/// What the supervisor is built from.
pub struct SupervisorConfig {
    /// The partitions, their URL and timeouts, the batching.
    pub spec: Arc<StreamPlan>,
    pub policy: BackoffPolicy,
    pub intensity: Intensity,
    pub limiter: ConnectLimiter,
    /// What an earlier run received per partition up to (from the store's
    /// positions: the last byte, or the last event when older), where the
    /// first connection's gap starts and its backfill reaches back to; and
    /// X's clock lead they showed, which the partition's counters start from.
    pub restart_points: HashMap<u8, gaps::RestartPoint>,
    /// The threads the streams run on.
    pub arbiters: Vec<ArbiterHandle>,
    pub router: Addr<Router>,
    pub health: Arc<Health>,
    pub dead_letter: Arc<Mutex<DeadLetter>>,
    /// Where the limiter's recent grants are kept across restarts.
    pub limiter_state: Option<PathBuf>,
    /// Told of every gap a (re)connection leaves, and ticked every second.
    pub gap_keeper: Option<Recipient<GapNote>>,
}

struct Child {
    generation: u64,
    running: bool,
    queued: bool,
    restarts: Restarts,
    timer: Option<SpawnHandle>,
    stable_timer: Option<SpawnHandle>,
    lines: u64,
    /// The time of the last byte received, seeded with the restart point
    /// (an earlier run's last byte, or its last event when older).
    last_byte_ms: Option<i64>,
    /// The limiter grant of the running attempt, settled when it is
    /// answered.
    ticket: Option<Ticket>,
    /// A stream of this process has opened before (else a gap is the
    /// restart's, from the stored position).
    connected_once: bool,
    /// The partition's full-buffer disconnects when it last connected: more
    /// now means the server threw events away since.
    data_loss_seen: u64,
    /// The `backfillMinutes` the running attempt asked for.
    backfill_minutes: Option<u32>,
}

pub struct Supervisor {
    cfg: SupervisorConfig,
    children: BTreeMap<u8, Child>,
    queue: VecDeque<u8>,
    pump_timer: Option<SpawnHandle>,
    shutdown_tx: watch::Sender<bool>,
    shutdown_rx: watch::Receiver<bool>,
    shutting_down: bool,
    waiters: Vec<oneshot::Sender<()>>,
    epoch: Instant,
    rng: SmallRng,
    /// The configuration error already logged at ERROR (until a connection
    /// succeeds).
    config_error_logged: Option<u16>,
    backfill_refused: bool,
}

impl Supervisor {
    pub fn new(mut cfg: SupervisorConfig) -> Supervisor {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let epoch = Instant::now();
        if let Some(path) = &cfg.limiter_state {
            let past = load_grants(path);
            if !past.is_empty() {
                tracing::info!(requests = past.len(), file = %path.display(), "Counting the connection requests of the previous run");
            }
            let now_wall = now_ms();
            for wall in past {
                // Before this process started: as far back on the monotonic
                // clock as it was on the wall clock.
                let ago = (now_wall - wall).clamp(0, MONO_BASE as i64) as u64;
                cfg.limiter.record(MONO_BASE - ago);
            }
        }
        for (p, r) in &cfg.restart_points {
            if cfg.spec.partitions.contains(p) {
                cfg.health.counters(*p).clock_lead_ms.store(r.clock_lead_ms, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let children = cfg
            .spec
            .partitions
            .iter()
            .map(|p| {
                (
                    *p,
                    Child {
                        generation: 0,
                        running: false,
                        queued: false,
                        restarts: Restarts::new(),
                        timer: None,
                        stable_timer: None,
                        lines: 0,
                        last_byte_ms: cfg.restart_points.get(p).map(|r| r.since_ms).filter(|t| *t > 0),
                        ticket: None,
                        connected_once: false,
                        data_loss_seen: 0,
                        backfill_minutes: None,
                    },
                )
            })
            .collect();
        Supervisor {
            cfg,
            children,
            queue: VecDeque::new(),
            pump_timer: None,
            shutdown_tx,
            shutdown_rx,
            shutting_down: false,
            waiters: Vec::new(),
            epoch,
            rng: SmallRng::from_entropy(),
            config_error_logged: None,
            backfill_refused: false,
        }
    }

    fn mono_ms(&self) -> u64 {
        MONO_BASE + self.epoch.elapsed().as_millis() as u64
    }

    /// Keeps the limiter's live grants on disk (wall ms), for a restart.
    fn save_limiter(&self) {
        let Some(path) = &self.cfg.limiter_state else { return };
        let now = self.mono_ms();
        let now_wall = now_ms();
        let walls: Vec<i64> = self.cfg.limiter.live(now).into_iter().map(|t| now_wall - (now - t) as i64).collect();
        if let Err(e) = save_grants(path, &walls) {
            tracing::warn!(file = %path.display(), error = %e, "Could not save the recent connection requests; a restart may exceed the connection limit");
        }
    }

    /// Puts `p` in line for the connection limiter.
    fn enqueue(&mut self, p: u8, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        if let Some(c) = self.children.get_mut(&p) {
            c.timer = None;
            if c.queued || c.running {
                return;
            }
            c.queued = true;
            self.queue.push_back(p);
            self.cfg.health.set_state(p, LinkState::Queued);
        }
        self.pump(ctx);
    }

    /// Starts queued partitions while the limiter grants requests.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        while let Some(&p) = self.queue.front() {
            match self.cfg.limiter.try_acquire(self.mono_ms()) {
                Ok(ticket) => {
                    self.queue.pop_front();
                    self.start_child(p, ticket, ctx);
                    self.save_limiter();
                }
                Err(wait) => {
                    if self.pump_timer.is_none() {
                        tracing::info!(
                            waiting = self.queue.len(),
                            wait_ms = wait.as_millis() as u64,
                            max_requests = self.cfg.limiter.max_requests(),
                            "Connection budget spent; waiting for the window to slide"
                        );
                        self.pump_timer = Some(ctx.run_later(wait, |act, ctx| {
                            act.pump_timer = None;
                            act.pump(ctx);
                        }));
                    }
                    break;
                }
            }
        }
    }

    /// Where a gap of partition `p` would start if it connected now
    /// ([`gaps::gap_start`]).
    fn gap_start(&self, p: u8) -> Option<i64> {
        let c = self.children.get(&p)?;
        let last_event = self.cfg.health.counters(p).last_event_ms.load(std::sync::atomic::Ordering::Relaxed);
        gaps::gap_start(c.last_byte_ms, last_event)
    }

    /// The `backfillMinutes` to ask for: back to where the gap will start,
    /// so that the gap keeper finds it covered.
    fn backfill_for(&mut self, p: u8) -> Option<u32> {
        let max = self.cfg.spec.backfill_max;
        if max == 0 || self.backfill_refused {
            return None;
        }
        let since = self.gap_start(p)?;
        // In X's time, as the gap's end will be.
        let lead = self.cfg.health.counters(p).clock_lead_ms.load(std::sync::atomic::Ordering::Relaxed);
        let now = now_ms().saturating_add(lead);
        let (minutes, enough) = gaps::backfill_minutes(since, now, max);
        if !enough {
            tracing::error!(
                partition = p,
                gap_ms = now - since,
                backfill_minutes = max,
                since_ms = since,
                "Data missing: the gap is longer than backfill covers; it is in the gap ledger (complyd gaps), for Replay"
            );
        }
        Some(minutes)
    }

    fn start_child(&mut self, p: u8, ticket: Ticket, ctx: &mut Context<Self>) {
        let backfill_minutes = self.backfill_for(p);
        let Some(c) = self.children.get_mut(&p) else { return };
        c.ticket = Some(ticket);
        c.backfill_minutes = backfill_minutes;
        c.queued = false;
        c.running = true;
        c.generation += 1;
        let generation = c.generation;
        let line_base = c.lines;
        let arbiters = &self.cfg.arbiters;
        let arbiter = &arbiters[usize::from(p.saturating_sub(1)) % arbiters.len()];
        let stream = PartitionStream {
            partition: p,
            generation,
            spec: self.cfg.spec.clone(),
            backfill_minutes,
            router: self.cfg.router.clone(),
            on_connected: ctx.address().recipient(),
            on_exit: ctx.address().recipient(),
            shutdown: self.shutdown_rx.clone(),
            counters: self.cfg.health.counters(p),
            dead_letter: self.cfg.dead_letter.clone(),
            line_base,
        };
        PartitionStream::start_in_arbiter(arbiter, move |_| stream);
        self.cfg.health.set_state(p, LinkState::Connecting);
        self.cfg.health.update(p, |h| h.push_request(now_ms()));
        metrics::counter!("complyd_connection_requests_total", "partition" => p.to_string()).increment(1);
    }

    fn check_drained(&mut self) {
        if self.shutting_down && self.children.values().all(|c| !c.running) {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

/// The monotonic clock's value at the supervisor's start (ms): a day, so
/// that grants of a previous run map to earlier, still positive, times.
const MONO_BASE: u64 = 86_400_000;

/// The grant times (wall ms) saved by a previous run; nothing when the file
/// is missing or unreadable.
fn load_grants(path: &std::path::Path) -> Vec<i64> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice::<Vec<i64>>(&b).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "Ignoring an unreadable connection-request file");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

fn save_grants(path: &std::path::Path, walls: &[i64]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::io::Write::write_all(&mut crate::files::write_private(&tmp)?, &serde_json::to_vec(walls).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(keeper) = self.cfg.gap_keeper.clone() {
            ctx.run_interval(std::time::Duration::from_secs(1), move |_, _| keeper.do_send(GapNote::Tick));
        }
        let parts: Vec<u8> = self.children.keys().copied().collect();
        tracing::info!(partitions = ?parts, "Starting the partition streams");
        for p in parts {
            self.enqueue(p, ctx);
        }
    }
}

impl Handler<ChildConnected> for Supervisor {
    type Result = ();

    fn handle(&mut self, m: ChildConnected, ctx: &mut Self::Context) {
        let stable_after = self.cfg.policy.stable_after;
        let now = self.mono_ms();
        let Some(c) = self.children.get_mut(&m.partition) else { return };
        if c.generation != m.generation || !c.running {
            return;
        }
        if let Some(t) = c.ticket.take() {
            self.cfg.limiter.settle(t, now);
        }
        self.save_limiter();
        let Some(c) = self.children.get_mut(&m.partition) else { return };
        self.config_error_logged = None;
        let counters = self.cfg.health.counters(m.partition);
        let data_loss = counters.data_loss.load(std::sync::atomic::Ordering::Relaxed);
        let cause = if data_loss > c.data_loss_seen {
            GapCause::FullBuffer
        } else if c.connected_once {
            GapCause::Disconnect
        } else {
            GapCause::Restart
        };
        let since = self.gap_start(m.partition);
        // The gap ends at this machine's time; X stamps the events it sent
        // meanwhile with its own, later when its clock is ahead.
        let lead = counters.clock_lead_ms.load(std::sync::atomic::Ordering::Relaxed);
        let Some(c) = self.children.get_mut(&m.partition) else { return };
        let connected = now_ms();
        if lead >= CLOCK_LEAD_WARN_MS {
            if let Some(suppressed) = crate::logging::allow("clock-lead") {
                tracing::warn!(
                    partition = m.partition,
                    lead_ms = lead,
                    suppressed,
                    "This machine's clock is behind X's event times; gaps are stretched by as much, at most 10 minutes (set its clock by NTP)"
                );
            }
        }
        c.connected_once = true;
        c.data_loss_seen = data_loss;
        if let (Some(since), Some(keeper)) = (since, &self.cfg.gap_keeper) {
            if let Some(gap) =
                gaps::on_connect(m.partition, since, connected.saturating_add(lead), cause, c.backfill_minutes)
            {
                let connection = counters.connections.load(std::sync::atomic::Ordering::Relaxed);
                keeper.do_send(GapNote::Opened { gap, connection, recorded: Some(m.recorded) });
            }
        }
        // What comes before the connection is in the ledger now: a next gap
        // starts here at the earliest, never over this one again.
        c.last_byte_ms = Some(c.last_byte_ms.map_or(connected, |b| b.max(connected)));
        self.cfg.health.set_state(m.partition, LinkState::Connected);
        self.cfg.health.update(m.partition, |h| h.config_error = None);
        let (p, g) = (m.partition, m.generation);
        if let Some(h) = c.stable_timer.take() {
            ctx.cancel_future(h);
        }
        c.stable_timer = Some(ctx.run_later(stable_after, move |act, _| {
            if let Some(c) = act.children.get_mut(&p) {
                c.stable_timer = None;
                if c.generation == g && c.running {
                    c.restarts.on_stable();
                    act.cfg.health.update(p, |h| {
                        if h.failed {
                            tracing::info!(partition = p, "Partition recovered: its connection is stable");
                        }
                        h.failed = false;
                        h.recent_failures = 0;
                    });
                }
            }
        }));
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, m: ChildExited, ctx: &mut Self::Context) {
        let p = m.partition;
        let now = self.mono_ms();
        let health = self.cfg.health.clone();
        let (u1, u2): (f64, f64) = (self.rng.gen(), self.rng.gen());
        let Some(c) = self.children.get_mut(&p) else { return };
        if c.generation != m.generation {
            return;
        }
        if let Some(t) = c.ticket.take() {
            self.cfg.limiter.settle(t, now);
        }
        c.running = false;
        c.lines = m.lines;
        if m.last_byte_ms.is_some() {
            c.last_byte_ms = m.last_byte_ms;
        }
        if let Some(h) = c.stable_timer.take() {
            ctx.cancel_future(h);
        }
        let reason_text = m.reason.to_string();
        if self.shutting_down {
            health.set_state(p, LinkState::Stopped);
            self.check_drained();
            return;
        }
        let Some(mut class) = m.reason.class() else {
            health.set_state(p, LinkState::Stopped);
            return;
        };
        let mut backfill_refused_now = false;
        if let ExitReason::Http { status: 400, .. } = &m.reason {
            if m.backfill_minutes.is_some() {
                backfill_refused_now = true;
                class = FailureClass::Network;
            }
        }
        let d = c.restarts.on_exit(&self.cfg.policy, &self.cfg.intensity, class, m.connected_for, now);
        let recent = c.restarts.recent_failures();
        if d.class == FailureClass::RateLimited {
            self.cfg.limiter.on_rate_limited(now);
        }
        self.save_limiter();
        let delay = self.cfg.policy.jittered(d.delay, u1, u2);
        let delay_ms = delay.as_millis() as u64;
        metrics::counter!("complyd_partition_reconnects_total", "partition" => p.to_string(), "reason" => d.class.as_str())
            .increment(1);

        if backfill_refused_now {
            self.backfill_refused = true;
            tracing::warn!(partition = p, reason = %reason_text, "The stream refused backfillMinutes; reconnecting without it (gaps need Replay)");
        }
        let status = match &m.reason {
            ExitReason::Http { status, .. } => Some(*status),
            _ => None,
        };
        let mut config_error = None;
        match d.class {
            FailureClass::Dropped => {
                tracing::info!(partition = p, reason = %reason_text, "Stream ended; reconnecting at once");
            }
            FailureClass::Config if !backfill_refused_now => {
                let code = status.unwrap_or(0);
                let hint = config_hint(code);
                config_error = Some(format!("HTTP {code}: {hint}"));
                if self.config_error_logged.is_none() {
                    self.config_error_logged = Some(code);
                    tracing::error!(
                        partition = p,
                        status = code,
                        reason = %reason_text,
                        retry_in_ms = delay_ms,
                        fix = hint,
                        "Configuration error: the stream refused the request; fix the configuration (retrying slowly)"
                    );
                } else if let Some(suppressed) = crate::logging::allow(&format!("config-again:{p}")) {
                    tracing::warn!(
                        partition = p,
                        status = code,
                        retry_in_ms = delay_ms,
                        suppressed,
                        "Configuration error again; retrying slowly"
                    );
                }
            }
            FailureClass::RateLimited => {
                tracing::warn!(
                    partition = p,
                    attempt = d.attempt,
                    retry_in_ms = delay_ms,
                    reason = %reason_text,
                    "Rate limited (429): another client of the account may be connecting; backing off"
                );
            }
            _ => {
                if let Some(suppressed) = crate::logging::allow(&format!("stream-failed:{p}:{}", d.class.as_str())) {
                    tracing::warn!(
                        partition = p,
                        class = d.class.as_str(),
                        attempt = d.attempt,
                        retry_in_ms = delay_ms,
                        connected_ms = m.connected_for.map(|d| d.as_millis() as u64),
                        reason = %reason_text,
                        suppressed,
                        "Stream failed; reconnecting after backoff"
                    );
                }
            }
        }
        if d.newly_failed {
            if d.class == FailureClass::Config {
                tracing::warn!(partition = p, failures = recent, "Partition marked failed (configuration error)");
            } else {
                tracing::error!(
                    partition = p,
                    failures = recent,
                    window_ms = self.cfg.intensity.window.as_millis() as u64,
                    retry_in_ms = delay_ms,
                    reason = %reason_text,
                    "Partition failed: too many failures in the restart window; retrying at the slowest pace"
                );
            }
        }
        let exit = ExitRecord {
            at_ms: now_ms(),
            reason: reason_text.clone(),
            class: d.class.as_str(),
            attempt: d.attempt,
            delay_ms,
        };
        health.update(p, |h| {
            h.push_exit(exit);
            h.last_error = Some(reason_text.clone());
            h.failed = d.failed;
            h.recent_failures = recent;
            if config_error.is_some() {
                h.config_error = config_error.clone();
            }
        });
        health.set_state(p, LinkState::Waiting);
        health.update(p, |h| h.next_attempt_ms = Some(now_ms() + delay_ms as i64));
        let timer = ctx.run_later(delay, move |act, ctx| act.enqueue(p, ctx));
        if let Some(c) = self.children.get_mut(&p) {
            c.timer = Some(timer);
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if !self.shutting_down {
            self.shutting_down = true;
            let _ = self.shutdown_tx.send(true);
            if let Some(h) = self.pump_timer.take() {
                ctx.cancel_future(h);
            }
            self.queue.clear();
            for (p, c) in self.children.iter_mut() {
                if let Some(h) = c.timer.take() {
                    ctx.cancel_future(h);
                }
                if let Some(h) = c.stable_timer.take() {
                    ctx.cancel_future(h);
                }
                c.queued = false;
                if !c.running {
                    self.cfg.health.set_state(*p, LinkState::Stopped);
                }
            }
        }
        self.waiters.push(tx);
        self.check_drained();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Stops the supervisor (after [`Shutdown`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
