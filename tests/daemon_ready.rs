//! `/readyz` flips: ready while connected, 503 naming the partition once the
//! simulator keeps refusing it past the restart intensity, ready again after
//! a stable connection. The connection limiter is the real one (10 a minute):
//! two partitions keep the test well inside it.

mod common;

use common::daemon::*;
use complyd::daemon::Daemon;
use complyd::sim::{Fault, FaultKind};
use std::time::Duration;

#[actix_rt::test]
async fn readyz_flips_when_the_simulator_refuses_connections_and_back() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_config(&d, 500.0);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        s.stream.partitions = vec![1, 2];
        s.restart.max_failures = 2;
        s.restart.failed_retry_ms = 2_000;
        let daemon = Daemon::start(plan(s, password(&cfg))).await.unwrap();
        let h = daemon.health().clone();
        let addr = daemon.http_addr().unwrap();

        assert!(wait_until(Duration::from_secs(10), || h.readiness().0).await, "{}", h.report());
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");

        // Partition 1 is cut off, and its next three attempts get 503.
        sim.trigger(Fault::new(FaultKind::Status { status: 503 }).on_partition(1).times(3));
        sim.trigger(Fault::new(FaultKind::ForcedDisconnect { message: None }).on_partition(1));
        assert!(wait_until(Duration::from_secs(15), || !h.readiness().0).await, "{}", h.report());
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let reasons = v["reasons"].to_string();
        assert!(reasons.contains("partition 1: failed") && reasons.contains("503"), "{body}");
        assert!(!reasons.contains("partition 2"), "partition 2 is fine: {body}");
        let (_, metrics) = http_get(addr, "/metrics").await;
        assert_eq!(metric(&metrics, "complyd_partition_failed", &[("partition", "1")]), Some(1.0), "{metrics}");
        assert_eq!(metric(&metrics, "complyd_ready", &[]), Some(0.0), "{metrics}");

        // The refusals are used up: the next slow retry connects, stays up,
        // and the daemon is ready again.
        assert!(wait_until(Duration::from_secs(20), || h.readiness().0).await, "{}", h.report());
        let (status, body) = http_get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(sim.stats().responses_with(429), 0);
        daemon.shutdown().await;
        sim.stop().await;
    })
    .await
    .expect("the test timed out");
}
