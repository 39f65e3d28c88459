//! The connection-rate limit (10 per 60 s per account, all partitions) and
//! the replay limit (5 per 5 minutes).

use crate::common;

use std::time::{Duration, Instant};

use common::sim_client::{basic_auth, get};
use complyd::sim::{start, SimConfig, SimHandle};
use serde_json::Value;

const T: Duration = Duration::from_secs(5);
const STREAM: &str = "/stream/compliance/accounts/demo/publishers/twitter/prod.json";

fn cfg() -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".into(),
        workers: 1,
        rate: 100.0,
        heartbeat_interval_ms: 200,
        ..SimConfig::default()
    }
}

/// Opens partition `p` and returns the status (the stream is dropped).
async fn attempt(sim: &SimHandle, p: u8, gzip: bool) -> (u16, Option<Value>) {
    let a = basic_auth("demo@example.com", "sim-password");
    let mut h = vec![("Authorization", a.as_str())];
    if gzip {
        h.push(("Accept-Encoding", "gzip"));
    }
    let mut r = get(sim.addr(), &format!("{STREAM}?partition={p}"), &h, T).await.expect("response");
    if r.status == 200 {
        return (200, None);
    }
    let body = r.body(T).await.expect("body");
    (r.status, Some(serde_json::from_slice(&body).expect("JSON body")))
}

#[actix_rt::test]
async fn the_eleventh_connection_request_in_a_minute_gets_429() {
    let sim = start(cfg()).await.expect("start");
    for k in 0..10u8 {
        assert_eq!(attempt(&sim, k % 8 + 1, true).await.0, 200, "request {}", k + 1);
    }
    let (status, body) = attempt(&sim, 3, true).await;
    assert_eq!(status, 429, "all partitions share the limit");
    let body = body.expect("body");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("10 connection requests per 60 seconds")),
        "{body}"
    );
    let s = sim.stats();
    assert_eq!(s.rate_limited_total, 1);
    assert_eq!(s.connections(), 10);
    sim.stop().await;
}

async fn sliding(count_rejected: bool) -> Vec<u16> {
    let mut c = cfg();
    c.rate_limit.connections = 2;
    c.rate_limit.window_ms = 1000;
    c.rate_limit.count_rejected = count_rejected;
    let sim = start(c).await.expect("start");
    let t0 = Instant::now();
    let mut out = vec![attempt(&sim, 1, true).await.0, attempt(&sim, 2, true).await.0];
    // Deliberate fixed waits: the requests must land at these points of the limiter window.
    actix_rt::time::sleep(Duration::from_millis(500).saturating_sub(t0.elapsed())).await;
    out.push(attempt(&sim, 3, true).await.0); // refused at ~500 ms
    actix_rt::time::sleep(Duration::from_millis(1150).saturating_sub(t0.elapsed())).await;
    // The first two left the window; the refused one (if counted) has not.
    out.push(attempt(&sim, 4, true).await.0);
    out.push(attempt(&sim, 5, true).await.0);
    sim.stop().await;
    out
}

#[actix_rt::test]
async fn the_window_slides_and_refused_requests_count_when_configured() {
    assert_eq!(sliding(true).await, vec![200, 200, 429, 200, 429]);
    assert_eq!(sliding(false).await, vec![200, 200, 429, 200, 200]);
}

#[actix_rt::test]
async fn every_authenticated_request_counts_but_bad_credentials_do_not() {
    let mut c = cfg();
    c.rate_limit.connections = 2;
    let sim = start(c).await.expect("start");
    // 401s are not attributed to the account.
    for _ in 0..3 {
        let mut r =
            get(sim.addr(), &format!("{STREAM}?partition=1"), &[("Accept-Encoding", "gzip")], T).await.expect("r");
        assert_eq!(r.status, 401);
        let _ = r.body(T).await;
    }
    // A refused 406 is still a connection request.
    assert_eq!(attempt(&sim, 1, false).await.0, 406);
    assert_eq!(attempt(&sim, 1, true).await.0, 200);
    assert_eq!(attempt(&sim, 1, true).await.0, 429);
    sim.stop().await;
}

#[actix_rt::test]
async fn replay_has_its_own_limit() {
    let mut c = cfg();
    c.rate_limit.connections = 1;
    c.replay.requests = 5;
    c.replay.min_age_minutes = 0;
    c.rate = 1.0;
    let sim = start(c).await.expect("start");
    let a = basic_auth("demo@example.com", "sim-password");
    let now = chrono::Utc::now() - chrono::Duration::minutes(3);
    let from = now.format("%Y%m%d%H%M").to_string();
    let to = (now + chrono::Duration::minutes(1)).format("%Y%m%d%H%M").to_string();
    let path = format!("/replay/compliance/accounts/demo/publishers/twitter/prod.json?fromDate={from}&toDate={to}");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let mut r = get(sim.addr(), &path, &[("Authorization", &a), ("Accept-Encoding", "gzip")], T).await.expect("r");
        statuses.push(r.status);
        let _ = r.body(T).await;
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    // The stream limit is separate: one stream connection is still allowed.
    assert_eq!(attempt(&sim, 1, true).await.0, 200);
    assert_eq!(attempt(&sim, 1, true).await.0, 429);
    sim.stop().await;
}
