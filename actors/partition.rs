//! One partition's stream: one connection attempt per actor.
//!
//! The supervisor starts a [`PartitionStream`] once the connection limiter
//! has granted it a request; the actor makes that one request (awc, HTTP
//! Basic sent pre-emptively, `Accept-Encoding: gzip`, connect timeout), reads
//! the body until it ends, fails, idles past the idle-read timeout or the
//! daemon shuts down, and then reports [`ChildExited`] to the supervisor and
//! stops. The supervisor decides when the next attempt starts.
//!
//! The body is decompressed incrementally here (awc's own decoding is turned
//! off: it would hop to the blocking pool for large chunks, and would hide
//! whether the gzip member was complete), framed on `\r\n` bytes with a
//! maximum line size, parsed, and batched. A batch goes to the router when it
//! holds `batch.max_events` events or its oldest event is `batch.linger_ms`
//! old, with `send(..).await`: a slow store slows the reader, nothing is
//! dropped, and memory stays bounded (one batch being filled, one decoded
//! chunk, one line of at most `max_line_bytes`).

use super::router::{Batch, Router};
use crate::backoff::FailureClass;
use crate::clock::now_ms;
use crate::deadletter::DeadLetter;
use crate::event::{parse_line, EventKind, Message, StatusEvents, UserEvents, EVENT_TYPES};
use crate::framing::{Frame, LineFramer};
use crate::health::PartitionCounters;
use crate::inflate::Inflate;
use crate::settings::StreamPlan;
use crate::store::Timed;
use actix::prelude::*;
use futures_util::StreamExt;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Decoded bytes are framed in slices of at most this size, so that a batch
/// never grows past `max_events` by more than one slice's worth.
const FRAME_SLICE: usize = 64 * 1024;

/// Compressed bytes decoded at a time: at most ~8 MiB of output even at
/// deflate's maximum ratio (about 10 times the input for these streams).
const INFLATE_PIECE: usize = 8 * 1024;

/// A connection whose decoded bytes pass [`BOMB_AFTER`] at more than this
/// many times its compressed bytes is cut as a gzip bomb. The stream
/// compresses about 10:1; deflate reaches about 1000:1 on repeated bytes.
const MAX_INFLATE_RATIO: u64 = 100;
/// The ratio is judged once this much was decoded on the connection.
const BOMB_AFTER: u64 = 16 << 20;

/// How much of a refused response's body is kept for the log.
const ERROR_BODY_LIMIT: usize = 2048;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The daemon is shutting down.
    Shutdown,
    /// The server ended the stream cleanly; `notice` is the `{"error":...}`
    /// message it sent first, if any.
    Ended { notice: Option<String>, buffer_full: bool },
    /// A status other than 200.
    Http { status: u16, message: String },
    /// Connect, TLS or response-header failure (or timeout).
    Connect(String),
    /// Read error, connection reset, bad or truncated gzip.
    Network(String),
    /// No complete line (not even a heartbeat) for the idle-read timeout.
    IdleTimeout(Duration),
    /// The router is gone (the daemon is stopping).
    Internal(String),
}

impl ExitReason {
    /// The reconnect policy's class (None: do not reconnect).
    pub fn class(&self) -> Option<FailureClass> {
        match self {
            ExitReason::Shutdown => None,
            ExitReason::Ended { notice: Some(n), .. } if n.to_ascii_lowercase().contains("too many connections") => {
                Some(FailureClass::Server)
            }
            ExitReason::Ended { .. } => Some(FailureClass::Dropped),
            ExitReason::Http { status, .. } => Some(FailureClass::of_http_status(*status)),
            ExitReason::Connect(_) | ExitReason::Network(_) | ExitReason::IdleTimeout(_) => Some(FailureClass::Network),
            ExitReason::Internal(_) => Some(FailureClass::Server),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Shutdown => f.write_str("shut down"),
            ExitReason::Ended { notice: Some(n), .. } => write!(f, "the server ended the stream: {n}"),
            ExitReason::Ended { notice: None, .. } => f.write_str("the server ended the stream"),
            ExitReason::Http { status, message } if message.is_empty() => write!(f, "HTTP {status}"),
            ExitReason::Http { status, message } => write!(f, "HTTP {status}: {message}"),
            ExitReason::Connect(e) => write!(f, "connect failed: {e}"),
            ExitReason::Network(e) => write!(f, "read failed: {e}"),
            ExitReason::IdleTimeout(d) => {
                write!(f, "no complete line, not even a heartbeat, for {} ms (idle-read timeout)", d.as_millis())
            }
            ExitReason::Internal(e) => write!(f, "internal: {e}"),
        }
    }
}

/// What an operator must fix after a configuration error.
pub fn config_hint(status: u16) -> &'static str {
    match status {
        401 => "the credentials were refused: check stream.username and the password (stream.password_file, or the variable named by stream.password_env)",
        403 => "the account may not use this stream: check stream.account, stream.label and the stream's access in the console",
        404 => "no such stream: check stream.url, stream.account and stream.label",
        406 => "the server requires gzip: something between complyd and X strips the Accept-Encoding: gzip header",
        400 => "the request was refused as malformed: check stream.url and stream.partitions (1-8)",
        _ => "the request was refused: check the [stream] settings",
    }
}

/// The stream is open (200 received): reported to whoever started it (the
/// supervisor).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildConnected {
    pub partition: u8,
    pub generation: u64,
    /// Answered (or dropped) once the gap this connection left is in the
    /// ledger: none of its events is handed on before.
    pub recorded: oneshot::Sender<()>,
}

/// The stream has ended: reported to whoever started it, which decides what
/// comes next.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub partition: u8,
    pub generation: u64,
    pub reason: ExitReason,
    /// How long the stream was open (None: it never opened).
    pub connected_for: Option<Duration>,
    /// Lines framed on the partition so far.
    pub lines: u64,
    /// Wall ms of the last byte received, if any.
    pub last_byte_ms: Option<i64>,
    /// The `backfillMinutes` the request carried.
    pub backfill_minutes: Option<u32>,
}

/// One connection attempt of one partition.
pub struct PartitionStream {
    pub partition: u8,
    pub generation: u64,
    pub spec: Arc<StreamPlan>,
    pub backfill_minutes: Option<u32>,
    pub router: Addr<Router>,
    /// Where [`ChildConnected`] and [`ChildExited`] go (the supervisor).
    pub on_connected: Recipient<ChildConnected>,
    pub on_exit: Recipient<ChildExited>,
    pub shutdown: watch::Receiver<bool>,
    pub counters: Arc<PartitionCounters>,
    pub dead_letter: Arc<Mutex<DeadLetter>>,
    /// Lines framed on this partition so far (the dead-letter position);
    /// carried from one connection to the next by the supervisor.
    pub line_base: u64,
}

impl Actor for PartitionStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let conn = Connection {
            partition: self.partition,
            generation: self.generation,
            spec: self.spec.clone(),
            backfill_minutes: self.backfill_minutes,
            router: self.router.clone(),
            on_connected: self.on_connected.clone(),
            shutdown: self.shutdown.clone(),
            counters: self.counters.clone(),
            dead_letter: self.dead_letter.clone(),
            source: format!("stream:partition={}", self.partition),
            lines: self.line_base,
            batch: Pending::new(self.spec.batch_max),
            notice: None,
            buffer_full: false,
            first_event_seen: false,
            gap_recorded: None,
            clock_lead_ms: None,
        };
        // Every line this connection logs carries its partition (and its
        // generation: the how-many-th connection of this partition).
        let span = tracing::info_span!("partition", partition = self.partition, generation = self.generation);
        ctx.spawn(tracing::Instrument::instrument(conn.run(), span).into_actor(self).map(|outcome, act, ctx| {
            act.on_exit.do_send(ChildExited {
                partition: act.partition,
                generation: act.generation,
                reason: outcome.reason,
                connected_for: outcome.connected_for,
                lines: outcome.lines,
                last_byte_ms: outcome.last_byte_ms,
                backfill_minutes: act.backfill_minutes,
            });
            ctx.stop();
        }));
    }
}

/// How a connection ended.
struct Outcome {
    reason: ExitReason,
    connected_for: Option<Duration>,
    lines: u64,
    last_byte_ms: Option<i64>,
}

/// The batch being filled.
struct Pending {
    status: StatusEvents,
    user: UserEvents,
    max_event_ms: i64,
    /// When the oldest event of the batch arrived.
    first_receipt: Option<Instant>,
    capacity: usize,
}

impl Pending {
    fn new(capacity: usize) -> Pending {
        Pending { status: StatusEvents::default(), user: Vec::new(), max_event_ms: 0, first_receipt: None, capacity }
    }

    fn len(&self) -> usize {
        self.status.len() + self.user.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }
}

/// The state of one connection, moved into its future.
struct Connection {
    partition: u8,
    generation: u64,
    spec: Arc<StreamPlan>,
    backfill_minutes: Option<u32>,
    router: Addr<Router>,
    on_connected: Recipient<ChildConnected>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<PartitionCounters>,
    dead_letter: Arc<Mutex<DeadLetter>>,
    source: String,
    lines: u64,
    batch: Pending,
    notice: Option<String>,
    buffer_full: bool,
    /// The connection's first event is recorded in the counters.
    first_event_seen: bool,
    /// Resolves once the gap the connection left is in the ledger.
    gap_recorded: Option<oneshot::Receiver<()>>,
    /// The largest clock lead of this connection's batches
    /// ([`crate::gaps::clock_lead`]); until its first, the counters keep
    /// the one before.
    clock_lead_ms: Option<i64>,
}

impl Connection {
    async fn run(mut self) -> Outcome {
        let mut connected_at = None;
        let mut last_byte_ms = None;
        let reason = self.stream(&mut connected_at, &mut last_byte_ms).await;
        Outcome { reason, connected_for: connected_at.map(|t: Instant| t.elapsed()), lines: self.lines, last_byte_ms }
    }

    async fn stream(&mut self, connected_at: &mut Option<Instant>, last_byte_ms: &mut Option<i64>) -> ExitReason {
        let p = self.partition;
        let url = self.spec.partition_url(p, self.backfill_minutes);
        let client = client_for(&self.spec);
        let request = client
            .get(url.as_str())
            .insert_header((awc::http::header::AUTHORIZATION, self.spec.authorization.expose()))
            .insert_header((awc::http::header::ACCEPT_ENCODING, "gzip"))
            .no_decompress();
        tracing::debug!(partition = p, url = %redact_query(&url), backfill_minutes = ?self.backfill_minutes, "Connecting");
        let sent = tokio::select! {
            biased;
            _ = wait_shutdown(&mut self.shutdown) => None,
            r = request.send() => Some(r),
        };
        let mut response = match sent {
            None => return ExitReason::Shutdown,
            Some(Ok(r)) => r,
            Some(Err(e)) => return ExitReason::Connect(e.to_string()),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let body = tokio::time::timeout(Duration::from_secs(2), response.body().limit(64 * 1024)).await;
            let message = match body {
                Ok(Ok(b)) => error_message(&b),
                _ => String::new(),
            };
            return ExitReason::Http { status, message };
        }
        let encoding = response
            .headers()
            .get(awc::http::header::CONTENT_ENCODING)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
        let gzip = match encoding.as_deref() {
            None | Some("" | "identity") => false,
            Some(e) if e.contains("gzip") => true,
            Some(e) => {
                let shown: String = e.chars().take(40).collect();
                return ExitReason::Network(format!(
                    "the server sent Content-Encoding {shown:?}; complyd reads gzip (or no encoding)"
                ));
            }
        };
        if !gzip {
            tracing::warn!(partition = p, "The stream is not gzip-encoded; reading it as is");
        }
        *connected_at = Some(Instant::now());
        self.counters.connection_first_event_ms.store(0, Relaxed);
        self.counters.connections.fetch_add(1, Relaxed);
        let (recorded, gap_recorded) = oneshot::channel();
        self.gap_recorded = Some(gap_recorded);
        self.on_connected.do_send(ChildConnected { partition: p, generation: self.generation, recorded });
        tracing::info!(partition = p, backfill_minutes = ?self.backfill_minutes, "Stream connected");

        let mut inflate = if gzip { Inflate::gzip() } else { Inflate::identity() };
        let mut decoded: Vec<u8> = Vec::with_capacity(256 * 1024);
        let mut framer = LineFramer::new(self.spec.max_line);
        // Compressed bytes fed to the decoder, decoded bytes out of it.
        let (mut fed, mut inflated) = (0u64, 0u64);
        let idle = self.spec.idle_timeout;
        let mut idle_deadline = tokio::time::Instant::now() + idle;
        loop {
            let flush_at = self.batch.first_receipt.map(|t| tokio::time::Instant::from_std(t + self.spec.linger));
            let deadline = match flush_at {
                Some(f) if f < idle_deadline => f,
                _ => idle_deadline,
            };
            let next = tokio::select! {
                biased;
                _ = wait_shutdown(&mut self.shutdown) => None,
                r = tokio::time::timeout_at(deadline, response.next()) => Some(r),
            };
            let Some(next) = next else {
                if let Err(e) = self.flush(*last_byte_ms).await {
                    return e;
                }
                self.discard_cut(&framer, Cut::Shutdown);
                return ExitReason::Shutdown;
            };
            let item = match next {
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if let Err(e) = self.flush(*last_byte_ms).await {
                        return e;
                    }
                    if now >= idle_deadline {
                        self.discard_cut(&framer, Cut::IdleTimeout);
                        return ExitReason::IdleTimeout(idle);
                    }
                    continue;
                }
                Ok(item) => item,
            };
            let chunk = match item {
                None => {
                    // The body ended: cleanly only with the gzip trailer.
                    let res = inflate.finish(&mut decoded);
                    if !decoded.is_empty() {
                        if let Err(e) = self.frame(&mut framer, &decoded, *last_byte_ms).await {
                            return e;
                        }
                    }
                    if let Err(e) = self.flush(*last_byte_ms).await {
                        return e;
                    }
                    self.discard_cut(&framer, Cut::StreamEnded);
                    return match res {
                        Ok(()) => ExitReason::Ended { notice: self.notice.take(), buffer_full: self.buffer_full },
                        Err(e) => ExitReason::Network(format!("the gzip stream ended early ({e})")),
                    };
                }
                Some(Err(e)) => {
                    if let Err(x) = self.flush(*last_byte_ms).await {
                        return x;
                    }
                    self.discard_cut(&framer, Cut::ReadError);
                    return ExitReason::Network(e.to_string());
                }
                Some(Ok(chunk)) => chunk,
            };
            let lines_before = self.lines;
            let now = now_ms();
            *last_byte_ms = Some(now);
            self.counters.last_byte_ms.store(now, Relaxed);
            self.counters.bytes.fetch_add(chunk.len() as u64, Relaxed);
            // Compressed input in small pieces: whatever the compression
            // ratio, one decoded piece stays small.
            for piece in chunk.chunks(INFLATE_PIECE) {
                if let Err(e) = inflate.decode(piece, &mut decoded) {
                    if let Err(x) = self.flush(*last_byte_ms).await {
                        return x;
                    }
                    self.discard_cut(&framer, Cut::BadGzip);
                    return ExitReason::Network(format!("bad gzip data: {e}"));
                }
                fed += piece.len() as u64;
                inflated += decoded.len() as u64;
                if gzip && inflated > BOMB_AFTER && inflated > fed.saturating_mul(MAX_INFLATE_RATIO) {
                    if let Err(x) = self.flush(*last_byte_ms).await {
                        return x;
                    }
                    let detail = format!(
                        "{inflated} bytes decoded from {fed} compressed (over {MAX_INFLATE_RATIO}:1): a gzip bomb; the connection is cut"
                    );
                    self.discard_cut(&framer, Cut::GzipBomb);
                    self.counters.dead_lettered.fetch_add(1, Relaxed);
                    self.dead_letter("gzip_bomb", &detail, &decoded[..decoded.len().min(256)]);
                    return ExitReason::Network(detail);
                }
                if let Err(e) = self.frame(&mut framer, &decoded, *last_byte_ms).await {
                    return e;
                }
            }
            // Bytes that never complete a line (a server sending one byte a
            // second) do not keep the connection alive.
            if self.lines > lines_before {
                idle_deadline = tokio::time::Instant::now() + idle;
            }
        }
    }

    /// Frames decoded bytes, slice by slice, handing full batches on.
    async fn frame(
        &mut self,
        framer: &mut LineFramer,
        decoded: &[u8],
        last_byte_ms: Option<i64>,
    ) -> Result<(), ExitReason> {
        self.counters.bytes_decoded.fetch_add(decoded.len() as u64, Relaxed);
        let received = Instant::now();
        for slice in decoded.chunks(FRAME_SLICE) {
            let mut stats = FrameStats::default();
            framer.push(slice, |frame| self.on_frame(frame, received, &mut stats));
            stats.publish(&self.counters);
            if self.batch.is_full() {
                self.flush(last_byte_ms).await?;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame<'_>, received: Instant, stats: &mut FrameStats) {
        self.lines += 1;
        stats.lines += 1;
        let line = match frame {
            Frame::Line(l) => l,
            Frame::Oversized { len, head } => {
                stats.oversized += 1;
                stats.dead += 1;
                self.dead_letter(
                    "oversized",
                    &format!("line of {len} bytes is longer than stream.max_line_bytes ({})", self.spec.max_line),
                    head,
                );
                return;
            }
        };
        match parse_line(line) {
            Ok(Message::Heartbeat) => stats.heartbeats += 1,
            Ok(Message::Event(e)) => {
                stats.events += 1;
                if !self.first_event_seen {
                    self.first_event_seen = true;
                    self.counters.connection_first_event_ms.store(e.time_ms, Relaxed);
                }
                stats.by_type[e.type_index()] += 1;
                if e.time_ms > self.batch.max_event_ms {
                    self.batch.max_event_ms = e.time_ms;
                }
                if self.batch.first_receipt.is_none() {
                    self.batch.first_receipt = Some(received);
                }
                match e.kind {
                    EventKind::Status(s) => self.batch.status.push(Timed { time_ms: e.time_ms, event: s }),
                    EventKind::User(u) => self.batch.user.push(Timed { time_ms: e.time_ms, event: u }),
                }
            }
            Ok(Message::Error(n)) => {
                stats.notices += 1;
                if n.is_buffer_full() {
                    self.buffer_full = true;
                    self.counters.data_loss.fetch_add(1, Relaxed);
                    tracing::error!(
                        partition = self.partition,
                        notice = %n.message,
                        sent = n.sent.as_deref().unwrap_or(""),
                        last_byte_ms = self.counters.last_byte_ms.load(Relaxed),
                        gap_from_event_ms = self.batch.max_event_ms.max(self.counters.last_event_ms.load(Relaxed)),
                        "Data lost: the server dropped what it had buffered for this partition; the gap is in the gap ledger (complyd gaps), for Replay"
                    );
                } else {
                    tracing::warn!(partition = self.partition, notice = %n.message, sent = n.sent.as_deref().unwrap_or(""), "The server is disconnecting");
                }
                self.notice = Some(n.message);
            }
            Ok(Message::Info(i)) => {
                tracing::info!(partition = self.partition, notice = %i.message, complete = i.is_complete(), "Info line on the stream");
            }
            Ok(Message::Unknown { kind }) => {
                stats.unknown += 1;
                stats.dead += 1;
                self.dead_letter("unknown_type", &format!("unknown message type {kind:?}"), line);
            }
            Err(e) => {
                stats.dead += 1;
                self.dead_letter(e.kind.as_str(), &e.detail, line);
            }
        }
    }

    fn dead_letter(&self, reason: &str, detail: &str, line: &[u8]) {
        metrics::counter!("complyd_dead_lettered_total", "partition" => self.partition.to_string(), "reason" => reason.to_owned())
            .increment(1);
        self.dead_letter.lock().unwrap_or_else(|e| e.into_inner()).record_or_hold(
            &self.source,
            self.lines,
            reason,
            detail,
            line,
        );
    }

    /// Counts and logs the message the framer holds a part of when the
    /// connection ends: it is never applied (the gap it leaves is known).
    fn discard_cut(&self, framer: &LineFramer, why: Cut) {
        let bytes = framer.pending();
        if bytes == 0 {
            return;
        }
        self.counters.cut_messages.fetch_add(1, Relaxed);
        metrics::counter!("complyd_discarded_total", "partition" => self.partition.to_string(), "reason" => why.as_str())
            .increment(1);
        let p = self.partition;
        match why {
            // Stopping on purpose: the restart reads the stream from there.
            Cut::Shutdown => {
                tracing::info!(partition = p, bytes, reason = why.as_str(), "Message cut by the shutdown; not applied")
            }
            _ => tracing::warn!(
                partition = p,
                bytes,
                reason = why.as_str(),
                "Message cut by the end of the connection; not applied"
            ),
        }
    }

    /// Hands the pending batch to the router and waits until the handlers
    /// have accepted it (backpressure).
    async fn flush(&mut self, last_byte_ms: Option<i64>) -> Result<(), ExitReason> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if let Some(recorded) = self.gap_recorded.take() {
            // The gap this connection left goes into the ledger before any
            // of its events commits: a crash in between would otherwise
            // leave a position past a gap nobody recorded.
            let stopped = tokio::select! {
                biased;
                _ = recorded => false,
                _ = wait_shutdown(&mut self.shutdown) => true,
            };
            if stopped {
                let n = (self.batch.status.len() + self.batch.user.len()) as u64;
                metrics::counter!("complyd_discarded_total", "partition" => self.partition.to_string(), "reason" => "gap_not_recorded")
                    .increment(n);
                tracing::warn!(partition = self.partition, events = n, "Shutting down before this connection's gap was recorded: its first events are not applied (the restart covers them)");
                return Err(ExitReason::Shutdown);
            }
        }
        let status = std::mem::take(&mut self.batch.status);
        let user = std::mem::take(&mut self.batch.user);
        let received = self.batch.first_receipt.take().unwrap_or_else(Instant::now);
        let n = (status.len() + user.len()) as u64;
        let last_byte_ms = last_byte_ms.unwrap_or_else(now_ms);
        let max_event_ms = crate::gaps::batch_event_time(std::mem::take(&mut self.batch.max_event_ms), last_byte_ms);
        let batch = Batch {
            partition: self.partition,
            status,
            user,
            last_event_ms: max_event_ms,
            last_byte_ms,
            received,
            committed: None,
        };
        if max_event_ms > 0 {
            self.counters.last_event_ms.fetch_max(max_event_ms, Relaxed);
            // The largest lead of this connection's batches: each reads low
            // by its events' age (a lagging stream, a backfill), never high.
            let lead = crate::gaps::clock_lead(Some(last_byte_ms), max_event_ms);
            let lead = self.clock_lead_ms.map_or(lead, |l| l.max(lead));
            self.clock_lead_ms = Some(lead);
            self.counters.clock_lead_ms.store(lead, Relaxed);
        }
        self.counters.events.fetch_add(n, Relaxed);
        match self.router.send(batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                metrics::counter!("complyd_discarded_total", "partition" => self.partition.to_string(), "reason" => "router_gone")
                    .increment(n);
                tracing::error!(partition = self.partition, events = n, error = %e, "Data lost: the router is gone; a batch was not handed on");
                Err(ExitReason::Internal(format!("router unavailable: {e}")))
            }
        }
    }
}

/// Why a connection ended inside a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Shutdown,
    IdleTimeout,
    StreamEnded,
    ReadError,
    BadGzip,
    GzipBomb,
}

impl Cut {
    fn as_str(self) -> &'static str {
        match self {
            Cut::Shutdown => "shutdown",
            Cut::IdleTimeout => "idle_timeout",
            Cut::StreamEnded => "stream_ended",
            Cut::ReadError => "read_error",
            Cut::BadGzip => "bad_gzip",
            Cut::GzipBomb => "gzip_bomb",
        }
    }
}

#[derive(Default)]
struct FrameStats {
    lines: u64,
    heartbeats: u64,
    events: u64,
    dead: u64,
    oversized: u64,
    unknown: u64,
    notices: u64,
    by_type: [u64; EVENT_TYPES.len()],
}

impl FrameStats {
    fn publish(&self, c: &PartitionCounters) {
        c.lines.fetch_add(self.lines, Relaxed);
        if self.heartbeats > 0 {
            c.heartbeats.fetch_add(self.heartbeats, Relaxed);
        }
        if self.dead > 0 {
            c.dead_lettered.fetch_add(self.dead, Relaxed);
            c.oversized.fetch_add(self.oversized, Relaxed);
            c.unknown.fetch_add(self.unknown, Relaxed);
        }
        if self.notices > 0 {
            c.notices.fetch_add(self.notices, Relaxed);
        }
        if self.events > 0 {
            for (counter, n) in c.by_type.iter().zip(self.by_type) {
                if n > 0 {
                    counter.fetch_add(n, Relaxed);
                }
            }
        }
    }
}

thread_local! {
    /// One awc client per stream thread (awc is `!Send`), built once: a
    /// client and its TLS connector are not worth building again on every
    /// reconnect.
    static CLIENT: std::cell::RefCell<Option<(usize, awc::Client)>> = const { std::cell::RefCell::new(None) };
}

/// The stream thread's client for `spec`: [`crate::tls::http_client`]
/// (HTTP/1.1 only: one TCP connection per partition, never multiplexed; no
/// redirects; the connect timeout covers connect, TLS and the response
/// headers) on the stream's TLS configuration (`stream.ca_file`).
fn client_for(spec: &Arc<StreamPlan>) -> awc::Client {
    let key = Arc::as_ptr(spec) as usize;
    CLIENT.with(|c| {
        let mut c = c.borrow_mut();
        match &*c {
            Some((k, client)) if *k == key => client.clone(),
            _ => {
                let client = crate::tls::http_client(spec.connect_timeout, spec.connect_timeout, spec.tls.clone());
                *c = Some((key, client.clone()));
                client
            }
        }
    })
}

/// Resolves when the shutdown flag is (or becomes) set; never when the
/// sender is gone without setting it.
async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The `message` of an `{"error":{"message":...}}` body, or the body's start.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        return b.error.message;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]);
    text.trim().chars().filter(|c| !c.is_control()).take(300).collect()
}

/// A URL safe to log (the query and any user info are kept out).
pub fn redact_query(url: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    crate::store::redact_url(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_classes() {
        assert_eq!(ExitReason::Shutdown.class(), None);
        assert_eq!(ExitReason::Ended { notice: None, buffer_full: false }.class(), Some(FailureClass::Dropped));
        let tmc =
            ExitReason::Ended { notice: Some("Forced Disconnect: Too many connections.".into()), buffer_full: false };
        assert_eq!(tmc.class(), Some(FailureClass::Server));
        assert_eq!(ExitReason::Http { status: 401, message: String::new() }.class(), Some(FailureClass::Config));
        assert_eq!(ExitReason::Http { status: 429, message: String::new() }.class(), Some(FailureClass::RateLimited));
        assert_eq!(ExitReason::Http { status: 503, message: String::new() }.class(), Some(FailureClass::Server));
        assert_eq!(ExitReason::IdleTimeout(Duration::from_secs(1)).class(), Some(FailureClass::Network));
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Invalid credentials.","sent":"x"}}"#),
            "Invalid credentials."
        );
        assert_eq!(error_message(b"<html>\nBad\tGateway</html>"), "<html>BadGateway</html>");
    }

    #[test]
    fn urls_are_logged_without_query_or_credentials() {
        assert_eq!(redact_query("https://u:p@h/x.json?partition=1"), "https://***@h/x.json");
    }
}
