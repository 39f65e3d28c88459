//! `complyd`: the one binary. Each subcommand answers a
//! [`Failure`](commands::Failure), which `main` prints once, with its chain,
//! and turns into the exit code (0 success, 1 usage or configuration, 2 I/O
//! or store failure; the rule is `Failure`'s, in `src/commands.rs`).

use clap::{Parser, Subcommand};
use complyd::commands::{self, BatchType, Failure};
use complyd::deadletter::DeadLetter;
use complyd::logging;
use complyd::settings::{ConfigErrors, LogFormat, Settings, DEFAULT_CONFIG};
use complyd::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "complyd",
    version,
    about = "Keeps a stored dataset of X posts compliant with the X Compliance Firehose"
)]
struct Cli {
    /// The store: sqlite:PATH or postgres://... (default: the config file's store.url).
    #[arg(long, global = true, value_name = "URL")]
    db: Option<String>,
    /// The config file (default: config/complyd.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load posts (v1.1 / original format, or v2), one JSON object a line; known rules apply at import.
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Apply compliance messages from files (\r\n or \n separated) as if they came from the stream; - reads stdin.
    /// With --from and --to, fetch that range from X's Replay endpoint instead (the config's account).
    Replay {
        #[arg(required_unless_present = "from", conflicts_with = "from", value_name = "FILE")]
        files: Vec<String>,
        /// Start of the range (YYYYMMDDHHMM UTC, or RFC 3339), within the last 5 days.
        #[arg(long, value_name = "TIME", requires = "to")]
        from: Option<String>,
        /// End of the range (exclusive), at least about 30 minutes ago.
        #[arg(long, value_name = "TIME", requires = "from")]
        to: Option<String>,
    },
    /// Apply X API v2 batch-compliance result files.
    ApplyBatch {
        #[arg(long = "type", value_enum)]
        kind: BatchType,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// X API v2 batch compliance jobs, end to end (create, upload, wait, download, apply), resumable.
    BatchJob {
        #[command(subcommand)]
        action: BatchJobAction,
    },
    /// May these posts be shown (in COUNTRY, or everywhere)? One JSON line per id.
    Check {
        #[arg(long, value_name = "CC")]
        country: Option<String>,
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// The stored posts visible in COUNTRY (or everywhere), one JSON object a line, ascending id.
    Export {
        #[arg(long, value_name = "CC")]
        country: Option<String>,
    },
    /// The long-running daemon: the partition streams, the handlers, the store, the HTTP endpoints.
    Run,
    /// The simulator and the daemon together on loopback, with an embedded store: start here.
    Demo {
        /// Stop by itself after this many seconds (what scripts and CI use).
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Where the demo's store, posts and dead-letter file go.
        #[arg(long, value_name = "DIR", default_value = "complyd-demo")]
        dir: PathBuf,
        /// Simulated events per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Simulator seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The gap ledger: every stretch of a partition's stream not received, and whether it was repaired.
    Gaps {
        /// One JSON object a gap, with its history, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file and print every problem (exit 1 if any).
    Validate,
    /// The firehose simulator (--config names a simulator config, e.g. config/sim.toml).
    Sim {
        /// Address to listen on (port 0 picks a free one); default 127.0.0.1:8080.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Generator seed: the same seed sends the same bytes.
        #[arg(long)]
        seed: Option<u64>,
        /// Events per second across all partitions (0: as fast as clients read).
        #[arg(long)]
        rate: Option<f64>,
        /// Record every message sent: partition, send time (ms), line; tab-separated.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BatchJobAction {
    /// Check the store's posts (or users), or the ids of FILE, with X; apply the result. Resumes an interrupted run.
    Run {
        #[arg(long = "type", value_enum)]
        kind: BatchType,
        /// One id a line, instead of the store's ids.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Start a new run even though one is unfinished (left as it stands).
        #[arg(long)]
        new: bool,
    },
    /// The jobs kept in the store, with their stage.
    List {
        #[arg(long = "type", value_enum)]
        kind: Option<BatchType>,
        /// One JSON object a job instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; any other parse error is a
            // usage error, exit 1 as the contract says (clap's own is 2).
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("complyd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// glibc's malloc, set for the daemon's pattern (`run` and `demo`; the
/// offline commands keep glibc's defaults): batches allocated in one
/// thread and freed in another, queues that grow by doubling to a few
/// megabytes. Each setting took 4-5 MB off the peak at full rate, for the
/// same rate (BENCHMARKS.md, "Memory below the peers'"):
/// - two arenas: by default each thread that finds the heap busy gets an
///   arena of its own (up to 8 a core), and each keeps what was freed in it;
/// - blocks of 256 KiB and more in mappings of their own, returned to the
///   system when freed. By default the threshold rises to the size of the
///   largest block freed, so the queues end up in the arenas and leave them
///   fragmented.
///
/// `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the environment still
/// decide when set.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value, env) in
        [(libc::M_ARENA_MAX, 2, "MALLOC_ARENA_MAX"), (libc::M_MMAP_THRESHOLD, 256 * 1024, "MALLOC_MMAP_THRESHOLD_")]
    {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only sets a parameter of the allocator; the
            // daemon has started no thread yet.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let Cli { db, config, command } = cli;
    if matches!(command, Command::Run | Command::Demo { .. }) {
        // The daemon sets up its logs from its config.
        tune_malloc();
    } else {
        // Offline commands print their summary themselves; the log carries
        // warnings (COMPLYD_LOG=info shows more).
        logging::init(None, LogFormat::Human, "warn");
    }
    match command {
        Command::Sim { listen, seed, rate, record } => {
            Ok(complyd::sim::main(complyd::sim::SimArgs { config, listen, seed, rate, record })?)
        }
        Command::Demo { duration, dir, rate, seed } => Ok(complyd::daemon::demo(complyd::daemon::DemoArgs {
            config,
            duration,
            dir,
            rate,
            seed,
            ..Default::default()
        })?),
        Command::Validate => validate(config),
        Command::Run => {
            let plan = load_settings(config)?.plan()?;
            logging::init(Some(&plan.log), LogFormat::Json, "info");
            Ok(complyd::daemon::run(plan)?)
        }
        Command::Import { files } => {
            let (mut store, mut dead_letter) = open_store(config, db)?;
            eprintln!("{}", commands::import(store.as_mut(), &mut dead_letter, &files)?);
            Ok(())
        }
        Command::Replay { from: Some(from), to: Some(to), .. } => {
            let time = |flag: &str, v: &str| {
                complyd::gaps::parse_time(v).ok_or_else(|| {
                    Failure::Usage(format!("{flag} {v:?} is not a time (YYYYMMDDHHMM in UTC, or RFC 3339)"))
                })
            };
            let (from, to) = (time("--from", &from)?, time("--to", &to)?);
            let settings = load_settings(config)?;
            let mut plan = settings.plan()?;
            plan.store = settings.store_plan(db.as_deref())?;
            eprintln!("{}", complyd::daemon::replay_range(&plan, from, to)?);
            Ok(())
        }
        Command::Replay { files, .. } => {
            let (mut store, mut dead_letter) = open_store(config, db)?;
            eprintln!("{}", commands::replay(store.as_mut(), &mut dead_letter, &files)?);
            Ok(())
        }
        Command::ApplyBatch { kind, files } => {
            let (mut store, mut dead_letter) = open_store(config, db)?;
            eprintln!("{}", commands::apply_batch(store.as_mut(), &mut dead_letter, kind, &files)?);
            Ok(())
        }
        Command::BatchJob { action: BatchJobAction::Run { kind, file, new } } => {
            let settings = load_settings(config)?;
            let store_plan = settings.store_plan(db.as_deref())?;
            let plan = settings.batch_job_plan(&store_plan)?;
            let mut store = complyd::store::open_url(&store_plan.url)?;
            let mut dead_letter = DeadLetter::new(store_plan.dead_letter);
            let args = complyd::batch_job::run::RunArgs { kind, file, new };
            eprintln!("{}", complyd::batch_job::run::run(store.as_mut(), &mut dead_letter, &plan, &args)?);
            Ok(())
        }
        Command::BatchJob { action: BatchJobAction::List { kind, json } } => {
            let mut store = open_existing_store(config, db)?;
            let n = complyd::batch_job::run::list(store.as_mut(), kind, json, std::io::stdout().lock())?;
            if !json {
                eprintln!("batch-job: {n} jobs");
            }
            Ok(())
        }
        Command::Check { country, ids } => {
            let country = country.as_deref().map(commands::parse_country).transpose()?;
            let mut store = open_existing_store(config, db)?;
            commands::check(store.as_mut(), country, &ids, &mut std::io::stdout().lock())
        }
        Command::Gaps { json } => {
            let mut store = open_existing_store(config, db)?;
            let unresolved = commands::gaps(store.as_mut(), json, std::io::stdout().lock())?;
            if !json {
                eprintln!("gaps: {unresolved} unresolved");
            }
            Ok(())
        }
        Command::Export { country } => {
            let country = country.as_deref().map(commands::parse_country).transpose()?;
            let mut store = open_existing_store(config, db)?;
            // A bar on stderr while exporting to a file or a pipe (never over
            // the posts on a terminal).
            let mut progress = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                complyd::progress::Progress::hidden()
            } else {
                complyd::progress::Progress::new("export", complyd::progress::Unit::Items("posts read"), None)
            };
            let done = commands::export_with(store.as_mut(), country, std::io::stdout().lock(), &mut progress)?;
            progress.finish();
            if done.withheld > 0 {
                eprintln!(
                    "export: {} posts; withheld {} whose stored JSON had to lose something and could not be read (logged)",
                    done.written, done.withheld
                );
            } else {
                eprintln!("export: {} posts", done.written);
            }
            Ok(())
        }
    }
}

/// The config file: `--config`, else config/complyd.toml when present, else
/// the defaults; `COMPLYD_*` variables override.
fn config_path(config: Option<PathBuf>) -> Option<PathBuf> {
    config.or_else(|| {
        let p = PathBuf::from(DEFAULT_CONFIG);
        p.exists().then_some(p)
    })
}

fn load_settings(config: Option<PathBuf>) -> Result<Settings, Failure> {
    Ok(Settings::load(config_path(config).as_deref())?)
}

/// An offline command's store (`--db`, else `store.url`) and dead-letter file.
fn open_store(config: Option<PathBuf>, db: Option<String>) -> Result<(Box<dyn Store>, DeadLetter), Failure> {
    let plan = load_settings(config)?.store_plan(db.as_deref())?;
    Ok((complyd::store::open_url(&plan.url)?, DeadLetter::new(plan.dead_letter)))
}

/// The store of a command that only reads (`check`, `export`, `gaps`,
/// `batch-job list`): refused, never created, where none exists
/// ([`complyd::store::open_existing`]).
fn open_existing_store(config: Option<PathBuf>, db: Option<String>) -> Result<Box<dyn Store>, Failure> {
    let plan = load_settings(config)?.store_plan(db.as_deref())?;
    Ok(complyd::store::open_existing(&plan.url)?)
}

/// `complyd validate`: every problem of the file at once, as `run` would
/// find them, or its warnings and "ok".
fn validate(config: Option<PathBuf>) -> Result<(), Failure> {
    let path = config_path(config);
    let shown = path.as_deref().map_or_else(|| "the defaults".to_owned(), |p| p.display().to_string());
    let in_context = |e: ConfigErrors| Failure::Usage(format!("{shown}: {e}"));
    let (settings, mut problems) = Settings::load_lenient(path.as_deref()).map_err(in_context)?;
    match settings.plan() {
        Ok(plan) if problems.is_empty() => {
            for w in &plan.warnings {
                println!("{shown}: warning: {w}");
            }
            println!("{shown}: ok");
            Ok(())
        }
        Ok(_) => Err(in_context(ConfigErrors(problems))),
        Err(e) => {
            problems.extend(e.0);
            Err(in_context(ConfigErrors(problems)))
        }
    }
}
