//! The gap keeper: writes the gap ledger (`crate::gaps`). The supervisor
//! tells it when a (re)connection leaves a gap, and ticks it every second:
//! it then closes the gaps a backfill has repaired (once both handlers have
//! committed the partition past the gap), marks unrepairable the open gaps
//! older than Replay reaches, and refreshes the list of unresolved gaps that
//! `/healthz` and `/metrics` show. The replayer asks it for the next Replay
//! window and reports how each went.
//!
//! Runs on its own thread (`SyncArbiter`, one thread) with its own store
//! connection: the ledger's writes never wait on the event path's.

use super::commit::StoreSlot;
use crate::clock::now_ms;
use crate::gaps::{self, GapMove, GapState, NewGap, Repair, ReplayOutcome, Window};
use crate::health::Health;
use crate::store::{ErrorKind, StoreError, StoreUrl};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the supervisor tells the gap keeper.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum GapNote {
    /// A (re)connection left this gap; `connection` is the partition's
    /// connection count once it opened (which connection's backfill it is).
    /// `recorded` is answered once the gap is written.
    Opened { gap: NewGap, connection: u64, recorded: Option<tokio::sync::oneshot::Sender<()>> },
    /// Time passes: close what backfill repaired, refresh the health list.
    Tick,
}

/// The replayer asks for the window to request next (None: nothing due).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Window>, StoreError>")]
pub struct NextWindow {
    pub freshness_ms: i64,
    pub max_window_ms: i64,
}

/// A Replay request ended: what it covered decides the gap's next move.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct WindowDone {
    pub window: Window,
    pub outcome: ReplayOutcome,
    /// Events the request brought (all committed when this is sent).
    pub events: u64,
}

pub struct GapKeeper {
    store: StoreSlot,
    health: Arc<Health>,
    /// Gaps not yet written (the store failed): written at the next tick.
    unwritten: Vec<(NewGap, u64, Option<tokio::sync::oneshot::Sender<()>>)>,
    /// The backfill gaps of this process: gap id -> (partition, the
    /// connection that asked for the backfill).
    backfills: HashMap<i64, (u8, u64)>,
    /// When each gap's window was last asked for (the least recently asked
    /// goes next: one gap that keeps failing never starves the others).
    asked: HashMap<i64, Instant>,
    last_review: Option<Instant>,
}

impl GapKeeper {
    pub fn new(url: StoreUrl, health: Arc<Health>) -> GapKeeper {
        GapKeeper {
            store: StoreSlot::new(url, None),
            health,
            unwritten: Vec::new(),
            backfills: HashMap::new(),
            asked: HashMap::new(),
            last_review: None,
        }
    }

    fn write_unwritten(&mut self) -> Result<(), StoreError> {
        while let Some((gap, connection, _)) = self.unwritten.first() {
            let id = self.store.get()?.open_gap(gap, now_ms())?;
            if gap.repair == Some(Repair::Backfill) {
                self.backfills.insert(id, (gap.partition, *connection));
            }
            let (gap, _, recorded) = self.unwritten.remove(0);
            if let Some(r) = recorded {
                // The connection may hand its events on now.
                let _ = r.send(());
            }
            tracing::warn!(
                partition = gap.partition,
                from_ms = gap.from_ms,
                to_ms = gap.to_ms,
                cause = gap.cause.as_str(),
                state = gap.state.as_str(),
                "Gap recorded: events of this stretch were not received"
            );
        }
        Ok(())
    }

    /// Closes the gaps a backfill repaired, reopens for Replay those it did
    /// not, marks unrepairable what Replay no longer reaches (splitting off
    /// the part it still does).
    fn review(&mut self) -> Result<(), StoreError> {
        let store = self.store.get()?;
        let unresolved = store.gaps(true)?;
        // The committed positions matter only to a gap a backfill repairs.
        let mut committed: HashMap<u8, i64> = HashMap::new();
        if unresolved.iter().any(|g| g.repair == Some(Repair::Backfill)) {
            for (_, pos) in store.positions()? {
                let e = committed.entry(pos.partition).or_insert(pos.last_event_ms);
                *e = (*e).min(pos.last_event_ms);
            }
        }
        let now = now_ms();
        // Whether the ledger was written: only then is it read again.
        let mut changed = false;
        for g in &unresolved {
            if gaps::out_of_reach(g.to_ms, now) {
                let note = "older than Replay reaches (5 days): check the stored posts and users with X's batch compliance (complyd batch-job run --type tweets, then --type users)";
                changed = true;
                if store.move_gap(g.id, &GapMove::to(GapState::Unrepairable, note), now)? {
                    tracing::error!(
                        partition = g.partition,
                        gap = g.id,
                        from_ms = g.from_ms,
                        to_ms = g.to_ms,
                        "Gap unrepairable: events of this stretch can no longer be fetched; {note}"
                    );
                }
                continue;
            }
            let reach = gaps::reach_start(now);
            if g.covered_to_ms.max(g.from_ms) < reach {
                // Only the part from `reach` on can still be fetched.
                let rest = NewGap {
                    partition: g.partition,
                    from_ms: reach,
                    to_ms: g.to_ms,
                    cause: g.cause,
                    state: GapState::Open,
                    repair: None,
                    note: format!("{}; the part of gap {} that Replay still reaches", g.cause.as_str(), g.id),
                };
                changed = true;
                let id = store.open_gap(&rest, now)?;
                let note = format!("before {} out of Replay's reach (5 days): check the stored posts and users with X's batch compliance (complyd batch-job run --type tweets, then --type users); the rest is gap {id}", gaps::replay_date(reach));
                if store.move_gap(g.id, &GapMove::to(GapState::Unrepairable, note.clone()), now)? {
                    tracing::error!(
                        partition = g.partition,
                        gap = g.id,
                        from_ms = g.from_ms,
                        "Gap unrepairable: {note}"
                    );
                }
                continue;
            }
            if g.repair != Some(Repair::Backfill) {
                continue;
            }
            let counters = self.health.counters(g.partition);
            let same_connection = self
                .backfills
                .get(&g.id)
                .is_some_and(|(_, c)| *c == counters.connections.load(std::sync::atomic::Ordering::Relaxed));
            let reopen = if !same_connection {
                Some("the connection that asked for the backfill ended before it was confirmed; Replay repairs it")
            } else if committed.get(&g.partition).is_some_and(|c| *c >= g.to_ms) {
                let first = counters.connection_first_event_ms.load(std::sync::atomic::Ordering::Relaxed);
                // Only a first event from before the gap proves the backfill
                // reached back over it (a server that ignores the parameter
                // sends live events, which start after the gap).
                if first > 0 && first <= g.from_ms {
                    changed = true;
                    if store.move_gap(g.id, &GapMove::to(GapState::Repaired, "backfilled events committed"), now)? {
                        tracing::info!(
                            partition = g.partition,
                            gap = g.id,
                            minutes = g.minutes(),
                            "Gap repaired by backfill"
                        );
                    }
                    self.backfills.remove(&g.id);
                    None
                } else {
                    Some("the backfill did not reach back to the gap's start; Replay repairs it")
                }
            } else {
                None
            };
            if let Some(why) = reopen {
                changed = true;
                self.backfills.remove(&g.id);
                if store.move_gap(g.id, &GapMove::to(GapState::Open, why), now)? {
                    tracing::warn!(partition = g.partition, gap = g.id, "{why}");
                }
            }
        }
        if changed {
            return self.refresh();
        }
        self.health.set_unresolved_gaps(unresolved);
        Ok(())
    }

    /// The health list of unresolved gaps.
    fn refresh(&mut self) -> Result<(), StoreError> {
        let unresolved = self.store.get()?.gaps(true)?;
        self.health.set_unresolved_gaps(unresolved);
        Ok(())
    }

    fn tick(&mut self) {
        // Ticks queued while the store was slow are one review, not many.
        if self.unwritten.is_empty() && self.last_review.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            return;
        }
        self.last_review = Some(Instant::now());
        let res = self.write_unwritten().and_then(|()| self.review());
        if let Err(e) = res {
            self.failed(&e);
        }
    }

    fn failed(&mut self, e: &StoreError) {
        if e.kind() == ErrorKind::Transient {
            self.store.reset();
        }
        if let Some(suppressed) = crate::logging::allow("gap-keeper") {
            tracing::warn!(error = %e, unwritten = self.unwritten.len(), suppressed, "Gap ledger not updated; retrying at the next tick");
        }
    }
}

impl Actor for GapKeeper {
    type Context = SyncContext<Self>;
}

impl Handler<GapNote> for GapKeeper {
    type Result = ();

    fn handle(&mut self, note: GapNote, _ctx: &mut Self::Context) {
        if let GapNote::Opened { gap, connection, recorded } = note {
            self.unwritten.push((gap, connection, recorded));
        }
        self.tick();
    }
}

impl Handler<NextWindow> for GapKeeper {
    type Result = Result<Option<Window>, StoreError>;

    fn handle(&mut self, m: NextWindow, _ctx: &mut Self::Context) -> Self::Result {
        let now = now_ms();
        let res = self.store.get().and_then(|store| store.gaps(true));
        let due = match res {
            Ok(gaps) => gaps,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        // The least recently asked gap first (never asked: the oldest).
        let next = due
            .iter()
            .filter_map(|g| gaps::next_window(g, now, m.freshness_ms, m.max_window_ms))
            .min_by_key(|w| self.asked.get(&w.gap_id).copied());
        if let Some(w) = &next {
            self.asked.insert(w.gap_id, Instant::now());
        }
        Ok(next)
    }
}

impl Handler<WindowDone> for GapKeeper {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, m: WindowDone, _ctx: &mut Self::Context) -> Self::Result {
        let res = self.record_window(&m);
        if let Err(e) = &res {
            self.failed(e);
        }
        res
    }
}

impl GapKeeper {
    /// A Replay window serves every partition: each unresolved gap whose
    /// uncovered part starts inside what the window covered moves on with
    /// it, the one it was asked for and any other.
    fn record_window(&mut self, m: &WindowDone) -> Result<(), StoreError> {
        let now = now_ms();
        let w = &m.window;
        let covered = m.outcome.covered_to(w);
        let span = format!("{}..{}", gaps::replay_date(w.from_ms), gaps::replay_date(w.to_ms));
        let store = self.store.get()?;
        for gap in store.gaps(true)? {
            let replayable = gap.state == GapState::Open || gap.repair == Some(Repair::Replay);
            let start = gap.replay_from();
            let asked = gap.id == w.gap_id;
            if !gap.state.is_unresolved() || !replayable || !(asked || (w.from_ms <= start && start < covered)) {
                continue;
            }
            let reached = covered.max(gap.covered_to_ms);
            let (to, note) = if reached >= gap.to_ms {
                (GapState::Repaired, format!("replay {span}: {}, {} events committed", m.outcome.as_str(), m.events))
            } else {
                let again = match &m.outcome {
                    ReplayOutcome::Broken(why) => format!("{why}; asked again"),
                    other => format!("{}; from {} asked again", other.as_str(), gaps::replay_date(reached)),
                };
                (GapState::Repairing, format!("replay {span}: {again}, {} events committed", m.events))
            };
            let mv = GapMove { to, repair: Some(Repair::Replay), covered_to_ms: Some(reached), note };
            if store.move_gap(gap.id, &mv, now)? {
                if to == GapState::Repaired {
                    tracing::info!(
                        partition = gap.partition,
                        gap = gap.id,
                        minutes = gap.minutes(),
                        events = m.events,
                        "Gap repaired by Replay"
                    );
                } else if asked {
                    tracing::warn!(partition = gap.partition, gap = gap.id, outcome = m.outcome.as_str(), note = %mv.note, "Replay window incomplete; the rest is asked again");
                }
            }
        }
        self.refresh()
    }
}
