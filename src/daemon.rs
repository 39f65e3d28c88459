//! The daemon's entry points: `complyd run` ([`run`]), `complyd demo`
//! ([`demo`]) and the end-to-end benchmark (the [`bench`](mod@bench) module), plus [`Daemon`],
//! the in-process handle tests and the demo use.
//!
//! The shape is the one docs/ARCHITECTURE.md draws: a [`Supervisor`] with one connection limiter
//! and one [`PartitionStream`](crate::actors::partition::PartitionStream)
//! per partition, a [`Router`], and a status handler and a user handler that
//! each own their store connection.
//!
//! Both take a checked [`Plan`](crate::settings::Plan): a configuration
//! problem is found before anything starts.

pub mod bench;

use crate::actors::gap_keeper::GapKeeper;
use crate::actors::replayer::Replayer;
use crate::actors::router::{Drain, Router};
use crate::actors::status_handler::StatusHandler;
use crate::actors::supervisor::{Shutdown, Supervisor, SupervisorConfig};
use crate::actors::user_handler::UserHandler;
use crate::clock::now_ms;
use crate::deadletter::DeadLetter;
use crate::gaps;
use crate::health::{Health, LinkState};
use crate::limiter::ConnectLimiter;
use crate::settings::{ConfigErrors, LogFormat, Plan, Secret, Settings};
use crate::store::{self, HandlerKind, Store, StoreUrl};
use actix::prelude::*;
use anyhow::Context as _;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often records held for an unwritable dead-letter file are tried
/// again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(2);

/// A running daemon inside the current actix System.
pub struct Daemon {
    supervisor: Addr<Supervisor>,
    router: Addr<Router>,
    health: Arc<Health>,
    http: Option<(actix_web::dev::ServerHandle, SocketAddr)>,
    arbiters: Vec<Arbiter>,
    /// The replayer's thread (None: `replay.enabled` is false).
    replayer: Option<Arbiter>,
    shutdown_timeout: Duration,
    dead_letter: Arc<Mutex<DeadLetter>>,
    started: Instant,
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every stream stopped and every accepted batch committed in time.
    pub clean: bool,
    pub elapsed: Duration,
    /// Events parsed and handed on.
    pub received: u64,
    /// Events committed by the two handlers.
    pub committed: u64,
    /// Events given up on (the store kept failing during the shutdown).
    pub abandoned: u64,
}

impl Daemon {
    /// Starts the daemon in the current actix System: opens the store (one
    /// connection per handler), starts the handlers, the router, the stream
    /// threads, the supervisor (which starts connecting at once) and, when
    /// enabled, the HTTP endpoints.
    ///
    /// # Errors
    /// The store's error when it cannot be opened; the bind error of the HTTP
    /// endpoint.
    pub async fn start(plan: Plan) -> anyhow::Result<Daemon> {
        let url = plan.store.url.clone();
        // On a plain thread: the synchronous PostgreSQL client must not run
        // inside the async runtime.
        // The URL once: a PostgreSQL error already names it.
        let open = || {
            store::open_url(&url).map_err(|e| {
                let named = e.to_string().contains(&url.to_string());
                let what = if named { "opening the store".to_owned() } else { format!("opening the store {url}") };
                anyhow::Error::new(e).context(what)
            })
        };
        let (status_store, user_store) =
            std::thread::scope(|s| s.spawn(|| Ok::<_, anyhow::Error>((open()?, open()?))).join())
                .map_err(|_| anyhow::anyhow!("opening the store panicked"))??;
        Daemon::start_with_stores(plan, status_store, user_store).await
    }

    /// [`Daemon::start`] with the two handlers' store connections given
    /// (another [`Store`] implementation, a benchmark's). A connection that
    /// fails with an I/O error is reopened from the plan's store URL.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub async fn start_with_stores(
        plan: Plan,
        mut status_store: Box<dyn Store>,
        user_store: Box<dyn Store>,
    ) -> anyhow::Result<Daemon> {
        for w in &plan.warnings {
            tracing::warn!(warning = %w, "Configuration warning");
        }
        let url = plan.store.url.clone();
        let restart_points = std::thread::scope(|s| s.spawn(|| stored_restart_points(status_store.as_mut())).join())
            .map_err(|_| anyhow::anyhow!("reading the stored positions panicked"))??;
        let stream = Arc::new(plan.stream);
        let health = Arc::new(Health::new(&stream.partitions));
        // A dead-letter file that cannot be written, then a port already
        // taken, fail the start with one clear error each, before anything
        // runs that would have to be stopped.
        let mut dead_letter = DeadLetter::new(plan.store.dead_letter.clone()).reporting_to(health.clone());
        dead_letter.check_writable().map_err(|e| {
            anyhow::anyhow!(
                "cannot write the dead-letter file {}: {e} (set store.dead_letter to a writable path)",
                dead_letter.path().display()
            )
        })?;
        let http = match &plan.http {
            Some(http) => {
                if http.admin_token.is_some() {
                    tracing::info!("Admin endpoint /v1/admin/explain is on (bearer token configured)");
                }
                Some(crate::http::start(http, &url, health.clone())?)
            }
            None => None,
        };
        let dead_letter = Arc::new(Mutex::new(dead_letter));
        // Records held while the dead-letter file could not be written are
        // tried again every few seconds, not only with the next bad line
        // (which may never come); the task ends with the daemon.
        let held = Arc::downgrade(&dead_letter);
        actix_rt::spawn(async move {
            let mut tick = actix_rt::time::interval(DEAD_LETTER_RETRY);
            loop {
                tick.tick().await;
                let Some(dl) = held.upgrade() else { return };
                let mut dl = dl.lock().unwrap_or_else(|e| e.into_inner());
                if dl.held() > 0 {
                    // Still failing: /readyz keeps saying why.
                    let _ = dl.flush();
                }
            }
        });
        let h = plan.handlers;

        let slot = Arc::new(Mutex::new(Some(status_store)));
        let (hl, u, retry) = (health.clone(), url.clone(), h.commit_retry);
        let status = SyncArbiter::start(1, move || {
            let store = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            StatusHandler::new(u.clone(), store, hl.clone(), retry)
        });
        let slot = Arc::new(Mutex::new(Some(user_store)));
        let (hl, u, max_users) = (health.clone(), url.clone(), h.maintain_max_users);
        let user = SyncArbiter::start(1, move || {
            let store = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            UserHandler::new(u.clone(), store, hl.clone(), retry, max_users)
        });
        let router = Router::new(status, user, h.queue_events, health.clone(), h.maintain_interval).start();
        let (hl, u) = (health.clone(), url.clone());
        let gap_keeper = SyncArbiter::start(1, move || GapKeeper::new(u.clone(), hl.clone()));
        // The replayer on a thread of its own: a replay never slows the
        // streams' threads.
        let replayer = plan.replay.clone().map(|replay| {
            let thread = Arbiter::new();
            let (hl, k, r, dl) = (health.clone(), gap_keeper.clone(), router.clone(), dead_letter.clone());
            Replayer::start_in_arbiter(&thread.handle(), move |_| Replayer::new(replay, hl, k, r, dl));
            thread
        });

        let stream_threads: Vec<Arbiter> = (0..stream.threads.max(1)).map(|_| Arbiter::new()).collect();
        let l = &plan.limiter;
        let supervisor = Supervisor::new(SupervisorConfig {
            spec: stream.clone(),
            policy: plan.backoff,
            intensity: plan.restart,
            limiter: ConnectLimiter::new(l.max_requests, l.window, l.margin),
            restart_points,
            arbiters: stream_threads.iter().map(Arbiter::handle).collect(),
            router: router.clone(),
            health: health.clone(),
            dead_letter: dead_letter.clone(),
            limiter_state: Some(l.state_file.clone()),
            gap_keeper: Some(gap_keeper.recipient()),
        })
        .start();

        tracing::info!(
            store = %url,
            partitions = ?stream.partitions,
            stream = %crate::actors::partition::redact_query(&stream.partition_url(1, None)),
            http = ?http.as_ref().map(|h| h.1),
            "Daemon started"
        );
        Ok(Daemon {
            supervisor,
            router,
            health,
            http,
            arbiters: stream_threads,
            replayer,
            shutdown_timeout: plan.shutdown_timeout,
            dead_letter,
            started: Instant::now(),
        })
    }

    /// What the daemon knows about itself (the `/healthz` data).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The bound address of the HTTP endpoints.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.1)
    }

    /// How long it has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops reading, commits everything in flight, and stops every actor,
    /// within `shutdown.timeout_ms`. Whatever is not committed by then is
    /// left out, its positions too: the gap stays known.
    pub async fn shutdown(self) -> ShutdownReport {
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.health.shutting_down.store(true, Relaxed);
        // A replay cut short leaves its gap as it stood: the next run asks
        // the window again.
        if let Some(r) = &self.replayer {
            r.stop();
        }
        let streams = tokio::time::timeout_at(deadline, self.supervisor.send(Shutdown)).await;
        let streams_ok = matches!(streams, Ok(Ok(())));
        if !streams_ok {
            tracing::error!("Shutdown: not every stream stopped in time; what they held is not applied");
        }
        let drained = tokio::time::timeout_at(deadline, self.router.send(Drain)).await;
        let drained_ok = matches!(drained, Ok(Ok(())));
        if !drained_ok {
            tracing::error!("Shutdown: batches still uncommitted at the deadline are not applied; their positions are not committed either");
        }
        if let Some((h, _)) = &self.http {
            h.stop(true).await;
        }
        self.router.do_send(crate::actors::router::Stop);
        self.supervisor.do_send(crate::actors::supervisor::Stop);
        for a in &self.arbiters {
            a.stop();
        }
        let mut dl = self.dead_letter.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = dl.flush() {
            let lost = dl.discard_held();
            tracing::error!(error = %e, lost, dead_letter = %dl.path().display(), "Could not write the dead-letter file: the records held for it are lost");
        }
        drop(dl);
        let abandoned = self.health.status.abandoned.load(Relaxed) + self.health.user.abandoned.load(Relaxed);
        let report = ShutdownReport {
            clean: streams_ok && drained_ok && abandoned == 0,
            elapsed: t0.elapsed(),
            received: self.health.received(),
            committed: self.health.committed(),
            abandoned,
        };
        tracing::info!(
            clean = report.clean,
            elapsed_ms = report.elapsed.as_millis() as u64,
            received = report.received,
            committed = report.committed,
            "Daemon stopped"
        );
        report
    }
}

/// Where each partition's restart gap starts: what an earlier run received
/// up to, from the store's positions (see [`restart_points`]).
fn stored_restart_points(store: &mut dyn Store) -> anyhow::Result<HashMap<u8, gaps::RestartPoint>> {
    Ok(restart_points(&store.positions().context("reading the stored positions")?))
}

/// Per partition, the older of the two handlers' points, each its
/// [`gaps::gap_start`]: the last byte of its last committed batch, or that
/// batch's last event time when older. Events still in flight at a crash
/// (sent after that batch, or in the server's buffer) have event times after
/// the last committed event but possibly before the last byte: starting the
/// gap at the last byte alone lost them whenever the byte fell in a later
/// minute than the event, since Replay is asked for whole minutes from the
/// gap's start.
///
/// And the larger of the two handlers' [`gaps::clock_lead`], which the gap
/// ends (and backfills) add until a connection's batches say otherwise.
fn restart_points(positions: &[(HandlerKind, crate::store::Position)]) -> HashMap<u8, gaps::RestartPoint> {
    let mut by: HashMap<u8, gaps::RestartPoint> = HashMap::new();
    for (_, pos) in positions {
        if let Some(t) = gaps::gap_start(Some(pos.last_byte_ms), pos.last_event_ms) {
            let lead = gaps::clock_lead(Some(pos.last_byte_ms), pos.last_event_ms);
            by.entry(pos.partition)
                .and_modify(|e| {
                    e.since_ms = e.since_ms.min(t);
                    e.clock_lead_ms = e.clock_lead_ms.max(lead);
                })
                .or_insert(gaps::RestartPoint { since_ms: t, clock_lead_ms: lead });
        }
    }
    by
}

/// Logs a panic loudly before the process aborts (release builds use
/// `panic = "abort"`: a service manager restarts the process).
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            tracing::error!(thread = thread.name().unwrap_or("?"), panic = %info, "Panic: complyd stops");
            prev(info);
        }));
    });
}

/// Waits for SIGINT or SIGTERM; returns the signal's name.
///
/// # Errors
/// The signal handlers cannot be installed.
pub async fn wait_for_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("waiting for SIGINT")?; Ok("SIGINT") }
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        Ok("SIGINT")
    }
}

/// `complyd run --config FILE`: runs until SIGINT or SIGTERM, then stops
/// reading, commits everything in flight and returns (within
/// `shutdown.timeout_ms`, 9 s by default).
///
/// # Errors
/// A store or bind error.
pub fn run(plan: Plan) -> anyhow::Result<()> {
    install_panic_hook();
    let system = actix_rt::System::new();
    let res = system.block_on(async move {
        let daemon = Daemon::start(plan).await?;
        let signal = wait_for_signal().await?;
        tracing::info!(signal, "Signal received: stopping the streams and committing what is in flight");
        let report = daemon.shutdown().await;
        if !report.clean {
            tracing::warn!(abandoned = report.abandoned, "The shutdown was not clean");
        }
        Ok::<_, anyhow::Error>(())
    });
    if let Some(sys) = System::try_current() {
        sys.stop();
    }
    res
}

/// `complyd demo` options.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// A TOML file: the daemon's sections, plus `[sim]` for the simulator
    /// (default: `config/demo.toml` when present, else built-in values).
    pub config: Option<PathBuf>,
    /// Stop by itself after this many seconds (what scripts and CI use).
    pub duration: Option<u64>,
    /// Where the store, the dead-letter file and the posts go.
    pub dir: PathBuf,
    /// Simulator events per second (overrides the config).
    pub rate: Option<f64>,
    /// Simulator seed (overrides the config).
    pub seed: Option<u64>,
    /// Seconds between progress lines.
    pub progress_secs: u64,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            config: None,
            duration: None,
            dir: PathBuf::from("complyd-demo"),
            rate: None,
            seed: None,
            progress_secs: 2,
        }
    }
}

/// The demo's configuration: daemon sections plus `[sim]`.
fn demo_settings(path: Option<&Path>) -> anyhow::Result<(Settings, crate::sim::SimConfig)> {
    let path = path.map(Path::to_path_buf).or_else(|| {
        let p = PathBuf::from("config/demo.toml");
        p.exists().then_some(p)
    });
    let mut table = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            text.parse::<toml::Table>().map_err(|e| ConfigErrors(vec![format!("{}: {e}", p.display())]))?
        }
        None => toml::Table::new(),
    };
    let sim: crate::sim::SimConfig = match table.remove("sim") {
        Some(v) => v.try_into().map_err(|e| ConfigErrors(vec![format!("[sim]: {e}")]))?,
        None => crate::sim::SimConfig { rate: 2000.0, ..crate::sim::SimConfig::default() },
    };
    Ok((Settings::from_table(table)?, sim))
}

/// Counts the posts visible everywhere.
fn visible_posts(url: &StoreUrl) -> anyhow::Result<u64> {
    let mut s = store::open_url(url)?;
    crate::commands::export(s.as_mut(), None, std::io::sink()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `complyd demo`: the simulator and the daemon in one process on loopback,
/// with an embedded SQLite store under `args.dir`. Imports the simulator's
/// posts first (so compliance events visibly hide posts), prints a progress
/// line every few seconds, and stops on Ctrl-C (or after `--duration`) with
/// a summary.
///
/// # Errors
/// A bad demo config, a store or bind failure.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    install_panic_hook();
    let (mut settings, mut sim_cfg) = demo_settings(args.config.as_deref())?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    // On a terminal: a live status line, warnings and errors only, and the
    // whole log in a file. Otherwise (CI, a pipe): every line, as it comes.
    use std::io::IsTerminal as _;
    let terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let log_file = args.dir.join("complyd.log");
    if terminal {
        let file =
            crate::files::write_private(&log_file).with_context(|| format!("creating {}", log_file.display()))?;
        crate::logging::init_split(Some(&settings.log), "info", file);
    } else {
        crate::logging::init(Some(&settings.log), LogFormat::Human, "info");
    }
    let db = StoreUrl::sqlite(args.dir.join("complyd.db"));
    settings.store.url = db.to_string();
    settings.store.dead_letter = Some(args.dir.join("deadletter.jsonl"));
    if let Some(r) = args.rate {
        sim_cfg.rate = r;
    }
    if let Some(s) = args.seed {
        sim_cfg.seed = s;
    }
    sim_cfg.listen = "127.0.0.1:0".into();
    // The simulator is new each time: its connection budget is untouched, so
    // the requests of an earlier demo do not count.
    let password = Secret::new(sim_cfg.password.clone());
    settings.stream.username = sim_cfg.username.clone();
    settings.stream.account = sim_cfg.account.clone();
    settings.stream.label = sim_cfg.label.clone();
    // Checked now, before anything is written; the stream URL is the
    // simulator's once it listens.
    let store = settings.plan_with_password(password.clone())?.store;

    // The dataset the events refer to.
    let posts_file = args.dir.join("posts.jsonl");
    {
        use std::io::Write as _;
        let mut w = std::io::BufWriter::new(crate::files::write_private(&posts_file)?);
        for line in crate::sim::generate_posts(sim_cfg.seed, sim_cfg.posts as usize) {
            writeln!(w, "{line}")?;
        }
        w.flush()?;
    }
    let mut st = store::open_url(&store.url)?;
    let mut dl = DeadLetter::new(store.dead_letter.clone());
    let imported = crate::commands::import(st.as_mut(), &mut dl, &[posts_file.display().to_string()])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(st);
    drop(dl);
    let visible_before = visible_posts(&db)?;
    println!("complyd demo: {imported}");
    println!("complyd demo: {visible_before} posts visible; store {db} (Ctrl-C stops)");

    let system = actix_rt::System::new();
    let res = system.block_on(async move {
        let sim = crate::sim::start(sim_cfg.clone()).await.context("starting the simulator")?;
        settings.stream.url =
            format!("http://{}/stream/compliance/accounts/{{account}}/publishers/twitter/{{label}}.json", sim.addr());
        let plan = settings.plan_with_password(password)?;
        // The simulator is new each time: its connection budget is untouched,
        // so the requests of an earlier demo do not count.
        let _ = std::fs::remove_file(&plan.limiter.state_file);
        let daemon = Daemon::start(plan).await?;
        if let Some(a) = daemon.http_addr() {
            println!("complyd demo: simulator on http://{}, health on http://{a}/healthz", sim.addr());
        }
        let status = terminal.then(|| {
            println!("complyd demo: the whole log is in {} (warnings and errors show here)", log_file.display());
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let t0 = Instant::now();
        let stop_after = args.duration.map(Duration::from_secs);
        let every = Duration::from_secs(args.progress_secs.max(1));
        let mut last = (Instant::now(), 0u64);
        let signal = wait_for_signal();
        tokio::pin!(signal);
        loop {
            let tick = tokio::time::sleep(every);
            let left = stop_after.map(|d| d.saturating_sub(t0.elapsed()));
            let until_end = async {
                match left {
                    Some(l) => tokio::time::sleep(l).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut signal => { println!(); break; }
                _ = until_end => break,
                _ = tick => {
                    let h = daemon.health();
                    let committed = h.committed();
                    let rate = (committed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
                    last = (Instant::now(), committed);
                    let line = progress_line(h, t0.elapsed(), rate);
                    match &status {
                        Some(bar) => bar.set_message(line),
                        None => println!("{line}"),
                    }
                }
            }
        }
        if let Some(bar) = &status {
            bar.finish_and_clear();
        }
        let report = daemon.shutdown().await;
        let sim_stats = sim.stats();
        sim.stop().await;
        Ok::<_, anyhow::Error>((report, sim_stats, t0.elapsed()))
    });
    if let Some(sys) = System::try_current() {
        sys.stop();
    }
    let (report, sim_stats, ran) = res?;
    let visible_after = visible_posts(&db)?;
    println!(
        "complyd demo: stopped after {:.1} s ({}): {} events received, {} committed{}; simulator sent {}",
        ran.as_secs_f64(),
        if report.clean { "clean" } else { "NOT clean" },
        report.received,
        report.committed,
        if report.abandoned > 0 { format!(", {} not committed", report.abandoned) } else { String::new() },
        sim_stats.events_sent(),
    );
    println!(
        "complyd demo: posts visible before {visible_before}, now {visible_after} ({} hidden by compliance events)",
        visible_before.saturating_sub(visible_after)
    );
    let gaps = store::open_url(&db)?.gaps(false)?;
    let repaired = gaps.iter().filter(|g| g.state == crate::gaps::GapState::Repaired).count();
    println!(
        "complyd demo: gap ledger: {} gaps, {repaired} repaired, {} unresolved (`complyd gaps --db {db}`)",
        gaps.len(),
        gaps.iter().filter(|g| g.state.is_unresolved()).count()
    );
    println!("complyd demo: try `complyd export --db {db}` or `complyd check --db {db} ID`");
    Ok(())
}

/// One progress line: rate, totals, latency, lag and each partition's state.
pub fn progress_line(h: &Health, elapsed: Duration, rate: f64) -> String {
    let mut line = format!(
        "[{:>5.0}s] {:>8.0} events/s | received {} | committed {} | applied {}",
        elapsed.as_secs_f64(),
        rate,
        h.received(),
        h.committed(),
        h.status.applied.load(Relaxed) + h.user.applied.load(Relaxed),
    );
    if let Some(p99) = h.latency.quantile_ms(0.99) {
        let _ = write!(line, " | p99 {p99} ms");
    }
    let committed: Vec<i64> =
        h.partition_ids().iter().map(|p| h.counters(*p).committed_event_ms.load(Relaxed)).filter(|t| *t > 0).collect();
    if let Some(oldest) = committed.iter().min() {
        let _ = write!(line, " | lag {:.1} s", (now_ms() - oldest).max(0) as f64 / 1000.0);
    }
    line.push_str(" |");
    for p in h.partitions() {
        let s = match (p.state, p.failed || p.config_error.is_some()) {
            (_, true) => "FAILED",
            (LinkState::Connected, _) => "up",
            (LinkState::Waiting, _) => "retry",
            (LinkState::Queued, _) => "queued",
            (LinkState::Connecting, _) => "conn",
            (LinkState::Stopped, _) => "stop",
        };
        let _ = write!(line, " {}:{s}", p.partition);
    }
    let dead: u64 = h.partition_ids().iter().map(|p| h.counters(*p).dead_lettered.load(Relaxed)).sum();
    if dead > 0 {
        let _ = write!(line, " | dead-lettered {dead}");
    }
    line
}

/// `complyd replay --from TIME --to TIME`: fetches event time `[from, to)`
/// (whole minutes) from X's Replay endpoint with the configured account,
/// window after window (at most `replay.max_window_ms` each, within
/// `replay.max_requests` per `replay.window_ms`), and applies it as
/// `complyd replay FILE` does. A window that ends with failed minutes, an
/// unprocessed range or no `info` line is asked again from its first minute
/// missing, up to 5 times. Returns the summary line.
///
/// # Errors
/// Replay is not configured, the store fails, or a window failed 5 times.
pub fn replay_range(plan: &Plan, from_ms: i64, to_ms: i64) -> anyhow::Result<String> {
    use crate::actors::replayer::{ReplayLines, WindowReader};
    use crate::gaps::{floor_minute, replay_date, ReplayOutcome, Window, MINUTE_MS};
    let Some(rp) = plan.replay.clone() else {
        return Err(ConfigErrors(vec![
            "replay.enabled is false, or replay.url could not be derived from stream.url: set replay.url".into(),
        ])
        .into());
    };
    let (from, to) = (floor_minute(from_ms), floor_minute(to_ms + MINUTE_MS - 1));
    if from >= to {
        return Err(
            ConfigErrors(vec![format!("--from {} is not before --to {}", replay_date(from), replay_date(to))]).into()
        );
    }
    let mut store = store::open_url(&plan.store.url)?;
    let dead_letter = Mutex::new(DeadLetter::new(plan.store.dead_letter.clone()));
    // Each request and each chunk is one `block_on`; the store is used
    // between them, never inside (the PostgreSQL client blocks on a runtime
    // of its own, which cannot start inside another).
    let system = actix_rt::System::new();
    let res = (|| {
        let mut applier = crate::commands::Applier::new(store.as_mut());
        let mut limiter = ConnectLimiter::new(rp.max_requests, rp.window, Duration::ZERO);
        let t0 = Instant::now();
        let minutes = ((to - from) / MINUTE_MS) as u64;
        let mut progress =
            crate::progress::Progress::new("replay", crate::progress::Unit::Items("minutes"), Some(minutes));
        let (mut at, mut tries, mut requests, mut events) = (from, 0u32, 0u64, 0u64);
        while at < to {
            let w = Window { gap_id: 0, from_ms: at, to_ms: to.min(at + rp.max_window_ms) };
            loop {
                let now = t0.elapsed().as_millis() as u64;
                match limiter.try_acquire(now) {
                    Ok(ticket) => {
                        limiter.settle(ticket, now);
                        break;
                    }
                    Err(wait) => {
                        eprintln!(
                            "replay: {} requests in the budget's window; waiting {} s",
                            rp.max_requests,
                            wait.as_secs()
                        );
                        std::thread::sleep(wait);
                    }
                }
            }
            requests += 1;
            let mut lines = ReplayLines::new(&w, rp.max_line);
            let outcome = match system.block_on(WindowReader::open(&rp, &w)) {
                Err(e) => ReplayOutcome::Broken(e),
                Ok(mut reader) => loop {
                    match system.block_on(reader.next_chunk()) {
                        Ok(Some(chunk)) => {
                            lines.push(&chunk, &dead_letter);
                            let (status, user) = (std::mem::take(&mut lines.status), std::mem::take(&mut lines.user));
                            applier.extend(status, user)?;
                        }
                        Ok(None) => {
                            lines.end(&dead_letter);
                            let (status, user) = (std::mem::take(&mut lines.status), std::mem::take(&mut lines.user));
                            applier.extend(status, user)?;
                            break ReplayOutcome::of(lines.info.as_ref());
                        }
                        Err(e) => break ReplayOutcome::Broken(e),
                    }
                },
            };
            applier.flush()?;
            events += lines.events;
            let covered = outcome.covered_to(&w);
            eprintln!(
                "replay: {}..{}: {} ({} events)",
                replay_date(w.from_ms),
                replay_date(w.to_ms),
                match &outcome {
                    ReplayOutcome::Broken(why) => format!("broken: {why}"),
                    other => other.as_str().to_owned(),
                },
                lines.events
            );
            if covered > at {
                progress.add(((covered - at) / MINUTE_MS) as u64);
                (at, tries) = (covered, 0);
            } else {
                tries += 1;
                if tries >= 5 {
                    anyhow::bail!("the window from {} failed 5 times; the range before it is applied", replay_date(at));
                }
            }
        }
        progress.finish();
        let stats = applier.stats.clone();
        Ok::<_, anyhow::Error>((stats, requests, events))
    })();
    if let Some(sys) = System::try_current() {
        sys.stop();
    }
    let (stats, requests, events) = res?;
    dead_letter.lock().unwrap_or_else(|e| e.into_inner()).flush()?;
    let m = crate::commands::finish_maintenance(store.as_mut())?;
    let dead = dead_letter.lock().unwrap_or_else(|e| e.into_inner()).total();
    Ok(format!(
        "replay: {}..{} in {requests} requests, {events} events; {}; dead-lettered {dead}; removed {} deleted posts and {} of their retweets; purged {} users ({} posts); geo scrubbed {} posts; withdrawn copies taken out of {} posts",
        replay_date(from),
        replay_date(to),
        crate::commands::applied_summary(&stats),
        m.posts_deleted,
        m.retweets_cascaded,
        m.users_purged,
        m.posts_purged,
        m.posts_geo_scrubbed,
        m.copies_removed,
    ))
}

#[cfg(test)]
mod tests {
    use super::restart_points;
    use crate::store::{HandlerKind, Position};

    fn pos(partition: u8, last_event_ms: i64, last_byte_ms: i64) -> Position {
        Position { partition, last_event_ms, last_byte_ms }
    }

    /// A SIGKILL 10 ms after a minute began: the last committed batch's
    /// last byte came at 60,010 and its last event is from 59,990; an event
    /// of 59,995 was still in flight. The restart gap must start at 59,990,
    /// in the minute before, or Replay (whole minutes from the gap's start)
    /// never asks for that event: the likeliest cause of a tombstone once
    /// missing in `twenty_sigkills_at_random_moments_lose_nothing_after_repair`.
    #[test]
    fn a_restart_gap_starts_at_the_last_committed_event_when_it_is_older_than_the_last_byte() {
        let points = restart_points(&[
            (HandlerKind::Status, pos(1, 59_990, 60_010)),
            (HandlerKind::User, pos(1, 59_500, 60_005)),
            (HandlerKind::Status, pos(2, 0, 70_000)),
            (HandlerKind::Status, pos(3, 90_000, 80_000)),
        ]);
        let since = |p: u8| points.get(&p).map(|r| r.since_ms);
        assert_eq!(since(1), Some(59_500), "the older of the two handlers");
        assert_eq!(since(2), Some(70_000), "no event committed yet: the last byte");
        assert_eq!(since(3), Some(80_000), "an event time after the last byte: the byte");
        assert_eq!(points.len(), 3);
        // An event time after its byte is X's clock ahead of this machine's.
        let lead = |p: u8| points.get(&p).map(|r| r.clock_lead_ms);
        assert_eq!((lead(1), lead(2), lead(3)), (Some(0), Some(0), Some(10_000)));
    }
}
