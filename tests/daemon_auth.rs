//! Wrong credentials (401): exactly one ERROR line saying what to fix, slow
//! retries (never hammering), the health endpoints say why, and the
//! password never appears in any log line.

mod common;

use common::daemon::*;
use complyd::daemon::Daemon;
use complyd::settings::Secret;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every log line of this test binary, as JSON.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

const WRONG: &str = "not-the-password-Zq9";

#[actix_rt::test]
async fn wrong_credentials_one_error_line_slow_retries_and_health_says_why() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(capture.clone())
        .init();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_config(&d, 1_000.0);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.backoff.config_retry_ms = 1_500;
        let daemon = Daemon::start(plan(s, Secret::new(WRONG))).await.unwrap();
        let h = daemon.health().clone();
        let addr = daemon.http_addr().unwrap();

        // Every partition is refused and waits.
        assert!(
            wait_until(Duration::from_secs(10), || h.partitions().iter().all(|p| p.config_error.is_some())).await,
            "{}",
            h.report()
        );
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("401") && body.contains("stream.username"), "{body}");
        let (status, body) = http_get(addr, "/healthz").await;
        assert_eq!(status, 200);
        assert!(body.contains("Invalid credentials"), "{body}");

        // Retries come at the configuration-error pace, not faster.
        // A deliberate fixed wait: it counts the attempts made during it (no more than two rounds).
        tokio::time::sleep(Duration::from_millis(3_400)).await;
        let stats = sim.stats();
        let refused = stats.responses_with(401);
        // 8 at start, then at most two more rounds in 3.4 s at 1.5 s each
        // (the limiter allows only 10 a minute anyway).
        assert!(refused <= 10, "{refused} attempts in 3.4 s: hammering");
        assert!(refused >= 8);
        assert_eq!(stats.responses_with(429), 0);
        for p in h.partitions() {
            let e = p.exits.back().unwrap();
            assert_eq!((e.class, e.delay_ms), ("config", 1_500), "{p:?}");
        }
        daemon.shutdown().await;
        sim.stop().await;
    })
    .await
    .expect("the test timed out");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
    assert_eq!(errors.len(), 1, "exactly one ERROR line: {errors:#?}");
    assert!(errors[0].contains("Configuration error") && errors[0].contains("stream.username"), "{}", errors[0]);
    assert!(!logs.contains(WRONG), "the password was logged");
    assert!(!logs.to_ascii_lowercase().contains("authorization: basic"), "an Authorization header was logged");
}
