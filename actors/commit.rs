//! What the two handlers share: opening their own store connection, and
//! committing a batch with its position, retrying until it commits (a batch
//! is never dropped; only a shutdown can make a handler give up, and then the
//! batch's position is not committed either, so the gap stays known).

use crate::health::{HandlerCounters, Health};
use crate::store::{self, ApplyStats, ErrorKind, HandlerKind, Position, Store, StoreError, StoreUrl};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One partition batch's share of a transaction (for the latency and the
/// per-partition progress).
#[derive(Debug, Clone, Copy)]
pub struct PartInfo {
    pub partition: u8,
    pub events: usize,
    pub received: Instant,
}

/// A transaction for one handler: merged parts (`Q`, the handler's queue
/// type), one position per partition.
#[derive(Debug)]
pub struct Job<Q> {
    pub events: Q,
    pub positions: Vec<Position>,
    pub parts: Vec<PartInfo>,
}

/// Why a handler answered without committing.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The daemon is shutting down and the store still failed: the batch and
    /// its positions are not committed.
    #[error("given up during the shutdown after {attempts} attempts ({kind}): {source}", kind = source.kind().as_str())]
    GaveUp {
        attempts: u32,
        #[source]
        source: StoreError,
    },
    /// A store operation that is not retried here (a maintenance pass: the
    /// next one starts over).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The handler stopped (its mailbox is closed).
    #[error("the handler is gone: {0}")]
    Gone(#[from] actix::MailboxError),
}

/// A handler's own store connection, opened lazily (again after a failure
/// that may have broken it).
pub struct StoreSlot {
    url: StoreUrl,
    store: Option<Box<dyn Store>>,
}

impl StoreSlot {
    pub fn new(url: StoreUrl, store: Option<Box<dyn Store>>) -> StoreSlot {
        StoreSlot { url, store }
    }

    /// The connection, opened when needed.
    ///
    /// # Errors
    /// The store cannot be opened.
    pub fn get(&mut self) -> Result<&mut dyn Store, StoreError> {
        if self.store.is_none() {
            self.store = Some(store::open_url(&self.url)?);
        }
        Ok(self.store.as_deref_mut().expect("opened above"))
    }

    /// Forgets the connection (it is reopened on next use).
    pub fn reset(&mut self) {
        self.store = None;
    }
}

/// Runs `apply` until it commits. Counts, logs (ERROR once while the store
/// keeps failing: an operator is needed), and records each part's latency
/// from its receipt.
///
/// # Errors
/// Only while the daemon shuts down: the last store error, after at least
/// two attempts.
pub fn commit_with_retry(
    kind: HandlerKind,
    slot: &mut StoreSlot,
    health: &Arc<Health>,
    retry: Duration,
    positions: &[Position],
    parts: &[PartInfo],
    mut apply: impl FnMut(&mut dyn Store) -> Result<ApplyStats, StoreError>,
) -> Result<ApplyStats, HandlerError> {
    let events: usize = parts.iter().map(|p| p.events).sum();
    let partitions: Vec<u8> = positions.iter().map(|p| p.partition).collect();
    let counters: &HandlerCounters = match kind {
        HandlerKind::Status => &health.status,
        HandlerKind::User => &health.user,
    };
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let t0 = Instant::now();
        let res = slot.get().and_then(&mut apply);
        match res {
            Ok(stats) => {
                if attempts > 1 {
                    tracing::info!(handler = kind.as_str(), partitions = ?partitions, attempts, "Store recovered; batch committed");
                    health.set_store_error(None);
                }
                let n = events as u64;
                counters.committed.fetch_add(n, Relaxed);
                counters.applied.fetch_add(stats.applied.total(), Relaxed);
                counters.duplicates.fetch_add(stats.duplicates.total(), Relaxed);
                counters.stale.fetch_add(stats.stale.total(), Relaxed);
                counters.batches.fetch_add(1, Relaxed);
                let handler = kind.as_str();
                metrics::histogram!("complyd_handler_commit_seconds", "handler" => handler)
                    .record(t0.elapsed().as_secs_f64());
                metrics::histogram!("complyd_handler_batch_events", "handler" => handler).record(n as f64);
                let histogram = metrics::histogram!("complyd_receipt_to_commit_seconds", "handler" => handler);
                for part in parts {
                    let waited = part.received.elapsed();
                    health.latency.record(waited, part.events as u64);
                    histogram.record(waited.as_secs_f64());
                }
                for p in positions {
                    if p.last_event_ms > 0 {
                        health.counters(p.partition).committed_event_ms.fetch_max(p.last_event_ms, Relaxed);
                    }
                }
                for (result, counts) in
                    [("applied", &stats.applied), ("duplicate", &stats.duplicates), ("stale", &stats.stale)]
                {
                    for (ty, k) in counts.iter().filter(|(_, k)| *k > 0) {
                        metrics::counter!("complyd_handler_events_total", "handler" => handler, "type" => ty, "result" => result)
                            .increment(k);
                    }
                }
                metrics::counter!("complyd_duplicates_total", "handler" => handler).increment(stats.duplicates.total());
                return Ok(stats);
            }
            Err(e) => {
                counters.commit_errors.fetch_add(1, Relaxed);
                metrics::counter!("complyd_store_errors_total", "handler" => kind.as_str()).increment(1);
                let error_kind = e.kind();
                if attempts == 1 {
                    let msg = e.to_string();
                    let message = match error_kind {
                        ErrorKind::Transient => "Store commit failed; reopening the connection and retrying (nothing is dropped, the streams wait)",
                        ErrorKind::Conflict => "Store commit met another transaction; retrying (nothing is dropped, the streams wait)",
                        ErrorKind::Refused | ErrorKind::Config => "Store refuses the commit: an operator must act; retrying meanwhile (nothing is dropped, the streams wait)",
                    };
                    tracing::error!(
                        handler = kind.as_str(),
                        partitions = ?partitions,
                        events,
                        error = %msg,
                        error_kind = error_kind.as_str(),
                        retry_ms = retry.as_millis() as u64,
                        "{message}"
                    );
                    health.set_store_error(Some(msg));
                } else if let Some(suppressed) = crate::logging::allow(&format!("commit-again:{}", kind.as_str())) {
                    tracing::warn!(handler = kind.as_str(), attempts, error = %e, error_kind = error_kind.as_str(), suppressed, "Store commit failed again; still retrying");
                }
                // The retry policy: a failed connection is reopened; a
                // conflict or a refusal is tried again on the same one.
                if error_kind == ErrorKind::Transient {
                    slot.reset();
                }
                if health.shutting_down.load(Relaxed) && attempts >= 2 {
                    return Err(HandlerError::GaveUp { attempts, source: e });
                }
                // Sleep in small steps so that a shutdown is noticed.
                let until = Instant::now() + retry;
                while Instant::now() < until {
                    if health.shutting_down.load(Relaxed) && attempts >= 2 {
                        break;
                    }
                    std::thread::sleep(retry.min(Duration::from_millis(50)));
                }
            }
        }
    }
}
