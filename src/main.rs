//! `complyd`: the one binary. `main` returns an exit code; an error is
//! printed once, with its chain, here at the top (0 success, 1 usage or
//! config error, 2 I/O or store failure).

use clap::{Parser, Subcommand};
use complyd::commands::{self, BatchType, Failure};
use complyd::deadletter::DeadLetter;
use complyd::logging;
use complyd::settings::{ConfigErrors, LogFormat, Settings, DEFAULT_CONFIG};
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
    Replay {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// Apply X API v2 batch-compliance result files.
    ApplyBatch {
        #[arg(long = "type", value_enum)]
        kind: BatchType,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
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

/// A configuration problem is a usage error (1); anything else (a store, a
/// socket) an I/O failure (2).
fn daemon_failure(e: anyhow::Error) -> Failure {
    if e.chain().any(|c| c.is::<ConfigErrors>()) {
        Failure::Usage(format!("{e:#}"))
    } else {
        Failure::Io(e)
    }
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

fn run(cli: Cli) -> Result<(), Failure> {
    if !matches!(cli.command, Command::Run | Command::Demo { .. }) {
        // Offline commands print their summary themselves; the log carries
        // warnings (COMPLYD_LOG=info shows more). `run` and `demo` set up
        // their logs from their config.
        logging::init(None, LogFormat::Human, "warn");
    }
    if let Command::Sim { listen, seed, rate, record } = cli.command {
        let args = complyd::sim::SimArgs { config: cli.config, listen, seed, rate, record };
        return complyd::sim::main(args).map_err(|e| {
            // A socket that cannot be bound is an I/O failure; anything else
            // (a bad config, a bad flag) is a usage error.
            if e.chain().any(|c| c.is::<std::io::Error>()) {
                Failure::Io(e)
            } else {
                Failure::Usage(format!("{e:#}"))
            }
        });
    }
    if let Command::Demo { duration, dir, rate, seed } = cli.command {
        let args = complyd::daemon::DemoArgs { config: cli.config, duration, dir, rate, seed, ..Default::default() };
        return complyd::daemon::demo(args).map_err(daemon_failure);
    }
    // Every other command reads the one config file: --config, else
    // config/complyd.toml when present, else the defaults; COMPLYD_* overrides.
    let path = cli.config.clone().or_else(|| {
        let p = PathBuf::from(DEFAULT_CONFIG);
        p.exists().then_some(p)
    });
    if let Command::Validate = cli.command {
        let shown = path.as_deref().map_or_else(|| "the defaults".to_owned(), |p| p.display().to_string());
        let (settings, mut problems) =
            Settings::load_lenient(path.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
        match settings.plan() {
            Ok(plan) if problems.is_empty() => {
                for w in &plan.warnings {
                    println!("{shown}: warning: {w}");
                }
                println!("{shown}: ok");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => problems.extend(e.0),
        }
        return Err(Failure::Usage(format!("{shown}: {}", ConfigErrors(problems))));
    }
    let settings = Settings::load(path.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Command::Run = cli.command {
        let plan = settings.plan().map_err(|e| Failure::Usage(e.to_string()))?;
        logging::init(Some(&plan.log), LogFormat::Json, "info");
        return complyd::daemon::run(plan).map_err(daemon_failure);
    }
    let store = settings.store_plan(cli.db.as_deref()).map_err(|e| Failure::Usage(e.to_string()))?;
    let url = &store.url;
    let dead_letter = || DeadLetter::new(store.dead_letter.clone());
    // (the daemon's commands returned above)
    match cli.command {
        Command::Import { files } => {
            let mut store = complyd::store::open_url(url)?;
            let summary = commands::import(store.as_mut(), &mut dead_letter(), &files)?;
            eprintln!("{summary}");
        }
        Command::Replay { files } => {
            let mut store = complyd::store::open_url(url)?;
            let summary = commands::replay(store.as_mut(), &mut dead_letter(), &files)?;
            eprintln!("{summary}");
        }
        Command::ApplyBatch { kind, files } => {
            let mut store = complyd::store::open_url(url)?;
            let summary = commands::apply_batch(store.as_mut(), &mut dead_letter(), kind, &files)?;
            eprintln!("{summary}");
        }
        Command::Check { country, ids } => {
            let country = country.as_deref().map(commands::parse_country).transpose()?;
            let mut store = complyd::store::open_url(url)?;
            commands::check(store.as_mut(), country, &ids, &mut std::io::stdout().lock())?;
        }
        Command::Export { country } => {
            let country = country.as_deref().map(commands::parse_country).transpose()?;
            let mut store = complyd::store::open_url(url)?;
            let n = commands::export(store.as_mut(), country, std::io::stdout().lock())?;
            eprintln!("export: {n} posts");
        }
        Command::Sim { .. } | Command::Demo { .. } | Command::Run | Command::Validate => {
            unreachable!("handled above")
        }
    }
    Ok(())
}
