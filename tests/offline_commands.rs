//! The offline commands as a user runs them: import after replay, bad input,
//! dead-letter records, exit codes, summaries, apply-batch, the shipped
//! example.

mod common;
use common::*;
use std::path::Path;

const T: i64 = 1_700_000_000_000;

#[test]
fn import_after_replay_honours_tombstones_purges_and_scrubbed_geo() {
    let s = Scratch::new();
    let now = now_ms();
    s.replay(&[delete(10, 1, T), user_msg("user_delete", 2, now - 31 * DAY_MS), scrub_geo(3, 30, T)]);
    let summary = s.import(&[
        post(10, 1),           // tombstoned id
        post(11, 1),           // fine
        retweet(12, 4, 10, 1), // retweet of a tombstone
        post(20, 2),           // author purged
        geo_post(30, 3),       // geo scrubbed (id == up_to: inclusive)
        geo_post(31, 3),       // after up_to: keeps geo
    ]);
    assert!(summary.contains("stored 3 posts"), "{summary}");
    assert!(summary.contains("refused 4"), "10 twice (alone and embedded in 12), 12, 20: {summary}");
    assert!(summary.contains("stored without scrubbed geo 1"), "{summary}");
    assert_eq!(s.export_ids(None), vec![11, 30, 31]);
    let stored_30 = rusqlite::Connection::open(s.db_path())
        .unwrap()
        .query_row("SELECT json FROM posts WHERE id = 30", [], |r| r.get::<_, String>(0))
        .unwrap();
    assert!(!stored_30.contains("coordinates") && !stored_30.contains("place"), "geo is not even stored: {stored_30}");
    let with_geo: Vec<String> = s.export(None).into_iter().filter(|l| l.contains("coordinates")).collect();
    assert_eq!(with_geo.len(), 1, "{with_geo:?}");
    assert!(with_geo[0].contains(r#""id_str":"31""#), "{with_geo:?}");
}

#[test]
fn purge_turns_stored_posts_into_tombstones_for_good() {
    let s = Scratch::new();
    let now = now_ms();
    s.import(&[post(10, 1), post(11, 1), retweet(12, 2, 10, 1)]);
    let summary = s.replay(&[user_msg("user_delete", 1, now - 31 * DAY_MS)]);
    assert!(summary.contains("purged 1 users (2 posts)"), "{summary}");
    let count: i64 = rusqlite::Connection::open(s.db_path())
        .unwrap()
        .query_row("SELECT count(*) FROM posts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "the purged posts and the retweet of one are removed");
    // Even a late undelete (outside the window) and a re-import bring nothing back.
    s.replay(&[user_msg("user_undelete", 1, now - DAY_MS)]);
    s.import(&[post(10, 1), post(11, 1)]);
    assert!(!s.visible(10, None) && !s.visible(11, None) && !s.visible(12, None));
}

/// A purge lifted by a late undelete, then brought back by a later delete,
/// is carried out again: the posts stored between the two lose their rows
/// and become tombstones, and their copies leave the posts that carry them.
fn a_purge_lifted_and_brought_back_is_carried_out_again(backend: Backend) {
    let s = Scratch::on(backend);
    let now = now_ms();
    s.import(&[post(100, 1)]);
    let first = s.replay(&[user_msg("user_delete", 1, now - 40 * DAY_MS)]);
    assert!(first.contains("purged 1 users (1 posts)"), "{first}");
    // The undelete arrives late: the first delete no longer purges, so
    // the user's new posts are stored (and copied by others).
    s.replay(&[user_msg("user_undelete", 1, now - 39 * DAY_MS)]);
    s.import(&[
        r#"{"id_str":"150","user":{"id_str":"1"},"text":"purged-again-words"}"#.to_owned(),
        r#"{"id_str":"300","user":{"id_str":"3"},"text":"quoting","quoted_status_id_str":"150","quoted_status":{"id_str":"150","user":{"id_str":"1"},"text":"purged-again-words"}}"#.to_owned(),
        r#"{"data":{"id":"400","author_id":"4","text":"hi @one"},"includes":{"users":[{"id":"1","name":"purged-again-profile"}]}}"#.to_owned(),
    ]);
    assert!(s.stored_json().contains("purged-again-words"), "150 is stored while the purge is lifted");
    // A later delete whose 30 days have passed: a purge again.
    let second = s.replay(&[user_msg("user_delete", 1, now - 35 * DAY_MS)]);
    assert!(second.contains("purged 1 users (1 posts)"), "{second}");
    let again = s.replay(&[]);
    assert!(again.contains("purged 0 users"), "a purge carried out is not carried out twice: {again}");
    assert_eq!(s.export_ids(None), vec![300, 400]);
    let stored = s.stored_json();
    for withdrawn in ["purged-again-words", "purged-again-profile"] {
        assert!(!stored.contains(withdrawn), "{withdrawn} is in the stored JSON: {stored}");
    }
    // 150 is a tombstone now: importing it again stores nothing, even once
    // an undelete lifts the second purge too.
    s.replay(&[user_msg("user_undelete", 1, now - 34 * DAY_MS)]);
    s.import(&[r#"{"id_str":"150","user":{"id_str":"1"},"text":"purged-again-words"}"#.to_owned()]);
    assert!(!s.visible(150, None));
    assert!(!s.stored_json().contains("purged-again-words"));
}

/// What the rules withdraw leaves the store's files, not only its answers:
/// a deleted post's words, a retweet embedding them, a purged author's
/// words and scrubbed coordinates are overwritten, not left in the files'
/// free space for anyone who reads the bytes (SQLite keeps a deleted row's
/// bytes unless told not to).
#[test]
fn withdrawn_words_leave_the_store_files_not_only_its_answers() {
    let s = Scratch::new();
    let now = now_ms();
    let says = |id: u64, user: u64, words: &str| {
        format!(r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"{words}"}}"#)
    };
    let mut lines = vec![
        says(10, 1, "deleted-words-alpha"),
        r#"{"id_str":"12","user":{"id_str":"4"},"text":"RT","retweeted_status":{"id_str":"10","user":{"id_str":"1"},"text":"deleted-words-alpha"}}"#.to_owned(),
        says(20, 2, "purged-words-beta"),
        r#"{"id_str":"30","user":{"id_str":"3"},"text":"here","coordinates":{"type":"Point","coordinates":[8.654321,47.123456]},"geo":{"type":"Point","coordinates":[47.123456,8.654321]},"place":{"full_name":"Scrubbedville"}}"#.to_owned(),
        says(40, 5, "kept-words-gamma"),
        // Posts that stay, carrying copies of the deleted and purged ones: a
        // quote, a retweet of a quote (the copy one level down), v2 includes.
        r#"{"id_str":"50","user":{"id_str":"6"},"text":"quoting","quoted_status_id_str":"10","quoted_status":{"id_str":"10","user":{"id_str":"1"},"text":"deleted-words-alpha"}}"#.to_owned(),
        r#"{"id_str":"52","user":{"id_str":"7"},"text":"RT","retweeted_status":{"id_str":"51","user":{"id_str":"8"},"text":"quoting too","quoted_status_id_str":"20","quoted_status":{"id_str":"20","user":{"id_str":"2"},"text":"purged-words-beta"}}}"#.to_owned(),
        r#"{"data":{"id":"60","author_id":"6","text":"v2 quoting","referenced_tweets":[{"type":"quoted","id":"10"}]},"includes":{"tweets":[{"id":"10","author_id":"1","text":"deleted-words-alpha"}]}}"#.to_owned(),
        // Ids above 2^53 and 2^63: a quote of a post that is deleted.
        r#"{"id_str":"9007199254740993","user":{"id_str":"6"},"text":"big quote","quoted_status_id_str":"9223372036854775813","quoted_status":{"id_str":"9223372036854775813","user":{"id_str":"1"},"text":"big-id-words-zeta"}}"#.to_owned(),
        // A v2 post carrying the purged user's profile.
        r#"{"data":{"id":"62","author_id":"6","text":"hello @two"},"includes":{"users":[{"id":"2","name":"purged-profile-delta"},{"id":"6","name":"kept-profile-epsilon"}]}}"#.to_owned(),
        // And a quote of the geo-scrubbed post, carrying its coordinates.
        r#"{"id_str":"56","user":{"id_str":"6"},"text":"quoting geo","quoted_status_id_str":"30","quoted_status":{"id_str":"30","user":{"id_str":"3"},"text":"here","coordinates":{"type":"Point","coordinates":[8.654321,47.123456]},"place":{"full_name":"Scrubbedville"}}}"#.to_owned(),
    ];
    // Neighbours on the same pages, as in any archive.
    lines.extend((100..400).map(|i| post(i, 9)));
    s.import(&lines);
    s.replay(&[
        delete(10, 1, T),
        delete(9_223_372_036_854_775_813, 1, T),
        user_msg("user_delete", 2, now - 31 * DAY_MS),
        scrub_geo(3, 30, T),
    ]);
    // A quote of the deleted post imported after its delete.
    s.import(&[r#"{"id_str":"54","user":{"id_str":"6"},"text":"late quote","quoted_status_id_str":"10","quoted_status":{"id_str":"10","user":{"id_str":"1"},"text":"deleted-words-alpha"}}"#.to_owned()]);
    let shown = s.export_ids(None);
    for kept in [30, 40, 50, 51, 52, 54, 56, 60, 62, 9_007_199_254_740_993] {
        assert!(shown.contains(&kept), "{kept} is kept: {shown:?}");
    }
    assert!(!shown.contains(&10) && !shown.contains(&12) && !shown.contains(&20), "{shown:?}");
    let holds = |words: &str| files_holding(s.dir.path(), "store.db", words);
    assert_eq!(holds("late quote").len(), 1, "the search reads the posts' file");
    assert_eq!(holds("kept-profile-epsilon").len(), 1);
    assert_eq!(holds("kept-words-gamma").len(), 1, "the search reads the posts' file");
    let withdrawn_words = [
        "deleted-words-alpha",
        "purged-words-beta",
        "purged-profile-delta",
        "big-id-words-zeta",
        "Scrubbedville",
        "47.123456",
    ];
    for withdrawn in withdrawn_words {
        let found = holds(withdrawn);
        assert!(found.is_empty(), "{withdrawn:?} is still in {found:?}");
    }
}

/// A text cut inside an emoji ends in half of a UTF-16 pair (`\ud83d`), as
/// some archived posts do: serde_json reads such a line but refuses it as a
/// tree, and every step that takes content out of a post reads it as one.
#[test]
fn a_text_cut_inside_an_emoji_keeps_no_withdrawn_content() {
    let s = Scratch::new();
    let now = now_ms();
    let cut = r"cut \ud83d";
    s.import(&[
        // Quotes 100, deleted below.
        format!(r#"{{"id_str":"300","user":{{"id_str":"3"}},"text":"{cut}","quoted_status_id_str":"100","quoted_status":{{"id_str":"100","user":{{"id_str":"1"}},"text":"deleted-words-alpha"}}}}"#),
        // Its author (2) scrubs its geo below; 302 retweets it.
        format!(r#"{{"id_str":"301","user":{{"id_str":"2"}},"text":"{cut}","place":{{"full_name":"Scrubbedville"}}}}"#),
        format!(r#"{{"id_str":"302","user":{{"id_str":"4"}},"text":"RT {cut}","retweeted_status":{{"id_str":"301","user":{{"id_str":"2"}},"text":"{cut}","place":{{"full_name":"Scrubbedville"}}}}}}"#),
        // Carries the profile of user 5, purged below.
        format!(r#"{{"data":{{"id":"303","author_id":"6","text":"{cut}"}},"includes":{{"users":[{{"id":"5","name":"purged-profile-delta"}}]}}}}"#),
    ]);
    s.replay(&[delete(100, 1, T), scrub_geo(2, 301, T), user_msg("user_delete", 5, now - 31 * DAY_MS)]);
    // Imported after the scrub, which covers it: stored without its geo.
    s.import(&[format!(
        r#"{{"id_str":"299","user":{{"id_str":"2"}},"text":"{cut}","coordinates":{{"type":"Point","coordinates":[8.654321,47.123456]}}}}"#
    )]);
    let exported = s.export(None).join("\n");
    for kept in ["\"299\"", "\"300\"", "\"301\"", "\"302\"", "\"303\""] {
        assert!(exported.contains(kept), "{kept} is shown: {exported}");
    }
    for withdrawn in ["deleted-words-alpha", "Scrubbedville", "purged-profile-delta", "47.123456"] {
        assert!(!exported.contains(withdrawn), "{withdrawn:?} is in the export: {exported}");
        let found = files_holding(s.dir.path(), "store.db", withdrawn);
        assert!(found.is_empty(), "{withdrawn:?} is still in {found:?}");
    }
}

/// An event is never lost for a field it does not need: a delete with a
/// time that cannot be read, a withholding with one code that is not one, a
/// toggle whose ISO time writes its offset `+0000`, one carrying both time
/// fields. Each is applied, and nothing goes to the dead-letter file.
#[test]
fn an_event_is_applied_whatever_the_fields_it_does_not_need_hold() {
    let s = Scratch::new();
    s.import(&[post(19, 1), post(17, 2), post(21, 11), post(22, 15), post(23, 16)]);
    let summary = s.replay(&[
        r#"{"delete":{"status":{"id_str":"19"},"timestamp_ms":"x"}}"#.to_owned(),
        r#"{"status_withheld":{"status":{"id_str":"17"},"withheld_in_countries":["DE","XXX"],"timestamp_ms":"1"}}"#
            .to_owned(),
        r#"{"user_protect":{"id":11,"timestampMs":"2014-08-27T23:49:41.839+0000"}}"#.to_owned(),
        r#"{"user_protect":{"id":15,"timestamp_ms":"1432228177137","timestampMs":"2014-08-27T23:49:41.839+00:00"}}"#
            .to_owned(),
        // A toggle cannot be ordered without its time: still refused.
        r#"{"user_protect":{"id":16,"timestamp_ms":"yesterday"}}"#.to_owned(),
    ]);
    assert!(summary.contains("dead-lettered 1;"), "{summary}");
    assert!(!s.visible(19, None), "the delete applies");
    assert!(!s.visible(17, Some("DE")) && s.visible(17, Some("FR")), "withheld in DE, not elsewhere");
    assert!(!s.visible(21, None) && !s.visible(22, None), "both users are protected");
    assert!(s.visible(23, None));
    let dl = std::fs::read_to_string(s.dead_letter_path()).unwrap();
    assert_eq!(dl.lines().count(), 1, "{dl}");
    assert!(dl.contains("yesterday") && dl.contains("bad_timestamp"), "{dl}");
}

/// A v2 line carrying a post copy beside `data`, where neither import nor
/// the rules look, is refused: stored, the copy would outlive its delete.
/// X's envelope and twarc's `__twarc` beside `data` are stored as usual.
#[test]
fn a_v2_line_with_content_beside_its_data_is_refused_at_import() {
    let s = Scratch::new();
    let summary = s.import(&[
        r#"{"data":{"id":"300","author_id":"3","text":"mine"},"quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"secret-beside-data"}}"#.to_owned(),
        r#"{"data":{"id":"320","author_id":"3","text":"mine"},"referenced_tweets":[{"type":"quoted","id":"100","text":"secret-flat-beside-data"}]}"#.to_owned(),
        r#"{"data":{"id":"330","author_id":"3","text":"kept"},"includes":{"users":[{"id":"3"}]},"matching_rules":[{"id":"1","tag":"t"}],"errors":[],"meta":{},"__twarc":{"version":"2.14.0"}}"#.to_owned(),
    ]);
    assert!(summary.contains("stored 1 posts") && summary.contains("dead-lettered 2"), "{summary}");
    s.replay(&[delete(100, 1, T)]);
    assert_eq!(s.export_ids(None), vec![330]);
    let dl = std::fs::read_to_string(s.dead_letter_path()).unwrap();
    assert!(dl.contains(r#"[\"quoted_status\"] beside"#) && dl.contains(r#"[\"referenced_tweets\"] beside"#), "{dl}");
    assert!(!s.stored_json().contains("beside-data"));
}

#[test]
fn a_post_no_step_could_edit_is_dead_lettered_at_import() {
    let s = Scratch::new();
    let summary = s.import(&[
        r#"{"id_str":"10","user":{"id_str":"1"},"text":"x","n":1e400,"place":{"full_name":"Nowhere"}}"#.to_owned(),
        post(11, 1),
    ]);
    assert!(summary.contains("stored 1 posts") && summary.contains("dead-lettered 1"), "{summary}");
    let dl = std::fs::read_to_string(s.dead_letter_path()).unwrap();
    assert!(dl.contains("\"bad_payload\"") && dl.contains("withdrawn content"), "{dl}");
}

#[test]
fn malformed_lines_are_dead_lettered_with_source_and_position_and_skipped() {
    let s = Scratch::new();
    s.import(&[post(10, 1), post(11, 1)]);
    let input = s.dir.path().join("events.txt");
    let lines = [
        delete(10, 1, T),
        "{not json".to_owned(),
        r#"{"user_rename":{"id":5}}"#.to_owned(),
        r#"{"user_protect":{"id":"12x","timestamp_ms":"1"}}"#.to_owned(),
        String::new(),
        delete(11, 1, T),
    ];
    std::fs::write(&input, lines.join("\r\n") + "\r\n").unwrap();
    let out = s.run(&["replay", input.to_str().unwrap()], "");
    assert!(out.status.success(), "bad lines are never fatal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("applied 2 (delete=2)"), "{stderr}");
    assert!(stderr.contains("dead-lettered 3"), "{stderr}");
    assert!(stderr.contains("heartbeats 1"), "{stderr}");
    assert!(!s.visible(11, None), "the line after the bad ones was applied");
    let dl = std::fs::read_to_string(s.dead_letter_path()).unwrap();
    let recs: Vec<serde_json::Value> = dl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 3);
    let reasons: Vec<(&str, u64)> =
        recs.iter().map(|r| (r["reason"].as_str().unwrap(), r["position"].as_u64().unwrap())).collect();
    assert_eq!(reasons, vec![("invalid_json", 2), ("unknown_type", 3), ("bad_id", 4)]);
    assert!(recs.iter().all(|r| r["source"].as_str().unwrap().ends_with("events.txt")));
    assert_eq!(recs[0]["line"], "{not json");
}

#[test]
fn bad_import_lines_are_dead_lettered_too() {
    let s = Scratch::new();
    let summary = s.import(&[post(10, 1), "[1,2".to_owned(), r#"{"id_str":"11"}"#.to_owned(), post(12, 1)]);
    assert!(summary.contains("stored 2 posts") && summary.contains("dead-lettered 2"), "{summary}");
    let dl = std::fs::read_to_string(s.dead_letter_path()).unwrap();
    assert!(dl.contains("\"missing_field\"") && dl.contains("\"invalid_json\""), "{dl}");
}

#[test]
fn exit_codes_usage_is_1_io_is_2() {
    let s = Scratch::new();
    let code = |args: &[&str]| s.run(args, "").status.code().unwrap();
    assert_eq!(code(&["check", "12a"]), 1, "a malformed id");
    assert_eq!(code(&["check", "--country", "DEU", "1"]), 1, "a malformed country");
    assert_eq!(code(&["export", "--country", "1"]), 1);
    assert_eq!(code(&["replay", "/nonexistent/file"]), 2, "an unreadable input");
    assert_eq!(code(&["bogus"]), 1, "an unknown command is a usage error");
    assert_eq!(code(&["check"]), 1, "a missing argument is a usage error");
    assert_eq!(code(&["--help"]), 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_complyd"))
        .args(["check", "--db", "mysql://u:secret@h/db", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an unknown store URL");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mysql://") && !err.contains("secret"), "the password never appears: {err}");
}

#[test]
fn check_prints_one_json_line_per_id() {
    let s = Scratch::new();
    s.import(&[post(10, 1)]);
    let out = s.ok(&["check", "10", "11", "18446744073709551615"], "");
    assert_eq!(
        out,
        "{\"id\":\"10\",\"visible\":true}\n{\"id\":\"11\",\"visible\":false}\n{\"id\":\"18446744073709551615\",\"visible\":false}\n"
    );
}

#[test]
fn export_is_in_ascending_id_order() {
    let s = Scratch::new();
    s.import(&[post(30, 1), post(1557445923210514432, 1), post(10, 1), post(20, 2)]);
    assert_eq!(s.export_ids(None), vec![10, 20, 30, 1557445923210514432]);
}

#[test]
fn apply_batch_maps_reasons_onto_the_rules() {
    let s = Scratch::new();
    s.import(&[post(10, 1), post(11, 2), geo_post(12, 3), post(13, 4), post(14, 5)]);
    let tweets = s.dir.path().join("tweets.ndjson");
    std::fs::write(
        &tweets,
        [
            r#"{"id":"10","action":"delete","created_at":"2019-10-29T17:02:47.000Z","redacted_at":"2020-07-29T17:02:47.000Z","reason":"deleted"}"#,
            r#"{"id":"12","action":"delete","created_at":"2019-10-29T17:02:47.000Z","reason":"scrub_geo"}"#,
            r#"{"id":"99","action":"delete","created_at":"2019-10-29T17:02:47.000Z","reason":"protected"}"#,
            r#"{"id":"x","action":"delete","reason":"deleted"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = s.run(&["apply-batch", "--type", "tweets", tweets.to_str().unwrap()], "");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not stored (author unknown) 1") && err.contains("dead-lettered 1"), "{err}");
    let users = s.dir.path().join("users.ndjson");
    std::fs::write(
        &users,
        [
            r#"{"id":"2","action":"delete","created_at":"2019-10-29T17:02:47.000Z","reason":"suspended"}"#,
            r#"{"id":"4","action":"delete","created_at":"2019-10-29T17:02:47.000Z","reason":"protected"}"#,
            r#"{"id":"5","action":"delete","created_at":"2019-10-29T17:02:47.000Z","reason":"deactivated"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    s.ok(&["apply-batch", "--type", "users", users.to_str().unwrap()], "");
    assert_eq!(s.export_ids(None), vec![12]);
    assert!(!s.export(None)[0].contains("coordinates"), "scrub_geo removed the geo");
}

#[test]
fn the_readme_example_gives_what_the_readme_says() {
    let s = Scratch::new();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    s.ok(&["import", data.join("posts.jsonl").to_str().unwrap()], "");
    let out = s.run(&["replay", data.join("events.txt").to_str().unwrap()], "");
    assert!(out.status.success());
    assert_eq!(s.export_ids(None), vec![1001, 1002, 3001, 1557445923210514432]);
    assert_eq!(s.export_ids(Some("FR")), vec![1001, 1002, 1004, 3001, 1557445923210514432]);
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let line = "{\"id\":\"1003\",\"visible\":false}";
    assert!(readme.contains(line), "README shows the check output");
    assert!(s.ok(&["check", "1003"], "").contains(line));
}

#[test]
fn a_deleted_posts_content_and_its_retweets_are_gone_from_the_store_when_replay_exits() {
    let s = Scratch::new();
    s.import(&[post(10, 1), retweet(20, 2, 10, 1), post(30, 3)]);
    let summary = s.replay(&[delete(10, 1, T)]);
    assert!(summary.contains("removed 1 deleted posts and 1 of their retweets"), "{summary}");
    let conn = complyd::store::sqlite::connect(s.db_path().to_str().unwrap()).unwrap();
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM posts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, vec![30], "no trace of 10's text, nor of the retweet carrying it");
    let tombstones: i64 =
        conn.query_row("SELECT count(*) FROM tombstones WHERE id IN (10, 20)", [], |r| r.get(0)).unwrap();
    assert_eq!(tombstones, 2, "both ids stay as tombstones");
}

/// The gap ledger as `complyd gaps` shows it: gaps as the daemon records
/// them, moved forward only, each with its history.
fn the_gap_ledger_keeps_every_gap_with_its_history(backend: Backend) {
    use complyd::gaps::{GapCause, GapMove, GapState, NewGap};
    let s = Scratch::on(backend);
    {
        let mut st = complyd::store::open(&s.db()).unwrap();
        let gap = |partition, from_ms, to_ms, cause, state: GapState| NewGap {
            partition,
            from_ms,
            to_ms,
            cause,
            state,
            repair: None,
            note: format!("{} (test)", cause.as_str()),
        };
        let a = st.open_gap(&gap(3, T, T + 90_000, GapCause::Restart, GapState::Open), T + 91_000).unwrap();
        let b =
            st.open_gap(&gap(5, T + 1_000, T + 2_000, GapCause::FullBuffer, GapState::Repairing), T + 3_000).unwrap();
        assert!(st.move_gap(b, &GapMove::to(GapState::Repaired, "backfilled events committed"), T + 4_000).unwrap());
        assert!(
            !st.move_gap(b, &GapMove::to(GapState::Open, "never"), T + 5_000).unwrap(),
            "a repaired gap stays repaired"
        );
        assert!(!st.move_gap(999_999, &GapMove::to(GapState::Repaired, "unknown"), T + 5_000).unwrap());
        assert!(st.move_gap(a, &GapMove::to(GapState::Unrepairable, "older than Replay reaches"), T + 6_000).unwrap());
    }
    let out = s.run(&["gaps", "--json"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let gaps: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    // Oldest first: partition 3's restart gap, 90 s = 2 minutes rounded up.
    assert_eq!((gaps[0]["partition"].as_u64(), gaps[0]["cause"].as_str()), (Some(3), Some("restart")));
    assert_eq!((gaps[0]["state"].as_str(), gaps[0]["minutes"].as_i64()), (Some("unrepairable"), Some(2)));
    let history: Vec<&str> =
        gaps[1]["history"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(history, ["repairing", "repaired"], "{}", gaps[1]);
    assert_eq!(gaps[1]["history"][1]["note"], "backfilled events committed");
    // The table a person reads.
    let out = s.run(&["gaps"], "");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("restart") && l.contains("unrepairable")), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 unresolved"));
}

/// A v2 post carries a copy of another in `includes.tweets` without naming
/// its author (no `tweet.fields=author_id` in the request): the copy's geo
/// leaves the stored JSON once the stored post's author scrubbed it, whether
/// the carrier is imported after the scrub, or the scrubbed post itself is.
fn a_copy_that_does_not_name_its_author_loses_its_geo_whichever_came_first(backend: Backend) {
    let s = Scratch::on(backend);
    let carrier = |id: u64, of: u64, place: &str| {
        format!(
            r#"{{"data":{{"id":"{id}","author_id":"3","text":"quoting","referenced_tweets":[{{"type":"quoted","id":"{of}"}}]}},"includes":{{"tweets":[{{"id":"{of}","text":"there","geo":{{"place_id":"p{of}"}}}}],"places":[{{"id":"p{of}","full_name":"{place}"}}]}}}}"#
        )
    };
    // 100 is stored, its author scrubs, then its carrier 300 comes.
    s.import(&[r#"{"id_str":"100","user":{"id_str":"1"},"text":"there"}"#.to_owned()]);
    // 310 carries 110, its author scrubs, then 110 itself comes.
    s.import(&[carrier(310, 110, "Bergen-place")]);
    s.replay(&[scrub_geo(1, 100, T), scrub_geo(2, 110, T)]);
    s.import(&[carrier(300, 100, "Oslo-place")]);
    s.import(&[r#"{"id_str":"110","user":{"id_str":"2"},"text":"there"}"#.to_owned()]);
    let exported = s.export(None).join("\n");
    assert_eq!(s.export_ids(None), vec![100, 110, 300, 310], "{exported}");
    let stored = s.stored_json();
    for withdrawn in ["Oslo-place", "Bergen-place", "\"p100\"", "\"p110\""] {
        assert!(!exported.contains(withdrawn), "{withdrawn} is in the export: {exported}");
        assert!(!stored.contains(withdrawn), "{withdrawn} is in the stored JSON: {stored}");
    }
}

/// twarc's flattened files (`twarc2 flatten`, what most researchers keep):
/// each post with the posts it refers to merged into its
/// `referenced_tweets` entries and the users merged into `author`,
/// `in_reply_to_user` and `entities.mentions`. What is withdrawn leaves the
/// export and the stored JSON; a protected user's profile leaves the export.
fn twarc_flattened_posts_keep_no_withdrawn_content(backend: Backend) {
    let s = Scratch::on(backend);
    let now = now_ms();
    let twarc = r#""__twarc":{"url":"https://api.twitter.com/2/tweets/search/all","version":"2.14.0","retrieved_at":"2023-05-02T00:00:00+00:00"}"#;
    let lines = [
        // Quotes 100 (deleted below) and mentions user 2 (purged below), in
        // reply to user 4 (protected below).
        format!(
            r#"{{"id":"300","author_id":"3","text":"@two look","created_at":"2023-05-01T10:00:00.000Z","in_reply_to_user_id":"4","referenced_tweets":[{{"type":"quoted","id":"100","text":"deleted-words-alpha","author_id":"1","created_at":"2023-04-01T10:00:00.000Z","author":{{"id":"1","name":"author-one","username":"one"}}}}],"entities":{{"mentions":[{{"start":0,"end":4,"username":"two","id":"2","name":"purged-profile-delta","description":"purged-bio"}}]}},"note_tweet":{{"text":"@two look, at length","entities":{{"mentions":[{{"start":0,"end":4,"username":"two","id":"2","description":"purged-note-bio"}}]}}}},"author":{{"id":"3","name":"Three","username":"three"}},"in_reply_to_user":{{"id":"4","name":"protected-profile-kappa","username":"four"}},{twarc}}}"#
        ),
        // Quotes 101, whose author (5) scrubs its geo below.
        format!(
            r#"{{"id":"301","author_id":"3","text":"see this","referenced_tweets":[{{"type":"quoted","id":"101","text":"here","author_id":"5","geo":{{"place_id":"p9","full_name":"Scrubbedville","id":"p9"}},"author":{{"id":"5","name":"Five","username":"five"}}}}],"author":{{"id":"3","name":"Three","username":"three"}},{twarc}}}"#
        ),
        // A retweet of 100.
        format!(
            r#"{{"id":"302","author_id":"6","text":"RT @one: deleted-words-alpha","referenced_tweets":[{{"type":"retweeted","id":"100","text":"deleted-words-alpha","author_id":"1"}}],{twarc}}}"#
        ),
        // 4's own post, so that 4 is a user the store knows.
        r#"{"id":"303","author_id":"4","text":"mine"}"#.to_owned(),
    ];
    s.import(&lines);
    s.replay(&[
        delete(100, 1, T),
        scrub_geo(5, 101, T),
        user_msg("user_delete", 2, now - 31 * DAY_MS),
        user_msg("user_protect", 4, T),
    ]);
    let exported = s.export(None).join("\n");
    assert_eq!(s.export_ids(None), vec![101, 300, 301], "{exported}");
    assert!(exported.contains("\"type\":\"quoted\",\"id\":\"100\""), "the reference stays: {exported}");
    assert!(exported.contains("\"username\":\"two\""), "the mention as X sends it stays: {exported}");
    let stored = s.stored_json();
    for withdrawn in ["deleted-words-alpha", "Scrubbedville", "purged-profile-delta", "purged-bio", "purged-note-bio"] {
        assert!(!exported.contains(withdrawn), "{withdrawn} is in the export: {exported}");
        assert!(!stored.contains(withdrawn), "{withdrawn} is in the stored JSON: {stored}");
    }
    // Protection can be undone: judged at every read, kept in the store.
    assert!(!exported.contains("protected-profile-kappa"), "{exported}");
    assert!(stored.contains("protected-profile-kappa"));
    s.replay(&[user_msg("user_unprotect", 4, T + 1)]);
    assert!(s.export(None).join("\n").contains("protected-profile-kappa"));
}

on_both_backends!(
    a_purge_lifted_and_brought_back_is_carried_out_again,
    twarc_flattened_posts_keep_no_withdrawn_content,
    the_gap_ledger_keeps_every_gap_with_its_history,
    batch_job_runs_the_whole_flow_in_parts,
    a_copy_that_does_not_name_its_author_loses_its_geo_whichever_came_first
);

#[test]
fn replay_of_a_range_refuses_bad_times_and_a_missing_account_with_exit_1() {
    let s = Scratch::new();
    let err = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let out = s.run(&["replay", "--from", "yesterday", "--to", "202612010000"], "");
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("--from \"yesterday\" is not a time"), "{}", err(&out));
    let out = s.run(&["replay", "--from", "202612010000"], "");
    assert_eq!(out.status.code(), Some(1), "--to is required with --from: {}", err(&out));
    // No account configured: every problem at once, nothing fetched.
    let out = s.run(&["replay", "--from", "202612010000", "--to", "2026-12-01T01:00:00Z"], "");
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("stream.username") && err(&out).contains("password"), "{}", err(&out));
}

#[test]
fn a_read_command_refuses_a_store_that_does_not_exist_and_creates_none() {
    let s = Scratch::new();
    // A mistyped path, an empty file, a file that is not a database.
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        ("mistyped.db", None, "no store at"),
        ("empty.db", Some(b""), "not a complyd store"),
        ("notes.txt", Some(b"not a database, but someone's notes\n"), "not an SQLite database"),
    ];
    for (name, content, why) in cases {
        let path = s.dir.path().join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let db = format!("sqlite:{}", path.display());
        for args in [vec!["check", "1"], vec!["export"], vec!["gaps"], vec!["batch-job", "list"]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_complyd"))
                .args(&args)
                .args(["--db", &db])
                .current_dir(s.dir.path())
                .env_remove("COMPLYD_LOG")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{name} {args:?}: {err}");
            assert!(err.contains("no store at") && err.contains(name) && err.contains(why), "{name} {args:?}: {err}");
            assert!(out.stdout.is_empty(), "{name} {args:?} answered something");
            assert_eq!(std::fs::read(&path).ok().as_deref(), content, "{name} {args:?} changed the file");
            for suffix in ["-status", "-user", "-wal", "-shm"] {
                let beside = format!("{}{suffix}", path.display());
                assert!(!std::path::Path::new(&beside).exists(), "{name} {args:?} created {beside}");
            }
        }
    }
}

#[test]
fn a_read_command_refuses_a_store_missing_a_handler_file_and_recreates_none() {
    let s = Scratch::new();
    let out = s.run(&["import", "-"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let user_file = format!("{}-user", s.db_path().display());
    std::fs::remove_file(&user_file).unwrap();
    let out = s.run(&["export"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&user_file) && err.contains("restore it from the backup"), "{err}");
    assert!(out.stdout.is_empty() && !std::path::Path::new(&user_file).exists(), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn an_answer_that_cannot_be_written_says_so_and_fails() {
    let s = Scratch::new();
    let out = s.run(&["import", "-"], "{\"id_str\":\"1\",\"user\":{\"id_str\":\"2\"},\"text\":\"hello\"}\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for args in [vec!["check", "1"], vec!["export"], vec!["gaps"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_complyd"))
            .args(&args)
            .args(["--db", &s.db()])
            .current_dir(s.dir.path())
            .env_remove("COMPLYD_LOG")
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("cannot write the output: No space left on device"), "{args:?}: {err}");
        assert_eq!(err.matches("No space left").count(), 1, "{args:?}: {err}");
    }
}

#[cfg(unix)]
#[test]
fn the_store_and_the_dead_letter_file_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let out = s.run(&["replay", "-"], "{\"delete\":{\"status\":{\"id_str\":\"1\",\"user_id_str\":\"2\"},\"timestamp_ms\":\"1700000000000\"}}\r\nnot json\r\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = s.db_path();
    let mut files = complyd::store::sqlite::store_files(&db.to_string_lossy());
    files.push(format!("{}.deadletter.jsonl", db.display()));
    for f in files {
        let mode = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{f}: {e}")).permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} is open to others: {mode:o}");
    }
}

/// Runs complyd as a user who may read a store but not write its files:
/// `nobody` when the tests run as root (root may write any file), else this
/// user, from whom [`ReadOnlyStore::lock`] took the write permission. The
/// reader may write the directory, so that SQLite could create files there.
#[cfg(unix)]
struct ReadOnlyStore {
    /// The binary, where the other user can run it.
    exe: std::path::PathBuf,
    _bin: tempfile::TempDir,
    as_nobody: bool,
    dir: std::path::PathBuf,
}

#[cfg(unix)]
impl ReadOnlyStore {
    fn new(dir: &Path) -> ReadOnlyStore {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let as_nobody = std::fs::metadata(dir).unwrap().uid() == 0;
        let bin = tempfile::tempdir().unwrap();
        std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = bin.path().join("complyd");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_complyd"), &exe).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_complyd"), &exe).unwrap();
        }
        ReadOnlyStore { exe, _bin: bin, as_nobody, dir: dir.to_path_buf() }
    }

    /// Every file in the directory readable and not writable by the
    /// reader; the directory writable.
    fn lock(&self) {
        use std::os::unix::fs::PermissionsExt;
        let (file, dir) = if self.as_nobody { (0o644, 0o777) } else { (0o444, 0o755) };
        for e in std::fs::read_dir(&self.dir).unwrap() {
            std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(file)).unwrap();
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(dir)).unwrap();
    }

    /// The owner's permissions back (and the tempdir removable).
    fn unlock(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        v.sort();
        v
    }

    /// `complyd ARGS --db DB` as the reader: (exit code, stdout, stderr).
    fn run(&self, args: &[&str], db: &str) -> (Option<i32>, String, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(args).args(["--db", db]).current_dir(&self.dir).env_remove("COMPLYD_LOG");
        if self.as_nobody {
            cmd.uid(65534).gid(65534);
        }
        // A copied binary may still be open for writing in a process another
        // test thread forked meanwhile ("Text file busy").
        let mut tries = 0;
        let out = loop {
            match cmd.output() {
                Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                out => break out.unwrap(),
            }
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }
}

/// A researcher may read the archive the daemon's account keeps, but not
/// write it. While the daemon has the store open (its `-wal` and `-shm`
/// files beside it), the read commands answer from what it has committed,
/// the delete still in the WAL included, and the export holds none of the
/// deleted words. With no connection open, or with a store of an earlier
/// complyd to move, they say why in one line (exit 2). Nothing is ever
/// created beside the store.
#[cfg(unix)]
#[test]
fn a_store_this_user_may_only_read_answers_what_the_daemon_committed() {
    let s = Scratch::new();
    let posts = "{\"id_str\":\"1001\",\"user\":{\"id_str\":\"7\"},\"text\":\"withdrawn words\"}\n\
                 {\"id_str\":\"1002\",\"user\":{\"id_str\":\"8\"},\"text\":\"kept words\"}\n";
    let out = s.run(&["import", "-"], posts);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = s.db_path().to_string_lossy().into_owned();
    // The daemon's connections: each file read once, so its WAL is open.
    let held = complyd::store::sqlite::connect(&path).unwrap();
    for schema in ["main", "status", "user"] {
        held.query_row(&format!("SELECT count(*) FROM {schema}.sqlite_master"), [], |_| Ok(())).unwrap();
    }
    let delete =
        "{\"delete\":{\"status\":{\"id_str\":\"1001\",\"user_id_str\":\"7\"},\"timestamp_ms\":\"1700000000000\"}}\r\n";
    let out = s.run(&["replay", "-"], delete);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The tombstone is in the status file's WAL, not yet in the file.
    assert!(!tombstone_in_file(&format!("{path}-status"), 1001), "the tombstone is in the file, not only in its WAL");
    let reader = ReadOnlyStore::new(s.dir.path());
    let db = s.db();
    // Beside it, files the reader may not write either that are no store.
    std::fs::write(s.dir.path().join("notes.txt"), "someone's notes\n").unwrap();
    std::fs::write(s.dir.path().join("empty.db"), "").unwrap();
    let before = {
        reader.lock();
        reader.files()
    };
    let (code, stdout, err) = reader.run(&["check", "1001", "1002"], &db);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(stdout, "{\"id\":\"1001\",\"visible\":false}\n{\"id\":\"1002\",\"visible\":true}\n", "{err}");
    let (code, stdout, err) = reader.run(&["export"], &db);
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("kept words") && !stdout.contains("withdrawn"), "{stdout}");
    for args in [&["gaps"][..], &["batch-job", "list"]] {
        let (code, _, err) = reader.run(args, &db);
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    assert_eq!(reader.files(), before, "a read created a file beside the store");
    // The daemon stopped: its last connection took the WAL files away.
    reader.unlock();
    drop(held);
    assert!(!Path::new(&format!("{path}-wal")).exists());
    reader.lock();
    let before = reader.files();
    for args in [&["check", "1001"][..], &["export"], &["gaps"], &["batch-job", "list"]] {
        let (code, stdout, err) = reader.run(args, &db);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&format!("{path}-wal")) && err.contains("while complyd runs"), "{args:?}: {err}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    for (name, why) in [("notes.txt", "not an SQLite database"), ("empty.db", "not a complyd store")] {
        let (code, _, err) = reader.run(&["check", "1"], &format!("sqlite:{name}"));
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains("no store at") && err.contains(why), "{name}: {err}");
    }
    assert_eq!(reader.files(), before, "a read created a file beside the store");
    // A store of an earlier complyd, open: moving it needs its owner.
    reader.unlock();
    let held = complyd::store::sqlite::connect(&path).unwrap();
    held.pragma_update(None, "user_version", 7).unwrap();
    reader.lock();
    let (code, stdout, err) = reader.run(&["export"], &db);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("earlier complyd (schema version 7") && err.contains("may write its files"), "{err}");
    assert!(stdout.is_empty(), "{stdout}");
    reader.unlock();
    drop(held);
}

#[test]
fn a_store_in_a_missing_directory_is_one_clear_line_and_exit_1() {
    let s = Scratch::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_complyd"))
        .args(["replay", "-", "--db", "sqlite:/nonexistent-complyd-dir/x.db"])
        .current_dir(s.dir.path())
        .env_remove("COMPLYD_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent-complyd-dir") && err.contains("directory does not exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

// ---------------------------------------------------------------------------
// `complyd batch-job` against the simulator's batch compliance API.

/// What the test asks the simulator thread.
enum SimAsk {
    Stats(std::sync::mpsc::Sender<complyd::sim::SimStats>),
    Stop,
}

/// The simulator on a thread of its own (the command under test is a
/// process); stopped when dropped.
struct SimThread {
    addr: std::net::SocketAddr,
    ask: tokio::sync::mpsc::UnboundedSender<SimAsk>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimThread {
    fn start(cfg: complyd::sim::SimConfig) -> SimThread {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (ask, mut asks) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let sim = complyd::sim::start(cfg).await.expect("the simulator starts");
                addr_tx.send(sim.addr()).unwrap();
                while let Some(SimAsk::Stats(reply)) = asks.recv().await {
                    let _ = reply.send(sim.stats());
                }
                sim.stop().await;
            })
        });
        let addr = addr_rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the simulator's address");
        SimThread { addr, ask, thread: Some(thread) }
    }

    fn stats(&self) -> complyd::sim::SimStats {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ask.send(SimAsk::Stats(tx)).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        let _ = self.ask.send(SimAsk::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A simulator whose jobs take `processing_ms`; about `per_mille` of the
/// ids need action.
fn jobs_sim(processing_ms: u64, per_mille: u32, faults: Vec<complyd::sim::Fault>) -> SimThread {
    let mut cfg = complyd::sim::SimConfig { listen: "127.0.0.1:0".into(), workers: 1, rate: 1.0, ..Default::default() };
    cfg.jobs.processing_ms = processing_ms;
    cfg.jobs.action_per_mille = per_mille;
    cfg.faults = faults;
    SimThread::start(cfg)
}

const BEARER: &str = "sim-bearer-token";

/// `complyd batch-job ARGS` against `sim`, with the token in the environment.
fn batch_job(s: &Scratch, sim: &SimThread, args: &[&str], extra: &[(&str, &str)]) -> std::process::Command {
    let mut all = vec!["batch-job"];
    all.extend_from_slice(args);
    let mut cmd = s.command(&all);
    cmd.env("COMPLYD_BEARER_TOKEN", BEARER)
        .env("COMPLYD_BATCH_JOB__URL", format!("http://{}", sim.addr))
        .env("COMPLYD_BATCH_JOB__POLL_INTERVAL_MS", "100");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

fn output(mut cmd: std::process::Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Posts as an archive holds them: ids above 2^53, v1.1 and v2 forms, the
/// same post in both forms, and quote posts carrying the text of the post
/// they quote. Returns the lines and each stored post's author.
fn archive(n: u64, authors: u64) -> (Vec<String>, std::collections::BTreeMap<u64, u64>) {
    const BASE: u64 = 1_500_000_000_000_000_000;
    const USERS: u64 = 1_200_000_000_000_000_000;
    let mut lines = Vec::new();
    let mut author = std::collections::BTreeMap::new();
    for k in 0..n {
        let (id, user) = (BASE + k, USERS + k % authors);
        author.insert(id, user);
        if k % 10 == 9 {
            let (q, qu) = (id - 1, USERS + (k - 1) % authors);
            lines.push(format!(
                r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"post {id}","quoted_status_id_str":"{q}","quoted_status":{{"id_str":"{q}","user":{{"id_str":"{qu}"}},"text":"post {q}"}}}}"#
            ));
        } else if k % 7 == 3 {
            lines.push(format!(r#"{{"data":{{"id":"{id}","author_id":"{user}","text":"post {id}"}}}}"#));
            // The same post again, in the v1.1 form.
            lines.push(format!(r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"post {id}"}}"#));
        } else {
            lines.push(format!(r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"post {id}"}}"#));
        }
    }
    (lines, author)
}

/// The posts a tweets job's result (or a users job's) hides: deleted posts,
/// and every post of an author deactivated, protected or suspended.
fn hidden_by(kind: complyd::sim::JobType, author: &std::collections::BTreeMap<u64, u64>, per_mille: u32) -> Vec<u64> {
    use complyd::sim::{verdict, JobType};
    let hides_author = |r: Option<&str>| matches!(r, Some("deleted" | "deactivated" | "protected" | "suspended"));
    let mut gone_authors = std::collections::HashSet::new();
    let mut gone = std::collections::HashSet::new();
    for (&id, &user) in author {
        match kind {
            JobType::Tweets => match verdict(kind, id, per_mille) {
                Some("deleted") => {
                    gone.insert(id);
                }
                r if hides_author(r) => {
                    gone_authors.insert(user);
                }
                _ => {}
            },
            JobType::Users => {
                if hides_author(verdict(JobType::Users, user, per_mille)) {
                    gone_authors.insert(user);
                }
            }
        }
    }
    author.iter().filter(|(id, u)| gone.contains(*id) || gone_authors.contains(*u)).map(|(&id, _)| id).collect()
}

/// The whole flow, split into parts: every withdrawn post is gone from the
/// export, its text included (also from the quote posts that carried it).
fn batch_job_runs_the_whole_flow_in_parts(backend: Backend) {
    const PER_MILLE: u32 = 30;
    let s = Scratch::on(backend);
    let (lines, author) = archive(2_000, 500);
    s.import(&lines);
    let sim = jobs_sim(300, PER_MILLE, Vec::new());
    let (code, err) =
        output(batch_job(&s, &sim, &["run", "--type", "tweets"], &[("COMPLYD_BATCH_JOB__MAX_IDS", "600")]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2000 ids in 4 parts"), "600 ids a job: {err}");
    assert_eq!(sim.stats().jobs_created_total, 4);
    let hidden = hidden_by(complyd::sim::JobType::Tweets, &author, PER_MILLE);
    assert!(hidden.len() > 50, "the result withdraws something: {}", hidden.len());
    let export = s.export(None);
    let ids = s.export_ids(None);
    let expected: Vec<u64> = author.keys().copied().filter(|id| !hidden.contains(id)).collect();
    assert_eq!(ids, expected, "the export holds exactly the posts no result line withdrew");
    let text = export.join("\n");
    for id in &hidden {
        assert!(!text.contains(&format!("\"post {id}\"")), "the text of withdrawn post {id} is still exported");
    }
    // The jobs, as `batch-job list` shows them.
    let (code, err) = output(batch_job(&s, &sim, &["list", "--json"], &[]));
    assert_eq!(code, 0, "{err}");
    let list = s.command(&["batch-job", "list", "--json"]).output().unwrap();
    let jobs: Vec<serde_json::Value> =
        String::from_utf8(list.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(jobs.len(), 4);
    assert!(jobs.iter().all(|j| j["stage"] == "applied" && j["run"] == 1), "{jobs:?}");
    assert_eq!(jobs.iter().map(|j| j["ids"].as_u64().unwrap()).sum::<u64>(), 2_000);
    assert!(jobs.iter().all(|j| !j.to_string().contains("sig=")), "no signed URL is shown: {jobs:?}");
    // A second run is a new run: nothing left to resume.
    let (code, err) = output(batch_job(&s, &sim, &["run", "--type", "users"], &[]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("users run 1 done: 500 ids in 1 parts"), "{err}");
}

#[test]
fn a_failed_job_and_expired_urls_are_replaced_and_bad_lines_dead_lettered() {
    use complyd::sim::{Fault, FaultKind};
    const PER_MILLE: u32 = 30;
    let s = Scratch::new();
    let (lines, author) = archive(400, 100);
    s.import(&lines);
    // Users from a file with two lines that are no ids.
    let users: std::collections::BTreeSet<u64> = author.values().copied().collect();
    let mut file: Vec<String> = users.iter().map(u64::to_string).collect();
    file.insert(3, "not-an-id".into());
    file.insert(10, "12e4".into());
    file.insert(20, String::new());
    let path = s.dir.path().join("users.txt");
    std::fs::write(&path, file.join("\n") + "\n").unwrap();
    let faults = vec![
        Fault::new(FaultKind::JobUploadExpired),
        Fault::new(FaultKind::JobFailed),
        Fault::new(FaultKind::JobDownloadExpired),
        Fault::new(FaultKind::JobBadLines { lines: 3 }),
    ];
    let sim = jobs_sim(200, PER_MILLE, faults);
    let cmd = batch_job(
        &s,
        &sim,
        &["run", "--type", "users", path.to_str().unwrap()],
        &[("COMPLYD_BATCH_JOB__ATTEMPTS", "5")],
    );
    let (code, err) = output(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("upload URL expired")
            && err.contains("X says it failed")
            && err.contains("could not be downloaded"),
        "{err}"
    );
    assert_eq!(sim.stats().jobs_created_total, 4, "one job for each fault, then one that works");
    let list = s.command(&["batch-job", "list", "--json"]).output().unwrap();
    let stages: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["stage"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stages, ["expired", "failed", "expired", "applied"]);
    // Dead-lettered: the two bad ids of the file, and the three bad result lines.
    let dl = std::fs::read_to_string(s.dead_letter_path()).unwrap();
    let reasons: Vec<String> = dl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons.iter().filter(|r| *r == "bad_id").count(), 2, "{dl}");
    assert_eq!(reasons.iter().filter(|r| *r == "bad_payload").count(), 3, "{dl}");
    assert!(dl.contains("users.txt"), "a bad id names its file: {dl}");
    assert!(err.contains("dead-lettered 5"), "{err}");
    let hidden = hidden_by(complyd::sim::JobType::Users, &author, PER_MILLE);
    let expected: Vec<u64> = author.keys().copied().filter(|id| !hidden.contains(id)).collect();
    assert!(!hidden.is_empty());
    assert_eq!(s.export_ids(None), expected);
}

#[test]
fn an_interrupted_batch_job_resumes_the_job_it_created() {
    let s = Scratch::new();
    let (lines, author) = archive(300, 50);
    s.import(&lines);
    let sim = jobs_sim(4_000, 30, Vec::new());
    let mut child = batch_job(&s, &sim, &["run", "--type", "tweets"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while it waits for X (the job is created and its ids uploaded).
    let stage = || -> Option<String> {
        let conn = rusqlite::Connection::open(s.db_path()).ok()?;
        conn.query_row("SELECT stage FROM batch_jobs", [], |r| r.get(0)).ok()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stage().as_deref() != Some("uploaded") {
        assert!(std::time::Instant::now() < deadline, "the job never reached uploaded: {:?}", stage());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.export_ids(None).len(), author.len(), "nothing applied yet");
    let (code, err) = output(batch_job(&s, &sim, &["run", "--type", "tweets"], &[]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming tweets run 1"), "{err}");
    assert_eq!(sim.stats().jobs_created_total, 1, "the same job, not a second one: {err}");
    let hidden = hidden_by(complyd::sim::JobType::Tweets, &author, 30);
    assert_eq!(s.export_ids(None).len(), author.len() - hidden.len());
}

#[test]
fn batch_job_says_what_is_wrong_with_exit_1() {
    let s = Scratch::new();
    s.import(&[post(10, 1)]);
    let sim = jobs_sim(100, 30, Vec::new());
    // No token anywhere.
    let mut cmd = batch_job(&s, &sim, &["run", "--type", "tweets"], &[]);
    cmd.env_remove("COMPLYD_BEARER_TOKEN");
    let (code, err) = output(cmd);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("COMPLYD_BEARER_TOKEN"), "it says where the token is looked for: {err}");
    // A token X refuses: said without the token itself.
    let (code, err) =
        output(batch_job(&s, &sim, &["run", "--type", "tweets"], &[("COMPLYD_BEARER_TOKEN", "wrong-token-xyz")]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bearer token was refused") && !err.contains("wrong-token-xyz"), "{err}");
    // Plain http to a host that is not loopback.
    let (code, err) = output(batch_job(
        &s,
        &sim,
        &["run", "--type", "tweets"],
        &[("COMPLYD_BATCH_JOB__URL", "http://api.example.com"), ("COMPLYD_BATCH_JOB__MAX_IDS", "0")],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("use https://") && err.contains("batch_job.max_ids"), "every problem at once: {err}");
    assert_eq!(sim.stats().jobs_created_total, 0);
    // An unfinished run from the store is not taken over by a file.
    {
        let mut st = complyd::store::open(&s.db()).unwrap();
        st.save_batch_job(&complyd::batch_job::BatchJob {
            job_id: "77".into(),
            kind: complyd::batch_job::BatchType::Tweets,
            run: 1,
            part: 1,
            source: complyd::batch_job::Source::Store,
            cursor_from: i64::MIN,
            cursor_to: 10,
            ids: 1,
            last_part: true,
            stage: complyd::batch_job::Stage::Uploaded,
            upload_url: String::new(),
            upload_expires_ms: 0,
            download_url: String::new(),
            download_expires_ms: 0,
            created_ms: 1,
            updated_ms: 1,
            result_lines: None,
            note: String::new(),
        })
        .unwrap();
    }
    let ids = s.dir.path().join("ids.txt");
    std::fs::write(&ids, "10\n").unwrap();
    let (code, err) = output(batch_job(&s, &sim, &["run", "--type", "tweets", ids.to_str().unwrap()], &[]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unfinished tweets run") && err.contains("--new"), "{err}");
}
