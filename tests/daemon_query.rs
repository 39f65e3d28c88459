//! The query API of a running daemon: `GET /v1/posts/{id}`,
//! `POST /v1/posts/check` and the admin explain endpoint, on the README's
//! example dataset (tests/data) with its events applied.

mod common;

use common::daemon::*;
use complyd::daemon::Daemon;
use complyd::deadletter::DeadLetter;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "admin-tok-Kq83";

/// The example store at `url`: posts imported, the README's events applied
/// (on a plain thread: the PostgreSQL client is synchronous).
fn example_store(url: &str, dir: &std::path::Path) {
    let (url, dl) = (url.to_owned(), dir.join("dl.jsonl"));
    std::thread::spawn(move || {
        let mut st = complyd::store::open(&url).unwrap();
        let mut dl = DeadLetter::new(dl);
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        complyd::commands::import(st.as_mut(), &mut dl, &[format!("{data}posts.jsonl")]).unwrap();
        complyd::commands::replay(st.as_mut(), &mut dl, &[format!("{data}events.txt")]).unwrap();
    })
    .join()
    .unwrap();
}

/// A simulator at 100 events/s, and daemon settings reading partition
/// `partition` into the example store at `url` (a new SQLite file when empty).
async fn example_setup(
    url: &str,
    partition: u8,
) -> (tempfile::TempDir, complyd::sim::SimConfig, complyd::sim::SimHandle, complyd::settings::Settings) {
    let dir = tempdir();
    let d = path(&dir);
    let cfg = sim_config(&d, 100.0);
    let sim = complyd::sim::start(cfg.clone()).await.unwrap();
    let mut s = daemon_settings(&sim, &cfg, &d, "unused.db");
    s.store.url = if url.is_empty() { format!("sqlite:{}", d.join("q.db").display()) } else { url.to_owned() };
    example_store(&s.store.url, &d);
    s.limiter.state_file = Some(d.join("connections.json"));
    s.stream.partitions = vec![partition];
    (dir, cfg, sim, s)
}

async fn post(addr: SocketAddr, path: &str, body: String) -> (u16, String) {
    let mut r = awc::Client::default()
        .post(format!("http://{addr}{path}"))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .expect("POST");
    let b = r.body().limit(8 << 20).await.expect("body");
    (r.status().as_u16(), String::from_utf8_lossy(&b).into_owned())
}

async fn get_with(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut req = awc::Client::default().get(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        req = req.insert_header(("authorization", a));
    }
    let mut r = req.send().await.expect("GET");
    let b = r.body().await.expect("body");
    (r.status().as_u16(), String::from_utf8_lossy(&b).into_owned())
}

#[actix_rt::test]
async fn the_query_api_answers_visibility_and_nothing_more_sqlite() {
    let dir = tempdir();
    let url = format!("sqlite:{}", path(&dir).join("q.db").display());
    the_query_api_answers_visibility_and_nothing_more(&url).await;
}

/// The same on PostgreSQL, where queries run on blocking threads with
/// pooled connections.
#[actix_rt::test]
#[ignore = "needs PostgreSQL: `bash scripts/test.sh` runs it"]
async fn the_query_api_answers_visibility_and_nothing_more_postgres() {
    // The synchronous PostgreSQL client runs on plain threads only.
    let schema = std::thread::spawn(common::PgSchema::new).join().unwrap();
    // Pooled PostgreSQL connections are closed at shutdown without a panic
    // (the synchronous client cannot be dropped on the server's thread).
    let before = common::daemon::panics_seen();
    the_query_api_answers_visibility_and_nothing_more(&schema.url()).await;
    assert_eq!(common::daemon::panics_seen(), before, "the daemon panicked (see the test's output)");
}

async fn the_query_api_answers_visibility_and_nothing_more(url: &str) {
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let (_dir, cfg, sim, mut s) = example_setup(url, 1).await;
        std::env::set_var("COMPLYD_TEST_QUERY_ADMIN_TOKEN", TOKEN);
        s.http.admin_token_env = "COMPLYD_TEST_QUERY_ADMIN_TOKEN".into();
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let addr = daemon.http_addr().unwrap();

        // One post: visible, hidden, and not stored at all.
        let one = |id: &str, v: bool| format!("{{\"id\":\"{id}\",\"visible\":{v}}}");
        for (path, id, v) in [
            ("/v1/posts/1001", "1001", true),
            ("/v1/posts/1003", "1003", false),          // deleted
            ("/v1/posts/2001", "2001", false),          // retweets a deleted post
            ("/v1/posts/1005", "1005", false),          // author suspended
            ("/v1/posts/1557433858676740098", "1557433858676740098", false), // superseded by an edit
            ("/v1/posts/1557445923210514432", "1557445923210514432", true),
            ("/v1/posts/3001", "3001", true),
            ("/v1/posts/999", "999", false),            // never stored: same answer as hidden
            ("/v1/posts/1004?country=DE", "1004", false),
            ("/v1/posts/1004?country=fr", "1004", true),
            ("/v1/posts/1004", "1004", false),          // withheld somewhere: not visible everywhere
        ] {
            let (status, body) = http_get(addr, path).await;
            assert_eq!((status, body.as_str()), (200, one(id, v).as_str()), "{path}");
        }

        // Malformed ids and countries: 400 with a JSON error.
        for path in [
            "/v1/posts/abc",
            "/v1/posts/-1",
            "/v1/posts/1.5",
            "/v1/posts/18446744073709551616",
            "/v1/posts/1001?country=DEU",
            "/v1/posts/1001?country=1x",
            "/v1/posts/1001?country=",
            "/v1/posts/1001?kountry=DE",
        ] {
            let (status, body) = http_get(addr, path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.starts_with("{\"error\":"), "{path}: {body}");
        }

        // Bulk: answers in the order asked; string or integer ids.
        let (status, body) =
            post(addr, "/v1/posts/check", r#"{"ids":["1001","1004",999,"1557445923210514432"],"country":"DE"}"#.into()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            r#"{"results":[{"id":"1001","visible":true},{"id":"1004","visible":false},{"id":"999","visible":false},{"id":"1557445923210514432","visible":true}]}"#
        );
        // The limit: 10,000 ids pass, 10,001 do not.
        let ids = |n: usize| (0..n).map(|i| format!("\"{}\"", 1001 + i)).collect::<Vec<_>>().join(",");
        let (status, body) = post(addr, "/v1/posts/check", format!("{{\"ids\":[{}]}}", ids(10_000))).await;
        assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 10_000);
        assert_eq!(results[0], serde_json::json!({"id": "1001", "visible": true}));
        assert_eq!(results[2], serde_json::json!({"id": "1003", "visible": false}));
        let (status, body) = post(addr, "/v1/posts/check", format!("{{\"ids\":[{}]}}", ids(10_001))).await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("at most 10000"), "{body}");
        // Bodies and headers are bounded: over 1 MiB of body is 413, a
        // request head over 128 KiB (actix-http's limit) is 431.
        let (status, _) = post(addr, "/v1/posts/check", format!("{{\"ids\":[\"{}\"]}}", "1".repeat(2 << 20))).await;
        assert_eq!(status, 413, "a body over 1 MiB");
        let big = awc::Client::default()
            .get(format!("http://{addr}/v1/posts/1001"))
            .insert_header(("X-Padding", "a".repeat(200 << 10)))
            .send()
            .await;
        match big {
            Ok(r) => assert_eq!(r.status().as_u16(), 431),
            Err(e) => panic!("a 200 KiB header gets an answer, not a dropped connection: {e}"),
        }
        assert_eq!(http_get(addr, "/v1/posts/1001").await.0, 200, "and the API still answers");
        for bad in [r#"{"ids":["1001","x1"]}"#, r#"{"ids":["1001"],"country":"Germany"}"#, r#"{"ids":"1001"}"#, "not json", r#"{"ids":[],"why":1}"#] {
            let (status, body) = post(addr, "/v1/posts/check", bad.into()).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body.starts_with("{\"error\":"), "{bad}: {body}");
        }

        // The admin endpoint says why, only with the token.
        let explain = "/v1/admin/explain/1004?country=DE";
        assert_eq!(get_with(addr, explain, None).await.0, 401);
        assert_eq!(get_with(addr, explain, Some("Bearer wrong")).await.0, 401);
        assert_eq!(get_with(addr, explain, Some(&format!("Basic {TOKEN}"))).await.0, 401);
        let auth = format!("Bearer {TOKEN}");
        let (status, body) = get_with(addr, explain, Some(&auth)).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["visible"], false);
        assert_eq!(v["reasons"], serde_json::json!(["withheld in DE"]));
        // The retweet of the deleted post was cascaded when the replay ended.
        let (_, body) = get_with(addr, "/v1/admin/explain/2001", Some(&auth)).await;
        assert!(body.contains("\"reasons\":[\"deleted\"]"), "{body}");
        let (_, body) = get_with(addr, "/v1/admin/explain/999", Some(&auth)).await;
        assert!(body.contains("not stored"), "{body}");
        let (_, body) = get_with(addr, "/v1/admin/explain/1001", Some(&auth)).await;
        assert!(body.contains("\"visible\":true") && body.contains("\"reasons\":[]"), "{body}");

        // Nothing secret in the metrics or the health report.
        for p in ["/metrics", "/healthz", "/readyz"] {
            let (_, body) = http_get(addr, p).await;
            assert!(!body.contains(TOKEN) && !body.contains(&cfg.password), "{p} shows a secret");
        }
        daemon.shutdown().await;
        sim.stop().await;
    })
    .await
    .expect("the test timed out");
}

#[actix_rt::test]
async fn the_admin_endpoint_is_off_without_a_token_and_the_api_can_be_off() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let (_dir, cfg, sim, mut s) = example_setup("", 2).await;
        let daemon = Daemon::start(plan(s.clone(), password(&cfg))).await.unwrap();
        let addr = daemon.http_addr().unwrap();
        let (status, body) = get_with(addr, "/v1/admin/explain/1004", Some("Bearer anything")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(http_get(addr, "/v1/posts/1001").await.0, 200);
        daemon.shutdown().await;

        s.http.query = false;
        s.stream.partitions = vec![3];
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let addr = daemon.http_addr().unwrap();
        assert_eq!(http_get(addr, "/v1/posts/1001").await.0, 404);
        assert_eq!(http_get(addr, "/healthz").await.0, 200);
        daemon.shutdown().await;
        sim.stop().await;
    })
    .await
    .expect("the test timed out");
}
