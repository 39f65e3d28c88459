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
use crate::event::{parse_line, EventKind, Message, ReplayInfo, StatusEvents, UserEvents};
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

/// A Replay window's response body, read chunk by chunk (decompressed).
pub struct WindowReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>>,
    idle: Duration,
}

impl WindowReader {
    /// Requests event time `[w.from_ms, w.to_ms)`.
    ///
    /// # Errors
    /// Why the request has no body to read (the request failed, or an HTTP
    /// status other than 200, with the start of its body).
    pub async fn open(plan: &ReplayPlan, w: &Window) -> Result<WindowReader, String> {
        let url = plan.window_url(w.from_ms, w.to_ms);
        let client = crate::tls::http_client(plan.connect_timeout, plan.connect_timeout, plan.tls.clone());
        let mut response = client
            .get(url.as_str())
            .insert_header((awc::http::header::AUTHORIZATION, plan.authorization.expose()))
            .insert_header((awc::http::header::ACCEPT_ENCODING, "gzip"))
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = tokio::time::timeout(Duration::from_secs(2), response.body().limit(4096)).await;
            let detail = match body {
                Ok(Ok(b)) => String::from_utf8_lossy(&b).chars().take(300).collect::<String>(),
                _ => String::new(),
            };
            return Err(format!("HTTP {status}: {detail}"));
        }
        Ok(WindowReader { body: Box::pin(response), idle: plan.idle_timeout })
    }

    /// The next decompressed bytes; None at the end of the body.
    ///
    /// # Errors
    /// A read error or no byte for the idle timeout: the body is broken.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        match tokio::time::timeout(self.idle, self.body.next()).await {
            Err(_) => Err("idle read timeout".into()),
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => Err(format!("read failed: {e}")),
            Ok(Some(Ok(c))) => Ok(Some(c)),
        }
    }
}

/// What a replay's lines hold, line by line: events, the closing `info`
/// line, and bad lines (dead-lettered with their position).
pub struct ReplayLines {
    framer: LineFramer,
    source: String,
    lines: u64,
    pub status: StatusEvents,
    pub user: UserEvents,
    pub events: u64,
    pub info: Option<ReplayInfo>,
}

impl ReplayLines {
    pub fn new(w: &Window, max_line: usize) -> ReplayLines {
        ReplayLines {
            framer: LineFramer::new(max_line),
            source: format!("replay {}..{}", crate::gaps::replay_date(w.from_ms), crate::gaps::replay_date(w.to_ms)),
            lines: 0,
            status: StatusEvents::default(),
            user: Vec::new(),
            events: 0,
            info: None,
        }
    }

    /// Frames and parses a chunk; bad lines go to `dead_letter`.
    pub fn push(&mut self, chunk: &[u8], dead_letter: &Mutex<DeadLetter>) {
        let ReplayLines { framer, source, lines, status, user, events, info } = self;
        framer.push(chunk, |frame| {
            *lines += 1;
            let line = match frame {
                Frame::Line(l) => l,
                Frame::Oversized { len, head } => {
                    record(dead_letter, source, *lines, "oversized", &format!("line of {len} bytes"), head);
                    return;
                }
            };
            match parse_line(line) {
                Ok(Message::Event(e)) => {
                    *events += 1;
                    match e.kind {
                        EventKind::Status(s) => status.push(Timed { time_ms: e.time_ms, event: s }),
                        EventKind::User(u) => user.push(Timed { time_ms: e.time_ms, event: u }),
                    }
                }
                Ok(Message::Info(i)) => *info = Some(i),
                Ok(Message::Heartbeat | Message::Error(_)) => {}
                Ok(Message::Unknown { kind }) => {
                    record(dead_letter, source, *lines, "unknown_type", &format!("unknown message type {kind:?}"), line)
                }
                Err(e) => record(dead_letter, source, *lines, e.kind.as_str(), &e.detail, line),
            }
        });
    }

    /// The body ended cleanly: a last line without its `\r\n` (the closing
    /// `info` line, typically) is read too.
    pub fn end(&mut self, dead_letter: &Mutex<DeadLetter>) {
        if let Some(mut rest) = self.framer.take_rest() {
            rest.extend_from_slice(b"\r\n");
            self.push(&rest, dead_letter);
        }
    }

    /// Events waiting to be handed on.
    pub fn pending(&self) -> usize {
        self.status.len() + self.user.len()
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
    let mut reader = match WindowReader::open(plan, w).await {
        Ok(r) => r,
        Err(e) => return (ReplayOutcome::Broken(e), 0),
    };
    let mut lines = ReplayLines::new(w, plan.max_line);
    let mut committed = Vec::new();
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => lines.push(&chunk, dead_letter),
            Ok(None) => {
                lines.end(dead_letter);
                break;
            }
            Err(e) => return finish(committed, router, &mut lines, health, ReplayOutcome::Broken(e)).await,
        }
        if lines.pending() >= plan.batch_max {
            committed.push(hand_on(router, &mut lines, health).await);
        }
    }
    let outcome = ReplayOutcome::of(lines.info.as_ref());
    finish(committed, router, &mut lines, health, outcome).await
}

/// Hands on what is left, waits until every batch of the request is
/// committed, and answers the outcome (broken when a batch was not).
async fn finish(
    mut committed: Vec<tokio::sync::oneshot::Receiver<bool>>,
    router: &Addr<Router>,
    lines: &mut ReplayLines,
    health: &Health,
    outcome: ReplayOutcome,
) -> (ReplayOutcome, u64) {
    if lines.pending() > 0 {
        committed.push(hand_on(router, lines, health).await);
    }
    for rx in committed {
        if !matches!(rx.await, Ok(true)) {
            return (ReplayOutcome::Broken("a replayed batch was not committed".into()), lines.events);
        }
    }
    (outcome, lines.events)
}

/// Sends the pending events without a position (counted as received);
/// answers when they are committed.
async fn hand_on(
    router: &Addr<Router>,
    lines: &mut ReplayLines,
    health: &Health,
) -> tokio::sync::oneshot::Receiver<bool> {
    health.replayed.fetch_add(lines.pending() as u64, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let b = Batch {
        partition: 0,
        status: std::mem::take(&mut lines.status),
        user: std::mem::take(&mut lines.user),
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

fn record(dead_letter: &Mutex<DeadLetter>, source: &str, position: u64, reason: &str, detail: &str, line: &[u8]) {
    metrics::counter!("complyd_dead_lettered_total", "partition" => "replay", "reason" => reason.to_owned())
        .increment(1);
    dead_letter.lock().unwrap_or_else(|e| e.into_inner()).record_or_hold(source, position, reason, detail, line);
}
