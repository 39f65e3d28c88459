//! Every fault of the simulator: the daemon reconnects after the delay its
//! policy says (short delays, no jitter), loses nothing the fault did not
//! destroy (the store equals an offline replay of what the simulator
//! recorded; backfill on reconnect covers what was in flight), and the
//! simulator never answers 429 because of the daemon, even when all 8
//! partitions drop at once.

mod common;

use common::daemon::*;
use complyd::daemon::bench::{peak_rss_mb, reset_peak_rss};
use complyd::daemon::Daemon;
use complyd::gaps::{GapCause, GapState};
use complyd::health::{Health, PartitionHealth};
use complyd::sim::{Fault, FaultKind, RateLimitConfig, SimConfig};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

/// The tests of this file measure delays: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The hostile-bytes test measures the process's memory: the Replay tests
/// (each with a daemon and stores of its own) run beside each other, never
/// beside it.
static MEMORY: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Limiter window of these tests (the simulator's is the same, the daemon
/// adds a margin).
const WINDOW_MS: u64 = 2_000;

fn sim_cfg(d: &std::path::Path) -> SimConfig {
    SimConfig {
        rate_limit: RateLimitConfig { connections: 10, window_ms: WINDOW_MS, count_rejected: true },
        ..sim_config(d, 4_000.0)
    }
}

fn part(h: &Health, p: u8) -> PartitionHealth {
    h.partitions().into_iter().find(|x| x.partition == p).unwrap()
}

/// Exit `idx` of partition `p` counted as `class` with `delay_ms`, and the
/// next connection request came after that delay (plus, at most, a limiter
/// window).
fn check_exit(h: &Health, p: u8, idx: usize, class: &str, delay_ms: u64) {
    let ph = part(h, p);
    let e = ph.exits.get(idx).unwrap_or_else(|| panic!("partition {p}: no exit {idx}: {:?}", ph.exits));
    assert_eq!(e.class, class, "partition {p} exit {idx}: {e:?}");
    assert_eq!(e.delay_ms, delay_ms, "partition {p} exit {idx}: {e:?}");
    // Every request ends in one exit: request idx + 1 is the one after exit idx.
    let next =
        ph.requests_ms.get(idx + 1).unwrap_or_else(|| panic!("partition {p}: no request after exit {idx}: {ph:?}"));
    let waited = next - e.at_ms;
    assert!(
        waited >= delay_ms as i64 - 5 && waited <= delay_ms as i64 + WINDOW_MS as i64 + 600,
        "partition {p} exit {idx}: reconnected after {waited} ms, policy said {delay_ms} ms"
    );
}

/// Waits (at most 20 s) until every partition's connection is stable.
async fn assert_stable(h: &Health, stable_ms: u64) {
    assert!(
        wait_until(Duration::from_secs(20), || all_stable(h, stable_ms)).await,
        "the connections did not become stable ({stable_ms} ms up): {}",
        h.report()
    );
}

/// No window of `window_ms` holds more than `max` connection requests.
fn assert_request_rate(h: &Health, max: usize, window_ms: i64) {
    let mut all: Vec<i64> = h.partitions().iter().flat_map(|p| p.requests_ms.iter().copied()).collect();
    all.sort_unstable();
    for (i, t) in all.iter().enumerate() {
        let n = all[i..].iter().take_while(|u| **u < t + window_ms).count();
        assert!(n <= max, "{n} connection requests within {window_ms} ms from {t}: {all:?}");
    }
}

// The guard is held on purpose for the whole test (one test at a time).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn every_fault_reconnects_after_its_policy_delay_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_cfg(&d);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.stream.backfill_minutes = 1;
        s.limiter.window_ms = WINDOW_MS;
        s.limiter.margin_ms = 100;
        let url = s.store.url.clone();
        let stable_ms = s.backoff.stable_after_ms;
        import_posts(&url, &d);
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        // Stable connections: every later drop starts the counts afresh.
        assert_stable(&h, stable_ms).await;

        let operational = || FaultKind::ForcedDisconnect { message: Some("closing for operational reasons".into()) };
        sim.trigger(Fault::new(FaultKind::DropMidMessage).on_partition(1));
        sim.trigger(Fault::new(FaultKind::Stall { duration_ms: 3_000 }).on_partition(2));
        sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: None }).on_partition(3));
        sim.trigger(Fault::new(operational()).on_partition(4));
        sim.trigger(Fault::new(FaultKind::FullBuffer { lose_events: 50 }).on_partition(5));
        sim.trigger(Fault::new(FaultKind::TruncatedGzip).on_partition(6));
        sim.trigger(Fault::new(FaultKind::Status { status: 503 }).on_partition(7).times(2));
        sim.trigger(Fault::new(operational()).on_partition(7));
        sim.trigger(Fault::new(FaultKind::Trickle { bytes_per_sec: 4_000, duration_ms: Some(1_500) }).on_partition(8));
        // Events are stamped when released: one stamped after the trickle
        // (armed at once, plus a margin) is received only once it is over.
        let trickle_over_ms = complyd::clock::now_ms() + 1_500 + 100;

        let reconnected = wait_until(Duration::from_secs(20), || {
            (1..=7).all(|p| h.counters(p).connections.load(Relaxed) >= 2) && all_connected(&h)
        })
        .await;
        assert!(reconnected, "{}", h.report());
        // Partition 8 went through the whole trickle (its check below says it
        // was not cut for being slow).
        assert!(
            wait_until(Duration::from_secs(20), || h.counters(8).last_event_ms.load(Relaxed) >= trickle_over_ms).await,
            "partition 8 never received an event released after the trickle: {}",
            h.report()
        );
        let snapshot: Vec<PartitionHealth> = h.partitions();

        check_exit(&h, 1, 0, "network", 100);
        assert!(snapshot[0].exits[0].reason.contains("read failed"), "{:?}", snapshot[0].exits);
        // Every reconnect left a gap in the ledger, the full buffer's marked
        // as such; the one-minute backfill repaired each.
        let mut st = complyd::store::open(&url).unwrap();
        let repaired = wait_until(Duration::from_secs(20), || {
            let g = st.gaps(false).unwrap();
            (1..=7).all(|p| g.iter().any(|g| g.partition == p)) && g.iter().all(|g| g.state == GapState::Repaired)
        })
        .await;
        let gaps = st.gaps(false).unwrap();
        assert!(repaired, "{gaps:#?}");
        let cause = |p: u8| gaps.iter().find(|g| g.partition == p).map(|g| g.cause);
        assert_eq!(cause(5), Some(GapCause::FullBuffer));
        assert_eq!(cause(3), Some(GapCause::Disconnect));
        drop(st);
        // The half message the drop left is counted, never applied.
        assert_eq!(h.counters(1).cut_messages.load(Relaxed), 1, "{}", h.report());
        assert_eq!(h.counters(4).cut_messages.load(Relaxed), 0, "a clean end cuts nothing");
        check_exit(&h, 2, 0, "network", 100);
        assert!(snapshot[1].exits[0].reason.contains("idle-read timeout"), "{:?}", snapshot[1].exits);
        check_exit(&h, 3, 0, "server", 300);
        assert!(snapshot[2].exits[0].reason.contains("Too many connections"), "{:?}", snapshot[2].exits);
        check_exit(&h, 4, 0, "dropped", 0);
        check_exit(&h, 5, 0, "dropped", 0);
        assert_eq!(h.counters(5).data_loss.load(Relaxed), 1, "the full-buffer disconnect is counted as data loss");
        assert_eq!(snapshot[4].data_loss, 1);
        check_exit(&h, 6, 0, "network", 100);
        assert!(snapshot[5].exits[0].reason.contains("gzip"), "{:?}", snapshot[5].exits);
        check_exit(&h, 7, 0, "dropped", 0);
        check_exit(&h, 7, 1, "server", 300);
        check_exit(&h, 7, 2, "server", 600);
        assert!(snapshot[7].exits.is_empty(), "a slow but live stream is not cut: {:?}", snapshot[7].exits);
        assert_request_rate(&h, 10, WINDOW_MS as i64);

        quiesce(&sim, &daemon).await;
        let stats = sim.stats();
        let report = daemon.shutdown().await;
        sim.stop().await;
        assert!(report.clean, "{report:?}");
        assert_eq!(stats.responses_with(429), 0, "the simulator answered 429");
        assert!(stats.partitions.iter().map(|p| p.backfill_events_sent).sum::<u64>() > 0, "backfill was asked for");

        let lines = record_lines(&d.join("record.tsv"));
        // The stalled connection is written to (and recorded) after the daemon
        // left it: counts cannot match line for line, the effect must.
        eprintln!("{}", per_partition_diff(&h, &lines));
        let distinct = distinct_per_partition(&lines);
        for p in 1..=8u8 {
            assert!(
                h.counters(p).events.load(Relaxed) >= distinct[usize::from(p - 1)],
                "{}",
                per_partition_diff(&h, &lines)
            );
        }
        assert_eq!(h.committed(), h.received());
        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);
    })
    .await
    .expect("the test timed out");
}

// The guard is held on purpose for the whole test (one test at a time).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn a_429_backs_off_from_its_initial_delay_and_spends_the_window() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_cfg(&d);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.limiter.window_ms = WINDOW_MS;
        s.limiter.margin_ms = 100;
        let stable_ms = s.backoff.stable_after_ms;
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        // Stable connections: the forced disconnect is a stable drop.
        assert_stable(&h, stable_ms).await;
        sim.trigger(Fault::new(FaultKind::Status { status: 429 }).on_partition(3));
        sim.trigger(
            Fault::new(FaultKind::ForcedDisconnect { message: Some("closing for operational reasons".into()) })
                .on_partition(3),
        );
        assert!(
            wait_until(Duration::from_secs(15), || h.counters(3).connections.load(Relaxed) == 2).await,
            "{}",
            h.report()
        );
        check_exit(&h, 3, 0, "dropped", 0);
        check_exit(&h, 3, 1, "rate_limited", 1_000);
        let p3 = part(&h, 3);
        let e = &p3.exits[1];
        let next = p3.requests_ms[2];
        assert!(next - e.at_ms >= WINDOW_MS as i64, "after a 429 the whole window is waited out: {p3:?}");
        let stats = sim.stats();
        assert_eq!(stats.responses_with(429), 1, "only the forced 429");
        daemon.shutdown().await;
        sim.stop().await;
    })
    .await
    .expect("the test timed out");
}

// The guard is held on purpose for the whole test (one test at a time).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn eight_simultaneous_drops_never_draw_a_429() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempdir();
        let d = path(&dir);
        let window = 3_000u64;
        let cfg = SimConfig {
            rate_limit: RateLimitConfig { connections: 10, window_ms: window, count_rejected: true },
            ..sim_config(&d, 4_000.0)
        };
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.stream.backfill_minutes = 1;
        s.limiter.window_ms = window;
        s.limiter.margin_ms = 200;
        let url = s.store.url.clone();
        let stable_ms = s.backoff.stable_after_ms;
        import_posts(&url, &d);
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        for round in 1..=2u64 {
            // Stable connections: all 8 drops are stable drops that reconnect
            // at once, so only the limiter holds them back.
            assert_stable(&h, stable_ms).await;
            sim.trigger(Fault::new(FaultKind::ForcedDisconnect {
                message: Some("closing for operational reasons".into()),
            }));
            let back = wait_until(Duration::from_secs(15), || {
                (1..=8).all(|p| h.counters(p).connections.load(Relaxed) == round + 1) && all_connected(&h)
            })
            .await;
            assert!(back, "round {round}: {}", h.report());
        }
        assert_eq!(sim.stats().responses_with(429), 0, "a burst of drops drew a 429");
        assert_request_rate(&h, 10, window as i64);
        // Some partitions had to wait for the window to slide.
        let waited = h
            .partitions()
            .iter()
            .filter(|p| {
                let e = &p.exits[0];
                p.requests_ms.get(1).is_some_and(|t| t - e.at_ms > 500)
            })
            .count();
        assert!(waited >= 4, "the limiter held back reconnections: {}", h.report());

        quiesce(&sim, &daemon).await;
        daemon.shutdown().await;
        sim.stop().await;
        let lines = record_lines(&d.join("record.tsv"));
        let (events, _) = expected_counts(&lines);
        assert_eq!(h.committed(), events);
        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);
    })
    .await
    .expect("the test timed out");
}

// The guard is held on purpose for the whole test (one test at a time).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn past_the_restart_intensity_a_partition_is_failed_until_a_stable_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_cfg(&d);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.limiter.window_ms = WINDOW_MS;
        s.limiter.margin_ms = 100;
        s.backoff.server_initial_ms = 100;
        s.backoff.server_max_ms = 200;
        s.restart.max_failures = 3;
        s.restart.window_ms = 10_000;
        s.restart.failed_retry_ms = 700;
        let stable_ms = s.backoff.stable_after_ms;
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        let addr = daemon.http_addr().unwrap();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        // Stable connections: the forced disconnect is a stable drop, the
        // 503s that follow are the first failures.
        assert_stable(&h, stable_ms).await;
        sim.trigger(Fault::new(FaultKind::Status { status: 503 }).on_partition(3).times(5));
        sim.trigger(
            Fault::new(FaultKind::ForcedDisconnect { message: Some("closing for operational reasons".into()) })
                .on_partition(3),
        );
        assert!(wait_until(Duration::from_secs(15), || part(&h, 3).failed).await, "{}", h.report());
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("partition 3: failed"), "{body}");
        // Back once the 503s are spent, and cleared once stable.
        assert!(
            wait_until(Duration::from_secs(20), || {
                let p = part(&h, 3);
                !p.failed && h.counters(3).connections.load(Relaxed) == 2
            })
            .await,
            "{}",
            h.report()
        );
        check_exit(&h, 3, 0, "dropped", 0);
        check_exit(&h, 3, 1, "server", 100);
        check_exit(&h, 3, 2, "server", 200);
        check_exit(&h, 3, 3, "server", 200);
        // The fourth failure in the window: past the intensity, the slowest pace.
        check_exit(&h, 3, 4, "server", 700);
        check_exit(&h, 3, 5, "server", 700);
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(sim.stats().responses_with(429), 0);
        daemon.shutdown().await;
        sim.stop().await;
    })
    .await
    .expect("the test timed out");
}

/// A simulator whose Replay serves up to the present minute, and a daemon
/// with backfill off that asks Replay (every `check_interval_ms`) as soon as
/// a gap's last minute is over; events flowing on every partition.
async fn start_for_replay(
    d: &std::path::Path,
    check_interval_ms: u64,
    ignored_backfill: Option<u32>,
) -> (SimConfig, complyd::sim::SimHandle, String, Daemon) {
    start_for_replay_ahead(d, check_interval_ms, ignored_backfill, 0).await
}

/// The same with the simulator's clock (X's) `ahead_ms` ahead of the
/// daemon's.
async fn start_for_replay_ahead(
    d: &std::path::Path,
    check_interval_ms: u64,
    ignored_backfill: Option<u32>,
    ahead_ms: i64,
) -> (SimConfig, complyd::sim::SimHandle, String, Daemon) {
    let mut cfg = sim_config(d, 2_000.0);
    cfg.replay.min_age_minutes = 0;
    if ahead_ms != 0 {
        cfg.epoch_ms = Some(complyd::clock::now_ms() + ahead_ms);
    }
    // Some(n): the daemon asks for n minutes of backfill, which the
    // simulator accepts and never sends.
    cfg.backfill.ignored = ignored_backfill.is_some();
    let sim = complyd::sim::start(cfg.clone()).await.unwrap();
    let mut s = daemon_settings(&sim, &cfg, d, "daemon.db");
    s.stream.backfill_minutes = ignored_backfill.unwrap_or(0);
    s.replay.freshness_ms = 0;
    s.replay.check_interval_ms = check_interval_ms;
    let url = s.store.url.clone();
    import_posts(&url, d);
    let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
    let h = daemon.health().clone();
    assert!(wait_until(Duration::from_secs(10), || all_connected(&h) && h.received() > 1_000).await, "{}", h.report());
    (cfg, sim, url, daemon)
}

/// Partition 5's gap, if the ledger holds one.
fn gap_of_5(st: &mut Box<dyn complyd::store::Store>) -> Option<complyd::gaps::Gap> {
    st.gaps(false).unwrap().into_iter().find(|g| g.partition == 5)
}

/// A full-buffer disconnect on partition 5 (200 events thrown away), once
/// its gap is in the ledger: the store, and the gap.
async fn full_buffer_on_5(
    sim: &complyd::sim::SimHandle,
    url: &str,
) -> (Box<dyn complyd::store::Store>, complyd::gaps::Gap) {
    sim.trigger(Fault::new(FaultKind::FullBuffer { lose_events: 200 }).on_partition(5));
    let mut st = complyd::store::open(url).unwrap();
    assert!(wait_until(Duration::from_secs(20), || gap_of_5(&mut st).is_some()).await, "no gap recorded");
    let gap = gap_of_5(&mut st).unwrap();
    (st, gap)
}

/// A full-buffer disconnect loses events at the server, and backfill is off:
/// the gap stays open until the daemon fetches it from Replay, once its last
/// minute is over. The store then holds every event the simulator
/// generated, the lost ones included, not only what it sent.
// The read guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn a_gap_without_backfill_is_repaired_through_replay_with_what_was_never_sent() {
    let _memory = MEMORY.read().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempdir();
        let d = path(&dir);
        let (cfg, sim, url, daemon) = start_for_replay(&d, 200, None).await;
        let h = daemon.health().clone();

        let (mut st, gap) = full_buffer_on_5(&sim, &url).await;
        assert_eq!((gap.cause, gap.state), (GapCause::FullBuffer, GapState::Open), "{gap:?}");
        // Replay serves whole minutes: the repair waits for the gap's last one.
        let repaired =
            wait_until(Duration::from_secs(100), || gap_of_5(&mut st).is_some_and(|g| g.state == GapState::Repaired))
                .await;
        let gap = gap_of_5(&mut st).unwrap();
        assert!(repaired, "{gap:#?}\n{}", h.report());
        assert_eq!(gap.repair, Some(complyd::gaps::Repair::Replay), "{gap:?}");
        assert!(gap.history.last().unwrap().note.contains("completed"), "{gap:?}");
        assert!(sim.stats().replays_total >= 1);
        assert_eq!(sim.stats().responses_with(429), 0, "the replay budget was respected");
        drop(st);
        quiesce(&sim, &daemon).await;
        daemon.shutdown().await;

        // What the simulator generated up to the end of the repaired
        // window (its own Replay), then everything it sent.
        let generated = sim_generated(&sim, &cfg, sim.epoch_ms(), gap.covered_to_ms).await;
        assert!(generated.len() > 1_000, "{} lines replayed", generated.len());

        // The same range by hand: `complyd replay --from --to` into a new
        // store gives what an offline replay of those lines gives.
        let by_hand = d.join("by-hand");
        std::fs::create_dir_all(&by_hand).unwrap();
        let hand_url = format!("sqlite:{}", by_hand.join("store.db").display());
        import_posts(&hand_url, &by_hand);
        std::fs::write(by_hand.join("password"), format!("{}\n", cfg.password)).unwrap();
        let conf = by_hand.join("complyd.toml");
        std::fs::write(
            &conf,
            format!(
                "[stream]\nurl = \"http://{}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json\"\naccount = \"{}\"\nlabel = \"{}\"\nusername = \"{}\"\npassword_file = \"{}\"\n[store]\nurl = \"{hand_url}\"\n",
                sim.addr(),
                cfg.account,
                cfg.label,
                cfg.username,
                by_hand.join("password").display()
            ),
        )
        .unwrap();
        let (from, to) = (
            complyd::gaps::replay_date(sim.epoch_ms().div_euclid(60_000) * 60_000),
            complyd::gaps::replay_date(gap.covered_to_ms),
        );
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_complyd"))
                .args(["replay", "--config"])
                .arg(&conf)
                .args(["--from", &from, "--to", &to])
                .env_remove("COMPLYD_LOG")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("completed") && err.contains("in 1 requests"), "{err}");
        let hand_reference = replay_reference(&generated, &by_hand);
        assert_same_effect(&hand_url, &hand_reference, &generated);
        sim.stop().await;
        assert_sent_and_generated(&url, &d, generated);
    })
    .await
    .expect("the test timed out");
}

/// X's clock 75 s ahead of this machine's: the events a full buffer threw
/// away bear X's times, after the local time the next connection opened. The
/// gap ends that much later (the lead the last connection's bytes showed),
/// so Replay is asked for the minutes that hold them, and the store ends
/// with every event generated, not a gap marked repaired without them.
// The read guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn a_gap_left_while_x_clock_runs_ahead_is_replayed_by_x_times() {
    let _memory = MEMORY.read().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempdir();
        let d = path(&dir);
        let ahead = 75_000;
        let (cfg, sim, url, daemon) = start_for_replay_ahead(&d, 200, None, ahead).await;
        let h = daemon.health().clone();
        let (mut st, gap) = full_buffer_on_5(&sim, &url).await;
        assert!(
            gap.to_ms - gap.opened_ms > ahead - 5_000,
            "the gap ends by X's clock, {} ms after this machine's: {gap:?}",
            gap.to_ms - gap.opened_ms
        );
        let repaired =
            wait_until(Duration::from_secs(200), || gap_of_5(&mut st).is_some_and(|g| g.state == GapState::Repaired))
                .await;
        let gap = gap_of_5(&mut st).unwrap();
        assert!(repaired, "{gap:#?}\n{}", h.report());
        drop(st);
        // The reference: every event X stamped before a minute that begins
        // after the thrown-away ones (their X times run up to the local
        // reconnection plus the lead). Everything stamped before it was sent
        // (X's times run ahead of the sending) or thrown away, so the store
        // must hold all of it; the gap's own end would be no reference, as
        // without the lead it ended before the events it missed.
        let minute = 60_000;
        let after_the_lost = gap.opened_ms + ahead + 1_000;
        assert!(
            wait_until(Duration::from_secs(130), || complyd::gaps::floor_minute(complyd::clock::now_ms())
                > after_the_lost)
            .await
        );
        let reference_to = complyd::gaps::floor_minute(complyd::clock::now_ms());
        assert!(reference_to > after_the_lost && reference_to % minute == 0);
        quiesce(&sim, &daemon).await;
        daemon.shutdown().await;
        let generated = sim_generated(&sim, &cfg, sim.epoch_ms(), reference_to).await;
        sim.stop().await;
        assert_sent_and_generated(&url, &d, generated);
    })
    .await
    .expect("the test timed out");
}

/// A server that accepts `backfillMinutes` and sends nothing back: the gap
/// is first marked as repairing by backfill, the connection's first event
/// shows that nothing reached back over it, and the gap goes to Replay,
/// which repairs it with what was never sent.
// The read guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn a_backfill_the_server_ignores_is_noticed_and_the_gap_replayed() {
    let _memory = MEMORY.read().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempdir();
        let d = path(&dir);
        let (cfg, sim, url, daemon) = start_for_replay(&d, 200, Some(2)).await;
        let h = daemon.health().clone();
        sim.trigger(Fault::new(FaultKind::FullBuffer { lose_events: 200 }).on_partition(6));
        let mut st = complyd::store::open(&url).unwrap();
        let gap_of_6 =
            |st: &mut Box<dyn complyd::store::Store>| st.gaps(false).unwrap().into_iter().find(|g| g.partition == 6);
        let repaired =
            wait_until(Duration::from_secs(100), || gap_of_6(&mut st).is_some_and(|g| g.state == GapState::Repaired))
                .await;
        let gap = gap_of_6(&mut st).unwrap();
        assert!(repaired, "{gap:#?}\n{}", h.report());
        let moves: Vec<(&str, &str)> = gap.history.iter().map(|e| (e.state.as_str(), e.note.as_str())).collect();
        assert_eq!(moves[0].0, "repairing", "first taken for a backfill: {moves:?}");
        assert!(
            moves.iter().any(|(s, n)| *s == "open" && n.contains("did not reach back")),
            "then reopened: {moves:?}"
        );
        assert_eq!(gap.repair, Some(complyd::gaps::Repair::Replay), "{gap:?}");
        assert_eq!(sim.stats().partitions.iter().map(|p| p.backfill_events_sent).sum::<u64>(), 0);
        drop(st);
        quiesce(&sim, &daemon).await;
        daemon.shutdown().await;
        let generated = sim_generated(&sim, &cfg, gap.from_ms, gap.covered_to_ms).await;
        sim.stop().await;
        assert_sent_and_generated(&url, &d, generated);
    })
    .await
    .expect("the test timed out");
}

/// Replay as X can answer it: completed with errors (a minute failed),
/// failed to complete (a range unprocessed), broken before its `info` line.
/// Each is asked again from the first minute missing, within the request
/// budget, until a request completes and the gap is repaired with every
/// event the simulator generated.
// The read guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn replay_errors_unprocessed_ranges_and_breaks_are_asked_again_until_complete() {
    let _memory = MEMORY.read().unwrap_or_else(|e| e.into_inner());
    use complyd::sim::ReplayOutcome as Answer;
    init_logs();
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempdir();
        let d = path(&dir);
        // Slow enough for the test to arm the next answer between requests.
        let (cfg, sim, url, daemon) = start_for_replay(&d, 1_500, None).await;
        let h = daemon.health().clone();

        sim.trigger(Fault::new(FaultKind::ReplayOutcome { outcome: Answer::CompletedWithErrors }));
        sim.trigger(Fault::new(FaultKind::FullBuffer { lose_events: 100 }).on_partition(2));
        let replays = || sim.stats().replays_total;
        for (n, next) in [
            (1, Some(FaultKind::ReplayOutcome { outcome: Answer::Failed })),
            (2, Some(FaultKind::ReplayAbort)),
            (3, None),
        ] {
            assert!(
                wait_until(Duration::from_secs(100), || replays() >= n).await,
                "replay {n} never came: {}",
                h.report()
            );
            if let Some(kind) = next {
                sim.trigger(Fault::new(kind));
            }
        }
        let mut st = complyd::store::open(&url).unwrap();
        let gap = |st: &mut Box<dyn complyd::store::Store>| {
            st.gaps(false).unwrap().into_iter().find(|g| g.partition == 2).unwrap()
        };
        let repaired = wait_until(Duration::from_secs(30), || gap(&mut st).state == GapState::Repaired).await;
        let g = gap(&mut st);
        assert!(repaired, "{g:#?}");
        let notes: Vec<&str> = g.history.iter().map(|e| e.note.as_str()).collect();
        // The break is a read error (the connection dropped half-way): no
        // info line, so the whole window is asked again.
        let wants: [&[&str]; 5] = [
            &["full_buffer"],
            &["minutes_failed", "asked again"],
            &["unprocessed_range", "asked again"],
            &["read failed", "asked again"],
            &["completed"],
        ];
        assert_eq!(notes.len(), wants.len(), "{notes:#?}");
        for (i, want) in wants.iter().enumerate() {
            assert!(want.iter().all(|w| notes[i].contains(w)), "step {i} should say {want:?}: {notes:#?}");
        }
        assert_eq!(replays(), 4, "one request per answer, nothing wasted");
        assert_eq!(sim.stats().responses_with(429), 0, "the replay budget was respected");
        drop(st);
        quiesce(&sim, &daemon).await;
        daemon.shutdown().await;

        // Every event generated up to the repaired window's end, then
        // everything sent.
        let generated = sim_generated(&sim, &cfg, sim.epoch_ms(), g.covered_to_ms).await;
        sim.stop().await;
        assert_sent_and_generated(&url, &d, generated);
    })
    .await
    .expect("the test timed out");
}

// ---------------------------------------------------------------------------
// Hostile servers: what a broken proxy, a hostile network or a bug at X can
// send. Partition 1 gets the hostile answer, partition 2 a good stream; the
// daemon must say what went wrong, keep its memory bounded, and keep
// partition 2 flowing.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hostile {
    /// 100 MB without `\r\n`, then a good event.
    HugeLine,
    /// A line that is not UTF-8, then a good event.
    InvalidUtf8,
    /// JSON objects nested 50,000 deep (550 KB, under the line limit), then a good event.
    Nested,
    /// 300 MB of zeros, gzip'd to a few hundred KB.
    Bomb,
    /// One byte every 200 ms, never a whole line.
    Trickle,
    /// Reads the request, never answers.
    Silent,
    /// `Content-Encoding: br`.
    WrongEncoding,
    /// Not HTTP at all.
    NotHttp,
}

struct HostileServer {
    addr: std::net::SocketAddr,
    mode: std::sync::Arc<Mutex<Hostile>>,
}

fn gz_piece(enc: &mut flate2::write::GzEncoder<Vec<u8>>, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    enc.write_all(bytes).unwrap();
    enc.flush().unwrap();
    std::mem::take(enc.get_mut())
}

fn event_line(id: u64) -> String {
    format!(
        r#"{{"delete":{{"status":{{"id":{id},"id_str":"{id}","user_id":7,"user_id_str":"7"}},"timestamp_ms":"{}"}}}}"#,
        complyd::clock::now_ms()
    ) + "\r\n"
}

async fn write_chunk(sock: &mut tokio::net::TcpStream, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if data.is_empty() {
        return Ok(());
    }
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes()).await?;
    sock.write_all(data).await?;
    sock.write_all(b"\r\n").await
}

const HEAD_GZIP: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
const HEAD_PLAIN: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

impl HostileServer {
    async fn start() -> HostileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = std::sync::Arc::new(Mutex::new(Hostile::HugeLine));
        // The bomb, compressed once.
        let bomb = {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..300 {
                enc.write_all(&zeros).unwrap();
            }
            std::sync::Arc::new(enc.finish().unwrap())
        };
        let m = mode.clone();
        actix_rt::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (m, bomb) = (m.clone(), bomb.clone());
                actix_rt::spawn(async move {
                    let _ = serve(sock, m, bomb).await;
                });
            }
        });
        HostileServer { addr, mode }
    }

    fn set(&self, m: Hostile) {
        *self.mode.lock().unwrap() = m;
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    mode: std::sync::Arc<Mutex<Hostile>>,
    bomb: std::sync::Arc<Vec<u8>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let first = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if !first.contains("partition=1") {
        // A good stream: an event every 50 ms, forever.
        sock.write_all(HEAD_GZIP.as_bytes()).await?;
        for i in 0u64.. {
            let piece = gz_piece(&mut enc, event_line(1_000_000 + i).as_bytes());
            write_chunk(&mut sock, &piece).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return Ok(());
    }
    let m = *mode.lock().unwrap();
    let pause = Duration::from_millis(200);
    match m {
        Hostile::HugeLine => {
            sock.write_all(HEAD_PLAIN.as_bytes()).await?;
            let block = vec![b'a'; 1 << 20];
            for _ in 0..100 {
                write_chunk(&mut sock, &block).await?;
            }
            write_chunk(&mut sock, format!("\r\n{}", event_line(1)).as_bytes()).await?;
        }
        Hostile::InvalidUtf8 | Hostile::Nested => {
            sock.write_all(HEAD_GZIP.as_bytes()).await?;
            let bad: Vec<u8> = if m == Hostile::Nested {
                let mut v = b"{\"delete\":".repeat(50_000);
                v.extend_from_slice(b"1");
                v.extend(std::iter::repeat(b'}').take(50_000));
                v
            } else {
                b"{\"delete\":{\"status\":{\"id\":2,\"id_str\":\"\xff\xfe\xfd\",\"user_id\":7}}}".to_vec()
            };
            let mut line = bad;
            line.extend_from_slice(b"\r\n");
            line.extend_from_slice(event_line(2).as_bytes());
            let piece = gz_piece(&mut enc, &line);
            write_chunk(&mut sock, &piece).await?;
        }
        Hostile::Bomb => {
            sock.write_all(HEAD_GZIP.as_bytes()).await?;
            for c in bomb.chunks(16 << 10) {
                write_chunk(&mut sock, c).await?;
            }
        }
        Hostile::Trickle => {
            sock.write_all(HEAD_PLAIN.as_bytes()).await?;
            while *mode.lock().unwrap() == m {
                write_chunk(&mut sock, b"{").await?;
                tokio::time::sleep(pause).await;
            }
            return Ok(());
        }
        Hostile::Silent => {
            while *mode.lock().unwrap() == m {
                tokio::time::sleep(pause).await;
            }
            return Ok(());
        }
        Hostile::WrongEncoding => {
            sock.write_all(HEAD_GZIP.replace("gzip", "br").as_bytes()).await?;
            let piece = gz_piece(&mut enc, event_line(3).as_bytes());
            write_chunk(&mut sock, &piece).await?;
        }
        Hostile::NotHttp => {
            sock.write_all(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n").await?;
            return Ok(());
        }
    }
    // Heartbeats until the test moves on, then drop the connection.
    while *mode.lock().unwrap() == m {
        let hb = if m == Hostile::HugeLine { b"\r\n".to_vec() } else { gz_piece(&mut enc, b"\r\n") };
        write_chunk(&mut sock, &hb).await?;
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

fn dead_letter_reasons(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["source"].as_str().is_some_and(|s| s.contains("partition 1") || s.contains("partition=1")))
        .filter_map(|v| v["reason"].as_str().map(str::to_owned))
        .collect()
}

// The guard is held on purpose for the whole test (one test at a time: the
// memory measured is the process's).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn hostile_bytes_are_dead_lettered_or_cut_with_a_clear_reason_and_the_other_partitions_flow() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _memory = MEMORY.write().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempdir();
        let d = path(&dir);
        let server = HostileServer::start().await;
        let mut s = daemon_settings_for(server.addr, &d, "hostile.db");
        s.stream.partitions = vec![1, 2];
        s.stream.connect_timeout_ms = 1_000;
        s.stream.idle_timeout_ms = 1_500;
        s.limiter.max_requests = 1_000;
        let dl = s.store.dead_letter.clone().unwrap();
        let daemon = Daemon::start(plan(s, complyd::settings::Secret::new("pw"))).await.unwrap();
        let h = daemon.health().clone();
        let p1 = |h: &Health| h.partitions().into_iter().find(|p| p.partition == 1).unwrap();
        let events2 = |h: &Health| h.counters(2).events.load(Relaxed);
        let rss_before = rss_mb();
        // Each mode: what must happen, said by the dead-letter file or the
        // last error of partition 1.
        let cases: [(Hostile, &str); 8] = [
            (Hostile::HugeLine, "dead-lettered oversized"),
            (Hostile::InvalidUtf8, "dead-lettered invalid_json"),
            (Hostile::Nested, "dead-lettered missing_field"),
            (Hostile::Bomb, "gzip bomb"),
            (Hostile::Trickle, "no complete line"),
            (Hostile::Silent, "imeout"),
            (Hostile::WrongEncoding, "Content-Encoding \"br\""),
            (Hostile::NotHttp, "connect failed: invalid HTTP version"),
        ];
        // Each case's peak resident memory, from the kernel's high-water
        // mark reset before it: no short peak is missed.
        let mut peaks = Vec::new();
        for (mode, says) in cases {
            reset_peak_rss();
            let case_before = rss_mb();
            let before_dl = dead_letter_reasons(&dl).len();
            let before_events = events2(&h);
            let before_exits = p1(&h).exits.len();
            let before_events1 = h.counters(1).events.load(Relaxed);
            server.set(mode);
            let end = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let reasons = dead_letter_reasons(&dl);
                let last = p1(&h).last_error.unwrap_or_default();
                let done = match says.strip_prefix("dead-lettered ") {
                    Some(reason) => reasons[before_dl.min(reasons.len())..].iter().any(|r| r == reason),
                    None => p1(&h).exits.len() > before_exits && last.contains(says),
                };
                if done {
                    eprintln!(
                        "hostile {mode:?}: last error {last:?}; dead letters {:?}",
                        &reasons[before_dl.min(reasons.len())..]
                    );
                    break;
                }
                assert!(
                    std::time::Instant::now() < end,
                    "{mode:?}: expected {says:?}; last error {last:?}; dead letters {:?}",
                    &reasons[before_dl.min(reasons.len())..]
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if matches!(mode, Hostile::HugeLine | Hostile::InvalidUtf8 | Hostile::Nested) {
                // The good event after the bad line is applied.
                let c = h.counters(1);
                assert!(
                    wait_until(Duration::from_secs(10), || c.events.load(Relaxed) > before_events1).await,
                    "{mode:?}: the event after the bad line"
                );
            }
            assert!(
                wait_until(Duration::from_secs(10), || events2(&h) > before_events + 5).await,
                "{mode:?}: partition 2 stopped flowing"
            );
            if mode == Hostile::Bomb {
                assert!(dead_letter_reasons(&dl).iter().any(|r| r == "gzip_bomb"), "the bomb is dead-lettered");
            }
            peaks.push((mode, case_before, peak_rss_mb().max(case_before)));
        }
        // A 100 MB line and a 300 MB bomb went through: memory grew by far
        // less than either.
        eprintln!("hostile: RSS {rss_before:.0} MB before the first case");
        for (mode, before, case_peak) in &peaks {
            eprintln!("hostile {mode:?}: RSS {before:.1} MB at its start, peak {case_peak:.1} MB");
            assert!(
                case_peak - rss_before < 64.0,
                "{mode:?}: RSS peaked at {case_peak:.0} MB, from {rss_before:.0} MB before the first case"
            );
        }
        daemon.shutdown().await;
    })
    .await
    .expect("the test timed out");
}
