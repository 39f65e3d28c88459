//! User state: what the user handler keeps per user (rules.md, "State kept
//! per user"). A user event writes only this state, so it costs the same for
//! a user with one stored post or ten million.

use super::{merge_countries, merge_toggle, ApplyStats, Change, Toggle};
use crate::event::{Country, Id, TimeMs, Timed, UserEvent};
use std::collections::HashMap;

/// Thirty days, after which a `user_delete` not undone becomes a purge.
pub const PURGE_AFTER_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub deleted: Option<Toggle>,
    pub protected: Option<Toggle>,
    pub suspended: Option<Toggle>,
    /// Union of all `user_withheld` countries.
    pub withheld: Vec<Country>,
    /// The largest `up_to_status_id` of any `scrub_geo`.
    pub scrub_up_to: Option<Id>,
    /// The `user_delete` (true) and `user_undelete` (false) times the
    /// 30-day rule can still use, sorted: the purge is computed from the
    /// whole history, so the result does not depend on arrival order. Kept
    /// compacted ([`compact_delete_log`]) by [`UserState::apply`], so its
    /// length does not grow with the number of flips.
    pub delete_log: Vec<(TimeMs, bool)>,
}

impl UserState {
    /// Merges one user event.
    pub fn apply(&mut self, ev: &UserEvent, time_ms: TimeMs) -> Change {
        match ev {
            UserEvent::Delete { .. } => self.apply_delete(true, time_ms),
            UserEvent::Undelete { .. } => self.apply_delete(false, time_ms),
            UserEvent::Protect { .. } => merge_toggle(&mut self.protected, true, time_ms),
            UserEvent::Unprotect { .. } => merge_toggle(&mut self.protected, false, time_ms),
            UserEvent::Suspend { .. } => merge_toggle(&mut self.suspended, true, time_ms),
            UserEvent::Unsuspend { .. } => merge_toggle(&mut self.suspended, false, time_ms),
            UserEvent::Withheld { countries, .. } => merge_countries(&mut self.withheld, countries),
            UserEvent::ScrubGeo { up_to_status_id, .. } => match self.scrub_up_to {
                Some(cur) if cur >= *up_to_status_id => Change::Duplicate,
                _ => {
                    self.scrub_up_to = Some(*up_to_status_id);
                    Change::Applied
                }
            },
        }
    }

    fn apply_delete(&mut self, on: bool, time_ms: TimeMs) -> Change {
        let logged = match self.delete_log.binary_search(&(time_ms, on)) {
            Ok(_) => false,
            Err(pos) => {
                let mut log = self.delete_log.clone();
                log.insert(pos, (time_ms, on));
                let log = compact_delete_log(&log);
                // An entry the rule can never use (a delete already undone
                // within 30 days, an undelete inside a run that already
                // covers it) leaves the history as it was.
                let changed = log != self.delete_log;
                self.delete_log = log;
                changed
            }
        };
        match merge_toggle(&mut self.deleted, on, time_ms) {
            // Too old for the flag, but new to the purge history: the state
            // changed and must be saved.
            Change::Stale if logged => Change::Applied,
            c => c,
        }
    }

    /// When this user's posts are purged: the earliest `t + 30 days` over the
    /// `user_delete` times `t` with no `user_undelete` in `(t, t + 30 days]`.
    ///
    /// One sweep from the end of the (sorted) log, carrying the nearest
    /// undelete after each entry: linear in the log's length, compacted or
    /// not.
    pub fn purge_at(&self) -> Option<TimeMs> {
        let mut next_undelete: Option<TimeMs> = None;
        let mut at = None;
        // Sorted, (t, false) comes before (t, true): walking backwards, a
        // delete at t is judged before an undelete at the same t, which does
        // not cancel it (the window is `(t, t + 30 days]`).
        for &(t, is_delete) in self.delete_log.iter().rev() {
            if !is_delete {
                next_undelete = Some(t);
            } else if !covered(t, next_undelete) {
                let end = t.saturating_add(PURGE_AFTER_MS);
                at = Some(at.map_or(end, |a: TimeMs| a.min(end)));
            }
        }
        at
    }

    pub fn is_purged(&self, now_ms: TimeMs) -> bool {
        self.purge_at().is_some_and(|at| at <= now_ms)
    }

    /// Deleted, protected, suspended or purged: none of the user's posts may
    /// be shown anywhere.
    pub fn hides_everywhere(&self, now_ms: TimeMs) -> bool {
        let on = |t: Option<Toggle>| t.is_some_and(|t| t.on);
        on(self.deleted) || on(self.protected) || on(self.suspended) || self.is_purged(now_ms)
    }

    /// Whether post `id` of this user has its geo data scrubbed.
    pub fn geo_scrubbed(&self, id: Id) -> bool {
        self.scrub_up_to.is_some_and(|up_to| scrub_covers(up_to, id))
    }

    /// Storage form of the delete log: `1700000000000d,1700000001000u`.
    pub fn delete_log_text(&self) -> Option<String> {
        if self.delete_log.is_empty() {
            return None;
        }
        Some(
            self.delete_log
                .iter()
                .map(|(t, d)| format!("{t}{}", if *d { 'd' } else { 'u' }))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// Parses the storage form; malformed entries (never written) are skipped.
    pub fn parse_delete_log(text: Option<&str>) -> Vec<(TimeMs, bool)> {
        let mut v: Vec<(TimeMs, bool)> = text
            .unwrap_or("")
            .split(',')
            .filter_map(|e| {
                let (num, kind) = e.split_at(e.len().checked_sub(1)?);
                let t = num.parse().ok()?;
                match kind {
                    "d" => Some((t, true)),
                    "u" => Some((t, false)),
                    _ => None,
                }
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Whether a `user_delete` at `t` is undone in time by the nearest
/// `user_undelete` after it (strictly later).
fn covered(t: TimeMs, next_undelete: Option<TimeMs>) -> bool {
    next_undelete.is_some_and(|u| u <= t.saturating_add(PURGE_AFTER_MS))
}

/// The delete history reduced to what the 30-day rule can still use, in a
/// form that depends only on the set of events seen (not on their order, or
/// on how often it was compacted before), so the stored state is the same for
/// any arrival order and batching. `log` is sorted and without repeats.
///
/// What the rule asks of the history, for any events still to come, is two
/// things:
///
/// * which delete times `d` are *covered*: some undelete `u` with
///   `d < u <= d + 30 days`, i.e. `d` in `[u - 30 days, u)`. The covered set
///   is the union of those intervals. A chain of undeletes `u1 < .. < un`
///   with gaps of at most 30 days covers exactly `[u1 - 30 days, un)` (each
///   interval meets the next), so a run is known by its first and last
///   undelete. It is stored as `u1, u1 + 30 d, u1 + 60 d, .., un`: gaps of at
///   most 30 days again, so that this same function (and any earlier build,
///   which reads the same text) sees the same run, whatever the undeletes
///   inside it were. Runs more than 30 days apart cover disjoint sets and
///   stay apart. Undeletes only ever add to the union, so it is preserved
///   exactly under any later events.
/// * the uncovered deletes, since `purge_at` is the earliest of them plus
///   30 days. A covered delete can never count again (the union only grows)
///   and is dropped. Uncovered deletes are all kept: for deletes `d1 < d2`
///   an undelete arriving later in `(d1, d2]` covers `d1` and not `d2`, and
///   then `d2` decides the purge.
///
/// So the length is at most the number of uncovered deletes plus, per run,
/// two entries and one per 30 days of the run's span: a user who flips
/// delete/undelete constantly keeps one run and the deletes after its last
/// undelete, not every flip.
pub fn compact_delete_log(log: &[(TimeMs, bool)]) -> Vec<(TimeMs, bool)> {
    let mut out = Vec::with_capacity(log.len().min(8));
    // Uncovered deletes, by a sweep from the end (as in `purge_at`).
    let mut next_undelete = None;
    for &(t, is_delete) in log.iter().rev() {
        if !is_delete {
            next_undelete = Some(t);
        } else if !covered(t, next_undelete) {
            out.push((t, true));
        }
    }
    // Undelete runs, each in its canonical form.
    let mut push_run = |first: TimeMs, last: TimeMs| {
        out.push((first, false));
        let mut p = first;
        while last.saturating_sub(p) > PURGE_AFTER_MS {
            p += PURGE_AFTER_MS;
            out.push((p, false));
        }
        if last != first {
            out.push((last, false));
        }
    };
    let mut run: Option<(TimeMs, TimeMs)> = None;
    for &(u, _) in log.iter().filter(|(_, is_delete)| !is_delete) {
        run = match run {
            Some((first, last)) if u <= last.saturating_add(PURGE_AFTER_MS) => Some((first, u)),
            Some((first, last)) => {
                push_run(first, last);
                Some((u, u))
            }
            None => Some((u, u)),
        };
    }
    if let Some((first, last)) = run {
        push_run(first, last);
    }
    out.sort_unstable();
    out
}

/// Whether a `scrub_geo` up to `up_to` covers post `id`: up to and
/// including it.
pub fn scrub_covers(up_to: Id, id: Id) -> bool {
    id <= up_to
}

/// The users a batch of user events touches, sorted and without repeats
/// (rows are loaded and written in key order).
pub fn batch_users(events: &[Timed<UserEvent>]) -> Vec<Id> {
    let mut ids: Vec<Id> = events.iter().map(|e| e.event.user_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A user's state after a batch, when the batch changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedUser {
    pub id: Id,
    pub state: UserState,
    /// A `scrub_geo` took effect: the user's stored posts need their geo
    /// removed (per-post work, queued for the maintenance pass).
    pub scrubbed: bool,
}

/// Merges a batch's events, in arrival order, into the stored rows of
/// [`batch_users`] (`loaded`; a user without a row starts from the
/// default). Returns the users that changed, in id order, for the store to
/// save; counts each event in `stats`.
pub fn merge_batch(
    events: &[Timed<UserEvent>],
    mut loaded: HashMap<Id, UserState>,
    stats: &mut ApplyStats,
) -> Vec<ChangedUser> {
    let mut changed: HashMap<Id, bool> = HashMap::new();
    for ev in events {
        let id = ev.event.user_id();
        let change = loaded.entry(id).or_default().apply(&ev.event, ev.time_ms);
        if change.changed() {
            *changed.entry(id).or_default() |= matches!(ev.event, UserEvent::ScrubGeo { .. });
        }
        stats.record(ev.event.type_name(), change);
    }
    let mut out: Vec<ChangedUser> = changed
        .into_iter()
        .map(|(id, scrubbed)| ChangedUser { id, state: loaded.remove(&id).unwrap_or_default(), scrubbed })
        .collect();
    out.sort_unstable_by_key(|u| u.id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_merges_in_order_and_returns_changed_users_with_their_scrubs() {
        let t = |time_ms, event| Timed { time_ms, event };
        let events = vec![
            t(5, UserEvent::Protect { user_id: 3 }),
            t(6, UserEvent::ScrubGeo { user_id: 1, up_to_status_id: 50 }),
            t(4, UserEvent::Unprotect { user_id: 3 }),
            t(7, UserEvent::Suspend { user_id: 2 }),
            t(8, UserEvent::ScrubGeo { user_id: 2, up_to_status_id: 10 }),
        ];
        assert_eq!(batch_users(&events), vec![1, 2, 3]);
        // User 2 has scrubbed further already: only its suspension changes.
        let loaded = HashMap::from([(2, UserState { scrub_up_to: Some(20), ..UserState::default() })]);
        let mut stats = ApplyStats::default();
        let changed = merge_batch(&events, loaded, &mut stats);
        let summary: Vec<(Id, bool)> = changed.iter().map(|u| (u.id, u.scrubbed)).collect();
        assert_eq!(summary, vec![(1, true), (2, false), (3, false)]);
        assert!(changed[2].state.protected.is_some_and(|p| p.on), "the unprotect is older");
        assert_eq!(changed[1].state.scrub_up_to, Some(20));
        assert_eq!((stats.stale.get("user_unprotect"), stats.duplicates.get("scrub_geo")), (1, 1));
    }
    const DAY: i64 = 24 * 3600 * 1000;

    fn del(u: &mut UserState, t: i64) {
        u.apply(&UserEvent::Delete { user_id: 1 }, t);
    }
    fn undel(u: &mut UserState, t: i64) {
        u.apply(&UserEvent::Undelete { user_id: 1 }, t);
    }

    #[test]
    fn purge_needs_thirty_days_without_undelete() {
        let mut u = UserState::default();
        del(&mut u, 0);
        assert_eq!(u.purge_at(), Some(30 * DAY));
        assert!(!u.is_purged(30 * DAY - 1));
        assert!(u.is_purged(30 * DAY));
        undel(&mut u, 10 * DAY);
        assert_eq!(u.purge_at(), None);
    }

    #[test]
    fn undelete_after_the_window_does_not_cancel_the_purge() {
        let mut u = UserState::default();
        undel(&mut u, 31 * DAY);
        del(&mut u, 0);
        assert_eq!(u.purge_at(), Some(30 * DAY));
        // Deleted flag: the later undelete wins, but the purge stands.
        assert!(!u.deleted.unwrap().on);
        assert!(u.hides_everywhere(30 * DAY));
    }

    #[test]
    fn purge_is_independent_of_arrival_order() {
        let events = [(0, true), (10 * DAY, false), (20 * DAY, true), (55 * DAY, false)];
        let mut a = UserState::default();
        let mut b = UserState::default();
        for (t, d) in events {
            if d {
                del(&mut a, t)
            } else {
                undel(&mut a, t)
            }
        }
        for (t, d) in events.iter().rev() {
            if *d {
                del(&mut b, *t)
            } else {
                undel(&mut b, *t)
            }
        }
        assert_eq!(a, b);
        assert_eq!(a.purge_at(), Some(50 * DAY));
    }

    #[test]
    fn regression_a_stale_user_delete_still_enters_the_purge_history() {
        // Found by tests/property.rs: an undelete 30 days + 1 ms after the
        // delete arrived first; the delete was stale for the flag, reported
        // no change, and its log entry was never saved.
        let mut u = UserState::default();
        undel(&mut u, 30 * DAY + 1);
        assert_eq!(u.apply(&UserEvent::Delete { user_id: 1 }, 0), Change::Applied);
        assert_eq!(u.purge_at(), Some(30 * DAY));
        assert_eq!(u.apply(&UserEvent::Delete { user_id: 1 }, 0), Change::Stale, "a repeat changes nothing");
    }

    #[test]
    fn delete_log_text_round_trip() {
        let mut u = UserState::default();
        del(&mut u, 7);
        undel(&mut u, 5);
        let text = u.delete_log_text().unwrap();
        assert_eq!(text, "5u,7d");
        assert_eq!(UserState::parse_delete_log(Some(&text)), u.delete_log);
    }

    /// The rule as written in rules.md, over the whole raw history: the
    /// reference the compacted log must agree with.
    fn purge_at_reference(events: &[(i64, bool)]) -> Option<i64> {
        events
            .iter()
            .filter(|(_, d)| *d)
            .filter(|(t, _)| !events.iter().any(|(u, d)| !d && *u > *t && *u <= t.saturating_add(PURGE_AFTER_MS)))
            .map(|(t, _)| t.saturating_add(PURGE_AFTER_MS))
            .min()
    }

    fn apply_all(events: &[(i64, bool)]) -> UserState {
        let mut u = UserState::default();
        for &(t, d) in events {
            if d {
                del(&mut u, t)
            } else {
                undel(&mut u, t)
            }
        }
        u
    }

    #[test]
    fn a_delete_undone_within_thirty_days_leaves_the_history() {
        let u = apply_all(&[(0, true), (10 * DAY, false)]);
        assert_eq!(u.delete_log, vec![(10 * DAY, false)]);
        // Arriving again, it changes nothing and is not saved again.
        let mut again = u.clone();
        assert_eq!(again.apply(&UserEvent::Delete { user_id: 1 }, 0), Change::Stale);
        assert_eq!(again, u);
    }

    #[test]
    fn a_user_flipping_constantly_keeps_a_short_history() {
        let mut u = UserState::default();
        for i in 0..100_000 {
            if i % 2 == 0 {
                del(&mut u, i)
            } else {
                undel(&mut u, i)
            }
        }
        // One run of undeletes (first and last) and nothing else: every
        // delete before the last undelete is undone.
        assert_eq!(u.delete_log, vec![(1, false), (99_999, false)]);
        assert_eq!(u.purge_at(), None);
        del(&mut u, 100_000);
        assert_eq!(u.purge_at(), Some(100_000 + 30 * DAY));
    }

    #[test]
    fn a_long_run_of_undeletes_keeps_one_point_per_thirty_days_and_covers_the_same_deletes() {
        let undeletes: Vec<(i64, bool)> = (0..=100).map(|d| (d * DAY, false)).collect();
        let u = apply_all(&undeletes);
        assert_eq!(
            u.delete_log,
            vec![(0, false), (30 * DAY, false), (60 * DAY, false), (90 * DAY, false), (100 * DAY, false)]
        );
        // Any later delete is judged as against the full history.
        for d in [-30 * DAY - 1, -30 * DAY, -1, 0, 45 * DAY, 99 * DAY, 100 * DAY - 1, 100 * DAY, 101 * DAY] {
            let mut compacted = u.clone();
            del(&mut compacted, d);
            let mut all = undeletes.clone();
            all.push((d, true));
            assert_eq!(compacted.purge_at(), purge_at_reference(&all), "delete at {d}");
        }
    }

    #[test]
    fn deletes_not_yet_undone_are_all_kept() {
        // Each can decide the purge once an undelete lands between them.
        let mut u = apply_all(&[(0, true), (5, true), (10, true)]);
        assert_eq!(u.delete_log.len(), 3);
        undel(&mut u, 3);
        assert_eq!(u.purge_at(), Some(5 + 30 * DAY));
    }

    #[test]
    fn an_uncompacted_history_from_an_older_build_is_compacted_on_the_next_event() {
        let mut u =
            UserState { delete_log: UserState::parse_delete_log(Some("0d,1u,2d,3u,4d,5u")), ..UserState::default() };
        assert_eq!(u.purge_at(), None);
        del(&mut u, 6);
        assert_eq!(u.delete_log, vec![(1, false), (5, false), (6, true)]);
        assert_eq!(u.purge_at(), Some(6 + 30 * DAY));
    }

    /// Event times around the 30-day boundaries, where an off-by-one shows.
    fn time() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0i64..6, -1i64..=1).prop_map(|(k, e)| k * PURGE_AFTER_MS / 2 + e),
            1 => 0i64..3 * PURGE_AFTER_MS,
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
        /// Compacting after every event gives the purge time of the whole raw
        /// history, after every prefix, in any order; and the compacted log
        /// depends only on the set of events (not their order or repeats),
        /// and survives its storage form.
        #[test]
        fn compacted_history_agrees_with_the_whole_history(
            events in proptest::collection::vec((time(), proptest::bool::ANY), 0..40),
            seed in proptest::num::u64::ANY,
        ) {
            let mut u = UserState::default();
            for (i, &(t, d)) in events.iter().enumerate() {
                if d { del(&mut u, t) } else { undel(&mut u, t) }
                let prefix = &events[..=i];
                proptest::prop_assert_eq!(u.purge_at(), purge_at_reference(prefix));
                let mut raw = prefix.to_vec();
                raw.sort_unstable();
                raw.dedup();
                let uncompacted = UserState { delete_log: raw.clone(), ..UserState::default() };
                proptest::prop_assert_eq!(uncompacted.purge_at(), purge_at_reference(prefix));
                proptest::prop_assert_eq!(&compact_delete_log(&raw), &u.delete_log);
                proptest::prop_assert_eq!(&compact_delete_log(&u.delete_log), &u.delete_log);
                proptest::prop_assert_eq!(&UserState::parse_delete_log(u.delete_log_text().as_deref()), &u.delete_log);
            }
            let mut shuffled: Vec<(u64, (i64, bool))> =
                events.iter().enumerate().map(|(i, e)| (seed.rotate_left(i as u32) ^ (i as u64).wrapping_mul(0x9E37_79B9), *e)).collect();
            shuffled.sort_unstable();
            let mut other: Vec<(i64, bool)> = shuffled.into_iter().map(|(_, e)| e).collect();
            other.extend(events.iter().rev().step_by(3));
            let v = apply_all(&other);
            proptest::prop_assert_eq!(&v.delete_log, &u.delete_log);
        }
    }

    #[test]
    fn scrub_geo_keeps_the_largest_id_inclusive() {
        let mut u = UserState::default();
        u.apply(&UserEvent::ScrubGeo { user_id: 1, up_to_status_id: 100 }, 0);
        assert_eq!(u.apply(&UserEvent::ScrubGeo { user_id: 1, up_to_status_id: 50 }, 0), Change::Duplicate);
        assert!(u.geo_scrubbed(100) && u.geo_scrubbed(1) && !u.geo_scrubbed(101));
    }
}
