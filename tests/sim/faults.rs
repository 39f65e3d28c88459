//! Every fault, triggered through `SimHandle::trigger`, the admin endpoint
//! or the config, as a client sees it.

use crate::common;

use std::time::{Duration, Instant};

use common::sim_client::{basic_auth, get, request, StreamEnd, StreamReader};
use complyd::sim::{start, Fault, FaultKind, SimConfig, SimHandle};
use serde_json::Value;

const STREAM: &str = "/stream/compliance/accounts/demo/publishers/twitter/prod.json";
const T: Duration = Duration::from_secs(5);

fn cfg(rate: f64) -> SimConfig {
    let mut c = SimConfig {
        listen: "127.0.0.1:0".into(),
        workers: 1,
        rate,
        heartbeat_interval_ms: 200,
        ..SimConfig::default()
    };
    c.rate_limit.connections = 1000;
    c
}

async fn open(sim: &SimHandle, p: u8) -> StreamReader {
    let a = basic_auth("demo@example.com", "sim-password");
    let r = StreamReader::open(
        sim.addr(),
        &format!("{STREAM}?partition={p}"),
        &[("Authorization", &a), ("Accept-Encoding", "gzip")],
    )
    .await
    .expect("open");
    assert_eq!(r.resp.status, 200);
    r
}

async fn attempt(sim: &SimHandle, p: u8) -> u16 {
    let a = basic_auth("demo@example.com", "sim-password");
    let mut r =
        get(sim.addr(), &format!("{STREAM}?partition={p}"), &[("Authorization", &a), ("Accept-Encoding", "gzip")], T)
            .await
            .expect("response");
    if r.status != 200 {
        let body: Value = serde_json::from_slice(&r.body(T).await.expect("body")).expect("JSON error body");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    r.status
}

fn is_event(m: &str) -> bool {
    serde_json::from_str::<Value>(m)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.len() == 1 && !o.contains_key("error") && !o.contains_key("info")))
        .unwrap_or(false)
}

fn error_message(m: &str) -> Option<String> {
    let v: Value = serde_json::from_str(m).ok()?;
    Some(v.get("error")?.get("message")?.as_str()?.to_string())
}

#[actix_rt::test]
async fn drop_mid_message_cuts_a_line_and_the_connection() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 1).await;
    assert!(r.read_messages(20, T).await);
    sim.trigger(Fault::new(FaultKind::DropMidMessage).on_partition(1));
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Dropped), "no terminating chunk");
    assert!(!r.decoder.partial().is_empty(), "half a message arrived");
    assert!(r.decoder.partial().starts_with(b"{\""), "{:?}", String::from_utf8_lossy(r.decoder.partial()));
    assert!(!r.decoder.is_complete());
    assert!(r.message_strings().iter().all(|m| is_event(m)));
    let s = sim.stats();
    assert!(s.partitions[0].events_skipped >= 1);
    assert_eq!(s.partitions[0].events_sent as usize, r.message_count(), "only whole messages count as sent");
    sim.stop().await;
}

#[actix_rt::test]
async fn stall_sends_nothing_not_even_heartbeats_then_resumes() {
    let sim = start(cfg(0.001)).await.expect("start");
    let mut r = open(&sim, 2).await;
    r.read_for(Duration::from_millis(500)).await;
    let before = r.heartbeat_times().len();
    assert!(before >= 1, "heartbeats before the stall");
    let t = Instant::now();
    sim.trigger(Fault::new(FaultKind::Stall { duration_ms: 900 }).on_partition(2));
    r.read_for(Duration::from_millis(1500)).await;
    let after: Vec<Instant> = r.heartbeat_times().into_iter().filter(|h| *h > t).collect();
    assert!(!after.is_empty(), "heartbeats resume after the stall");
    assert!(
        after[0].duration_since(t) >= Duration::from_millis(850),
        "silent for the stall: {:?}",
        after[0].duration_since(t)
    );
    assert!(r.end.is_none());
    sim.stop().await;
}

#[actix_rt::test]
async fn status_faults_answer_the_next_attempts() {
    let sim = start(cfg(10.0)).await.expect("start");
    sim.trigger(Fault::new(FaultKind::Status { status: 503 }).times(2));
    assert_eq!(attempt(&sim, 1).await, 503);
    assert_eq!(attempt(&sim, 5).await, 503);
    assert_eq!(attempt(&sim, 1).await, 200);
    sim.trigger(Fault::new(FaultKind::Status { status: 429 }));
    assert_eq!(attempt(&sim, 2).await, 429);
    assert_eq!(attempt(&sim, 2).await, 200);
    sim.trigger(Fault::new(FaultKind::Status { status: 401 }).on_partition(3).times(2));
    assert_eq!(attempt(&sim, 4).await, 200, "other partitions unaffected");
    assert_eq!(attempt(&sim, 3).await, 401);
    assert_eq!(attempt(&sim, 3).await, 401);
    assert_eq!(attempt(&sim, 3).await, 200);
    let s = sim.stats();
    assert_eq!((s.responses_with(503), s.responses_with(429), s.responses_with(401)), (2, 1, 2));
    assert_eq!(s.rate_limited_total, 1);
    sim.stop().await;
}

#[actix_rt::test]
async fn forced_disconnect_sends_the_error_then_ends_cleanly() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 3).await;
    assert!(r.read_messages(10, T).await);
    sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: None }).on_partition(3));
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Clean), "zero-length chunk");
    assert!(r.decoder.is_complete(), "gzip member complete (trailer checked)");
    let msgs = r.message_strings();
    let last = msgs.last().expect("messages");
    let v: Value = serde_json::from_str(last).expect("json");
    assert_eq!(v["error"]["message"], "Forced Disconnect: Too many connections. (Allowed Connections = 2)");
    assert!(v["error"]["sent"].as_str().is_some_and(|s| s.ends_with("+00:00")));
    assert!(msgs[..msgs.len() - 1].iter().all(|m| is_event(m)));
    sim.stop().await;
}

#[actix_rt::test]
async fn full_buffer_disconnect_loses_what_was_buffered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("rec.tsv");
    let mut c = cfg(1000.0);
    c.record = Some(record.clone());
    let sim = start(c).await.expect("start");
    let mut r = open(&sim, 1).await;
    assert!(r.read_messages(20, T).await);
    sim.trigger(Fault::new(FaultKind::FullBuffer { lose_events: 30 }).on_partition(1));
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Clean));
    assert!(r.decoder.is_complete());
    let msgs = r.message_strings();
    let err = error_message(msgs.last().expect("last")).expect("error line");
    assert!(err.contains("unable to keep up"), "{err}");
    let s = sim.stats();
    assert!(s.partitions[0].events_skipped >= 30, "lost: {}", s.partitions[0].events_skipped);
    assert_eq!(s.partitions[0].full_buffer_disconnects, 1);
    sim.stop().await;
    // The lost events were never written: the record holds what arrived.
    let text = std::fs::read_to_string(&record).expect("record");
    let recorded: Vec<&str> = text.lines().filter_map(|l| l.splitn(3, '\t').nth(2)).collect();
    assert_eq!(recorded, msgs.iter().map(String::as_str).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn a_client_that_cannot_keep_up_is_cut_off() {
    let mut c = cfg(4000.0);
    c.buffer_batches = 2;
    let sim = start(c).await.expect("start");
    let mut r = open(&sim, 1).await;
    sim.trigger(Fault::new(FaultKind::Trickle { bytes_per_sec: 2000, duration_ms: None }).on_partition(1));
    assert_eq!(r.read_to_end(Duration::from_secs(15)).await, Some(StreamEnd::Clean));
    let msgs = r.message_strings();
    let err = error_message(msgs.last().expect("last")).expect("error line");
    assert!(err.contains("unable to keep up"), "{err}");
    let s = sim.stats();
    assert_eq!(s.partitions[0].full_buffer_disconnects, 1);
    assert!(s.partitions[0].events_skipped > 0);
    sim.stop().await;
}

#[actix_rt::test]
async fn malformed_lines_arrive_then_the_stream_goes_on() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 5).await;
    assert!(r.read_messages(5, T).await);
    sim.trigger(Fault::new(FaultKind::Malformed { lines: 6 }).on_partition(5));
    let before = r.message_count();
    assert!(r.read_messages(before + 6 + 20, T).await);
    let msgs = r.message_strings();
    let bad: Vec<usize> = msgs.iter().enumerate().filter(|(_, m)| !is_event(m)).map(|(k, _)| k).collect();
    assert_eq!(bad.len(), 6, "six malformed lines: {bad:?}");
    assert_eq!(bad[5] - bad[0], 5, "sent together");
    assert!(
        msgs[bad[0]].contains("\"id\":\"1557445923210514432\" \"initial_tweet_id\""),
        "the documented missing comma"
    );
    assert!(msgs[bad[5] + 1..].iter().filter(|m| is_event(m)).count() >= 20, "events continue");
    assert!(r.end.is_none());
    sim.stop().await;
}

#[actix_rt::test]
async fn an_oversized_line_arrives_whole() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 6).await;
    assert!(r.read_messages(5, T).await);
    sim.trigger(Fault::new(FaultKind::Oversized { bytes: 1_200_000 }).on_partition(6));
    assert!(r.read_until(T, |r| r.decoder.oversized_lines == 1 && r.message_count() > 15).await);
    let big = r.messages().into_iter().find(|m| m.len() > 1024 * 1024).expect("oversized line").to_vec();
    assert_eq!(big.len(), 1_200_000);
    let v: Value = serde_json::from_slice(&big).expect("valid JSON");
    assert!(v.get("sim_oversized").is_some());
    sim.stop().await;
}

#[actix_rt::test]
async fn truncated_gzip_ends_the_body_without_a_trailer() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 7).await;
    assert!(r.read_messages(5, T).await);
    sim.trigger(Fault::new(FaultKind::TruncatedGzip).on_partition(7));
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Clean), "HTTP body ends properly");
    assert!(!r.decoder.is_complete(), "but the gzip member is truncated");
    assert!(r.error.is_none(), "what arrived decodes");
    assert!(r.message_strings().iter().all(|m| is_event(m)), "no partial line is delivered as a message");
    sim.stop().await;
}

#[actix_rt::test]
async fn trickle_limits_the_byte_rate() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 8).await;
    assert!(r.read_messages(5, T).await);
    let t = Instant::now();
    sim.trigger(Fault::new(FaultKind::Trickle { bytes_per_sec: 400, duration_ms: Some(1500) }).on_partition(8));
    r.read_for(Duration::from_millis(1300)).await;
    // Skip what was already in flight when the fault fired.
    let window: Vec<(Instant, usize)> =
        r.chunks.iter().copied().filter(|(at, _)| at.duration_since(t) >= Duration::from_millis(300)).collect();
    let bytes: usize = window.iter().map(|(_, n)| n).sum();
    assert!(!window.is_empty(), "bytes keep coming");
    assert!(window.iter().all(|(_, n)| *n <= 20), "small pieces: {window:?}");
    assert!(bytes <= 600, "about 400 B/s over 1 s, got {bytes}");
    // Afterwards the backlog arrives at full speed.
    let n = r.message_count();
    assert!(r.read_messages(n + 100, Duration::from_secs(5)).await);
    sim.stop().await;
}

#[actix_rt::test]
async fn a_fault_on_one_partition_leaves_the_others_alone() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut p1 = open(&sim, 1).await;
    let mut p2 = open(&sim, 2).await;
    sim.trigger(
        Fault::new(FaultKind::ForcedDisconnect { message: Some("Forced Disconnect: operational reasons".into()) })
            .on_partition(2),
    );
    assert_eq!(p2.read_to_end(T).await, Some(StreamEnd::Clean));
    assert_eq!(
        error_message(p2.message_strings().last().expect("last")).as_deref(),
        Some("Forced Disconnect: operational reasons")
    );
    p1.read_for(Duration::from_millis(500)).await;
    assert!(p1.end.is_none());
    assert!(p1.message_count() > 20);
    assert!(p1.message_strings().iter().all(|m| is_event(m)));
    sim.stop().await;
}

#[actix_rt::test]
async fn config_faults_fire_after_the_given_number_of_events() {
    let mut c = cfg(0.0);
    c.faults = vec![
        Fault::new(FaultKind::ForcedDisconnect { message: None }).on_partition(1).after(100),
        Fault::new(FaultKind::DropMidMessage).on_partition(2).after(50).times(2),
    ];
    let sim = start(c).await.expect("start");
    let mut p1 = open(&sim, 1).await;
    assert_eq!(p1.read_to_end(T).await, Some(StreamEnd::Clean));
    let msgs = p1.message_strings();
    assert_eq!(msgs.len(), 101, "exactly 100 events, then the error");
    assert!(error_message(&msgs[100]).is_some_and(|m| m.starts_with("Forced Disconnect")));
    for _ in 0..2 {
        let mut p2 = open(&sim, 2).await;
        assert_eq!(p2.read_to_end(T).await, Some(StreamEnd::Dropped));
        assert_eq!(p2.message_count(), 50);
    }
    // Used up: the third connection is left alone.
    let mut p2 = open(&sim, 2).await;
    assert!(p2.read_messages(200, T).await);
    assert!(p2.end.is_none());
    sim.stop().await;
}

#[actix_rt::test]
async fn the_admin_endpoint_triggers_faults() {
    let sim = start(cfg(1000.0)).await.expect("start");
    let mut r = open(&sim, 4).await;
    assert!(r.read_messages(5, T).await);
    let body = br#"{"kind":"forced_disconnect","partition":4,"message":"Forced Disconnect: from admin"}"#;
    let mut resp = request(sim.addr(), "POST", "/admin/faults", &[("Content-Type", "application/json")], body, T)
        .await
        .expect("post");
    assert_eq!(resp.status, 200);
    let _ = resp.body(T).await;
    assert_eq!(r.read_to_end(T).await, Some(StreamEnd::Clean));
    assert_eq!(
        error_message(r.message_strings().last().expect("last")).as_deref(),
        Some("Forced Disconnect: from admin")
    );
    let mut resp = request(sim.addr(), "POST", "/admin/faults", &[], br#"{"kind":"status","status":503,"count":1}"#, T)
        .await
        .expect("post");
    assert_eq!(resp.status, 200);
    let _ = resp.body(T).await;
    assert_eq!(attempt(&sim, 4).await, 503);
    assert_eq!(attempt(&sim, 4).await, 200);
    assert!(sim.stats().faults_fired_total >= 2);
    sim.stop().await;
}
