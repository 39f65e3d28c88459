//! The gap ledger: for each partition, the stretches of event time the
//! daemon did not receive. A compliance stream does not resend what a client
//! missed, so every disconnect, every restart and every full-buffer
//! disconnect leaves a gap; each is recorded, with its history, until it is
//! repaired (by backfill or Replay) or known to be out of reach.
//!
//! This module decides (when a gap opens, how long it is, whether backfill
//! covers it, which moves between states are allowed); the stores keep the
//! ledger (`Store::open_gap`, `Store::move_gap`, `Store::gaps`); the daemon's
//! `actors/gap_keeper.rs` writes it.

use crate::event::TimeMs;
use serde::Serialize;
use std::fmt;

/// One minute, the unit Replay and backfill work in.
pub const MINUTE_MS: i64 = 60_000;

/// How far back X's Replay reaches: 5 days.
pub const REPLAY_REACH_MS: i64 = 5 * 24 * 60 * MINUTE_MS;

/// Whether a gap is out of every repair's reach at `now_ms`: it ended more
/// than [`REPLAY_REACH_MS`] ago (a gap only partly older can still be
/// repaired, in part by Replay).
pub fn out_of_reach(to_ms: TimeMs, now_ms: TimeMs) -> bool {
    to_ms <= now_ms - REPLAY_REACH_MS
}

/// The first whole minute Replay still serves at `now_ms`.
pub fn reach_start(now_ms: TimeMs) -> TimeMs {
    floor_minute(now_ms - REPLAY_REACH_MS) + MINUTE_MS
}

/// Where a gap is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapState {
    /// Not covered by anything yet.
    Open,
    /// A repair is under way (a backfill asked for, a Replay running).
    Repairing,
    /// Every event of the stretch has been committed.
    Repaired,
    /// Out of reach of backfill and Replay (older than 5 days): only a batch
    /// compliance job can bring the dataset back into compliance.
    Unrepairable,
}

impl GapState {
    pub const ALL: [GapState; 4] = [GapState::Open, GapState::Repairing, GapState::Repaired, GapState::Unrepairable];

    pub fn as_str(self) -> &'static str {
        match self {
            GapState::Open => "open",
            GapState::Repairing => "repairing",
            GapState::Repaired => "repaired",
            GapState::Unrepairable => "unrepairable",
        }
    }

    /// The stored name back (None for anything else).
    pub fn parse(s: &str) -> Option<GapState> {
        GapState::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Whether the gap still needs work.
    pub fn is_unresolved(self) -> bool {
        matches!(self, GapState::Open | GapState::Repairing)
    }

    /// Whether a gap may move from `self` to `to`: forward only, and never
    /// out of a final state.
    pub fn may_move_to(self, to: GapState) -> bool {
        match (self, to) {
            (GapState::Open, GapState::Repairing | GapState::Repaired | GapState::Unrepairable) => true,
            // Repairing to repairing: a Replay repair's progress.
            (GapState::Repairing, _) => true,
            _ => false,
        }
    }
}

impl fmt::Display for GapState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a gap opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// The connection ended and was made again.
    Disconnect,
    /// The daemon stopped (or crashed) and started again: from the last
    /// committed position.
    Restart,
    /// The server threw events away (full buffer) and disconnected.
    FullBuffer,
}

impl GapCause {
    pub fn as_str(self) -> &'static str {
        match self {
            GapCause::Disconnect => "disconnect",
            GapCause::Restart => "restart",
            GapCause::FullBuffer => "full_buffer",
        }
    }

    pub fn parse(s: &str) -> Option<GapCause> {
        [GapCause::Disconnect, GapCause::Restart, GapCause::FullBuffer].into_iter().find(|c| c.as_str() == s)
    }
}

/// What is repairing a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Repair {
    /// The reconnect asked for `backfillMinutes` covering it.
    Backfill,
    /// Requests to the Replay endpoint, window after window.
    Replay,
}

impl Repair {
    pub fn as_str(self) -> &'static str {
        match self {
            Repair::Backfill => "backfill",
            Repair::Replay => "replay",
        }
    }

    pub fn parse(s: &str) -> Option<Repair> {
        [Repair::Backfill, Repair::Replay].into_iter().find(|r| r.as_str() == s)
    }
}

/// A gap as it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGap {
    pub partition: u8,
    /// Event time not covered, from (inclusive)...
    pub from_ms: TimeMs,
    /// ...to (exclusive).
    pub to_ms: TimeMs,
    pub cause: GapCause,
    /// Open, or repairing when the reconnect asked for a backfill covering it.
    pub state: GapState,
    /// [`Repair::Backfill`] when repairing.
    pub repair: Option<Repair>,
    /// What the history's first entry says.
    pub note: String,
}

/// A gap in the ledger, with its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub id: i64,
    pub partition: u8,
    pub from_ms: TimeMs,
    pub to_ms: TimeMs,
    pub cause: GapCause,
    pub state: GapState,
    /// What is repairing it, once something is.
    pub repair: Option<Repair>,
    /// A Replay repair has covered `[from_ms, covered_to_ms)`.
    pub covered_to_ms: TimeMs,
    pub opened_ms: TimeMs,
    pub history: Vec<GapEvent>,
}

impl Gap {
    /// Its length in whole minutes, rounded up (what a repair asks for).
    pub fn minutes(&self) -> i64 {
        minutes_up(self.to_ms - self.from_ms)
    }

    /// The minute its replay goes on from: where the replay stopped, or
    /// [`ORDER_MARGIN_MS`] before the gap when nothing was replayed yet.
    pub fn replay_from(&self) -> TimeMs {
        floor_minute(if self.covered_to_ms > self.from_ms {
            self.covered_to_ms
        } else {
            self.from_ms.saturating_sub(ORDER_MARGIN_MS)
        })
    }
}

/// A move of a gap: its new state, and what the repair has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapMove {
    pub to: GapState,
    /// Set when something starts repairing it (kept otherwise).
    pub repair: Option<Repair>,
    /// A Replay repair's progress (kept when None).
    pub covered_to_ms: Option<TimeMs>,
    /// What the history says.
    pub note: String,
}

impl GapMove {
    pub fn to(to: GapState, note: impl Into<String>) -> GapMove {
        GapMove { to, repair: None, covered_to_ms: None, note: note.into() }
    }
}

/// One move of a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapEvent {
    pub at_ms: TimeMs,
    pub state: GapState,
    pub note: String,
}

/// `ms` in whole minutes, rounded up (at least 1 for any positive length).
pub fn minutes_up(ms: i64) -> i64 {
    (ms.max(0) + MINUTE_MS - 1) / MINUTE_MS
}

/// Where the gap a new connection leaves starts: what was last received,
/// the last byte, or the last event when that is older (an event in flight,
/// the events a full buffer threw away, a message cut at the disconnect).
/// `None` when nothing was ever received (and no position is stored).
pub fn gap_start(last_byte_ms: Option<TimeMs>, last_event_ms: TimeMs) -> Option<TimeMs> {
    last_byte_ms.map(|b| if last_event_ms > 0 { b.min(last_event_ms) } else { b })
}

/// How far X's clock runs ahead of this machine's, as the bytes showed it:
/// an event newer than the local time of the last byte received (the byte
/// that carried it, or a later one). Delivery only ever makes an event older
/// than its bytes, so anything above 0 is the clock: a gap's start mixes the
/// two clocks safely (the older of the two), but its end is this machine's
/// time, and without this lead it ends before the events X sent meanwhile,
/// which Replay is then never asked for.
///
/// At most [`MAX_CLOCK_LEAD_MS`]: one event stamped in the year 3000 must
/// not push a gap's end, and with it the gap's repair, out of reach (nor a
/// position: [`batch_event_time`]). A clock further behind gets the ten
/// minutes, and loses what lies beyond them.
pub fn clock_lead(last_byte_ms: Option<TimeMs>, last_event_ms: TimeMs) -> TimeMs {
    match last_byte_ms {
        Some(b) if last_event_ms > 0 => last_event_ms.saturating_sub(b).clamp(0, MAX_CLOCK_LEAD_MS),
        _ => 0,
    }
}

/// The largest lead of X's clock a gap's end takes in ([`clock_lead`]).
pub const MAX_CLOCK_LEAD_MS: TimeMs = 10 * MINUTE_MS;

/// The event time a batch's position keeps: its newest event's, at most
/// [`MAX_CLOCK_LEAD_MS`] ahead of the local time of its last byte. An event
/// stamped in the year 3000, kept, would stand for "the last event
/// received" for good (positions keep the largest) and every later gap
/// would start at the last byte; bounded, it stands for ten minutes at the
/// most. A clock more than ten minutes behind X's moves its positions
/// on all the same, ten minutes ahead of this machine's time.
pub fn batch_event_time(max_event_ms: TimeMs, last_byte_ms: TimeMs) -> TimeMs {
    max_event_ms.min(last_byte_ms.saturating_add(MAX_CLOCK_LEAD_MS))
}

/// Where a partition's first gap after a restart starts ([`gap_start`] of
/// the older of the two handlers' positions), and X's clock lead the
/// positions show ([`clock_lead`], the larger of the two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestartPoint {
    pub since_ms: TimeMs,
    pub clock_lead_ms: TimeMs,
}

/// The `backfillMinutes` a connection opening at `now_ms` asks for to reach
/// back to `since_ms` (at least 1, at most `max`), and whether that is far
/// enough.
pub fn backfill_minutes(since_ms: TimeMs, now_ms: TimeMs, max: u32) -> (u32, bool) {
    let need = minutes_up((now_ms - since_ms).max(1));
    (need.clamp(1, i64::from(max.max(1))) as u32, need <= i64::from(max))
}

/// The gap a (re)connection leaves, if any: from what was last received
/// (`since_ms`: the last byte of the previous connection, or the last
/// committed position after a restart) to the moment the new connection
/// opened. `backfill_minutes` is what the new connection asked for: when it
/// reaches back over the whole gap, the gap is being repaired by it.
pub fn on_connect(
    partition: u8,
    since_ms: TimeMs,
    connected_ms: TimeMs,
    cause: GapCause,
    backfill_minutes: Option<u32>,
) -> Option<NewGap> {
    if connected_ms <= since_ms {
        return None;
    }
    let covered = backfill_minutes.is_some_and(|m| i64::from(m) * MINUTE_MS >= connected_ms - since_ms);
    let (state, repair, note) = match backfill_minutes {
        Some(m) if covered => {
            (GapState::Repairing, Some(Repair::Backfill), format!("{}; backfill of {m} min asked", cause.as_str()))
        }
        Some(m) => {
            (GapState::Open, None, format!("{}; backfill of {m} min does not reach back far enough", cause.as_str()))
        }
        None => (GapState::Open, None, cause.as_str().to_owned()),
    };
    Some(NewGap { partition, from_ms: since_ms, to_ms: connected_ms, cause, state, repair, note })
}

/// A Replay date: `YYYYMMDDHHMM`, UTC (the minute `ms` falls in).
pub fn replay_date(ms: TimeMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| t.format("%Y%m%d%H%M").to_string())
}

/// `ms` rounded down to its minute.
pub fn floor_minute(ms: TimeMs) -> TimeMs {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// One Replay request's event time, `[from_ms, to_ms)`, whole minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub gap_id: i64,
    pub from_ms: TimeMs,
    pub to_ms: TimeMs,
}

/// How much earlier than a gap's start its replay starts. X promises no
/// order within a partition (trap 8): an event older than the newest one
/// received may still have been on its way at the disconnect (or in a batch
/// a crash kept from its commit). Replay, asked by whole minutes from the
/// gap's start, would miss it whenever the start is early in its minute;
/// one minute more costs a minute of events applied twice (which changes
/// nothing).
pub const ORDER_MARGIN_MS: TimeMs = MINUTE_MS;

/// The next Replay window of `gap` at `now_ms`, if it is due: the minute
/// the gap ends in was over at least `freshness_ms` ago (Replay serves whole
/// minutes), the gap is not repaired by a backfill, and it is within
/// Replay's reach. The window starts where the replay stopped, or
/// [`ORDER_MARGIN_MS`] before the gap (whole minutes, never before the
/// reach), and spans at most `max_window_ms`, up to the end of the gap's
/// last minute.
pub fn next_window(gap: &Gap, now_ms: TimeMs, freshness_ms: i64, max_window_ms: i64) -> Option<Window> {
    let replayable = match gap.state {
        GapState::Open => true,
        GapState::Repairing => gap.repair == Some(Repair::Replay),
        GapState::Repaired | GapState::Unrepairable => false,
    };
    let end = floor_minute(gap.to_ms + MINUTE_MS - 1);
    if !replayable || end > now_ms - freshness_ms || out_of_reach(gap.to_ms, now_ms) {
        return None;
    }
    let from = gap.replay_from().max(reach_start(now_ms));
    if from >= end {
        return None;
    }
    // The first window also takes the minute before the gap's: it reaches
    // past the gap's start whatever `max_window_ms`, or its progress (kept
    // from the gap's start on) would never be recorded.
    let past_start = floor_minute(gap.from_ms) + MINUTE_MS;
    let to = end.min((from + max_window_ms.max(MINUTE_MS) / MINUTE_MS * MINUTE_MS).max(past_start));
    Some(Window { gap_id: gap.id, from_ms: from, to_ms: to })
}

/// How one Replay request ended, from its closing `info` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// "Replay Request Completed": every event of the window was sent.
    Completed,
    /// Completed with errors: these minutes were not sent.
    MinutesFailed(Vec<TimeMs>),
    /// Failed to complete: `[from, to)` was not processed.
    Unprocessed { from_ms: TimeMs, to_ms: TimeMs },
    /// No `info` line (the stream broke) or one that says nothing usable.
    Broken(String),
}

impl ReplayOutcome {
    /// Reads the closing `info` line (None: the stream ended without one).
    pub fn of(info: Option<&crate::event::ReplayInfo>) -> ReplayOutcome {
        let Some(info) = info else {
            return ReplayOutcome::Broken("the replay ended without its info line".into());
        };
        if let Some(r) = &info.unprocessed_range {
            return match (parse_replay_date(&r.from_date), parse_replay_date(&r.to_date)) {
                (Some(from_ms), Some(to_ms)) => ReplayOutcome::Unprocessed { from_ms, to_ms },
                _ => ReplayOutcome::Broken(format!("unreadable unprocessed_range {}..{}", r.from_date, r.to_date)),
            };
        }
        if !info.minutes_failed.is_empty() {
            let minutes: Option<Vec<TimeMs>> = info
                .minutes_failed
                .iter()
                .map(|m| chrono::DateTime::parse_from_rfc3339(m).ok().map(|t| floor_minute(t.timestamp_millis())))
                .collect();
            return match minutes {
                Some(m) => ReplayOutcome::MinutesFailed(m),
                None => ReplayOutcome::Broken(format!("unreadable minutes_failed {:?}", info.minutes_failed)),
            };
        }
        if info.is_complete() {
            ReplayOutcome::Completed
        } else {
            ReplayOutcome::Broken(format!("info line {:?}", info.message))
        }
    }

    /// How far the window is covered for sure: to its end when completed,
    /// else to the first minute that failed or was not processed (the rest
    /// is asked again; what arrives twice changes nothing).
    pub fn covered_to(&self, w: &Window) -> TimeMs {
        match self {
            ReplayOutcome::Completed => w.to_ms,
            ReplayOutcome::MinutesFailed(m) => m.iter().copied().min().unwrap_or(w.from_ms).clamp(w.from_ms, w.to_ms),
            ReplayOutcome::Unprocessed { from_ms, .. } => (*from_ms).clamp(w.from_ms, w.to_ms),
            ReplayOutcome::Broken(_) => w.from_ms,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ReplayOutcome::Completed => "completed",
            ReplayOutcome::MinutesFailed(_) => "minutes_failed",
            ReplayOutcome::Unprocessed { .. } => "unprocessed_range",
            ReplayOutcome::Broken(_) => "broken",
        }
    }
}

/// A time given by a person: `YYYYMMDDHHMM` (UTC, Replay's form) or RFC
/// 3339 (`2026-12-01T10:00:00Z`).
pub fn parse_time(s: &str) -> Option<TimeMs> {
    parse_replay_date(s).or_else(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis()))
}

/// `YYYYMMDDHHMM` (UTC) back to milliseconds.
pub fn parse_replay_date(s: &str) -> Option<TimeMs> {
    chrono::NaiveDateTime::parse_from_str(&format!("{s}00"), "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_opens_a_gap_which_a_long_enough_backfill_repairs() {
        let g = on_connect(3, 1_000, 61_000, GapCause::Disconnect, None).unwrap();
        assert_eq!((g.from_ms, g.to_ms, g.state), (1_000, 61_000, GapState::Open));
        let g = on_connect(3, 1_000, 61_000, GapCause::Restart, Some(1)).unwrap();
        assert_eq!(g.state, GapState::Repairing);
        let g = on_connect(3, 1_000, 61_001, GapCause::Restart, Some(1)).unwrap();
        assert_eq!(g.state, GapState::Open, "one minute does not reach back 60.001 s");
        assert!(g.note.contains("does not reach"), "{}", g.note);
        assert_eq!(on_connect(3, 5_000, 5_000, GapCause::Disconnect, None), None);
    }

    /// Seen in the fault mix (scripts/bench_peers.sh): connection A's last
    /// event at 1,000 s; B opened at 1,100 s, asked for a backfill and was
    /// cut before any event (its gap went to Replay); C opens at 1,130 s.
    /// C's gap starts at A's last event, and its backfill reaches back to
    /// it. (Before, the backfill was counted from B's last byte: 1 minute,
    /// "does not reach back far enough", and the stretch went to Replay.)
    #[test]
    fn after_a_connection_that_got_no_event_the_next_backfill_reaches_back_to_the_last_event() {
        let (a_last_event, b_last_byte, c_asks, c_opens) = (1_000_000, 1_100_200, 1_129_900, 1_130_000);
        let since = gap_start(Some(b_last_byte), a_last_event).unwrap();
        assert_eq!(since, a_last_event);
        let (minutes, enough) = backfill_minutes(since, c_asks, 5);
        assert_eq!((minutes, enough), (3, true));
        let g = on_connect(1, since, c_opens, GapCause::Disconnect, Some(minutes)).unwrap();
        assert_eq!(
            (g.from_ms, g.state, g.repair),
            (a_last_event, GapState::Repairing, Some(Repair::Backfill)),
            "{}",
            g.note
        );
        // No event seen yet: the last byte.
        assert_eq!(gap_start(Some(b_last_byte), 0), Some(b_last_byte));
        assert_eq!(gap_start(None, a_last_event), None);
    }

    #[test]
    fn backfill_asks_for_the_whole_minutes_of_the_gap_within_its_maximum() {
        assert_eq!(backfill_minutes(0, 1, 5), (1, true));
        assert_eq!(backfill_minutes(0, 60_000, 5), (1, true));
        assert_eq!(backfill_minutes(0, 60_001, 5), (2, true));
        assert_eq!(backfill_minutes(0, 300_000, 5), (5, true));
        assert_eq!(backfill_minutes(0, 300_001, 5), (5, false), "longer than 5 minutes: the most, and not enough");
        assert_eq!(backfill_minutes(10, 0, 5), (1, true), "a clock step back still asks for a minute");
    }

    #[test]
    fn states_move_forward_only() {
        use GapState::*;
        assert!(Open.may_move_to(Repairing) && Repairing.may_move_to(Repaired) && Repairing.may_move_to(Open));
        assert!(Repairing.may_move_to(Repairing), "a replay's progress");
        assert!(Open.may_move_to(Unrepairable));
        assert!(!Repaired.may_move_to(Open) && !Unrepairable.may_move_to(Repairing) && !Open.may_move_to(Open));
        for s in GapState::ALL {
            assert_eq!(GapState::parse(s.as_str()), Some(s));
        }
        assert_eq!(minutes_up(1), 1);
        assert_eq!(minutes_up(60_000), 1);
        assert_eq!(minutes_up(60_001), 2);
        let now = 10 * REPLAY_REACH_MS;
        assert!(out_of_reach(now - REPLAY_REACH_MS, now) && !out_of_reach(now - REPLAY_REACH_MS + 1, now));
    }

    fn gap(from_ms: TimeMs, to_ms: TimeMs) -> Gap {
        Gap {
            id: 7,
            partition: 1,
            from_ms,
            to_ms,
            cause: GapCause::Disconnect,
            state: GapState::Open,
            repair: None,
            covered_to_ms: from_ms,
            opened_ms: to_ms,
            history: Vec::new(),
        }
    }

    /// Found by a review run: the simulator's clock 3 minutes ahead of the
    /// daemon's, a 14-s outage. The gap ran from the last byte to the
    /// reconnection, both in this machine's time, so Replay was asked for
    /// minutes 3 minutes too early, "completed", and the gap was marked
    /// repaired without the events X sent meanwhile. Its end now adds the
    /// lead the last connection showed.
    #[test]
    fn a_gap_ends_by_x_clock_when_it_runs_ahead_of_this_machine() {
        let ahead = 3 * MINUTE_MS;
        let day = 100 * 24 * 60 * MINUTE_MS;
        // The last event came 40 ms after X stamped it, the last byte (a
        // heartbeat) 2 s later; the next connection opened 14 s on.
        let last_event_x = day + 10_000;
        let last_byte = last_event_x - ahead + 40 + 2_000;
        let connected = last_byte + 14_000;
        let lead = clock_lead(Some(last_byte), last_event_x);
        assert_eq!(lead, ahead - 2_040, "the lead less the delivery and the quiet after");
        let since = gap_start(Some(last_byte), last_event_x).unwrap();
        let g = on_connect(1, since, connected + lead, GapCause::Disconnect, None).unwrap();
        let mut open = gap(g.from_ms, g.to_ms);
        open.opened_ms = connected;
        let w = next_window(&open, connected + 10 * MINUTE_MS, 0, 120 * MINUTE_MS).unwrap();
        // What X sent while the daemon was away, in X's time.
        let (first_missed, last_missed) = (last_event_x + 1, connected + ahead - 1);
        assert!(w.from_ms <= first_missed && last_missed < w.to_ms, "{w:?} misses [{first_missed}, {last_missed}]");
        // Without the lead the window ended before them.
        let unstretched = next_window(&gap(since, connected), connected + 10 * MINUTE_MS, 0, 120 * MINUTE_MS).unwrap();
        assert!(unstretched.to_ms <= first_missed, "{unstretched:?}");
        // This machine's clock ahead, or on time: delivery is no lead.
        assert_eq!(clock_lead(Some(day + 5_000), day + 4_900), 0);
        assert_eq!(clock_lead(Some(day), 0), 0, "no event seen");
        assert_eq!(clock_lead(None, day), 0, "nothing received");
        // At most ten minutes, however far ahead (a clock that far behind
        // still gets ten: better than none).
        assert_eq!(clock_lead(Some(day), day + MAX_CLOCK_LEAD_MS), MAX_CLOCK_LEAD_MS);
        assert_eq!(clock_lead(Some(day), day + 12 * MINUTE_MS), MAX_CLOCK_LEAD_MS);
        assert_eq!(clock_lead(Some(day), i64::MAX), MAX_CLOCK_LEAD_MS);
        assert_eq!(clock_lead(Some(i64::MIN), day), MAX_CLOCK_LEAD_MS);
        // A batch's position keeps a time at most that far ahead.
        assert_eq!(batch_event_time(day + MAX_CLOCK_LEAD_MS, day), day + MAX_CLOCK_LEAD_MS);
        assert_eq!(batch_event_time(day + MAX_CLOCK_LEAD_MS + 1, day), day + MAX_CLOCK_LEAD_MS);
        assert_eq!(batch_event_time(i64::MAX, day), day + MAX_CLOCK_LEAD_MS);
        assert_eq!(batch_event_time(day - 5_000, day), day - 5_000);
    }

    #[test]
    fn replay_windows_are_whole_minutes_at_most_the_limit_and_only_when_due() {
        let now = 100 * 24 * 60 * MINUTE_MS;
        let fresh = 30 * MINUTE_MS;
        let two_h = 120 * MINUTE_MS;
        // A 5-hour gap that ended 40 minutes ago, from 10:00:30 to 15:00:10.
        let from = now - 340 * MINUTE_MS + 30_000;
        let to = now - 40 * MINUTE_MS + 10_000;
        let mut g = gap(from, to);
        let w = next_window(&g, now, fresh, two_h).unwrap();
        // From the minute before the gap's (an older event may have been on
        // its way: X promises no order within a partition).
        let first = floor_minute(from) - MINUTE_MS;
        assert_eq!((w.from_ms, w.to_ms), (first, first + two_h));
        // After two completed windows the last one reaches the minute after the end.
        g.state = GapState::Repairing;
        g.repair = Some(Repair::Replay);
        g.covered_to_ms = w.to_ms + two_h;
        let last = next_window(&g, now, fresh, two_h).unwrap();
        assert_eq!(last.to_ms, floor_minute(to) + MINUTE_MS);
        g.covered_to_ms = last.to_ms;
        assert_eq!(next_window(&g, now, fresh, two_h), None, "covered");
        // Not due: too fresh; repaired by a backfill; out of reach.
        assert_eq!(next_window(&gap(now - 20 * MINUTE_MS, now - 10 * MINUTE_MS), now, fresh, two_h), None);
        let mut b = gap(from, to);
        b.state = GapState::Repairing;
        b.repair = Some(Repair::Backfill);
        assert_eq!(next_window(&b, now, fresh, two_h), None);
        assert_eq!(
            next_window(&gap(now - 7 * REPLAY_REACH_MS / 5, now - 6 * REPLAY_REACH_MS / 5), now, fresh, two_h),
            None
        );
        // The newest event received at 12:00:00.200, one of 11:59:59.900
        // still on its way at the disconnect: its minute is replayed.
        let noon = now - 60 * MINUTE_MS;
        let (last_received, late) = (noon + 200, noon - 100);
        let w = next_window(&gap(last_received, noon + 20_000), now, fresh, two_h).unwrap();
        assert!(w.from_ms <= late && late < w.to_ms, "{w:?}");
        // Windows of one minute: the first still reaches past the gap's
        // start, so its progress (kept from the start on) is recorded and
        // the next window moves on; it used to end at the start's minute
        // and be asked again for ever (a review's finding).
        let mut short = gap(noon + 30_000, noon + 150_000);
        let first = next_window(&short, now, fresh, MINUTE_MS).unwrap();
        assert_eq!((first.from_ms, first.to_ms), (noon - MINUTE_MS, noon + MINUTE_MS));
        short.covered_to_ms = first.to_ms.max(short.covered_to_ms);
        let second = next_window(&short, now, fresh, MINUTE_MS).unwrap();
        assert_eq!((second.from_ms, second.to_ms), (noon + MINUTE_MS, noon + 2 * MINUTE_MS));
        short.covered_to_ms = second.to_ms;
        let third = next_window(&short, now, fresh, MINUTE_MS).unwrap();
        short.covered_to_ms = third.to_ms;
        assert!(short.covered_to_ms >= short.to_ms && next_window(&short, now, fresh, MINUTE_MS).is_none());
        // A gap reaching back past the reach starts inside it.
        let w = next_window(&gap(now - 2 * REPLAY_REACH_MS, now - REPLAY_REACH_MS + 5 * MINUTE_MS), now, fresh, two_h)
            .unwrap();
        assert!(w.from_ms > now - REPLAY_REACH_MS, "{w:?}");
    }

    #[test]
    fn the_info_line_decides_what_is_asked_again() {
        use crate::event::{parse_line, Message};
        let info = |line: &str| match parse_line(line.as_bytes()).unwrap() {
            Message::Info(i) => i,
            other => panic!("{other:?}"),
        };
        let w = Window {
            gap_id: 1,
            from_ms: parse_replay_date("201302200000").unwrap(),
            to_ms: parse_replay_date("201302200200").unwrap(),
        };
        let done = ReplayOutcome::of(Some(&info(
            r#"{"info":{"message":"Replay Request Completed","sent":"2016-05-27T22:15:50+00:00","activity_count":8874}}"#,
        )));
        assert_eq!((done.clone(), done.covered_to(&w)), (ReplayOutcome::Completed, w.to_ms));
        let errs = ReplayOutcome::of(Some(&info(
            r#"{"info":{"message":"Replay Request Completed with Errors","sent":"2016-05-27T22:15:50+00:00","activity_count":56333,"minutes_failed":["2013-02-20T00:05:00+00:00"]}}"#,
        )));
        assert_eq!(errs.covered_to(&w), w.from_ms + 5 * MINUTE_MS, "{errs:?}");
        let failed = ReplayOutcome::of(Some(&info(
            r#"{"info":{"message":"Replay Request Failed to Complete","sent":"2016-05-27T22:15:50+00:00","unprocessed_range":{"fromDate":"201302200100","toDate":"201302200200"},"activity_count":1822}}"#,
        )));
        assert_eq!(failed.covered_to(&w), w.from_ms + 60 * MINUTE_MS, "{failed:?}");
        let broken = ReplayOutcome::of(None);
        assert_eq!((broken.as_str(), broken.covered_to(&w)), ("broken", w.from_ms));
        assert_eq!(replay_date(w.from_ms), "201302200000");
    }
}
