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

/// The stalled-store test measures the process's memory. The other tests
/// with a simulator and a daemon in this process (whose simulators buffer
/// what their daemon cannot take while its store is full or gone) run beside
/// each other, never beside it.
static MEMORY: std::sync::RwLock<()> = std::sync::RwLock::new(());

// The guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
async fn a_stalled_store_slows_the_readers_and_drops_nothing() {
    let _memory = MEMORY.write().unwrap_or_else(|e| e.into_inner());
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
        let lines = stop_with_everything_committed(sim, daemon, &d).await;
        assert!(
            h.status.commit_errors.load(std::sync::atomic::Ordering::Relaxed) == 0,
            "no commit gave up or failed: the busy timeout covers the stall"
        );
        let reference = replay_reference(&lines, &d);
        assert_same_effect(&url, &reference, &lines);
    })
    .await
    .expect("the test timed out");
}

/// While the store cannot be written, nothing commits (measured over 2 s);
/// after `restore`, the error clears and everything received commits.
async fn assert_waits_then_resumes(h: &complyd::health::Health, what: &str, restore: impl FnOnce()) {
    let committed = h.committed();
    // A deliberate fixed wait: it measures that nothing commits meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.committed() - committed < 5_000, "{what}: commits went on: {} more", h.committed() - committed);
    eprintln!("{what}: {} events received, {} committed", h.received(), h.committed());
    restore();
    assert!(
        wait_until(Duration::from_secs(30), || h.store_error().is_none() && h.committed() >= h.received()).await,
        "{what}: the daemon did not resume: {}",
        h.report()
    );
}

/// Stops the flow and the daemon cleanly; the daemon committed every event
/// the simulator recorded (none lost to a full buffer). Answers the
/// recording, for [`assert_same_effect`].
async fn stop_with_everything_committed(
    sim: complyd::sim::SimHandle,
    daemon: Daemon,
    d: &std::path::Path,
) -> Vec<(u8, String)> {
    quiesce(&sim, &daemon).await;
    let h = daemon.health().clone();
    let stats = sim.stats();
    let report = daemon.shutdown().await;
    sim.stop().await;
    assert!(report.clean, "{report:?}");
    assert_eq!(stats.partitions.iter().map(|p| p.full_buffer_disconnects).sum::<u64>(), 0);
    let lines = record_lines(&d.join("record.tsv"));
    let (events, _) = expected_counts(&lines);
    assert_eq!(h.committed(), events, "{}", per_partition_diff(&h, &lines));
    lines
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
// The read guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
#[ignore = "needs root to mount a tmpfs: `bash scripts/test.sh` runs it"]
async fn a_full_disk_stops_the_commits_and_they_resume_when_space_returns() {
    let _memory = MEMORY.read().unwrap_or_else(|e| e.into_inner());
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
        let errors = error_lines();
        assert!(
            errors.lines().any(|l| l.contains(" ERROR ") && l.contains("Store commit failed") && l.contains("full")),
            "the full disk is said at ERROR: {errors}"
        );
        // Nothing commits while the disk is full, and the readers wait;
        // space returns.
        assert_waits_then_resumes(&h, "full disk", || mnt.resize("256m")).await;
        let lines = stop_with_everything_committed(sim, daemon, &d).await;
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

/// A store on read-only media (a snapshot kept for an audit, taken while
/// complyd had it open): the read commands answer from it, the delete still
/// in its WAL included, without writing anything. A snapshot without its
/// WAL files is refused in one line that says to read a copy.
#[test]
#[ignore = "needs root to mount a tmpfs: `bash scripts/test.sh` runs it"]
fn a_store_on_a_read_only_file_system_is_read_with_its_wal() {
    let dir = tempdir();
    let d = path(&dir);
    let complyd = common::complyd_on;
    let live = d.join("live.db").display().to_string();
    let posts = "{\"id_str\":\"1001\",\"user\":{\"id_str\":\"7\"},\"text\":\"withdrawn words\"}\n\
                 {\"id_str\":\"1002\",\"user\":{\"id_str\":\"8\"},\"text\":\"kept words\"}\n";
    assert_eq!(complyd(&["import", "-"], &format!("sqlite:{live}"), posts).0, Some(0));
    let mnt = Mount::tmpfs(&d.join("ro"), "8m");
    // Closed: no WAL files.
    for f in complyd::store::sqlite::store_files(&live) {
        std::fs::copy(&f, d.join("ro").join(f.replace(&live, "closed.db").rsplit('/').next().unwrap())).unwrap();
    }
    // Open, with a delete committed to the WAL only.
    let held = complyd::store::sqlite::connect(&live).unwrap();
    for schema in ["main", "status", "user"] {
        held.query_row(&format!("SELECT count(*) FROM {schema}.sqlite_master"), [], |_| Ok(())).unwrap();
    }
    let delete =
        "{\"delete\":{\"status\":{\"id_str\":\"1001\",\"user_id_str\":\"7\"},\"timestamp_ms\":\"1700000000000\"}}\r\n";
    assert_eq!(complyd(&["replay", "-"], &format!("sqlite:{live}"), delete).0, Some(0));
    for f in complyd::store::sqlite::store_files(&live) {
        for suffix in ["", "-wal", "-shm"] {
            let to = d.join("ro").join(format!("{}{suffix}", f.replace(&live, "snap.db").rsplit('/').next().unwrap()));
            std::fs::copy(format!("{f}{suffix}"), to).unwrap();
        }
    }
    drop(held);
    // The copy's tombstone is in its WAL only.
    let status = d.join("ro").join("snap.db-status").display().to_string();
    assert!(!common::tombstone_in_file(&status, 1001), "the tombstone is in the file, not only in its WAL");
    let out = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(d.join("ro")).output().unwrap();
    assert!(out.status.success(), "remount ro: {}", String::from_utf8_lossy(&out.stderr));
    let snap = format!("sqlite:{}", d.join("ro").join("snap.db").display());
    let (code, stdout, err) = complyd(&["check", "1001", "1002"], &snap, "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(stdout, "{\"id\":\"1001\",\"visible\":false}\n{\"id\":\"1002\",\"visible\":true}\n", "{err}");
    let (code, stdout, err) = complyd(&["export"], &snap, "");
    assert_eq!(code, Some(0), "{err}");
    assert!(stdout.contains("kept words") && !stdout.contains("withdrawn"), "{stdout}");
    for args in [&["gaps"][..], &["batch-job", "list"]] {
        let (code, _, err) = complyd(args, &snap, "");
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    let closed = format!("sqlite:{}", d.join("ro").join("closed.db").display());
    let (code, stdout, err) = complyd(&["export"], &closed, "");
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("closed.db-wal") && err.contains("copy the store's files"), "{err}");
    assert!(stdout.is_empty(), "{stdout}");
    drop(mnt);
}

/// A TCP proxy on loopback to the test PostgreSQL that can be cut: while
/// down it drops every open connection and closes each new one at once.
struct CutProxy {
    addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CutProxy {
    /// On a thread of its own: the daemon opens its store connections
    /// with blocking calls, which must not wait on the test's runtime.
    fn start(to: String) -> CutProxy {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(AtomicBool::new(false));
        let generation = std::sync::Arc::new(AtomicU64::new(0));
        let (d, g) = (down.clone(), generation.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((mut client, _)) = listener.accept().await {
                    if d.load(Relaxed) {
                        continue; // dropped: closed at once
                    }
                    let (to, g) = (to.clone(), g.clone());
                    let born = g.load(Relaxed);
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(&to).await else { return };
                        let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                        let cut = async {
                            while g.load(Relaxed) == born {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        };
                        tokio::select! { _ = copy => {}, _ = cut => {} }
                    });
                }
            });
        });
        CutProxy { addr, down, generation }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Relaxed);
        if down {
            self.generation.fetch_add(1, Relaxed);
        }
    }
}

/// PostgreSQL going away in the middle of a run (every connection cut, new
/// ones refused) and coming back: commits fail with the reason on /readyz,
/// the readers wait, nothing is dropped, and once the server is back every
/// recorded event is committed.
// The read guard is held on purpose for the whole test (see MEMORY).
#[allow(clippy::await_holding_lock)]
#[actix_rt::test]
#[ignore = "needs PostgreSQL: `bash scripts/test.sh` runs it"]
async fn postgresql_going_away_mid_run_loses_nothing() {
    let _memory = MEMORY.read().unwrap_or_else(|e| e.into_inner());
    init_logs();
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempdir();
        let d = path(&dir);
        // The synchronous PostgreSQL client runs on plain threads only.
        let schema = std::thread::spawn(common::PgSchema::new).join().unwrap();
        let direct = schema.url();
        // host:port of the test server, to put the proxy in between.
        let rest = direct.split("@").nth(1).unwrap();
        let hostport = rest.split('/').next().unwrap().to_owned();
        let proxy = CutProxy::start(hostport.clone());
        let via_proxy = direct.replacen(&hostport, &proxy.addr.to_string(), 1);
        let (u, dd) = (direct.clone(), d.clone());
        std::thread::spawn(move || import_posts(&u, &dd)).join().unwrap();
        let cfg = SimConfig { buffer_batches: 2_500, ..sim_config(&d, 2_000.0) };
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "unused.db");
        s.store.url = via_proxy.clone();
        // Beside a PostgreSQL store the limiter's state would be in the
        // working directory, shared with every other run.
        s.limiter.state_file = Some(d.join("connections.json"));
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        assert!(wait_until(Duration::from_secs(20), || h.committed() > 2_000).await, "{}", h.report());
        proxy.set_down(true);
        let noticed = wait_until(Duration::from_secs(20), || h.store_error().is_some()).await;
        assert!(noticed, "no store error while PostgreSQL was away: {}", h.report());
        let (ready, reasons) = h.readiness();
        eprintln!("postgres away: /readyz says {reasons:?}");
        assert!(!ready && reasons.iter().any(|r| r.starts_with("store:")), "{reasons:?}");
        assert_waits_then_resumes(&h, "postgres away", || proxy.set_down(false)).await;
        let lines = stop_with_everything_committed(sim, daemon, &d).await;
        std::thread::spawn(move || {
            let reference = replay_reference(&lines, &d);
            assert_same_effect(&direct, &reference, &lines);
        })
        .join()
        .unwrap();
    })
    .await
    .expect("the test timed out");
}
