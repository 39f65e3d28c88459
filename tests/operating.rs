//! Operating complyd as an operator does, through the real binary:
//! `validate` on good and bad files, environment overrides, and a known
//! password (and admin token) searched for in every log line, error message,
//! metric and health body of `complyd run`.

mod common;

use common::daemon::*;
use complyd::sim::{Fault, FaultKind};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "pw-Known-Secret-4417";
const TOKEN: &str = "tok-Known-Admin-9932";

fn complyd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_complyd"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("COMPLYD_LOG");
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Writes a `complyd run` configuration for the hostile-environment tests to
/// `path`: a stream (never reached) whose password is in COMPLYD_TEST_PW_X,
/// and the `[store]` and `[http]` keys given.
fn bad_env_config(path: &Path, store: &str, http: &str) {
    let conf = format!(
        "[stream]\naccount = \"acme\"\nusername = \"u@example.com\"\npassword_env = \"COMPLYD_TEST_PW_X\"\n[store]\n{store}\n[http]\n{http}\n"
    );
    std::fs::write(path, conf).unwrap();
}

/// Runs `complyd ARGS` with COMPLYD_TEST_PW_X set: its output, all of it
/// and its last line on stderr.
fn complyd_pw(args: &[&str]) -> (Output, String, String) {
    let out = complyd(args, &[("COMPLYD_TEST_PW_X", "pw"), ("RUST_BACKTRACE", "0")]);
    let last = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned();
    let all = text(&out);
    (out, all, last)
}

const GOOD: &str = r#"
[stream]
account = "acme"
username = "ops@acme.example"
password_env = "COMPLYD_TEST_OPERATING_PW"
[store]
url = "sqlite:/tmp/complyd-operating-unused.db"
"#;

#[test]
fn validate_passes_a_good_file_and_lists_every_problem_of_a_bad_one() {
    let dir = tempdir();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let pw = [("COMPLYD_TEST_OPERATING_PW", PASSWORD)];
    let out = complyd(&["validate", "--config", good.to_str().unwrap()], &pw);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("good.toml: ok"), "{}", text(&out));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[stream]
url = "http://stream.example.com/compliance"
account = "acme"
username = "ops@acme.example"
pasword = "oops"
partitions = [1, 2, 9]
idle_timeout_ms = 20000
connect_timeout_ms = "ten seconds"
ca_file = "/nonexistent/complyd-ca.pem"
[limiter]
max_requests = 20
[store]
url = "mysql://u:dbpass-77@db/x"
[htp]
listen = "0.0.0.0:80"
"#,
    )
    .unwrap();
    let out = complyd(&["validate", "--config", bad.to_str().unwrap()], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for needle in [
        "unknown key stream.pasword",
        "unknown section [htp]",
        "stream.connect_timeout_ms: invalid type",
        "9 is not a partition",
        "stream.idle_timeout_ms 20000",
        "not loopback",
        "limiter allows 20",
        "store.url",
        "COMPLYD_STREAM_PASSWORD",
        "stream.ca_file: cannot read the CA file /nonexistent/complyd-ca.pem",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert!(!all.contains("dbpass-77"), "a password in the store URL was printed:\n{all}");

    for (file, needle) in [("missing.toml", "no such config file"), ("syntax.toml", "syntax.toml")] {
        let p = dir.path().join(file);
        if file == "syntax.toml" {
            std::fs::write(&p, "[stream\nurl = 1\n").unwrap();
        }
        let out = complyd(&["validate", "--config", p.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(needle), "{}", text(&out));
    }
}

#[test]
fn environment_variables_override_any_key() {
    let dir = tempdir();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let cfg = good.to_str().unwrap();
    let pw = ("COMPLYD_TEST_OPERATING_PW", PASSWORD);
    let out = complyd(&["validate", "--config", cfg], &[pw, ("COMPLYD_STREAM__IDLE_TIMEOUT_MS", "20000")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("stream.idle_timeout_ms 20000"), "{}", text(&out));
    let out = complyd(&["validate", "--config", cfg], &[pw, ("COMPLYD_STREAM__BOGUS", "1")]);
    assert!(text(&out).contains("unknown key stream.bogus"), "{}", text(&out));
    let out = complyd(&["validate", "--config", cfg], &[pw, ("COMPLYD_HTTP__LISTEN", "nowhere")]);
    assert!(text(&out).contains("http.listen \"nowhere\""), "{}", text(&out));

    // A real command follows the overridden store.
    let db = format!("sqlite:{}", dir.path().join("env.db").display());
    let posts = dir.path().join("posts.jsonl");
    std::fs::write(&posts, "{\"id\":7,\"id_str\":\"7\",\"user\":{\"id\":1,\"id_str\":\"1\"},\"text\":\"x\"}\n")
        .unwrap();
    let env = [("COMPLYD_STORE__URL", db.as_str())];
    let out = complyd(&["import", "--config", cfg, posts.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", text(&out));
    let out = complyd(&["check", "--config", cfg, "7"], &env);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"id\":\"7\",\"visible\":true}\n", "{}", text(&out));
    assert!(dir.path().join("env.db").exists());
}

/// Writes a `complyd run` config for the simulator at `sim_addr`.
fn run_config(
    dir: &Path,
    sim_addr: std::net::SocketAddr,
    http_port: u16,
    cfg: &complyd::sim::SimConfig,
) -> std::path::PathBuf {
    let p = dir.join("run.toml");
    std::fs::write(
        &p,
        format!(
            r#"
[stream]
url = "http://{sim_addr}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json"
account = "{}"
label = "{}"
username = "{}"
password_env = "COMPLYD_TEST_RUN_PW"
partitions = [1, 2]
[backoff]
config_retry_ms = 1000
[store]
url = "sqlite:{}"
[http]
listen = "127.0.0.1:{http_port}"
admin_token_env = "COMPLYD_TEST_RUN_TOKEN"
[log]
level = "debug"
"#,
            cfg.account,
            cfg.label,
            cfg.username,
            dir.join("run.db").display()
        ),
    )
    .unwrap();
    p
}

/// Runs `complyd run` until `f` returns, then SIGTERM; returns the output.
async fn run_daemon<F: std::future::Future<Output = ()>>(config: &Path, password: &str, f: F) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_complyd"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("COMPLYD_TEST_RUN_PW", password)
        .env("COMPLYD_TEST_RUN_TOKEN", TOKEN)
        .env_remove("COMPLYD_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    f.await;
    // SIGTERM stops `run` cleanly only once its handler is installed.
    assert!(
        wait_until(Duration::from_secs(20), || catches_sigterm(child.id())).await,
        "complyd run did not install its SIGTERM handler within 20 s"
    );
    let t = Instant::now();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "run took {:?} to stop", t.elapsed());
    out
}

async fn wait_http(addr: std::net::SocketAddr, path: &str, want: u16) -> String {
    for _ in 0..300 {
        if let Ok(mut r) = awc::Client::default().get(format!("http://{addr}{path}")).send().await {
            let body = String::from_utf8_lossy(&r.body().await.unwrap_or_default()).into_owned();
            if r.status().as_u16() == want {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered {want}");
}

/// Polls `/healthz` (at most 20 s) until `f` holds for its JSON body.
async fn wait_healthz(addr: std::net::SocketAddr, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    let mut body = String::new();
    while Instant::now() < end {
        if let Ok(mut r) = awc::Client::default().get(format!("http://{addr}/healthz")).send().await {
            body = String::from_utf8_lossy(&r.body().await.unwrap_or_default()).into_owned();
            if serde_json::from_str(&body).is_ok_and(|v| f(&v)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} within 20 s: {body}");
}

/// Partition `p` of a `/healthz` body.
fn partition(v: &serde_json::Value, p: u64) -> &serde_json::Value {
    v["partitions"].as_array().and_then(|a| a.iter().find(|x| x["partition"] == p)).unwrap_or(&serde_json::Value::Null)
}

fn assert_no_secret(what: &str, s: &str) {
    use base64::Engine as _;
    for secret in [PASSWORD, TOKEN] {
        assert!(!s.contains(secret), "{what} shows a secret:\n{s}");
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops@acme.example:{PASSWORD}"));
    assert!(!s.contains(&basic) && !s.contains(&basic[..16]), "{what} shows the Authorization header");
}

#[actix_rt::test]
async fn a_known_password_never_appears_in_logs_errors_or_metrics() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempdir();
        let d = path(&dir);
        let mut cfg = sim_config(&d, 500.0);
        cfg.username = "ops@acme.example".into();
        cfg.password = PASSWORD.into();
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = run_config(&d, sim.addr(), port, &cfg);

        // The right password, debug logs, a reconnect, every endpoint.
        let mut bodies = String::new();
        let out = run_daemon(&config, PASSWORD, async {
            bodies.push_str(&wait_http(addr, "/readyz", 200).await);
            sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: None }).on_partition(2));
            // The reconnect (its "reconnecting" line is checked below).
            wait_healthz(addr, "partition 2 did not reconnect", |v| {
                let p2 = partition(v, 2);
                p2["connections"] == 2 && p2["state"] == "connected"
            })
            .await;
            for p in ["/metrics", "/healthz", "/readyz", "/v1/posts/1"] {
                bodies.push_str(&wait_http(addr, p, 200).await);
            }
            let mut r = awc::Client::default()
                .get(format!("http://{addr}/v1/admin/explain/1"))
                .insert_header(("authorization", format!("Bearer {TOKEN}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            bodies.push_str(&String::from_utf8_lossy(&r.body().await.unwrap()));
        })
        .await;
        let logs = text(&out);
        assert_eq!(out.status.code(), Some(0), "{logs}");
        assert_no_secret("the logs", &logs);
        assert_no_secret("the endpoints", &bodies);
        assert!(bodies.contains("complyd_partition_connected"), "{bodies}");
        // JSON lines, the partition's span on its lines.
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(lines.len() > 10, "{logs}");
        let connected: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "Stream connected").collect();
        assert!(connected.len() >= 2, "two partitions: {logs}");
        assert!(connected.iter().all(|l| l["span"]["name"] == "partition" && l["level"] == "INFO"), "{connected:?}");
        let backoff =
            lines.iter().find(|l| l["message"].as_str().is_some_and(|m| m.contains("reconnecting"))).expect(&logs);
        assert_eq!(backoff["partition"], 2, "{backoff}");
        assert!(
            backoff["retry_in_ms"].is_u64() && backoff["attempt"].is_u64() && backoff["reason"].is_string(),
            "{backoff}"
        );

        // The wrong password: refused (401), one ERROR line, still no secret.
        const WRONG: &str = "pw-Wrong-Secret-5523";
        let out = run_daemon(&config, WRONG, async {
            let mut body = String::new();
            for _ in 0..100 {
                body = wait_http(addr, "/readyz", 503).await;
                if body.contains("401") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(body.contains("401"), "{body}");
            assert!(!body.contains(WRONG));
            // Both partitions refused: every refusal is in the logs searched below.
            wait_healthz(addr, "both partitions were not refused", |v| {
                [1, 2].iter().all(|p| partition(v, *p)["config_error"].as_str().is_some_and(|e| e.contains("401")))
            })
            .await;
        })
        .await;
        let logs = text(&out);
        assert!(logs.contains("\"level\":\"ERROR\"") && logs.contains("401"), "{logs}");
        assert!(!logs.contains(WRONG), "the wrong password was logged:\n{logs}");
        assert_no_secret("the logs of the refused run", &logs);
        sim.stop().await;
    })
    .await
    .expect("the test timed out");

    // Errors: a store URL with a password.
    let out = complyd(&["check", "--db", &format!("postgres://u:{PASSWORD}@127.0.0.1:1/db"), "1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_no_secret("a store error", &text(&out));
}

/// `complyd run` killed with SIGKILL while batches flow, then started again:
/// the restart records each partition's gap from its last committed
/// position, the daemon repairs every gap through Replay, and the store ends
/// with what the simulator sent and everything it generated in the repaired
/// windows. Two partitions: two runs stay within X's 10 connection requests
/// a minute.
/// A simulator with Replay serving the recent past, its posts imported into
/// a SQLite store, and a `complyd run` config for `partitions` that repairs
/// gaps through Replay at once.
async fn kill_setup(
    d: &Path,
    partitions: &str,
) -> (complyd::sim::SimConfig, complyd::sim::SimHandle, String, std::path::PathBuf, u16) {
    let mut cfg = sim_config(d, 2_000.0);
    cfg.replay.min_age_minutes = 0;
    // Each run that lives to connect and check its gaps (every 500 ms) asks
    // Replay for its restart gap, so a crash loop can spend X's 5 requests a
    // window; the next run's 429 then holds it back for a whole window (5
    // minutes: `ConnectLimiter::on_rate_limited`), longer than these tests
    // wait for the repair. Seen with the test binaries run side by side
    // (2026-12-03).
    cfg.replay.requests = 100;
    let sim = complyd::sim::start(cfg.clone()).await.unwrap();
    let url = format!("sqlite:{}", d.join("run.db").display());
    import_posts(&url, d);
    let port = closed_port();
    let config = d.join("kill.toml");
    std::fs::write(
        &config,
        format!(
            "[stream]\nurl = \"http://{}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json\"\naccount = \"{}\"\nlabel = \"{}\"\nusername = \"{}\"\npassword_env = \"COMPLYD_TEST_RUN_PW\"\npartitions = {partitions}\n[handlers]\nmaintain_interval_ms = 300\n[replay]\nfreshness_ms = 0\ncheck_interval_ms = 500\n[store]\nurl = \"{url}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            sim.addr(),
            cfg.account,
            cfg.label,
            cfg.username
        ),
    )
    .unwrap();
    (cfg, sim, url, config, port)
}

fn spawn_run(config: &Path, cfg: &complyd::sim::SimConfig) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_complyd"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("COMPLYD_TEST_RUN_PW", &cfg.password)
        .env_remove("COMPLYD_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The last byte of the newest batch committed from a stream (replayed
/// events commit no position).
fn last_byte_ms(st: &mut dyn complyd::store::Store) -> i64 {
    st.positions().unwrap().iter().map(|(_, p)| p.last_byte_ms).max().unwrap_or(0)
}

fn sigkill(child: &mut std::process::Child) {
    Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
}

/// Waits until every gap of the ledger is repaired; answers the event time
/// the repairs replayed: from the first gap's minute to the last covered.
async fn wait_repaired(st: &mut Box<dyn complyd::store::Store>, secs: u64) -> (i64, i64) {
    let repaired = wait_until(Duration::from_secs(secs), || {
        st.gaps(false).unwrap().iter().all(|g| g.state == complyd::gaps::GapState::Repaired)
    })
    .await;
    let gaps = st.gaps(false).unwrap();
    assert!(repaired, "{gaps:#?}");
    let from = gaps.iter().map(|g| g.from_ms.div_euclid(60_000) * 60_000).min().unwrap();
    (from, gaps.iter().map(|g| g.covered_to_ms).max().unwrap())
}

/// Stops the streams (the simulator refuses reconnections), lets the
/// daemon commit what it holds, then stops it with SIGTERM.
async fn quiet_and_stop(sim: &complyd::sim::SimHandle, port: u16, mut child: std::process::Child) {
    sim.trigger(Fault::new(FaultKind::Status { status: 503 }).times(100_000));
    sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: Some("closing for operational reasons".into()) }));
    let quiet = async {
        for _ in 0..400 {
            if let Ok(mut r) = awc::Client::default().get(format!("http://127.0.0.1:{port}/healthz")).send().await {
                let h: serde_json::Value = r.json().limit(1 << 22).await.unwrap_or_default();
                let streaming =
                    h["partitions"].as_array().map_or(true, |ps| ps.iter().any(|p| p["state"] == "connected"));
                if !streaming && h["events_committed"] == h["events_received"] {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(quiet.await, "the daemon did not stop streaming and commit what it received within 20 s");
    assert!(
        wait_until(Duration::from_secs(20), || catches_sigterm(child.id())).await,
        "complyd run did not install its SIGTERM handler"
    );
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

#[actix_rt::test]
async fn a_sigkilled_daemon_records_its_gaps_from_the_committed_positions_and_repairs_them() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(170), async {
        let dir = tempdir();
        let d = path(&dir);
        let (cfg, sim, url, config, port) = kill_setup(&d, "[1, 2]").await;
        let mut first = spawn_run(&config, &cfg);
        let mut st = complyd::store::open(&url).unwrap();
        assert!(
            wait_until(Duration::from_secs(30), || committed_positions(st.as_mut()) == 4).await,
            "the first run did not commit every partition"
        );
        // Mid-flow: batches are being committed all the time.
        let flowing = sim.stats().next_event_index;
        assert!(wait_until(Duration::from_secs(10), || sim.stats().next_event_index > flowing + 2_000).await);
        sigkill(&mut first);
        // What was committed when it died: each handler's last batch, from
        // its last event (events in flight come after it) or its last byte
        // when that is older; a partition is caught up to the older of its
        // two handlers' points.
        let mut committed = std::collections::HashMap::new();
        for (_, p) in st.positions().unwrap() {
            let t = if p.last_event_ms > 0 { p.last_event_ms.min(p.last_byte_ms) } else { p.last_byte_ms };
            let e = committed.entry(p.partition).or_insert(t);
            *e = (*e).min(t);
        }
        assert_eq!(committed.len(), 2);
        // The simulator goes on while no daemon listens.
        let down = sim.stats().next_event_index;
        assert!(wait_until(Duration::from_secs(10), || sim.stats().next_event_index > down + 1_000).await);

        let second = spawn_run(&config, &cfg);
        let gaps = |st: &mut Box<dyn complyd::store::Store>| st.gaps(false).unwrap();
        assert!(
            wait_until(Duration::from_secs(30), || gaps(&mut st).len() == 2).await,
            "the restart did not record 2 gaps: {:#?}",
            gaps(&mut st)
        );
        for g in gaps(&mut st) {
            assert_eq!(g.cause, complyd::gaps::GapCause::Restart, "{g:?}");
            assert_eq!(g.from_ms, committed[&g.partition], "from the last committed position: {g:?}");
        }
        // Replay serves whole minutes: the repair waits for the gaps' last one.
        let (replayed_from, covered) = wait_repaired(&mut st, 100).await;
        quiet_and_stop(&sim, port, second).await;

        // Everything generated in the repaired windows (every partition's:
        // Replay is not per partition), then everything sent.
        let generated = sim_generated(&sim, &cfg, replayed_from, covered).await;
        sim.stop().await;
        drop(st);
        assert_sent_and_generated(&url, &d, generated);
    })
    .await
    .expect("the test timed out");
}

/// 20 SIGKILLs at random moments: while the store opens, while batches
/// commit, during maintenance passes (every 300 ms here), while gaps are
/// replayed, and one between the two transactions of a 50,000-post purge
/// (after which no store file may hold the purged words). One partition: X's 10 connection requests a minute (which
/// `complyd run` keeps to, across restarts) would let about half of the
/// runs connect, so most kills wait for the run's connection first. Each
/// restart records the stretch it missed when it connects;
/// the last run often waits up to a minute for the limit, so the test waits
/// for its first commit (its restart gap is in the ledger before that).
/// Then the store is readable, every stretch is repaired, and the store
/// equals an offline replay of everything the simulator sent and generated,
/// which is what one uninterrupted run gives.
#[actix_rt::test]
async fn twenty_sigkills_at_random_moments_lose_nothing_after_repair() {
    use rand::{seq::SliceRandom, Rng, SeedableRng};
    init_logs();
    tokio::time::timeout(Duration::from_secs(360), async {
        let dir = tempdir();
        let d = path(&dir);
        // The archive: the simulator's dataset and an author with
        // PURGED_POSTS posts of their own, whom a user_delete will purge.
        write_dataset_and_an_author_to_purge(&d);
        let (cfg, sim, url, config, port) = kill_setup(&d, "[1]").await;
        let seed = complyd::clock::now_ms() as u64;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut lived = Vec::new();
        // The first run lives until its first commit: complyd answers for
        // what comes after the first position it stores (a new store has no
        // earlier point to record a gap from).
        let mut first = spawn_run(&config, &cfg);
        let mut st = complyd::store::open(&url).expect("the store");
        let t0 = std::time::Instant::now();
        assert!(wait_until(Duration::from_secs(30), || committed_positions(st.as_mut()) >= 1).await);
        sigkill(&mut first);
        lived.push(t0.elapsed().as_millis() as u64);

        // The second kill falls mid-purge. The author's user_delete, 30
        // days old five seconds from now (not yet due while the offline
        // replay that applies it runs, even on a loaded machine), is
        // applied offline; the next run's maintenance pass purges them in
        // two transactions (tombstones, then the posts), and the kill falls
        // between the first's commit and the second's. A later run must
        // finish the purge.
        let purge = user_delete_due_in(5_000);
        let events = d.join("user_delete.jsonl");
        std::fs::write(&events, format!("{purge}\r\n")).unwrap();
        let mut dl = complyd::deadletter::DeadLetter::new(d.join("offline.deadletter.jsonl"));
        complyd::commands::replay(st.as_mut(), &mut dl, &[events.display().to_string()]).unwrap();
        assert!(stored_and_tombstoned(st.as_mut(), PURGED_FIRST) == (true, false), "purged before it was due");
        let mut child = spawn_run(&config, &cfg);
        let t0 = std::time::Instant::now();
        let mid_purge = wait_until(Duration::from_secs(30), || {
            stored_and_tombstoned(st.as_mut(), PURGED_FIRST + PURGED_POSTS - 1) == (true, true)
        })
        .await;
        sigkill(&mut child);
        lived.push(t0.elapsed().as_millis() as u64);
        assert!(mid_purge, "the purge's tombstones were never seen before its posts were gone (seed {seed})");
        let left = (PURGED_FIRST..PURGED_FIRST + PURGED_POSTS).filter(|&id| st.author_of(id).unwrap().is_some());
        eprintln!("sigkill loop: killed mid-purge with {} of {PURGED_POSTS} posts still stored", left.count());
        drop(st);

        // 12 of the other 18 kills wait for the run to connect (X's limit
        // may hold it back up to a minute) and fall at a random moment of
        // its streaming: batches, maintenance passes, gap replays. The
        // others fall at a random moment from its start: opening the
        // store, waiting out the limit, connecting.
        let mut aimed: Vec<bool> = (2..20).map(|i| i % 3 != 0).collect();
        aimed.shuffle(&mut rng);
        let mut streaming = 0;
        for aim in aimed {
            let before = sim.stats().connections();
            let mut child = spawn_run(&config, &cfg);
            if aim {
                let connected = wait_until(Duration::from_secs(75), || sim.stats().connections() > before).await;
                assert!(connected, "a run did not connect in 75 s (seed {seed})");
            }
            let ms = rng.gen_range(50..2_500u64);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            streaming += usize::from(sim.stats().connections() > before);
            sigkill(&mut child);
            lived.push(ms);
        }
        eprintln!("sigkill loop (seed {seed}): killed after {lived:?} ms; {streaming} of the last 18 while connected");
        let last = spawn_run(&config, &cfg);
        let mut st = complyd::store::open(&url).expect("the store opens after 20 SIGKILLs");
        // Until the last run streams, what the killed runs received after
        // their last commit is in no gap: the restart gap is recorded when
        // the connection opens, which X's limit may delay by a minute.
        // Comparing before that found events missing that the daemon had
        // not yet been able to ask for.
        let before = last_byte_ms(st.as_mut());
        assert!(
            wait_until(Duration::from_secs(120), || last_byte_ms(st.as_mut()) > before).await,
            "the last run committed no batch in 120 s (seed {seed})"
        );
        assert!(!st.gaps(false).unwrap().is_empty(), "no gap recorded after 20 SIGKILLs (seed {seed})");
        let (replayed_from, covered) = wait_repaired(&mut st, 150).await;
        let gaps = st.gaps(false).unwrap();
        eprintln!("sigkill loop: {} gaps repaired, {} ms of event time replayed", gaps.len(), covered - replayed_from);
        quiet_and_stop(&sim, port, last).await;
        // Everything the simulator generated over the repaired minutes,
        // whether the daemon was up or not, and everything it sent: a
        // stretch missing from the ledger would be missing from the store.
        // (Not from the simulator's start: what came before the first
        // commit is not complyd's to answer for, and was in the reference
        // only when the first gap fell in the same minute.)
        let mut generated = sim_generated(&sim, &cfg, replayed_from, covered).await;
        sim.stop().await;
        // The purge was finished: every post of the author is gone, with
        // its words (the export hides a deleted author's posts whether
        // purged or not, so it cannot tell).
        for id in PURGED_FIRST..PURGED_FIRST + PURGED_POSTS {
            assert_eq!(stored_and_tombstoned(st.as_mut(), id), (false, true), "post {id} of the purged author");
        }
        drop(st);
        let found = common::files_holding(&d, "run.db", "words of a post purged mid-way");
        assert!(found.is_empty(), "a purged post's words are still in {found:?}");
        generated.push((0, purge));
        assert_sent_and_generated(&url, &d, generated);
    })
    .await
    .expect("the test timed out");
}

/// The author the crash loop purges: PURGED_POSTS posts from PURGED_FIRST
/// (ids above 2^53, like every id of today's posts).
const PURGED_AUTHOR: u64 = 9_007_199_254_740_993;
const PURGED_FIRST: u64 = 9_000_000_000_000_000_000;
const PURGED_POSTS: u64 = 50_000;

/// The import file [`import_posts`] reads for both the daemon's store and
/// the reference: the simulator's dataset, then the posts of PURGED_AUTHOR.
fn write_dataset_and_an_author_to_purge(d: &Path) {
    use std::io::Write;
    let file = std::fs::OpenOptions::new().append(true).open(dataset_file(d)).unwrap();
    let mut w = std::io::BufWriter::new(file);
    for id in PURGED_FIRST..PURGED_FIRST + PURGED_POSTS {
        writeln!(
            w,
            r#"{{"id":{id},"id_str":"{id}","user":{{"id":{PURGED_AUTHOR},"id_str":"{PURGED_AUTHOR}"}},"text":"words of a post purged mid-way {id}"}}"#
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// PURGED_AUTHOR's user_delete, stamped so that its 30 days end `ms` from now.
fn user_delete_due_in(ms: i64) -> String {
    let t = complyd::clock::now_ms() - complyd::rules::user::PURGE_AFTER_MS + ms;
    format!(r#"{{"user_delete":{{"id":{PURGED_AUTHOR},"timestamp_ms":"{t}"}}}}"#)
}

/// Whether post `id` is stored, and whether it is a tombstone.
fn stored_and_tombstoned(st: &mut dyn complyd::store::Store, id: u64) -> (bool, bool) {
    let f = st.facts(id).unwrap();
    (f.post.stored, f.post.tombstone)
}

/// A store of schema version 1 (everything in one file, as the first complyd
/// left it) holding `n` posts: quotes and retweets whose embedded posts the
/// move to today's schema re-imports, deleted posts with content still to
/// remove, withheld posts, protected authors, likes, like-deletes and
/// stream positions.
fn version_1_archive(path: &Path, n: i64) {
    let path = path.to_str().unwrap();
    complyd::store::sqlite::SqliteStore::create_version_1(path).unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(&format!(
        r#"BEGIN;
        WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})
        INSERT INTO posts SELECT i, i % 1000 + 1, CASE WHEN i % 7 = 0 THEN i - 3 END, 0,
          CASE
            WHEN i % 7 = 0 THEN printf('{{"id":%d,"id_str":"%d","user":{{"id":%d,"id_str":"%d"}},"text":"RT post %d","retweeted_status":{{"id":%d,"id_str":"%d","user":{{"id":%d,"id_str":"%d"}},"text":"post %d"}}}}',
                                 i, i, i % 1000 + 1, i % 1000 + 1, i - 3, i - 3, i - 3, (i - 3) % 1000 + 1, (i - 3) % 1000 + 1, i - 3)
            WHEN i % 10 = 0 THEN printf('{{"id":%d,"id_str":"%d","user":{{"id":%d,"id_str":"%d"}},"text":"quoting %d","is_quote_status":true,"quoted_status_id_str":"%d","quoted_status":{{"id":%d,"id_str":"%d","user":{{"id":%d,"id_str":"%d"}},"text":"quoted words %d"}}}}',
                                 i, i, i % 1000 + 1, i % 1000 + 1, i + {n}, i + {n}, i + {n}, i + {n}, i % 997 + 1, i % 997 + 1, i + {n})
            ELSE printf('{{"id":%d,"id_str":"%d","user":{{"id":%d,"id_str":"%d"}},"text":"post %d"}}', i, i, i % 1000 + 1, i % 1000 + 1, i)
          END
        FROM s;
        INSERT INTO tombstones SELECT id, 1 FROM posts WHERE id % 13 = 0;
        INSERT INTO tombstones SELECT id + {n}, 1 FROM posts WHERE id % 30 = 0;
        INSERT INTO content_pending (id) SELECT id FROM tombstones ORDER BY id;
        INSERT INTO status_state (id, withheld) SELECT id, 'DE' FROM posts WHERE id % 17 = 0;
        INSERT INTO user_state (id, protected, protected_t) SELECT DISTINCT author_id, 1, 100 FROM posts WHERE author_id % 5 = 0;
        INSERT INTO likes SELECT id % 500, id FROM posts WHERE id % 3 = 0;
        INSERT INTO like_tombstones SELECT id % 500, id FROM posts WHERE id % 9 = 0;
        INSERT INTO positions VALUES ('status', 3, 1000, 2000), ('user', 3, 900, 1900);
        COMMIT;"#
    ))
    .unwrap();
}

/// SIGKILLs while complyd moves a store of schema version 1 to today's (the
/// handlers' tables into files of their own, then every post that embeds
/// another re-imported): five copies of one archive, each killed twice at
/// random moments of the move, then opened to the end, give the store one
/// uninterrupted move gives: the same export (everywhere and in Germany),
/// facts, likes, user states, positions and maintenance work left.
#[test]
fn sigkills_during_a_migration_on_open_leave_what_an_uninterrupted_move_gives() {
    use rand::{Rng, SeedableRng};
    let dir = tempdir();
    let d = dir.path();
    const POSTS: i64 = 100_000;
    let template = d.join("v1.db");
    version_1_archive(&template, POSTS);
    let copy = |name: &str| {
        std::fs::create_dir(d.join(name)).unwrap();
        let db = d.join(name).join("store.db");
        std::fs::copy(&template, &db).unwrap();
        format!("sqlite:{}", db.display())
    };
    // `check` opens the store (moving it) and answers for one post.
    let open_to_the_end = |url: &str| {
        let out = complyd(&["check", "--db", url, "1"], &[]);
        assert!(out.status.success(), "{}", text(&out));
    };
    let export = |url: &str, country: Option<&str>| {
        let mut args = vec!["export", "--db", url];
        args.extend(country.map(|c| ["--country", c]).iter().flatten());
        let out = complyd(&args, &[]);
        assert!(out.status.success(), "{}", text(&out));
        out.stdout
    };
    // The uninterrupted move, timed: the kills fall within the first three
    // quarters of the time it takes.
    let whole = copy("whole");
    let t0 = Instant::now();
    open_to_the_end(&whole);
    let took = t0.elapsed().as_millis() as u64;
    let (everywhere, germany) = (export(&whole, None), export(&whole, Some("DE")));
    let mut b = complyd::store::open(&whole).unwrap();
    let seed = complyd::clock::now_ms() as u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut kills = Vec::new();
    for round in 0..5 {
        let url = copy(&format!("killed-{round}"));
        for _ in 0..2 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_complyd"))
                .args(["check", "--db", &url, "1"])
                .env_remove("COMPLYD_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let ms = rng.gen_range(0..(took * 3 / 4).max(1));
            std::thread::sleep(Duration::from_millis(ms));
            let ended_first = child.try_wait().unwrap().is_some();
            sigkill(&mut child);
            kills.push((ms, ended_first));
        }
        open_to_the_end(&url);
        assert_eq!(export(&url, None), everywhere, "round {round}, seed {seed}");
        assert_eq!(export(&url, Some("DE")), germany, "in Germany: round {round}, seed {seed}");
        let mut a = complyd::store::open(&url).unwrap();
        assert_eq!(a.positions().unwrap(), b.positions().unwrap());
        for id in (1..=POSTS as u64 + 30).step_by(7).chain([2 * POSTS as u64 + 30]) {
            assert_eq!(a.facts(id).unwrap(), b.facts(id).unwrap(), "facts of {id}: round {round}, seed {seed}");
            assert_eq!(a.has_like(id % 500, id).unwrap(), b.has_like(id % 500, id).unwrap(), "like of {id}");
        }
        for u in 1..=1000 {
            assert_eq!(a.user_state(u).unwrap(), b.user_state(u).unwrap(), "user {u}: round {round}");
        }
    }
    eprintln!("migration kills (seed {seed}; the whole move took {took} ms): at {kills:?} ms (true: it had ended)");
    // A check that the kills did land mid-way (each is within the first three
    // quarters of the time the whole move took, so nearly all do).
    assert!(kills.iter().filter(|(_, ended)| !ended).count() >= 3, "the kills fell after the end (seed {seed})");
    // What is left to remove: the same maintenance work (last: it changes
    // the reference).
    let mut a = complyd::store::open(&format!("sqlite:{}", d.join("killed-0").join("store.db").display())).unwrap();
    assert_eq!(format!("{:?}", a.maintain(0, 10_000).unwrap()), format!("{:?}", b.maintain(0, 10_000).unwrap()));
}

/// The HTTP port already taken (8080 is a common developer port): `complyd
/// demo` and `complyd run` end with one line naming the address and the
/// setting to change, exit 2, never a panic.
#[test]
fn a_taken_http_port_is_one_clear_line_not_a_panic() {
    let dir = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let demo = dir.path().join("demo.toml");
    std::fs::write(&demo, format!("[http]\nlisten = \"{addr}\"\n[sim]\nrate = 100.0\nposts = 100\n")).unwrap();
    let run = dir.path().join("run.toml");
    bad_env_config(
        &run,
        &format!("url = \"sqlite:{}\"", dir.path().join("run.db").display()),
        &format!("listen = \"{addr}\""),
    );
    let demo_dir = dir.path().join("demo");
    let runs: [&[&str]; 2] = [
        &["demo", "--duration", "2", "--config", demo.to_str().unwrap(), "--dir", demo_dir.to_str().unwrap()],
        &["run", "--config", run.to_str().unwrap()],
    ];
    for args in runs {
        let (out, all, last) = complyd_pw(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(!all.contains("panicked") && !all.contains("Panic"), "{all}");
        assert!(last.contains(&addr.to_string()) && last.contains("http.listen"), "{args:?}: {last}");
    }
    drop(taken);
}

/// A port on loopback that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A hostile environment, as a new user meets it: a password file missing,
/// a directory or empty; the store's server down at start; a dead-letter
/// file that cannot be created. Each is one clear line and the right exit
/// code, never a panic, never a secret.
#[test]
fn a_bad_password_file_a_store_down_at_start_and_an_unwritable_dead_letter_file_are_one_line_each() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir(d.join("a-directory")).unwrap();
    std::fs::write(d.join("empty"), "").unwrap();
    let conf = d.join("c.toml");
    for (pw, says) in [("missing", "No such file"), ("a-directory", "directory"), ("empty", "empty")] {
        std::fs::write(
            &conf,
            format!(
                "[stream]\nusername = \"u@example.com\"\npassword_file = \"{}\"\n[store]\nurl = \"sqlite:{}\"\n",
                d.join(pw).display(),
                d.join("s.db").display()
            ),
        )
        .unwrap();
        for cmd in ["run", "validate"] {
            let out = complyd(&[cmd, "--config", conf.to_str().unwrap()], &[("RUST_BACKTRACE", "0")]);
            let all = text(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd} with a password file {pw}: {all}");
            assert!(all.contains("stream.password_file") && all.contains(says), "{cmd}, {pw}: {all}");
            assert!(!all.contains("panicked"), "{all}");
        }
    }
    assert!(!d.join("s.db").exists(), "nothing was created");

    // PostgreSQL down at start: exit 2, one line naming the server, never
    // its password.
    let pg = format!("url = \"postgres://complyd:db-Secret-77@127.0.0.1:{}/complyd\"", closed_port());
    bad_env_config(&conf, &pg, "enabled = false");
    let (out, all, last) = complyd_pw(&["run", "--config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(last.contains("cannot connect to postgres://") && last.contains("127.0.0.1"), "{last}");
    assert_eq!(last.matches("postgres://").count(), 1, "the URL once: {last}");
    assert!(!all.contains("db-Secret-77") && !all.contains("panicked"), "{all}");

    // The dead-letter file's directory is a file: the import stops with a
    // line naming it (exit 2), and says nothing was dead-lettered there.
    std::fs::write(d.join("a-file"), "").unwrap();
    std::fs::write(d.join("in.jsonl"), "{\"id_str\":\"1\",\"user\":{\"id_str\":\"2\"},\"text\":\"x\"}\nnot json\n")
        .unwrap();
    let dl = d.join("a-file").join("dl.jsonl");
    let db = format!("sqlite:{}", d.join("i.db").display());
    let out = complyd(
        &["import", "--db", &db, d.join("in.jsonl").to_str().unwrap()],
        &[("COMPLYD_STORE__DEAD_LETTER", dl.to_str().unwrap())],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("cannot write the dead-letter file") && all.contains("cannot create its directory"), "{all}");
    assert!(!all.contains("Dead-lettered a bad line"), "no line claims a record that was not written: {all}");

    // The same for the daemon: it does not start (exit 2), with one line
    // naming the file and the setting, before it connects to anything.
    let store = format!("url = \"sqlite:{}\"\ndead_letter = \"{}\"", d.join("r.db").display(), dl.display());
    bad_env_config(&conf, &store, "enabled = false");
    let (out, all, last) = complyd_pw(&["run", "--config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        last.contains("cannot write the dead-letter file")
            && last.contains("a-file")
            && last.contains("store.dead_letter"),
        "{last}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

/// A password file its user may not read (mode 000): one line naming the
/// setting and the reason, exit 1, never the secret. Root reads any file
/// whatever its mode, so under root (as CI runs) complyd runs as `nobody`.
#[test]
fn a_password_file_its_user_may_not_read_is_one_line() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempdir();
    let d = dir.path();
    // `nobody` must reach the configuration, not the password.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pw = d.join("pw");
    std::fs::write(&pw, "pw-Mode-000-Secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o000)).unwrap();
    let conf = d.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[stream]\nusername = \"u@example.com\"\npassword_file = \"{}\"\n[store]\nurl = \"sqlite:{}\"\n",
            pw.display(),
            d.join("s.db").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    for cmd in ["run", "validate"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_complyd"));
        c.args([cmd, "--config", conf.to_str().unwrap()]).env("RUST_BACKTRACE", "0").env_remove("COMPLYD_LOG");
        if root {
            c.uid(65534).gid(65534);
        }
        let out = c.output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd} with a mode-000 password file: {all}");
        assert!(all.contains("stream.password_file") && all.contains("Permission denied"), "{cmd}: {all}");
        assert!(!all.contains("pw-Mode-000-Secret") && !all.contains("panicked"), "{cmd}: {all}");
    }
    assert!(!d.join("s.db").exists(), "nothing was created");
}

/// DNS failing for the stream host: the daemon keeps trying, and says why
/// on `/readyz`.
#[actix_rt::test]
async fn a_stream_host_that_does_not_resolve_is_retried_with_the_reason_on_readyz() {
    let dir = tempdir();
    let port = closed_port();
    let conf = dir.path().join("dns.toml");
    std::fs::write(
        &conf,
        format!(
            "[stream]\nurl = \"https://stream.invalid/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json\"\naccount = \"acme\"\nusername = \"ops@acme.example\"\npassword_env = \"COMPLYD_TEST_RUN_PW\"\npartitions = [1]\n[store]\nurl = \"sqlite:{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("dns.db").display()
        ),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let out = run_daemon(&conf, PASSWORD, async {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let body = wait_http(addr, "/readyz", 503).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let reasons = v["reasons"].to_string().to_lowercase();
            if reasons.contains("partition 1: not connected yet") && reasons.contains("resolving") {
                break;
            }
            assert!(Instant::now() < end, "/readyz never gave the DNS failure as the reason: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "still running until told to stop: {all}");
    assert!(!all.contains("panicked"), "{all}");
}
