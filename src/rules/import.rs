//! The rules that apply when a post is imported (README, "What the rules
//! are"): rules already known apply at import (tombstones, purges, scrubbed
//! geo), and import is a merge, never a replacement.
//!
//! A store loads what it knows of a batch's posts ([`Loaded`]), [`plan`]
//! decides, and the store saves the plan: the same decisions on every
//! backend.

use super::embedded::{without_withdrawn, Withdrawn};
use super::user::UserState;
use crate::event::{Id, TimeMs};
use crate::post::{strip_own_geo, without_any_geo, NewLike, NewPost};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

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
    /// Store this JSON (its own geo already removed where scrubbed).
    Store {
        json: String,
        has_geo: bool,
        geo_stripped: bool,
    },
}

/// What the store knows about a post being imported.
pub struct Known<'a> {
    pub tombstoned: bool,
    /// The post it retweets (by this form or an earlier one) is a tombstone.
    pub original_tombstoned: bool,
    pub author: &'a UserState,
}

/// Decides whether and how `p` is stored. A post's embedded copies of other
/// posts are judged on every read ([`super::embedded`]); only what never
/// comes back is removed from them before it is stored ([`plan`]).
pub fn decide(p: &NewPost, k: &Known<'_>, now_ms: TimeMs) -> Decision {
    if k.tombstoned {
        return Decision::Refuse(Refusal::Tombstoned);
    }
    if k.author.is_purged(now_ms) {
        return Decision::Refuse(Refusal::AuthorPurged);
    }
    if k.original_tombstoned {
        return Decision::Refuse(Refusal::RetweetOfTombstone);
    }
    if p.has_geo && k.author.geo_scrubbed(p.id) {
        // JSON that cannot be edited (import refuses it) keeps its geo flag:
        // every answer then removes the geo or withholds the post.
        if let Some(json) = strip_own_geo(&p.json) {
            return Decision::Store { json, has_geo: false, geo_stripped: true };
        }
    }
    Decision::Store { json: p.json.clone(), has_geo: p.has_geo, geo_stripped: false }
}

/// Whether form `a` of a post is to be kept over form `b`: a post's own
/// import line beats an embedded copy; between two of the same kind the
/// richer wins (the longer, geo aside, then the greater bytes). A total
/// order, so the kept form is the same for any order and number of imports,
/// and for a `scrub_geo` before or after either.
fn richer(a: &NewPost, b: &NewPost) -> bool {
    match a.form.cmp(&b.form) {
        Ordering::Greater => return true,
        Ordering::Less => return false,
        Ordering::Equal => {}
    }
    if a.json == b.json {
        return false;
    }
    let (ka, kb) = (without_any_geo(&a.json), without_any_geo(&b.json));
    (ka.len(), &ka, a.json.len(), &a.json) > (kb.len(), &kb, b.json.len(), &b.json)
}

/// Merges a new form of a post into what is stored: the JSON of the richer
/// form, and the links compliance depends on (retweet link, quote link) kept
/// once known from either. The geo flag and the embedded ids describe the
/// JSON kept, so whatever geo and copies it holds are always judged.
pub fn merge(stored: Option<&NewPost>, new: NewPost) -> NewPost {
    let Some(old) = stored else {
        return new;
    };
    let (mut keep, other) = if richer(&new, old) { (new, old.clone()) } else { (old.clone(), new) };
    keep.retweet_of = keep.retweet_of.or(other.retweet_of);
    keep.quote_of = keep.quote_of.or(other.quote_of);
    keep.has_geo |= other.has_geo && keep.json == other.json;
    if keep.json == other.json {
        keep.embeds.extend(&other.embeds);
    }
    keep
}

/// What the store knows, before a batch is planned, about the batch's posts.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The stored posts among the batch's post ids (a stored post reads back
    /// as the [`NewPost`] it was stored from, merged).
    pub rows: HashMap<Id, NewPost>,
    /// Which of [`Loaded::tombstone_ids`] are tombstones.
    pub tombstones: HashSet<Id>,
    /// The state of the batch's authors (those with none are absent).
    pub users: HashMap<Id, UserState>,
    /// The authors of the stored posts among [`Loaded::copy_ids`]: a copy
    /// that does not name its author (a v2 `includes.tweets` entry without
    /// `author_id`) loses its geo when the stored post's author scrubbed it.
    pub authors: HashMap<Id, Id>,
}

impl Loaded {
    /// The distinct post ids of a batch: load their stored rows first.
    pub fn post_ids(posts: &[NewPost]) -> Vec<Id> {
        sorted(posts.iter().map(|p| p.id))
    }

    /// The ids whose tombstones a batch needs, once its rows are loaded: its
    /// posts, the posts they retweet (by this form or a stored one) and the
    /// posts they carry copies of (in this form or the stored one).
    pub fn tombstone_ids(posts: &[NewPost], rows: &HashMap<Id, NewPost>) -> Vec<Id> {
        sorted(
            posts
                .iter()
                .flat_map(|p| [Some(p.id), p.retweet_of])
                .flatten()
                .chain(rows.values().filter_map(|r| r.retweet_of))
                .chain(posts.iter().chain(rows.values()).flat_map(|p| p.embeds.posts.iter().copied())),
        )
    }

    /// The posts the batch's posts (or their stored forms) carry copies of
    /// without the batch holding a form of them: look up their stored
    /// authors ([`Loaded::authors`]) once the rows are loaded.
    pub fn copy_ids(posts: &[NewPost], rows: &HashMap<Id, NewPost>) -> Vec<Id> {
        let own: HashSet<Id> = posts.iter().map(|p| p.id).collect();
        sorted(
            posts
                .iter()
                .chain(rows.values())
                .flat_map(|p| p.embeds.posts.iter().copied())
                .filter(|id| *id != 0 && !own.contains(id)),
        )
    }

    /// The users whose state a batch needs: its authors, the users its
    /// posts carry (v2 `includes.users`), and the stored `authors` of the
    /// posts they carry copies of.
    pub fn user_ids(posts: &[NewPost], authors: &HashMap<Id, Id>) -> Vec<Id> {
        sorted(
            posts
                .iter()
                .flat_map(|p| std::iter::once(p.author_id).chain(p.embeds.users.iter().copied()))
                .chain(authors.values().copied()),
        )
    }
}

fn sorted(ids: impl Iterator<Item = Id>) -> Vec<Id> {
    let mut v: Vec<Id> = ids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// What an import batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    pub stored: u64,
    /// Not stored: the id is a tombstone, its author is purged, or it retweets
    /// a tombstone.
    pub refused: u64,
    /// Stored without the geo data a `scrub_geo` removed.
    pub geo_stripped: u64,
    pub likes_stored: u64,
}

impl ImportStats {
    pub fn merge(&mut self, o: &ImportStats) {
        self.stored += o.stored;
        self.refused += o.refused;
        self.geo_stripped += o.geo_stripped;
        self.likes_stored += o.likes_stored;
    }
}

/// One row of an [`ImportPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub post: NewPost,
    /// The id was stored before: an update, not an insert.
    pub stored: bool,
}

/// What a store writes for one import batch.
#[derive(Debug, Default)]
pub struct ImportPlan {
    /// Rows to write, in id order.
    pub rows: Vec<Planned>,
    /// New tombstones for refused posts, in id order.
    pub tombstones: Vec<(Id, Refusal)>,
    /// Posts stored for the first time whose author's `scrub_geo` covers
    /// them, in id order: the posts stored before that carry copies of
    /// them (found by their links) lose those copies' geo.
    pub scrubbed_new: Vec<Id>,
    pub stats: ImportStats,
}

/// Decides a batch: the posts in order (embedded posts before the post that
/// carries them), each merged into what is stored or was planned before it.
pub fn plan(posts: &[NewPost], mut loaded: Loaded, now_ms: TimeMs) -> ImportPlan {
    let none = UserState::default();
    // What the batch's copies lose in the stored JSON: the copies of
    // tombstones, the geo of the posts whose author scrubbed it, the
    // profiles of purged users.
    let scrubbed_by = |id: Id, author: Id| loaded.users.get(&author).is_some_and(|u| u.geo_scrubbed(id));
    let scrubbed: HashSet<Id> = posts
        .iter()
        .map(|p| (p.id, p.author_id))
        .chain(loaded.authors.iter().map(|(id, author)| (*id, *author)))
        .filter(|(id, author)| scrubbed_by(*id, *author))
        .map(|(id, _)| id)
        .collect();
    let purged_users = loaded.users.iter().filter(|(_, u)| u.is_purged(now_ms)).map(|(id, _)| *id).collect();
    let mut withdrawn = Withdrawn { tombstones: std::mem::take(&mut loaded.tombstones), scrubbed, purged_users };
    let mut rows: HashMap<Id, NewPost> = HashMap::new();
    let mut tombstones: HashMap<Id, Refusal> = HashMap::new();
    let mut stats = ImportStats::default();
    for p in posts {
        let current = rows.get(&p.id).or_else(|| loaded.rows.get(&p.id));
        let retweet_of = p.retweet_of.or_else(|| current.and_then(|c| c.retweet_of));
        let known = Known {
            tombstoned: withdrawn.tombstones.contains(&p.id),
            original_tombstoned: retweet_of.is_some_and(|q| withdrawn.tombstones.contains(&q)),
            author: loaded.users.get(&p.author_id).unwrap_or(&none),
        };
        match decide(p, &known, now_ms) {
            Decision::Refuse(why) => {
                withdrawn.tombstones.insert(p.id);
                rows.remove(&p.id);
                tombstones.entry(p.id).or_insert(why);
                stats.refused += 1;
            }
            Decision::Store { json, has_geo, geo_stripped } => {
                let new = NewPost {
                    id: p.id,
                    author_id: p.author_id,
                    retweet_of: p.retweet_of,
                    quote_of: p.quote_of,
                    has_geo,
                    form: p.form,
                    embeds: p.embeds.clone(),
                    json,
                };
                // The same bytes imported again list what a row stored
                // before its embedded ids were kept (schema 3) carries.
                let listed = current.filter(|c| c.json == new.json).map(|c| merge(Some(c), new.clone()));
                let listed = listed.as_ref().or(current);
                // What is withdrawn leaves both forms before they are
                // compared: the kept form is then the same whether the
                // delete or scrub came before, between or after the imports.
                let new = without_withdrawn(&new, &withdrawn).unwrap_or(new);
                let stripped = listed.and_then(|c| without_withdrawn(c, &withdrawn));
                let merged = merge(stripped.as_ref().or(listed), new);
                if current != Some(&merged) {
                    rows.insert(p.id, merged);
                }
                stats.stored += 1;
                stats.geo_stripped += u64::from(geo_stripped);
            }
        }
    }
    let mut rows: Vec<Planned> =
        rows.into_values().map(|post| Planned { stored: loaded.rows.contains_key(&post.id), post }).collect();
    rows.sort_unstable_by_key(|r| r.post.id);
    let scrubbed_new =
        rows.iter().filter(|r| !r.stored && withdrawn.scrubbed.contains(&r.post.id)).map(|r| r.post.id).collect();
    let mut tombstones: Vec<(Id, Refusal)> = tombstones.into_iter().collect();
    tombstones.sort_unstable_by_key(|t| t.0);
    ImportPlan { rows, tombstones, scrubbed_new, stats }
}

/// Decides a batch's likes, once its posts are saved: a like is refused
/// when it was deleted (`gone`: its like tombstone) or its post is a
/// tombstone (`tombstoned`). Every like of the batch is counted, refused or
/// stored; the pairs to store come back sorted and without repeats.
pub fn plan_likes(
    likes: &[NewLike],
    gone: &HashSet<(Id, Id)>,
    tombstoned: &HashSet<Id>,
    stats: &mut ImportStats,
) -> Vec<(Id, Id)> {
    let mut keep = Vec::with_capacity(likes.len());
    for l in likes {
        if gone.contains(&(l.user_id, l.post_id)) || tombstoned.contains(&l.post_id) {
            stats.refused += 1;
        } else {
            stats.likes_stored += 1;
            keep.push((l.user_id, l.post_id));
        }
    }
    keep.sort_unstable();
    keep.dedup();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_like_is_refused_when_deleted_or_its_post_is_gone_and_every_like_is_counted() {
        let like = |user_id, post_id| NewLike { user_id, post_id };
        let likes = [like(1, 10), like(2, 20), like(3, 30), like(1, 10)];
        let gone = HashSet::from([(2, 20)]);
        let tombstoned = HashSet::from([30]);
        let mut stats = ImportStats::default();
        assert_eq!(plan_likes(&likes, &gone, &tombstoned, &mut stats), vec![(1, 10)]);
        assert_eq!((stats.likes_stored, stats.refused), (2, 2));
    }
    use crate::post::{parse_post_line, Form};

    fn plan_of(lines: &[&str], stored: &HashMap<Id, NewPost>) -> HashMap<Id, NewPost> {
        let mut all = stored.clone();
        for line in lines {
            let posts = parse_post_line(line).unwrap();
            let loaded = Loaded { rows: all.clone(), ..Loaded::default() };
            for p in plan(&posts, loaded, 0).rows {
                all.insert(p.post.id, p.post);
            }
        }
        all
    }

    #[test]
    fn the_kept_form_and_links_do_not_depend_on_the_order_of_imports() {
        // Post 200 retweets 100: in full, as a copy inside 300 (without its
        // retweeted_status), and bare (v2, no referenced_tweets).
        let full = r#"{"id_str":"200","user":{"id_str":"2"},"text":"RT full","retweeted_status":{"id_str":"100","user":{"id_str":"1"},"text":"orig"}}"#;
        let copy = r#"{"id_str":"300","user":{"id_str":"3"},"text":"RT of RT","retweeted_status":{"id_str":"200","user":{"id_str":"2"},"text":"RT full"}}"#;
        let bare = r#"{"id":"200","author_id":"2","text":"RT full"}"#;
        let orders = [
            [full, copy, bare],
            [full, bare, copy],
            [copy, full, bare],
            [copy, bare, full],
            [bare, full, copy],
            [bare, copy, full],
        ];
        let results: Vec<_> = orders.iter().map(|o| plan_of(o, &HashMap::new())).collect();
        for r in &results {
            assert_eq!(r, &results[0]);
        }
        let p200 = &results[0][&200];
        assert_eq!((p200.retweet_of, p200.form, p200.json.as_str()), (Some(100), Form::TopLevel, full));
        // Importing any form again changes nothing.
        assert_eq!(plan_of(&[full, copy, bare], &results[0]), results[0]);
    }

    #[test]
    fn an_embedded_copy_never_replaces_a_top_level_object() {
        let top = r#"{"id_str":"100","user":{"id_str":"1"},"text":"t"}"#;
        let longer_copy = r#"{"id_str":"300","user":{"id_str":"3"},"quoted_status_id_str":"100","quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"t","extra":"a much longer embedded copy"}}"#;
        let r = plan_of(&[top, longer_copy], &HashMap::new());
        assert_eq!(r[&100].json, top);
        assert_eq!(r[&300].quote_of, Some(100));
    }

    #[test]
    fn a_post_retweeting_a_tombstone_by_a_stored_link_is_refused() {
        let stored = plan_of(
            &[r#"{"id_str":"200","user":{"id_str":"2"},"retweeted_status":{"id_str":"100","user":{"id_str":"1"}}}"#],
            &HashMap::new(),
        );
        let bare = parse_post_line(r#"{"id":"200","author_id":"2"}"#).unwrap();
        let loaded = Loaded { rows: stored, tombstones: [100].into(), users: HashMap::new(), authors: HashMap::new() };
        let p = plan(&bare, loaded, 0);
        assert_eq!(p.tombstones, vec![(200, Refusal::RetweetOfTombstone)]);
        assert!(p.rows.is_empty());
    }

    #[test]
    fn a_tombstones_copy_is_not_stored_whenever_the_tombstone_came() {
        // Quote 300 carries 100, which is deleted; 300 is imported in two
        // forms (the longer one with a second copy of 100's words).
        let short = r#"{"id_str":"300","user":{"id_str":"3"},"text":"q","quoted_status_id_str":"100","quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"gone words"}}"#;
        let long = r#"{"id_str":"300","user":{"id_str":"3"},"text":"q","extra":"longer","quoted_status_id_str":"100","quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"gone words"}}"#;
        let with_tombstone = |lines: &[&str], stored: HashMap<Id, NewPost>| {
            let mut all = stored;
            all.remove(&100); // as the maintenance pass removes a deleted post
            for line in lines {
                let posts = parse_post_line(line).unwrap();
                let loaded = Loaded {
                    rows: all.clone(),
                    tombstones: [100].into(),
                    users: HashMap::new(),
                    authors: HashMap::new(),
                };
                for p in plan(&posts, loaded, 0).rows {
                    all.insert(p.post.id, p.post);
                }
            }
            all
        };
        // Deleted before both imports, between them, or after both (the
        // stored form is then rewritten by the next import of either).
        let before = with_tombstone(&[short, long], HashMap::new());
        let between = with_tombstone(&[long], plan_of(&[short], &HashMap::new()));
        let after = with_tombstone(&[short], plan_of(&[long, short], &HashMap::new()));
        for r in [&before, &between, &after] {
            assert!(!r.contains_key(&100), "the tombstone is not stored");
            assert!(!r[&300].json.contains("gone words"), "{}", r[&300].json);
            assert!(r[&300].json.contains("longer") && r[&300].embeds.posts.is_empty(), "{:?}", r[&300]);
        }
        assert_eq!(before[&300], between[&300]);
        assert_eq!(before[&300], after[&300]);
    }
}
