//! Property: for random datasets and random event sets, the final export is
//! the same for any arrival order, any batching, with any event duplicated,
//! and whether the posts were imported before or after the events.
//!
//! Toggle events get distinct event times: with equal times the rules let the
//! later arrival win, which is order-dependent by definition.

mod common;
use common::{Backend, PgSchema};
use complyd::event::{parse_line, Country, EventKind, Message};
use complyd::post::parse_post_line;
use complyd::store::{self, Store, Timed};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

const DAY: i64 = 24 * 3600 * 1000;
const COUNTRIES: [&str; 4] = ["DE", "FR", "XX", "XY"];

#[derive(Debug, Clone)]
struct Dataset {
    /// (id, author, geo)
    posts: Vec<(u64, u64, bool)>,
    /// (id, author, original id, original author)
    retweets: Vec<(u64, u64, u64, u64)>,
}

fn post_line(id: u64, user: u64, geo: bool) -> String {
    let geo = if geo { r#","coordinates":{"type":"Point","coordinates":[1.5,2.5]},"place":{"name":"p"}"# } else { "" };
    format!(r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"t{id}"{geo}}}"#)
}

fn dataset() -> impl Strategy<Value = Dataset> {
    (prop::collection::vec((1u64..=4, any::<bool>()), 4..12), prop::collection::vec((1u64..=4, 0usize..12), 0..5)).prop_map(
        |(posts, rts)| {
            let posts: Vec<(u64, u64, bool)> =
                posts.into_iter().enumerate().map(|(i, (u, g))| (100 + i as u64, u, g)).collect();
            let retweets = rts
                .into_iter()
                .enumerate()
                .map(|(i, (u, o))| {
                    let (oid, oa, _) = posts[o % posts.len()];
                    (200 + i as u64, u, oid, oa)
                })
                .collect();
            Dataset { posts, retweets }
        },
    )
}

impl Dataset {
    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.posts.iter().map(|(id, u, g)| post_line(*id, *u, *g)).collect();
        for (id, u, oid, oa) in &self.retweets {
            let geo = self.posts.iter().any(|p| p.0 == *oid && p.2);
            let orig = post_line(*oid, *oa, geo);
            v.push(format!(r#"{{"id_str":"{id}","user":{{"id_str":"{u}"}},"text":"RT","retweeted_status":{orig}}}"#));
        }
        v
    }
}

/// One event, as a wire line, from (kind, post index, user, country, extra).
fn event_line(kind: u8, post: u64, user: u64, cc: &str, t: i64) -> String {
    let st = |k: &str| {
        format!(r#"{{"{k}":{{"status":{{"id":{post},"id_str":"{post}","user_id_str":"{user}"}},"timestamp_ms":"{t}"}}}}"#)
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
        _ => format!(
            r#"{{"scrub_geo":{{"user_id":{user},"up_to_status_id_str":"{post}","timestamp_ms":"{t}"}}}}"#
        ),
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
        let mut status = Vec::new();
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

fn import(store: &mut dyn Store, lines: &[String], now: i64) {
    let posts: Vec<_> = lines.iter().flat_map(|l| parse_post_line(l).unwrap()).collect();
    store.import(&posts, &[], now).unwrap();
}

/// Where the stores of one test case live.
struct Place<'a> {
    backend: Backend,
    dir: &'a std::path::Path,
}

/// Builds a store and returns its export in every country of interest.
fn final_export(at: &Place, name: &str, data: &[String], events: &[String], import_first: bool, chunk: usize) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    let schema = (at.backend == Backend::Postgres).then(PgSchema::new);
    let url = match &schema {
        Some(s) => s.url(),
        None => format!("sqlite:{}", at.dir.join(format!("{name}.db")).display()),
    };
    let mut store = store::open(&url).unwrap();
    if import_first {
        import(store.as_mut(), data, now);
    }
    apply(store.as_mut(), events, chunk);
    if !import_first {
        import(store.as_mut(), data, now);
    }
    store.maintain(now, usize::MAX).unwrap();
    let mut out = Vec::new();
    for cc in [None, Some("DE"), Some("US")] {
        let mut buf = Vec::new();
        let country = cc.map(|c| Country::parse(c).unwrap());
        complyd::commands::export(store.as_mut(), country, &mut buf).unwrap();
        out.push(format!("{cc:?}:\n{}", String::from_utf8(buf).unwrap()));
    }
    out
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
        let reference = final_export(&at, "reference", &lines, &events, true, 10_000);

        let mut reversed = events.clone();
        reversed.reverse();
        prop_assert_eq!(&final_export(&at, "reversed", &lines, &reversed, true, chunk), &reference, "reversed order");

        // A pseudo-random permutation, with some events duplicated.
        let mut shuffled: Vec<(u64, String)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (seed.rotate_left(i as u32).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ i as u64), e.clone()))
            .collect();
        shuffled.sort();
        let mut with_dups: Vec<String> = Vec::new();
        for (i, (_, e)) in shuffled.into_iter().enumerate() {
            with_dups.push(e.clone());
            if dup_mask >> (i % 64) & 1 == 1 {
                with_dups.push(e);
            }
        }
        prop_assert_eq!(&final_export(&at, "shuffled", &lines, &with_dups, true, chunk), &reference, "shuffled with duplicates");

        // Applied twice over: nothing changes.
        let mut twice = events.clone();
        twice.extend(events.iter().cloned());
        prop_assert_eq!(&final_export(&at, "twice", &lines, &twice, true, chunk), &reference, "every event twice");

        // Posts imported after the events: the known rules apply at import.
        prop_assert_eq!(&final_export(&at, "import_after", &lines, &events, false, chunk), &reference, "import after replay");
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
