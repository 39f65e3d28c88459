//! The rules (README, "What the rules are"), as pure functions over state
//! values.
//!
//! [`status`] and [`user`] are owned by separate handlers and share nothing;
//! [`visibility`] is the one place where both states meet, at read time;
//! [`embedded`] applies it to the posts and users a post's JSON carries, and
//! [`import`] decides how a post is stored and merged.
//! Stores load state rows, let these functions merge events into them, and
//! save the result: the rules live here once for every backend.

pub mod embedded;
pub mod import;
pub mod status;
pub mod user;
pub mod visibility;

use crate::event::{Country, EVENT_TYPES};
use std::fmt;

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The state changed (or a toggle was confirmed by a later event).
    Applied,
    /// The event was already in effect: a repeat of what is known.
    Duplicate,
    /// Older than what is known for that state: ignored (later time wins).
    Stale,
}

impl Change {
    pub fn changed(self) -> bool {
        self == Change::Applied
    }
}

/// Counts per event type name ([`EVENT_TYPES`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCounts([u64; EVENT_TYPES.len()]);

impl TypeCounts {
    pub fn add(&mut self, type_name: &str, n: u64) {
        if let Some(i) = EVENT_TYPES.iter().position(|t| *t == type_name) {
            self.0[i] += n;
        }
    }
    pub fn get(&self, type_name: &str) -> u64 {
        EVENT_TYPES.iter().position(|t| *t == type_name).map_or(0, |i| self.0[i])
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn merge(&mut self, other: &TypeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
    /// Non-zero counts, in the fixed type order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EVENT_TYPES.iter().zip(self.0.iter()).filter(|(_, n)| **n > 0).map(|(t, n)| (*t, *n))
    }
}

impl fmt::Display for TypeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (t, n) in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{t}={n}")?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// What one batch did, by event type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub applied: TypeCounts,
    /// Already in effect (an exact repeat).
    pub duplicates: TypeCounts,
    /// Older than the known state of a toggle: ignored.
    pub stale: TypeCounts,
}

impl ApplyStats {
    pub fn record(&mut self, type_name: &str, change: Change) {
        match change {
            Change::Applied => self.applied.add(type_name, 1),
            Change::Duplicate => self.duplicates.add(type_name, 1),
            Change::Stale => self.stale.add(type_name, 1),
        }
    }
    pub fn merge(&mut self, o: &ApplyStats) {
        self.applied.merge(&o.applied);
        self.duplicates.merge(&o.duplicates);
        self.stale.merge(&o.stale);
    }
}

/// A "last event time wins" flag (drop, user delete/protect/suspend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toggle {
    pub on: bool,
    pub time_ms: i64,
}

/// Merges a toggle event into a flag: the later event time wins; on equal
/// times the later arrival wins; the same value at the same time is a
/// duplicate.
pub fn merge_toggle(cur: &mut Option<Toggle>, on: bool, time_ms: i64) -> Change {
    match cur {
        Some(c) if time_ms < c.time_ms => Change::Stale,
        Some(c) if time_ms == c.time_ms && c.on == on => Change::Duplicate,
        _ => {
            *cur = Some(Toggle { on, time_ms });
            Change::Applied
        }
    }
}

/// Union of withheld countries (kept sorted, without repeats).
pub fn merge_countries(cur: &mut Vec<Country>, add: &[Country]) -> Change {
    let before = cur.len();
    for c in add {
        if let Err(pos) = cur.binary_search(c) {
            cur.insert(pos, *c);
        }
    }
    if cur.len() > before {
        Change::Applied
    } else {
        Change::Duplicate
    }
}

/// `DE,FR` from a country list (the storage form).
pub fn countries_to_text(list: &[Country]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    Some(list.iter().map(Country::as_str).collect::<Vec<_>>().join(","))
}

/// The storage form back to a sorted list; bad codes (never written) are
/// skipped.
pub fn countries_from_text(text: Option<&str>) -> Vec<Country> {
    let mut v: Vec<Country> =
        text.unwrap_or("").split(',').filter(|s| !s.is_empty()).filter_map(|s| Country::parse(s).ok()).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggle_later_time_wins_equal_time_later_arrival_wins() {
        let mut t = None;
        assert_eq!(merge_toggle(&mut t, true, 10), Change::Applied);
        assert_eq!(merge_toggle(&mut t, false, 5), Change::Stale);
        assert_eq!(t, Some(Toggle { on: true, time_ms: 10 }));
        assert_eq!(merge_toggle(&mut t, true, 10), Change::Duplicate);
        assert_eq!(merge_toggle(&mut t, false, 10), Change::Applied);
        assert_eq!(t, Some(Toggle { on: false, time_ms: 10 }));
        assert_eq!(merge_toggle(&mut t, true, 11), Change::Applied);
    }

    #[test]
    fn countries_union_and_text_round_trip() {
        let de = Country::parse("DE").unwrap();
        let fr = Country::parse("FR").unwrap();
        let mut v = vec![];
        assert_eq!(merge_countries(&mut v, &[fr, de]), Change::Applied);
        assert_eq!(merge_countries(&mut v, &[de]), Change::Duplicate);
        assert_eq!(countries_to_text(&v).as_deref(), Some("DE,FR"));
        assert_eq!(countries_from_text(Some("DE,FR")), v);
        assert_eq!(countries_to_text(&[]), None);
    }
}
