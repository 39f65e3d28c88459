//! Helpers shared by the integration tests: a scratch store driven through
//! the real `complyd` binary, exactly as a user would.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

pub const DAY_MS: i64 = 24 * 3600 * 1000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A scratch directory with an SQLite store in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    pub fn db(&self) -> String {
        format!("sqlite:{}", self.db_path().display())
    }

    pub fn dead_letter_path(&self) -> PathBuf {
        self.dir.path().join("store.db.deadletter.jsonl")
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
    format!(r#"{{"{kind}":{{"status":{{"id":{id},"id_str":"{id}","user_id":{user},"user_id_str":"{user}"}},"timestamp_ms":"{t}"}}}}"#)
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
