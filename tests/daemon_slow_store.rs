//! A store that stalls for a while (another connection holds SQLite's write
//! lock): the readers are slowed down by backpressure, what is outstanding
//! stays bounded, memory stays flat, and once the store is back every
//! recorded event is committed; none is dropped.

mod common;

use common::daemon::*;
use complyd::daemon::Daemon;
use complyd::sim::SimConfig;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

#[actix_rt::test]
async fn a_stalled_store_slows_the_readers_and_drops_nothing() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempdir();
        let d = path(&dir);
        // A live rate, and a simulator buffer (10 s) longer than the stall, so
        // that the simulator does not cut the daemon off for being slow.
        let cfg = SimConfig { buffer_batches: 512, ..sim_config(&d, 20_000.0) };
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        let (in_flight, batch) = (s.handlers.in_flight as u64, s.batch.max_events as u64);
        let url = s.store.url.clone();
        let db = d.join("daemon.db");
        import_posts(&url, &d);
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        assert!(wait_until(Duration::from_secs(10), || all_connected(&h)).await, "{}", h.report());
        // A steady flow before the memory baseline: every partition committed,
        // and a second's worth of events (buffers and caches warmed up).
        let steady = wait_until(Duration::from_secs(20), || {
            h.committed() >= 20_000 && (1..=8u8).all(|p| h.counters(p).committed_event_ms.load(Relaxed) > 0)
        })
        .await;
        assert!(steady, "the daemon did not commit a steady flow within 20 s: {}", h.report());
        let rss_before = rss_mb();

        // Stall the store for 3 s.
        let lock = complyd::store::sqlite::connect(db.to_str().unwrap()).unwrap();
        lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let committed_at_lock = h.committed();
        let t = Instant::now();
        // A batch may exceed max_events by one decoded slice (64 KiB of lines).
        let slack = 1_000;
        // Per handler: a transaction at the handler and a full lane waiting;
        // per partition: one batch waiting for room.
        let bound = 2 * 2 * in_flight * (batch + slack) + 8 * (batch + slack);
        let mut worst = 0u64;
        let mut rss_peak = rss_before;
        while t.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let outstanding = h.received() - h.committed();
            worst = worst.max(outstanding);
            rss_peak = rss_peak.max(rss_mb());
            assert!(outstanding <= bound, "{outstanding} events outstanding, bound {bound}");
        }
        // At most the batches in flight when the lock was taken committed.
        assert!(
            h.committed() - committed_at_lock <= 2 * in_flight * (batch + slack),
            "commits went on during the stall"
        );
        let received_during = h.received();
        // A deliberate fixed wait: it measures that the readers receive (almost) nothing meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(h.received() - received_during <= 2 * (batch + slack), "the readers were not slowed down");
        lock.execute_batch("COMMIT").unwrap();
        drop(lock);
        let received_at_release = h.received();
        assert!(rss_peak - rss_before < 64.0, "memory grew from {rss_before:.0} to {rss_peak:.0} MB during the stall");
        eprintln!("stall: worst outstanding {worst} (bound {bound}); rss {rss_before:.0} -> {rss_peak:.0} MB");
        assert!(worst > 0);

        // The store is back: the backlog of the stall is committed, then
        // everything recorded is.
        assert!(
            wait_until(Duration::from_secs(20), || h.committed() >= received_at_release).await,
            "the backlog of the stall was not committed within 20 s: {}",
            h.report()
        );
        quiesce(&sim, &daemon).await;
        let stats = sim.stats();
        let report = daemon.shutdown().await;
        sim.stop().await;
        assert!(report.clean, "{report:?}");
        assert_eq!(stats.partitions.iter().map(|p| p.full_buffer_disconnects).sum::<u64>(), 0);
        assert!(
            h.status.commit_errors.load(std::sync::atomic::Ordering::Relaxed) == 0,
            "no commit gave up or failed: the busy timeout covers the stall"
        );
        let lines = record_lines(&d.join("record.tsv"));
        let (events, _) = expected_counts(&lines);
        assert_eq!(h.committed(), events, "{}", per_partition_diff(&h, &lines));
        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);
    })
    .await
    .expect("the test timed out");
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_owned())
    }

    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Bytes of the files in it.
    fn used(&self) -> u64 {
        std::fs::read_dir(&self.0).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The store's disk fills up (a tmpfs with 1 MiB left): commits fail, say
/// so at ERROR and on /readyz, the readers wait, nothing is dropped; when
/// space returns, everything recorded is committed.
#[actix_rt::test]
#[ignore = "needs root to mount a tmpfs: `bash scripts/test.sh` runs it"]
async fn a_full_disk_stops_the_commits_and_they_resume_when_space_returns() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempdir();
        let d = path(&dir);
        let mnt = Mount::tmpfs(&d.join("disk"), "64m");
        // A simulator buffer (50 s) longer than the full disk lasts.
        let cfg = SimConfig { buffer_batches: 2_500, ..sim_config(&d, 4_000.0) };
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.store.url = format!("sqlite:{}", d.join("disk").join("daemon.db").display());
        let url = s.store.url.clone();
        import_posts(&url, &d);
        // 1 MiB left on the disk.
        mnt.resize(&format!("{}k", mnt.used() / 1024 + 1024));
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        let full = wait_until(Duration::from_secs(30), || h.store_error().is_some_and(|e| e.contains("full"))).await;
        assert!(full, "the disk never filled: {}", h.report());
        let (ready, reasons) = h.readiness();
        eprintln!("full disk: /readyz says {reasons:?}");
        assert!(!ready && reasons.iter().any(|r| r.starts_with("store:") && r.contains("full")), "{reasons:?}");
        // Nothing commits while the disk is full, and the readers wait.
        let committed = h.committed();
        // A deliberate fixed wait: it measures that nothing moves meanwhile.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(h.committed() - committed < 5_000, "commits went on: {} more", h.committed() - committed);
        eprintln!("full disk: {} events received, {} committed", h.received(), h.committed());
        mnt.resize("256m");
        assert!(
            wait_until(Duration::from_secs(30), || h.store_error().is_none() && h.committed() >= h.received()).await,
            "the daemon did not resume once space returned: {}",
            h.report()
        );
        quiesce(&sim, &daemon).await;
        let stats = sim.stats();
        let report = daemon.shutdown().await;
        sim.stop().await;
        assert!(report.clean, "{report:?}");
        assert_eq!(stats.partitions.iter().map(|p| p.full_buffer_disconnects).sum::<u64>(), 0);
        let lines = record_lines(&d.join("record.tsv"));
        let (events, _) = expected_counts(&lines);
        assert_eq!(h.committed(), events, "{}", per_partition_diff(&h, &lines));
        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);
    })
    .await
    .expect("the test timed out");
}

/// A store directory on a read-only file system: a new store and an
/// existing one are each one clear line, exit 2, for an offline command and
/// for the daemon, never a panic.
#[test]
#[ignore = "needs root to mount a tmpfs: `bash scripts/test.sh` runs it"]
fn a_read_only_store_directory_is_one_clear_line() {
    let dir = tempdir();
    let d = path(&dir);
    let mnt = Mount::tmpfs(&d.join("ro"), "8m");
    std::fs::write(d.join("in.jsonl"), "{\"id_str\":\"1\",\"user\":{\"id_str\":\"2\"},\"text\":\"x\"}\n").unwrap();
    let complyd = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_complyd"))
            .args(args)
            .env_remove("COMPLYD_LOG")
            .env("RUST_BACKTRACE", "0")
            .env("COMPLYD_STREAM_PASSWORD", "pw")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let existing = format!("sqlite:{}", d.join("ro").join("old.db").display());
    let input = d.join("in.jsonl");
    assert_eq!(complyd(&["import", "--db", &existing, input.to_str().unwrap()]).0, Some(0));
    let out = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(d.join("ro")).output().unwrap();
    assert!(out.status.success(), "remount ro: {}", String::from_utf8_lossy(&out.stderr));
    let new = format!("sqlite:{}", d.join("ro").join("new.db").display());
    let (code, err) = complyd(&["import", "--db", &new, input.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot write the store file") && err.contains("read-only"), "{err}");
    let (code, err) = complyd(&["import", "--db", &existing, input.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot write the store file") && err.contains("old.db") && err.contains("read-only"),
        "{err}"
    );
    // The daemon on the existing store.
    let conf = d.join("run.toml");
    std::fs::write(
        &conf,
        format!("[stream]\naccount = \"a\"\nusername = \"u@example.com\"\n[store]\nurl = \"{existing}\"\n[http]\nenabled = false\n"),
    )
    .unwrap();
    let (code, err) = complyd(&["run", "--config", conf.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.lines().count() <= 3 && !err.contains("panicked"), "{err}");
    drop(mnt);
}
