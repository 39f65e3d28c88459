//! The daemon against the simulator: all 8 partitions consumed, every event
//! the simulator recorded applied exactly once in effect (the store equals an
//! offline replay of the recording), malformed lines dead-lettered, the
//! health endpoints, and never a 429.

mod common;

use common::daemon::*;
use complyd::daemon::Daemon;
use complyd::sim::{Fault, FaultKind};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[actix_rt::test]
async fn all_partitions_consumed_and_every_recorded_event_applied_once() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_config(&d, 5_000.0);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let settings = daemon_settings(&sim, &cfg, &d, "daemon.db");
        let url = settings.store.url.clone();
        import_posts(&url, &d);
        let daemon = Daemon::start(plan(settings, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        // And every stream has had its first byte: the seconds-since-last-byte
        // gauge below exists only from then on.
        let first_bytes = || (1..=8).all(|p| h.counters(p).last_byte_ms.load(Relaxed) > 0);
        assert!(wait_until(Duration::from_secs(10), first_bytes).await, "{}", h.report());

        // The health endpoints while streaming.
        let addr = daemon.http_addr().unwrap();
        assert!(wait_until(Duration::from_secs(5), || h.readiness().0).await, "{}", h.report());
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = http_get(addr, "/healthz").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"state\":\"connected\""), "{body}");
        let (status, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200);
        for p in 1..=8 {
            let p = &p.to_string();
            assert!(metric(&body, "complyd_partition_events_total", &[("partition", p)]).is_some(), "{body}");
            assert_eq!(metric(&body, "complyd_partition_connected", &[("partition", p)]), Some(1.0), "{body}");
            assert_eq!(metric(&body, "complyd_partition_backoff_seconds", &[("partition", p)]), Some(0.0), "{body}");
            let quiet = metric(&body, "complyd_partition_seconds_since_last_byte", &[("partition", p)]);
            assert!(quiet.is_some_and(|s| (0.0..30.0).contains(&s)), "{body}");
        }

        // A few bad lines mid-stream: dead-lettered, never fatal.
        let dead_before = h.counters(2).dead_lettered.load(Relaxed);
        sim.trigger(Fault::new(FaultKind::Malformed { lines: 3 }).on_partition(2));
        sim.trigger(Fault::new(FaultKind::Oversized { bytes: 1_200_000 }).on_partition(5));
        // Wait until they are dead-lettered, and until more than the 5 000
        // events the recording is required to hold below have arrived.
        let flowed = wait_until(Duration::from_secs(20), || {
            h.counters(2).dead_lettered.load(Relaxed) >= dead_before + 3
                && h.counters(5).oversized.load(Relaxed) >= 1
                && h.received() > 5_000
        })
        .await;
        assert!(
            flowed,
            "not within 20 s: dead-lettered on partition 2: {} (from {dead_before}), oversized: {}, events: {}; {}",
            h.counters(2).dead_lettered.load(Relaxed),
            h.counters(5).oversized.load(Relaxed),
            h.received(),
            h.report()
        );
        quiesce(&sim, &daemon).await;
        let stats = sim.stats();
        let (_, body) = http_get(addr, "/metrics").await;
        let m = |name: &str, labels: &[(&str, &str)]| metric(&body, name, labels).unwrap_or(-1.0);
        let by_type: f64 = (1..=8)
            .map(|p| m("complyd_partition_messages_total", &[("partition", &p.to_string()), ("type", "delete")]))
            .sum();
        assert!(by_type > 0.0, "{body}");
        for p in ["1", "5"] {
            let typed: f64 = complyd::event::EVENT_TYPES
                .iter()
                .map(|t| m("complyd_partition_messages_total", &[("partition", p), ("type", t)]))
                .sum();
            assert_eq!(typed, m("complyd_partition_events_total", &[("partition", p)]), "partition {p}: {body}");
        }
        assert!(m("complyd_partition_heartbeats_total", &[("partition", "1")]) >= 0.0, "{body}");
        assert!(m("complyd_partition_bytes_total", &[("partition", "1")]) > 0.0, "{body}");
        assert!(m("complyd_dead_lettered_total", &[("partition", "5"), ("reason", "oversized")]) >= 1.0, "{body}");
        assert!(
            m("complyd_handler_events_total", &[("handler", "status"), ("type", "delete"), ("result", "applied")])
                > 0.0,
            "{body}"
        );
        assert!(m("complyd_handler_commit_seconds_count", &[("handler", "user")]) > 0.0, "{body}");
        assert!(m("complyd_handler_batch_events_bucket", &[("handler", "status"), ("le", "+Inf")]) > 0.0, "{body}");
        assert!(body.contains("complyd_duplicates_total"), "{body}");
        let report = daemon.shutdown().await;
        sim.stop().await;
        assert!(report.clean, "{report:?}");

        for p in 1..=8u8 {
            let c = h.counters(p);
            assert!(c.events.load(Relaxed) > 0, "partition {p} received nothing");
            assert_eq!(c.connections.load(Relaxed), 1, "partition {p} reconnected");
        }
        assert_eq!(stats.responses_with(429), 0, "the simulator answered 429");
        let lines = record_lines(&d.join("record.tsv"));
        let (events, bad) = expected_counts(&lines);
        assert!(events > 5_000, "only {events} events recorded");
        assert_eq!(h.received(), events, "events received vs recorded");
        assert_eq!(h.committed(), events, "events committed vs recorded");
        assert_eq!(dead_lettered(&h), bad, "dead-lettered vs malformed/unknown lines recorded");
        assert!(bad >= 4, "the malformed and oversized lines were recorded ({bad})");
        assert!(h.counters(5).oversized.load(Relaxed) >= 1);
        let dl = std::fs::read_to_string(d.join("daemon.db.deadletter.jsonl")).unwrap();
        assert!(dl.contains("\"reason\":\"oversized\""), "{}", &dl[..dl.len().min(500)]);
        assert!(dl.contains("stream:partition=2"));

        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);

        // Every partition's position is committed by both handlers.
        let mut st = complyd::store::open(&url).unwrap();
        let pos = st.positions().unwrap();
        for p in 1..=8u8 {
            for k in [complyd::store::HandlerKind::Status, complyd::store::HandlerKind::User] {
                assert!(
                    pos.iter().any(|(h, x)| *h == k && x.partition == p && x.last_event_ms > 0),
                    "{k:?} {p}: {pos:?}"
                );
            }
        }
    })
    .await
    .expect("the test timed out");
}

/// The dead-letter file unwritable while the daemon runs (its directory's
/// name taken by a file after the start): the bad lines are held in memory,
/// `/readyz` says why, events go on being committed; once the file can be
/// written, the held records are in it, in order, without waiting for
/// another bad line.
#[actix_rt::test]
async fn an_unwritable_dead_letter_file_is_said_on_readyz_and_its_records_are_written_when_it_can_be() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempdir();
        let d = path(&dir);
        let mut cfg = sim_config(&d, 2_000.0);
        // The bad lines are the test's alone.
        cfg.generator.unknown_ratio = 0.0;
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut settings = daemon_settings(&sim, &cfg, &d, "daemon.db");
        let blocker = d.join("dead");
        let file = blocker.join("deadletter.jsonl");
        settings.store.dead_letter = Some(file.clone());
        let daemon = Daemon::start(plan(settings, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        let addr = daemon.http_addr().unwrap();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        // The start made the directory (and left no file): a file takes its
        // name.
        std::fs::remove_dir(&blocker).unwrap();
        std::fs::write(&blocker, "").unwrap();
        sim.trigger(Fault::new(FaultKind::Malformed { lines: 3 }).on_partition(2));
        let held = wait_until(Duration::from_secs(20), || {
            h.dead_letter_error().is_some_and(|e| e.starts_with("3 records held"))
        })
        .await;
        assert!(held, "{:?}; {}", h.dead_letter_error(), h.report());
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("dead-letter file: 3 records held, not yet written to") && body.contains("deadletter.jsonl"),
            "{body}"
        );
        let committed = h.committed();
        assert!(
            wait_until(Duration::from_secs(10), || h.committed() > committed + 100).await,
            "events are still committed: {}",
            h.report()
        );
        assert!(!file.exists());

        // Writable again: the held records are written by the next try (every
        // 2 s), before any later bad line.
        std::fs::remove_file(&blocker).unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || h.dead_letter_error().is_none()).await,
            "{:?}",
            h.dead_letter_error()
        );
        let sources = || -> Vec<String> {
            std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["source"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(sources(), ["stream:partition=2"; 3]);
        sim.trigger(Fault::new(FaultKind::Malformed { lines: 1 }).on_partition(1));
        assert!(wait_until(Duration::from_secs(20), || sources().len() == 4).await, "{:?}", sources());
        assert_eq!(sources()[3], "stream:partition=1");
        assert!(wait_until(Duration::from_secs(10), || h.readiness().0).await, "{}", h.report());
        let report = daemon.shutdown().await;
        sim.stop().await;
        assert!(report.clean, "{report:?}");
    })
    .await
    .expect("the test timed out");
}

#[test]
fn a_bad_config_lists_every_problem() {
    let mut s = complyd::settings::Settings::default();
    s.stream.partitions = vec![9];
    let err = s.plan_with_password(complyd::settings::Secret::new("x")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("stream.username") && msg.contains("9 is not a partition"), "{msg}");
}
