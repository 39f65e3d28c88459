//! The live producer: one thread that releases events when they are due,
//! routes each to its partition, compresses each partition's batch once and
//! hands the same segment to every connection of that partition.
//!
//! With a rate, event `i` is due `i / rate` seconds after the start; a
//! connection that cannot take a batch because its buffer is full is cut off
//! (it then sends the full-buffer error). With `rate = 0` the producer waits
//! for the slowest connection instead, and only runs while someone listens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Crc;
use tokio::sync::{mpsc, oneshot, watch};

use super::gen::Generator;
use super::gz::SegmentCompressor;
use super::stats::Stats;

/// One partition's batch: every line is an event ending with `\r\n`.
pub(crate) struct Segment {
    pub compressed: Bytes,
    pub crc: Crc,
    pub raw: Bytes,
    pub events: u32,
    /// Sent because of `backfillMinutes` (counted apart).
    pub backfill: bool,
}

/// Shared between a connection and the producer.
#[derive(Default)]
pub(crate) struct SubState {
    /// Set by the producer when the connection's buffer overflowed; the
    /// producer then stops sending to it.
    pub overflowed: AtomicBool,
}

/// A connection asking to receive a partition's batches.
pub(crate) struct Registration {
    pub partition: u8,
    pub tx: mpsc::Sender<Arc<Segment>>,
    pub state: Arc<SubState>,
    /// Answered with the index of the first event the connection will get.
    pub boundary: oneshot::Sender<i64>,
}

struct Sub {
    tx: mpsc::Sender<Arc<Segment>>,
    state: Arc<SubState>,
}

pub(crate) struct ProducerParams {
    pub gen: Arc<Generator>,
    pub rate: f64,
    pub batch_interval: Duration,
    pub max_batch_events: u64,
    pub gzip_level: u32,
    pub stats: Arc<Stats>,
    pub start: Instant,
}

/// Runs the producer on its own thread (with its own small tokio runtime).
///
/// # Errors
/// The thread or its runtime could not be created.
pub(crate) fn spawn(
    params: ProducerParams,
    regs: mpsc::UnboundedReceiver<Registration>,
    shutdown: watch::Receiver<bool>,
    done: oneshot::Sender<()>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    std::thread::Builder::new().name("sim-producer".into()).spawn(move || {
        let mut p = Producer::new(params, regs, shutdown);
        rt.block_on(p.run());
        tracing::debug!(next_event_index = p.cursor, "Producer stopped");
        let _ = done.send(());
    })?;
    Ok(())
}

struct Producer {
    prm: ProducerParams,
    regs: mpsc::UnboundedReceiver<Registration>,
    shutdown: watch::Receiver<bool>,
    subs: [Vec<Sub>; 8],
    comp: Vec<SegmentCompressor>,
    bufs: [Vec<u8>; 8],
    counts: [u32; 8],
    cursor: i64,
    regs_closed: bool,
}

impl Producer {
    fn new(
        prm: ProducerParams,
        regs: mpsc::UnboundedReceiver<Registration>,
        shutdown: watch::Receiver<bool>,
    ) -> Producer {
        let comp = (0..8).map(|_| SegmentCompressor::new(prm.gzip_level)).collect();
        Producer {
            prm,
            regs,
            shutdown,
            subs: Default::default(),
            comp,
            bufs: Default::default(),
            counts: [0; 8],
            cursor: 0,
            regs_closed: false,
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow() || self.regs_closed
    }

    fn add(&mut self, reg: Registration, boundary: i64) {
        if reg.boundary.send(boundary).is_ok() {
            let i = usize::from(reg.partition.clamp(1, 8) - 1);
            self.subs[i].push(Sub { tx: reg.tx, state: reg.state });
        }
    }

    fn drain_regs(&mut self) {
        loop {
            match self.regs.try_recv() {
                Ok(r) => {
                    let b = self.cursor;
                    self.add(r, b);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.regs_closed = true;
                    break;
                }
            }
        }
    }

    fn total_subs(&mut self) -> usize {
        for s in &mut self.subs {
            s.retain(|x| !x.tx.is_closed());
        }
        self.subs.iter().map(Vec::len).sum()
    }

    /// Index of the first event not yet due.
    fn due(&self) -> i64 {
        (self.prm.start.elapsed().as_secs_f64() * self.prm.rate).floor() as i64 + 1
    }

    /// Waits up to `d` for a registration or the shutdown signal.
    async fn idle(&mut self, d: Option<Duration>) {
        let sleep = async {
            match d {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = self.regs.recv() => match r {
                Some(r) => { let b = self.cursor; self.add(r, b); }
                None => self.regs_closed = true,
            },
            _ = self.shutdown.changed() => {}
            _ = sleep => {}
        }
    }

    async fn run(&mut self) {
        let unlimited = self.prm.rate <= 0.0;
        loop {
            self.drain_regs();
            if self.stopping() {
                return;
            }
            let subs = self.total_subs();
            let end = if unlimited {
                if subs == 0 {
                    self.idle(None).await;
                    continue;
                }
                self.cursor + self.prm.max_batch_events.min(16_384) as i64
            } else {
                let due = self.due();
                if due <= self.cursor {
                    let next_at = self.cursor as f64 / self.prm.rate;
                    let max = self.prm.batch_interval.as_secs_f64();
                    // clamp() also tames an infinite wait (tiny rates).
                    let wait = (next_at - self.prm.start.elapsed().as_secs_f64()).clamp(0.001, max.max(0.001));
                    let wait = Duration::from_secs_f64(wait);
                    self.idle(Some(wait)).await;
                    continue;
                }
                let end = due.min(self.cursor + self.prm.max_batch_events as i64);
                if subs == 0 {
                    self.cursor = end;
                    self.prm.stats.next_event_index.store(end, Ordering::Relaxed);
                    continue;
                }
                end
            };
            let batch_started = Instant::now();
            self.generate(end);
            if !self.broadcast(end, unlimited).await {
                return;
            }
            self.cursor = end;
            self.prm.stats.next_event_index.store(end, Ordering::Relaxed);
            if !unlimited {
                // At most one batch per interval: what comes due meanwhile
                // goes into the next (bigger) batch, so a connection's buffer
                // counts intervals, not generator hiccups.
                let spent = batch_started.elapsed();
                if spent < self.prm.batch_interval {
                    self.idle(Some(self.prm.batch_interval - spent)).await;
                }
            }
        }
    }

    /// Generates events `cursor..end` into the partitions that have listeners.
    fn generate(&mut self, end: i64) {
        let listening: [bool; 8] = std::array::from_fn(|i| !self.subs[i].is_empty());
        let mut generated = [0u64; 8];
        for i in self.cursor..end {
            let ev = self.prm.gen.event(i);
            let p = usize::from(ev.partition() - 1);
            generated[p] += 1;
            if listening[p] {
                ev.write(&mut self.bufs[p]);
                self.bufs[p].extend_from_slice(b"\r\n");
                self.counts[p] += 1;
            }
        }
        for (p, n) in generated.iter().enumerate() {
            self.prm.stats.parts[p].events_generated.fetch_add(*n, Ordering::Relaxed);
        }
    }

    /// Sends each partition's batch to its listeners. False on shutdown.
    async fn broadcast(&mut self, end: i64, unlimited: bool) -> bool {
        let mut late: Vec<Registration> = Vec::new();
        for p in 0..8 {
            if self.counts[p] == 0 {
                self.bufs[p].clear();
                continue;
            }
            let cap = self.bufs[p].len();
            let raw = Bytes::from(std::mem::replace(&mut self.bufs[p], Vec::with_capacity(cap)));
            let events = std::mem::take(&mut self.counts[p]);
            let mut crc = Crc::new();
            crc.update(&raw);
            let seg = Arc::new(Segment { compressed: self.comp[p].segment(&raw), crc, raw, events, backfill: false });
            let subs = std::mem::take(&mut self.subs[p]);
            let mut keep = Vec::with_capacity(subs.len());
            for s in subs {
                if unlimited {
                    let tx = s.tx.clone();
                    let send = tx.send(seg.clone());
                    tokio::pin!(send);
                    let ok = loop {
                        tokio::select! {
                            r = &mut send => break r.is_ok(),
                            r = self.regs.recv() => match r {
                                // Joins after this batch.
                                Some(r) => late.push(r),
                                None => self.regs_closed = true,
                            },
                            _ = self.shutdown.changed() => return false,
                        }
                        if self.regs_closed {
                            // No more registrations can come; just send.
                            break (&mut send).await.is_ok();
                        }
                    };
                    if ok {
                        keep.push(s);
                    }
                } else {
                    match s.tx.try_send(seg.clone()) {
                        Ok(()) => keep.push(s),
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            s.state.overflowed.store(true, Ordering::Release);
                            self.prm.stats.parts[p].events_skipped.fetch_add(u64::from(events), Ordering::Relaxed);
                            tracing::info!(partition = p + 1, "Client buffer full, disconnecting");
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
            keep.append(&mut self.subs[p]);
            self.subs[p] = keep;
        }
        for r in late {
            self.add(r, end);
        }
        true
    }
}
