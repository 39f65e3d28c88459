//! The stream endpoint's body: heartbeats, framing, the generator's content
//! and determinism, live rate and partitioning, backfill, redundant
//! connections and `--record`.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::sim_client::{basic_auth, get, Line, LineDecoder, StreamEnd, StreamReader};
use complyd::sim::{generate_posts, start, Fault, FaultKind, SimConfig, SimHandle};
use serde_json::Value;

const STREAM: &str = "/stream/compliance/accounts/demo/publishers/twitter/prod.json";

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

async fn open(sim: &SimHandle, query: &str) -> StreamReader {
    let a = basic_auth("demo@example.com", "sim-password");
    let r = StreamReader::open(
        sim.addr(),
        &format!("{STREAM}?{query}"),
        &[("Authorization", &a), ("Accept-Encoding", "gzip")],
    )
    .await
    .expect("open");
    assert_eq!(r.resp.status, 200, "{query}");
    r
}

fn json(m: &str) -> Value {
    serde_json::from_str(m).unwrap_or_else(|e| panic!("not JSON ({e}): {m}"))
}

/// The routing id of an event (Post id, or user id for user events).
fn key(v: &Value) -> u64 {
    let (name, inner) = v.as_object().and_then(|o| o.iter().next()).expect("one key");
    let s = |x: &Value| x.as_str().map(|s| s.parse::<u64>().expect("numeric string")).expect("string id");
    match name.as_str() {
        "delete" if inner.get("favorite").is_some() => s(&inner["favorite"]["tweet_id_str"]),
        "delete" | "status_withheld" | "drop" | "undrop" => s(&inner["status"]["id_str"]),
        "tweet_edit" => s(&inner["id"]),
        "scrub_geo" => s(&inner["user_id_str"]),
        "user_withheld" => s(&inner["user"]["id_str"]),
        // User events: an exact bare number (parsed straight to u64).
        _ => inner["id"].as_u64().expect("numeric id"),
    }
}

fn event_time(v: &Value) -> i64 {
    let inner = v.as_object().and_then(|o| o.values().next()).expect("inner");
    if let Some(t) = inner.get("timestamp_ms") {
        return t.as_str().expect("timestamp_ms is a string").parse().expect("ms");
    }
    let iso = inner["timestampMs"].as_str().expect("timestampMs");
    chrono::DateTime::parse_from_rfc3339(iso).expect("ISO-8601").timestamp_millis()
}

#[actix_rt::test]
async fn heartbeats_arrive_after_each_idle_interval() {
    // One event every 1000 s: the stream is idle.
    let sim = start(cfg(0.001)).await.expect("start");
    let opened = Instant::now();
    let mut r = open(&sim, "partition=1").await;
    r.read_for(Duration::from_millis(1400)).await;
    let hb = r.heartbeat_times();
    assert!(hb.len() >= 4, "heartbeats in 1.4 s: {}", hb.len());
    assert!(hb[0].duration_since(opened) >= Duration::from_millis(150), "first heartbeat too early");
    for w in hb.windows(2) {
        let gap = w[1].duration_since(w[0]);
        assert!(gap >= Duration::from_millis(150), "heartbeats closer than the interval: {gap:?}");
        assert!(gap <= Duration::from_millis(700), "heartbeat late: {gap:?}");
    }
    // At most event 0, if this connection beat the producer's first tick.
    assert!(r.message_count() <= 1);
    assert!(r.end.is_none());
    assert!(sim.stats().partitions[0].heartbeats_sent >= 4);
    sim.stop().await;
}

#[actix_rt::test]
async fn no_heartbeats_while_data_flows() {
    let sim = start(cfg(4000.0)).await.expect("start");
    let mut r = open(&sim, "partition=4").await;
    r.read_for(Duration::from_millis(1000)).await;
    assert!(r.message_count() > 100, "{}", r.message_count());
    assert!(r.heartbeat_times().is_empty(), "heartbeats only when idle");
    sim.stop().await;
}

#[actix_rt::test]
async fn framing_survives_any_chunk_boundary() {
    let mut c = cfg(20_000.0);
    c.generator.unknown_ratio = 0.2; // messages with multi-byte UTF-8
    c.split_chunks_ratio = 0.5;
    let sim = start(c).await.expect("start");
    let mut r = open(&sim, "partition=6").await;
    assert!(r.read_messages(3000, Duration::from_secs(10)).await);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.chunks.len() > 1, "several HTTP chunks");
    let received: Vec<Line> = r.lines.iter().map(|l| l.line.clone()).collect();
    // Chunk by chunk as received: some chunks end inside a message.
    let mut d = LineDecoder::new();
    let (mut mid_line, mut off) = (0, 0);
    for (_, len) in &r.chunks {
        d.feed(&r.compressed[off..off + len]).expect("valid gzip");
        off += len;
        if !d.partial().is_empty() {
            mid_line += 1;
        }
    }
    assert!(mid_line > 0, "no chunk ended inside a message ({} chunks)", r.chunks.len());
    // Every line decoded from the chunks as they came is also what any other
    // cut of the same bytes gives, down to one byte at a time.
    for step in [1usize, 7, 4096] {
        let mut d = LineDecoder::new();
        let mut lines = Vec::new();
        for piece in r.compressed.chunks(step) {
            lines.extend(d.feed(piece).expect("valid gzip"));
        }
        assert_eq!(lines, received, "cut every {step} bytes");
        assert_eq!(d.partial(), r.decoder.partial());
    }
    let mut multibyte = 0;
    for m in r.message_strings() {
        assert!(!m.contains('\r') && !m.contains('\n'), "{m}");
        let v = json(&m);
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{m}");
        if m.chars().any(|ch| ch.len_utf8() > 1) {
            multibyte += 1;
        }
    }
    assert!(multibyte > 100, "multi-byte messages: {multibyte}");
    sim.stop().await;
}

#[actix_rt::test]
async fn messages_carry_every_type_and_every_trap() {
    let mut c = cfg(0.0);
    c.generator.unknown_ratio = 0.01;
    let sim = start(c).await.expect("start");
    let mut r = open(&sim, "partition=3").await;
    assert!(r.read_messages(6000, Duration::from_secs(15)).await);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let mut rounded = 0;
    let mut seen = HashSet::new();
    let mut dups = 0;
    let mut user_state: HashMap<u64, HashSet<String>> = HashMap::new();
    for m in r.message_strings() {
        let v = json(&m);
        let (name, inner) = v.as_object().and_then(|o| o.iter().next()).expect("one key");
        let kind = if name == "delete" && inner.get("favorite").is_some() {
            "delete_favorite".to_string()
        } else {
            name.clone()
        };
        *kinds.entry(kind.clone()).or_default() += 1;
        assert_eq!(key(&v) % 8 + 1, 3, "event on the wrong partition: {m}");
        if let Some(s) = inner.get("status") {
            let exact: u64 = s["id_str"].as_str().expect("id_str").parse().expect("u64");
            let raw = m.split("\"id\":").nth(1).and_then(|x| x.split(',').next()).expect("numeric id");
            if raw != exact.to_string() {
                rounded += 1;
                assert!(exact > 1 << 53, "only ids above 2^53 are rounded: {m}");
                assert_eq!(raw.parse::<f64>().expect("number"), exact as f64, "rounded like a double: {m}");
            }
        }
        if name == "user_withheld" {
            let ts = inner["timestampMs"].as_str().expect("timestampMs");
            assert!(ts.ends_with("+00:00") && ts.len() == 29, "{ts}");
        } else if name != "user_verify" {
            assert!(inner["timestamp_ms"].is_string(), "{m}");
        }
        if name.starts_with("user_") && inner.get("id").is_some() {
            assert!(inner.get("id_str").is_none(), "user events carry only numeric ids");
            user_state.entry(key(&v)).or_default().insert(name.clone());
        }
        if !seen.insert(m.clone()) {
            dups += 1;
        }
        let _ = event_time(&v);
    }
    for k in complyd::event::EVENT_TYPES {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "no {k} in 6000 messages: {kinds:?}");
    }
    assert!(kinds["delete"] > kinds["user_protect"], "status deletes dominate: {kinds:?}");
    assert!(kinds.contains_key("user_verify"), "unknown types occur: {kinds:?}");
    assert!(rounded > 500, "rounded ids: {rounded}");
    assert!(dups > 0, "exact duplicates occur");
    let togglers = user_state.values().filter(|s| s.contains("user_protect") && s.contains("user_unprotect")).count();
    assert!(togglers > 0, "some users toggle a state back and forth");
    sim.stop().await;
}

async fn first_lines(seed: u64, epoch_ms: i64, n: usize) -> Vec<String> {
    let mut c = cfg(0.0);
    c.seed = seed;
    c.epoch_ms = Some(epoch_ms);
    let sim = start(c).await.expect("start");
    let mut r = open(&sim, "partition=5").await;
    assert!(r.read_messages(n, Duration::from_secs(10)).await);
    sim.stop().await;
    r.message_strings().into_iter().take(n).collect()
}

#[actix_rt::test]
async fn the_same_seed_sends_the_same_bytes() {
    let epoch = 1_750_000_000_000;
    let a = first_lines(42, epoch, 2000).await;
    let b = first_lines(42, epoch, 2000).await;
    let c = first_lines(43, epoch, 2000).await;
    assert_eq!(a.len(), 2000);
    assert_eq!(a, b, "same seed, same lines");
    let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert!(same < 10, "another seed gives other lines ({same} equal)");
}

#[actix_rt::test]
async fn events_mostly_name_the_posts_dataset() {
    let mut c = cfg(0.0);
    c.seed = 77;
    c.posts = 3000;
    let sim = start(c).await.expect("start");
    let posts: Vec<Value> = generate_posts(77, 3000).map(|l| json(&l)).collect();
    assert_eq!(posts.len(), 3000);
    let mut post_ids = HashSet::new();
    let mut user_ids = HashSet::new();
    let (mut retweets, mut geo) = (0, 0);
    for p in &posts {
        let id: u64 = p["id_str"].as_str().expect("id_str").parse().expect("u64");
        assert_eq!(p["id"].as_u64(), Some(id), "posts carry the exact numeric id");
        assert!(p["text"].is_string() && p["created_at"].is_string());
        post_ids.insert(id);
        user_ids.insert(p["user"]["id_str"].as_str().expect("user id").parse::<u64>().expect("u64"));
        if let Some(rt) = p.get("retweeted_status") {
            retweets += 1;
            assert!(rt["user"]["id_str"].is_string(), "the original carries its own user");
        }
        if p["coordinates"].is_object() {
            geo += 1;
            assert!(p["place"]["country_code"].is_string());
        }
    }
    assert!(retweets > 200 && geo > 100, "retweets {retweets}, geo {geo}");
    assert_eq!(generate_posts(77, 10).collect::<Vec<_>>(), generate_posts(77, 3000).take(10).collect::<Vec<_>>());

    let mut r = open(&sim, "partition=1").await;
    assert!(r.read_messages(2000, Duration::from_secs(10)).await);
    let (mut deletes, mut known_deletes, mut user_events, mut known_users) = (0, 0, 0, 0);
    for m in r.message_strings() {
        let v = json(&m);
        if let Some(s) = v.get("delete").and_then(|d| d.get("status")) {
            deletes += 1;
            if post_ids.contains(&s["id_str"].as_str().expect("id").parse::<u64>().expect("u64")) {
                known_deletes += 1;
            }
        }
        for k in ["user_delete", "user_protect", "user_suspend", "user_undelete", "user_unprotect", "user_unsuspend"] {
            if let Some(u) = v.get(k) {
                user_events += 1;
                if user_ids.contains(&u["id"].as_u64().expect("id")) {
                    known_users += 1;
                }
            }
        }
    }
    assert!(known_deletes * 10 >= deletes * 8, "{known_deletes} of {deletes} deletes name a dataset post");
    assert!(known_users * 10 >= user_events * 8, "{known_users} of {user_events} user events name a dataset user");
    sim.stop().await;
}

#[actix_rt::test]
async fn live_rate_is_kept_and_each_event_is_on_exactly_one_partition() {
    let sim = start(cfg(400.0)).await.expect("start");
    let mut readers = Vec::new();
    for p in 1..=8u8 {
        readers.push(open(&sim, &format!("partition={p}")).await);
    }
    let t0 = chrono::Utc::now().timestamp_millis();
    let mut per_partition: Vec<HashSet<String>> = Vec::new();
    futures_util::future::join_all(readers.iter_mut().map(|r| r.read_for(Duration::from_millis(1500)))).await;
    let t1 = chrono::Utc::now().timestamp_millis();
    let mut total = 0;
    for (k, r) in readers.iter().enumerate() {
        let mut set = HashSet::new();
        for m in r.message_strings() {
            let v = json(&m);
            assert_eq!(key(&v) % 8 + 1, k as u64 + 1, "wrong partition: {m}");
            let t = event_time(&v);
            assert!(t >= t0 - 2000 && t <= t1 + 1000, "event time {t} not live ({t0}..{t1})");
            set.insert(m);
            total += 1;
        }
        per_partition.push(set);
    }
    // 1.5 s at 400/s = 600 events (allow for start-up and a loaded machine).
    assert!((300..=900).contains(&total), "events in 1.5 s at 400/s: {total}");
    for a in 0..8 {
        for b in a + 1..8 {
            assert!(per_partition[a].is_disjoint(&per_partition[b]), "partitions {} and {} share events", a + 1, b + 1);
        }
    }
    sim.stop().await;
}

#[actix_rt::test]
async fn redundant_connections_on_one_partition_get_the_same_events() {
    let sim = start(cfg(800.0)).await.expect("start");
    let mut a = open(&sim, "partition=2").await;
    a.read_messages(20, Duration::from_secs(5)).await;
    let mut b = open(&sim, "partition=2").await;
    b.read_messages(40, Duration::from_secs(5)).await;
    a.read_for(Duration::from_millis(500)).await;
    let (a, b) = (a.message_strings(), b.message_strings());
    assert!(b.len() >= 40);
    let start = a.iter().position(|m| *m == b[0]).expect("b's first event reached a too");
    assert_eq!(&a[start..start + 40], &b[..40], "same events in the same order");
    sim.stop().await;
}

#[actix_rt::test]
async fn backfill_resends_the_last_minutes_as_duplicates() {
    let sim = start(cfg(300.0)).await.expect("start");
    let mut live = open(&sim, "partition=2").await;
    live.read_for(Duration::from_millis(1200)).await;
    let live_msgs = live.message_strings();
    assert!(live_msgs.len() > 10);
    let connected_at = chrono::Utc::now().timestamp_millis();
    let mut bf = open(&sim, "partition=2&backfillMinutes=1").await;
    // A minute at 300/s is about 2250 events on this partition; then live ones.
    bf.read_until(Duration::from_secs(5), |r| {
        r.message_count() > 2000 && r.message_strings().last().is_some_and(|m| event_time(&json(m)) >= connected_at)
    })
    .await;
    let got: Vec<String> = bf.message_strings();
    let got_set: HashSet<&String> = got.iter().collect();
    for m in &live_msgs {
        assert!(got_set.contains(m), "backfill resends what was already sent: {m}");
    }
    let old = got.iter().filter(|m| event_time(&json(m)) < connected_at - 1000).count();
    assert!(old > 1000, "a minute of history arrives first ({old})");
    let first = event_time(&json(&got[0]));
    assert!(
        first >= connected_at - 61_000 && first <= connected_at - 59_000,
        "starts a minute back: {first} vs {connected_at}"
    );
    assert!(sim.stats().partitions[1].backfill_events_sent > 1000);
    sim.stop().await;
}

#[actix_rt::test]
async fn backfill_refused_or_invalid_gets_400() {
    let a = basic_auth("demo@example.com", "sim-password");
    let h = [("Authorization", a.as_str()), ("Accept-Encoding", "gzip")];
    let sim = start(cfg(10.0)).await.expect("start");
    for bad in ["0", "6", "abc", "-1"] {
        let mut r = get(sim.addr(), &format!("{STREAM}?partition=1&backfillMinutes={bad}"), &h, Duration::from_secs(5))
            .await
            .expect("r");
        assert_eq!(r.status, 400, "backfillMinutes={bad}");
        let _ = r.body(Duration::from_secs(5)).await;
    }
    sim.stop().await;
    let mut c = cfg(10.0);
    c.backfill.accepted = false;
    let sim = start(c).await.expect("start");
    let mut r = get(sim.addr(), &format!("{STREAM}?partition=1&backfillMinutes=2"), &h, Duration::from_secs(5))
        .await
        .expect("r");
    assert_eq!(r.status, 400);
    let body: Value = serde_json::from_slice(&r.body(Duration::from_secs(5)).await.expect("body")).expect("json");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("backfillMinutes")), "{body}");
    let r = get(sim.addr(), &format!("{STREAM}?partition=1"), &h, Duration::from_secs(5)).await.expect("r");
    assert_eq!(r.status, 200, "without the parameter the stream opens");
    sim.stop().await;
}

#[actix_rt::test]
async fn record_lists_exactly_what_the_client_received() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("record.tsv");
    let mut c = cfg(0.0);
    c.record = Some(path.clone());
    let sim = start(c).await.expect("start");
    sim.trigger(Fault::new(FaultKind::Malformed { lines: 2 }).on_partition(4).after(200));
    sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: None }).on_partition(4).after(500));
    let mut r = open(&sim, "partition=4").await;
    assert_eq!(r.read_to_end(Duration::from_secs(10)).await, Some(StreamEnd::Clean));
    let received = r.message_strings();
    assert_eq!(received.len(), 500 + 2 + 1, "500 events, 2 malformed lines, the error line");
    sim.stop().await;

    let text = std::fs::read_to_string(&path).expect("record file");
    let mut recorded = Vec::new();
    let mut last_ms = 0;
    for row in text.lines() {
        let mut f = row.splitn(3, '\t');
        let (p, ms, line) = (f.next().expect("partition"), f.next().expect("ms"), f.next().expect("line"));
        assert_eq!(p, "4");
        let ms: i64 = ms.parse().expect("unix ms");
        assert!(ms >= last_ms, "send times ascend");
        last_ms = ms;
        recorded.push(line.to_string());
    }
    assert_eq!(recorded, received, "the record is exactly what the client got");
    assert_eq!(sim_stats_events(&received), 500);
}

fn sim_stats_events(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.as_object().map(|o| !o.contains_key("error")))
                .unwrap_or(false)
        })
        .count()
}

/// The test client's own decoder: what the other tests read through.
#[test]
fn decodes_lines_split_anywhere() {
    let text = "{\"a\":\"ü日本\"}\r\n\r\n{\"b\":2}\r\n";
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
    let gz = e.finish().unwrap();
    for step in 1..gz.len() {
        let mut d = LineDecoder::new();
        let mut lines = Vec::new();
        for c in gz.chunks(step) {
            lines.extend(d.feed(c).unwrap());
        }
        assert!(d.is_complete());
        assert_eq!(
            lines,
            vec![
                Line::Message(b"{\"a\":\"\xc3\xbc\xe6\x97\xa5\xe6\x9c\xac\"}".to_vec()),
                Line::Heartbeat,
                Line::Message(b"{\"b\":2}".to_vec())
            ]
        );
    }
    let mut d = LineDecoder::new();
    d.feed(&gz[..gz.len() - 3]).unwrap();
    assert!(!d.is_complete());
}
