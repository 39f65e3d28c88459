//! The replay endpoint: date rules, and the body (every partition's events
//! of `[fromDate, toDate)` in event order, then the closing `info` line).

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDateTime;
use flate2::Crc;

use super::ctx::Ctx;
use super::fault::ReplayOutcome;
use super::gen::{iso_seconds, Rng};
use super::gz::{trailer, SegmentCompressor, GZIP_HEADER};
use crate::clock::now_ms;

/// Events generated per step.
const STEP: i64 = 4096;
const MINUTE_MS: i64 = 60_000;

/// Parses `YYYYMMDDHHMM` (UTC) to Unix milliseconds.
///
/// # Errors
/// A message for the client when the value is not 12 digits forming a date.
pub(crate) fn parse_date(name: &str, s: &str) -> Result<i64, String> {
    if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{name} must be YYYYMMDDHHMM (UTC), got '{s}'"));
    }
    NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M")
        .map(|d| d.and_utc().timestamp_millis())
        .map_err(|_| format!("{name} is not a valid date: '{s}'"))
}

/// `YYYYMMDDHHMM` of a Unix millisecond time.
pub(crate) fn format_date(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) => d.format("%Y%m%d%H%M").to_string(),
        None => "197001010000".to_string(),
    }
}

/// Checks the documented rules: `fromDate < toDate`, `fromDate` within the
/// last `max_age`, `toDate` at least `min_age` ago.
///
/// # Errors
/// A message for the client naming the broken rule.
pub(crate) fn check_window(from: i64, to: i64, now: i64, min_age_min: u64, max_age_min: u64) -> Result<(), String> {
    if from >= to {
        return Err("fromDate must be earlier than toDate".into());
    }
    let oldest = now - max_age_min as i64 * MINUTE_MS;
    if from < oldest {
        return Err(format!(
            "fromDate must be within the last {max_age_min} minutes (not before {})",
            format_date(oldest)
        ));
    }
    let newest = now - min_age_min as i64 * MINUTE_MS;
    if to > newest {
        return Err(format!(
            "toDate must be at least {min_age_min} minutes in the past (not after {})",
            format_date(newest)
        ));
    }
    Ok(())
}

pub(crate) struct ReplayConn {
    ctx: Arc<Ctx>,
    next: i64,
    end: i64,
    abort_at: Option<i64>,
    info: Option<String>,
    outcome: ReplayOutcome,
    failed_minute_ms: i64,
    /// Event times sent: a duplicate carries its original's (older) time
    /// and is left out when that falls outside the range.
    time_range: (i64, i64),
    unprocessed: (i64, i64),
    count: u64,
    crc: Crc,
    comp: SegmentCompressor,
    header_sent: bool,
    done: bool,
    tail: Option<Bytes>,
    rng: Rng,
}

impl ReplayConn {
    pub(crate) fn new(ctx: Arc<Ctx>, from_ms: i64, to_ms: i64, outcome: ReplayOutcome, abort: bool) -> ReplayConn {
        let gen = ctx.gen.clone();
        let (mut lo, mut hi) = (from_ms, to_ms);
        let mut unprocessed = (0, 0);
        match outcome {
            ReplayOutcome::Completed => {}
            ReplayOutcome::CompletedWithErrors => {
                // The first minute failed: its events are not sent.
                lo = (from_ms + MINUTE_MS).min(to_ms);
            }
            ReplayOutcome::Failed => {
                let minutes = (to_ms - from_ms) / MINUTE_MS;
                hi = from_ms + (minutes / 2) * MINUTE_MS;
                unprocessed = (hi, to_ms);
            }
        }
        let next = gen.first_index_at_or_after(lo);
        let end = gen.first_index_at_or_after(hi).max(next);
        let abort_at = abort.then(|| next + (end - next) / 2);
        let level = ctx.cfg.gzip_level;
        let ctx_seed = ctx.cfg.seed;
        ReplayConn {
            ctx,
            next,
            end,
            abort_at,
            info: None,
            outcome,
            failed_minute_ms: from_ms,
            time_range: (lo, hi),
            unprocessed,
            count: 0,
            crc: Crc::new(),
            comp: SegmentCompressor::new(level),
            header_sent: false,
            done: false,
            tail: None,
            rng: Rng::new(ctx_seed, 0x5245_504c, from_ms as u64),
        }
    }

    fn info_line(&self) -> String {
        let sent = iso_seconds(now_ms());
        match self.outcome {
            ReplayOutcome::Completed => format!(
                "{{\"info\":{{\"message\":\"Replay Request Completed\",\"sent\":\"{sent}\",\"activity_count\":{}}}}}",
                self.count
            ),
            ReplayOutcome::CompletedWithErrors => format!(
                "{{\"info\":{{\"message\":\"Replay Request Completed with Errors\",\"sent\":\"{sent}\",\"activity_count\":{},\"minutes_failed\":[\"{}\"]}}}}",
                self.count,
                iso_seconds(self.failed_minute_ms)
            ),
            ReplayOutcome::Failed => format!(
                "{{\"info\":{{\"message\":\"Replay Request Failed to Complete\",\"sent\":\"{sent}\",\"unprocessed_range\":{{\"fromDate\":\"{}\",\"toDate\":\"{}\"}},\"activity_count\":{}}}}}",
                format_date(self.unprocessed.0),
                format_date(self.unprocessed.1),
                self.count
            ),
        }
    }

    fn compress(&mut self, raw: &[u8]) -> Bytes {
        let mut crc = Crc::new();
        crc.update(raw);
        self.crc.combine(&crc);
        let seg = self.comp.segment(raw);
        if self.header_sent {
            seg
        } else {
            self.header_sent = true;
            let mut b = GZIP_HEADER.to_vec();
            b.extend_from_slice(&seg);
            Bytes::from(b)
        }
    }

    pub(crate) async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if let Some(tail) = self.tail.take() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            return Some(Ok(tail));
        }
        if self.done {
            return None;
        }
        if let Some(at) = self.abort_at {
            if self.next >= at {
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.done = true;
                tracing::info!(activity_count = self.count, "Replay dropped by fault");
                return Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "simulated replay drop")));
            }
        }
        if self.next < self.end {
            let mut stop = self.end.min(self.next + STEP);
            if let Some(at) = self.abort_at {
                if at > self.next {
                    stop = stop.min(at);
                }
            }
            let mut raw = Vec::with_capacity((stop - self.next) as usize * 160);
            let mut n = 0u64;
            let (lo, hi) = self.time_range;
            for i in self.next..stop {
                let ev = self.ctx.gen.event(i);
                if ev.time_ms >= lo && ev.time_ms < hi {
                    ev.write(&mut raw);
                    raw.extend_from_slice(b"\r\n");
                    n += 1;
                }
            }
            self.next = stop;
            if n == 0 {
                return Some(Ok(self.compress(b"")));
            }
            self.count += n;
            self.ctx.stats.replay_events_sent.fetch_add(n, Relaxed);
            let mut bytes = self.compress(&raw);
            if let Some(r) = &self.ctx.recorder {
                r.lines(0, now_ms(), &raw);
            }
            let ratio = self.ctx.cfg.split_chunks_ratio;
            if ratio > 0.0 && bytes.len() >= 8 && self.rng.chance(ratio) {
                // Two chunks cut anywhere, as in the stream.
                let cut = 1 + self.rng.below(bytes.len() as u64 - 1) as usize;
                self.tail = Some(bytes.split_off(cut));
            }
            return Some(Ok(bytes));
        }
        if self.info.is_none() {
            let line = self.info_line();
            tracing::info!(activity_count = self.count, outcome = ?self.outcome, "Replay finished");
            let mut raw = line.clone().into_bytes();
            raw.extend_from_slice(b"\r\n");
            let mut bytes = self.compress(&raw).to_vec();
            bytes.extend_from_slice(&trailer(&self.crc));
            if let Some(r) = &self.ctx.recorder {
                r.lines(0, now_ms(), &raw);
            }
            self.info = Some(line);
            self.done = true;
            return Some(Ok(Bytes::from(bytes)));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("fromDate", "201302200000").unwrap(), 1_361_318_400_000);
        assert!(parse_date("fromDate", "2013022000").is_err());
        assert!(parse_date("fromDate", "201313200000").is_err());
        assert!(parse_date("fromDate", "20130220000a").is_err());
        assert_eq!(format_date(1_361_318_400_000), "201302200000");
    }

    #[test]
    fn window_rules() {
        let now = 1_700_000_000_000;
        let m = MINUTE_MS;
        assert!(check_window(now - 120 * m, now - 60 * m, now, 30, 7200).is_ok());
        assert!(check_window(now - 60 * m, now - 60 * m, now, 30, 7200).is_err(), "empty window");
        assert!(check_window(now - 20 * m, now - 10 * m, now, 30, 7200).is_err(), "too recent");
        assert!(check_window(now - 7201 * m, now - 60 * m, now, 30, 7200).is_err(), "too old");
    }
}
