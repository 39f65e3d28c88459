//! The replayer: repairs the gap ledger's open gaps through X's Replay
//! endpoint. Every `replay.check_interval_ms` it asks the gap keeper for the
//! next window due (a gap that ended at least `replay.freshness_ms` ago, at
//! most `replay.max_window_ms` of it, within Replay's 5 days), requests it
//! within `replay.max_requests` per `replay.window_ms`, and hands what comes
//! back to the router exactly as a stream's events (the same handlers; what
//! arrives twice changes nothing), without a position: replayed events are
//! not of any partition's stream. Once they are committed it tells the gap
//! keeper how the request ended (its closing `info` line).
//!
//! Runs on its own thread (an arbiter of its own): parsing a replay never
//! slows the live streams' threads, and the router's lanes bound what it
//! holds.

use super::gap_keeper::{GapKeeper, NextWindow, WindowDone};
use super::router::{Batch, Router};
use crate::deadletter::DeadLetter;
use crate::event::{parse_line, EventKind, Message, ReplayInfo, StatusEvent, UserEvent};
use crate::framing::{Frame, LineFramer};
use crate::gaps::{ReplayOutcome, Window};
use crate::health::Health;
use crate::limiter::ConnectLimiter;
use crate::settings::ReplayPlan;
use crate::store::Timed;
use actix::prelude::*;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Replayer {
    plan: Arc<ReplayPlan>,
    health: Arc<Health>,
    keeper: Addr<GapKeeper>,
    router: Addr<Router>,
    dead_letter: Arc<Mutex<DeadLetter>>,
    limiter: ConnectLimiter,
    started: Instant,
    busy: bool,
}

impl Replayer {
    pub fn new(
        plan: ReplayPlan,
        health: Arc<Health>,
        keeper: Addr<GapKeeper>,
        router: Addr<Router>,
        dead_letter: Arc<Mutex<DeadLetter>>,
    ) -> Replayer {
        let limiter = ConnectLimiter::new(plan.max_requests, plan.window, Duration::ZERO);
        Replayer {
            plan: Arc::new(plan),
            health,
            keeper,
            router,
            dead_letter,
            limiter,
            started: Instant::now(),
            busy: false,
        }
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Requests the next window due, if the budget allows one now.
    fn next(&mut self, ctx: &mut Context<Self>) {
        if self.busy || !self.limiter.wait(self.mono_ms()).is_zero() {
            return;
        }
        self.busy = true;
        let keeper = self.keeper.clone();
        let ask =
            NextWindow { freshness_ms: self.plan.freshness.as_millis() as i64, max_window_ms: self.plan.max_window_ms };
        let due = async move { keeper.send(ask).await.ok().and_then(Result::ok).flatten() };
        ctx.spawn(due.into_actor(self).then(|window, act, _| {
            let job = window.map(|window| {
                let now = act.mono_ms();
                if let Ok(ticket) = act.limiter.try_acquire(now) {
                    act.limiter.settle(ticket, now);
                }
                (
                    window,
                    act.plan.clone(),
                    act.keeper.clone(),
                    act.router.clone(),
                    act.dead_letter.clone(),
                    act.health.clone(),
                )
            });
            let work = async move {
                let Some((window, plan, keeper, router, dl, health)) = job else { return };
                let (outcome, events) = replay_window(&plan, &window, &router, &dl, &health).await;
                metrics::counter!("complyd_replay_requests_total", "outcome" => outcome.as_str()).increment(1);
                metrics::counter!("complyd_replay_events_total").increment(events);
                tracing::info!(
                    gap = window.gap_id,
                    from = %crate::gaps::replay_date(window.from_ms),
                    to = %crate::gaps::replay_date(window.to_ms),
                    outcome = outcome.as_str(),
                    events,
                    "Replay request ended"
                );
                if let Err(e) = keeper.send(WindowDone { window, outcome, events }).await {
                    tracing::warn!(error = %e, "The gap keeper is gone; the window is asked again after a restart");
                }
            };
            work.into_actor(act).map(|(), act, _| act.busy = false)
        }));
    }
}

impl Actor for Replayer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = self.plan.check_interval;
        ctx.run_interval(every, |act, ctx| act.next(ctx));
    }
}

/// Requests one window, hands its events to the router (waiting until they
/// are committed), and says how it ended, with the number of events.
async fn replay_window(
    plan: &ReplayPlan,
    w: &Window,
    router: &Addr<Router>,
    dead_letter: &Arc<Mutex<DeadLetter>>,
    health: &Health,
) -> (ReplayOutcome, u64) {
    let url = plan.window_url(w.from_ms, w.to_ms);
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(plan.connect_timeout).max_http_version(awc::http::Version::HTTP_11))
        .timeout(plan.connect_timeout)
        .disable_redirects()
        .finish();
    let sent = client
        .get(url.as_str())
        .insert_header((awc::http::header::AUTHORIZATION, plan.authorization.expose()))
        .insert_header((awc::http::header::ACCEPT_ENCODING, "gzip"))
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => return (ReplayOutcome::Broken(format!("request failed: {e}")), 0),
    };
    let status = response.status().as_u16();
    if status != 200 {
        let body = tokio::time::timeout(Duration::from_secs(2), response.body().limit(4096)).await;
        let detail = match body {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).chars().take(300).collect::<String>(),
            _ => String::new(),
        };
        return (ReplayOutcome::Broken(format!("HTTP {status}: {detail}")), 0);
    }
    let mut framer = LineFramer::new(plan.max_line);
    let mut batch = Pending::default();
    let mut info: Option<ReplayInfo> = None;
    let mut events = 0u64;
    let mut lines = 0u64;
    let source = format!("replay {}", crate::gaps::replay_date(w.from_ms));
    let mut committed = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(plan.idle_timeout, response.next()).await {
            Err(_) => {
                return finish(
                    committed,
                    router,
                    &mut batch,
                    health,
                    events,
                    ReplayOutcome::Broken("idle read timeout".into()),
                )
                .await
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return finish(
                    committed,
                    router,
                    &mut batch,
                    health,
                    events,
                    ReplayOutcome::Broken(format!("read failed: {e}")),
                )
                .await
            }
            Ok(Some(Ok(c))) => c,
        };
        framer.push(&chunk, |frame| {
            lines += 1;
            let line = match frame {
                Frame::Line(l) => l,
                Frame::Oversized { len, head } => {
                    record(dead_letter, &source, lines, "oversized", &format!("line of {len} bytes"), head);
                    return;
                }
            };
            match parse_line(line) {
                Ok(Message::Event(e)) => {
                    events += 1;
                    match e.kind {
                        EventKind::Status(s) => batch.status.push(Timed { time_ms: e.time_ms, event: s }),
                        EventKind::User(u) => batch.user.push(Timed { time_ms: e.time_ms, event: u }),
                    }
                }
                Ok(Message::Info(i)) => info = Some(i),
                Ok(Message::Heartbeat | Message::Error(_)) => {}
                Ok(Message::Unknown { kind }) => {
                    record(dead_letter, &source, lines, "unknown_type", &format!("unknown message type {kind:?}"), line)
                }
                Err(e) => record(dead_letter, &source, lines, e.kind.as_str(), &e.detail, line),
            }
        });
        if batch.len() >= plan.batch_max {
            committed.push(hand_on(router, &mut batch, health).await);
        }
    }
    let outcome = ReplayOutcome::of(info.as_ref());
    finish(committed, router, &mut batch, health, events, outcome).await
}

/// Hands on what is left, waits until every batch of the request is
/// committed, and answers the outcome (broken when a batch was not).
async fn finish(
    mut committed: Vec<tokio::sync::oneshot::Receiver<bool>>,
    router: &Addr<Router>,
    batch: &mut Pending,
    health: &Health,
    events: u64,
    outcome: ReplayOutcome,
) -> (ReplayOutcome, u64) {
    if batch.len() > 0 {
        committed.push(hand_on(router, batch, health).await);
    }
    for rx in committed {
        if !matches!(rx.await, Ok(true)) {
            return (ReplayOutcome::Broken("a replayed batch was not committed".into()), events);
        }
    }
    (outcome, events)
}

#[derive(Default)]
struct Pending {
    status: Vec<Timed<StatusEvent>>,
    user: Vec<Timed<UserEvent>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.status.len() + self.user.len()
    }
}

/// Sends a batch without a position (counted as received); answers when it
/// is committed.
async fn hand_on(router: &Addr<Router>, batch: &mut Pending, health: &Health) -> tokio::sync::oneshot::Receiver<bool> {
    health.replayed.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let b = Batch {
        partition: 0,
        status: std::mem::take(&mut batch.status),
        user: std::mem::take(&mut batch.user),
        last_event_ms: 0,
        last_byte_ms: 0,
        received: Instant::now(),
        committed: Some(tx),
    };
    if router.send(b).await.is_err() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(false);
        return rx;
    }
    rx
}

fn record(dead_letter: &Arc<Mutex<DeadLetter>>, source: &str, position: u64, reason: &str, detail: &str, line: &[u8]) {
    metrics::counter!("complyd_dead_lettered_total", "partition" => "replay", "reason" => reason.to_owned())
        .increment(1);
    let mut dl = dead_letter.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = dl.record(source, position, reason, detail, line) {
        metrics::counter!("complyd_dead_letter_write_errors_total").increment(1);
        if let Some(suppressed) = crate::logging::allow("deadletter-write") {
            tracing::error!(reason, error = %e, suppressed, "Could not write a bad line to the dead-letter file; it is lost");
        }
    }
}
