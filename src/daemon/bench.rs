//! The end-to-end benchmark of the daemon (`cargo bench --bench e2e`,
//! `benches/e2e.rs`): the simulator at full rate into the real daemon, with
//! the ceiling (`curl --compressed`), a null store, the receipt-to-commit
//! latency and the peak memory. Kept apart from the daemon it measures.

use super::*;

/// `bench-e2e` options.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Measured seconds of each full-rate phase.
    pub seconds: u64,
    /// Where the benchmark's stores go (wiped first).
    pub dir: PathBuf,
    /// Events per second of the latency phase (0: skip it).
    pub latency_rate: f64,
    /// Seconds the store is held locked in the stall phase (0: skip).
    pub stall_secs: u64,
    /// Measure the `curl --compressed` ceiling (needs curl on PATH).
    pub curl: bool,
    /// Measure the daemon's pipeline with a store that keeps nothing.
    pub pipeline: bool,
    /// Posts stored before the end-to-end phase: the simulator's dataset of
    /// this size, which its events then name (0: an empty store and the
    /// simulator's default dataset).
    pub posts: u64,
    /// Distinct dataset posts the events name, spread over the dataset
    /// (the simulator's `generator.active_posts`; 0: all of them).
    pub active_posts: u64,
    /// A PostgreSQL database for the end-to-end phase (`postgres://...`):
    /// it works in a fresh schema of it and drops it after. None: SQLite.
    /// The other phases always use SQLite (the stall phase locks its file).
    pub postgres: Option<String>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            seconds: 10,
            dir: PathBuf::from("target/bench-e2e"),
            latency_rate: 10_000.0,
            stall_secs: 5,
            curl: true,
            pipeline: true,
            posts: 0,
            active_posts: 0,
            postgres: None,
        }
    }
}

/// The figures of [`bench_e2e`].
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Events/s `curl --compressed` drains from the simulator (8 partitions).
    pub curl_events_per_sec: Option<f64>,
    /// CPU per event sent in the ceiling's phase, in µs: the simulator's
    /// (this process)...
    pub curl_sim_cpu_us_per_event: Option<f64>,
    /// ... and the 8 curls' together (their `/proc/PID/stat`).
    pub curl_cpu_us_per_event: Option<f64>,
    /// Events/s from the simulator to the committed store.
    pub e2e_events_per_sec: f64,
    /// The end-to-end phase's store: "SQLite" or "PostgreSQL".
    pub e2e_store: &'static str,
    /// Posts the store held when the end-to-end phase started.
    pub posts_stored: u64,
    /// Events/s through the daemon with a store that keeps nothing (the
    /// pipeline's own ceiling).
    pub pipeline_events_per_sec: Option<f64>,
    /// CPU of the whole process (simulator included) per event in the
    /// null-store phase, in µs: with `e2e_cpu_us_per_event`, what storing
    /// an event costs.
    pub pipeline_cpu_us_per_event: Option<f64>,
    /// p50 / p99 receipt-to-commit at `latency_rate` (ms).
    pub latency_rate: f64,
    pub latency_p50_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    /// Peak resident memory (MB) of the whole process (simulator included)
    /// at full rate, and while the store was locked.
    pub rss_full_rate_mb: f64,
    pub rss_stalled_mb: Option<f64>,
    /// CPU time of the whole process (simulator included) per event
    /// committed during the full-rate phase, in µs: steadier than the rate
    /// on a shared machine, for comparing builds.
    pub e2e_cpu_us_per_event: f64,
    /// Peak size (MB) of the store's WAL files together at full rate
    /// (SQLite only).
    pub wal_full_rate_mb: Option<f64>,
    /// The store locked at full rate.
    pub stall: Option<StallFigures>,
}

/// What happened while the store was locked at full rate.
#[derive(Debug, Clone, Default)]
pub struct StallFigures {
    pub seconds: u64,
    /// Events received while locked (backpressure keeps this small).
    pub received_during: u64,
    /// Most events received and not yet committed at any time.
    pub max_outstanding: u64,
    /// Time from the unlock until everything received was committed.
    pub caught_up_ms: Option<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(c) = self.curl_events_per_sec {
            writeln!(f, "ceiling (curl --compressed, 8 partitions): {c:.0} events/s")?;
        }
        if let (Some(s), Some(c)) = (self.curl_sim_cpu_us_per_event, self.curl_cpu_us_per_event) {
            writeln!(f, "CPU per event in the ceiling's phase: simulator {s:.2} µs, the 8 curls {c:.2} µs")?;
        }
        writeln!(
            f,
            "end to end (simulator -> committed {}, {} posts stored): {:.0} events/s",
            self.e2e_store, self.posts_stored, self.e2e_events_per_sec
        )?;
        writeln!(
            f,
            "CPU per event committed at full rate: {:.2} µs (whole process, simulator included)",
            self.e2e_cpu_us_per_event
        )?;
        if let Some(p) = self.pipeline_events_per_sec {
            writeln!(f, "daemon pipeline without a store (simulator -> null store): {p:.0} events/s")?;
        }
        if let Some(c) = self.pipeline_cpu_us_per_event {
            writeln!(f, "CPU per event without a store: {c:.2} µs (whole process, simulator included)")?;
        }
        if let Some(c) = self.curl_events_per_sec {
            writeln!(f, "end to end / ceiling: {:.2}", self.e2e_events_per_sec / c.max(1.0))?;
        }
        writeln!(
            f,
            "receipt -> commit at {:.0} events/s: p50 {} ms, p99 {} ms",
            self.latency_rate,
            self.latency_p50_ms.map_or("-".into(), |v| v.to_string()),
            self.latency_p99_ms.map_or("-".into(), |v| v.to_string())
        )?;
        writeln!(f, "peak RSS at full rate: {:.1} MB (simulator included)", self.rss_full_rate_mb)?;
        if let Some(w) = self.wal_full_rate_mb {
            writeln!(f, "peak size of the WAL files at full rate: {w:.0} MB")?;
        }
        if let Some(r) = self.rss_stalled_mb {
            writeln!(f, "peak RSS with the store locked: {r:.1} MB")?;
        }
        if let Some(st) = &self.stall {
            writeln!(
                f,
                "store locked {} s at full rate: {} events received meanwhile, at most {} outstanding; all committed {} after the unlock",
                st.seconds,
                st.received_during,
                st.max_outstanding,
                st.caught_up_ms.map_or("NOT".to_owned(), |ms| format!("{ms} ms")),
            )?;
        }
        Ok(())
    }
}

/// A store that keeps nothing: the benchmark's way to measure the daemon's
/// own pipeline (network, gzip, framing, parsing, batching, routing) without
/// the cost of a real store.
struct NullStore;

impl Store for NullStore {
    fn apply_status(
        &mut self,
        events: &crate::event::StatusEvents,
        _: &[store::Position],
    ) -> Result<store::ApplyStats, store::StoreError> {
        let mut s = store::ApplyStats::default();
        s.applied.add("delete", events.len() as u64);
        Ok(s)
    }
    fn apply_user(
        &mut self,
        events: &[store::Timed<crate::event::UserEvent>],
        _: &[store::Position],
    ) -> Result<store::ApplyStats, store::StoreError> {
        let mut s = store::ApplyStats::default();
        s.applied.add("user_delete", events.len() as u64);
        Ok(s)
    }
    fn import(
        &mut self,
        _: &[store::NewPost],
        _: &[store::NewLike],
        _: i64,
    ) -> Result<store::ImportStats, store::StoreError> {
        Ok(store::ImportStats::default())
    }
    fn facts(&mut self, _: crate::event::Id) -> Result<crate::rules::visibility::Facts, store::StoreError> {
        Ok(crate::rules::visibility::Facts::default())
    }
    fn user_state(&mut self, _: crate::event::Id) -> Result<crate::rules::user::UserState, store::StoreError> {
        Ok(crate::rules::user::UserState::default())
    }
    fn scan(
        &mut self,
        _: &mut dyn FnMut(store::ScanRow<'_>) -> Result<(), store::StoreError>,
    ) -> Result<(), store::StoreError> {
        Ok(())
    }
    fn maintain(&mut self, _: i64, _: usize) -> Result<store::MaintenanceStats, store::StoreError> {
        Ok(store::MaintenanceStats::default())
    }
    fn positions(&mut self) -> Result<Vec<(HandlerKind, store::Position)>, store::StoreError> {
        Ok(Vec::new())
    }
    fn open_gap(&mut self, _: &crate::gaps::NewGap, _: i64) -> Result<i64, store::StoreError> {
        Ok(0)
    }
    fn move_gap(&mut self, _: i64, _: &crate::gaps::GapMove, _: i64) -> Result<bool, store::StoreError> {
        Ok(false)
    }
    fn gaps(&mut self, _: bool) -> Result<Vec<crate::gaps::Gap>, store::StoreError> {
        Ok(Vec::new())
    }
    fn batch_jobs(&mut self) -> Result<Vec<crate::batch_job::BatchJob>, store::StoreError> {
        Ok(Vec::new())
    }
    fn save_batch_job(&mut self, _: &crate::batch_job::BatchJob) -> Result<(), store::StoreError> {
        Ok(())
    }
    fn id_page(&mut self, _: crate::batch_job::BatchType, _: i64, _: usize) -> Result<Vec<i64>, store::StoreError> {
        Ok(Vec::new())
    }
    fn author_of(&mut self, _: crate::event::Id) -> Result<Option<crate::event::Id>, store::StoreError> {
        Ok(None)
    }
    fn has_like(&mut self, _: crate::event::Id, _: crate::event::Id) -> Result<bool, store::StoreError> {
        Ok(false)
    }
}

/// Imports the simulator's dataset of `posts` posts (seed `seed`) into the
/// store at `url`, a batch at a time, as `complyd import` does; returns the
/// posts stored.
fn fill_store(url: &store::StoreUrl, seed: u64, posts: u64) -> anyhow::Result<u64> {
    let mut st = store::open_url(url)?;
    let (mut batch, mut stored) = (Vec::with_capacity(50_000), 0);
    let now = crate::clock::now_ms();
    for line in crate::sim::generate_posts(seed, posts as usize) {
        if let Ok(crate::post::ImportItem::Posts(p)) = crate::post::parse_import_line(&line) {
            batch.extend(p);
        }
        if batch.len() >= 50_000 {
            stored += st.import(&batch, &[], now)?.stored;
            batch.clear();
        }
    }
    stored += st.import(&batch, &[], now)?.stored;
    Ok(stored)
}

/// Resident memory of this process, MB (Linux; 0 elsewhere).
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// The most resident memory this process has had since it started or since
/// the last [`reset_peak_rss`], MB (Linux; 0 elsewhere): unlike sampling
/// [`rss_mb`], it misses no short peak.
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Starts a new [`peak_rss_mb`] from the present resident memory (Linux
/// 4.0 and later; elsewhere the peak stays the process's).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `kB` line of /proc/self/status, in MB.
fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) this process has used, in seconds
/// (`/proc/self/stat`, in USER_HZ = 100 ticks a second); 0 where unreadable.
fn process_cpu_secs() -> f64 {
    cpu_secs_of("self")
}

/// `cpu_secs` of CPU spread over `events`, in µs an event (over at least
/// one event, so a phase that committed nothing reads as its whole CPU).
fn us_per_event(cpu_secs: f64, events: u64) -> f64 {
    cpu_secs * 1e6 / events.max(1) as f64
}

/// CPU time (user and system) of process `pid` ("self" for this one), from
/// `/proc/PID/stat`; 0 when it cannot be read.
fn cpu_secs_of(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            Some((ticks(11)? + ticks(12)?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn bench_plan(
    dir: &Path,
    name: &str,
    sim: &crate::sim::SimHandle,
    sim_cfg: &crate::sim::SimConfig,
) -> anyhow::Result<Plan> {
    let mut s = Settings::default();
    let db = dir.join(format!("{name}.db"));
    // A fresh store and simulator each run: forget the connection requests
    // of earlier runs too (the limiter keeps them beside the store).
    for file in crate::store::sqlite::store_files(&db.to_string_lossy()) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{file}{suffix}"));
        }
    }
    let _ = std::fs::remove_file(format!("{}.connections.json", db.display()));
    // The dead-letter file is appended to: start it afresh too, or every run
    // adds the simulator's unknown-type lines to the last one's.
    let dead_letter = dir.join(format!("{name}.deadletter.jsonl"));
    let _ = std::fs::remove_file(&dead_letter);
    s.store.url = format!("sqlite:{}", db.display());
    s.store.dead_letter = Some(dead_letter);
    s.stream.url =
        format!("http://{}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json", sim.addr());
    s.stream.account = sim_cfg.account.clone();
    s.stream.label = sim_cfg.label.clone();
    s.stream.username = sim_cfg.username.clone();
    s.http.enabled = false;
    // Experiments only: other group-commit sizes than the defaults.
    let knob = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = knob("COMPLYD_BENCH_IN_FLIGHT") {
        s.handlers.in_flight = n;
    }
    if let Some(n) = knob("COMPLYD_BENCH_MAX_EVENTS") {
        s.batch.max_events = n;
    }
    Ok(s.plan_with_password(Secret::new(sim_cfg.password.clone()))?)
}

/// A fresh schema `bench_PID_NAME` of the PostgreSQL database at `base`
/// (dropped first if a killed run left it): the store URL that works in it,
/// and the schema's name. Blocking: call it off the async runtime.
///
/// # Errors
/// The server refuses the connection or the statements.
pub fn fresh_postgres_schema(base: &str, name: &str) -> anyhow::Result<(String, String)> {
    let schema = format!("bench_{}_{name}", std::process::id());
    let mut c = ::postgres::Client::connect(base, ::postgres::NoTls)?;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok((format!("{base}{sep}options=-csearch_path%3D{schema}"), schema))
}

/// Drops a schema [`fresh_postgres_schema`] made. Blocking.
///
/// # Errors
/// The server refuses the connection or the statement.
pub fn drop_postgres_schema(base: &str, schema: &str) -> anyhow::Result<()> {
    let mut c = ::postgres::Client::connect(base, ::postgres::NoTls)?;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))?;
    Ok(())
}

/// Peak resident memory (MB) and peak size of the store's WAL files (MB, all
/// files together) over `d`, sampled every 200 ms.
async fn peaks_during(d: Duration, db: &Path) -> (f64, f64) {
    let wal_mb = || {
        crate::store::sqlite::store_files(&db.to_string_lossy())
            .iter()
            .filter_map(|f| std::fs::metadata(format!("{f}-wal")).ok())
            .map(|m| m.len() as f64 / 1e6)
            .sum::<f64>()
    };
    let end = Instant::now() + d;
    let (mut rss, mut wal) = (rss_mb(), wal_mb());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss = rss.max(rss_mb());
        wal = wal.max(wal_mb());
    }
    (rss, wal)
}

/// The end-to-end benchmark: the ceiling (`curl --compressed` draining the
/// 8 partitions of an unlimited simulator), the daemon's rate from the same
/// kind of simulator to committed SQLite, the receipt-to-commit latency at
/// `latency_rate`, and the resident memory at full rate and with the store
/// locked. Everything runs in this process (the simulator shares the CPU).
///
/// # Errors
/// Store, bind or process-spawn failures.
pub fn bench_e2e(args: BenchArgs) -> anyhow::Result<BenchReport> {
    std::fs::create_dir_all(&args.dir)?;
    let system = actix_rt::System::new();
    let res = system.block_on(async move {
        let mut report = BenchReport { latency_rate: args.latency_rate, ..BenchReport::default() };
        let secs = Duration::from_secs(args.seconds.max(1));
        let warmup = Duration::from_secs(2);
        let unlimited = crate::sim::SimConfig {
            listen: "127.0.0.1:0".into(),
            rate: 0.0,
            posts: 100_000,
            heartbeat_interval_ms: 5_000,
            ..crate::sim::SimConfig::default()
        };

        // 1. The ceiling: curl --compressed on the 8 partitions.
        if args.curl {
            let sim = crate::sim::start(unlimited.clone()).await?;
            let total = secs + warmup;
            let mut children = Vec::new();
            for p in 1..=8u8 {
                let child = std::process::Command::new("curl")
                    .args(["--compressed", "-s", "-N", "-o", "/dev/null", "-m"])
                    .arg(total.as_secs().to_string())
                    .arg("-u")
                    .arg(format!("{}:{}", unlimited.username, unlimited.password))
                    .arg(sim.stream_url(p))
                    .spawn();
                match child {
                    Ok(c) => children.push(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "curl is not available: no ceiling measured");
                        break;
                    }
                }
            }
            if children.len() == 8 {
                tokio::time::sleep(warmup).await;
                let curls_cpu = || children.iter().map(|c| cpu_secs_of(&c.id().to_string())).sum::<f64>();
                let (before, cpu, curl_cpu) = (sim.stats().events_sent(), process_cpu_secs(), curls_cpu());
                tokio::time::sleep(secs).await;
                let after = sim.stats().events_sent();
                report.curl_events_per_sec = Some((after - before) as f64 / secs.as_secs_f64());
                report.curl_sim_cpu_us_per_event = Some(us_per_event(process_cpu_secs() - cpu, after - before));
                report.curl_cpu_us_per_event = Some(us_per_event(curls_cpu() - curl_cpu, after - before));
            }
            for mut c in children {
                let _ = c.kill();
                let _ = actix_web::rt::task::spawn_blocking(move || c.wait()).await;
            }
            sim.stop().await;
        }

        // 2. End to end at full rate, with the memory peak; the store
        // holding `args.posts` posts of the dataset the events name.
        {
            let cfg = crate::sim::SimConfig {
                posts: if args.posts > 0 { args.posts } else { unlimited.posts },
                generator: crate::sim::GeneratorConfig {
                    active_posts: args.active_posts,
                    ..unlimited.generator.clone()
                },
                ..unlimited.clone()
            };
            let sim = crate::sim::start(cfg.clone()).await?;
            let mut plan = bench_plan(&args.dir, "full", &sim, &cfg)?;
            let schema = match args.postgres.clone() {
                Some(base) => {
                    let b = base.clone();
                    let (url, schema) =
                        actix_web::rt::task::spawn_blocking(move || fresh_postgres_schema(&b, "e2e")).await??;
                    plan.store.url = store::StoreUrl::parse(&url)?;
                    report.e2e_store = "PostgreSQL";
                    Some((base, schema))
                }
                None => {
                    report.e2e_store = "SQLite";
                    None
                }
            };
            if args.posts > 0 {
                let url = plan.store.url.clone();
                let (seed, n) = (cfg.seed, args.posts);
                report.posts_stored = actix_web::rt::task::spawn_blocking(move || fill_store(&url, seed, n)).await??;
                // What the fill left in the page cache is written out before
                // the daemon starts, not while it is measured.
                let _ = std::process::Command::new("sync").status();
            }
            let d = Daemon::start(plan).await?;
            tokio::time::sleep(warmup).await;
            let db = args.dir.join("full.db");
            let before = d.health().committed();
            let (t, cpu) = (Instant::now(), process_cpu_secs());
            let (peak, wal) = peaks_during(secs, &db).await;
            let after = d.health().committed();
            report.e2e_events_per_sec = (after - before) as f64 / t.elapsed().as_secs_f64();
            report.e2e_cpu_us_per_event = us_per_event(process_cpu_secs() - cpu, after - before);
            report.rss_full_rate_mb = peak;
            report.wal_full_rate_mb = schema.is_none().then_some(wal);

            // 4. The store locked for a while at full rate: memory stays flat,
            // nothing is dropped (SQLite: its file is what is locked).
            if args.stall_secs > 0 && schema.is_none() {
                let lock = crate::store::sqlite::connect(&db.to_string_lossy())?;
                lock.execute_batch("BEGIN EXCLUSIVE")?;
                let h = d.health().clone();
                let received_before = h.received();
                let end = Instant::now() + Duration::from_secs(args.stall_secs);
                let (mut peak, mut outstanding) = (rss_mb(), 0u64);
                while Instant::now() < end {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    peak = peak.max(rss_mb());
                    outstanding = outstanding.max(h.received().saturating_sub(h.committed()));
                }
                let received_during = h.received() - received_before;
                lock.execute_batch("COMMIT")?;
                drop(lock);
                // Caught up: everything received is committed.
                let caught_up = Instant::now();
                let mut ok = false;
                while caught_up.elapsed() < Duration::from_secs(20) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if h.committed() >= received_before + received_during {
                        ok = true;
                        break;
                    }
                }
                report.rss_stalled_mb = Some(peak);
                report.stall = Some(StallFigures {
                    seconds: args.stall_secs,
                    received_during,
                    max_outstanding: outstanding,
                    caught_up_ms: ok.then(|| caught_up.elapsed().as_millis() as u64),
                });
            }
            d.shutdown().await;
            sim.stop().await;
            if let Some((base, schema)) = schema {
                actix_web::rt::task::spawn_blocking(move || drop_postgres_schema(&base, &schema)).await??;
            }
        }

        // 2b. The pipeline alone: the same, with a store that keeps nothing.
        if args.pipeline {
            let sim = crate::sim::start(unlimited.clone()).await?;
            let plan = bench_plan(&args.dir, "null", &sim, &unlimited)?;
            let d = Daemon::start_with_stores(plan, Box::new(NullStore), Box::new(NullStore)).await?;
            tokio::time::sleep(warmup).await;
            let before = d.health().committed();
            let (t, cpu) = (Instant::now(), process_cpu_secs());
            tokio::time::sleep(secs).await;
            let after = d.health().committed();
            report.pipeline_events_per_sec = Some((after - before) as f64 / t.elapsed().as_secs_f64());
            report.pipeline_cpu_us_per_event = Some(us_per_event(process_cpu_secs() - cpu, after - before));
            d.shutdown().await;
            sim.stop().await;
        }

        // 3. Latency at a fixed rate.
        if args.latency_rate > 0.0 {
            let cfg = crate::sim::SimConfig { rate: args.latency_rate, ..unlimited.clone() };
            let sim = crate::sim::start(cfg.clone()).await?;
            let d = Daemon::start(bench_plan(&args.dir, "latency", &sim, &cfg)?).await?;
            tokio::time::sleep(warmup).await;
            d.health().latency.reset();
            tokio::time::sleep(secs).await;
            report.latency_p50_ms = d.health().latency.quantile_ms(0.5);
            report.latency_p99_ms = d.health().latency.quantile_ms(0.99);
            d.shutdown().await;
            sim.stop().await;
        }
        Ok::<_, anyhow::Error>(report)
    });
    if let Some(sys) = System::try_current() {
        sys.stop();
    }
    res
}
