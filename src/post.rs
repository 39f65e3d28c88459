//! Posts as they are imported into the dataset: X API v1.1 / enterprise
//! "original format" objects, and X API v2 objects (wrapped in `{"data":...}`
//! or bare). A post's JSON may carry other posts (v1.1 `retweeted_status`,
//! `quoted_status`, at any depth; v2 `includes.tweets`) and users (v2
//! `includes.users`): importing it stores each embedded post as a post of its
//! own, and records the ids of everything embedded so that every read path
//! can remove what is no longer visible (docs: README, "What the rules are").

use crate::event::{parse_id_str, Id, ParseError, ParseErrorKind, WireId};
use serde::de;
use serde::Deserialize;
use serde_json::value::RawValue;

/// How deep embedded posts are followed (a retweet of a quote of a quote is
/// depth 3). Whatever lies deeper is never stored, and every read path
/// removes it ([`crate::rules::embedded`]).
pub const MAX_EMBED_DEPTH: usize = 4;

/// Where a stored post's JSON came from. A post's own import line beats a
/// copy embedded in another post: the merge never lets a copy replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    /// A copy carried inside another post (`retweeted_status`,
    /// `quoted_status`, `includes.tweets`).
    Embedded,
    /// The object of an import line of its own.
    TopLevel,
}

impl Form {
    /// The storage form (a small integer column).
    pub fn as_i64(self) -> i64 {
        match self {
            Form::Embedded => 0,
            Form::TopLevel => 1,
        }
    }

    /// From the storage form; anything but 0 is a top-level object (rows
    /// stored before the column existed were written by their own line).
    pub fn from_i64(v: i64) -> Form {
        if v == 0 {
            Form::Embedded
        } else {
            Form::TopLevel
        }
    }
}

/// The ids of the posts and users a post's JSON carries, at any depth. An
/// embedded object whose id cannot be read is listed as id 0, which is never
/// stored, so that every read path looks at it (and removes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Embeds {
    pub posts: Vec<Id>,
    pub users: Vec<Id>,
}

impl Embeds {
    pub fn is_empty(&self) -> bool {
        self.posts.is_empty() && self.users.is_empty()
    }

    fn add_post(&mut self, id: Id) {
        if !self.posts.contains(&id) {
            self.posts.push(id);
        }
    }

    fn add_user(&mut self, id: Id) {
        if !self.users.contains(&id) {
            self.users.push(id);
        }
    }

    /// Adds everything `other` lists.
    pub fn extend(&mut self, other: &Embeds) {
        for p in &other.posts {
            self.add_post(*p);
        }
        for u in &other.users {
            self.add_user(*u);
        }
    }

    /// The storage form: post ids, then `;` and user ids when there are any
    /// (`100,200;5`); `None` when nothing is embedded.
    pub fn to_column(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let join = |v: &[Id]| v.iter().map(Id::to_string).collect::<Vec<_>>().join(",");
        Some(if self.users.is_empty() {
            join(&self.posts)
        } else {
            format!("{};{}", join(&self.posts), join(&self.users))
        })
    }

    /// From the storage form. A part that is not an id (never written) reads
    /// as id 0, so the row is still looked at on every read.
    pub fn from_column(text: Option<&str>) -> Embeds {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Embeds::default();
        };
        let (posts, users) = text.split_once(';').unwrap_or((text, ""));
        let ids =
            |s: &str| -> Vec<Id> { s.split(',').filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(0)).collect() };
        Embeds { posts: ids(posts), users: ids(users) }
    }
}

/// One post ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub id: Id,
    pub author_id: Id,
    /// The post this one retweets, if it is a retweet.
    pub retweet_of: Option<Id>,
    /// The post this one quotes, if it is a quote.
    pub quote_of: Option<Id>,
    /// The post's own JSON holds geo data (`coordinates`, `geo` or `place`;
    /// v2 `data.geo` or `includes.places`). Embedded posts' geo is theirs.
    pub has_geo: bool,
    /// Its own import line, or a copy carried by another post.
    pub form: Form,
    /// What the JSON carries of other posts and users.
    pub embeds: Embeds,
    /// The JSON object, byte for byte.
    pub json: String,
}

#[derive(Deserialize)]
struct UserRef {
    id: Option<WireId>,
    id_str: Option<WireId>,
}

/// The keys X itself sends in a `referenced_tweets` entry and in a mention:
/// any other key is an expansion merged in (twarc's flattened files), which
/// import lists and every answer judges.
pub const REF_KEYS: [&str; 2] = ["type", "id"];
pub const MENTION_KEYS: [&str; 4] = ["start", "end", "username", "id"];

/// A v2 `referenced_tweets` entry or mention, read in one pass: its `type`
/// and `id` where they read as X sends them, and whether it has a key
/// outside what X sends there (`sent`: [`REF_KEYS`], [`MENTION_KEYS`]), which
/// makes it an expansion. What is not an object reads as nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    kind: Option<RefKind>,
    id: Option<Id>,
    expanded: bool,
}

/// What a `referenced_tweets` entry's `type` says, as far as import cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Retweeted,
    Quoted,
    Other,
}

impl Entry {
    /// An object that cannot be read this way (a key with a lone
    /// surrogate escape, which the answers read as U+FFFD) is taken for an
    /// expansion whose id cannot be read: listed as 0, so that every answer
    /// judges it.
    fn of(raw: &RawValue, sent: &[&str]) -> Entry {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        de::Deserializer::deserialize_map(&mut de, EntrySeed(sent))
            .unwrap_or_else(|_| Entry { expanded: raw.get().starts_with('{'), ..Entry::default() })
    }
}

/// A `referenced_tweets` entry, raw, and what [`Entry`] reads of it.
struct Ref<'a> {
    raw: &'a RawValue,
    entry: Entry,
}

fn de_refs<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<Vec<Ref<'de>>>, D::Error> {
    let raws: Option<Vec<&'de RawValue>> = Deserialize::deserialize(d)?;
    Ok(raws.map(|raws| raws.into_iter().map(|raw| Ref { raw, entry: Entry::of(raw, &REF_KEYS) }).collect()))
}

/// Reads an [`Entry`], given the keys X sends there.
struct EntrySeed<'s>(&'s [&'s str]);

/// Which of an entry's keys: `type`, `id`, another that X sends, or one it
/// does not.
enum EntryKey {
    Type,
    Id,
    Sent,
    Other,
}

impl<'de> de::Visitor<'de> for EntrySeed<'_> {
    type Value = Entry;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let mut e = Entry::default();
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            match key {
                EntryKey::Type => e.kind = ref_kind(map.next_value()?),
                EntryKey::Id => e.id = raw_id(map.next_value()?),
                EntryKey::Sent | EntryKey::Other => {
                    e.expanded |= matches!(key, EntryKey::Other);
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(e)
    }
}

struct KeySeed<'s>(&'s [&'s str]);

impl<'de> de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = EntryKey;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<EntryKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for KeySeed<'_> {
    type Value = EntryKey;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, k: &str) -> Result<EntryKey, E> {
        Ok(match k {
            _ if !self.0.contains(&k) => EntryKey::Other,
            "type" => EntryKey::Type,
            "id" => EntryKey::Id,
            _ => EntryKey::Sent,
        })
    }
}

/// What a `type` value says: none unless it is a string.
fn ref_kind(raw: &RawValue) -> Option<RefKind> {
    Some(match &*string_value(raw)? {
        "retweeted" => RefKind::Retweeted,
        "quoted" => RefKind::Quoted,
        _ => RefKind::Other,
    })
}

/// An id value read as the answers read it from a tree (a string of
/// digits, or a number as long as it is an exact unsigned integer); none
/// otherwise.
fn raw_id(raw: &RawValue) -> Option<Id> {
    match string_value(raw) {
        Some(s) => parse_id_str(&s).ok(),
        None => serde_json::from_str::<u64>(raw.get()).ok(),
    }
}

/// The text of a raw JSON string, unescaped; none for any other value. A
/// string no tree could hold as written (a lone surrogate escape, which the
/// answers read as U+FFFD) reads as empty: neither a `type` import knows
/// nor an id, instead of failing the whole entry.
fn string_value(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let s = raw.get();
    let plain = s.strip_prefix('"')?.strip_suffix('"')?;
    Some(match plain.contains('\\') {
        false => plain.into(),
        true => serde_json::from_str::<String>(s).unwrap_or_default().into(),
    })
}

/// A `note_tweet` (a long post's full text), as far as its mentions.
#[derive(Deserialize)]
struct NoteTweet<'a> {
    #[serde(borrow, default)]
    entities: Option<&'a RawValue>,
}

/// A v2 `entities`: its `mentions`, each a user that twarc's flattened
/// files merge in (with their `name` at least).
#[derive(Deserialize)]
struct Entities<'a> {
    #[serde(borrow, default)]
    mentions: Vec<&'a RawValue>,
}

/// The fields of either format that import needs. Sub-objects are kept raw.
#[derive(Deserialize)]
struct WirePost<'a> {
    // v1.1
    id: Option<WireId>,
    id_str: Option<WireId>,
    user: Option<UserRef>,
    #[serde(borrow)]
    retweeted_status: Option<&'a RawValue>,
    #[serde(borrow)]
    quoted_status: Option<&'a RawValue>,
    quoted_status_id_str: Option<WireId>,
    quoted_status_id: Option<WireId>,
    #[serde(borrow)]
    coordinates: Option<&'a RawValue>,
    #[serde(borrow)]
    place: Option<&'a RawValue>,
    // both
    #[serde(borrow)]
    geo: Option<&'a RawValue>,
    // v2
    author_id: Option<WireId>,
    #[serde(borrow, default, deserialize_with = "de_refs")]
    referenced_tweets: Option<Vec<Ref<'a>>>,
    // twarc's flattened v2 (expansions merged into the post)
    #[serde(borrow)]
    in_reply_to_user: Option<&'a RawValue>,
    #[serde(borrow)]
    entities: Option<&'a RawValue>,
    #[serde(borrow)]
    note_tweet: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    includes: Option<Includes<'a>>,
    // complyd's like record: {"like":{"user_id":"..","tweet_id":".."}}
    like: Option<LikeRef>,
}

#[derive(Deserialize)]
struct LikeRef {
    user_id: WireId,
    tweet_id: WireId,
}

/// A like: user `user_id` liked post `post_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLike {
    pub user_id: Id,
    pub post_id: Id,
}

/// What one import line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportItem {
    /// A post, and the posts embedded in it first.
    Posts(Vec<NewPost>),
    Like(NewLike),
}

/// Parses one import line: a post (see [`parse_post_line`]) or a like record
/// `{"like":{"user_id":"..","tweet_id":".."}}`.
///
/// # Errors
/// As [`parse_post_line`].
pub fn parse_import_line(line: &str) -> Result<ImportItem, ParseError> {
    if line.trim_start().starts_with("{\"like\"") {
        let w: WirePost = serde_json::from_str(line).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
        if let Some(l) = w.like {
            return Ok(ImportItem::Like(NewLike { user_id: l.user_id.0, post_id: l.tweet_id.0 }));
        }
    }
    parse_post_line(line).map(ImportItem::Posts)
}

#[derive(Deserialize)]
struct Includes<'a> {
    #[serde(borrow, default)]
    tweets: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    users: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    places: Option<&'a RawValue>,
}

/// Just an object's `id` (v2 users and tweets), read leniently.
#[derive(Deserialize)]
struct JustId {
    id: Option<WireId>,
}

fn is_present(v: Option<&RawValue>) -> bool {
    matches!(v, Some(r) if r.get() != "null" && r.get() != "{}" && r.get() != "[]")
}

fn bad(kind: ParseErrorKind, detail: impl Into<String>) -> ParseError {
    ParseError::new(kind, detail)
}

fn wire(json: &str) -> Result<WirePost<'_>, ParseError> {
    serde_json::from_str(json).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data if e.to_string().starts_with("bad_id") => ParseErrorKind::BadId,
            serde_json::error::Category::Data => ParseErrorKind::BadPayload,
            _ => ParseErrorKind::InvalidJson,
        };
        bad(kind, e.to_string())
    })
}

/// Parses one import line into the posts it stores: every post embedded in
/// it (deepest first), then the post itself. A blank line gives nothing.
///
/// A retweet's embedded original must be a post (it is what the retweet
/// shows); a quoted copy or a v2 `includes.tweets` entry that lacks an id or
/// author is not stored (its id is still listed in [`NewPost::embeds`], so
/// that reads remove it unless the post is stored from elsewhere).
///
/// # Errors
/// A [`ParseError`] when the line is not JSON, or lacks an id or author.
pub fn parse_post_line(line: &str) -> Result<Vec<NewPost>, ParseError> {
    if line.trim().is_empty() {
        return Ok(Vec::new());
    }
    let w = wire(line)?;
    check_editable(line)?;
    let mut out = Vec::with_capacity(2);
    if let Some(data) = w.data {
        // v2 wrapped: {"data":{...},"includes":{"tweets":[...],"users":[...]}}
        check_envelope(line)?;
        let inner: WirePost =
            serde_json::from_str(data.get()).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
        let mut post = v2_post(&inner, line, Form::TopLevel)?;
        v2_carried(&inner, &mut post.embeds, 0, &mut out);
        if let Some(inc) = &w.includes {
            post.has_geo |= is_present(inc.places);
            for t in &inc.tweets {
                match serde_json::from_str::<WirePost>(t.get()) {
                    Ok(tw) => {
                        // What it carries is judged wherever it is kept,
                        // so listed whether or not it is stored.
                        let mut inner = Embeds::default();
                        v2_carried(&tw, &mut inner, 1, &mut out);
                        match v2_post(&tw, t.get(), Form::Embedded) {
                            // Stored, its row is judged like any post's.
                            Ok(mut embedded) => {
                                post.embeds.add_post(embedded.id);
                                embedded.embeds = inner.clone();
                                out.push(embedded);
                            }
                            // No author: not stored, but listed so reads remove it.
                            Err(_) => post.embeds.add_post(tw.id.map_or(0, |i| i.0)),
                        }
                        post.embeds.extend(&inner);
                    }
                    Err(_) => post.embeds.add_post(0),
                }
            }
            for u in &inc.users {
                let id = serde_json::from_str::<JustId>(u.get()).ok().and_then(|j| j.id).map_or(0, |i| i.0);
                post.embeds.add_user(id);
            }
        }
        out.push(post);
        return Ok(out);
    }
    if w.author_id.is_some() && w.user.is_none() {
        let mut post = v2_post(&w, line, Form::TopLevel)?;
        v2_carried(&w, &mut post.embeds, 0, &mut out);
        out.push(post);
        return Ok(out);
    }
    // v1.1 / original format.
    let post = v1_tree(&w, line, Form::TopLevel, 0, &mut out)?;
    out.push(post);
    Ok(out)
}

/// What a schema move does with one stored row ([`relisted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relisted {
    /// The row lists all its JSON carries: nothing to do.
    Listed,
    /// Import these again: what the JSON carries, then the row's own post
    /// in the row's form.
    Again(Vec<NewPost>),
    /// The JSON no longer reads as a post (an earlier import took shapes
    /// today's refuses): store this `embeds` column, which lists it as
    /// unreadable (0), so that every answer judges it.
    Unreadable(String),
}

/// What today's import makes of a stored row of `form` whose `embeds`
/// column is `stored`: import it again when its JSON carries something the
/// row does not list (or always, with `every`). A schema move runs this
/// over every row, so that a store written by an import that read fewer
/// shapes lists what a fresh import of the same lines lists: an unlisted
/// copy is one no later delete would take out.
pub fn relisted(json: &str, stored: Option<&str>, form: Form, every: bool) -> Relisted {
    let mut row = Embeds::from_column(stored);
    let Ok(mut posts) = parse_post_line(json) else {
        if row.posts.contains(&0) {
            return Relisted::Listed;
        }
        row.add_post(0);
        return Relisted::Unreadable(row.to_column().unwrap_or_default());
    };
    let Some(own) = posts.last_mut() else { return Relisted::Listed };
    own.form = form;
    let now = &own.embeds;
    let unlisted = now.posts.iter().any(|p| !row.posts.contains(p)) || now.users.iter().any(|u| !row.users.contains(u));
    if every || unlisted {
        Relisted::Again(posts)
    } else {
        Relisted::Listed
    }
}

/// What a v2 post object at `depth` carries, in either format: every stored
/// post's JSON is judged for both formats' copies
/// (`rules::embedded::filter`), so import lists both. A v1.1 post's own
/// copies are read by [`v1_tree`], which adds the v2 ones.
fn v2_carried(w: &WirePost, embeds: &mut Embeds, depth: usize, out: &mut Vec<NewPost>) {
    v2_expanded(w, embeds, depth, out);
    v1_copies(w, embeds, depth, out);
}

/// v1.1's `retweeted_status` and `quoted_status` in a v2 post at `depth`:
/// listed (and stored when they read as posts), never failing the line.
fn v1_copies(w: &WirePost, embeds: &mut Embeds, depth: usize, out: &mut Vec<NewPost>) {
    for child in [w.retweeted_status, w.quoted_status].into_iter().flatten().filter(|c| is_present(Some(c))) {
        if depth + 1 >= MAX_EMBED_DEPTH {
            embeds.add_post(0);
            continue;
        }
        let Ok(c) = wire(child.get()) else {
            embeds.add_post(0);
            continue;
        };
        match v1_tree(&c, child.get(), Form::Embedded, depth + 1, out) {
            Ok(copy) => {
                embeds.add_post(copy.id);
                embeds.extend(&copy.embeds);
                out.push(copy);
            }
            Err(_) => unstored_v1_copy(&c, embeds, depth + 1, out),
        }
    }
}

/// A v1.1 copy at `depth` that import cannot store (no author, a bad id):
/// listed as [`unstored_copy`], with what it carries in either format, so
/// that a post withdrawn inside it is taken out of the carrier's stored
/// JSON too (the answers hide the whole copy).
fn unstored_v1_copy(c: &WirePost, embeds: &mut Embeds, depth: usize, out: &mut Vec<NewPost>) {
    unstored_copy(embeds, v1_id(c));
    v2_carried(c, embeds, depth, out);
}

/// A v1.1 object's id: `id_str`, else `id`.
fn v1_id(w: &WirePost) -> Option<Id> {
    w.id_str.as_ref().or(w.id.as_ref()).map(|i| i.0)
}

/// A copy that is not stored: listed by its id, and as unreadable (0), since
/// what it carries in turn is not listed: every answer then judges it.
fn unstored_copy(embeds: &mut Embeds, id: Option<Id>) {
    embeds.add_post(0);
    if let Some(id) = id {
        embeds.add_post(id);
    }
}

/// What twarc's flattened v2 files merge into a post (`w`): the posts it
/// refers to, expanded in its `referenced_tweets` (pushed to `out` when
/// they name their author, each after the posts expanded in it, and listed
/// in `embeds` either way, with what is expanded in them), and the users
/// expanded in its
/// `in_reply_to_user` and `entities.mentions`, listed in `embeds`. Nothing
/// for a plain v2 post.
fn v2_expanded(w: &WirePost, embeds: &mut Embeds, depth: usize, out: &mut Vec<NewPost>) {
    for Ref { raw, entry } in w.referenced_tweets.iter().flatten().filter(|r| r.entry.expanded) {
        let id = entry.id;
        let copy = (depth + 1 < MAX_EMBED_DEPTH).then(|| serde_json::from_str::<WirePost>(raw.get()).ok()).flatten();
        let (Some(id), Some(cw)) = (id, copy) else {
            // Unreadable (or too deep): every answer cuts it back; its id,
            // when readable, still finds it when that post is withdrawn.
            unstored_copy(embeds, id);
            continue;
        };
        embeds.add_post(id);
        // What is expanded in the copy is carried too, whether or not the
        // copy names its author (and is stored).
        let mut inner = Embeds::default();
        v2_carried(&cw, &mut inner, depth + 1, out);
        embeds.extend(&inner);
        if let Ok(mut embedded) = v2_post(&cw, raw.get(), Form::Embedded) {
            embedded.embeds = inner;
            out.push(embedded);
        }
    }
    if let Some(u) = w.in_reply_to_user.filter(|u| is_present(Some(u))) {
        let id = serde_json::from_str::<JustId>(u.get()).ok().and_then(|j| j.id).map_or(0, |i| i.0);
        embeds.add_user(id);
    }
    let note = match w.note_tweet.filter(|n| is_present(Some(n))).map(|n| serde_json::from_str::<NoteTweet>(n.get())) {
        Some(Ok(n)) => n.entities,
        // Not read as X sends it (a key twice, say): the answers judge
        // what they find.
        Some(Err(_)) => {
            embeds.add_user(0);
            None
        }
        None => None,
    };
    for entities in w.entities.into_iter().chain(note) {
        let Ok(e) = serde_json::from_str::<Entities>(entities.get()) else {
            // Not read as X sends it: the answers judge what they find.
            embeds.add_user(0);
            continue;
        };
        for m in e.mentions.iter().map(|m| Entry::of(m, &MENTION_KEYS)).filter(|m| m.expanded) {
            embeds.add_user(m.id.unwrap_or(0));
        }
    }
}

/// A v1.1 post and, pushed to `out` first, the posts embedded in it.
fn v1_tree(w: &WirePost, json: &str, form: Form, depth: usize, out: &mut Vec<NewPost>) -> Result<NewPost, ParseError> {
    let mut post = v1_post(w, json, form)?;
    post.quote_of = w.quoted_status_id_str.as_ref().or(w.quoted_status_id.as_ref()).map(|i| i.0);
    if let Some(rt) = w.retweeted_status.filter(|r| is_present(Some(r))) {
        if depth + 1 >= MAX_EMBED_DEPTH {
            post.embeds.add_post(0);
        } else {
            let orig = wire(rt.get()).map_err(|e| bad(ParseErrorKind::BadPayload, e.detail))?;
            let original = v1_tree(&orig, rt.get(), Form::Embedded, depth + 1, out)?;
            post.retweet_of = Some(original.id);
            post.embeds.add_post(original.id);
            post.embeds.extend(&original.embeds);
            out.push(original);
        }
    }
    if let Some(qs) = w.quoted_status.filter(|q| is_present(Some(q))) {
        let quoted = if depth + 1 >= MAX_EMBED_DEPTH { None } else { wire(qs.get()).ok() };
        match quoted.map(|q| (v1_tree(&q, qs.get(), Form::Embedded, depth + 1, out), q)) {
            Some((Ok(copy), _)) => {
                post.quote_of = post.quote_of.or(Some(copy.id));
                post.embeds.add_post(copy.id);
                post.embeds.extend(&copy.embeds);
                out.push(copy);
            }
            // Not storable (no author, bad id): listed, so reads remove it.
            Some((Err(_), q)) => unstored_v1_copy(&q, &mut post.embeds, depth + 1, out),
            // Too deep, or not an object.
            None => post.embeds.add_post(0),
        }
    }
    // Expansions in twarc's form, which the answers judge in any post.
    v2_expanded(w, &mut post.embeds, depth, out);
    Ok(post)
}

fn v1_post(w: &WirePost, json: &str, form: Form) -> Result<NewPost, ParseError> {
    let id = v1_id(w).ok_or_else(|| bad(ParseErrorKind::MissingField, "post has no id_str or id"))?;
    never_zero(id)?;
    let author_id = w
        .user
        .as_ref()
        .and_then(|u| u.id_str.as_ref().or(u.id.as_ref()))
        .map(|i| i.0)
        .ok_or_else(|| bad(ParseErrorKind::MissingField, format!("post {id} has no user.id_str")))?;
    let has_geo = is_present(w.coordinates) || is_present(w.geo) || is_present(w.place);
    Ok(NewPost {
        id,
        author_id,
        retweet_of: None,
        quote_of: None,
        has_geo,
        form,
        embeds: Embeds::default(),
        json: json.to_owned(),
    })
}

fn v2_post(w: &WirePost, json: &str, form: Form) -> Result<NewPost, ParseError> {
    let id = w.id.as_ref().map(|i| i.0).ok_or_else(|| bad(ParseErrorKind::MissingField, "v2 post has no id"))?;
    never_zero(id)?;
    let author_id = w
        .author_id
        .as_ref()
        .map(|i| i.0)
        .ok_or_else(|| bad(ParseErrorKind::MissingField, format!("v2 post {id} has no author_id")))?;
    let refs = w.referenced_tweets.iter().flatten().map(|r| &r.entry);
    let linked = |kind: RefKind| refs.clone().filter(|r| r.kind == Some(kind)).find_map(|r| r.id);
    Ok(NewPost {
        id,
        author_id,
        retweet_of: linked(RefKind::Retweeted),
        quote_of: linked(RefKind::Quoted),
        has_geo: is_present(w.geo),
        form,
        embeds: Embeds::default(),
        json: json.to_owned(),
    })
}

/// Refuses post id 0, which X never gives: it stands for an embedded copy
/// whose id cannot be read ([`Embeds`]), so it is never stored.
fn never_zero(id: Id) -> Result<(), ParseError> {
    if id == 0 {
        return Err(bad(ParseErrorKind::BadId, "post id 0 (no post has it)"));
    }
    Ok(())
}

const GEO_KEYS: [&str; 3] = ["coordinates", "geo", "place"];

/// Removes `coordinates`, `geo` and `place` from one post object; says
/// whether there was any.
pub fn remove_geo_keys(v: &mut serde_json::Value) -> bool {
    v.as_object_mut().is_some_and(remove_geo_keys_from)
}

/// [`remove_geo_keys`] for an object already in hand.
pub fn remove_geo_keys_from(o: &mut serde_json::Map<String, serde_json::Value>) -> bool {
    let mut removed = false;
    for k in GEO_KEYS {
        removed |= o.shift_remove(k).is_some();
    }
    removed
}

/// Removes a post's own geo from its parsed JSON (`coordinates`, `geo`,
/// `place`; v2 `data.geo` and `includes.places`); says whether there was
/// any. The geo of the posts it embeds is theirs ([`crate::rules::embedded`]).
pub fn remove_own_geo(v: &mut serde_json::Value) -> bool {
    let mut removed = remove_geo_keys(v);
    if let Some(data) = v.get_mut("data") {
        removed |= remove_geo_keys(data);
    }
    if let Some(inc) = v.get_mut("includes").and_then(|i| i.as_object_mut()) {
        removed |= inc.shift_remove("places").is_some();
    }
    removed
}

/// Returns `json` without the post's own geo ([`remove_own_geo`]); JSON
/// that holds none comes back byte for byte. `None` when the members to
/// edit cannot be read as a tree ([`edit_tree`]; import never stores such
/// JSON): the caller
/// keeps the post's geo flag, so that every answer still removes the geo or
/// withholds the post.
pub fn strip_own_geo(json: &str) -> Option<String> {
    edit_tree(json, remove_own_geo).or_stored(json)
}

/// The nesting serde_json reads a tree to (it stops at 128 levels).
const MAX_TREE_DEPTH: usize = 127;

/// Digits a number may have without being read as a tree first (f64 ends
/// at about 1.8e308).
const MAX_PLAIN_DIGITS: usize = 300;

/// A stored post's JSON as a tree, for every step that takes something out
/// of it (the answers, the maintenance pass, import). A lone UTF-16
/// surrogate escape (`\ud83d` without its other half, as a text cut inside
/// an emoji has), which serde_json refuses in a tree though it reads the
/// rest of the line, is read as U+FFFD. `None` only for what
/// [`check_editable`] refuses at import.
pub fn json_tree(json: &str) -> Option<serde_json::Value> {
    match serde_json::from_str(json) {
        Ok(v) => Some(v),
        Err(_) => serde_json::from_str(&replace_lone_surrogates(json)?).ok(),
    }
}

/// The members of a post object that a step taking content out of it may
/// read or change: its own geo ([`remove_own_geo`]), v2's `data` and
/// `includes`, v1.1's embedded posts, and what twarc's flattened files
/// merge in ([`crate::rules::embedded::filter`]). [`edit_tree`] reads only
/// these as a tree.
pub const EDITED_KEYS: [&str; 12] = [
    "coordinates",
    "geo",
    "place",
    "data",
    "includes",
    "retweeted_status",
    "quoted_status",
    "quoted_status_permalink",
    "referenced_tweets",
    "in_reply_to_user",
    "entities",
    "note_tweet",
];

/// What [`edit_tree`] made of a post's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    /// The edit changed nothing: the stored bytes stand.
    Unchanged,
    Changed(String),
    /// What the edit must read cannot be read as a tree ([`json_tree`]).
    Unreadable,
}

impl Edited {
    /// The JSON to show or keep: the edited one, `stored` when nothing
    /// changed, none when unreadable.
    pub fn or_stored(self, stored: &str) -> Option<String> {
        match self {
            Edited::Unchanged => Some(stored.to_owned()),
            Edited::Changed(edited) => Some(edited),
            Edited::Unreadable => None,
        }
    }
}

/// Applies `edit` (which says whether it changed anything) to a post's
/// JSON read as a tree, and writes what it leaves. Only the members named
/// in [`EDITED_KEYS`] are read as a tree, into an object of their own that
/// `edit` gets; every other member is written as stored, byte for byte, in
/// its place. A post that is not an object, or that repeats one of those
/// members, is read whole instead.
pub fn edit_tree<E: FnOnce(&mut serde_json::Value) -> bool>(json: &str, edit: E) -> Edited {
    let whole = |edit: E| {
        let Some(mut v) = json_tree(json) else { return Edited::Unreadable };
        if !edit(&mut v) {
            return Edited::Unchanged;
        }
        serde_json::to_string(&v).map_or(Edited::Unreadable, Edited::Changed)
    };
    let Ok(Members(members)) = serde_json::from_str::<Members>(json) else { return whole(edit) };
    let mut partial = serde_json::Map::new();
    for (k, raw) in members.iter().filter(|(k, _)| EDITED_KEYS.contains(&k.as_str())) {
        let Some(v) = json_tree(raw.get()) else { return Edited::Unreadable };
        if partial.insert(k.clone(), v).is_some() {
            return whole(edit);
        }
    }
    let mut tree = serde_json::Value::Object(partial);
    if !edit(&mut tree) {
        return Edited::Unchanged;
    }
    let serde_json::Value::Object(edited) = tree else { return Edited::Unreadable };
    let mut out = String::with_capacity(json.len());
    for (k, raw) in &members {
        let value = match EDITED_KEYS.contains(&k.as_str()) {
            false => std::borrow::Cow::Borrowed(raw.get()),
            true => match edited.get(k).map(serde_json::to_string) {
                Some(Ok(v)) => std::borrow::Cow::Owned(v),
                Some(Err(_)) => return Edited::Unreadable,
                None => continue,
            },
        };
        out.push(if out.is_empty() { '{' } else { ',' });
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(&value);
    }
    if out.is_empty() {
        out.push('{');
    }
    out.push('}');
    Edited::Changed(out)
}

/// A JSON object's members in order, their values raw.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// `json` with every lone surrogate escape replaced by `\ufffd`; `None`
/// when it has none. A backslash only occurs inside strings in JSON, so
/// the escapes are found without following the strings.
fn replace_lone_surrogates(json: &str) -> Option<String> {
    fn unit(b: &[u8], at: usize) -> Option<u32> {
        let hex = b.get(at..at + 4).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
        u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    }
    const HIGH: std::ops::Range<u32> = 0xD800..0xDC00;
    const LOW: std::ops::Range<u32> = 0xDC00..0xE000;
    let b = json.as_bytes();
    let (mut out, mut copied, mut i) = (None::<String>, 0, 0);
    while let Some(k) = b.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + k;
        i = at + 2;
        if b.get(at + 1) != Some(&b'u') {
            continue;
        }
        let Some(u) = unit(b, at + 2) else { continue };
        i = at + 6;
        let paired = HIGH.contains(&u)
            && b.get(at + 6..at + 8) == Some(b"\\u")
            && unit(b, at + 8).is_some_and(|l| LOW.contains(&l));
        if paired {
            i = at + 12;
        } else if HIGH.contains(&u) || LOW.contains(&u) {
            let o = out.get_or_insert_with(|| String::with_capacity(json.len()));
            o.push_str(&json[copied..at]);
            o.push_str("\\ufffd");
            copied = at + 6;
        }
    }
    let mut o = out?;
    o.push_str(&json[copied..]);
    Some(o)
}

/// What a v2 line may hold beside `data`: X's envelope and twarc's
/// `__twarc`. Import lists, and the rules edit, only what `data` and
/// `includes` carry; a post copy beside them (a v1.1 `quoted_status`, a
/// flattened `referenced_tweets`) would stay in the store and the export
/// whatever became of it, so such a line is refused.
const V2_ENVELOPE: &[&str] = &["data", "includes", "errors", "meta", "matching_rules", "__twarc"];

fn check_envelope(line: &str) -> Result<(), ParseError> {
    let members: std::collections::HashMap<std::borrow::Cow<'_, str>, de::IgnoredAny> =
        serde_json::from_str(line).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
    let mut other: Vec<&str> = members.keys().map(AsRef::as_ref).filter(|k| !V2_ENVELOPE.contains(k)).collect();
    if other.is_empty() {
        return Ok(());
    }
    other.sort_unstable();
    Err(bad(
        ParseErrorKind::BadPayload,
        format!(
            "a v2 line holds {other:?} beside \"data\"; complyd keeps compliant only what \"data\" and \"includes\" carry (X's envelope: includes, errors, meta, matching_rules; twarc's __twarc), so it does not store this line"
        ),
    ))
}

/// Refuses a post line that no step could take withdrawn content out of:
/// one serde_json reads in the parts import uses but not as a tree (a
/// number beyond f64's range, nesting deeper than 127 levels). One pass
/// over the bytes; only a line with an exponent, a very long number or
/// deep nesting is read as a tree to be sure.
fn check_editable(line: &str) -> Result<(), ParseError> {
    let b = line.as_bytes();
    let (mut depth, mut deepest, mut digits, mut longest, mut exponent) = (0usize, 0usize, 0usize, 0usize, false);
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        i += 1;
        match c {
            b'"' => {
                // To the string's closing quote, over its escapes.
                while let Some(k) = b.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                    i += k + 1;
                    if b[i - 1] == b'"' {
                        break;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'e' | b'E' if digits > 0 => exponent = true,
            _ => {}
        }
        digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
        longest = longest.max(digits);
    }
    if (exponent || longest > MAX_PLAIN_DIGITS || deepest > MAX_TREE_DEPTH) && json_tree(line).is_none() {
        let why = serde_json::from_str::<serde_json::Value>(line).err().map_or_else(String::new, |e| e.to_string());
        return Err(bad(
            ParseErrorKind::BadPayload,
            format!("not stored: complyd could not take withdrawn content out of this JSON later ({why})"),
        ));
    }
    Ok(())
}

/// `json` with every geo key removed at every depth (and v2
/// `includes.places`): what two forms of one post are compared on, so that
/// the choice between them does not depend on whether a `scrub_geo` came
/// before or after either import.
pub fn without_any_geo(json: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                for k in GEO_KEYS {
                    o.shift_remove(k);
                }
                if let Some(inc) = o.get_mut("includes").and_then(|i| i.as_object_mut()) {
                    inc.shift_remove("places");
                }
                o.values_mut().for_each(walk);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Some(mut v) = json_tree(json) else {
        return json.to_owned();
    };
    walk(&mut v);
    serde_json::to_string(&v).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_post_prefers_id_str_and_finds_geo() {
        let line = r#"{"id":1557445923210514400,"id_str":"1557445923210514432","user":{"id":5,"id_str":"5"},"text":"hi\nthere","coordinates":{"type":"Point","coordinates":[1,2]},"geo":null,"place":null}"#;
        let posts = parse_post_line(line).unwrap();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].id, 1557445923210514432);
        assert_eq!(posts[0].author_id, 5);
        assert!(posts[0].has_geo);
        assert_eq!(posts[0].json, line);
    }

    #[test]
    fn v1_retweet_stores_the_embedded_original_too() {
        let line = r#"{"id_str":"20","user":{"id_str":"2"},"retweeted_status":{"id_str":"10","user":{"id_str":"1"},"place":{"name":"Oslo"}}}"#;
        let posts = parse_post_line(line).unwrap();
        assert_eq!(posts.len(), 2);
        assert_eq!((posts[0].id, posts[0].author_id, posts[0].retweet_of, posts[0].has_geo), (10, 1, None, true));
        assert_eq!((posts[1].id, posts[1].author_id, posts[1].retweet_of), (20, 2, Some(10)));
        assert_eq!(posts[0].json, r#"{"id_str":"10","user":{"id_str":"1"},"place":{"name":"Oslo"}}"#);
    }

    #[test]
    fn v2_wrapped_and_bare() {
        let wrapped = r#"{"data":{"id":"30","author_id":"3","text":"x","referenced_tweets":[{"type":"retweeted","id":"10"}]},"includes":{"tweets":[{"id":"10","author_id":"1","geo":{"place_id":"p"}}]}}"#;
        let posts = parse_post_line(wrapped).unwrap();
        assert_eq!(posts.len(), 2);
        assert_eq!((posts[0].id, posts[0].author_id, posts[0].has_geo), (10, 1, true));
        assert_eq!((posts[1].id, posts[1].author_id, posts[1].retweet_of), (30, 3, Some(10)));
        let bare = r#"{"id":"31","author_id":"3","geo":{"place_id":"p"}}"#;
        let posts = parse_post_line(bare).unwrap();
        assert_eq!((posts[0].id, posts[0].has_geo, posts[0].retweet_of), (31, true, None));
    }

    #[test]
    fn quotes_and_retweets_of_quotes_store_every_embedded_post_deepest_first() {
        // 30 retweets 20, which quotes 10 (ids above 2^53 in the quote link).
        let line = r#"{"id_str":"30","user":{"id_str":"3"},"retweeted_status":{"id_str":"20","user":{"id_str":"2"},"quoted_status_id_str":"1557433858676740098","quoted_status":{"id_str":"1557433858676740098","user":{"id_str":"1"},"coordinates":[1,2]}}}"#;
        let posts = parse_post_line(line).unwrap();
        let q = 1557433858676740098;
        let got: Vec<_> = posts.iter().map(|p| (p.id, p.author_id, p.retweet_of, p.quote_of, p.form)).collect();
        assert_eq!(
            got,
            vec![
                (q, 1, None, None, Form::Embedded),
                (20, 2, None, Some(q), Form::Embedded),
                (30, 3, Some(20), None, Form::TopLevel)
            ]
        );
        assert!(posts[0].has_geo && !posts[1].has_geo && !posts[2].has_geo, "geo belongs to the post that has it");
        assert_eq!(posts[2].embeds, Embeds { posts: vec![20, q], users: vec![] });
        assert_eq!(posts[1].embeds, Embeds { posts: vec![q], users: vec![] });
    }

    #[test]
    fn a_quoted_copy_that_cannot_be_stored_is_still_listed() {
        let line = r#"{"id_str":"30","user":{"id_str":"3"},"quoted_status_id_str":"10","quoted_status":{"id_str":"10","text":"no user"}}"#;
        let posts = parse_post_line(line).unwrap();
        assert_eq!(posts.len(), 1);
        // With 0 too: what the copy carries in turn is not listed, so every
        // answer must judge it (found by fuzzing import_line).
        assert_eq!((posts[0].quote_of, posts[0].embeds.posts.clone()), (Some(10), vec![0, 10]));
        let no_id = r#"{"id_str":"31","user":{"id_str":"3"},"quoted_status":{"text":"no id"}}"#;
        assert_eq!(parse_post_line(no_id).unwrap()[0].embeds.posts, vec![0]);
    }

    #[test]
    fn a_post_lists_the_copies_of_either_format_it_carries() {
        // The answers judge both formats' copies in any post: a v1.1 post's
        // twarc-style expansions, a bare v2 post's v1.1 copies (found by
        // fuzzing import_line).
        let v1 = r#"{"id_str":"20","user":{"id_str":"2"},"in_reply_to_user":{"id":"7","name":"Seven"},"referenced_tweets":[{"type":"quoted","id":"8","text":"t","author_id":"9"}]}"#;
        let posts = parse_post_line(v1).unwrap();
        assert_eq!(posts.iter().map(|p| p.id).collect::<Vec<_>>(), vec![8, 20]);
        assert_eq!(posts[1].embeds, Embeds { posts: vec![8], users: vec![7] });
        let v2 = r#"{"id":"30","author_id":"3","quoted_status":{"id_str":"10","user":{"id_str":"1"},"quoted_status":{"id_str":"5","text":"no user"}},"retweeted_status":{"text":"no id"}}"#;
        let posts = parse_post_line(v2).unwrap();
        assert_eq!(posts.iter().map(|p| p.id).collect::<Vec<_>>(), vec![10, 30]);
        assert_eq!(posts[1].embeds.posts, vec![0, 10, 5], "the unreadable retweet, the copy, what it carries");
        assert_eq!(
            (posts[1].quote_of, posts[1].retweet_of),
            (None, None),
            "a v2 post's links are its referenced_tweets"
        );
    }

    #[test]
    fn v2_includes_store_every_tweet_with_an_author_and_list_the_users() {
        let line = r#"{"data":{"id":"40","author_id":"4","referenced_tweets":[{"type":"quoted","id":"50"},{"type":"replied_to","id":"60"}]},"includes":{"tweets":[{"id":"50","author_id":"5"},{"id":"60","text":"no author_id asked for"}],"users":[{"id":"4"},{"id":"5"}]}}"#;
        let posts = parse_post_line(line).unwrap();
        let got: Vec<_> = posts.iter().map(|p| (p.id, p.author_id, p.quote_of, p.form)).collect();
        assert_eq!(got, vec![(50, 5, None, Form::Embedded), (40, 4, Some(50), Form::TopLevel)]);
        assert_eq!(posts[1].embeds, Embeds { posts: vec![50, 60], users: vec![4, 5] });
    }

    #[test]
    fn a_row_is_relisted_only_when_it_lists_less_than_its_json_carries() {
        let line = r#"{"data":{"id":"40","author_id":"4","referenced_tweets":[{"type":"quoted","id":"50"}]},"includes":{"tweets":[{"id":"50","author_id":"5"}],"users":[{"id":"5"}]}}"#;
        let full = parse_post_line(line).unwrap().last().unwrap().embeds.to_column();
        assert_eq!(full.as_deref(), Some("50;5"));
        let top = Form::TopLevel;
        assert_eq!(relisted(line, full.as_deref(), top, false), Relisted::Listed, "listed as import lists it");
        assert_eq!(relisted(line, Some("50,99;5,6"), top, false), Relisted::Listed, "more is never a leak");
        assert_eq!(relisted(line, full.as_deref(), top, true), Relisted::Again(parse_post_line(line).unwrap()));
        for less in [None, Some("50"), Some(";5"), Some("51;5")] {
            let again = relisted(line, less, top, false);
            assert_eq!(again, Relisted::Again(parse_post_line(line).unwrap()), "{less:?} misses a copy");
        }
        // A copy's row keeps its form.
        let Relisted::Again(posts) = relisted(line, None, Form::Embedded, false) else { panic!("a copy lists less") };
        assert_eq!(posts.last().map(|p| (p.id, p.form)), Some((40, Form::Embedded)));
        let plain = r#"{"id_str":"7","user":{"id_str":"1"},"text":"plain"}"#;
        assert_eq!(relisted(plain, None, top, false), Relisted::Listed, "carries nothing");
        // JSON today's import refuses is listed as unreadable, once.
        assert_eq!(relisted("not json", Some("9;3"), top, false), Relisted::Unreadable("9,0;3".into()));
        assert_eq!(relisted("not json", None, top, false), Relisted::Unreadable("0".into()));
        assert_eq!(relisted("not json", Some("9,0"), top, false), Relisted::Listed);
    }

    #[test]
    fn embeds_column_round_trip() {
        for e in [
            Embeds::default(),
            Embeds { posts: vec![1, u64::MAX], users: vec![] },
            Embeds { posts: vec![], users: vec![7] },
            Embeds { posts: vec![2], users: vec![3, 4] },
        ] {
            assert_eq!(Embeds::from_column(e.to_column().as_deref()), e);
        }
        assert_eq!(Embeds::from_column(Some("x")).posts, vec![0], "garbage still makes the row looked at");
    }

    #[test]
    fn without_any_geo_is_the_same_before_and_after_a_scrub() {
        let line = r#"{"id_str":"20","coordinates":[1],"user":{"id_str":"2"},"quoted_status":{"id_str":"10","place":{"b":2}}}"#;
        let scrubbed = strip_own_geo(line).unwrap();
        assert_ne!(scrubbed, line);
        assert_eq!(without_any_geo(line), without_any_geo(&scrubbed));
        assert!(!without_any_geo(line).contains("place"));
        let plain = r#"{"id_str":"1", "text":"spaces kept"}"#;
        assert_eq!(strip_own_geo(plain).unwrap(), plain, "nothing to remove: the same bytes");
    }

    #[test]
    fn bad_posts_are_errors() {
        assert_eq!(parse_post_line("{nope").unwrap_err().kind, ParseErrorKind::InvalidJson);
        assert_eq!(parse_post_line(r#"{"id_str":"1"}"#).unwrap_err().kind, ParseErrorKind::MissingField);
        assert_eq!(parse_post_line(r#"{"id_str":"x1","user":{"id":1}}"#).unwrap_err().kind, ParseErrorKind::BadId);
        assert!(parse_post_line("  ").unwrap().is_empty());
        // 0 stands for a copy whose id cannot be read: never a stored post.
        for zero in [r#"{"id_str":"0","user":{"id_str":"9"}}"#, r#"{"data":{"id":"0","author_id":"9"}}"#] {
            assert_eq!(parse_post_line(zero).unwrap_err().kind, ParseErrorKind::BadId, "{zero}");
        }
        let quote = r#"{"id_str":"5","user":{"id_str":"9"},"quoted_status":{"id_str":"0","user":{"id_str":"9"}}}"#;
        let posts = parse_post_line(quote).unwrap();
        assert_eq!((posts.len(), &posts[0].embeds.posts), (1, &vec![0]), "the copy is listed as unreadable");
    }

    #[test]
    fn strip_own_geo_leaves_embedded_copies_and_keeps_key_order() {
        let line = r#"{"id_str":"20","coordinates":[1],"user":{"id_str":"2"},"retweeted_status":{"id_str":"10","geo":{"a":1},"place":{"b":2}}}"#;
        let own = strip_own_geo(line).unwrap();
        assert_eq!(
            own,
            r#"{"id_str":"20","user":{"id_str":"2"},"retweeted_status":{"id_str":"10","geo":{"a":1},"place":{"b":2}}}"#
        );
    }

    #[test]
    fn a_text_cut_inside_an_emoji_can_still_lose_its_geo() {
        // `\ud83d` without its other half: serde_json reads the line's parts
        // but refuses it in a tree.
        let line = r#"{"id_str":"10","user":{"id_str":"1"},"text":"cut \ud83d","place":{"full_name":"Oslo"}}"#;
        assert!(serde_json::from_str::<serde_json::Value>(line).is_err(), "the case this test is about");
        let posts = parse_post_line(line).unwrap();
        assert!(posts[0].has_geo);
        let stripped = strip_own_geo(line).unwrap();
        assert!(!stripped.contains("Oslo"), "{stripped}");
        assert_eq!(stripped, r#"{"id_str":"10","user":{"id_str":"1"},"text":"cut \ud83d"}"#, "the text as stored");
        let cut_place = r#"{"id_str":"10","user":{"id_str":"1"},"place":{"full_name":"Oslo \ud83d"}}"#;
        assert_eq!(strip_own_geo(cut_place).unwrap(), r#"{"id_str":"10","user":{"id_str":"1"}}"#);
        // Pairs, escaped backslashes and other escapes are left alone.
        let fine = r#"{"t":"\ud83d\ude00 \\ud83d \u00e9 \n","l":"\udc00x\ud800"}"#;
        assert_eq!(
            replace_lone_surrogates(fine).unwrap(),
            r#"{"t":"\ud83d\ude00 \\ud83d \u00e9 \n","l":"\ufffdx\ufffd"}"#
        );
        assert_eq!(replace_lone_surrogates(r#"{"t":"\ud83d\ude00"}"#), None);
    }

    #[test]
    fn a_post_no_step_could_edit_is_refused_at_import_and_only_that() {
        let refused = [
            // A number beyond f64 in a field import does not read.
            r#"{"id_str":"10","user":{"id_str":"1"},"x":1e400}"#.to_owned(),
            format!(r#"{{"id_str":"10","user":{{"id_str":"1"}},"x":{}}}"#, "9".repeat(400)),
            // Nesting deeper than serde_json reads a tree.
            format!(r#"{{"id_str":"10","user":{{"id_str":"1"}},"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200)),
        ];
        for line in &refused {
            let e = parse_post_line(line).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadPayload, "{line}");
            assert!(e.detail.contains("withdrawn content"), "{}", e.detail);
        }
        let kept = [
            r#"{"id_str":"10","user":{"id_str":"1"},"x":1e300,"y":"1e400 in a string","z":true,"w":false}"#.to_owned(),
            format!(r#"{{"id_str":"10","user":{{"id_str":"1"}},"x":{}1{}}}"#, "[".repeat(100), "]".repeat(100)),
            format!(r#"{{"id_str":"10","user":{{"id_str":"1"}},"x":"{}"}}"#, "[".repeat(300)),
        ];
        for line in &kept {
            assert_eq!(parse_post_line(line).unwrap().len(), 1, "{line}");
        }
    }

    #[test]
    fn a_twarc_flattened_post_lists_what_is_expanded_in_it() {
        let line = r#"{"id":"300","author_id":"3","text":"t","referenced_tweets":[{"type":"quoted","id":"200","text":"q","author_id":"2","referenced_tweets":[{"type":"retweeted","id":"100","text":"deep","author_id":"1"}]},{"type":"replied_to","id":"150","text":"no author asked for","entities":{"mentions":[{"start":0,"end":1,"username":"nine","id":"9","name":"Nine"}]}},{"type":"replied_to","id":"160"},{"type":"quoted","id":"x7","text":"unreadable id"},{"type":"quoted","id":"170","author_id":"u1","text":"bad author"},{"type":"quoted","id":"180","text":null,"author":{"name":"no text"}}],"note_tweet":{"text":"long","entities":{"mentions":[{"start":0,"end":2,"username":"ten","id":"10","name":"Ten"}]}},"in_reply_to_user":{"id":"4","name":"Four"},"entities":{"mentions":[{"start":0,"end":2,"username":"five","id":"5","name":"Five"},{"start":3,"end":5,"username":"six","id":"6"}]},"author":{"id":"3","name":"Three"}}"#;
        let posts = parse_post_line(line).unwrap();
        let ids: Vec<Id> = posts.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![100, 200, 300], "the copies that name their author are stored, deepest first");
        let top = posts.last().unwrap();
        // Any key X does not send makes an expansion; one that cannot be read
        // is listed as unreadable (0), with its id when that can be read.
        assert_eq!(top.embeds.posts, vec![200, 100, 150, 0, 170, 180], "an unexpanded reference is not a copy");
        // A copy that is not stored still lists what is expanded in it (found
        // by the property test).
        assert_eq!(top.embeds.users, vec![9, 4, 5, 10], "a mention as X sends it is not a copy");
        assert_eq!((top.quote_of, top.retweet_of), (Some(200), None));
        assert_eq!(posts[1].retweet_of, Some(100));
        assert_eq!(posts[1].form, Form::Embedded);
    }

    #[test]
    fn a_reference_or_mention_is_read_whatever_its_keys_and_values_hold() {
        let read = |s: &str, sent: &[&str]| Entry::of(&RawValue::from_string(s.into()).unwrap(), sent);
        let entry = |kind, id, expanded| Entry { kind, id, expanded };
        let big = 1_500_000_000_000_000_001;
        // As X sends it, the id above 2^53 read exactly either way.
        assert_eq!(
            read(r#"{"type":"quoted","id":"1500000000000000001"}"#, &REF_KEYS),
            entry(Some(RefKind::Quoted), Some(big), false)
        );
        assert_eq!(
            read(r#"{"id":1500000000000000001,"type":"retweeted"}"#, &REF_KEYS),
            entry(Some(RefKind::Retweeted), Some(big), false)
        );
        // An escaped key is the key it spells.
        assert_eq!(
            read(r#"{"\u0074ype":"replied_to","id":"5"}"#, &REF_KEYS),
            entry(Some(RefKind::Other), Some(5), false)
        );
        // Any other key makes an expansion, whatever its value holds.
        assert_eq!(
            read(r#"{"type":"quoted","id":"5","text":{"id":"6","n":[1,{"id":"x"}]}}"#, &REF_KEYS),
            entry(Some(RefKind::Quoted), Some(5), true)
        );
        // A value not as X sends it reads as none, and the rest is still read.
        assert_eq!(read(r#"{"type":7,"id":"x7","name":"N"}"#, &REF_KEYS), entry(None, None, true));
        assert_eq!(read(r#"{"id":-5,"type":null}"#, &REF_KEYS), entry(None, None, false));
        assert_eq!(read(r#"{"id":1.5e18,"type":["quoted"]}"#, &REF_KEYS), entry(None, None, false));
        assert_eq!(
            read(r#"{"id":{"id":"5"},"type":"quoted","author":{}}"#, &REF_KEYS),
            entry(Some(RefKind::Quoted), None, true)
        );
        // In a mention, `type` is not a key X sends.
        assert_eq!(
            read(r#"{"start":0,"end":3,"username":"abc","id":"9"}"#, &MENTION_KEYS),
            entry(None, Some(9), false)
        );
        assert_eq!(read(r#"{"start":0,"type":"quoted","id":"9"}"#, &MENTION_KEYS), entry(None, Some(9), true));
        // A lone surrogate escape (a text cut inside an emoji), which the
        // answers read as U+FFFD: in a value, the rest is still read; in a
        // key, the entry is an expansion whose id cannot be read.
        assert_eq!(
            read(r#"{"type":"quoted\ud83d","id":"100","text":"t"}"#, &REF_KEYS),
            entry(Some(RefKind::Other), Some(100), true)
        );
        assert_eq!(
            read(r#"{"start":0,"username":"two","id":"2\ud83d","name":"Two"}"#, &MENTION_KEYS),
            entry(None, None, true)
        );
        assert_eq!(read(r#"{"type":"quoted","id":"5","\ud83d":1}"#, &REF_KEYS), entry(None, None, true));
        assert_eq!(
            read(r#"{"type":"quoted","id":"5","n":{"\ud83d":"\udc00x"}}"#, &REF_KEYS),
            entry(Some(RefKind::Quoted), Some(5), true)
        );
        // Escaped digits are the id they spell.
        assert_eq!(
            read(r#"{"type":"\u0071uoted","id":"\u0031\u0030"}"#, &REF_KEYS),
            entry(Some(RefKind::Quoted), Some(10), false)
        );
        // Not an object: nothing.
        for s in ["[1]", r#""s""#, "null", "3"] {
            assert_eq!(read(s, &REF_KEYS), Entry::default(), "{s}");
        }
        // An expanded copy whose type cannot be read is still listed by id.
        let line = r#"{"id":"1","author_id":"2","referenced_tweets":[{"type":"quoted\ud83d","id":"100","text":"words of 100","author_id":"3"}]}"#;
        assert_eq!(parse_post_line(line).unwrap().last().unwrap().embeds.posts, vec![100]);
        // A reference whose id cannot be read does not hide the next one.
        let line = r#"{"id":"1","author_id":"2","referenced_tweets":[{"type":"quoted","id":"bad"},{"type":"quoted","id":"7"}]}"#;
        assert_eq!(parse_post_line(line).unwrap()[0].quote_of, Some(7));
    }

    #[test]
    fn an_edit_rewrites_only_the_members_it_may_change() {
        let drop_quote = |v: &mut serde_json::Value| {
            let Some(o) = v.as_object_mut() else { return false };
            o.shift_remove("quoted_status").is_some() | o.shift_remove("quoted_status_permalink").is_some()
        };
        // Other members keep their bytes (escapes, spaces), in their places.
        let json = r#"{"quoted_status":{"id_str":"1","text":"gone"},"id_str":"2", "text":"caf\u00e9 \ud83d","user":{"id_str":"3" },"quoted_status_permalink":{"url":"u"},"n":1.0}"#;
        assert_eq!(
            edit_tree(json, drop_quote),
            Edited::Changed(r#"{"id_str":"2","text":"caf\u00e9 \ud83d","user":{"id_str":"3" },"n":1.0}"#.into())
        );
        assert_eq!(edit_tree(r#"{"id_str":"2"}"#, drop_quote), Edited::Unchanged);
        assert_eq!(edit_tree(r#"{"quoted_status":{}}"#, drop_quote), Edited::Changed("{}".into()));
        // A member no edit reads need not be readable as a tree; one it reads must be.
        let deep = format!(r#"{{"quoted_status":{{}},"user":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(matches!(edit_tree(&deep, drop_quote), Edited::Changed(s) if s.starts_with(r#"{"user":[[["#)));
        let deep_quote = format!(r#"{{"quoted_status":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(edit_tree(&deep_quote, drop_quote), Edited::Unreadable);
        // A repeated member is read with the whole post, as serde_json reads it (the last one).
        let twice = r#"{"quoted_status":{"text":"a"},"id_str":"2","quoted_status":{"text":"b"}}"#;
        let keep_text = |v: &mut serde_json::Value| {
            v["id_str"] = "9".into();
            true
        };
        assert_eq!(
            edit_tree(twice, keep_text),
            Edited::Changed(r#"{"quoted_status":{"text":"b"},"id_str":"9"}"#.into())
        );
        // Not an object: read whole.
        assert_eq!(edit_tree("[1]", drop_quote), Edited::Unchanged);
    }
}
