//! Every row of the rules tables and every clause of the visibility rule
//! (docs/rules.md), each on a store built through the public commands
//! (`complyd import`, `replay`, `check`, `export`).

mod common;
use common::*;

const T: i64 = 1_700_000_000_000;

enum Step {
    Import(Vec<String>),
    Replay(Vec<String>),
}
use Step::{Import, Replay};

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    /// (post id, country, visible?)
    expect: Vec<(u64, Option<&'static str>, bool)>,
}

fn run_cases(backend: Backend, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let s = Scratch::on(backend);
        for step in &case.steps {
            match step {
                Import(lines) => {
                    s.import(lines);
                }
                Replay(lines) => {
                    s.replay(lines);
                }
            }
        }
        for (id, country, want) in &case.expect {
            let got = s.visible(*id, *country);
            if got != *want {
                failures.push(format!("{}: post {id} in {country:?}: visible={got}, want {want}", case.name));
            }
            // export must agree with check.
            let exported = s.export_ids(*country).contains(id);
            if exported != *want {
                failures.push(format!("{}: post {id} in {country:?}: exported={exported}, want {want}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

on_both_backends!(
    status_rules_table,
    user_rules_table,
    scrub_geo_removes_geo_up_to_and_including_the_id,
    visibility_clauses,
    favorite_delete_removes_the_like_and_a_later_import_does_not_restore_it,
    deletes_count_once_a_post_and_queue_its_content_once,
    embedded_posts_table,
    embedded_v2_includes_table,
    embedded_geo_table,
    embedded_ids_above_2_53_table,
    import_merge_is_the_same_in_every_order_of_full_embedded_and_bare_forms,
);

fn status_rules_table(backend: Backend) {
    run_cases(
        backend,
        vec![
            Case {
                name: "delete makes the post a tombstone",
                steps: vec![Import(vec![post(10, 1), post(11, 1)]), Replay(vec![delete(10, 1, T)])],
                expect: vec![(10, None, false), (10, Some("FR"), false), (11, None, true)],
            },
            Case {
                name: "delete before the post is stored: the tombstone refuses the import",
                steps: vec![Replay(vec![delete(10, 1, T)]), Import(vec![post(10, 1)])],
                expect: vec![(10, None, false)],
            },
            Case {
                name: "delete cascades to every stored retweet, whose own delete never comes",
                steps: vec![
                    Import(vec![retweet(20, 2, 10, 1), retweet(21, 3, 10, 1), post(22, 3)]),
                    Replay(vec![delete(10, 1, T)]),
                ],
                expect: vec![(10, None, false), (20, None, false), (21, None, false), (22, None, true)],
            },
            Case {
                name: "drop removes from public display",
                steps: vec![Import(vec![post(10, 1)]), Replay(vec![status_msg("drop", 10, 1, T)])],
                expect: vec![(10, None, false), (10, Some("US"), false)],
            },
            Case {
                name: "undrop at a later time shows the post again",
                steps: vec![
                    Import(vec![post(10, 1)]),
                    Replay(vec![status_msg("drop", 10, 1, T), status_msg("undrop", 10, 1, T + 1)]),
                ],
                expect: vec![(10, None, true)],
            },
            Case {
                name: "undrop older than the drop is ignored, whatever the arrival order",
                steps: vec![
                    Import(vec![post(10, 1)]),
                    Replay(vec![status_msg("drop", 10, 1, T + 1), status_msg("undrop", 10, 1, T)]),
                ],
                expect: vec![(10, None, false)],
            },
            Case {
                name: "a drop arriving after a later undrop is ignored",
                steps: vec![
                    Import(vec![post(10, 1)]),
                    Replay(vec![status_msg("undrop", 10, 1, T + 1)]),
                    Replay(vec![status_msg("drop", 10, 1, T)]),
                ],
                expect: vec![(10, None, true)],
            },
            Case {
                name: "status_withheld: union of countries, never cleared",
                steps: vec![
                    Import(vec![post(10, 1)]),
                    Replay(vec![status_withheld(10, 1, &["DE"], T)]),
                    Replay(vec![status_withheld(10, 1, &["FR"], T + 1), status_msg("undrop", 10, 1, T + 2)]),
                ],
                expect: vec![
                    (10, Some("DE"), false),
                    (10, Some("FR"), false),
                    (10, Some("US"), true),
                    (10, None, false),
                ],
            },
            Case {
                name: "status_withheld XX hides in every country",
                steps: vec![Import(vec![post(10, 1)]), Replay(vec![status_withheld(10, 1, &["XX"], T)])],
                expect: vec![(10, Some("US"), false), (10, Some("JP"), false)],
            },
            Case {
                name: "status_withheld XY (DMCA) hides in every country",
                steps: vec![Import(vec![post(10, 1)]), Replay(vec![status_withheld(10, 1, &["XY"], T)])],
                expect: vec![(10, Some("US"), false)],
            },
            Case {
                name: "tweet_edit: every id but the newest is superseded",
                steps: vec![
                    Import(vec![post(100, 1), post(101, 1), post(102, 1)]),
                    Replay(vec![tweet_edit(101, &[100, 101], T), tweet_edit(102, &[100, 101, 102], T + 1)]),
                ],
                expect: vec![(100, None, false), (101, None, false), (102, None, true)],
            },
            Case {
                name: "ids above 2^53 keep their exact value through the whole path",
                steps: vec![
                    Import(vec![post(1557433858676740098, 6), post(1557433858676740099, 6)]),
                    Replay(vec![delete(1557433858676740098, 6, T)]),
                ],
                expect: vec![(1557433858676740098, None, false), (1557433858676740099, None, true)],
            },
        ],
    );
}

fn user_rules_table(backend: Backend) {
    let mut cases = Vec::new();
    for (set, clear) in
        [("user_delete", "user_undelete"), ("user_protect", "user_unprotect"), ("user_suspend", "user_unsuspend")]
    {
        cases.push(Case {
            name: set,
            steps: vec![Import(vec![post(10, 1), post(11, 2)]), Replay(vec![user_msg(set, 1, T)])],
            expect: vec![(10, None, false), (10, Some("US"), false), (11, None, true)],
        });
        cases.push(Case {
            name: clear,
            steps: vec![Import(vec![post(10, 1)]), Replay(vec![user_msg(set, 1, T), user_msg(clear, 1, T + 1)])],
            expect: vec![(10, None, true)],
        });
        cases.push(Case {
            name: "an older clear arriving later does not undo a newer set",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![user_msg(set, 1, T + 1)]),
                Replay(vec![user_msg(clear, 1, T)]),
            ],
            expect: vec![(10, None, false)],
        });
        cases.push(Case {
            name: "states toggle indefinitely: the last event time wins",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![
                    user_msg(clear, 1, T + 3),
                    user_msg(set, 1, T),
                    user_msg(clear, 1, T + 1),
                    user_msg(set, 1, T + 2),
                ]),
            ],
            expect: vec![(10, None, true)],
        });
    }
    let now = now_ms();
    cases.extend([
        Case {
            name: "user_withheld: union of countries, never cleared",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![user_withheld(1, &["DE"], T), user_withheld(1, &["FR"], T + 1)]),
            ],
            expect: vec![(10, Some("DE"), false), (10, Some("FR"), false), (10, Some("US"), true), (10, None, false)],
        },
        Case {
            name: "user_withheld XY hides everywhere",
            steps: vec![Import(vec![post(10, 1)]), Replay(vec![user_withheld(1, &["XY"], T)])],
            expect: vec![(10, Some("US"), false)],
        },
        Case {
            name: "purge: user_delete 30 days ago with no undelete in the window",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![
                    user_msg("user_delete", 1, now - 40 * DAY_MS),
                    user_msg("user_undelete", 1, now - 5 * DAY_MS),
                ]),
            ],
            expect: vec![(10, None, false)],
        },
        Case {
            name: "no purge when the undelete came within 30 days",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![
                    user_msg("user_delete", 1, now - 40 * DAY_MS),
                    user_msg("user_undelete", 1, now - 35 * DAY_MS),
                ]),
            ],
            expect: vec![(10, None, true)],
        },
        Case {
            name: "no purge before 30 days have passed",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![user_msg("user_delete", 1, now - 29 * DAY_MS)]),
                Replay(vec![user_msg("user_undelete", 1, now - DAY_MS)]),
            ],
            expect: vec![(10, None, true)],
        },
    ]);
    run_cases(backend, cases);
}

fn scrub_geo_removes_geo_up_to_and_including_the_id(backend: Backend) {
    let s = Scratch::on(backend);
    s.import(&[geo_post(10, 1), geo_post(11, 1), geo_post(12, 1), geo_post(13, 2)]);
    s.replay(&[scrub_geo(1, 11, T)]);
    let out = s.export(None);
    assert_eq!(out.len(), 4, "scrub_geo hides nothing: {out:?}");
    for line in &out {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id: u64 = v["id_str"].as_str().unwrap().parse().unwrap();
        let has_geo = ["coordinates", "geo", "place"].iter().any(|k| v.get(*k).is_some());
        assert_eq!(has_geo, id == 12 || id == 13, "post {id}: {line}");
        assert!(v.get("text").is_some(), "the rest of the post stays: {line}");
    }
    // A smaller up_to later changes nothing (the largest id received counts).
    s.replay(&[scrub_geo(1, 10, T + 1)]);
    assert!(s.export(None).iter().any(|l| l.contains("\"id_str\":\"12\"") && l.contains("coordinates")));
}

fn visibility_clauses(backend: Backend) {
    run_cases(
        backend,
        vec![
            Case {
                name: "1: a post that is not stored is not visible",
                steps: vec![Import(vec![post(10, 1)])],
                expect: vec![(999, None, false), (10, None, true)],
            },
            Case {
                name: "2/4: without a country, any withheld country hides the post",
                steps: vec![
                    Import(vec![post(10, 1), post(20, 2)]),
                    Replay(vec![status_withheld(10, 1, &["DE"], T), user_withheld(2, &["BR"], T)]),
                ],
                expect: vec![(10, None, false), (20, None, false), (10, Some("BR"), true), (20, Some("DE"), true)],
            },
            Case {
                name: "4: author withheld XX hides everywhere",
                steps: vec![Import(vec![post(10, 1)]), Replay(vec![user_withheld(1, &["XX"], T)])],
                expect: vec![(10, Some("US"), false)],
            },
            Case {
                name: "5: a retweet of a deleted original is hidden (cascade), even if the original was never stored",
                steps: vec![
                    Import(vec![
                        r#"{"data":{"id":"20","author_id":"2","referenced_tweets":[{"type":"retweeted","id":"10"}]}}"#
                            .to_owned(),
                    ]),
                    Replay(vec![delete(10, 1, T)]),
                ],
                expect: vec![(20, None, false)],
            },
            Case {
                name: "5: a retweet of an unstored, non-tombstoned original is visible",
                steps: vec![Import(vec![
                    r#"{"data":{"id":"20","author_id":"2","referenced_tweets":[{"type":"retweeted","id":"10"}]}}"#
                        .to_owned(),
                ])],
                expect: vec![(20, None, true)],
            },
            Case {
                name: "5: the retweet follows its stored original's visibility per country",
                steps: vec![Import(vec![retweet(20, 2, 10, 1)]), Replay(vec![status_withheld(10, 1, &["DE"], T)])],
                expect: vec![(20, Some("DE"), false), (20, Some("FR"), true), (10, Some("FR"), true)],
            },
            Case {
                name: "5: the retweet is hidden when the original's author is suspended",
                steps: vec![Import(vec![retweet(20, 2, 10, 1)]), Replay(vec![user_msg("user_suspend", 1, T)])],
                expect: vec![(20, None, false), (10, None, false)],
            },
            Case {
                name: "5: the retweet is hidden when the original is dropped or superseded",
                steps: vec![
                    Import(vec![retweet(20, 2, 10, 1), retweet(21, 2, 11, 1)]),
                    Replay(vec![status_msg("drop", 10, 1, T), tweet_edit(12, &[11, 12], T)]),
                ],
                expect: vec![(20, None, false), (21, None, false)],
            },
            Case {
                name: "3/5: the retweeter's own state hides it too",
                steps: vec![Import(vec![retweet(20, 2, 10, 1)]), Replay(vec![user_msg("user_protect", 2, T)])],
                expect: vec![(20, None, false), (10, None, true)],
            },
        ],
    );
}

fn favorite_delete_removes_the_like_and_a_later_import_does_not_restore_it(backend: Backend) {
    let s = Scratch::on(backend);
    let like = |u: u64, p: u64| format!(r#"{{"like":{{"user_id":"{u}","tweet_id":"{p}"}}}}"#);
    s.import(&[post(10, 1), like(5, 10), like(6, 10)]);
    let summary = s.replay(&[favorite_delete(5, 10, T)]);
    assert!(summary.contains("delete_favorite=1"), "{summary}");
    let summary = s.import(&[like(5, 10)]);
    assert!(summary.contains("0 likes"), "a deleted like is not stored again: {summary}");
    let mut store = complyd::store::open(&s.db()).unwrap();
    assert!(!store.has_like(5, 10).unwrap());
    assert!(store.has_like(6, 10).unwrap());
    assert!(s.visible(10, None), "a like-delete does not touch the post");
}

/// What `replay` (and the daemon's counters) say of repeated deletes: a
/// post's first delete is applied and queues its content for removal, every
/// later one, in the same batch or another, is a duplicate.
fn deletes_count_once_a_post_and_queue_its_content_once(backend: Backend) {
    let s = Scratch::on(backend);
    s.import(&[post(10, 1), post(11, 1)]);
    let first = s.replay(&[
        delete(10, 1, T),
        delete(10, 1, T + 1),
        delete(11, 1, T),
        favorite_delete(5, 10, T),
        favorite_delete(5, 10, T + 1),
    ]);
    assert!(first.contains("applied 3 (delete=2 delete_favorite=1); duplicates 2;"), "{first}");
    assert!(first.contains("removed 2 deleted posts"), "{first}");
    let again = s.replay(&[delete(11, 1, T + 2), delete(12, 1, T), favorite_delete(5, 10, T + 2)]);
    assert!(again.contains("applied 1 (delete=1); duplicates 2;"), "{again}");
    assert!(again.contains("removed 0 deleted posts"), "only a new tombstone queues content: {again}");
    assert!(!s.visible(10, None) && !s.visible(11, None));
}

// ---------------------------------------------------------------------------
// Embedded content (rules.md, "Embedded content: what a visible post's JSON
// may carry"). What a user would notice is withdrawn words, a withdrawn place
// or a withdrawn profile still showing inside somebody else's post. So every
// post below carries its own text `TXT-<id>-END` (and its place
// `PLACE-<id>-END` when it has geo), every user object its own profile
// `NAME-<user>-END`, and the cases look for that content itself in the
// exported lines, not only for ids.

fn txt(id: u64) -> String {
    format!("TXT-{id}-END")
}

fn name(user: u64) -> String {
    format!("NAME-{user}-END")
}

fn place(id: u64) -> String {
    format!("PLACE-{id}-END")
}

/// A v1.1 post of `user`, with its own text and its author's profile, geo
/// when asked, then the `extra` fields ([`quoting`], [`retweeting`]).
fn v1(id: u64, user: u64, geo: bool, extra: &str) -> String {
    let geo = if geo {
        format!(
            r#","coordinates":{{"type":"Point","coordinates":[1.5,2.5]}},"geo":{{"type":"Point","coordinates":[2.5,1.5]}},"place":{{"full_name":"{}"}}"#,
            place(id)
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"id_str":"{id}","user":{{"id_str":"{user}","name":"{}"}},"text":"{}"{geo}{extra}}}"#,
        name(user),
        txt(id)
    )
}

/// The fields that make a v1.1 post a quote of post `of`, whose copy is
/// `copy`.
fn quoting(of: u64, copy: &str) -> String {
    format!(
        r#","quoted_status_id_str":"{of}","quoted_status":{copy},"quoted_status_permalink":{{"url":"https://t.co/q{of}","expanded":"https://twitter.com/u/status/{of}","display":"twitter.com/u/status/{of}"}}"#
    )
}

/// The field that makes a v1.1 post a retweet of `copy`.
fn retweeting(copy: &str) -> String {
    format!(r#","retweeted_status":{copy}"#)
}

/// What one country's export must show.
#[derive(Debug, Clone)]
enum See {
    /// Exactly these posts are exported, in this order.
    Ids(Vec<u64>),
    /// The exported line of the post contains this.
    Has(u64, String),
    /// No exported line contains this.
    Nowhere(String),
    /// The exported line of the post has nothing at this JSON pointer.
    Lacks(u64, &'static str),
    /// The exported line of the post has this string at this JSON pointer.
    Field(u64, &'static str, String),
    /// `complyd check` answers this for the post.
    Check(u64, bool),
}
use See::{Check, Field, Has, Ids, Lacks, Nowhere};

struct ContentCase {
    name: String,
    steps: Vec<Step>,
    /// Per country asked for, what its export shows.
    expect: Vec<(Option<&'static str>, Vec<See>)>,
}

/// The same expectations in each of `countries`.
fn in_each(countries: &[Option<&'static str>], wants: Vec<See>) -> Vec<(Option<&'static str>, Vec<See>)> {
    countries.iter().map(|c| (*c, wants.clone())).collect()
}

/// The post id of an exported line (v1.1 `id_str`, v2 `data.id` or `id`).
fn line_id(v: &serde_json::Value) -> Option<u64> {
    let id = v.get("id_str").or_else(|| v.pointer("/data/id")).or_else(|| v.get("id"))?;
    id.as_str().and_then(|s| s.parse().ok()).or_else(|| id.as_u64())
}

/// Checks `lines` (the export in `country`) against `wants`; each miss is
/// added to `failures`, under `label`.
fn check_export(
    s: &Scratch,
    country: Option<&str>,
    lines: &[String],
    wants: &[See],
    label: &str,
    failures: &mut Vec<String>,
) {
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export writes JSON lines: {e}: {l}")))
        .collect();
    let line_of = |id: u64| lines.iter().zip(&parsed).find(|(_, v)| line_id(v) == Some(id));
    let mut fail = |what: String| failures.push(format!("{label} [{country:?}]: {what}\n      export: {lines:?}"));
    for want in wants {
        match want {
            Ids(ids) => {
                let got: Vec<u64> = parsed.iter().filter_map(line_id).collect();
                if got != *ids {
                    fail(format!("exported posts {got:?}, want {ids:?}"));
                }
            }
            Has(id, text) => match line_of(*id) {
                Some((l, _)) if l.contains(text.as_str()) => {}
                Some(_) => fail(format!("post {id}'s line lacks {text}")),
                None => fail(format!("post {id} is not exported (want it, with {text})")),
            },
            Nowhere(text) => {
                for l in lines.iter().filter(|l| l.contains(text.as_str())) {
                    fail(format!("{text} still shows in {l}"));
                }
            }
            Lacks(id, ptr) => match line_of(*id) {
                Some((l, v)) if v.pointer(ptr).is_some() => fail(format!("post {id} still has {ptr}: {l}")),
                Some(_) => {}
                None => fail(format!("post {id} is not exported (want it, without {ptr})")),
            },
            Field(id, ptr, value) => match line_of(*id) {
                Some((_, v)) if v.pointer(ptr).and_then(|x| x.as_str()) == Some(value.as_str()) => {}
                Some((l, _)) => fail(format!("post {id}: {ptr} is not {value:?}: {l}")),
                None => fail(format!("post {id} is not exported (want it, with {ptr} = {value:?})")),
            },
            Check(id, visible) => {
                let got = s.visible(*id, country);
                if got != *visible {
                    fail(format!("check {id}: visible={got}, want {visible}"));
                }
            }
        }
    }
}

fn run_content_cases(backend: Backend, cases: Vec<ContentCase>) {
    let mut failures = Vec::new();
    for case in cases {
        let s = Scratch::on(backend);
        for step in &case.steps {
            match step {
                Import(lines) => {
                    s.import(lines);
                }
                Replay(lines) => {
                    s.replay(lines);
                }
            }
        }
        for (country, wants) in &case.expect {
            let lines = s.export(*country);
            check_export(&s, *country, &lines, wants, &case.name, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// 300 (user 3) quotes 100 (user 1, with geo): 300's JSON carries a full
/// copy of 100, with 100's words, place and author's profile.
fn quote_300_of_100() -> String {
    v1(300, 3, false, &quoting(100, &v1(100, 1, true, "")))
}

/// 300 shown with the copy of 100 it quotes.
fn quote_with_copy() -> Vec<See> {
    vec![
        Ids(vec![100, 300]),
        Has(300, txt(300)),
        Has(300, txt(100)),
        Has(300, place(100)),
        Has(300, name(1)),
        Field(300, "/quoted_status/id_str", "100".into()),
        Field(300, "/quoted_status_id_str", "100".into()),
        Check(300, true),
    ]
}

/// 300 once 100 may not be shown: the quoter's own words and the id of what
/// it quoted, and nothing of 100 (words, place, profile, link to it).
fn quote_without_copy() -> Vec<See> {
    vec![
        Ids(vec![300]),
        Has(300, txt(300)),
        Has(300, name(3)),
        Field(300, "/quoted_status_id_str", "100".into()),
        Lacks(300, "/quoted_status"),
        Lacks(300, "/quoted_status_permalink"),
        Nowhere(txt(100)),
        Nowhere(place(100)),
        Nowhere(name(1)),
        Check(300, true),
        Check(100, false),
    ]
}

fn embedded_posts_table(backend: Backend) {
    let now = now_ms();
    let q = quote_300_of_100;
    let mut cases = vec![
        ContentCase {
            name: "quote: the copy of a visible quoted post is shown".into(),
            steps: vec![Import(vec![q()])],
            expect: in_each(&[None, Some("DE")], quote_with_copy()),
        },
        ContentCase {
            name: "quote: deleting the quoted post removes its copy from the quoter, not the quoter".into(),
            steps: vec![Import(vec![q()]), Replay(vec![delete(100, 1, T)])],
            expect: in_each(&[None, Some("FR")], quote_without_copy()),
        },
        ContentCase {
            name: "quote: a delete that came before the import removes the copy too".into(),
            steps: vec![Replay(vec![delete(100, 1, T)]), Import(vec![q()])],
            expect: in_each(&[None], quote_without_copy()),
        },
        ContentCase {
            name: "quote: the quoted post dropped".into(),
            steps: vec![Import(vec![q()]), Replay(vec![status_msg("drop", 100, 1, T)])],
            expect: in_each(&[None, Some("FR")], quote_without_copy()),
        },
        ContentCase {
            name: "quote: the quoted post superseded by an edit".into(),
            steps: vec![Import(vec![q()]), Replay(vec![tweet_edit(101, &[100, 101], T)])],
            expect: in_each(&[None], quote_without_copy()),
        },
        ContentCase {
            name: "quote: the quoted post withheld in DE".into(),
            steps: vec![Import(vec![q()]), Replay(vec![status_withheld(100, 1, &["DE"], T)])],
            expect: [in_each(&[Some("DE"), None], quote_without_copy()), in_each(&[Some("FR")], quote_with_copy())]
                .concat(),
        },
        ContentCase {
            name: "quote: the quoted post withheld XY (everywhere)".into(),
            steps: vec![Import(vec![q()]), Replay(vec![status_withheld(100, 1, &["XY"], T)])],
            expect: in_each(&[Some("FR")], quote_without_copy()),
        },
        ContentCase {
            name: "quote: the quoted author withheld in DE".into(),
            steps: vec![Import(vec![q()]), Replay(vec![user_withheld(1, &["DE"], T)])],
            expect: [in_each(&[Some("DE"), None], quote_without_copy()), in_each(&[Some("FR")], quote_with_copy())]
                .concat(),
        },
        ContentCase {
            name: "quote: the quoted author purged before the import (the quoted post is never stored)".into(),
            steps: vec![Replay(vec![user_msg("user_delete", 1, now - 40 * DAY_MS)]), Import(vec![q()])],
            expect: in_each(&[None], quote_without_copy()),
        },
        ContentCase {
            name: "quote: the quoter's own state still hides the quoter".into(),
            steps: vec![Import(vec![q()]), Replay(vec![user_msg("user_protect", 3, T)])],
            expect: in_each(
                &[None],
                vec![Ids(vec![100]), Nowhere(txt(300)), Nowhere(name(3)), Check(300, false), Check(100, true)],
            ),
        },
    ];
    for (set, clear) in
        [("user_suspend", "user_unsuspend"), ("user_protect", "user_unprotect"), ("user_delete", "user_undelete")]
    {
        cases.push(ContentCase {
            name: format!("quote: the quoted author gets {set}"),
            steps: vec![Import(vec![q()]), Replay(vec![user_msg(set, 1, T)])],
            expect: in_each(&[None, Some("US")], quote_without_copy()),
        });
        cases.push(ContentCase {
            name: format!("quote: {clear} after {set} shows the copy again (nothing was destroyed)"),
            steps: vec![Import(vec![q()]), Replay(vec![user_msg(set, 1, T), user_msg(clear, 1, T + 1)])],
            expect: in_each(&[None], quote_with_copy()),
        });
    }

    // 400 (user 4) retweets 300, which quotes 100: as X sends it, the quote
    // is inside the retweeted post, and copied at the top level too.
    let rt_of_quote = || v1(400, 4, false, &(retweeting(&q()) + &quoting(100, &v1(100, 1, true, ""))));
    let inner_gone = vec![
        Ids(vec![300, 400]),
        Has(400, txt(400)),
        Has(400, txt(300)),
        Has(400, name(3)),
        Nowhere(txt(100)),
        Nowhere(place(100)),
        Nowhere(name(1)),
        Lacks(400, "/retweeted_status/quoted_status"),
        Lacks(400, "/retweeted_status/quoted_status_permalink"),
        Lacks(400, "/quoted_status"),
        Lacks(400, "/quoted_status_permalink"),
        Field(400, "/retweeted_status/quoted_status_id_str", "100".into()),
        Field(400, "/quoted_status_id_str", "100".into()),
        Check(400, true),
        Check(300, true),
    ];
    cases.extend([
        ContentCase {
            name: "retweet of a quote: every copy shown while visible".into(),
            steps: vec![Import(vec![rt_of_quote()])],
            expect: in_each(
                &[None],
                vec![
                    Ids(vec![100, 300, 400]),
                    Field(400, "/retweeted_status/quoted_status/text", txt(100)),
                    Field(400, "/quoted_status/text", txt(100)),
                    Field(400, "/retweeted_status/text", txt(300)),
                ],
            ),
        },
        ContentCase {
            name: "retweet of a quote: deleting the innermost quoted post removes it at every depth".into(),
            steps: vec![Import(vec![rt_of_quote()]), Replay(vec![delete(100, 1, T)])],
            expect: in_each(&[None, Some("FR")], inner_gone.clone()),
        },
        ContentCase {
            name: "retweet of a quote: the innermost quoted post's author suspended".into(),
            steps: vec![Import(vec![rt_of_quote()]), Replay(vec![user_msg("user_suspend", 1, T)])],
            expect: in_each(&[None], inner_gone),
        },
        ContentCase {
            name: "retweet of a quote: deleting the retweeted post hides the retweet entirely (rule 5)".into(),
            steps: vec![Import(vec![rt_of_quote()]), Replay(vec![delete(300, 3, T)])],
            expect: in_each(
                &[None],
                vec![
                    Ids(vec![100]),
                    Has(100, txt(100)),
                    Nowhere(txt(300)),
                    Nowhere(txt(400)),
                    Nowhere(name(4)),
                    Check(400, false),
                    Check(100, true),
                ],
            ),
        },
        ContentCase {
            name: "retweet of a quote: the retweeted post withheld in DE hides the retweet there only".into(),
            steps: vec![Import(vec![rt_of_quote()]), Replay(vec![status_withheld(300, 3, &["DE"], T)])],
            expect: vec![
                (Some("DE"), vec![Ids(vec![100]), Nowhere(txt(300)), Nowhere(txt(400))]),
                (Some("FR"), vec![Ids(vec![100, 300, 400]), Has(400, txt(300)), Has(400, txt(100))]),
            ],
        },
    ]);

    // 200 (user 2) retweets 100; 500 (user 5) quotes 200.
    let rt_200 = || v1(200, 2, false, &retweeting(&v1(100, 1, false, "")));
    cases.extend([
        ContentCase {
            name: "quote of a retweet: the copy is shown while the retweet is visible".into(),
            steps: vec![Import(vec![rt_200(), v1(500, 5, false, &quoting(200, &v1(200, 2, false, "")))])],
            expect: in_each(&[None], vec![Ids(vec![100, 200, 500]), Has(500, txt(200)), Check(500, true)]),
        },
        ContentCase {
            name: "quote of a retweet: deleting the original hides the retweet, so its copy in the quote goes".into(),
            steps: vec![
                // The quote's copy of 200 lacks retweeted_status: what
                // import learnt from 200's own line must survive it.
                Import(vec![rt_200()]),
                Import(vec![v1(500, 5, false, &quoting(200, &v1(200, 2, false, "")))]),
                Replay(vec![delete(100, 1, T)]),
            ],
            expect: in_each(
                &[None, Some("FR")],
                vec![
                    Ids(vec![500]),
                    Has(500, txt(500)),
                    Nowhere(txt(100)),
                    Nowhere(txt(200)),
                    Nowhere(name(2)),
                    Lacks(500, "/quoted_status"),
                    Field(500, "/quoted_status_id_str", "200".into()),
                    Check(500, true),
                    Check(200, false),
                ],
            ),
        },
        ContentCase {
            name: "quote of a retweet whose copy carries the original: deleting the original removes its words".into(),
            steps: vec![Import(vec![v1(500, 5, false, &quoting(200, &rt_200()))]), Replay(vec![delete(100, 1, T)])],
            expect: in_each(
                &[None],
                vec![
                    Has(500, txt(500)),
                    Nowhere(txt(100)),
                    Field(500, "/quoted_status_id_str", "200".into()),
                    Check(500, true),
                ],
            ),
        },
    ]);
    run_content_cases(backend, cases);
}

/// 400 (user 4) quotes 500 (user 5), as X API v2 sends it with expansions;
/// user 6 is mentioned and has no post stored.
const V2_QUOTE: &str = r#"{"data":{"id":"400","author_id":"4","text":"TXT-400-END","referenced_tweets":[{"type":"quoted","id":"500"}]},"includes":{"tweets":[{"id":"500","author_id":"5","text":"TXT-500-END"}],"users":[{"id":"4","name":"NAME-4-END"},{"id":"5","name":"NAME-5-END"},{"id":"6","name":"NAME-6-END"}]}}"#;

fn embedded_v2_includes_table(backend: Backend) {
    let now = now_ms();
    let import = || Import(vec![V2_QUOTE.to_owned()]);
    // 400 with its own words and profile, still naming what it quoted.
    let quoter = || {
        vec![
            Has(400, txt(400)),
            Has(400, name(4)),
            Field(400, "/data/referenced_tweets/0/type", "quoted".into()),
            Field(400, "/data/referenced_tweets/0/id", "500".into()),
            Check(400, true),
        ]
    };
    let with = |more: Vec<See>| [quoter(), more].concat();
    let cases = vec![
        ContentCase {
            name: "v2: a visible quoted post and its author are shown".into(),
            steps: vec![import()],
            expect: in_each(
                &[None],
                with(vec![
                    Ids(vec![400, 500]),
                    Has(400, txt(500)),
                    Has(400, name(5)),
                    Has(400, name(6)),
                    Field(400, "/includes/tweets/0/id", "500".into()),
                ]),
            ),
        },
        ContentCase {
            name: "v2: deleting the quoted post drops its includes.tweets entry, not the quoter".into(),
            steps: vec![import(), Replay(vec![delete(500, 5, T)])],
            expect: in_each(&[None, Some("FR")], with(vec![Ids(vec![400]), Nowhere(txt(500)), Check(500, false)])),
        },
        ContentCase {
            name: "v2: the quoted author suspended: the quoted words and the author's profile go".into(),
            steps: vec![import(), Replay(vec![user_msg("user_suspend", 5, T)])],
            expect: in_each(
                &[None, Some("FR")],
                with(vec![Ids(vec![400]), Nowhere(txt(500)), Nowhere(name(5)), Has(400, name(6))]),
            ),
        },
        ContentCase {
            name: "v2: the quoted author withheld in DE".into(),
            steps: vec![import(), Replay(vec![user_withheld(5, &["DE"], T)])],
            expect: [
                in_each(&[Some("DE"), None], with(vec![Ids(vec![400]), Nowhere(txt(500)), Nowhere(name(5))])),
                in_each(&[Some("FR")], with(vec![Ids(vec![400, 500]), Has(400, txt(500)), Has(400, name(5))])),
            ]
            .concat(),
        },
        ContentCase {
            name: "v2: a mentioned user protected is dropped from includes.users, the rest stays".into(),
            steps: vec![import(), Replay(vec![user_msg("user_protect", 6, T)])],
            expect: in_each(
                &[None],
                with(vec![Ids(vec![400, 500]), Nowhere(name(6)), Has(400, name(5)), Has(400, txt(500))]),
            ),
        },
        ContentCase {
            name: "v2: a mentioned user withheld XY is dropped in every country".into(),
            steps: vec![import(), Replay(vec![user_withheld(6, &["XY"], T)])],
            expect: in_each(&[Some("FR"), None], with(vec![Nowhere(name(6)), Has(400, name(5))])),
        },
        ContentCase {
            name: "v2: a mentioned user withheld in DE is dropped in DE and without a country".into(),
            steps: vec![import(), Replay(vec![user_withheld(6, &["DE"], T)])],
            expect: [
                in_each(&[Some("DE"), None], with(vec![Nowhere(name(6))])),
                in_each(&[Some("FR")], with(vec![Has(400, name(6))])),
            ]
            .concat(),
        },
        ContentCase {
            name: "v2: a mentioned user purged (undeleted too late) is dropped".into(),
            steps: vec![
                import(),
                Replay(vec![
                    user_msg("user_delete", 6, now - 40 * DAY_MS),
                    user_msg("user_undelete", 6, now - 5 * DAY_MS),
                ]),
            ],
            expect: in_each(&[None], with(vec![Nowhere(name(6)), Has(400, name(5))])),
        },
        ContentCase {
            name: "v2: a mentioned user deleted, then undeleted in time, is shown".into(),
            steps: vec![import(), Replay(vec![user_msg("user_delete", 6, T), user_msg("user_undelete", 6, T + 1)])],
            expect: in_each(&[None], with(vec![Has(400, name(6))])),
        },
        ContentCase {
            name: "v2: the quoter's author protected hides the quoter".into(),
            steps: vec![import(), Replay(vec![user_msg("user_protect", 4, T)])],
            expect: in_each(&[None], vec![Ids(vec![500]), Nowhere(txt(400)), Nowhere(name(4)), Check(400, false)]),
        },
        ContentCase {
            name: "v2: a retweet whose original's author is suspended is hidden, includes and all".into(),
            steps: vec![
                Import(vec![r#"{"data":{"id":"410","author_id":"4","text":"TXT-410-END","referenced_tweets":[{"type":"retweeted","id":"510"}]},"includes":{"tweets":[{"id":"510","author_id":"5","text":"TXT-510-END"}],"users":[{"id":"4","name":"NAME-4-END"},{"id":"5","name":"NAME-5-END"}]}}"#.to_owned()]),
                Replay(vec![user_msg("user_suspend", 5, T)]),
            ],
            expect: in_each(&[None], vec![Ids(vec![]), Nowhere(txt(510)), Nowhere(name(5)), Check(410, false)]),
        },
    ];
    run_content_cases(backend, cases);
}

fn embedded_geo_table(backend: Backend) {
    // 300 (user 3, geo of its own) quotes 100 (user 1, geo).
    let q = || v1(300, 3, true, &quoting(100, &v1(100, 1, true, "")));
    let copy_without_geo = || {
        vec![
            Ids(vec![100, 300]),
            Has(300, txt(100)),
            Lacks(300, "/quoted_status/coordinates"),
            Lacks(300, "/quoted_status/geo"),
            Lacks(300, "/quoted_status/place"),
            Nowhere(place(100)),
            Field(300, "/place/full_name", place(300)),
            Lacks(100, "/coordinates"),
        ]
    };
    // 400 (user 4) retweets the quote 300, with the quote copied at the top.
    let rt_of_quote = || v1(400, 4, false, &(retweeting(&q()) + &quoting(100, &v1(100, 1, true, ""))));
    let v2 = r#"{"data":{"id":"400","author_id":"4","text":"TXT-400-END","referenced_tweets":[{"type":"quoted","id":"500"}]},"includes":{"tweets":[{"id":"500","author_id":"5","text":"TXT-500-END","geo":{"place_id":"PLACE-500-END","coordinates":{"type":"Point","coordinates":[1.5,2.5]}}}]}}"#;
    let cases = vec![
        ContentCase {
            name: "scrub_geo of the quoted author up to the quoted id: the copy stays, without its geo".into(),
            steps: vec![Import(vec![q()]), Replay(vec![scrub_geo(1, 100, T)])],
            expect: in_each(&[None, Some("DE")], copy_without_geo()),
        },
        ContentCase {
            name: "scrub_geo of the quoted author before the import".into(),
            steps: vec![Replay(vec![scrub_geo(1, 100, T)]), Import(vec![q()])],
            expect: in_each(&[None], copy_without_geo()),
        },
        ContentCase {
            name: "scrub_geo up to a smaller id leaves the copy's geo".into(),
            steps: vec![Import(vec![q()]), Replay(vec![scrub_geo(1, 99, T)])],
            expect: in_each(
                &[None],
                vec![
                    Field(300, "/quoted_status/place/full_name", place(100)),
                    Has(100, place(100)),
                    Has(300, place(300)),
                ],
            ),
        },
        ContentCase {
            name: "scrub_geo of the quoter removes the quoter's geo, not the copy's".into(),
            steps: vec![Import(vec![q()]), Replay(vec![scrub_geo(3, 300, T)])],
            expect: in_each(
                &[None],
                vec![
                    Nowhere(place(300)),
                    Lacks(300, "/coordinates"),
                    Lacks(300, "/place"),
                    Field(300, "/quoted_status/place/full_name", place(100)),
                    Has(300, txt(300)),
                ],
            ),
        },
        ContentCase {
            name: "scrub_geo inside a v1.1 retweet's retweeted_status".into(),
            steps: vec![
                Import(vec![v1(200, 2, false, &retweeting(&v1(100, 1, true, "")))]),
                Replay(vec![scrub_geo(1, 100, T)]),
            ],
            expect: in_each(
                &[None],
                vec![
                    Ids(vec![100, 200]),
                    Field(200, "/retweeted_status/text", txt(100)),
                    Lacks(200, "/retweeted_status/coordinates"),
                    Lacks(200, "/retweeted_status/geo"),
                    Lacks(200, "/retweeted_status/place"),
                    Nowhere(place(100)),
                ],
            ),
        },
        ContentCase {
            name: "scrub_geo inside a retweet of a quote, at every depth".into(),
            steps: vec![Import(vec![rt_of_quote()]), Replay(vec![scrub_geo(1, 100, T)])],
            expect: in_each(
                &[None],
                vec![
                    Ids(vec![100, 300, 400]),
                    Field(400, "/retweeted_status/quoted_status/text", txt(100)),
                    Field(400, "/quoted_status/text", txt(100)),
                    Lacks(400, "/retweeted_status/quoted_status/coordinates"),
                    Lacks(400, "/retweeted_status/quoted_status/place"),
                    Lacks(400, "/quoted_status/coordinates"),
                    Lacks(400, "/quoted_status/place"),
                    Nowhere(place(100)),
                    Field(400, "/retweeted_status/place/full_name", place(300)),
                ],
            ),
        },
        ContentCase {
            name: "scrub_geo inside a v2 includes.tweets entry".into(),
            steps: vec![Import(vec![v2.to_owned()]), Replay(vec![scrub_geo(5, 500, T)])],
            expect: in_each(
                &[None],
                vec![
                    Ids(vec![400, 500]),
                    Field(400, "/includes/tweets/0/text", txt(500)),
                    Lacks(400, "/includes/tweets/0/geo"),
                    Nowhere(place(500)),
                    Lacks(500, "/geo"),
                ],
            ),
        },
    ];
    run_content_cases(backend, cases);
}

fn embedded_ids_above_2_53_table(backend: Backend) {
    // Q - 1, Q, Q + 1 and the quoter's id are all the same number as a
    // double: any id read through a float would mix them up.
    const Q: u64 = 1_557_433_858_676_740_098;
    const QUOTER: u64 = 1_557_433_858_676_740_200;
    let v1_line = || v1(QUOTER, 7, false, &quoting(Q, &v1(Q, 6, true, "")));
    let v2_line = || {
        format!(
            r#"{{"data":{{"id":"{QUOTER}","author_id":"7","text":"{}","referenced_tweets":[{{"type":"quoted","id":"{Q}"}}]}},"includes":{{"tweets":[{{"id":"{Q}","author_id":"6","text":"{}"}}]}}}}"#,
            txt(QUOTER),
            txt(Q)
        )
    };
    let kept = || vec![Ids(vec![Q, QUOTER]), Has(QUOTER, txt(Q)), Check(QUOTER, true), Check(Q, true)];
    let gone = |ptr: &'static str| {
        vec![
            Ids(vec![QUOTER]),
            Has(QUOTER, txt(QUOTER)),
            Nowhere(txt(Q)),
            Field(QUOTER, ptr, Q.to_string()),
            Check(QUOTER, true),
            Check(Q, false),
        ]
    };
    let cases = vec![
        ContentCase {
            name: "above 2^53: deleting a neighbour id leaves the copy".into(),
            steps: vec![Import(vec![v1_line()]), Replay(vec![delete(Q + 1, 6, T), delete(Q - 1, 6, T)])],
            expect: in_each(&[None], kept()),
        },
        ContentCase {
            name: "above 2^53: deleting the quoted id removes the copy".into(),
            steps: vec![Import(vec![v1_line()]), Replay(vec![delete(Q + 1, 6, T), delete(Q, 6, T)])],
            expect: in_each(&[None], [gone("/quoted_status_id_str"), vec![Lacks(QUOTER, "/quoted_status")]].concat()),
        },
        ContentCase {
            name: "above 2^53, v2: deleting a neighbour id leaves the includes entry".into(),
            steps: vec![Import(vec![v2_line()]), Replay(vec![delete(Q + 1, 6, T)])],
            expect: in_each(&[None], kept()),
        },
        ContentCase {
            name: "above 2^53, v2: deleting the quoted id drops the includes entry".into(),
            steps: vec![Import(vec![v2_line()]), Replay(vec![delete(Q, 6, T)])],
            expect: in_each(&[None], gone("/data/referenced_tweets/0/id")),
        },
        ContentCase {
            name: "above 2^53: scrub_geo up to Q - 1 keeps the copy's geo".into(),
            steps: vec![Import(vec![v1_line()]), Replay(vec![scrub_geo(6, Q - 1, T)])],
            expect: in_each(&[None], vec![Field(QUOTER, "/quoted_status/place/full_name", place(Q))]),
        },
        ContentCase {
            name: "above 2^53: scrub_geo up to Q removes it".into(),
            steps: vec![Import(vec![v1_line()]), Replay(vec![scrub_geo(6, Q, T)])],
            expect: in_each(
                &[None],
                vec![Has(QUOTER, txt(Q)), Nowhere(place(Q)), Lacks(QUOTER, "/quoted_status/coordinates")],
            ),
        },
    ];
    run_content_cases(backend, cases);
}

/// A post imported three ways (rules.md, "Import is a merge"): in full, as
/// its own top-level line; as an embedded copy inside another user's post,
/// without its own retweeted_status / quoted_status; and as a bare X API v2
/// object without referenced_tweets. Whatever the order (each in a fresh
/// store, one import per line or all in one file), the full form is what is
/// exported, the export is the same, and what the full form said (the
/// retweet link) still decides visibility after the poorer imports.
fn import_merge_is_the_same_in_every_order_of_full_embedded_and_bare_forms(backend: Backend) {
    const ORDERS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let bare = r#"{"id":"200","author_id":"2","text":"TXT-200-END"}"#.to_owned();
    struct Variant {
        name: &'static str,
        /// full, embedded, bare
        forms: [String; 3],
        /// The export before, and after the delete of 100.
        before: Vec<See>,
        after: Vec<See>,
    }
    let variants = [
        Variant {
            // The bug this guards: 300's copy of 200 has no retweeted_status;
            // imported after 200's own line it made 200 a plain post, and
            // 200 and 300 outlived the delete of 100.
            name: "200 retweets 100; 300 retweets 200",
            forms: [
                v1(200, 2, false, &retweeting(&v1(100, 1, false, ""))),
                v1(300, 3, false, &retweeting(&v1(200, 2, false, ""))),
                bare.clone(),
            ],
            before: vec![Ids(vec![100, 200, 300]), Field(200, "/retweeted_status/text", txt(100)), Has(300, txt(200))],
            after: vec![Ids(vec![]), Nowhere(txt(100)), Nowhere(txt(200)), Check(200, false), Check(300, false)],
        },
        Variant {
            name: "200 quotes 100; 300 quotes 200",
            forms: [
                v1(200, 2, false, &quoting(100, &v1(100, 1, false, ""))),
                v1(300, 3, false, &quoting(200, &v1(200, 2, false, ""))),
                bare,
            ],
            before: vec![
                Ids(vec![100, 200, 300]),
                Field(200, "/quoted_status/text", txt(100)),
                Field(300, "/quoted_status/text", txt(200)),
            ],
            after: vec![
                Ids(vec![200, 300]),
                Nowhere(txt(100)),
                Lacks(200, "/quoted_status"),
                Field(200, "/quoted_status_id_str", "100".into()),
                Field(300, "/quoted_status/text", txt(200)),
                Check(200, true),
                Check(300, true),
            ],
        },
    ];
    let mut failures = Vec::new();
    for v in &variants {
        let full: serde_json::Value = serde_json::from_str(&v.forms[0]).unwrap();
        let mut first: Option<(String, Vec<String>, Vec<String>)> = None;
        for order in ORDERS {
            for one_file in [false, true] {
                let label = format!(
                    "{}, imported in order {order:?} ({})",
                    v.name,
                    if one_file { "one file" } else { "one import each" }
                );
                let s = Scratch::on(backend);
                let lines: Vec<String> = order.iter().map(|i| v.forms[*i].clone()).collect();
                if one_file {
                    s.import(&lines);
                } else {
                    for l in &lines {
                        s.import(std::slice::from_ref(l));
                    }
                }
                let before = s.export(None);
                let kept = before
                    .iter()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                    .find(|j| line_id(j) == Some(200));
                if kept.as_ref() != Some(&full) {
                    failures.push(format!("{label}: 200 is not exported in its full form: {kept:?}"));
                }
                check_export(&s, None, &before, &v.before, &label, &mut failures);
                s.replay(&[delete(100, 1, T)]);
                let after = s.export(None);
                check_export(&s, None, &after, &v.after, &format!("{label}, after the delete of 100"), &mut failures);
                if let Some((first_label, b, a)) = &first {
                    if before != *b {
                        failures
                            .push(format!("{label}: the export differs from {first_label}'s:\n  {before:?}\n  {b:?}"));
                    }
                    if after != *a {
                        failures.push(format!(
                            "{label}: after the delete, the export differs from {first_label}'s:\n  {after:?}\n  {a:?}"
                        ));
                    }
                } else {
                    first = Some((label, before, after));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}
