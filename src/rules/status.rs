//! Status state: what the status handler keeps per post (rules.md, "State
//! kept per post"). Tombstones are kept apart (a set of ids), because a
//! deleted post needs nothing else.

use super::{merge_countries, merge_toggle, ApplyStats, Change, Toggle};
use crate::event::{Country, Id, StatusEvent, StatusEvents, Timed};
use std::collections::HashMap;

/// Per-post state other than the tombstone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusState {
    /// `drop` / `undrop`, last event time wins.
    pub dropped: Option<Toggle>,
    /// The newest id of an edit chain this post belongs to (not itself).
    pub superseded_by: Option<Id>,
    /// Union of all `status_withheld` countries.
    pub withheld: Vec<Country>,
}

impl StatusState {
    pub fn is_dropped(&self) -> bool {
        self.dropped.is_some_and(|t| t.on)
    }

    pub fn is_superseded(&self) -> bool {
        self.superseded_by.is_some()
    }

    /// `drop` (on) or `undrop` (off) at `time_ms`.
    pub fn apply_drop(&mut self, on: bool, time_ms: i64) -> Change {
        merge_toggle(&mut self.dropped, on, time_ms)
    }

    /// `status_withheld`: permanent, union of countries.
    pub fn apply_withheld(&mut self, countries: &[Country]) -> Change {
        merge_countries(&mut self.withheld, countries)
    }

    /// `tweet_edit`: this post is superseded by `newest`. Several edits of
    /// one chain keep the newest (largest) id.
    pub fn apply_superseded(&mut self, newest: Id) -> Change {
        match self.superseded_by {
            Some(cur) if cur >= newest => Change::Duplicate,
            _ => {
                self.superseded_by = Some(newest);
                Change::Applied
            }
        }
    }
}

/// The ids a `tweet_edit` supersedes: every id of the chain but the newest.
pub fn superseded_ids(newest: Id, edit_ids: &[Id]) -> impl Iterator<Item = Id> + '_ {
    edit_ids.iter().copied().filter(move |&i| i != newest)
}

/// What a batch of post events asks of a store, sorted out before anything
/// is loaded. Every list is sorted and without repeats: rows are loaded and
/// written in key order, so that neighbouring keys share pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusBatch {
    /// Posts to tombstone (a tombstone is forever: the first arrival applies).
    pub deletes: Vec<Id>,
    /// `(user, post)` likes to tombstone.
    pub like_deletes: Vec<(Id, Id)>,
    /// Posts whose state row the batch merges into (withheld, drop, undrop,
    /// and every id an edit supersedes).
    pub touched: Vec<Id>,
    /// How many delete and like-delete events the batch holds, repeats
    /// included (for the duplicate counts).
    delete_events: u64,
    like_delete_events: u64,
}

impl StatusBatch {
    /// Sorts a batch's events into what each kind needs.
    pub fn of(events: &StatusEvents) -> StatusBatch {
        let mut b = StatusBatch {
            deletes: events.deletes().to_vec(),
            like_deletes: events.like_deletes().to_vec(),
            ..StatusBatch::default()
        };
        for ev in events.state() {
            match &ev.event {
                StatusEvent::Delete { .. } | StatusEvent::FavoriteDelete { .. } => {}
                StatusEvent::Withheld(w) => b.touched.push(w.id),
                StatusEvent::Drop { id, .. } | StatusEvent::Undrop { id, .. } => b.touched.push(*id),
                StatusEvent::Edit(e) => b.touched.extend(superseded_ids(e.id, &e.edit_ids)),
            }
        }
        b.delete_events = b.deletes.len() as u64;
        b.like_delete_events = b.like_deletes.len() as u64;
        for v in [&mut b.deletes, &mut b.touched] {
            v.sort_unstable();
            v.dedup();
        }
        b.like_deletes.sort_unstable();
        b.like_deletes.dedup();
        b
    }

    /// Counts the deletes and like-deletes, given how many tombstones of
    /// each the store found new: every other event of those kinds was a
    /// repeat.
    pub fn record_tombstones(&self, new_deletes: u64, new_like_deletes: u64, stats: &mut ApplyStats) {
        for (ty, events, new) in [
            (StatusEvent::DELETE, self.delete_events, new_deletes),
            (StatusEvent::FAVORITE_DELETE, self.like_delete_events, new_like_deletes),
        ] {
            stats.applied.add(ty, new);
            stats.duplicates.add(ty, events.saturating_sub(new));
        }
    }
}

/// Merges a batch's state events ([`StatusEvents::state`]), in arrival
/// order, into the stored rows of [`StatusBatch::touched`] (`loaded`; a post
/// without a row starts from the default). Returns the rows that changed, in
/// id order, for the store to save; counts each event in `stats`.
pub fn merge_batch(
    events: &[Timed<StatusEvent>],
    mut loaded: HashMap<Id, StatusState>,
    stats: &mut ApplyStats,
) -> Vec<(Id, StatusState)> {
    let mut changed: Vec<Id> = Vec::new();
    for ev in events {
        let mut apply = |id: Id, f: &dyn Fn(&mut StatusState) -> Change| {
            let c = f(loaded.entry(id).or_default());
            if c.changed() {
                changed.push(id);
            }
            c
        };
        let change = match &ev.event {
            StatusEvent::Delete { .. } | StatusEvent::FavoriteDelete { .. } => continue,
            StatusEvent::Withheld(w) => apply(w.id, &|s| s.apply_withheld(&w.countries)),
            StatusEvent::Drop { id, .. } => apply(*id, &|s| s.apply_drop(true, ev.time_ms)),
            StatusEvent::Undrop { id, .. } => apply(*id, &|s| s.apply_drop(false, ev.time_ms)),
            StatusEvent::Edit(e) => {
                let mut change = Change::Duplicate;
                for old in superseded_ids(e.id, &e.edit_ids) {
                    if apply(old, &|s| s.apply_superseded(e.id)).changed() {
                        change = Change::Applied;
                    }
                }
                change
            }
        };
        stats.record(ev.event.type_name(), change);
    }
    changed.sort_unstable();
    changed.dedup();
    changed.into_iter().map(|id| (id, loaded.remove(&id).unwrap_or_default())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{PostEdit, PostWithheld};

    fn at(time_ms: i64, event: StatusEvent) -> Timed<StatusEvent> {
        Timed { time_ms, event }
    }

    #[test]
    fn a_batch_is_sorted_out_merged_in_order_and_only_changed_rows_come_back() {
        let de = Country::parse("DE").unwrap();
        let events: StatusEvents = [
            at(1, StatusEvent::Delete { id: 9, user_id: None }),
            at(2, StatusEvent::Drop { id: 5, user_id: None }),
            at(3, StatusEvent::Delete { id: 9, user_id: None }),
            at(4, StatusEvent::FavoriteDelete { user_id: 1, post_id: 9 }),
            at(5, StatusEvent::Edit(Box::new(PostEdit { id: 8, initial_id: Some(6), edit_ids: vec![6, 7, 8] }))),
            at(1, StatusEvent::Undrop { id: 5, user_id: None }),
            at(6, StatusEvent::Withheld(Box::new(PostWithheld { id: 4, user_id: None, countries: vec![de] }))),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            (events.len(), events.deletes(), events.like_deletes().len(), events.state().len()),
            (7, &[9, 9][..], 1, 4)
        );
        let batch = StatusBatch::of(&events);
        assert_eq!(batch.deletes, vec![9]);
        assert_eq!(batch.like_deletes, vec![(1, 9)]);
        assert_eq!(batch.touched, vec![4, 5, 6, 7]);
        // Post 4 is stored already withheld in DE: nothing changes for it.
        let loaded = HashMap::from([(4, StatusState { withheld: vec![de], ..StatusState::default() })]);
        let mut stats = ApplyStats::default();
        batch.record_tombstones(1, 0, &mut stats);
        let changed = merge_batch(events.state(), loaded, &mut stats);
        let ids: Vec<Id> = changed.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![5, 6, 7]);
        assert!(changed[0].1.is_dropped(), "the undrop is older than the drop");
        assert_eq!(changed[1].1.superseded_by, Some(8));
        assert_eq!((stats.applied.get("delete"), stats.duplicates.get("delete")), (1, 1));
        assert_eq!(stats.duplicates.get("delete_favorite"), 1);
        assert_eq!(stats.stale.get("undrop"), 1);
        assert_eq!(stats.duplicates.get("status_withheld"), 1);
        assert_eq!(stats.applied.get("tweet_edit"), 1);
    }

    #[test]
    fn edit_supersedes_all_but_newest_and_keeps_the_newest_of_several_edits() {
        assert_eq!(superseded_ids(3, &[1, 2, 3]).collect::<Vec<_>>(), vec![1, 2]);
        let mut s = StatusState::default();
        assert_eq!(s.apply_superseded(2), Change::Applied);
        assert_eq!(s.apply_superseded(3), Change::Applied);
        assert_eq!(s.apply_superseded(2), Change::Duplicate);
        assert_eq!(s.superseded_by, Some(3));
    }

    #[test]
    fn drop_undrop_by_event_time() {
        let mut s = StatusState::default();
        s.apply_drop(false, 20);
        assert_eq!(s.apply_drop(true, 10), Change::Stale);
        assert!(!s.is_dropped());
        s.apply_drop(true, 30);
        assert!(s.is_dropped());
    }
}
