//! Helpers shared by the daemon's integration tests (`mod common;` then
//! `use common::daemon::*;`). Everything runs on loopback
//! against the in-process simulator, with short delays, and every wait is
//! bounded.

use complyd::daemon::Daemon;
use complyd::deadletter::DeadLetter;
use complyd::event::{parse_line, EventKind, Message, StatusEvent};
use complyd::health::{Health, LinkState};
use complyd::settings::{Plan, Secret, Settings};
use complyd::sim::{Fault, FaultKind, SimConfig, SimHandle};
use complyd::store;
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The ERROR lines logged in this test process (see [`error_lines`]).
static ERRORS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct ErrorSink;

impl std::io::Write for ErrorSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        ERRORS.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps every ERROR line for [`error_lines`], and logs to stderr when
/// `COMPLYD_TEST_LOG` is set (e.g. `debug`).
pub fn init_logs() {
    use tracing_subscriber::prelude::*;
    let errors = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(|| ErrorSink)
        .with_filter(tracing_subscriber::filter::LevelFilter::ERROR);
    let stderr = std::env::var("COMPLYD_TEST_LOG").ok().map(|filter| {
        tracing_subscriber::fmt::layer().with_test_writer().with_filter(tracing_subscriber::EnvFilter::new(filter))
    });
    let _ = tracing_subscriber::registry().with(errors).with(stderr).try_init();
}

/// What this process has logged at ERROR so far (after [`init_logs`]).
pub fn error_lines() -> String {
    String::from_utf8_lossy(&ERRORS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Panics in this test process so far, on any thread (the first call starts
/// counting). A daemon that panics on a thread of its own, where nothing
/// fails the test, shows here.
pub fn panics_seen() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            SEEN.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
    SEEN.load(Ordering::SeqCst)
}

pub const SEED: u64 = 7;
pub const POSTS: u64 = 2_000;

/// A simulator on a free loopback port, recording to `dir/record.tsv`.
pub fn sim_config(dir: &Path, rate: f64) -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".into(),
        workers: 1,
        seed: SEED,
        rate,
        posts: POSTS,
        heartbeat_interval_ms: 300,
        batch_interval_ms: 20,
        record: Some(dir.join("record.tsv")),
        ..SimConfig::default()
    }
}

/// Daemon settings for tests: short timeouts and delays, no jitter (delays
/// are exact), the real 10-per-60 s connection limiter.
pub fn daemon_settings(sim: &SimHandle, cfg: &SimConfig, dir: &Path, db: &str) -> Settings {
    let mut s = daemon_settings_for(sim.addr(), dir, db);
    s.stream.account = cfg.account.clone();
    s.stream.label = cfg.label.clone();
    s.stream.username = cfg.username.clone();
    s
}

/// [`daemon_settings`] for a server at `addr` that is not the simulator.
pub fn daemon_settings_for(addr: std::net::SocketAddr, dir: &Path, db: &str) -> Settings {
    let mut s = Settings::default();
    s.stream.url = format!("http://{addr}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json");
    s.stream.account = "demo".into();
    s.stream.username = "demo@example.com".into();
    s.stream.connect_timeout_ms = 2_000;
    s.stream.idle_timeout_ms = 2_000;
    s.stream.threads = 2;
    s.batch.max_events = 512;
    s.batch.linger_ms = 20;
    s.handlers.commit_retry_ms = 100;
    s.backoff.stable_after_ms = 500;
    s.backoff.network_step_ms = 100;
    s.backoff.network_max_ms = 1_000;
    s.backoff.server_initial_ms = 300;
    s.backoff.server_max_ms = 2_000;
    s.backoff.rate_limited_initial_ms = 1_000;
    s.backoff.rate_limited_max_ms = 4_000;
    s.backoff.config_retry_ms = 2_000;
    s.backoff.jitter = 0.0;
    s.backoff.jitter_floor_ms = 0;
    s.restart.max_failures = 50;
    s.restart.window_ms = 10_000;
    s.restart.failed_retry_ms = 3_000;
    s.store.url = format!("sqlite:{}", dir.join(db).display());
    s.store.dead_letter = Some(dir.join(format!("{db}.deadletter.jsonl")));
    s.http.enabled = true;
    s.http.listen = "127.0.0.1:0".into();
    s.shutdown.timeout_ms = 5_000;
    s
}

pub fn password(cfg: &SimConfig) -> Secret {
    Secret::new(cfg.password.clone())
}

/// The plan a test daemon runs on (X's rules only warn: tests use short
/// timeouts).
pub fn plan(s: Settings, password: Secret) -> Plan {
    s.plan_with_password(password).expect("a valid test configuration")
}

/// `dir/posts.jsonl`, the file [`import_posts`] reads: the simulator's posts
/// dataset, written when missing (a test may append posts of its own, for
/// both the daemon's store and the reference).
pub fn dataset_file(dir: &Path) -> PathBuf {
    let f = dir.join("posts.jsonl");
    if !f.exists() {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&f).unwrap());
        for line in complyd::sim::generate_posts(SEED, POSTS as usize) {
            writeln!(w, "{line}").unwrap();
        }
        w.flush().unwrap();
    }
    f
}

/// Imports `dir/posts.jsonl` ([`dataset_file`]) into the store at `url`.
pub fn import_posts(url: &str, dir: &Path) {
    let f = dataset_file(dir);
    let mut st = store::open(url).unwrap();
    let mut dl = DeadLetter::new(dir.join("import.deadletter.jsonl"));
    complyd::commands::import(st.as_mut(), &mut dl, &[f.display().to_string()]).unwrap();
}

/// Polls `f` every 10 ms until it holds or `timeout` passes.
pub async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn all_connected(h: &Health) -> bool {
    h.partitions().iter().all(|p| p.state == LinkState::Connected)
}

/// Every partition connected, and every connection up for longer than
/// `stable_after_ms` (`backoff.stable_after_ms`): a drop now is a stable
/// drop (reconnect at once, the failure counts start afresh). The state's
/// time is taken after the stream opened, so this errs on the late side.
pub fn all_stable(h: &Health, stable_after_ms: u64) -> bool {
    let now = complyd::clock::now_ms();
    h.partitions().iter().all(|p| p.state == LinkState::Connected && now - p.since_ms > stable_after_ms as i64 + 50)
}

/// Whether process `pid` has a SIGTERM handler installed (bit 15 of `SigCgt`
/// in `/proc/PID/status`): a SIGTERM then stops `complyd run` cleanly
/// instead of killing the process. Without `/proc` (not Linux) there is
/// nothing to look at: true.
pub fn catches_sigterm(pid: u32) -> bool {
    const SIGTERM: u32 = 15;
    if !cfg!(target_os = "linux") {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (SIGTERM - 1)) != 0)
}

/// The (handler, partition) positions the store holds: 16 once both
/// handlers have committed events of all 8 partitions (0 while it cannot be
/// read).
pub fn committed_positions(st: &mut dyn store::Store) -> usize {
    st.positions().map(|p| p.len()).unwrap_or(0)
}

/// Ends every stream cleanly (a forced disconnect after everything written)
/// and makes every reconnection fail with 503 (never recorded), then waits
/// until the daemon has committed all it received.
pub async fn quiesce(sim: &SimHandle, daemon: &Daemon) {
    sim.trigger(Fault::new(FaultKind::Status { status: 503 }).times(100_000));
    sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: Some("closing for operational reasons".into()) }));
    let h = daemon.health().clone();
    let ok = wait_until(Duration::from_secs(20), || {
        h.partitions().iter().all(|p| p.state != LinkState::Connected) && h.committed() == h.received()
    })
    .await;
    assert!(ok, "the daemon did not quiesce: {}", h.report());
}

/// The JSON lines of the record file, by partition.
pub fn record_lines(record: &Path) -> Vec<(u8, String)> {
    let f = std::fs::File::open(record).unwrap();
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.unwrap();
        let mut it = line.splitn(3, '\t');
        let p: u8 = it.next().unwrap().parse().unwrap();
        let _sent = it.next().unwrap();
        out.push((p, it.next().unwrap().to_owned()));
    }
    out
}

/// What the recording holds: (events, lines that are neither events nor
/// notices: the dead-lettered ones).
pub fn expected_counts(lines: &[(u8, String)]) -> (u64, u64) {
    let (mut events, mut bad) = (0, 0);
    for (_, l) in lines {
        match parse_line(l.as_bytes()) {
            Ok(Message::Event(_)) => events += 1,
            Ok(Message::Unknown { .. }) | Err(_) => bad += 1,
            Ok(_) => {}
        }
    }
    (events, bad)
}

/// Replays the recording offline (`complyd replay`) into a fresh store with
/// the same posts: the reference the daemon's store must equal.
pub fn replay_reference(lines: &[(u8, String)], dir: &Path) -> String {
    let url = format!("sqlite:{}", dir.join("reference.db").display());
    import_posts(&url, dir);
    let f = dir.join("record.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&f).unwrap());
    for (_, l) in lines {
        w.write_all(l.as_bytes()).unwrap();
        w.write_all(b"\r\n").unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let mut st = store::open(&url).unwrap();
    let mut dl = DeadLetter::new(dir.join("reference.deadletter.jsonl"));
    complyd::commands::replay(st.as_mut(), &mut dl, &[f.display().to_string()]).unwrap();
    url
}

fn export(url: &str, country: Option<&str>) -> Vec<u8> {
    let mut st = store::open(url).unwrap();
    let c = country.map(|c| complyd::commands::parse_country(c).unwrap());
    let mut out = Vec::new();
    complyd::commands::export(st.as_mut(), c, &mut out).unwrap();
    out
}

/// Every id the dataset and the recording name.
fn ids(lines: &[(u8, String)]) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for line in complyd::sim::generate_posts(SEED, POSTS as usize) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        ids.insert(v["id_str"].as_str().unwrap().parse::<u64>().unwrap());
    }
    for (_, l) in lines {
        if let Ok(Message::Event(e)) = parse_line(l.as_bytes()) {
            if let EventKind::Status(s) = e.kind {
                match s {
                    StatusEvent::Delete { id, .. } | StatusEvent::Drop { id, .. } | StatusEvent::Undrop { id, .. } => {
                        ids.insert(id);
                    }
                    StatusEvent::Withheld(w) => {
                        ids.insert(w.id);
                    }
                    StatusEvent::Edit(e) => {
                        ids.insert(e.id);
                        ids.extend(e.edit_ids);
                    }
                    StatusEvent::FavoriteDelete { .. } => {}
                }
            }
        }
    }
    ids
}

/// The daemon's store equals the offline replay of the recording: the same
/// export (everywhere and in DE) and the same facts for every id.
pub fn assert_same_effect(daemon_url: &str, reference_url: &str, lines: &[(u8, String)]) {
    assert_eq!(
        export(daemon_url, None),
        export(reference_url, None),
        "the visible posts differ from an offline replay of the recording"
    );
    assert_eq!(export(daemon_url, Some("DE")), export(reference_url, Some("DE")));
    let mut a = store::open(daemon_url).unwrap();
    let mut b = store::open(reference_url).unwrap();
    // The offline replay finishes the per-post work (deleted content, purges,
    // geo) before it exits; the daemon does it every few seconds. Let the
    // daemon's store catch up before comparing stored facts.
    let now = chrono::Utc::now().timestamp_millis();
    for _ in 0..1000 {
        if a.maintain(now, 10_000).unwrap().pending == 0 {
            break;
        }
    }
    let ids = ids(lines);
    assert!(ids.len() > POSTS as usize / 2);
    for id in ids {
        assert_eq!(a.facts(id).unwrap(), b.facts(id).unwrap(), "facts of {id} differ");
    }
}

/// Resident memory of this process in MB.
pub fn rss_mb() -> f64 {
    complyd::daemon::bench::rss_mb()
}

/// GET `http://addr/path`: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let client = awc::Client::default();
    let mut r = client.get(format!("http://{addr}{path}")).send().await.expect("GET");
    let body = r.body().await.expect("body");
    (r.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// The value of the Prometheus sample `name` whose labels include every
/// `labels` pair (None when there is none).
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok()).flatten()
    })
}

/// A temporary directory (kept, and its path printed, when
/// `COMPLYD_TEST_KEEP` is set).
pub fn tempdir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("complyd-test-");
    let keep = std::env::var_os("COMPLYD_TEST_KEEP").is_some();
    b.disable_cleanup(keep);
    let d = b.tempdir().unwrap();
    if keep {
        eprintln!("test directory: {}", d.path().display());
    }
    d
}

pub fn path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_path_buf()
}

pub fn dead_lettered(h: &Health) -> u64 {
    h.partition_ids().iter().map(|p| h.counters(*p).dead_lettered.load(Relaxed)).sum()
}

/// Events recorded per partition (index 0 = partition 1).
pub fn recorded_per_partition(lines: &[(u8, String)]) -> [u64; 8] {
    let mut n = [0u64; 8];
    // Partition 0 is a replay's (not of any partition's stream).
    for (p, l) in lines.iter().filter(|(p, _)| *p > 0) {
        if let Ok(Message::Event(_)) = parse_line(l.as_bytes()) {
            n[usize::from(*p - 1)] += 1;
        }
    }
    n
}

/// Received vs recorded events, per partition (for assertion messages).
pub fn per_partition_diff(h: &Health, lines: &[(u8, String)]) -> String {
    let rec = recorded_per_partition(lines);
    (1..=8u8)
        .map(|p| format!("p{p}: received {} recorded {}", h.counters(p).events.load(Relaxed), rec[usize::from(p - 1)]))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Distinct event lines recorded per partition (a connection the daemon has
/// already left may still be written to and recorded: its events arrive
/// again on the next connection, by backfill).
pub fn distinct_per_partition(lines: &[(u8, String)]) -> [u64; 8] {
    let mut seen: Vec<std::collections::HashSet<&str>> = (0..8).map(|_| Default::default()).collect();
    for (p, l) in lines.iter().filter(|(p, _)| *p > 0) {
        if let Ok(Message::Event(_)) = parse_line(l.as_bytes()) {
            seen[usize::from(*p - 1)].insert(l.as_str());
        }
    }
    std::array::from_fn(|i| seen[i].len() as u64)
}

/// Every event line the simulator generated in event time `[from_ms,
/// to_ms)` (minutes), sent or not, as its own Replay endpoint serves it
/// (partition 0: a replay's lines are of no partition).
pub async fn sim_generated(sim: &SimHandle, cfg: &SimConfig, from_ms: i64, to_ms: i64) -> Vec<(u8, String)> {
    let q = format!(
        "/replay/compliance/accounts/{}/publishers/twitter/{}.json?fromDate={}&toDate={}",
        cfg.account,
        cfg.label,
        complyd::gaps::replay_date(from_ms.div_euclid(60_000) * 60_000),
        complyd::gaps::replay_date(to_ms)
    );
    let auth = super::sim_client::basic_auth(&cfg.username, &cfg.password);
    let mut r =
        super::sim_client::StreamReader::open(sim.addr(), &q, &[("Authorization", &auth), ("Accept-Encoding", "gzip")])
            .await
            .unwrap();
    r.read_to_end(Duration::from_secs(20)).await;
    r.message_strings().into_iter().map(|l| (0, l)).collect()
}

/// The store at `url` has the effect of everything the simulator sent (its
/// recording in `dir`) and of `generated` (lines it generated, sent or not),
/// as an offline replay of them gives.
pub fn assert_sent_and_generated(url: &str, dir: &Path, generated: Vec<(u8, String)>) {
    let mut lines = record_lines(&dir.join("record.tsv"));
    lines.extend(generated);
    let reference = replay_reference(&lines, dir);
    assert_same_effect(url, &reference, &lines);
}
