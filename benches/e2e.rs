//! The daemon end to end (issue 4): `cargo bench --bench e2e`.
//!
//! ```sh
//! cargo bench --bench e2e
//! COMPLYD_BENCH_SECS=20 cargo bench --bench e2e
//! # one phase only: COMPLYD_BENCH_CURL=0 COMPLYD_BENCH_PIPELINE=0 COMPLYD_BENCH_STALL_SECS=0 COMPLYD_BENCH_LATENCY_RATE=0
//! # the store holding N posts of the dataset the events name: COMPLYD_BENCH_POSTS=N
//! # the events naming only A distinct posts, spread over those N: COMPLYD_BENCH_ACTIVE=A
//! # the end-to-end phase into PostgreSQL (a fresh schema, dropped after): COMPLYD_BENCH_DB=postgres://...
//! ```
//!
//! Prints the ceiling (`curl --compressed` draining the 8 partitions of an
//! unlimited simulator), the daemon's rate from the same simulator to the
//! committed store (SQLite, or PostgreSQL with `COMPLYD_BENCH_DB`), the
//! receipt-to-commit latency at 10,000 events/s, and the peak resident
//! memory at full rate and with the store locked (SQLite).

use complyd::daemon::bench::{bench_e2e, BenchArgs};

fn main() {
    let secs = std::env::var("COMPLYD_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let flag = |name: &str, default: f64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let args = BenchArgs {
        seconds: secs,
        dir: std::env::temp_dir().join("complyd-bench-e2e"),
        curl: flag("COMPLYD_BENCH_CURL", 1.0) > 0.0,
        latency_rate: flag("COMPLYD_BENCH_LATENCY_RATE", 10_000.0),
        stall_secs: flag("COMPLYD_BENCH_STALL_SECS", 5.0) as u64,
        pipeline: flag("COMPLYD_BENCH_PIPELINE", 1.0) > 0.0,
        posts: flag("COMPLYD_BENCH_POSTS", 0.0) as u64,
        active_posts: flag("COMPLYD_BENCH_ACTIVE", 0.0) as u64,
        postgres: std::env::var("COMPLYD_BENCH_DB").ok().filter(|u| !u.is_empty()),
    };
    match bench_e2e(args) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("bench e2e: {e:#}");
            std::process::exit(2);
        }
    }
}
