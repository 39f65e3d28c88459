//! Shutdown while events flow: the daemon stops reading, commits what it
//! holds and stops well within 10 s; a restart on the same store asks the
//! stream for a backfill covering the gap (from the stored positions), so
//! nothing is lost, and what arrives twice changes nothing.

mod common;

use common::daemon::*;
use complyd::daemon::Daemon;
use complyd::gaps::{GapCause, GapState};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

#[actix_rt::test]
async fn shutdown_while_events_flow_then_restart_loses_nothing_and_applies_nothing_twice() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempdir();
        let d = path(&dir);
        // A short connection window, so that the restart's requests must be
        // counted with the first run's (kept in the limiter's state file).
        let window = 3_000;
        let cfg = complyd::sim::SimConfig {
            rate_limit: complyd::sim::RateLimitConfig { connections: 10, window_ms: window, count_rejected: true },
            ..sim_config(&d, 5_000.0)
        };
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.stream.backfill_minutes = 1;
        s.shutdown.timeout_ms = 9_000;
        s.limiter.window_ms = window;
        s.limiter.margin_ms = 200;
        let url = s.store.url.clone();
        import_posts(&url, &d);

        let first = Daemon::start(plan(s.clone(), password(&cfg))).await.unwrap();
        let h1 = first.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h1)).await, "{}", h1.report());
        // Events flow: both handlers have committed every partition.
        let mut st = complyd::store::open(&url).unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || h1.received() > 1_000 && committed_positions(st.as_mut()) == 16)
                .await,
            "events did not flow on every partition within 20 s: {} positions; {}",
            committed_positions(st.as_mut()),
            h1.report()
        );
        drop(st);
        let t = Instant::now();
        let report = first.shutdown().await;
        let took = t.elapsed();
        assert!(report.clean, "{report:?}");
        assert!(took < Duration::from_secs(10), "the shutdown took {took:?}");
        assert_eq!(report.committed, report.received, "everything received was committed before the exit");
        eprintln!("first run: {report:?}");

        // The positions of both handlers are committed for every partition.
        {
            let mut st = complyd::store::open(&url).unwrap();
            let pos = st.positions().unwrap();
            assert_eq!(pos.len(), 16, "{pos:?}");
            assert_eq!(st.gaps(false).unwrap(), vec![], "a new store's first connections leave no gap");
        }

        // A gap: the simulator releases events while no daemon listens; only
        // the restart's backfill can bring them.
        let stopped_at = sim.stats().next_event_index;
        assert!(
            wait_until(Duration::from_secs(20), || sim.stats().next_event_index >= stopped_at + 1_000).await,
            "the simulator did not release 1 000 events within 20 s while the daemon was down"
        );
        // A gap from an earlier life of the store, out of Replay's reach.
        let restarted_ms = complyd::clock::now_ms();
        // And one that straddles the reach: Replay still serves its last
        // minute or two (the simulator's timeline reaches back that far).
        let old_gap = |from_ms, to_ms| complyd::gaps::NewGap {
            partition: 8,
            from_ms,
            to_ms,
            cause: GapCause::Disconnect,
            state: GapState::Open,
            repair: None,
            note: "disconnect".into(),
        };
        let day = 24 * 3_600_000;
        let mut old_store = complyd::store::open(&url).unwrap();
        let old = old_store.open_gap(&old_gap(restarted_ms - 7 * day, restarted_ms - 6 * day), restarted_ms).unwrap();
        let straddling = old_store
            .open_gap(&old_gap(restarted_ms - 5 * day - 600_000, restarted_ms - 5 * day + 150_000), restarted_ms)
            .unwrap();
        drop(old_store);
        let second = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h2 = second.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h2)).await, "{}", h2.report());
        // Every partition is past the gap: it has committed an event released
        // after the restart (events are stamped when released, and the
        // backfill comes first), so the backfill was received.
        assert!(
            wait_until(Duration::from_secs(20), || {
                (1..=8u8).all(|p| h2.counters(p).committed_event_ms.load(Relaxed) >= restarted_ms)
            })
            .await,
            "the restart did not catch up through the gap within 20 s: {}",
            h2.report()
        );
        // The restart left one gap a partition, from its last committed
        // position to the new connection, and the backfill repaired each.
        let mut st = complyd::store::open(&url).unwrap();
        // (The straddling gap's part waits for the replayer's next look,
        // every 5 s by default.)
        let repaired = wait_until(Duration::from_secs(40), || {
            let g = st.gaps(false).unwrap();
            g.len() == 11
                && g.iter().filter(|g| g.id != old && g.id != straddling).all(|g| g.state == GapState::Repaired)
        })
        .await;
        let mut gaps = st.gaps(false).unwrap();
        assert!(repaired, "{gaps:#?}");
        // The old one is unrepairable, and says what to do instead.
        let unrepairable = gaps.remove(gaps.iter().position(|g| g.id == old).unwrap());
        assert_eq!(unrepairable.state, GapState::Unrepairable, "{unrepairable:?}");
        assert!(unrepairable.history.last().unwrap().note.contains("complyd batch-job run"), "{unrepairable:?}");
        // The straddling one too, and its reachable part is a gap of its own,
        // repaired through Replay.
        let split = gaps.remove(gaps.iter().position(|g| g.id == straddling).unwrap());
        assert_eq!(split.state, GapState::Unrepairable, "{split:?}");
        let rest = gaps.remove(gaps.iter().position(|g| g.from_ms > split.from_ms && g.to_ms == split.to_ms).unwrap());
        assert_eq!((rest.state, rest.repair), (GapState::Repaired, Some(complyd::gaps::Repair::Replay)), "{rest:?}");
        assert!(split.history.last().unwrap().note.contains(&format!("the rest is gap {}", rest.id)), "{split:?}");
        for g in &gaps {
            assert_eq!(g.cause, GapCause::Restart, "{g:?}");
            assert!(g.from_ms < restarted_ms && g.to_ms >= restarted_ms, "{g:?} (restarted at {restarted_ms})");
            assert_eq!(g.history.len(), 2, "repairing by backfill, then repaired: {g:?}");
        }
        assert!(h2.unresolved_gaps().is_empty(), "{}", h2.report());
        drop(st);
        quiesce(&sim, &second).await;
        let stats = sim.stats();
        let report = second.shutdown().await;
        sim.stop().await;
        assert!(report.clean, "{report:?}");
        assert_eq!(stats.responses_with(429), 0, "the restart exceeded the connection limit");
        // The restart asked for a backfill covering the gap; what it re-sent
        // was already applied: duplicates, no change.
        assert!(stats.partitions.iter().map(|p| p.backfill_events_sent).sum::<u64>() > 0);
        let dup = h2.status.duplicates.load(Relaxed) + h2.user.duplicates.load(Relaxed);
        assert!(dup > 0, "the backfilled events were recognised as already applied");

        let lines = record_lines(&d.join("record.tsv"));
        let distinct = distinct_per_partition(&lines);
        for p in 1..=8u8 {
            let got = h1.counters(p).events.load(Relaxed) + h2.counters(p).events.load(Relaxed);
            assert!(
                got >= distinct[usize::from(p - 1)],
                "partition {p}: received {got}, recorded distinct {}",
                distinct[usize::from(p - 1)]
            );
        }
        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);
    })
    .await
    .expect("the test timed out");
}
