//! `complyd demo --duration SECS`: the simulator and the daemon in one
//! process, stopping by itself with a clean shutdown (what CI runs).

use complyd::daemon::{demo, DemoArgs};
use std::time::{Duration, Instant};

#[test]
fn demo_runs_for_its_duration_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("complyd-demo");
    let args = DemoArgs {
        config: Some("config/demo.toml".into()),
        duration: Some(3),
        dir: demo_dir.clone(),
        rate: Some(4_000.0),
        seed: None,
        progress_secs: 1,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let t = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(demo(args).map_err(|e| format!("{e:#}")));
    });
    let res = rx.recv_timeout(Duration::from_secs(60)).expect("the demo did not stop by itself");
    res.expect("the demo failed");
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(demo_dir.join("complyd.db").exists());
    // Events were applied: both handlers committed positions.
    let mut st = complyd::store::open(&format!("sqlite:{}", demo_dir.join("complyd.db").display())).unwrap();
    let pos = st.positions().unwrap();
    assert!(pos.len() >= 8, "{pos:?}");
    // What it wrote is its user's alone: the posts, the store, the grants.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let files: Vec<_> = std::fs::read_dir(&demo_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.iter().any(|f| f.ends_with("posts.jsonl")), "{files:?}");
        for f in files.iter().filter(|f| f.is_file()) {
            let mode = std::fs::metadata(f).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is open to others: {mode:o}", f.display());
        }
    }
}
