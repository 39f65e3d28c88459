//! What the daemon knows about itself, shared (lock-light) between the
//! actors, the HTTP endpoints (`/healthz`, `/readyz`) and the demo's progress
//! line: per-partition link state and counters, handler counters, the last
//! errors of the store and of the dead-letter file, and the receipt-to-commit
//! latency histogram.
//!
//! Counters are atomics updated once per chunk or batch, never per event on a
//! contended lock.

use crate::event::EVENT_TYPES;
use crate::gaps::Gap;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::clock::now_ms;

/// Counters of one partition's stream (all connections of this process).
#[derive(Debug, Default)]
pub struct PartitionCounters {
    /// Compressed bytes received.
    pub bytes: AtomicU64,
    /// Decompressed bytes framed.
    pub bytes_decoded: AtomicU64,
    /// Lines framed (heartbeats included).
    pub lines: AtomicU64,
    pub heartbeats: AtomicU64,
    /// Events parsed and handed on.
    pub events: AtomicU64,
    /// Events parsed, by type (the order of `EVENT_TYPES`).
    pub by_type: [AtomicU64; EVENT_TYPES.len()],
    /// Lines that were not messages: malformed, unknown type, oversized.
    pub dead_lettered: AtomicU64,
    pub oversized: AtomicU64,
    pub unknown: AtomicU64,
    /// `{"error":...}` lines.
    pub notices: AtomicU64,
    /// Messages cut by the end of a connection (a part received, never
    /// applied; the gap they leave is known).
    pub cut_messages: AtomicU64,
    /// Full-buffer disconnects: the server threw events away (data loss).
    pub data_loss: AtomicU64,
    /// Streams opened (200).
    pub connections: AtomicU64,
    /// Wall ms of the last byte received.
    pub last_byte_ms: AtomicI64,
    /// Largest event time received.
    pub last_event_ms: AtomicI64,
    /// Event time of the first event of the current connection (0: none
    /// yet): how far back a backfill reached.
    pub connection_first_event_ms: AtomicI64,
    /// Largest event time committed (both handlers' parts of a batch).
    pub committed_event_ms: AtomicI64,
    /// How far X's clock ran ahead of this machine's by the batches of the
    /// latest connection that had any (the largest: [`crate::gaps::clock_lead`]),
    /// seeded from the stored positions at start: what the next gap's end adds.
    pub clock_lead_ms: AtomicI64,
}

/// Where a partition's link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Waiting for the connection limiter.
    Queued,
    /// Waiting for its backoff delay.
    Waiting,
    Connecting,
    Connected,
    Stopped,
}

impl LinkState {
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkState::Queued => "queued",
            LinkState::Waiting => "waiting",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Stopped => "stopped",
        }
    }
}

/// One partition as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionHealth {
    pub partition: u8,
    pub state: LinkState,
    /// Wall ms of the last state change.
    pub since_ms: i64,
    /// Past the restart intensity: retrying at the slowest pace.
    pub failed: bool,
    /// The configuration is wrong (401, 403, 406, 400...): what to fix.
    pub config_error: Option<String>,
    /// Why the last connection ended.
    pub last_error: Option<String>,
    /// Failures within the restart-intensity window.
    pub recent_failures: usize,
    /// Wall ms of the next connection request (while waiting).
    pub next_attempt_ms: Option<i64>,
    /// Full-buffer disconnects seen (events lost at the server).
    pub data_loss: u64,
    /// The last connection ends and what the policy decided (newest last).
    pub exits: VecDeque<ExitRecord>,
    /// Wall ms of the last connection requests (newest last).
    pub requests_ms: VecDeque<i64>,
}

/// One ended connection and the policy's decision.
#[derive(Debug, Clone, Serialize)]
pub struct ExitRecord {
    pub at_ms: i64,
    pub reason: String,
    /// The failure class it counted as (`dropped` for a stable drop).
    pub class: &'static str,
    pub attempt: u32,
    /// The delay before the next request (jitter included; the limiter may
    /// add to it).
    pub delay_ms: u64,
}

/// How many exits and requests a partition's record keeps.
pub const HISTORY: usize = 16;

impl PartitionHealth {
    /// Appends an exit (bounded history).
    pub fn push_exit(&mut self, e: ExitRecord) {
        if self.exits.len() == HISTORY {
            self.exits.pop_front();
        }
        self.exits.push_back(e);
    }

    /// Appends a connection request time (bounded history).
    pub fn push_request(&mut self, at_ms: i64) {
        if self.requests_ms.len() == HISTORY {
            self.requests_ms.pop_front();
        }
        self.requests_ms.push_back(at_ms);
    }
}

impl PartitionHealth {
    fn new(partition: u8) -> PartitionHealth {
        PartitionHealth {
            partition,
            state: LinkState::Queued,
            since_ms: now_ms(),
            failed: false,
            config_error: None,
            last_error: None,
            recent_failures: 0,
            next_attempt_ms: None,
            data_loss: 0,
            exits: VecDeque::new(),
            requests_ms: VecDeque::new(),
        }
    }
}

/// Receipt-to-commit latency, 1 ms buckets up to 10 s (plus overflow).
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

const LATENCY_BUCKETS: usize = 10_001;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl LatencyHistogram {
    /// `count` events committed `latency` after their receipt.
    pub fn record(&self, latency: Duration, count: u64) {
        let i = (latency.as_millis() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[i].fetch_add(count, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The `q` quantile (0-1) in ms (10000 = 10 s or more); None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(i as u64);
            }
        }
        Some((LATENCY_BUCKETS - 1) as u64)
    }

    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Relaxed);
        }
    }
}

/// Counters of one handler.
#[derive(Debug, Default)]
pub struct HandlerCounters {
    /// Events committed (applied + duplicates + stale).
    pub committed: AtomicU64,
    /// Events that changed the state.
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub stale: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Commits that failed (and were retried).
    pub commit_errors: AtomicU64,
    /// Events given up on (shutdown while the store kept failing).
    pub abandoned: AtomicU64,
}

/// Everything shared.
#[derive(Debug)]
pub struct Health {
    partitions: RwLock<BTreeMap<u8, PartitionHealth>>,
    counters: BTreeMap<u8, Arc<PartitionCounters>>,
    pub status: HandlerCounters,
    pub user: HandlerCounters,
    /// The last store failure (cleared by a successful commit).
    store_error: RwLock<Option<String>>,
    /// Why dead-letter records are held unwritten (cleared once written).
    dead_letter_error: RwLock<Option<String>>,
    pub latency: LatencyHistogram,
    pub shutting_down: AtomicBool,
    /// Wall ms the daemon started.
    pub started_ms: i64,
    /// Purges and geo scrubs done off the event path.
    pub maintenance_runs: AtomicU64,
    /// Events received from Replay (handed to the handlers like a stream's).
    pub replayed: AtomicU64,
    /// The gaps of the ledger still open or being repaired (refreshed by the
    /// gap keeper).
    unresolved_gaps: RwLock<Vec<Gap>>,
}

impl Health {
    pub fn new(partitions: &[u8]) -> Health {
        Health {
            partitions: RwLock::new(partitions.iter().map(|p| (*p, PartitionHealth::new(*p))).collect()),
            counters: partitions.iter().map(|p| (*p, Arc::new(PartitionCounters::default()))).collect(),
            status: HandlerCounters::default(),
            user: HandlerCounters::default(),
            store_error: RwLock::new(None),
            dead_letter_error: RwLock::new(None),
            replayed: AtomicU64::new(0),
            unresolved_gaps: RwLock::new(Vec::new()),
            latency: LatencyHistogram::default(),
            shutting_down: AtomicBool::new(false),
            started_ms: now_ms(),
            maintenance_runs: AtomicU64::new(0),
        }
    }

    /// The counters of partition `p` (a fresh, unshared set for an unknown
    /// partition).
    pub fn counters(&self, p: u8) -> Arc<PartitionCounters> {
        self.counters.get(&p).cloned().unwrap_or_default()
    }

    pub fn partition_ids(&self) -> Vec<u8> {
        self.counters.keys().copied().collect()
    }

    /// Changes partition `p`'s health record.
    pub fn update(&self, p: u8, f: impl FnOnce(&mut PartitionHealth)) {
        let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get_mut(&p) {
            f(h);
        }
    }

    /// Sets the link state (and its time).
    pub fn set_state(&self, p: u8, state: LinkState) {
        self.update(p, |h| {
            if h.state != state {
                h.state = state;
                h.since_ms = now_ms();
            }
            if state != LinkState::Waiting {
                h.next_attempt_ms = None;
            }
        });
    }

    pub fn partitions(&self) -> Vec<PartitionHealth> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<PartitionHealth> = map.values().cloned().collect();
        for h in &mut v {
            h.data_loss = self.counters(h.partition).data_loss.load(Relaxed);
        }
        v
    }

    pub fn set_store_error(&self, e: Option<String>) {
        *self.store_error.write().unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub fn store_error(&self) -> Option<String> {
        self.store_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_dead_letter_error(&self, e: Option<String>) {
        *self.dead_letter_error.write().unwrap_or_else(|e| e.into_inner()) = e;
    }

    pub fn dead_letter_error(&self) -> Option<String> {
        self.dead_letter_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the list of unresolved gaps (open or repairing).
    pub fn set_unresolved_gaps(&self, gaps: Vec<Gap>) {
        *self.unresolved_gaps.write().unwrap_or_else(|e| e.into_inner()) = gaps;
    }

    /// The gaps of the ledger still open or being repaired.
    pub fn unresolved_gaps(&self) -> Vec<Gap> {
        self.unresolved_gaps.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Events committed by both handlers.
    pub fn committed(&self) -> u64 {
        self.status.committed.load(Relaxed) + self.user.committed.load(Relaxed)
    }

    /// Events received (parsed and handed on) on all partitions and from
    /// Replay.
    pub fn received(&self) -> u64 {
        self.counters.values().map(|c| c.events.load(Relaxed)).sum::<u64>() + self.replayed.load(Relaxed)
    }

    /// Whether the daemon is ready, and every reason it is not.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        let mut why = Vec::new();
        if self.shutting_down.load(Relaxed) {
            why.push("shutting down".to_owned());
        }
        if let Some(e) = self.store_error() {
            why.push(format!("store: {e}"));
        }
        if let Some(e) = self.dead_letter_error() {
            why.push(format!("dead-letter file: {e}"));
        }
        for h in self.partitions() {
            if let Some(c) = &h.config_error {
                why.push(format!("partition {}: configuration error: {c}", h.partition));
            } else if h.failed {
                why.push(format!(
                    "partition {}: failed ({} failures in the restart window; last: {})",
                    h.partition,
                    h.recent_failures,
                    h.last_error.as_deref().unwrap_or("unknown")
                ));
            } else if h.state != LinkState::Connected && self.counters(h.partition).connections.load(Relaxed) == 0 {
                why.push(match &h.last_error {
                    Some(e) => {
                        format!("partition {}: not connected yet ({}; last: {e})", h.partition, h.state.as_str())
                    }
                    None => format!("partition {}: not connected yet ({})", h.partition, h.state.as_str()),
                });
            }
        }
        (why.is_empty(), why)
    }

    /// The `/healthz` and `/readyz` body.
    pub fn report(&self) -> serde_json::Value {
        let (ready, reasons) = self.readiness();
        let parts: Vec<serde_json::Value> = self
            .partitions()
            .into_iter()
            .map(|h| {
                let c = self.counters(h.partition);
                let mut v = serde_json::to_value(&h).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("events".into(), c.events.load(Relaxed).into());
                    o.insert("connections".into(), c.connections.load(Relaxed).into());
                    o.insert("dead_lettered".into(), c.dead_lettered.load(Relaxed).into());
                    o.insert("last_byte_ms".into(), c.last_byte_ms.load(Relaxed).into());
                    o.insert("last_event_ms".into(), c.last_event_ms.load(Relaxed).into());
                    o.insert("committed_event_ms".into(), c.committed_event_ms.load(Relaxed).into());
                }
                v
            })
            .collect();
        serde_json::json!({
            "ready": ready,
            "reasons": reasons,
            "partitions": parts,
            "events_received": self.received(),
            "events_committed": self.committed(),
            "store_error": self.store_error(),
            "latency_p99_ms": self.latency.quantile_ms(0.99),
            "unresolved_gaps": self.unresolved_gaps(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.99), None);
        h.record(Duration::from_millis(5), 98);
        h.record(Duration::from_millis(50), 1);
        h.record(Duration::from_secs(30), 1);
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ms(0.5), Some(5));
        assert_eq!(h.quantile_ms(0.99), Some(50));
        assert_eq!(h.quantile_ms(1.0), Some(10_000));
    }

    #[test]
    fn readiness_says_why() {
        let h = Health::new(&[1, 2]);
        let (ready, why) = h.readiness();
        assert!(!ready);
        assert_eq!(why.len(), 2, "{why:?}");
        for p in [1, 2] {
            h.counters(p).connections.fetch_add(1, Relaxed);
            h.set_state(p, LinkState::Connected);
        }
        assert!(h.readiness().0);
        h.update(2, |p| p.config_error = Some("HTTP 401: check stream.username".into()));
        let (ready, why) = h.readiness();
        assert!(!ready);
        assert!(why[0].contains("401"), "{why:?}");
    }
}
