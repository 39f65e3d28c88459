//! Status state: what the status handler keeps per post (rules.md, "State
//! kept per post"). Tombstones are kept apart (a set of ids), because a
//! deleted post needs nothing else.

use super::{merge_countries, merge_toggle, Change, Toggle};
use crate::event::{Country, Id};

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

#[cfg(test)]
mod tests {
    use super::*;

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
