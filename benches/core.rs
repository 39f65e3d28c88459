//! The compliance core's numbers (issue 2): `cargo bench --bench core`.
//!
//! Prints one table; BENCHMARKS.md records a run. Figures are wall-clock on
//! whatever machine runs it: compare ratios measured in one run, not runs.
//! Set COMPLYD_BENCH_POSTS to change the store size (default 1,000,000 spread
//! over 100,000 users, plus one user with as many posts again),
//! COMPLYD_BENCH_ACTIVE=A to have the events name only A of those posts (and
//! A/10 of the users), spread evenly over them (default: any of them), and
//! COMPLYD_BENCH_DB=postgres://... to measure PostgreSQL (each run works in
//! fresh schemas of that database and drops them); the default is SQLite in a
//! temporary directory.
//!
//! Knobs for quicker iterations: COMPLYD_BENCH_SKIP=suspend,export,check,writers
//! skips those phases (import and replay always run: they build the store);
//! COMPLYD_BENCH_EXPORT_OUT=FILE writes the export to FILE (to compare the
//! output of two builds); COMPLYD_BENCH_MIX=quotes makes one post in ten a
//! quote and one in ten a retweet, each carrying a full copy of an earlier
//! post (embedded content, as real collections hold it), and
//! COMPLYD_BENCH_MIX=twarc writes every post as twarc's flattened v2 files
//! do (the author, mentions and referenced posts merged in, the same one in
//! ten quotes and one in ten retweets); COMPLYD_BENCH_KEEP=1 keeps the PostgreSQL schemas
//! (their names are printed) for `EXPLAIN ANALYZE`.

use complyd::daemon::bench::{drop_postgres_schema, fresh_postgres_schema};
use complyd::event::{parse_line, Country, EventKind, Message};
use complyd::post::parse_post_line;
use complyd::rules::visibility::visible;
use complyd::store::{self, Timed};
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;
/// The user with as many posts as the rest of the store together.
const BIG_USER: u64 = 1;
/// The user with one post.
const SMALL_USER: u64 = 2;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A cheap deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const POST_BASE: u64 = 1_500_000_000_000_000_000; // ids above 2^53, like real ones

fn post_id(i: u64) -> u64 {
    POST_BASE + i * 8
}

/// One of `n` posts or users, drawn at random: any of them, or (`active` >
/// 0) one of `active` spread evenly over them.
fn spread(r: &mut Rng, n: u64, active: u64) -> u64 {
    if active > 0 && active < n {
        r.below(active) * (n / active)
    } else {
        r.below(n)
    }
}

/// A realistic mix: mostly post deletes, user toggles, and some of every
/// other type, with the wire traps (rounded numeric ids beside `id_str`,
/// `timestampMs`).
fn event_line(r: &mut Rng, i: u64, posts: u64, users: u64, active: u64) -> String {
    let t = T0 + i as i64;
    let p = post_id(spread(r, posts, active));
    let rounded = p as f64 as u64;
    let u = 10 + spread(r, users, active / 10);
    match r.below(100) {
        0..=59 => format!(
            r#"{{"delete":{{"status":{{"id":{rounded},"id_str":"{p}","user_id":{u},"user_id_str":"{u}"}},"timestamp_ms":"{t}"}}}}"#
        ),
        60..=64 => format!(
            r#"{{"delete":{{"favorite":{{"tweet_id":{rounded},"tweet_id_str":"{p}","user_id":{u},"user_id_str":"{u}"}},"timestamp_ms":"{t}"}}}}"#
        ),
        65..=68 => format!(
            r#"{{"status_withheld":{{"status":{{"id":{rounded},"id_str":"{p}","user_id":{u},"user_id_str":"{u}"}},"withheld_in_countries":["DE","FR"],"timestamp_ms":"{t}"}}}}"#
        ),
        69..=71 => format!(
            r#"{{"drop":{{"status":{{"id":{rounded},"id_str":"{p}","user_id":{u},"user_id_str":"{u}"}},"timestamp_ms":"{t}"}}}}"#
        ),
        72..=73 => format!(
            r#"{{"undrop":{{"status":{{"id":{rounded},"id_str":"{p}","user_id":{u},"user_id_str":"{u}"}},"timestamp_ms":"{t}"}}}}"#
        ),
        74..=75 => format!(
            r#"{{"tweet_edit":{{"id":"{}","initial_tweet_id":"{p}","edit_tweet_ids":["{p}","{}"],"timestamp_ms":"{t}"}}}}"#,
            p + 1,
            p + 1
        ),
        76..=77 => format!(
            r#"{{"scrub_geo":{{"user_id":{u},"up_to_status_id":{rounded},"up_to_status_id_str":"{p}","user_id_str":"{u}","timestamp_ms":"{t}"}}}}"#
        ),
        78..=80 => format!(
            r#"{{"user_withheld":{{"user":{{"id":{u},"id_str":"{u}"}},"withheld_in_countries":["XY"],"timestampMs":"2023-11-14T22:13:20.{:03}+00:00"}}}}"#,
            i % 1000
        ),
        n => {
            let kind =
                ["user_delete", "user_undelete", "user_protect", "user_unprotect", "user_suspend", "user_unsuspend"]
                    [(n % 6) as usize];
            format!(r#"{{"{kind}":{{"id":{u},"timestamp_ms":"{t}"}}}}"#)
        }
    }
}

fn post_line(id: u64, user: u64, geo: bool) -> String {
    let geo = if geo { r#","coordinates":{"type":"Point","coordinates":[10.75,59.91]}"# } else { "" };
    format!(
        r#"{{"created_at":"Tue Nov 14 22:13:20 +0000 2023","id":{},"id_str":"{id}","text":"a post of about the usual length, with some words in it to make the JSON realistic #compliance","user":{{"id":{user},"id_str":"{user}","screen_name":"user{user}"}},"lang":"en"{geo}}}"#,
        id as f64 as u64
    )
}

/// A v2 post as twarc's flattened files hold it: its author and mentioned
/// user merged in, and one post in ten quoting (and one in ten retweeting)
/// an earlier one whose full copy, itself flattened, is merged into its
/// `referenced_tweets` entry.
fn twarc_line(i: u64, posts: u64, users: u64, id: u64, user: u64) -> String {
    let flat = |id: u64, user: u64, geo: bool, refs: &str| {
        let geo = if geo {
            r#","geo":{"place_id":"01a9a39529b27f36","id":"01a9a39529b27f36","full_name":"Oslo, Norway","country_code":"NO"}"#
        } else {
            ""
        };
        let mentioned = 10 + (id / 8 + 1) % users.max(1);
        format!(
            r#"{{"id":"{id}","author_id":"{user}","created_at":"2023-11-14T22:13:20.000Z","text":"@user{mentioned} a post of about the usual length, with some words in it #compliance","lang":"en","conversation_id":"{id}","edit_history_tweet_ids":["{id}"],"entities":{{"mentions":[{{"start":0,"end":9,"username":"user{mentioned}","id":"{mentioned}","name":"User {mentioned}","created_at":"2015-01-01T00:00:00.000Z","public_metrics":{{"followers_count":10,"following_count":20,"tweet_count":30,"listed_count":0}}}}]}},"author":{{"id":"{user}","username":"user{user}","name":"User {user}","created_at":"2015-01-01T00:00:00.000Z","public_metrics":{{"followers_count":10,"following_count":20,"tweet_count":30,"listed_count":0}}}}{geo}{refs}}}"#
        )
    };
    let quoted = |q: u64, kind: &str| {
        let copy = flat(post_id(q), 10 + (q % users), q % 5 == 0, "");
        format!(r#","referenced_tweets":[{{"type":"{kind}",{}"#, &copy[1..]) + "]"
    };
    match i % 10 {
        3 if (10..posts).contains(&i) => flat(id, user, i % 5 == 0, &quoted(i - 7, "quoted")),
        7 if (10..posts).contains(&i) => flat(id, user, i % 5 == 0, &quoted(i - 5, "retweeted")),
        _ => flat(id, user, i % 5 == 0, ""),
    }
}

/// Fresh stores for the benchmark: SQLite files in a temporary directory, or
/// PostgreSQL schemas (dropped at the end).
struct Places {
    base: Option<String>,
    dir: std::path::PathBuf,
    schemas: Vec<String>,
}

impl Places {
    fn fresh(&mut self, name: &str) -> String {
        match &self.base {
            None => format!("sqlite:{}", self.dir.join(format!("{name}.db")).display()),
            Some(base) => {
                let (url, schema) = fresh_postgres_schema(base, name).expect("a fresh PostgreSQL schema");
                self.schemas.push(schema);
                url
            }
        }
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        if std::env::var_os("COMPLYD_BENCH_KEEP").is_some() {
            println!("kept schemas: {}", self.schemas.join(", "));
            return;
        }
        if let Some(base) = &self.base {
            for s in &self.schemas {
                let _ = drop_postgres_schema(base, s);
            }
        }
    }
}

/// Waits until the operating system has written out what the phase before
/// left in its page cache (`sync`): at 10^7 posts the import leaves
/// gigabytes, and the next phase would pay for writing them.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let posts: u64 = std::env::var("COMPLYD_BENCH_POSTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let users = posts / 10;
    let active: u64 = std::env::var("COMPLYD_BENCH_ACTIVE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let skip = std::env::var("COMPLYD_BENCH_SKIP").unwrap_or_default();
    let mix = std::env::var("COMPLYD_BENCH_MIX").unwrap_or_default();
    let (mix, twarc) = (mix == "quotes" || mix == "twarc", mix == "twarc");
    let run = |phase: &str| !skip.split(',').any(|s| s.trim() == phase);
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. Parsing a realistic mix, one core.
    let mut r = Rng(0x5eed);
    let lines: Vec<String> = (0..1_000_000).map(|i| event_line(&mut r, i, posts, users, active)).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 2).sum();
    let start = Instant::now();
    let mut events = 0u64;
    for l in &lines {
        if let Ok(Message::Event(_)) = parse_line(l.as_bytes()) {
            events += 1;
        }
    }
    let d = start.elapsed();
    assert_eq!(events, lines.len() as u64, "every generated line parses");
    rows.push((
        "parse, realistic mix, 1 core".into(),
        format!("{:.0} msgs/s", per_sec(events, d)),
        format!("{:.0} MB/s; goal ≥ 1,000,000 msgs/s", bytes as f64 / d.as_secs_f64() / 1e6),
    ));

    // 2. Import: `posts` posts over `users` users, `posts` more for BIG_USER, one for SMALL_USER.
    let dir = tempfile::tempdir().expect("temp dir");
    let base = std::env::var("COMPLYD_BENCH_DB").ok();
    let mut places = Places { base: base.clone(), dir: dir.path().to_owned(), schemas: Vec::new() };
    let url = places.fresh("main");
    let mut st = store::open(&url).expect("store");
    println!("store: {}", if base.is_some() { "PostgreSQL" } else { "SQLite" });
    let start = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut imported = 0u64;
    let mut parsing = Duration::ZERO;
    let total_posts = 2 * posts + 1;
    for i in 0..total_posts {
        let (id, user) = if i < posts {
            (post_id(i), 10 + (i % users))
        } else if i < 2 * posts {
            (POST_BASE / 2 + i, BIG_USER)
        } else {
            (POST_BASE / 4, SMALL_USER)
        };
        let line = match (mix, i % 10) {
            _ if twarc => twarc_line(i, posts, users, id, user),
            (true, 3) if i < posts && i >= 10 => {
                let q = i - 7;
                format!(
                    r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"a quote of about the usual length","quoted_status_id_str":"{}","quoted_status":{}}}"#,
                    post_id(q),
                    post_line(post_id(q), 10 + (q % users), q % 5 == 0)
                )
            }
            (true, 7) if i < posts && i >= 10 => {
                let q = i - 5;
                format!(
                    r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"RT a retweet","retweeted_status":{}}}"#,
                    post_line(post_id(q), 10 + (q % users), q % 5 == 0)
                )
            }
            _ => post_line(id, user, i % 5 == 0),
        };
        let parse = Instant::now();
        batch.extend(parse_post_line(&line).expect("post parses"));
        parsing += parse.elapsed();
        if batch.len() == 10_000 {
            imported += st.import(&batch, &[], T0).expect("import").stored;
            batch.clear();
        }
    }
    imported += st.import(&batch, &[], T0).expect("import").stored;
    let d = start.elapsed();
    rows.push((
        format!("import {total_posts} posts (parse + store)"),
        format!("{:.0} posts/s", per_sec(imported, d)),
        format!("of which parsing {:.2} s of {:.2} s", parsing.as_secs_f64(), d.as_secs_f64()),
    ));

    settle();

    // 3. Replay 1,000,000 events into the store holding those posts, through
    // the same Applier as `complyd replay`.
    let start = Instant::now();
    {
        let mut applier = complyd::commands::Applier::new(st.as_mut());
        for l in &lines {
            applier.push(parse_line(l.as_bytes()).expect("parses")).expect("apply");
        }
        applier.flush().expect("apply");
    }
    let d = start.elapsed();
    rows.push((
        format!("replay 1,000,000 events, {total_posts} posts stored"),
        format!("{:.0} events/s", per_sec(lines.len() as u64, d)),
        format!(
            "parse + apply + commit, batches of {}; 60% are deletes of stored posts; goal ≥ 200,000/s",
            complyd::commands::BATCH
        ),
    ));
    let start = Instant::now();
    let mut removed = 0u64;
    loop {
        let m = st.maintain(T0, 10_000).expect("maintain");
        removed += m.posts_deleted;
        if m.pending == 0 {
            break;
        }
    }
    let d = start.elapsed();
    rows.push((
        "  then: removing the deleted posts' content (maintenance, off the event path)".into(),
        format!("{:.0} posts/s", per_sec(removed, d)),
        format!("{removed} posts removed in {:.1} s", d.as_secs_f64()),
    ));

    // 4. user_suspend of a user with `posts` posts vs a user with one,
    // interleaved so that both see the same machine; medians.
    let reps = if run("suspend") { 2_000 } else { 0 };
    let mut small = Vec::with_capacity(reps);
    let mut big = Vec::with_capacity(reps);
    for k in 0..reps {
        let kind = if k % 2 == 0 { "user_suspend" } else { "user_unsuspend" };
        for (uid, out) in [(SMALL_USER, &mut small), (BIG_USER, &mut big)] {
            let line = format!(r#"{{"{kind}":{{"id":{uid},"timestamp_ms":"{}"}}}}"#, T0 + 10_000_000 + k as i64);
            let Ok(Message::Event(e)) = parse_line(line.as_bytes()) else { unreachable!() };
            let EventKind::User(u) = e.kind else { unreachable!() };
            let start = Instant::now();
            st.apply_user(&[Timed { time_ms: e.time_ms, event: u }], &[]).expect("apply");
            out.push(start.elapsed());
        }
    }
    small.sort();
    big.sort();
    let med = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1e6;
    if reps > 0 {
        rows.push((
            "user_suspend/unsuspend, user with 1 post".into(),
            format!("{:.1} µs/event (median)", med(&small)),
            "one event a transaction, commit included".into(),
        ));
        rows.push((
            format!("user_suspend/unsuspend, user with {posts} posts"),
            format!("{:.1} µs/event (median)", med(&big)),
            "same".into(),
        ));
        rows.push((
            "  ratio (many-post user / 1-post user)".into(),
            format!("{:.2}", med(&big) / med(&small)),
            "goal: no more (≈ 1)".into(),
        ));
    }

    settle();

    // 5. Export everything visible.
    if run("export") {
        let out: Box<dyn std::io::Write> = match std::env::var_os("COMPLYD_BENCH_EXPORT_OUT") {
            Some(path) => Box::new(std::fs::File::create(path).expect("export file")),
            None => Box::new(std::io::sink()),
        };
        let rss_before = rss_kib();
        let start = Instant::now();
        let exported = complyd::commands::export(st.as_mut(), None, out).expect("export");
        let d = start.elapsed();
        let rss_after = rss_kib();
        let mut scanned = 0u64;
        st.scan(&mut |_| {
            scanned += 1;
            Ok(())
        })
        .expect("scan");
        rows.push((
            format!("export (scanned {scanned} stored posts, wrote {exported})"),
            format!("{:.0} posts/s", per_sec(scanned, d)),
            format!("goal ≥ 500,000/s; RSS {} → {} MiB", rss_before / 1024, rss_after / 1024),
        ));
    }

    // 6. check: latency per id (facts + visibility), random stored and unstored ids.
    let now = chrono::Utc::now().timestamp_millis();
    let de = Country::parse("DE").ok();
    let mut lat = Vec::with_capacity(20_000);
    let mut r = Rng(42);
    for _ in 0..if run("check") { 20_000 } else { 0 } {
        let id = if r.below(2) == 0 { post_id(r.below(posts)) } else { POST_BASE / 2 + posts + r.below(posts) };
        let start = Instant::now();
        let f = st.facts(id).expect("facts");
        std::hint::black_box(visible(&f, de, now));
        lat.push(start.elapsed());
    }
    lat.sort();
    if !lat.is_empty() {
        let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
        rows.push((
            "check, per id".into(),
            format!("p50 {:.1} µs, p99 {:.1} µs", q(0.5), q(0.99)),
            "goal p99 < 1 ms".into(),
        ));
    }

    // 7. Several writers at once (several daemons sharing one database, each
    // with its share of the partitions): 1,000,000 events split by index into
    // N disjoint streams, each applied by its own connection, into a fresh
    // store each time.
    drop(st);
    for writers in if run("writers") { vec![1usize, 2, 4] } else { vec![] } {
        let url = places.fresh(&format!("w{writers}"));
        store::open(&url).expect("store");
        let start = Instant::now();
        std::thread::scope(|scope| {
            for w in 0..writers {
                let (url, lines) = (&url, &lines);
                scope.spawn(move || {
                    let mut s = store::open(url).expect("store");
                    let mut applier = complyd::commands::Applier::new(s.as_mut());
                    for l in lines.iter().skip(w).step_by(writers) {
                        applier.push(parse_line(l.as_bytes()).expect("parses")).expect("apply");
                    }
                    applier.flush().expect("apply");
                });
            }
        });
        let d = start.elapsed();
        rows.push((
            format!("{writers} writer(s) at once, 1,000,000 events"),
            format!("{:.0} events/s", per_sec(lines.len() as u64, d)),
            "total across writers; empty store".into(),
        ));
    }
    drop(places);

    println!("| what | figure | notes |\n|---|---|---|");
    for (a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
