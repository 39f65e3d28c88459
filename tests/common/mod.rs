//! Helpers shared by the integration tests: a scratch store driven through
//! the real `complyd` binary, exactly as a user would.
#![allow(dead_code)]

pub mod daemon;
pub mod sim_client;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const DAY_MS: i64 = 24 * 3600 * 1000;

#[allow(unused_imports)] // not every test binary reads the clock
pub use complyd::clock::now_ms;

/// `complyd ARGS --db DB` with `stdin`: (exit code, stdout, stderr).
pub fn complyd_on(args: &[&str], db: &str, stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_complyd"))
        .args(args)
        .args(["--db", db])
        .env_remove("COMPLYD_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Whether post `id`'s tombstone is in the SQLite status file `file`
/// itself, read without its WAL (`immutable`): a test that means to read a
/// delete still in the WAL checks that it is not.
pub fn tombstone_in_file(file: &str, id: i64) -> bool {
    let c = rusqlite::Connection::open_with_flags(
        format!("file:{file}?immutable=1"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    c.query_row("SELECT count(*) FROM tombstones WHERE id = ?1", [id], |r| r.get::<_, i64>(0)).unwrap() > 0
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The environment variable naming the PostgreSQL server for the tests
/// (`scripts/pg-test-server.sh` starts one and prints its URL).
pub const PG_ENV: &str = "COMPLYD_TEST_POSTGRES";

/// The test server's URL. A test that needs PostgreSQL fails loudly without
/// it: it is never skipped and counted as passing.
pub fn pg_base_url() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!("{PG_ENV} is not set: this test needs PostgreSQL. Run `bash scripts/test.sh`, or start one with `scripts/pg-test-server.sh` and export {PG_ENV}=<the URL it prints>")
    })
}

/// A fresh, empty PostgreSQL schema; dropped with the guard.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    pub fn new() -> PgSchema {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        );
        let mut c = postgres::Client::connect(&pg_base_url(), postgres::NoTls).expect("the test PostgreSQL answers");
        c.batch_execute(&format!("CREATE SCHEMA {name}")).unwrap();
        PgSchema { name }
    }

    /// The store URL for this schema (`options=-c search_path=...`).
    pub fn url(&self) -> String {
        let base = pg_base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    /// On a plain thread: the synchronous client panics on an async
    /// runtime's thread, which is where a failing async test unwinds (and a
    /// panic while unwinding aborts the whole test binary).
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&pg_base_url(), postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
            }
        })
        .join();
    }
}

/// A scratch directory with a store: SQLite in the directory, or a fresh
/// PostgreSQL schema.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pg: Option<PgSchema>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch::on(Backend::Sqlite)
    }

    pub fn on(backend: Backend) -> Scratch {
        let pg = (backend == Backend::Postgres).then(PgSchema::new);
        Scratch { dir: tempfile::tempdir().unwrap(), backend, pg }
    }

    pub fn db_path(&self) -> PathBuf {
        assert_eq!(self.backend, Backend::Sqlite, "db_path is for SQLite stores");
        self.dir.path().join("store.db")
    }

    pub fn db(&self) -> String {
        match &self.pg {
            Some(schema) => schema.url(),
            None => format!("sqlite:{}", self.db_path().display()),
        }
    }

    pub fn dead_letter_path(&self) -> PathBuf {
        match self.backend {
            Backend::Sqlite => self.dir.path().join("store.db.deadletter.jsonl"),
            Backend::Postgres => self.dir.path().join("complyd.deadletter.jsonl"),
        }
    }

    /// Runs `complyd ARGS --db <store>` with `stdin`, in the scratch dir.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_complyd"));
        cmd.args(args)
            .arg("--db")
            .arg(self.db())
            .current_dir(self.dir.path())
            .env_remove("COMPLYD_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("complyd runs");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `complyd ARGS --db <store>` in the scratch dir, for the caller to
    /// give an environment, then run or spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_complyd"));
        cmd.args(args).arg("--db").arg(self.db()).current_dir(self.dir.path()).env_remove("COMPLYD_LOG");
        cmd
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "complyd {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn import(&self, lines: &[String]) -> String {
        self.import_stderr(lines)
    }

    /// Imports lines from stdin-like content via a file; returns stderr summary.
    pub fn import_stderr(&self, lines: &[String]) -> String {
        let path = self.dir.path().join("import.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let out = self.run(&["import", path.to_str().unwrap()], "");
        assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    }

    /// Replays messages from stdin (`-`), `\r\n`-separated like the stream.
    pub fn replay(&self, lines: &[String]) -> String {
        let out = self.run(&["replay", "-"], &(lines.join("\r\n") + "\r\n"));
        assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn visible(&self, id: u64, country: Option<&str>) -> bool {
        let id_s = id.to_string();
        let mut args = vec!["check"];
        if let Some(c) = country {
            args.extend(["--country", c]);
        }
        args.push(&id_s);
        let out = self.ok(&args, "");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["id"], id_s);
        v["visible"].as_bool().unwrap()
    }

    pub fn export(&self, country: Option<&str>) -> Vec<String> {
        let mut args = vec!["export"];
        if let Some(c) = country {
            args.extend(["--country", c]);
        }
        self.ok(&args, "").lines().map(str::to_owned).collect()
    }

    /// Ids of the exported posts, in output order.
    pub fn export_ids(&self, country: Option<&str>) -> Vec<u64> {
        self.export(country)
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let id = v.get("id_str").or_else(|| v.pointer("/data/id")).or_else(|| v.get("id")).unwrap();
                id.as_str().map(|s| s.parse().unwrap()).unwrap_or_else(|| id.as_u64().unwrap())
            })
            .collect()
    }

    /// Every stored post's JSON, concatenated (`Store::scan`): what the
    /// store keeps, on either backend, whatever its answers show.
    pub fn stored_json(&self) -> String {
        let mut st = complyd::store::open(&self.db()).unwrap();
        let mut stored = String::new();
        st.scan(&mut |row| {
            stored.push_str(row.json);
            Ok(())
        })
        .unwrap();
        stored
    }
}

/// The files in `dir` whose names start with `prefix` and whose bytes hold
/// `words` anywhere: withdrawn content searched for where a file reader
/// would find it, not only in the store's answers.
pub fn files_holding(dir: &std::path::Path, prefix: &str, words: &str) -> Vec<PathBuf> {
    let words = words.as_bytes();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .filter(|p| std::fs::read(p).unwrap().windows(words.len()).any(|w| w == words))
        .collect()
}

// Builders for the lines the tests feed in.

pub fn post(id: u64, user: u64) -> String {
    format!(r#"{{"id":{id},"id_str":"{id}","user":{{"id":{user},"id_str":"{user}"}},"text":"post {id}"}}"#)
}

pub fn geo_post(id: u64, user: u64) -> String {
    format!(
        r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"geo {id}","coordinates":{{"type":"Point","coordinates":[1.0,2.0]}},"geo":{{"type":"Point","coordinates":[2.0,1.0]}},"place":{{"full_name":"Somewhere"}}}}"#
    )
}

pub fn retweet(id: u64, user: u64, of: u64, of_user: u64) -> String {
    format!(
        r#"{{"id_str":"{id}","user":{{"id_str":"{user}"}},"text":"RT","retweeted_status":{{"id_str":"{of}","user":{{"id_str":"{of_user}"}},"text":"post {of}"}}}}"#
    )
}

pub fn status_msg(kind: &str, id: u64, user: u64, t: i64) -> String {
    format!(
        r#"{{"{kind}":{{"status":{{"id":{id},"id_str":"{id}","user_id":{user},"user_id_str":"{user}"}},"timestamp_ms":"{t}"}}}}"#
    )
}

pub fn delete(id: u64, user: u64, t: i64) -> String {
    status_msg("delete", id, user, t)
}

pub fn status_withheld(id: u64, user: u64, countries: &[&str], t: i64) -> String {
    let cs: Vec<String> = countries.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"{{"status_withheld":{{"status":{{"id_str":"{id}","user_id_str":"{user}"}},"withheld_in_countries":[{}],"timestamp_ms":"{t}"}}}}"#,
        cs.join(",")
    )
}

pub fn user_msg(kind: &str, user: u64, t: i64) -> String {
    format!(r#"{{"{kind}":{{"id":{user},"timestamp_ms":"{t}"}}}}"#)
}

pub fn user_withheld(user: u64, countries: &[&str], t: i64) -> String {
    let cs: Vec<String> = countries.iter().map(|c| format!("\"{c}\"")).collect();
    let iso = chrono_iso(t);
    format!(
        r#"{{"user_withheld":{{"user":{{"id":{user},"id_str":"{user}"}},"withheld_in_countries":[{}],"timestampMs":"{iso}"}}}}"#,
        cs.join(",")
    )
}

pub fn scrub_geo(user: u64, up_to: u64, t: i64) -> String {
    format!(
        r#"{{"scrub_geo":{{"user_id":{user},"user_id_str":"{user}","up_to_status_id":{up_to},"up_to_status_id_str":"{up_to}","timestamp_ms":"{t}"}}}}"#
    )
}

pub fn tweet_edit(newest: u64, chain: &[u64], t: i64) -> String {
    let ids: Vec<String> = chain.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"{{"tweet_edit":{{"id":"{newest}","initial_tweet_id":"{}","edit_tweet_ids":[{}],"timestamp_ms":"{t}"}}}}"#,
        chain[0],
        ids.join(",")
    )
}

pub fn favorite_delete(user: u64, post: u64, t: i64) -> String {
    format!(
        r#"{{"delete":{{"favorite":{{"tweet_id":{post},"tweet_id_str":"{post}","user_id":{user},"user_id_str":"{user}"}},"timestamp_ms":"{t}"}}}}"#
    )
}

/// Milliseconds to the `2014-08-27T23:49:41.839+00:00` form of `timestampMs`.
pub fn chrono_iso(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t).unwrap().format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string()
}

/// Generates, for each `fn name(backend: Backend)`, a test `sqlite::name` and
/// a test `postgres::name`. The PostgreSQL ones are ignored by a bare
/// `cargo test` (they are listed as ignored, never counted as passed);
/// `scripts/test.sh` and CI run them with `--include-ignored`, and there a
/// missing server fails them loudly.
#[macro_export]
macro_rules! on_both_backends {
    ($($f:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $f() { super::$f($crate::common::Backend::Sqlite) } )*
        }
        mod postgres {
            $(
                #[test]
                #[ignore = "needs PostgreSQL: `bash scripts/test.sh` runs it"]
                fn $f() { super::$f($crate::common::Backend::Postgres) }
            )*
        }
    };
}
