//! One stream connection: the body of a 200 answer on the stream endpoint.
//!
//! It writes one gzip member: the header, then segments (shared batches from
//! the producer, or pieces compressed for this connection alone: backfill,
//! split batches, error and malformed lines, heartbeats), and on a clean end
//! the trailer. Faults claimed from the board change what it writes.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::Crc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ctx::{error_json, Ctx};
use super::fault::{Fault, FaultKind, MALFORMED_LINES};
use super::gen::Rng;
use super::gz::{trailer, SegmentCompressor, GZIP_HEADER};
use super::producer::{Segment, SubState};
use crate::clock::now_ms;

/// The full-buffer disconnect message.
pub(crate) const FULL_BUFFER_MESSAGE: &str =
    "This stream has been disconnected because your client was unable to keep up with us.";

/// Pause before an abrupt close, so what was written before reaches the client.
const ABORT_DELAY: Duration = Duration::from_millis(100);
/// Pause between the two parts of a split piece.
const SPLIT_PAUSE: Duration = Duration::from_millis(2);
/// Events scanned per step of a backfill.
const BACKFILL_STEP: i64 = 8192;

/// Something to write, and what it means once fully written.
struct Out {
    bytes: Bytes,
    /// The complete lines it carries (recorded once written).
    raw: Bytes,
    events: u32,
    lines: u32,
    heartbeat: bool,
    backfill: bool,
}

impl Out {
    fn bare(bytes: Bytes) -> Out {
        Out { bytes, raw: Bytes::new(), events: 0, lines: 0, heartbeat: false, backfill: false }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    /// Trailer queued: end the body with the zero-length chunk.
    Clean,
    /// End the body cleanly but without the gzip trailer.
    Truncated,
    /// Drop the connection (no terminating chunk).
    Abort,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cut {
    Drop,
    Truncate,
}

struct Trickle {
    piece: usize,
    interval: Duration,
    until: Option<Instant>,
}

pub(crate) struct StreamConn {
    ctx: Arc<Ctx>,
    p: u8,
    rx: mpsc::Receiver<Arc<Segment>>,
    sub: Arc<SubState>,
    crc: Crc,
    header_sent: bool,
    out: VecDeque<Out>,
    backfill: Option<(i64, i64)>,
    leftover: Option<(Arc<Segment>, usize)>,
    claimed: Vec<u64>,
    waiting: Vec<Fault>,
    fault_gen: u64,
    cut: Option<(Cut, Fault)>,
    stall_until: Option<Instant>,
    trickle: Option<Trickle>,
    /// Events a full-buffer fault still has to throw away.
    lose: u64,
    queued_events: u64,
    events_sent: u64,
    last_write: Instant,
    ending: Option<Ending>,
    finished: bool,
    one_off: Option<SegmentCompressor>,
    rng: Rng,
    pause_next: bool,
}

impl StreamConn {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        p: u8,
        rx: mpsc::Receiver<Arc<Segment>>,
        sub: Arc<SubState>,
        backfill: Option<(i64, i64)>,
    ) -> StreamConn {
        let c = ctx.stats.part(p);
        let id = c.connections_total.fetch_add(1, Relaxed);
        c.connections_open.fetch_add(1, Relaxed);
        let rng = Rng::new(ctx.cfg.seed, 0x4348_554e_4b53 + u64::from(p), id);
        StreamConn {
            ctx,
            p,
            rx,
            sub,
            crc: Crc::new(),
            header_sent: false,
            out: VecDeque::new(),
            backfill: backfill.filter(|(a, b)| a < b),
            leftover: None,
            claimed: Vec::new(),
            waiting: Vec::new(),
            // Forces a look at the board before the first byte.
            fault_gen: u64::MAX,
            cut: None,
            stall_until: None,
            trickle: None,
            lose: 0,
            queued_events: 0,
            events_sent: 0,
            last_write: Instant::now(),
            ending: None,
            finished: false,
            one_off: None,
            rng,
            pause_next: false,
        }
    }

    /// The next piece of the body; `None` ends it cleanly, an error drops the
    /// connection.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if let Some(b) = self.take_output().await {
                return Some(Ok(b));
            }
            if self.finished {
                return None;
            }
            match self.ending {
                Some(Ending::Clean) | Some(Ending::Truncated) => {
                    self.finished = true;
                    return None;
                }
                Some(Ending::Abort) => {
                    tokio::time::sleep(ABORT_DELAY).await;
                    self.finished = true;
                    return Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "simulated connection drop")));
                }
                None => {}
            }
            if let Some(until) = self.stall_until.take() {
                tokio::time::sleep_until(until).await;
                continue;
            }
            if self.poll_faults() {
                continue;
            }
            if let Some((seg, off)) = self.leftover.take() {
                self.emit(seg, off);
                continue;
            }
            if self.backfill.is_some() {
                self.step_backfill();
                continue;
            }
            self.wait().await;
        }
    }

    /// Writes (part of) the first queued output. Never returns an empty
    /// piece: an empty chunk would end the HTTP body.
    async fn take_output(&mut self) -> Option<Bytes> {
        if let Some(t) = &self.trickle {
            if t.until.is_some_and(|u| Instant::now() >= u) {
                self.trickle = None;
            }
        }
        while self.out.front().is_some_and(|o| o.bytes.is_empty()) {
            if let Some(o) = self.out.pop_front() {
                self.account(&o);
            }
        }
        if self.out.is_empty() {
            return None;
        }
        let piece = match &self.trickle {
            Some(t) => {
                let (n, d) = (t.piece, t.interval);
                tokio::time::sleep(d).await;
                let front = self.out.front_mut()?;
                let n = n.min(front.bytes.len());
                front.bytes.split_to(n)
            }
            None => {
                if self.pause_next {
                    // Let the first part of a split piece reach the client alone.
                    self.pause_next = false;
                    tokio::time::sleep(SPLIT_PAUSE).await;
                }
                let ratio = self.ctx.cfg.split_chunks_ratio;
                let split = ratio > 0.0 && self.rng.chance(ratio);
                let front = self.out.front_mut()?;
                if split && front.lines > 0 && front.bytes.len() >= 8 {
                    // Cut anywhere: the client sees a chunk that ends inside a
                    // message (maybe inside a multi-byte character).
                    let cut = 1 + self.rng.below(front.bytes.len() as u64 - 1) as usize;
                    self.pause_next = true;
                    front.bytes.split_to(cut)
                } else {
                    std::mem::take(&mut front.bytes)
                }
            }
        };
        if self.out.front().is_some_and(|o| o.bytes.is_empty()) {
            if let Some(o) = self.out.pop_front() {
                self.account(&o);
            }
        }
        self.last_write = Instant::now();
        self.ctx.stats.part(self.p).bytes_sent.fetch_add(piece.len() as u64, Relaxed);
        Some(piece)
    }

    fn account(&mut self, o: &Out) {
        let c = self.ctx.stats.part(self.p);
        if o.heartbeat {
            c.heartbeats_sent.fetch_add(1, Relaxed);
        }
        if o.lines > 0 {
            c.lines_sent.fetch_add(u64::from(o.lines), Relaxed);
        }
        if o.events > 0 {
            c.events_sent.fetch_add(u64::from(o.events), Relaxed);
            if o.backfill {
                c.backfill_events_sent.fetch_add(u64::from(o.events), Relaxed);
            }
            self.events_sent += u64::from(o.events);
        }
        if let Some(r) = &self.ctx.recorder {
            r.lines(self.p, now_ms(), &o.raw);
        }
    }

    async fn wait(&mut self) {
        if self.sub.overflowed.load(Acquire) {
            self.overflow_close();
            return;
        }
        let ctx = self.ctx.clone();
        let notified = ctx.faults.notify(self.p).notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if ctx.faults.generation(self.p) != self.fault_gen {
            return;
        }
        let heartbeat_at = self.last_write + Duration::from_millis(ctx.cfg.heartbeat_interval_ms);
        let losing = self.lose > 0;
        tokio::select! {
            biased;
            _ = &mut notified => {}
            seg = self.rx.recv() => match seg {
                Some(seg) => {
                    if self.sub.overflowed.load(Acquire) {
                        self.skip(u64::from(seg.events));
                        self.overflow_close();
                    } else {
                        self.emit(seg, 0);
                    }
                }
                None => {
                    if self.sub.overflowed.load(Acquire) {
                        self.overflow_close();
                    } else {
                        // The simulator is stopping.
                        self.close_clean();
                    }
                }
            },
            _ = tokio::time::sleep_until(heartbeat_at), if !losing => self.push_heartbeat(),
        }
    }

    fn poll_faults(&mut self) -> bool {
        let g = self.ctx.faults.generation(self.p);
        if g != self.fault_gen {
            self.fault_gen = g;
            let new = self.ctx.faults.claim(self.p, &mut self.claimed);
            self.waiting.extend(new);
        }
        let mut fired = false;
        while self.ending.is_none() {
            let Some(k) = self.waiting.iter().position(|f| f.after_events <= self.queued_events) else {
                break;
            };
            let f = self.waiting.remove(k);
            self.fire(f);
            fired = true;
        }
        fired
    }

    fn fire(&mut self, f: Fault) {
        self.ctx.stats.faults_fired_total.fetch_add(1, Relaxed);
        tracing::info!(partition = self.p, fault = f.name(), events_sent = self.queued_events, "Fault fired");
        match &f.kind {
            FaultKind::DropMidMessage => self.cut = Some((Cut::Drop, f)),
            FaultKind::TruncatedGzip => self.cut = Some((Cut::Truncate, f)),
            FaultKind::Stall { duration_ms } => {
                self.stall_until = Some(Instant::now() + Duration::from_millis(*duration_ms));
            }
            FaultKind::ForcedDisconnect { message } => {
                let lost = self.discard_leftover();
                self.skip(lost);
                let msg = message.clone().unwrap_or_else(|| self.ctx.cfg.forced_disconnect_message.clone());
                self.push_lines(&[error_json(&msg)]);
                self.close_clean();
            }
            FaultKind::FullBuffer { lose_events } => {
                let mut lost = self.discard_leftover();
                while let Ok(seg) = self.rx.try_recv() {
                    lost += u64::from(seg.events);
                }
                self.skip(lost);
                if lost >= *lose_events {
                    self.full_buffer_close();
                } else {
                    self.lose = lose_events - lost;
                }
            }
            FaultKind::Malformed { lines } => {
                let v: Vec<String> =
                    (0..*lines as usize).map(|k| MALFORMED_LINES[k % MALFORMED_LINES.len()].to_string()).collect();
                self.push_lines(&v);
            }
            FaultKind::Oversized { bytes } => self.push_lines(&[oversized_line(*bytes)]),
            FaultKind::Trickle { bytes_per_sec, duration_ms } => {
                let bps = (*bytes_per_sec).max(1);
                let (piece, interval) = if bps >= 20 {
                    ((bps / 20) as usize, Duration::from_millis(50))
                } else {
                    (1, Duration::from_millis(1000 / bps))
                };
                let until = duration_ms.map(|d| Instant::now() + Duration::from_millis(d));
                self.trickle = Some(Trickle { piece, interval, until });
            }
            FaultKind::Status { .. }
            | FaultKind::ReplayOutcome { .. }
            | FaultKind::ReplayAbort
            | FaultKind::JobFailed
            | FaultKind::JobUploadExpired
            | FaultKind::JobDownloadExpired
            | FaultKind::JobBadLines { .. } => {}
        }
    }

    /// Handles the lines of `seg` from byte `off` on.
    fn emit(&mut self, seg: Arc<Segment>, off: usize) {
        let rest = &seg.raw[off.min(seg.raw.len())..];
        if rest.is_empty() {
            return;
        }
        let n = count_lines(rest);
        if self.lose > 0 {
            self.skip(n);
            self.lose = self.lose.saturating_sub(n);
            if self.lose == 0 {
                self.full_buffer_close();
            }
            return;
        }
        if let Some((cut, _)) = self.cut.take() {
            self.cut_line(&seg, off, n, cut);
            return;
        }
        if let Some(limit) = self.waiting.iter().map(|f| f.after_events).min() {
            if limit <= self.queued_events {
                self.leftover = Some((seg, off));
                return;
            }
            let k = limit - self.queued_events;
            if k < n {
                let split = offset_after_lines(rest, k as usize);
                let first = seg.raw.slice(off..off + split);
                self.push_raw(first, k as u32, k as u32, seg.backfill);
                self.leftover = Some((seg, off + split));
                return;
            }
        }
        if off == 0 {
            self.push_piece(seg.compressed.clone(), &seg.crc, seg.raw.clone(), seg.events, seg.events, seg.backfill);
        } else {
            let raw = seg.raw.slice(off..);
            self.push_raw(raw, n as u32, n as u32, seg.backfill);
        }
    }

    /// Sends the first half of the first line at `off`, then ends badly.
    fn cut_line(&mut self, seg: &Segment, off: usize, n: u64, cut: Cut) {
        let rest = &seg.raw[off..];
        let line_len = memchr::memchr(b'\r', rest).unwrap_or(rest.len());
        let half = &rest[..(line_len / 2).max(1)];
        self.skip(n);
        let comp = self.one_off.get_or_insert_with(|| SegmentCompressor::new(self.ctx.cfg.gzip_level));
        let bytes = comp.sync(half);
        self.header();
        match cut {
            Cut::Drop => {
                self.out.push_back(Out::bare(bytes));
                self.ending = Some(Ending::Abort);
            }
            Cut::Truncate => {
                let keep = (bytes.len() / 2).max(1);
                self.out.push_back(Out::bare(bytes.slice(..keep)));
                self.ending = Some(Ending::Truncated);
            }
        }
    }

    fn step_backfill(&mut self) {
        let Some((next, end)) = self.backfill else {
            return;
        };
        let stop = end.min(next + BACKFILL_STEP);
        let mut raw = Vec::new();
        let mut n = 0u32;
        for i in next..stop {
            let ev = self.ctx.gen.event(i);
            if ev.partition() == self.p {
                ev.write(&mut raw);
                raw.extend_from_slice(b"\r\n");
                n += 1;
            }
        }
        self.backfill = if stop < end { Some((stop, end)) } else { None };
        if n > 0 {
            let (compressed, crc) = self.compress_one_off(&raw);
            let seg = Segment { compressed, crc, raw: Bytes::from(raw), events: n, backfill: true };
            self.emit(Arc::new(seg), 0);
        }
    }

    fn header(&mut self) {
        if !self.header_sent {
            self.header_sent = true;
            self.out.push_back(Out::bare(Bytes::from_static(&GZIP_HEADER)));
        }
    }

    fn push_piece(&mut self, compressed: Bytes, crc: &Crc, raw: Bytes, events: u32, lines: u32, backfill: bool) {
        self.header();
        self.crc.combine(crc);
        self.queued_events += u64::from(events);
        self.out.push_back(Out { bytes: compressed, raw, events, lines, heartbeat: false, backfill });
    }

    /// Compresses `raw` (complete lines) with this connection's own
    /// compressor; returns the compressed bytes and the CRC of `raw`.
    fn compress_one_off(&mut self, raw: &[u8]) -> (Bytes, Crc) {
        let comp = self.one_off.get_or_insert_with(|| SegmentCompressor::new(self.ctx.cfg.gzip_level));
        let compressed = comp.segment(raw);
        let mut crc = Crc::new();
        crc.update(raw);
        (compressed, crc)
    }

    /// Compresses `raw` (complete lines) for this connection alone.
    fn push_raw(&mut self, raw: Bytes, events: u32, lines: u32, backfill: bool) {
        let (compressed, crc) = self.compress_one_off(&raw);
        self.push_piece(compressed, &crc, raw, events, lines, backfill);
    }

    /// Non-event lines (errors, malformed, oversized).
    fn push_lines(&mut self, lines: &[String]) {
        let mut raw = Vec::new();
        for l in lines {
            raw.extend_from_slice(l.as_bytes());
            raw.extend_from_slice(b"\r\n");
        }
        self.push_raw(Bytes::from(raw), 0, lines.len() as u32, false);
    }

    fn push_heartbeat(&mut self) {
        self.header();
        let hb = &self.ctx.heartbeat;
        self.crc.combine(&hb.crc);
        let mut o = Out::bare(hb.compressed.clone());
        o.heartbeat = true;
        self.out.push_back(o);
    }

    fn close_clean(&mut self) {
        self.header();
        self.out.push_back(Out::bare(trailer(&self.crc)));
        self.ending = Some(Ending::Clean);
    }

    fn full_buffer_close(&mut self) {
        self.lose = 0;
        self.ctx.stats.part(self.p).full_buffer_disconnects.fetch_add(1, Relaxed);
        self.push_lines(&[error_json(FULL_BUFFER_MESSAGE)]);
        self.close_clean();
    }

    /// The producer gave up on this connection: what it buffered is lost.
    fn overflow_close(&mut self) {
        if self.ending.is_some() {
            return;
        }
        let mut lost = self.discard_leftover();
        while let Ok(seg) = self.rx.try_recv() {
            lost += u64::from(seg.events);
        }
        self.skip(lost);
        tracing::info!(partition = self.p, lost, "Client too slow, full-buffer disconnect");
        self.full_buffer_close();
    }

    fn discard_leftover(&mut self) -> u64 {
        match self.leftover.take() {
            Some((seg, off)) => count_lines(&seg.raw[off.min(seg.raw.len())..]),
            None => 0,
        }
    }

    fn skip(&self, n: u64) {
        if n > 0 {
            self.ctx.stats.part(self.p).events_skipped.fetch_add(n, Relaxed);
        }
    }
}

impl Drop for StreamConn {
    fn drop(&mut self) {
        self.ctx.stats.part(self.p).connections_open.fetch_sub(1, Relaxed);
        // Faults this connection claimed but never carried out go to the next.
        for f in self.waiting.drain(..) {
            self.ctx.faults.rearm(self.p, f);
        }
        if let Some((_, f)) = self.cut.take() {
            self.ctx.faults.rearm(self.p, f);
        }
        tracing::debug!(partition = self.p, events_sent = self.events_sent, "Stream connection closed");
    }
}

fn count_lines(raw: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', raw).count() as u64
}

/// Byte offset just after the `k`-th line.
fn offset_after_lines(raw: &[u8], k: usize) -> usize {
    if k == 0 {
        return 0;
    }
    memchr::memchr_iter(b'\n', raw).nth(k - 1).map_or(raw.len(), |i| i + 1)
}

/// A valid JSON line of an unknown type, exactly `bytes` long.
pub(crate) fn oversized_line(bytes: usize) -> String {
    let head = format!("{{\"sim_oversized\":{{\"bytes\":{bytes},\"padding\":\"");
    let tail = "\"}}";
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut s = String::with_capacity(bytes);
    s.push_str(&head);
    s.push_str(&"x".repeat(pad));
    s.push_str(tail);
    s
}
