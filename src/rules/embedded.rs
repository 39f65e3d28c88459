//! Embedded content (README, "What the rules are"): a post's JSON may carry
//! other posts (v1.1 `retweeted_status` and `quoted_status` at any depth, v2
//! `includes.tweets`) and users (v2 `includes.users`). Wherever complyd
//! returns a post's JSON for a country, each embedded post stays only where it
//! is itself visible by [`super::visibility::visible`], with scrubbed geo
//! removed from it; an embedded user whose state hides their posts is
//! removed. Ids are not content: `quoted_status_id_str` and
//! `referenced_tweets` stay.
//!
//! [`filter`] applies a [`Judge`]'s verdicts to a parsed post; [`Facts`]
//! judges from what the store looked up for a batch of posts. The only
//! verdicts written to the store are those that never change
//! ([`Withdrawn`]): the states that can be undone are judged on every read.

use super::user::UserState;
use super::visibility::{self, own_rules_allow, visible, PostView};
use crate::event::{parse_id_str, Country, Id, TimeMs};
use crate::post::{
    parse_post_line, remove_geo_keys, remove_geo_keys_from, Embeds, NewPost, MAX_EMBED_DEPTH, MENTION_KEYS, REF_KEYS,
};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// What happens to one embedded post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Removed: not visible (or not stored, or its id unreadable).
    Hide,
    /// Kept as it is.
    Show,
    /// Kept, without `coordinates`, `geo`, `place` (its author scrubbed them).
    ShowWithoutGeo,
}

/// Decides about embedded posts and users by id.
pub trait Judge {
    fn post(&self, id: Id) -> Verdict;
    /// Whether an embedded user may stay.
    fn user(&self, id: Id) -> bool;
}

/// What the store knows about the posts and users embedded in a batch of
/// rows: every stored post among them with its facts, and every user with a
/// state row. An id missing from `posts` is not stored.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub posts: HashMap<Id, visibility::Facts>,
    pub users: HashMap<Id, UserState>,
}

impl Facts {
    pub fn clear(&mut self) {
        self.posts.clear();
        self.users.clear();
    }
}

/// [`Facts`] judged for one country at one time, for one post: `original`
/// is what the post's own facts say of the post it retweets (`retweet_of`),
/// which need not be looked up again.
pub struct InCountry<'a> {
    pub facts: &'a Facts,
    pub retweet_of: Option<Id>,
    pub original: Option<&'a PostView>,
    pub country: Option<Country>,
    pub now_ms: TimeMs,
}

impl InCountry<'_> {
    fn verdict(&self, id: Id, visible: bool, author: &UserState) -> Verdict {
        match (visible, author.geo_scrubbed(id)) {
            (false, _) => Verdict::Hide,
            (true, true) => Verdict::ShowWithoutGeo,
            (true, false) => Verdict::Show,
        }
    }
}

impl Judge for InCountry<'_> {
    fn post(&self, id: Id) -> Verdict {
        if let Some(f) = self.facts.posts.get(&id) {
            return self.verdict(id, visible(f, self.country, self.now_ms), &f.post.author);
        }
        match self.original {
            // The retweeted original, as the retweet's own facts have it (a
            // retweet is shown only when its original passes rules 1 to 4,
            // rule 5).
            Some(o) if self.retweet_of == Some(id) => {
                self.verdict(id, own_rules_allow(o, self.country, self.now_ms), &o.author)
            }
            _ => Verdict::Hide,
        }
    }

    fn user(&self, id: Id) -> bool {
        self.facts.users.get(&id).map_or(id != 0, |u| !visibility::user_hides(u, self.country, self.now_ms))
    }
}

/// Whether the posts and users a post embeds can be judged from the post's
/// own facts alone: it embeds nothing but the original it retweets (the
/// usual retweet), whose facts come with its own.
pub fn judged_by_own_facts(embeds: &Embeds, retweet_of: Option<Id>) -> bool {
    embeds.users.is_empty() && embeds.posts.len() == 1 && retweet_of == Some(embeds.posts[0])
}

/// Whether [`filter`] would change anything in a post that lists `posts` and
/// `users` as embedded: when it would not, the stored bytes can be returned
/// as they are, unparsed.
pub fn changes_anything(judge: &dyn Judge, posts: &[Id], users: &[Id]) -> bool {
    posts.iter().any(|id| judge.post(*id) != Verdict::Show) || users.iter().any(|id| !judge.user(*id))
}

/// Reads an embedded post's id: `id_str`, else `id` (a string, or a number
/// as long as it is exact).
fn id_of(v: &Value) -> Option<Id> {
    id_value(v.get("id_str").or_else(|| v.get("id"))?)
}

/// An id as JSON gives it: a string, or a number as long as it is exact.
fn id_value(v: &Value) -> Option<Id> {
    match v {
        Value::String(s) => parse_id_str(s).ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Removes from a parsed post what `judge` hides, at every depth. Returns
/// whether anything was removed.
pub fn filter(post: &mut Value, judge: &dyn Judge) -> bool {
    let Some(obj) = post.as_object_mut() else {
        return false;
    };
    if obj.get("data").is_some_and(Value::is_object) {
        let mut changed = filter_v2(obj, judge);
        if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
            changed |= filter_object(data, judge, 0);
        }
        return changed;
    }
    filter_object(obj, judge, 0)
}

/// What one post object at `depth` carries, in either format: v1.1's
/// copies ([`filter_v1`]) and twarc's expansions ([`filter_expanded`]),
/// each judged again inside every copy kept, as import lists them
/// (`post::v1_tree`, `post::v2_carried`).
fn filter_object(o: &mut Map<String, Value>, judge: &dyn Judge, depth: usize) -> bool {
    filter_v1(o, judge, depth) | filter_expanded(o, judge, depth)
}

/// Whether an object has a key X does not send there: an expansion merged
/// in ([`REF_KEYS`], [`MENTION_KEYS`]; import lists the same).
fn expanded(o: &Map<String, Value>, sent: &[&str]) -> bool {
    o.keys().any(|k| !sent.contains(&k.as_str()))
}

/// A v2 object's `id`, as import reads it (no `id_str` in v2).
fn v2_id(o: &Map<String, Value>) -> Option<Id> {
    id_value(o.get("id")?)
}

/// twarc's flattened v2 (`twarc2 flatten`): the posts expanded in a post's
/// `referenced_tweets` entries (each with what is expanded in it), and the
/// users expanded in its `in_reply_to_user` and in the mentions of its
/// `entities` and `note_tweet.entities`. A
/// hidden post's entry is cut back to its `type` and `id`, a hidden user's
/// mention to what X itself sends, a hidden `in_reply_to_user` removed
/// (`in_reply_to_user_id` stays). Nothing for a post without expansions.
fn filter_expanded(t: &mut Map<String, Value>, judge: &dyn Judge, depth: usize) -> bool {
    let mut changed = false;
    if let Some(refs) = t.get_mut("referenced_tweets").and_then(Value::as_array_mut) {
        for entry in refs.iter_mut().filter_map(Value::as_object_mut) {
            if !expanded(entry, &REF_KEYS) {
                continue;
            }
            let verdict = match (depth + 1 < MAX_EMBED_DEPTH).then(|| v2_id(entry)).flatten() {
                Some(id) => judge.post(id),
                None => Verdict::Hide,
            };
            match verdict {
                Verdict::Hide => {
                    entry.retain(|k, _| REF_KEYS.contains(&k.as_str()));
                    changed = true;
                }
                Verdict::ShowWithoutGeo | Verdict::Show => {
                    if verdict == Verdict::ShowWithoutGeo {
                        changed |= remove_geo_keys_from(entry);
                    }
                    changed |= filter_object(entry, judge, depth + 1);
                }
            }
        }
    }
    let hidden = |u: &Value| !u.as_object().and_then(v2_id).is_some_and(|id| judge.user(id));
    if t.get("in_reply_to_user").is_some_and(|u| !carries_nothing(u) && hidden(u)) {
        t.shift_remove("in_reply_to_user");
        changed = true;
    }
    for note in [false, true] {
        let entities = match note {
            false => t.get_mut("entities"),
            true => t.get_mut("note_tweet").and_then(|n| n.get_mut("entities")),
        };
        let list = entities.and_then(|e| e.get_mut("mentions")).and_then(Value::as_array_mut);
        for m in list.into_iter().flatten() {
            if m.as_object().is_some_and(|o| expanded(o, &MENTION_KEYS)) && hidden(m) {
                if let Some(o) = m.as_object_mut() {
                    o.retain(|k, _| MENTION_KEYS.contains(&k.as_str()));
                }
                changed = true;
            }
        }
    }
    changed
}

/// `null`, `{}` or `[]` where a copy or an expanded user may be: nothing to
/// judge, as import reads it (`{}` is what twarc merges in for a user X did
/// not include).
fn carries_nothing(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
}

/// v1.1: `retweeted_status` and `quoted_status`, each an embedded post that
/// may carry its own.
fn filter_v1(obj: &mut Map<String, Value>, judge: &dyn Judge, depth: usize) -> bool {
    let mut changed = false;
    for key in ["retweeted_status", "quoted_status"] {
        let Some(child) = obj.get_mut(key).filter(|c| !carries_nothing(c)) else {
            continue;
        };
        let verdict = match (depth + 1 < MAX_EMBED_DEPTH).then(|| id_of(child)).flatten() {
            Some(id) if child.is_object() => judge.post(id),
            _ => Verdict::Hide,
        };
        match verdict {
            Verdict::Hide => {
                obj.shift_remove(key);
                if key == "quoted_status" {
                    // The quoted post's URL, with its author's screen name.
                    obj.shift_remove("quoted_status_permalink");
                }
                changed = true;
            }
            Verdict::ShowWithoutGeo | Verdict::Show => {
                if verdict == Verdict::ShowWithoutGeo {
                    changed |= remove_geo_keys(child);
                }
                if let Some(c) = child.as_object_mut() {
                    changed |= filter_object(c, judge, depth + 1);
                }
            }
        }
    }
    changed
}

/// v2: the `includes.tweets` and `includes.users` entries; when a tweet goes
/// or loses its geo, the places, media and polls only it referred to go too.
fn filter_v2(obj: &mut Map<String, Value>, judge: &dyn Judge) -> bool {
    let Some(includes) = obj.get_mut("includes").and_then(Value::as_object_mut) else {
        return false;
    };
    let mut changed = false;
    let mut tweets_changed = false;
    if let Some(tweets) = includes.get_mut("tweets").and_then(Value::as_array_mut) {
        let before = tweets.len();
        tweets.retain_mut(|t| {
            let verdict = match t.as_object().and_then(v2_id) {
                Some(id) => judge.post(id),
                None => Verdict::Hide,
            };
            if verdict == Verdict::ShowWithoutGeo {
                tweets_changed |= remove_geo_keys(t);
            }
            // What a kept copy carries in turn (at import's depth for it).
            if let Some(o) = t.as_object_mut().filter(|_| verdict != Verdict::Hide) {
                changed |= filter_object(o, judge, 1);
            }
            verdict != Verdict::Hide
        });
        tweets_changed |= tweets.len() != before;
    }
    if let Some(users) = includes.get_mut("users").and_then(Value::as_array_mut) {
        let before = users.len();
        users.retain(|u| u.as_object().and_then(v2_id).is_some_and(|id| judge.user(id)));
        changed |= users.len() != before;
    }
    if tweets_changed {
        let tweets = obj.get("includes").and_then(|i| i.get("tweets")).and_then(Value::as_array);
        let shown: Vec<&Value> = obj.get("data").into_iter().chain(tweets.into_iter().flatten()).collect();
        let mut refs: HashMap<&str, HashSet<String>> = HashMap::new();
        for t in shown {
            let mut add = |kind: &'static str, v: Option<&Value>| {
                let set = refs.entry(kind).or_default();
                match v {
                    Some(Value::String(s)) => {
                        set.insert(s.clone());
                    }
                    Some(Value::Array(a)) => set.extend(a.iter().filter_map(Value::as_str).map(str::to_owned)),
                    _ => {}
                }
            };
            add("places", t.pointer("/geo/place_id"));
            add("media", t.pointer("/attachments/media_keys"));
            add("polls", t.pointer("/attachments/poll_ids"));
        }
        let includes = obj.get_mut("includes").and_then(Value::as_object_mut).expect("includes checked above");
        for (kind, key) in [("places", "id"), ("media", "media_key"), ("polls", "id")] {
            if let Some(list) = includes.get_mut(kind).and_then(Value::as_array_mut) {
                let keep = refs.get(kind);
                list.retain(|e| {
                    e.get(key).and_then(Value::as_str).is_some_and(|k| keep.is_some_and(|s| s.contains(k)))
                });
            }
        }
        changed = true;
    }
    changed
}

/// What never comes back, judged for the stored JSON: a tombstone's copy is
/// hidden (delete, its cascade, a purge), a copy whose author scrubbed its
/// geo loses it (a `scrub_geo` is never undone), a purged user's
/// `includes.users` entry goes; everything else stays. Unlike a country's
/// verdicts, these may be written to the store.
#[derive(Default)]
pub struct Withdrawn {
    pub tombstones: HashSet<Id>,
    pub scrubbed: HashSet<Id>,
    pub purged_users: HashSet<Id>,
}

impl Withdrawn {
    fn touches(&self, embeds: &Embeds) -> bool {
        embeds.posts.iter().any(|id| self.tombstones.contains(id) || self.scrubbed.contains(id))
            || embeds.users.iter().any(|id| self.purged_users.contains(id))
    }
}

impl Judge for Withdrawn {
    fn post(&self, id: Id) -> Verdict {
        if self.tombstones.contains(&id) {
            Verdict::Hide
        } else if self.scrubbed.contains(&id) {
            Verdict::ShowWithoutGeo
        } else {
            Verdict::Show
        }
    }

    fn user(&self, id: Id) -> bool {
        !self.purged_users.contains(&id)
    }
}

/// The posts whose withdrawal would change a stored post's JSON, from what
/// it `embeds`: the copies it carries, but the original it retweets (a
/// retweet goes with its original, and its retweet link finds it when the
/// original's geo is scrubbed) and unreadable ids. A store keeps these
/// links to find the carriers when a post becomes a tombstone or its geo is
/// scrubbed ([`tracked_users`] for purged profiles).
pub fn tracked_copies(embeds: &Embeds, retweet_of: Option<Id>) -> impl Iterator<Item = Id> + '_ {
    embeds.posts.iter().copied().filter(move |id| *id != 0 && Some(*id) != retweet_of)
}

/// The users whose purge would change a stored post's JSON: those it carries
/// (v2 `includes.users`), but unreadable ids.
pub fn tracked_users(embeds: &Embeds) -> impl Iterator<Item = Id> + '_ {
    embeds.users.iter().copied().filter(|id| *id != 0)
}

/// `post` with [`Withdrawn`]'s verdicts applied to the copies it carries,
/// its embedded ids listed anew; `None` when that changes nothing, or when
/// the members to edit cannot be read as a tree ([`crate::post::edit_tree`];
/// import never stores such JSON; every answer then withholds the post). Used
/// where a post is saved (import) and where a post becomes a tombstone or
/// its geo is scrubbed (maintenance), so that withdrawn words and places
/// leave the stored JSON of the posts that quote or include them, not only
/// their answers.
pub fn without_withdrawn(post: &NewPost, withdrawn: &Withdrawn) -> Option<NewPost> {
    if !withdrawn.touches(&post.embeds) {
        return None;
    }
    let crate::post::Edited::Changed(json) = crate::post::edit_tree(&post.json, |v| filter(v, withdrawn)) else {
        return None;
    };
    // What the JSON now carries (a hidden copy took the copies inside it).
    let embeds = match parse_post_line(&json).ok().and_then(|mut posts| posts.pop()) {
        Some(top) => top.embeds,
        None => Embeds {
            posts: post.embeds.posts.iter().copied().filter(|id| !withdrawn.tombstones.contains(id)).collect(),
            users: post.embeds.users.iter().copied().filter(|id| !withdrawn.purged_users.contains(id)).collect(),
        },
    };
    Some(NewPost { json, embeds, ..post.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hides the ids in `hide`, strips geo from those in `no_geo`, drops the
    /// users in `users_hidden`.
    struct Fixed {
        hide: Vec<Id>,
        no_geo: Vec<Id>,
        users_hidden: Vec<Id>,
    }

    impl Judge for Fixed {
        fn post(&self, id: Id) -> Verdict {
            if self.hide.contains(&id) || id == 0 {
                Verdict::Hide
            } else if self.no_geo.contains(&id) {
                Verdict::ShowWithoutGeo
            } else {
                Verdict::Show
            }
        }
        fn user(&self, id: Id) -> bool {
            !self.users_hidden.contains(&id)
        }
    }

    /// Filters `json` read whole; checks that `edit_tree`, which reads only
    /// the members `filter` may change, gives the same.
    fn run(json: &str, judge: &Fixed) -> (bool, String) {
        let mut v: Value = serde_json::from_str(json).unwrap();
        let changed = filter(&mut v, judge);
        let whole = serde_json::to_string(&v).unwrap();
        let partial = crate::post::edit_tree(json, |v| filter(v, judge))
            .or_stored(json)
            .unwrap_or_else(|| panic!("{json} read whole but not in part"));
        assert_eq!(partial, whole, "the members read as a tree are all that filter edits");
        (changed, whole)
    }

    #[test]
    fn a_hidden_quote_goes_with_its_permalink_and_its_id_stays() {
        let json = r#"{"id_str":"300","text":"mine","quoted_status_id_str":"100","quoted_status":{"id_str":"100","text":"gone"},"quoted_status_permalink":{"expanded":"https://x.com/a/status/100"}}"#;
        let (changed, out) = run(json, &Fixed { hide: vec![100], no_geo: vec![], users_hidden: vec![] });
        assert!(changed);
        assert_eq!(out, r#"{"id_str":"300","text":"mine","quoted_status_id_str":"100"}"#);
        let (changed, out) = run(json, &Fixed { hide: vec![], no_geo: vec![], users_hidden: vec![] });
        assert!(!changed);
        assert!(out.contains("gone"));
    }

    #[test]
    fn twarc_flattened_expansions_are_judged_like_any_copy() {
        // 300 refers to 200 (which quotes 100, expanded in it), replies to
        // user 4, mentions users 2 (expanded) and 7 (as X sends it).
        let json = r#"{"id":"300","author_id":"3","referenced_tweets":[{"type":"replied_to","id":"200","text":"mid","author_id":"8","geo":{"place_id":"p","full_name":"Midtown"},"referenced_tweets":[{"type":"quoted","id":"100","text":"inner"}]}],"in_reply_to_user_id":"4","in_reply_to_user":{"id":"4","name":"Four"},"entities":{"mentions":[{"start":0,"end":4,"username":"two","id":"2","name":"Two","description":"bio"},{"start":5,"end":9,"username":"sev","id":"7"}]}}"#;
        let nothing = Fixed { hide: vec![], no_geo: vec![], users_hidden: vec![] };
        assert_eq!(run(json, &nothing), (false, json.to_owned()));
        let (changed, out) = run(json, &Fixed { hide: vec![100], no_geo: vec![200], users_hidden: vec![2, 4, 7] });
        assert!(changed);
        assert_eq!(
            out,
            r#"{"id":"300","author_id":"3","referenced_tweets":[{"type":"replied_to","id":"200","text":"mid","author_id":"8","referenced_tweets":[{"type":"quoted","id":"100"}]}],"in_reply_to_user_id":"4","entities":{"mentions":[{"start":0,"end":4,"username":"two","id":"2"},{"start":5,"end":9,"username":"sev","id":"7"}]}}"#
        );
        // A long post's mentions too, and an expansion without a text.
        let note = r#"{"id":"1","author_id":"3","note_tweet":{"entities":{"mentions":[{"start":0,"end":1,"username":"two","id":"2","description":"bio"}]}},"referenced_tweets":[{"type":"quoted","id":"100","author":{"name":"N"}}]}"#;
        let (changed, out) = run(note, &Fixed { hide: vec![100], no_geo: vec![], users_hidden: vec![2] });
        assert!(changed);
        assert_eq!(
            out,
            r#"{"id":"1","author_id":"3","note_tweet":{"entities":{"mentions":[{"start":0,"end":1,"username":"two","id":"2"}]}},"referenced_tweets":[{"type":"quoted","id":"100"}]}"#
        );
        // twarc merges `{}` in for a user X did not include: nothing to cut.
        let empty = r#"{"id":"1","author_id":"3","in_reply_to_user_id":"4","in_reply_to_user":{}}"#;
        assert_eq!(
            run(empty, &Fixed { hide: vec![], no_geo: vec![], users_hidden: vec![4] }),
            (false, empty.to_owned())
        );
        // Wrapped in `data` the same; an expansion whose id cannot be read
        // is cut back.
        let wrapped =
            r#"{"data":{"id":"1","author_id":"3","referenced_tweets":[{"type":"quoted","id":"x","text":"?"}]}}"#;
        let (changed, out) = run(wrapped, &nothing);
        assert!(changed);
        assert_eq!(out, r#"{"data":{"id":"1","author_id":"3","referenced_tweets":[{"type":"quoted","id":"x"}]}}"#);
    }

    #[test]
    fn a_copy_of_either_format_is_judged_for_both_inside_any_other() {
        // Each line hides 100 at the second level, inside a kept copy of the
        // other format (import lists both at every depth: `post::v2_carried`).
        let hide = Fixed { hide: vec![100], no_geo: vec![], users_hidden: vec![5] };
        let nothing = Fixed { hide: vec![], no_geo: vec![], users_hidden: vec![] };
        for (json, want) in [
            // twarc's expansion inside a v1.1 quoted copy
            (
                r#"{"id_str":"3","user":{"id_str":"3"},"quoted_status":{"id_str":"20","user":{"id_str":"2"},"text":"KEPT","referenced_tweets":[{"type":"quoted","id":"100","text":"GONE"}]}}"#,
                r#"{"id_str":"3","user":{"id_str":"3"},"quoted_status":{"id_str":"20","user":{"id_str":"2"},"text":"KEPT","referenced_tweets":[{"type":"quoted","id":"100"}]}}"#,
            ),
            // a v1.1 copy inside twarc's expansion
            (
                r#"{"id":"3","author_id":"3","referenced_tweets":[{"type":"quoted","id":"20","text":"KEPT","quoted_status":{"id_str":"100","text":"GONE"}}]}"#,
                r#"{"id":"3","author_id":"3","referenced_tweets":[{"type":"quoted","id":"20","text":"KEPT"}]}"#,
            ),
            // twarc's expansions inside a kept includes.tweets entry
            (
                r#"{"data":{"id":"3","author_id":"3"},"includes":{"tweets":[{"id":"20","text":"KEPT","referenced_tweets":[{"type":"quoted","id":"100","text":"GONE"}],"in_reply_to_user":{"id":"5","name":"GONE"}}]}}"#,
                r#"{"data":{"id":"3","author_id":"3"},"includes":{"tweets":[{"id":"20","text":"KEPT","referenced_tweets":[{"type":"quoted","id":"100"}]}]}}"#,
            ),
            // a v1.1 copy inside v2's data
            (
                r#"{"data":{"id":"3","author_id":"3","text":"KEPT","quoted_status":{"id_str":"100","text":"GONE"}}}"#,
                r#"{"data":{"id":"3","author_id":"3","text":"KEPT"}}"#,
            ),
        ] {
            assert_eq!(run(json, &hide), (true, want.to_owned()), "{json}");
            assert_eq!(run(json, &nothing), (false, json.to_owned()), "{json}");
            // Import lists what the answers judge there.
            let listed = crate::post::parse_post_line(json).unwrap().pop().unwrap().embeds;
            assert!(listed.posts.contains(&100), "{json} lists {listed:?}");
        }
    }

    #[test]
    fn nested_copies_are_judged_one_by_one() {
        // 30 retweets 20, which quotes 10.
        let json = r#"{"id_str":"30","retweeted_status":{"id_str":"20","quoted_status":{"id_str":"10","text":"inner","coordinates":[1,2]}}}"#;
        let (_, out) = run(json, &Fixed { hide: vec![10], no_geo: vec![], users_hidden: vec![] });
        assert_eq!(out, r#"{"id_str":"30","retweeted_status":{"id_str":"20"}}"#);
        let (changed, out) = run(json, &Fixed { hide: vec![], no_geo: vec![10], users_hidden: vec![] });
        assert!(changed);
        assert_eq!(
            out,
            r#"{"id_str":"30","retweeted_status":{"id_str":"20","quoted_status":{"id_str":"10","text":"inner"}}}"#
        );
    }

    #[test]
    fn what_cannot_be_vouched_for_is_removed() {
        let judge = Fixed { hide: vec![], no_geo: vec![], users_hidden: vec![] };
        let (_, out) = run(r#"{"id_str":"1","quoted_status":{"text":"no id"}}"#, &judge);
        assert_eq!(out, r#"{"id_str":"1"}"#);
        let (_, out) = run(r#"{"id_str":"1","quoted_status":"not an object"}"#, &judge);
        assert_eq!(out, r#"{"id_str":"1"}"#);
        let deep = r#"{"id_str":"1","quoted_status":{"id_str":"2","quoted_status":{"id_str":"3","quoted_status":{"id_str":"4","quoted_status":{"id_str":"5"}}}}}"#;
        let (_, out) = run(deep, &judge);
        assert!(!out.contains("\"5\""), "deeper than MAX_EMBED_DEPTH: {out}");
    }

    #[test]
    fn v2_tweets_users_and_what_only_a_removed_tweet_referred_to() {
        let json = r#"{"data":{"id":"400","geo":{"place_id":"pA"},"attachments":{"media_keys":["m1"]},"referenced_tweets":[{"type":"quoted","id":"500"}]},"includes":{"tweets":[{"id":"500","text":"gone","geo":{"place_id":"pB"},"attachments":{"media_keys":["m2"],"poll_ids":["q1"]}},{"id":"600","text":"kept"}],"users":[{"id":"4"},{"id":"5"},{"name":"no id"}],"places":[{"id":"pA"},{"id":"pB"}],"media":[{"media_key":"m1"},{"media_key":"m2"}],"polls":[{"id":"q1"}]}}"#;
        let (changed, out) = run(json, &Fixed { hide: vec![500], no_geo: vec![], users_hidden: vec![5] });
        assert!(changed);
        assert_eq!(
            out,
            r#"{"data":{"id":"400","geo":{"place_id":"pA"},"attachments":{"media_keys":["m1"]},"referenced_tweets":[{"type":"quoted","id":"500"}]},"includes":{"tweets":[{"id":"600","text":"kept"}],"users":[{"id":"4"}],"places":[{"id":"pA"}],"media":[{"media_key":"m1"}],"polls":[]}}"#
        );
        let (_, out) = run(json, &Fixed { hide: vec![], no_geo: vec![500], users_hidden: vec![] });
        assert!(!out.contains("pB"), "the scrubbed tweet's place goes with its geo: {out}");
        assert!(out.contains("m2"), "its media stay: {out}");
    }

    #[test]
    fn withdrawn_copies_leave_their_carriers_and_their_embedded_ids() {
        // 40 retweets quote 30, which quotes 20 (deleted); 50 is kept.
        let json = r#"{"id_str":"40","user":{"id_str":"4"},"retweeted_status":{"id_str":"30","user":{"id_str":"3"},"text":"q","quoted_status_id_str":"20","quoted_status":{"id_str":"20","user":{"id_str":"2"},"text":"gone words","quoted_status":{"id_str":"10","user":{"id_str":"1"},"text":"deeper"}}}}"#;
        let post = parse_post_line(json).unwrap().pop().unwrap();
        assert_eq!(post.embeds.posts, vec![30, 20, 10]);
        assert_eq!(tracked_copies(&post.embeds, post.retweet_of).collect::<Vec<_>>(), vec![20, 10]);
        let gone = |ids: &[Id]| Withdrawn { tombstones: ids.iter().copied().collect(), ..Withdrawn::default() };
        assert_eq!(without_withdrawn(&post, &gone(&[50])), None, "nothing it carries is a tombstone");
        let kept = without_withdrawn(&post, &gone(&[20])).unwrap();
        assert!(!kept.json.contains("gone words") && !kept.json.contains("deeper"), "{}", kept.json);
        assert!(kept.json.contains(r#""quoted_status_id_str":"20""#), "ids stay: {}", kept.json);
        assert_eq!(kept.embeds.posts, vec![30], "the copies inside the hidden one went with it");
        assert_eq!((kept.id, kept.retweet_of, &kept.form), (post.id, post.retweet_of, &post.form));
        // v2: the included tweet goes, with the place only it referred to.
        let v2 = r#"{"data":{"id":"70","author_id":"7","text":"mine"},"includes":{"tweets":[{"id":"60","author_id":"6","text":"gone v2 words","geo":{"place_id":"p6"}}],"places":[{"id":"p6","full_name":"Gonetown"}]}}"#;
        let post = parse_post_line(v2).unwrap().pop().unwrap();
        let kept = without_withdrawn(&post, &gone(&[60])).unwrap();
        assert!(!kept.json.contains("gone v2 words") && !kept.json.contains("Gonetown"), "{}", kept.json);
        assert!(kept.embeds.posts.is_empty());
        // A scrubbed author's copy stays, without its geo and the place only
        // it referred to.
        let scrubbed = Withdrawn { scrubbed: [60].into(), ..Withdrawn::default() };
        let kept = without_withdrawn(&post, &scrubbed).unwrap();
        assert!(kept.json.contains("gone v2 words") && !kept.json.contains("Gonetown"), "{}", kept.json);
        assert_eq!(kept.embeds.posts, vec![60]);
        assert_eq!(without_withdrawn(&kept, &scrubbed), None, "once is enough");
        // A purged user's profile goes; the others stay.
        let v2 = r#"{"data":{"id":"80","author_id":"8","text":"hi @a @b"},"includes":{"users":[{"id":"5","name":"purged profile"},{"id":"6","name":"kept profile"}]}}"#;
        let post = parse_post_line(v2).unwrap().pop().unwrap();
        assert_eq!(tracked_users(&post.embeds).collect::<Vec<_>>(), vec![5, 6]);
        let kept = without_withdrawn(&post, &Withdrawn { purged_users: [5].into(), ..Withdrawn::default() }).unwrap();
        assert!(!kept.json.contains("purged profile") && kept.json.contains("kept profile"), "{}", kept.json);
        assert_eq!(kept.embeds.users, vec![6]);
    }
}
