//! Counters, and the snapshot `SimHandle::stats` and `GET /admin/stats` return.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

/// One partition's counters (index 0 of `SimStats::partitions` is partition 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartitionStats {
    /// Events handed to a client connection (duplicates and backfill included).
    pub events_sent: u64,
    /// Events generated for this partition while at least one client was
    /// connected anywhere.
    pub events_generated: u64,
    /// Events a connection should have had but a fault or a full buffer threw
    /// away (never written, never recorded).
    pub events_skipped: u64,
    /// Events sent because of `backfillMinutes`.
    pub backfill_events_sent: u64,
    /// Non-heartbeat lines written (events, error lines, malformed lines...).
    pub lines_sent: u64,
    /// Bare `\r\n` heartbeats written.
    pub heartbeats_sent: u64,
    /// Compressed bytes written.
    pub bytes_sent: u64,
    /// 200 responses (streams opened).
    pub connections_total: u64,
    /// Streams open now.
    pub connections_open: u64,
    /// Connections cut with the full-buffer error (fault or slow client).
    pub full_buffer_disconnects: u64,
}

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// Partitions 1..=8 (index 0 = partition 1).
    pub partitions: Vec<PartitionStats>,
    /// Requests received (every endpoint).
    pub requests_total: u64,
    /// Responses by status code (200 = streams and replays opened).
    pub responses: BTreeMap<u16, u64>,
    /// 429 answers, from the rate limits or from a `status` fault.
    pub rate_limited_total: u64,
    /// Replay requests answered 200.
    pub replays_total: u64,
    /// Events sent by replays.
    pub replay_events_sent: u64,
    /// Faults that fired (connection faults, status answers, replay faults).
    pub faults_fired_total: u64,
    /// Index of the next live event (events before it were released).
    pub next_event_index: i64,
    /// Batch compliance jobs created.
    pub jobs_created_total: u64,
    /// Job uploads accepted.
    pub job_uploads_total: u64,
    /// Job results downloaded.
    pub job_downloads_total: u64,
}

impl SimStats {
    /// Events sent on all partitions.
    pub fn events_sent(&self) -> u64 {
        self.partitions.iter().map(|p| p.events_sent).sum()
    }

    /// Connections accepted (200) on all partitions.
    pub fn connections(&self) -> u64 {
        self.partitions.iter().map(|p| p.connections_total).sum()
    }

    /// Answers with this status code.
    pub fn responses_with(&self, status: u16) -> u64 {
        self.responses.get(&status).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct PartCounters {
    pub events_sent: AtomicU64,
    pub events_generated: AtomicU64,
    pub events_skipped: AtomicU64,
    pub backfill_events_sent: AtomicU64,
    pub lines_sent: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub full_buffer_disconnects: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub parts: [PartCounters; 8],
    pub requests_total: AtomicU64,
    pub responses: Mutex<BTreeMap<u16, u64>>,
    pub rate_limited_total: AtomicU64,
    pub replays_total: AtomicU64,
    pub replay_events_sent: AtomicU64,
    pub faults_fired_total: AtomicU64,
    pub next_event_index: AtomicI64,
    pub jobs_created_total: AtomicU64,
    pub job_uploads_total: AtomicU64,
    pub job_downloads_total: AtomicU64,
}

impl Stats {
    pub(crate) fn part(&self, p: u8) -> &PartCounters {
        &self.parts[usize::from(p.clamp(1, 8) - 1)]
    }

    pub(crate) fn response(&self, status: u16) {
        let mut m = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(status).or_insert(0) += 1;
        if status == 429 {
            self.rate_limited_total.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        SimStats {
            partitions: self
                .parts
                .iter()
                .map(|c| PartitionStats {
                    events_sent: c.events_sent.load(Relaxed),
                    events_generated: c.events_generated.load(Relaxed),
                    events_skipped: c.events_skipped.load(Relaxed),
                    backfill_events_sent: c.backfill_events_sent.load(Relaxed),
                    lines_sent: c.lines_sent.load(Relaxed),
                    heartbeats_sent: c.heartbeats_sent.load(Relaxed),
                    bytes_sent: c.bytes_sent.load(Relaxed),
                    connections_total: c.connections_total.load(Relaxed),
                    connections_open: c.connections_open.load(Relaxed),
                    full_buffer_disconnects: c.full_buffer_disconnects.load(Relaxed),
                })
                .collect(),
            requests_total: self.requests_total.load(Relaxed),
            responses: self.responses.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            rate_limited_total: self.rate_limited_total.load(Relaxed),
            replays_total: self.replays_total.load(Relaxed),
            replay_events_sent: self.replay_events_sent.load(Relaxed),
            faults_fired_total: self.faults_fired_total.load(Relaxed),
            next_event_index: self.next_event_index.load(Relaxed),
            jobs_created_total: self.jobs_created_total.load(Relaxed),
            job_uploads_total: self.job_uploads_total.load(Relaxed),
            job_downloads_total: self.job_downloads_total.load(Relaxed),
        }
    }
}
