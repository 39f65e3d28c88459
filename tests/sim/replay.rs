//! The replay endpoint: date rules, the closing `info` line in each variant,
//! the replay faults and determinism.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use common::sim_client::{basic_auth, get, StreamEnd, StreamReader};
use complyd::sim::{start, Fault, FaultKind, ReplayOutcome, SimConfig, SimHandle};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);
const RATE: f64 = 20.0;

fn cfg() -> SimConfig {
    let mut c = SimConfig { listen: "127.0.0.1:0".into(), workers: 1, rate: RATE, ..SimConfig::default() };
    c.replay.min_age_minutes = 0;
    c.replay.requests = 100;
    c
}

/// Start of the current minute minus `m` minutes.
fn minutes_ago(m: i64) -> DateTime<Utc> {
    let now = Utc::now();
    let floor = now.with_second(0).and_then(|d| d.with_nanosecond(0)).expect("minute");
    floor - chrono::Duration::minutes(m)
}

fn date(d: DateTime<Utc>) -> String {
    d.format("%Y%m%d%H%M").to_string()
}

fn query(from: &str, to: &str) -> String {
    format!("/replay/compliance/accounts/demo/publishers/twitter/prod.json?fromDate={from}&toDate={to}")
}

async fn replay(sim: &SimHandle, path: &str) -> StreamReader {
    let a = basic_auth("demo@example.com", "sim-password");
    let r = StreamReader::open(sim.addr(), path, &[("Authorization", &a), ("Accept-Encoding", "gzip")])
        .await
        .expect("open");
    assert_eq!(r.resp.status, 200, "{path}");
    r
}

async fn refused(sim: &SimHandle, path: &str) -> (u16, String) {
    let a = basic_auth("demo@example.com", "sim-password");
    let mut r = get(sim.addr(), path, &[("Authorization", &a), ("Accept-Encoding", "gzip")], T).await.expect("r");
    let body: Value = serde_json::from_slice(&r.body(T).await.expect("body")).expect("JSON body");
    (r.status, body["error"]["message"].as_str().unwrap_or_default().to_string())
}

fn times(msgs: &[String]) -> Vec<i64> {
    msgs.iter()
        .map(|m| {
            let v: Value = serde_json::from_str(m).expect("json");
            let inner = v.as_object().and_then(|o| o.values().next()).expect("inner").clone();
            match inner.get("timestamp_ms") {
                Some(t) => t.as_str().expect("string").parse().expect("ms"),
                None => DateTime::parse_from_rfc3339(inner["timestampMs"].as_str().expect("iso"))
                    .expect("iso")
                    .timestamp_millis(),
            }
        })
        .collect()
}

/// Reads the replay to its end: (event lines, parsed info line).
async fn drain(r: &mut StreamReader) -> (Vec<String>, Value) {
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Clean));
    assert!(r.decoder.is_complete(), "gzip trailer present");
    let mut msgs = r.message_strings();
    let info: Value = serde_json::from_str(&msgs.pop().expect("info line")).expect("json");
    assert!(info.get("info").is_some(), "last line is the info line: {info}");
    assert!(msgs.iter().all(|m| !m.contains("\"info\"")));
    (msgs, info)
}

#[actix_rt::test]
async fn a_replay_sends_the_window_then_completed() {
    let sim = start(cfg()).await.expect("start");
    let (from, to) = (minutes_ago(3), minutes_ago(2));
    let mut r = replay(&sim, &query(&date(from), &date(to))).await;
    let (events, info) = drain(&mut r).await;
    assert_eq!(info["info"]["message"], "Replay Request Completed");
    assert!(info["info"]["sent"].as_str().is_some_and(|s| s.ends_with("+00:00")));
    assert_eq!(info["info"]["activity_count"].as_u64(), Some(events.len() as u64));
    // One minute at 20 events/s, all partitions.
    assert!((1190..=1210).contains(&events.len()), "{}", events.len());
    let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
    assert!(times(&events).iter().all(|&x| x >= f && x < t), "fromDate inclusive, toDate exclusive");
    assert_eq!(sim.stats().replay_events_sent, events.len() as u64);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_replay_can_complete_with_errors() {
    let mut c = cfg();
    c.replay.outcome = ReplayOutcome::CompletedWithErrors;
    let sim = start(c).await.expect("start");
    let (from, to) = (minutes_ago(4), minutes_ago(2));
    let mut r = replay(&sim, &query(&date(from), &date(to))).await;
    let (events, info) = drain(&mut r).await;
    assert_eq!(info["info"]["message"], "Replay Request Completed with Errors");
    assert_eq!(info["info"]["activity_count"].as_u64(), Some(events.len() as u64));
    let failed = info["info"]["minutes_failed"].as_array().expect("minutes_failed");
    assert_eq!(failed.len(), 1);
    let failed_at = DateTime::parse_from_rfc3339(failed[0].as_str().expect("iso")).expect("iso").timestamp_millis();
    assert_eq!(failed_at, from.timestamp_millis());
    let ts = times(&events);
    assert!(ts.iter().all(|&x| x >= failed_at + 60_000), "the failed minute is missing");
    assert!((1190..=1210).contains(&events.len()), "the other minute arrives: {}", events.len());
    sim.stop().await;
}

#[actix_rt::test]
async fn a_replay_can_fail_to_complete() {
    let sim = start(cfg()).await.expect("start");
    sim.trigger(Fault::new(FaultKind::ReplayOutcome { outcome: ReplayOutcome::Failed }));
    let (from, to) = (minutes_ago(6), minutes_ago(2));
    let mut r = replay(&sim, &query(&date(from), &date(to))).await;
    let (events, info) = drain(&mut r).await;
    assert_eq!(info["info"]["message"], "Replay Request Failed to Complete");
    let mid = from + chrono::Duration::minutes(2);
    assert_eq!(info["info"]["unprocessed_range"]["fromDate"], date(mid));
    assert_eq!(info["info"]["unprocessed_range"]["toDate"], date(to));
    assert_eq!(info["info"]["activity_count"].as_u64(), Some(events.len() as u64));
    assert!(times(&events).iter().all(|&x| x < mid.timestamp_millis()));
    assert!((2390..=2410).contains(&events.len()), "{}", events.len());
    // The fault was for one replay: the next one completes.
    let mut r = replay(&sim, &query(&date(from), &date(from + chrono::Duration::minutes(1)))).await;
    let (_, info) = drain(&mut r).await;
    assert_eq!(info["info"]["message"], "Replay Request Completed");
    sim.stop().await;
}

#[actix_rt::test]
async fn an_aborted_replay_has_no_info_line() {
    let sim = start(cfg()).await.expect("start");
    sim.trigger(Fault::new(FaultKind::ReplayAbort));
    let (from, to) = (minutes_ago(3), minutes_ago(1));
    let mut r = replay(&sim, &query(&date(from), &date(to))).await;
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Dropped));
    let msgs = r.message_strings();
    assert!(!msgs.is_empty() && msgs.len() < 2400, "part of the window: {}", msgs.len());
    assert!(msgs.iter().all(|m| !m.contains("\"info\"")), "no info line");
    sim.stop().await;
}

#[actix_rt::test]
async fn replay_date_rules_are_enforced() {
    let mut c = cfg();
    c.replay.min_age_minutes = 30; // the documented default
    let sim = start(c).await.expect("start");
    let base = "/replay/compliance/accounts/demo/publishers/twitter/prod.json";
    let ok_from = date(minutes_ago(120));
    let ok_to = date(minutes_ago(60));
    let cases = [
        (base.to_string(), "required"),
        (format!("{base}?fromDate={ok_from}"), "required"),
        (query("2024-01-01", &ok_to), "YYYYMMDDHHMM"),
        (query(&ok_from, "20240101000"), "YYYYMMDDHHMM"),
        (query("202413010000", &ok_to), "not a valid date"),
        (query(&ok_to, &ok_from), "earlier than toDate"),
        (query(&ok_from, &ok_from), "earlier than toDate"),
        (query(&date(minutes_ago(5 * 24 * 60 + 10)), &ok_to), "within the last"),
        // The default minimum age is 30 minutes.
        (query(&date(minutes_ago(40)), &date(minutes_ago(10))), "in the past"),
    ];
    for (path, needle) in &cases {
        let (status, msg) = refused(&sim, path).await;
        assert_eq!(status, 400, "{path}");
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let mut r = replay(&sim, &query(&ok_from, &date(minutes_ago(119)))).await;
    let (_, info) = drain(&mut r).await;
    assert_eq!(info["info"]["message"], "Replay Request Completed", "a valid window is served");
    sim.stop().await;
}

#[actix_rt::test]
async fn replay_needs_gzip() {
    let sim = start(cfg()).await.expect("start");
    let a = basic_auth("demo@example.com", "sim-password");
    let mut r = get(sim.addr(), &query(&date(minutes_ago(3)), &date(minutes_ago(2))), &[("Authorization", &a)], T)
        .await
        .expect("r");
    assert_eq!(r.status, 406);
    let _ = r.body(T).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn replays_with_the_same_seed_are_identical() {
    let epoch = Utc::now().timestamp_millis() - 3_600_000;
    let (from, to) = (date(minutes_ago(5)), date(minutes_ago(4)));
    let mut got = Vec::new();
    for seed in [5, 5, 6] {
        let mut c = cfg();
        c.seed = seed;
        c.epoch_ms = Some(epoch);
        let sim = start(c).await.expect("start");
        let mut r = replay(&sim, &query(&from, &to)).await;
        let (events, _) = drain(&mut r).await;
        sim.stop().await;
        got.push(events);
    }
    assert!(got[0].len() > 1000);
    assert_eq!(got[0], got[1], "same seed, same window, same lines");
    assert_ne!(got[0], got[2], "another seed differs");
}

#[actix_rt::test]
async fn replays_are_recorded_as_partition_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("replay.tsv");
    let mut c = cfg();
    c.record = Some(path.clone());
    let sim = start(c).await.expect("start");
    let mut r = replay(&sim, &query(&date(minutes_ago(3)), &date(minutes_ago(2)))).await;
    let (events, info) = drain(&mut r).await;
    sim.stop().await;
    let text = std::fs::read_to_string(&path).expect("record");
    let rows: Vec<(&str, &str)> = text
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let p = f.next().expect("partition");
            let _ms: i64 = f.next().expect("ms").parse().expect("unix ms");
            (p, f.next().expect("line"))
        })
        .collect();
    assert!(rows.iter().all(|(p, _)| *p == "0"), "replay lines carry partition 0");
    let lines: Vec<&str> = rows.iter().map(|(_, l)| *l).collect();
    assert_eq!(lines.len(), events.len() + 1);
    assert_eq!(&lines[..events.len()], events.iter().map(String::as_str).collect::<Vec<_>>().as_slice());
    let recorded_info: Value = serde_json::from_str(lines[events.len()]).expect("info json");
    assert_eq!(recorded_info, info);
}
