//! `complyd run` itself: the blocking entry point, stopped by SIGTERM, exits
//! cleanly (Ok, so exit 0) within 10 s, having committed what it received.
//! A missing password is a configuration error before anything starts.

mod common;

use common::daemon::*;
use complyd::settings::Settings;
use std::time::{Duration, Instant};

#[actix_rt::test]
async fn run_stops_cleanly_on_sigterm() {
    init_logs();
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempdir();
        let d = path(&dir);
        let cfg = sim_config(&d, 2_000.0);
        let sim = complyd::sim::start(cfg.clone()).await.unwrap();
        let mut s = daemon_settings(&sim, &cfg, &d, "daemon.db");
        // A fixed port for the health endpoint (run() binds it itself).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        s.http.listen = format!("127.0.0.1:{port}");
        // `run` holds the configuration to X's rules (the library allows the
        // tests' short read timeout).
        s.stream.idle_timeout_ms = 35_000;
        let pw = d.join("password");
        std::fs::write(&pw, format!("{}\n", cfg.password)).unwrap();
        s.stream.password_file = Some(pw);
        let url = s.store.url.clone();
        // The strict plan `complyd run` takes: X's rules enforced, the password read from its file.
        let plan = s.plan().expect("a configuration within X's rules");

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(complyd::daemon::run(plan).map_err(|e| format!("{e:#}")));
        });
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut up = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let client = awc::Client::default();
            if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
                if r.status() == 200 {
                    up = true;
                    break;
                }
            }
        }
        assert!(up, "the daemon's health endpoint never answered");
        // The signal handlers are installed (else SIGTERM kills the test) and
        // events flow end to end: both handlers committed every partition.
        assert!(
            wait_until(Duration::from_secs(20), || catches_sigterm(std::process::id())).await,
            "run() did not install its SIGTERM handler within 20 s"
        );
        let mut st = complyd::store::open(&url).unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || committed_positions(st.as_mut()) == 16).await,
            "both handlers did not commit every partition within 20 s: {} positions",
            committed_positions(st.as_mut())
        );
        drop(st);
        let t = Instant::now();
        let status =
            std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status().unwrap();
        assert!(status.success());
        let mut res = None;
        for _ in 0..200 {
            if let Ok(r) = rx.try_recv() {
                res = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let res = res.expect("run() did not return within 10 s of SIGTERM");
        assert!(t.elapsed() < Duration::from_secs(10));
        res.expect("run() failed");
        sim.stop().await;
        let mut st = complyd::store::open(&url).unwrap();
        assert_eq!(st.positions().unwrap().len(), 16, "both handlers committed every partition");
    })
    .await
    .expect("the test timed out");
}

#[test]
fn run_refuses_a_missing_password_as_a_configuration_error() {
    let mut s = Settings::default();
    s.stream.account = "acme".into();
    s.stream.username = "ops@acme.example".into();
    s.stream.password_env = "COMPLYD_TEST_SURELY_UNSET_PASSWORD".into();
    let problems = s.plan().unwrap_err();
    assert!(problems.0.iter().any(|p| p.contains("COMPLYD_TEST_SURELY_UNSET_PASSWORD")), "{problems:?}");
}
