//! Configuration shared by every command: the store section and the error
//! type that lists every problem at once. The whole file is
//! [`crate::daemon_settings::DaemonSettings`] (`config/complyd.toml`
//! documents every key); environment variables override any key
//! (`COMPLYD_STORE__URL` sets `store.url`); unknown keys are refused.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the config is read from when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "config/complyd.toml";

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite:PATH` or `postgres://...`.
    pub url: String,
    /// Where bad lines go; default: beside the store (`PATH.deadletter.jsonl`).
    pub dead_letter: Option<PathBuf>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings { url: "sqlite:complyd.db".to_owned(), dead_letter: None }
    }
}

impl StoreSettings {
    /// The dead-letter path for the store at `url`.
    pub fn dead_letter_for(&self, url: &str) -> PathBuf {
        if let Some(p) = &self.dead_letter {
            return p.clone();
        }
        beside_store(url, "deadletter.jsonl")
    }
}

/// A file kept beside the store: `PATH.<suffix>` for `sqlite:PATH`, else
/// `complyd.<suffix>` in the working directory.
pub fn beside_store(url: &str, suffix: &str) -> PathBuf {
    match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        Some(path) if !path.is_empty() => PathBuf::from(format!("{path}.{suffix}")),
        _ => PathBuf::from(format!("complyd.{suffix}")),
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the configuration:\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);
