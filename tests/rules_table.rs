//! Every row of the rules tables and every clause of the visibility rule
//! (shared/spec/rules.md), each on a store built through the public commands
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
);

fn status_rules_table(backend: Backend) {
    run_cases(backend, vec![
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
            expect: vec![(10, Some("DE"), false), (10, Some("FR"), false), (10, Some("US"), true), (10, None, false)],
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
    ]);
}

fn user_rules_table(backend: Backend) {
    let mut cases = Vec::new();
    for (set, clear) in [("user_delete", "user_undelete"), ("user_protect", "user_unprotect"), ("user_suspend", "user_unsuspend")] {
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
            steps: vec![Import(vec![post(10, 1)]), Replay(vec![user_msg(set, 1, T + 1)]), Replay(vec![user_msg(clear, 1, T)])],
            expect: vec![(10, None, false)],
        });
        cases.push(Case {
            name: "states toggle indefinitely: the last event time wins",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![user_msg(clear, 1, T + 3), user_msg(set, 1, T), user_msg(clear, 1, T + 1), user_msg(set, 1, T + 2)]),
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
                Replay(vec![user_msg("user_delete", 1, now - 40 * DAY_MS), user_msg("user_undelete", 1, now - 5 * DAY_MS)]),
            ],
            expect: vec![(10, None, false)],
        },
        Case {
            name: "no purge when the undelete came within 30 days",
            steps: vec![
                Import(vec![post(10, 1)]),
                Replay(vec![user_msg("user_delete", 1, now - 40 * DAY_MS), user_msg("user_undelete", 1, now - 35 * DAY_MS)]),
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
    run_cases(backend, vec![
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
                Import(vec![r#"{"data":{"id":"20","author_id":"2","referenced_tweets":[{"type":"retweeted","id":"10"}]}}"#.to_owned()]),
                Replay(vec![delete(10, 1, T)]),
            ],
            expect: vec![(20, None, false)],
        },
        Case {
            name: "5: a retweet of an unstored, non-tombstoned original is visible",
            steps: vec![Import(vec![r#"{"data":{"id":"20","author_id":"2","referenced_tweets":[{"type":"retweeted","id":"10"}]}}"#.to_owned()])],
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
    ]);
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
