//! The rules that apply when a post is imported after events about it
//! (rules.md: "rules already known apply at import").

use super::user::UserState;
use crate::event::TimeMs;
use crate::post::{strip_geo, GeoScrub, NewPost};

/// Why a post is not stored; the id becomes (or stays) a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The id is already a tombstone.
    Tombstoned,
    /// It retweets a tombstone: deleted with its original.
    RetweetOfTombstone,
    /// Its author is purged.
    AuthorPurged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refuse(Refusal),
    /// Store this JSON (geo already removed where scrubbed).
    Store { json: String, has_geo: bool, geo_stripped: bool },
}

/// What the store knows about a post being imported.
pub struct Known<'a> {
    pub tombstoned: bool,
    pub original_tombstoned: bool,
    pub author: &'a UserState,
    /// The author of the retweeted original, when it is stored.
    pub original_author: Option<&'a UserState>,
}

/// Decides whether and how `p` is stored.
pub fn decide(p: &NewPost, k: &Known<'_>, now_ms: TimeMs) -> Decision {
    if k.tombstoned {
        return Decision::Refuse(Refusal::Tombstoned);
    }
    if k.author.is_purged(now_ms) {
        return Decision::Refuse(Refusal::AuthorPurged);
    }
    if p.retweet_of.is_some() && k.original_tombstoned {
        return Decision::Refuse(Refusal::RetweetOfTombstone);
    }
    let own = p.has_geo && k.author.geo_scrubbed(p.id);
    let embedded =
        p.has_geo && p.retweet_of.is_some_and(|q| k.original_author.is_some_and(|a| a.geo_scrubbed(q)));
    if !own && !embedded {
        return Decision::Store { json: p.json.clone(), has_geo: p.has_geo, geo_stripped: false };
    }
    // Geo may remain in the part that was not scrubbed.
    let still = !(own && (embedded || p.retweet_of.is_none()));
    Decision::Store { json: strip_geo(&p.json, GeoScrub { own, embedded }), has_geo: still, geo_stripped: true }
}
