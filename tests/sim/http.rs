//! Status codes and routing of the simulator's HTTP endpoints.

use crate::common;

use std::time::Duration;

use common::sim_client::{basic_auth, get, request, StreamReader};
use complyd::sim::{start, SimConfig, SimHandle};
use serde_json::Value;

const T: Duration = Duration::from_secs(5);

fn cfg() -> SimConfig {
    let mut c = SimConfig {
        listen: "127.0.0.1:0".into(),
        workers: 1,
        rate: 500.0,
        heartbeat_interval_ms: 200,
        ..SimConfig::default()
    };
    c.rate_limit.connections = 1000;
    c.replay.requests = 1000;
    c
}

fn auth() -> String {
    basic_auth("demo@example.com", "sim-password")
}

const STREAM: &str = "/stream/compliance/accounts/demo/publishers/twitter/prod.json";

async fn status_of(sim: &SimHandle, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = get(sim.addr(), path, headers, T).await.expect("response");
    let status = r.status;
    if status == 200 {
        return (status, Value::Null);
    }
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"), "{path}");
    let body = r.body(T).await.expect("body");
    let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: body not JSON ({e})"));
    (status, v)
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {v}"))
}

#[actix_rt::test]
async fn stream_opens_as_chunked_gzip_of_json_lines() {
    let sim = start(cfg()).await.expect("start");
    let a = auth();
    let path = format!("{STREAM}?partition=1");
    let mut r = StreamReader::open(sim.addr(), &path, &[("Authorization", &a), ("Accept-Encoding", "gzip")])
        .await
        .expect("open");
    assert_eq!(r.resp.status, 200);
    assert_eq!(r.resp.header("content-encoding"), Some("gzip"));
    assert_eq!(r.resp.header("transfer-encoding"), Some("chunked"));
    assert!(r.resp.header("content-type").is_some_and(|v| v.starts_with("application/json")));
    assert!(r.read_messages(5, Duration::from_secs(5)).await, "five messages within 5 s");
    for m in r.messages() {
        let v: Value = serde_json::from_slice(m).expect("JSON line");
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn bad_or_missing_credentials_get_401_with_a_json_body() {
    let sim = start(cfg()).await.expect("start");
    let path = format!("{STREAM}?partition=1");
    let wrong = basic_auth("demo@example.com", "nope");
    let other_user = basic_auth("someone@example.com", "sim-password");
    for headers in [
        vec![("Accept-Encoding", "gzip")],
        vec![("Accept-Encoding", "gzip"), ("Authorization", wrong.as_str())],
        vec![("Accept-Encoding", "gzip"), ("Authorization", other_user.as_str())],
        vec![("Accept-Encoding", "gzip"), ("Authorization", "Bearer abc")],
        vec![("Accept-Encoding", "gzip"), ("Authorization", "Basic !!!notbase64")],
    ] {
        let (status, body) = status_of(&sim, &path, &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert!(message(&body).contains("credentials"), "{body}");
        assert!(body["error"]["sent"].as_str().is_some_and(|s| s.ends_with("+00:00")));
    }
    let replay =
        "/replay/compliance/accounts/demo/publishers/twitter/prod.json?fromDate=202001010000&toDate=202001010100";
    assert_eq!(status_of(&sim, replay, &[("Accept-Encoding", "gzip")]).await.0, 401);
    assert_eq!(sim.stats().responses_with(401), 6);
    sim.stop().await;
}

#[actix_rt::test]
async fn missing_gzip_gets_406_with_the_documented_message() {
    let sim = start(cfg()).await.expect("start");
    let a = auth();
    let path = format!("{STREAM}?partition=2");
    for enc in [None, Some("identity"), Some("deflate"), Some("gzip;q=0"), Some("br, gzip;q=0.0")] {
        let mut h = vec![("Authorization", a.as_str())];
        if let Some(e) = enc {
            h.push(("Accept-Encoding", e));
        }
        let (status, body) = status_of(&sim, &path, &h).await;
        assert_eq!(status, 406, "{enc:?}");
        assert!(message(&body).contains("Accept-Encoding: gzip"), "{body}");
        assert!(message(&body).starts_with("This connection requires compression."), "{body}");
    }
    for enc in ["deflate, gzip", "gzip;q=0.5", "GZIP", "x-gzip"] {
        let (status, _) = status_of(&sim, &path, &[("Authorization", &a), ("Accept-Encoding", enc)]).await;
        assert_eq!(status, 200, "{enc}");
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn partition_missing_or_out_of_range_gets_400() {
    let sim = start(cfg()).await.expect("start");
    let a = auth();
    let h = [("Authorization", a.as_str()), ("Accept-Encoding", "gzip")];
    let (status, body) = status_of(&sim, STREAM, &h).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("partition"), "{body}");
    for p in ["0", "9", "abc", "-1", "", "256", "1.5"] {
        let (status, body) = status_of(&sim, &format!("{STREAM}?partition={p}"), &h).await;
        assert_eq!(status, 400, "partition={p}");
        assert!(message(&body).contains("partition"), "{body}");
    }
    for p in 1..=8 {
        assert_eq!(status_of(&sim, &format!("{STREAM}?partition={p}"), &h).await.0, 200, "partition {p}");
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn wrong_paths_get_404_and_wrong_methods_405() {
    let sim = start(cfg()).await.expect("start");
    let a = auth();
    let h = [("Authorization", a.as_str()), ("Accept-Encoding", "gzip")];
    for path in [
        "/",
        "/stream",
        "/stream/compliance/accounts/other/publishers/twitter/prod.json?partition=1",
        "/stream/compliance/accounts/demo/publishers/twitter/other.json?partition=1",
        "/stream/compliance/accounts/demo/publishers/twitter/prod?partition=1",
        "/stream/powertrack/accounts/demo/publishers/twitter/prod.json?partition=1",
        "/stream/compliance/accounts/demo/publishers/twitter/prod.json/extra?partition=1",
        "/admin/nothing",
    ] {
        let (status, body) = status_of(&sim, path, &h).await;
        assert_eq!(status, 404, "{path}");
        assert!(!message(&body).is_empty());
    }
    let mut r = request(sim.addr(), "POST", &format!("{STREAM}?partition=1"), &h, b"x", T).await.expect("post");
    assert_eq!(r.status, 405);
    let _ = r.body(T).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn admin_endpoint_validates_and_reports() {
    let sim = start(cfg()).await.expect("start");
    let addr = sim.addr();
    for bad in [
        &b"not json"[..],
        br#"{"kind":"nope"}"#,
        br#"{"kind":"stall","partition":9}"#,
        br#"[{"kind":"status","status":200}]"#,
    ] {
        let mut r = request(addr, "POST", "/admin/faults", &[], bad, T).await.expect("post");
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        let v: Value = serde_json::from_slice(&r.body(T).await.expect("body")).expect("json");
        assert!(message(&v).starts_with("Invalid fault"), "{v}");
    }
    let mut r = request(
        addr,
        "POST",
        "/admin/faults",
        &[],
        br#"[{"kind":"malformed","partition":3,"lines":2},{"kind":"status","status":503,"count":2}]"#,
        T,
    )
    .await
    .expect("post");
    assert_eq!(r.status, 200);
    assert_eq!(r.body(T).await.expect("body"), br#"{"armed":2}"#);
    let mut r = get(addr, "/admin/faults", &[], T).await.expect("list");
    let v: Value = serde_json::from_slice(&r.body(T).await.expect("body")).expect("json");
    let list = v["faults"].as_array().expect("faults array");
    assert_eq!(list.len(), 2, "{v}");
    assert!(list.iter().any(|f| f["kind"] == "status" && f["count"] == 2));
    let mut r = request(addr, "DELETE", "/admin/faults", &[], b"", T).await.expect("delete");
    assert_eq!(r.body(T).await.expect("body"), br#"{"cleared":2}"#);
    let mut r = get(addr, "/admin/stats", &[], T).await.expect("stats");
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body(T).await.expect("body")).expect("json");
    assert_eq!(v["partitions"].as_array().map(Vec::len), Some(8));
    assert!(v["requests_total"].as_u64().unwrap_or(0) >= 8);
    sim.stop().await;

    let sim = start(SimConfig { admin: false, ..cfg() }).await.expect("start");
    let mut r = get(sim.addr(), "/admin/stats", &[], T).await.expect("stats");
    assert_eq!(r.status, 404, "admin can be switched off");
    let _ = r.body(T).await;
    sim.stop().await;
}

#[actix_rt::test]
async fn start_refuses_a_bad_config_and_urls_are_well_formed() {
    let bad = SimConfig { rate: f64::NAN, listen: "127.0.0.1:0".into(), ..SimConfig::default() };
    let err = start(bad).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let sim = start(cfg()).await.expect("start");
    assert_ne!(sim.addr().port(), 0, "port 0 picks a free port");
    assert_eq!(
        sim.stream_url(3),
        format!("http://{}/stream/compliance/accounts/demo/publishers/twitter/prod.json?partition=3", sim.addr())
    );
    assert_eq!(
        sim.replay_url(),
        format!("http://{}/replay/compliance/accounts/demo/publishers/twitter/prod.json", sim.addr())
    );
    sim.stop().await;
}

#[actix_rt::test]
async fn awc_with_automatic_gzip_reads_the_stream() {
    use futures_util::StreamExt as _;
    let sim = start(cfg()).await.expect("start");
    let client = awc::Client::default();
    let mut resp =
        client.get(sim.stream_url(2)).basic_auth("demo@example.com", "sim-password").send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let deadline = actix_rt::time::Instant::now() + Duration::from_secs(5);
    let mut body = Vec::new();
    while body.windows(2).filter(|w| w == b"\r\n").count() < 20 {
        let left = deadline.saturating_duration_since(actix_rt::time::Instant::now());
        match actix_rt::time::timeout(left, resp.next()).await {
            Ok(Some(Ok(b))) => body.extend_from_slice(&b),
            other => panic!("stream ended early: {:?}", other.map(|o| o.map(|r| r.map(|b| b.len())))),
        }
    }
    let text = String::from_utf8(body).expect("utf-8");
    let complete = &text[..text.rfind("\r\n").expect("a line") + 2];
    let lines: Vec<&str> = complete.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 20);
    for l in lines {
        let v: Value = serde_json::from_str(l).expect("JSON line");
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
    }
    sim.stop().await;
}
