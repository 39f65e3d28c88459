//! The configuration's own tests: defaults, every problem at once, secrets
//! never printed, the shipped file.

use super::*;
use crate::backoff::{BackoffPolicy, Intensity};

/// Every problem `complyd run` would refuse (an empty list when it starts).
fn problems(s: &Settings) -> Vec<String> {
    s.plan().err().map(|e| e.0).unwrap_or_default()
}

/// Every problem the library refuses when given the password.
fn problems_with_password(s: &Settings) -> Vec<String> {
    s.plan_with_password(Secret::new("pw")).err().map(|e| e.0).unwrap_or_default()
}

fn valid() -> Settings {
    let mut s = Settings::default();
    s.stream.account = "acme".into();
    s.stream.username = "ops@acme.example".into();
    s.stream.password_env = "COMPLYD_TEST_PASSWORD_VALID".into();
    std::env::set_var("COMPLYD_TEST_PASSWORD_VALID", "hunter2");
    s
}

#[test]
fn defaults_follow_x_guidance() {
    let s = Settings::default();
    assert_eq!(s.stream.idle_timeout_ms, 35_000);
    assert_eq!(s.stream.max_line_bytes, 1 << 20);
    assert_eq!(s.stream.partitions, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!((s.limiter.max_requests, s.limiter.window_ms), (10, 60_000));
    assert_eq!(s.backoff.policy(), BackoffPolicy::default());
    assert_eq!(s.restart.intensity(), Intensity::default());
}

#[test]
fn a_complete_config_is_valid() {
    assert_eq!(problems(&valid()), Vec::<String>::new());
    assert!(valid().warnings().is_empty());
}

#[test]
fn every_problem_is_listed_at_once() {
    let mut s = valid();
    s.stream.username.clear();
    s.stream.partitions = vec![0, 3, 3, 9];
    s.stream.password_env = "COMPLYD_TEST_PASSWORD_SURELY_UNSET".into();
    s.backoff.jitter = 2.0;
    s.limiter.max_requests = 0;
    s.store.url = "mysql://x".into();
    s.http.listen = "nowhere".into();
    let p = problems(&s);
    let joined = p.join("\n");
    for needle in [
        "stream.username",
        "0 is not a partition",
        "3 is listed twice",
        "9 is not a partition",
        "COMPLYD_TEST_PASSWORD_SURELY_UNSET",
        "backoff.jitter",
        "limiter.max_requests",
        "store.url",
        "http.listen",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
}

#[test]
fn partition_urls() {
    let s = valid();
    assert_eq!(
        s.plan().unwrap().stream.partition_url(3, None),
        "https://gnip-stream.x.com/stream/compliance/accounts/acme/publishers/twitter/prod.json?partition=3"
    );
    let mut t = s.clone();
    t.stream.url = "http://127.0.0.1:9/stream?x=1".into();
    let plan = t.plan_with_password(Secret::new("pw")).unwrap();
    assert_eq!(plan.stream.partition_url(8, Some(7)), "http://127.0.0.1:9/stream?x=1&partition=8&backfillMinutes=5");
    assert_eq!(plan.stream.partition_url(8, Some(0)), "http://127.0.0.1:9/stream?x=1&partition=8");
}

#[test]
fn the_password_never_prints() {
    let s = valid();
    let pw = s.stream.password().unwrap();
    assert_eq!(pw.expose(), "hunter2");
    assert!(!format!("{pw:?} {pw} {s:?}").contains("hunter2"));
}

#[test]
fn password_file_wins_and_reads_the_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "s3cret\r\nignored\n").unwrap();
    let mut s = valid();
    s.stream.password_file = Some(f);
    assert_eq!(s.stream.password().unwrap().expose(), "s3cret");
    s.stream.password_file = Some(dir.path().join("missing"));
    assert!(s.stream.password().unwrap_err().contains("missing"));
}

#[test]
fn toml_keys_and_unknown_keys() {
    let s = Settings::from_toml(
        "[stream]\nurl = \"http://127.0.0.1:1/s\"\npartitions = [1, 2]\nidle_timeout_ms = 2000\n[limiter]\nmax_requests = 5\n",
    )
    .unwrap();
    assert_eq!(s.stream.partitions, vec![1, 2]);
    assert_eq!(s.limiter.max_requests, 5);
    assert_eq!(s.limiter.window_ms, 60_000);
    assert!(!s.warnings().is_empty());
    assert!(s.rule_problems()[0].contains("stream.idle_timeout_ms 2000"), "{:?}", s.rule_problems());
    assert!(Settings::from_toml("[stream]\npasword = \"x\"\n").is_err());
}

#[test]
fn unknown_keys_and_wrong_types_are_all_listed_with_the_other_problems() {
    let tree = serde_json::json!({
        "stream": {"pasword": "x", "idle_timeout_ms": "soon", "partitions": [1, 9]},
        "batch": {"max_events": -1},
        "strem": {},
        "http": {"listen": "nowhere", "admin_tokn": "t"}
    });
    let (s, mut p) = Settings::from_tree(tree);
    p.extend(problems_with_password(&s));
    p.extend(s.rule_problems());
    let joined = p.join("\n");
    for needle in [
        "unknown key stream.pasword",
        "unknown section [strem]",
        "unknown key http.admin_tokn",
        "stream.idle_timeout_ms: invalid type",
        "batch.max_events: invalid value",
        "9 is not a partition",
        "http.listen",
    ] {
        assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
    }
    // A refused value falls back to its default; the rest is kept.
    assert_eq!(s.stream.idle_timeout_ms, 35_000);
    assert_eq!(s.stream.partitions, vec![1, 9]);
}

#[test]
fn plain_http_is_refused_unless_loopback() {
    let mut s = valid();
    for (url, refused) in [
        ("http://127.0.0.1:8080/s", false),
        ("http://localhost/s", false),
        ("http://[::1]:9/s", false),
        ("http://user@127.0.0.2:9/s", false),
        ("https://stream.example.com/s", false),
        ("http://stream.example.com/s", true),
        ("http://10.0.0.7:8080/s", true),
    ] {
        s.stream.url = url.into();
        let p = problems_with_password(&s);
        assert_eq!(p.iter().any(|m| m.contains("in clear")), refused, "{url}: {p:?}");
    }
}

#[test]
fn x_rules_are_problems_for_validate() {
    let mut s = valid();
    s.stream.idle_timeout_ms = 30_000;
    s.limiter.max_requests = 11;
    let p = problems(&s);
    assert!(p.iter().any(|m| m.contains("stream.idle_timeout_ms 30000")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("limiter allows 11")), "{p:?}");
    assert!(problems_with_password(&s).is_empty(), "the library only warns");
}

#[test]
fn the_admin_token_is_off_by_default_and_never_printed() {
    let mut s = valid();
    assert_eq!(s.http.admin_token(), Ok(None));
    s.http.admin_token_env = "COMPLYD_TEST_ADMIN_TOKEN_SURELY_UNSET".into();
    let e = problems(&s).join("\n");
    assert!(e.contains("COMPLYD_TEST_ADMIN_TOKEN_SURELY_UNSET"), "{e}");
    std::env::set_var("COMPLYD_TEST_ADMIN_TOKEN_SET", "tok-123");
    s.http.admin_token_env = "COMPLYD_TEST_ADMIN_TOKEN_SET".into();
    let t = s.http.admin_token().unwrap().unwrap();
    assert_eq!(t.expose(), "tok-123");
    assert!(!format!("{t:?} {t} {s:?}").contains("tok-123"));
}

#[test]
fn log_level_must_be_a_filter() {
    let mut s = valid();
    s.log.level = "complyd=loud".into();
    assert!(problems(&s).iter().any(|m| m.contains("log.level")));
}

#[test]
fn load_reads_a_file_and_ignores_non_key_variables() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[store]\nurl = \"sqlite:/tmp/x.db\"\n[batch]\nmax_events = 7\n").unwrap();
    std::env::set_var("COMPLYD_LOG", "debug");
    let s = Settings::load(Some(&f)).unwrap();
    assert_eq!(s.store.url, "sqlite:/tmp/x.db");
    assert_eq!(s.batch.max_events, 7);
    assert!(Settings::load(Some(&dir.path().join("nope.toml"))).is_err());
}

#[test]
fn config_complyd_toml_documents_exactly_the_defaults() {
    let text = include_str!("../../config/complyd.toml");
    assert_eq!(Settings::from_toml(text).unwrap(), Settings::default());
}

#[test]
fn the_plan_is_typed_decides_the_paths_and_never_prints_a_secret() {
    use crate::store::StoreUrl;
    use std::path::PathBuf;
    use std::time::Duration;
    let mut s = valid();
    s.store.url = "sqlite:d/x.db".into();
    s.handlers.commit_retry_ms = 1_500;
    let plan = s.plan().unwrap();
    assert_eq!(plan.store.url, StoreUrl::sqlite("d/x.db"));
    assert_eq!(plan.store.dead_letter, PathBuf::from("d/x.db.deadletter.jsonl"));
    assert_eq!(plan.limiter.state_file, PathBuf::from("d/x.db.connections.json"));
    assert_eq!(plan.handlers.commit_retry, Duration::from_millis(1_500));
    assert_eq!(plan.stream.idle_timeout, Duration::from_secs(35));
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ops@acme.example:hunter2");
    assert_eq!(plan.stream.authorization.expose(), format!("Basic {basic}"));
    let shown = format!("{plan:?}");
    assert!(!shown.contains("hunter2") && !shown.contains(&basic), "{shown}");

    // An offline command's --db wins over store.url, and its dead letter follows it.
    let other = s.store_plan(Some("sqlite:other.db")).unwrap();
    assert_eq!(other.dead_letter, PathBuf::from("other.db.deadletter.jsonl"));
    s.store.dead_letter = Some(PathBuf::from("bad.jsonl"));
    assert_eq!(s.store_plan(None).unwrap().dead_letter, PathBuf::from("bad.jsonl"));
    let e = s.store_plan(Some("sqlite:")).unwrap_err().to_string();
    assert!(e.contains("--db") && e.contains("no path"), "{e}");
}

#[test]
fn a_ca_file_is_read_when_the_plan_is_made_and_an_unusable_one_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let mut s = valid();
    s.stream.ca_file = Some(missing.clone());
    s.store.url = format!("postgres://db/x?sslmode=require&sslrootcert={}", missing.display());
    let p = problems(&s).join("\n");
    assert!(p.contains(&format!("stream.ca_file: cannot read the CA file {}", missing.display())), "{p}");
    assert!(p.contains(&format!("store.url sslrootcert: cannot read the CA file {}", missing.display())), "{p}");
    let e = s.store_plan(None).unwrap_err().to_string();
    assert!(e.contains("store.url sslrootcert"), "{e}");
    let e = s.store_plan(Some(&format!("postgres://h/x?sslrootcert={}", missing.display()))).unwrap_err().to_string();
    assert!(e.contains("--db sslrootcert"), "{e}");
    std::env::set_var("COMPLYD_TEST_BEARER_CA", "tok");
    s.batch_job.bearer_token_env = "COMPLYD_TEST_BEARER_CA".into();
    let e = s.batch_job_plan(&s.store_plan(Some("sqlite:x.db")).unwrap()).unwrap_err().to_string();
    assert!(e.contains("stream.ca_file: cannot read the CA file"), "{e}");

    let no_cert = dir.path().join("no-cert.pem");
    std::fs::write(&no_cert, "hello\n").unwrap();
    s.stream.ca_file = Some(no_cert);
    s.store.url = "sqlite:x.db".into();
    assert!(problems(&s).join("\n").contains("holds no certificate"), "{:?}", problems(&s));

    // A usable file: the stream and Replay share what it builds, not the built-in roots.
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    s.stream.ca_file = Some(ca.clone());
    s.store.url = format!("postgres://db/x?sslrootcert={}", ca.display());
    let plan = s.plan().unwrap();
    let replay = plan.replay.as_ref().expect("replay on by default");
    assert!(std::sync::Arc::ptr_eq(&plan.stream.tls, &replay.tls));
    let batch_job = s.batch_job_plan(&plan.store).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&batch_job.tls, &crate::tls::client_config(None).unwrap()));
    assert!(!std::sync::Arc::ptr_eq(&plan.stream.tls, &crate::tls::client_config(None).unwrap()));
    assert_eq!(plan.store.url.ca_file(), Some(ca));
    s.stream.ca_file = None;
    assert!(std::sync::Arc::ptr_eq(&s.plan().unwrap().stream.tls, &crate::tls::client_config(None).unwrap()));
}

#[test]
fn a_non_loopback_http_address_needs_an_admin_token() {
    let mut s = valid();
    s.http.listen = "0.0.0.0:8080".into();
    let p = problems(&s).join("\n");
    assert!(p.contains("http.listen 0.0.0.0:8080 is not loopback"), "{p}");
    std::env::set_var("COMPLYD_TEST_ADMIN_TOKEN_NONLOOP", "tok-1");
    s.http.admin_token_env = "COMPLYD_TEST_ADMIN_TOKEN_NONLOOP".into();
    assert_eq!(problems(&s), Vec::<String>::new());
    s.http.enabled = false;
    s.http.admin_token_env.clear();
    assert_eq!(problems(&s), Vec::<String>::new(), "no endpoint, nothing to guard");
}
