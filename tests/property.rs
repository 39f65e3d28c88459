//! Property: for random datasets and random event sets, the final export is
//! the same for any arrival order, any batching, with any event duplicated,
//! for any order of the import lines, with any of them imported twice, and
//! whether the posts were imported before or after the events, and when an
//! earlier complyd wrote the store (its import listing none of the copies
//! the posts carry) and today's opens it (the schema move).
//!
//! And the export never shows what may not be shown (rules.md, "Embedded
//! content"): the words of a post that is not visible in that country, the
//! profile of a user whose state hides them there, or a place its author
//! scrubbed; not in the post's own line, and not in a copy embedded in
//! another post (a v1.1 `retweeted_status` or `quoted_status` at any depth,
//! a v2 `includes.tweets` or `includes.users` entry). Every post carries its
//! own text `TXT-<id>-END` (and `PLACE-<id>-END` when it has geo), every
//! user in a v2 `includes.users` the profile `NAME-<user>-END`, so a leak is
//! a marker found in an exported line.
//!
//! Nor does the store itself keep the words of a post that became a
//! tombstone (deleted, retweeting a deleted post, or its author purged), a
//! place its author scrubbed, or a purged user's profile: every stored
//! post's JSON is searched for them, copies included.
//!
//! Toggle events get distinct event times: with equal times the rules let the
//! later arrival win, which is order-dependent by definition.

mod common;
use common::{Backend, PgSchema};
use complyd::event::{parse_line, Country, EventKind, Message, StatusEvents};
use complyd::post::parse_post_line;
use complyd::rules::visibility::{user_hides, visible};
use complyd::store::{self, Store, Timed};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

const DAY: i64 = 24 * 3600 * 1000;
const COUNTRIES: [&str; 4] = ["DE", "FR", "XX", "XY"];
/// Users are 1 to USERS.
const USERS: u64 = 4;

/// What a post is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// A retweet of this earlier post, which is never a retweet itself (X
    /// retweets the original).
    Retweet(u64),
    /// A quote of this earlier post (of any kind).
    Quote(u64),
}

#[derive(Debug, Clone)]
struct Post {
    id: u64,
    author: u64,
    geo: bool,
    kind: Kind,
    /// Its own line is X API v2 (`{"data":..,"includes":..}`), else v1.1.
    v2: bool,
    /// Its own line is in the dataset. When not, the post comes only as
    /// copies embedded in other posts and as a bare v2 object.
    own_line: bool,
    /// Also imported as a bare v2 object (no referenced_tweets, no geo): a
    /// poorer top-level form than its own line.
    bare: bool,
    /// Its text ends in half of an emoji (`\ud83d`), as a text cut there
    /// does: serde_json reads the line but not as a tree.
    cut: bool,
    /// Its v2 line's `includes.tweets` entry does not name the author (a
    /// request without `tweet.fields=author_id`).
    anonymous_copy: bool,
    /// Its v2 line is as twarc's `flatten` writes it: the post it refers to
    /// and the users merged into it, no `includes`. Its v1.1 line mixes the
    /// formats: each copy in it carries the post it refers to as twarc
    /// merges it in (the shapes an import before SQLite schema 8 did not
    /// list).
    flat: bool,
}

#[derive(Debug, Clone)]
struct Dataset {
    /// Ids 100, 101, ... in order.
    posts: Vec<Post>,
}

fn dataset() -> impl Strategy<Value = Dataset> {
    let post = (
        1u64..=USERS,
        any::<bool>(),
        0u8..6,
        any::<prop::sample::Index>(),
        any::<bool>(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.4),
    );
    prop::collection::vec(post, 4..14).prop_map(|raw| {
        let mut posts: Vec<Post> = Vec::with_capacity(raw.len());
        for (i, (author, geo, kind, target, v2, own_line, bare, cut, anonymous_copy, flat)) in
            raw.into_iter().enumerate()
        {
            let kind = match kind {
                _ if i == 0 => Kind::Plain,
                3 => {
                    let t = &posts[target.index(i)];
                    Kind::Retweet(match t.kind {
                        Kind::Retweet(original) => original,
                        _ => t.id,
                    })
                }
                4 | 5 => Kind::Quote(posts[target.index(i)].id),
                _ => Kind::Plain,
            };
            // A retweet has no geo of its own.
            let geo = geo && !matches!(kind, Kind::Retweet(_));
            let bare = bare || !own_line;
            posts.push(Post { id: 100 + i as u64, author, geo, kind, v2, own_line, bare, cut, anonymous_copy, flat });
        }
        Dataset { posts }
    })
}

impl Post {
    /// What its text ends with: half of an emoji when [`Post::cut`].
    fn cut_end(&self) -> &'static str {
        if self.cut {
            r" \ud83d"
        } else {
            ""
        }
    }
}

impl Dataset {
    fn post(&self, id: u64) -> &Post {
        &self.posts[(id - 100) as usize]
    }

    /// The v1.1 object of `p`. `full`: as its own line sends it, with what
    /// it embeds (the retweeted post in full, the quoted post as a copy);
    /// else a copy as found inside another post, which carries ids only,
    /// or when `mixed` the post it refers to as twarc merges it in.
    fn v1(&self, p: &Post, full: bool, mixed: bool) -> String {
        let mut s = format!(
            r#"{{"id_str":"{}","user":{{"id_str":"{}"}},"text":"TXT-{}-END{}""#,
            p.id,
            p.author,
            p.id,
            p.cut_end()
        );
        if p.geo {
            s += &format!(
                r#","coordinates":{{"type":"Point","coordinates":[1.5,2.5]}},"place":{{"name":"PLACE-{}-END"}}"#,
                p.id
            );
        }
        match p.kind {
            Kind::Plain => {}
            Kind::Retweet(o) => {
                if full {
                    let original = self.post(o);
                    s += &format!(r#","retweeted_status":{}"#, self.v1(original, true, mixed));
                    // As X sends a retweet of a quote: the quote is copied
                    // at the top level too.
                    if let Kind::Quote(q) = original.kind {
                        s += &format!(
                            r#","quoted_status_id_str":"{q}","quoted_status":{}"#,
                            self.v1(self.post(q), false, mixed)
                        );
                    }
                }
            }
            Kind::Quote(q) => {
                s += &format!(r#","quoted_status_id_str":"{q}""#);
                if full {
                    s += &format!(r#","quoted_status":{}"#, self.v1(self.post(q), false, mixed));
                }
            }
        }
        if !full && mixed {
            s += &self.flat_ref(p, true, 1);
        }
        s.push('}');
        s
    }

    /// The v2 object of `p`, as `data` or as an `includes.tweets` entry
    /// (which may not name its author).
    fn v2(&self, p: &Post, with_author: bool) -> String {
        let mut s = format!(r#"{{"id":"{}""#, p.id);
        if with_author {
            s += &format!(r#","author_id":"{}""#, p.author);
        }
        s += &format!(r#","text":"TXT-{}-END{}""#, p.id, p.cut_end());
        if p.geo {
            s += &format!(r#","geo":{{"place_id":"PLACE-{}-END"}}"#, p.id);
        }
        match p.kind {
            Kind::Plain => {}
            Kind::Retweet(r) => s += &format!(r#","referenced_tweets":[{{"type":"retweeted","id":"{r}"}}]"#),
            Kind::Quote(r) => s += &format!(r#","referenced_tweets":[{{"type":"quoted","id":"{r}"}}]"#),
        }
        s.push('}');
        s
    }

    /// `p`'s own v2 line: the post it refers to expanded in
    /// `includes.tweets`, and in `includes.users` the authors of both and
    /// one mentioned user.
    fn v2_line(&self, p: &Post) -> String {
        let refs: Vec<&Post> = match p.kind {
            Kind::Plain => vec![],
            Kind::Retweet(r) | Kind::Quote(r) => vec![self.post(r)],
        };
        let mut users = vec![p.author];
        for u in refs.iter().map(|r| r.author).chain([p.author % USERS + 1]) {
            if !users.contains(&u) {
                users.push(u);
            }
        }
        let tweets: Vec<String> = refs.iter().map(|r| self.v2(r, !p.anonymous_copy)).collect();
        let users: Vec<String> = users.iter().map(|u| format!(r#"{{"id":"{u}","name":"NAME-{u}-END"}}"#)).collect();
        format!(
            r#"{{"data":{},"includes":{{"tweets":[{}],"users":[{}]}}}}"#,
            self.v2(p, true),
            tweets.join(","),
            users.join(",")
        )
    }

    /// `p` as twarc's `flatten` writes it (`depth` 0: its own line): the
    /// post it refers to merged into its `referenced_tweets` entry (with
    /// what is merged into that one), its author in `author`, and one
    /// mentioned user merged into `entities.mentions`. A copy that does not
    /// name its author has no `author` either.
    fn flat(&self, p: &Post, with_author: bool, depth: usize) -> String {
        let mut s = format!(r#"{{"id":"{}""#, p.id);
        if with_author {
            s += &format!(r#","author_id":"{a}","author":{{"id":"{a}","name":"NAME-{a}-END"}}"#, a = p.author);
        }
        s += &format!(r#","text":"TXT-{}-END{}""#, p.id, p.cut_end());
        if p.geo {
            s += &format!(r#","geo":{{"place_id":"p{id}","full_name":"PLACE-{id}-END"}}"#, id = p.id);
        }
        let m = p.author % USERS + 1;
        s += &format!(
            r#","entities":{{"mentions":[{{"start":0,"end":2,"username":"u{m}","id":"{m}","name":"NAME-{m}-END"}}]}}"#
        );
        s += &self.flat_ref(p, !p.anonymous_copy, depth);
        s.push('}');
        s
    }

    /// The `referenced_tweets` member of `p` (at `depth`) as twarc's
    /// `flatten` writes it: the post it refers to merged in, up to depth 2.
    fn flat_ref(&self, p: &Post, with_author: bool, depth: usize) -> String {
        let (Kind::Retweet(r) | Kind::Quote(r)) = p.kind else {
            return String::new();
        };
        let kind = if matches!(p.kind, Kind::Retweet(_)) { "retweeted" } else { "quoted" };
        let mut s = format!(r#","referenced_tweets":[{{"type":"{kind}","id":"{r}""#);
        if depth < 2 {
            let copy = self.flat(self.post(r), with_author, depth + 1);
            // The entry is the copy with `type` in front of its id.
            let id = format!(r#"{{"id":"{r}""#);
            s += &copy[id.len()..copy.len() - 1];
        }
        s + "}]"
    }

    /// Every import line: each post's own line, and its bare form.
    fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        for p in &self.posts {
            if p.own_line {
                v.push(match (p.v2, p.flat) {
                    (true, true) => self.flat(p, true, 0),
                    (true, false) => self.v2_line(p),
                    (false, mixed) => self.v1(p, true, mixed),
                });
            }
            if p.bare {
                v.push(format!(r#"{{"id":"{}","author_id":"{}","text":"TXT-{}-END"}}"#, p.id, p.author, p.id));
            }
        }
        v
    }
}

/// One event, as a wire line, from (kind, post index, user, country, extra).
fn event_line(kind: u8, post: u64, user: u64, cc: &str, t: i64) -> String {
    let st = |k: &str| {
        format!(
            r#"{{"{k}":{{"status":{{"id":{post},"id_str":"{post}","user_id_str":"{user}"}},"timestamp_ms":"{t}"}}}}"#
        )
    };
    let us = |k: &str| format!(r#"{{"{k}":{{"id":{user},"timestamp_ms":"{t}"}}}}"#);
    match kind {
        0 => st("delete"),
        1 => format!(
            r#"{{"status_withheld":{{"status":{{"id_str":"{post}"}},"withheld_in_countries":["{cc}"],"timestamp_ms":"{t}"}}}}"#
        ),
        2 => st("drop"),
        3 => st("undrop"),
        4 => format!(
            r#"{{"tweet_edit":{{"id":"{}","edit_tweet_ids":["{post}","{}"],"timestamp_ms":"{t}"}}}}"#,
            post + 1,
            post + 1
        ),
        5 => us("user_delete"),
        6 => us("user_undelete"),
        7 => us("user_protect"),
        8 => us("user_unprotect"),
        9 => us("user_suspend"),
        10 => us("user_unsuspend"),
        11 => format!(
            r#"{{"user_withheld":{{"user":{{"id":{user}}},"withheld_in_countries":["{cc}"],"timestampMs":"{t}"}}}}"#
        ),
        _ => format!(r#"{{"scrub_geo":{{"user_id":{user},"up_to_status_id_str":"{post}","timestamp_ms":"{t}"}}}}"#),
    }
}

fn events() -> impl Strategy<Value = Vec<String>> {
    // Times spread over 60 days back from now, so purges happen or not.
    let now = chrono::Utc::now().timestamp_millis();
    prop::collection::vec((0u8..13, 100u64..115, 1u64..=4, 0usize..4, 0i64..60 * DAY), 0..40).prop_map(move |evs| {
        evs.into_iter()
            .enumerate()
            // distinct times: the index breaks ties
            .map(|(i, (k, p, u, c, dt))| event_line(k, p, u, COUNTRIES[c], now - 60 * DAY + dt + i as i64))
            .collect()
    })
}

fn apply(store: &mut dyn Store, lines: &[String], chunk: usize) {
    for part in lines.chunks(chunk.max(1)) {
        let mut status = StatusEvents::default();
        let mut user = Vec::new();
        for l in part {
            match parse_line(l.as_bytes()).expect("generated lines parse") {
                Message::Event(e) => match e.kind {
                    EventKind::Status(s) => status.push(Timed { time_ms: e.time_ms, event: s }),
                    EventKind::User(u) => user.push(Timed { time_ms: e.time_ms, event: u }),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        store.apply_status(&status, &[]).unwrap();
        store.apply_user(&user, &[]).unwrap();
    }
}

fn import(store: &mut dyn Store, lines: &[String], chunk: usize, now: i64) {
    for part in lines.chunks(chunk.max(1)) {
        let posts: Vec<_> = part.iter().flat_map(|l| parse_post_line(l).unwrap()).collect();
        store.import(&posts, &[], now).unwrap();
    }
}

/// A pseudo-random permutation of `items`, with the items `dup_mask` picks
/// repeated.
fn shuffle(items: &[String], seed: u64, dup_mask: u64) -> Vec<String> {
    let mut keyed: Vec<(u64, usize)> = (0..items.len())
        .map(|i| (seed.rotate_left(i as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ i as u64), i))
        .collect();
    keyed.sort();
    let mut out = Vec::with_capacity(items.len() * 2);
    for (n, (_, i)) in keyed.into_iter().enumerate() {
        out.push(items[i].clone());
        if dup_mask >> (n % 64) & 1 == 1 {
            out.push(items[i].clone());
        }
    }
    out
}

/// Where the stores of one test case live.
struct Place<'a> {
    backend: Backend,
    dir: &'a std::path::Path,
}

/// How one store is built.
struct Build<'a> {
    name: &'a str,
    /// The import lines, in their order, `import_chunk` lines per import.
    lines: &'a [String],
    import_chunk: usize,
    /// The events, in their order, `event_chunk` per batch.
    events: &'a [String],
    event_chunk: usize,
    import_first: bool,
    /// The store as an earlier complyd left it: its import listed none of
    /// the copies the posts carry (so the events' maintenance took none
    /// out), then today's complyd opens it (the schema move).
    earlier: bool,
}

/// What the export in `country` must not show (see the top of the file):
/// one description per leak.
fn leaks(store: &mut dyn Store, data: &Dataset, country: Option<&str>, now: i64, export: &str) -> Vec<String> {
    let cc = country.map(|c| Country::parse(c).unwrap());
    let mut found = Vec::new();
    let mut leak = |marker: String, why: String| {
        for line in export.lines().filter(|l| l.contains(marker.as_str())) {
            found.push(format!("{why}, but {marker} shows in {line}"));
        }
    };
    let mut shown = Vec::new();
    for p in &data.posts {
        let facts = store.facts(p.id).unwrap();
        if visible(&facts, cc, now) {
            shown.push(p.id);
        } else {
            leak(format!("TXT-{}-END", p.id), format!("post {} is not visible in {country:?}", p.id));
        }
        if p.geo && store.user_state(p.author).unwrap().geo_scrubbed(p.id) {
            leak(format!("PLACE-{}-END", p.id), format!("user {} scrubbed the geo of post {}", p.author, p.id));
        }
    }
    for user in 1..=USERS {
        if user_hides(&store.user_state(user).unwrap(), cc, now) {
            leak(format!("NAME-{user}-END"), format!("user {user} is hidden in {country:?}"));
        }
    }
    // The bulk lookup (the query API's `POST /v1/posts/check`) agrees with
    // the one-at-a-time one: ids in another order, repeated, never stored.
    let mut ids: Vec<u64> = data.posts.iter().rev().map(|p| p.id).collect();
    ids.extend(data.posts.first().map(|p| p.id));
    ids.extend([(1 << 53) + 7, u64::MAX - 3]);
    let one_by_one: Vec<_> = ids.iter().map(|id| store.facts(*id).unwrap()).collect();
    if store.facts_many(&ids).unwrap() != one_by_one {
        found.push(format!("the bulk lookup of {ids:?} differs from one id at a time"));
    }
    // And the export agrees with the rule on which posts it shows.
    let exported: Vec<u64> = export
        .lines()
        .map(|l| {
            // A text cut inside an emoji is read as serde_json cannot.
            let v = complyd::post::json_tree(l).unwrap();
            let id = v.get("id_str").or_else(|| v.pointer("/data/id")).or_else(|| v.get("id")).unwrap();
            id.as_str().unwrap().parse().unwrap()
        })
        .collect();
    if exported != shown {
        found.push(format!("in {country:?} the export shows posts {exported:?}, the visibility rule {shown:?}"));
    }
    found
}

/// Builds a store and returns its export in every country of interest; an
/// error when an export shows what it may not.
fn final_export(at: &Place, data: &Dataset, b: Build) -> Result<Vec<String>, TestCaseError> {
    // Taken before any export: what is hidden at this time is hidden at the
    // (later) time export reads, purges included.
    let now = chrono::Utc::now().timestamp_millis();
    let schema = (at.backend == Backend::Postgres).then(PgSchema::new);
    let url = match &schema {
        Some(s) => s.url(),
        None => format!("sqlite:{}", at.dir.join(format!("{}.db", b.name)).display()),
    };
    let mut store = store::open(&url).unwrap();
    if b.import_first {
        import(store.as_mut(), b.lines, b.import_chunk, now);
    }
    let unlisted = "UPDATE posts SET embeds = NULL; DELETE FROM embedded_in; DELETE FROM embedded_users;";
    if b.earlier {
        on_the_store(&url, unlisted);
    }
    apply(store.as_mut(), b.events, b.event_chunk);
    if !b.import_first {
        import(store.as_mut(), b.lines, b.import_chunk, now);
    }
    store.maintain(now, usize::MAX).unwrap();
    if b.earlier {
        let version = match at.backend {
            Backend::Sqlite => format!("PRAGMA user_version = {};", store::sqlite::SCHEMA_VERSION - 1),
            Backend::Postgres => format!(
                "UPDATE complyd_meta SET value = {} WHERE key = 'schema_version';",
                store::postgres::SCHEMA_VERSION - 1
            ),
        };
        on_the_store(&url, &format!("{unlisted} {version}"));
        drop(store);
        store = store::open(&url).unwrap();
        store.maintain(now, usize::MAX).unwrap();
    }
    let mut gone: Vec<String> = Vec::new();
    for p in &data.posts {
        if store.facts(p.id).unwrap().post.tombstone {
            gone.push(format!("TXT-{}-END", p.id));
        }
        if p.geo && store.user_state(p.author).unwrap().geo_scrubbed(p.id) {
            gone.push(format!("PLACE-{}-END", p.id));
        }
    }
    for user in 1..=USERS {
        if store.user_state(user).unwrap().is_purged(now) {
            gone.push(format!("NAME-{user}-END"));
        }
    }
    let mut kept_gone = Vec::new();
    store
        .scan(&mut |row| {
            kept_gone
                .extend(gone.iter().filter(|m| row.json.contains(m.as_str())).map(|m| format!("{m} in {}", row.id)));
            Ok(())
        })
        .unwrap();
    if !kept_gone.is_empty() {
        return Err(TestCaseError::fail(format!("{}: withdrawn content is stored: {kept_gone:?}", b.name)));
    }
    let mut out = Vec::new();
    for cc in [None, Some("DE"), Some("US")] {
        let mut buf = Vec::new();
        let country = cc.map(|c| Country::parse(c).unwrap());
        complyd::commands::export(store.as_mut(), country, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let found = leaks(store.as_mut(), data, cc, now, &text);
        if !found.is_empty() {
            return Err(TestCaseError::fail(format!("{}: {} leak(s):\n{}", b.name, found.len(), found.join("\n"))));
        }
        out.push(format!("{cc:?}:\n{text}"));
    }
    Ok(out)
}

/// Runs `sql` on the store at `url` beside complyd (to make it what an
/// earlier complyd left).
fn on_the_store(url: &str, sql: &str) {
    match url.strip_prefix("sqlite:") {
        Some(path) => rusqlite::Connection::open(path).unwrap().execute_batch(sql).unwrap(),
        None => ::postgres::Client::connect(url, ::postgres::NoTls).unwrap().batch_execute(sql).unwrap(),
    }
}

on_both_backends!(export_is_independent_of_order_batching_duplicates_and_import_time);

fn export_is_independent_of_order_batching_duplicates_and_import_time(backend: Backend) {
    let config = ProptestConfig { cases: 48, source_file: Some(file!()), ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let strategy = (dataset(), events(), any::<u64>(), 1usize..7, any::<u64>());
    let result = runner.run(&strategy, |(data, events, seed, chunk, dup_mask)| {
        let dir = tempfile::tempdir().unwrap();
        let at = Place { backend, dir: dir.path() };
        let lines = data.lines();
        let export = |b: Build| final_export(&at, &data, b);
        let reference = export(Build {
            name: "reference",
            lines: &lines,
            import_chunk: 10_000,
            events: &events,
            event_chunk: 10_000,
            import_first: true,
            earlier: false,
        })?;

        let mut reversed_lines = lines.clone();
        reversed_lines.reverse();
        let mut reversed = events.clone();
        reversed.reverse();
        prop_assert_eq!(
            &export(Build {
                name: "reversed",
                lines: &reversed_lines,
                import_chunk: chunk,
                events: &reversed,
                event_chunk: chunk,
                import_first: true,
                earlier: false,
            })?,
            &reference,
            "reversed order"
        );

        // Pseudo-random permutations, with some lines and events twice.
        let shuffled_lines = shuffle(&lines, seed ^ 0x5EED, dup_mask.rotate_left(17));
        let shuffled = shuffle(&events, seed, dup_mask);
        prop_assert_eq!(
            &export(Build {
                name: "shuffled",
                lines: &shuffled_lines,
                import_chunk: chunk,
                events: &shuffled,
                event_chunk: chunk,
                import_first: true,
                earlier: false,
            })?,
            &reference,
            "shuffled with duplicates"
        );

        // Applied twice over, imported twice over: nothing changes.
        let twice_lines = [lines.clone(), lines.clone()].concat();
        let twice = [events.clone(), events.clone()].concat();
        prop_assert_eq!(
            &export(Build {
                name: "twice",
                lines: &twice_lines,
                import_chunk: lines.len().max(1),
                events: &twice,
                event_chunk: chunk,
                import_first: true,
                earlier: false,
            })?,
            &reference,
            "every line and every event twice"
        );

        // Posts imported after the events: the known rules apply at import.
        let after_lines = shuffle(&lines, seed.rotate_left(32), 0);
        prop_assert_eq!(
            &export(Build {
                name: "import_after",
                lines: &after_lines,
                import_chunk: chunk,
                events: &events,
                event_chunk: chunk,
                import_first: false,
                earlier: false,
            })?,
            &reference,
            "import after replay"
        );

        // A store an earlier complyd wrote and ran, opened by today's.
        prop_assert_eq!(
            &export(Build {
                name: "earlier",
                lines: &lines,
                import_chunk: chunk,
                events: &events,
                event_chunk: chunk,
                import_first: true,
                earlier: true,
            })?,
            &reference,
            "a store of an earlier complyd, moved"
        );
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
