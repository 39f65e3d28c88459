//! Configuration: a TOML file (`config/complyd.toml` documents every key),
//! overridden by environment variables (`COMPLYD_STORE__URL` sets
//! `store.url`). Unknown keys are refused; every problem is reported at once.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the config is read from when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "config/complyd.toml";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub store: StoreSettings,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
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
        match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Some(path) => PathBuf::from(format!("{path}.deadletter.jsonl")),
            None => PathBuf::from("complyd.deadletter.jsonl"),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the configuration:\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl Settings {
    /// Loads `path` (or [`DEFAULT_CONFIG`] when present, or the defaults),
    /// then the `COMPLYD_*` environment overrides.
    ///
    /// # Errors
    /// [`ConfigErrors`] naming the file, the key and the problem.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
        let mut b = config::Config::builder();
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigErrors(vec![format!("{}: no such config file", p.display())]));
                }
                b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
            }
            None if Path::new(DEFAULT_CONFIG).exists() => {
                b = b.add_source(config::File::from(Path::new(DEFAULT_CONFIG)).format(config::FileFormat::Toml));
            }
            None => {}
        }
        b = b.add_source(config::Environment::with_prefix("COMPLYD").separator("__").try_parsing(true));
        let cfg = b.build().map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        cfg.try_deserialize::<Settings>().map_err(|e| ConfigErrors(vec![e.to_string()]))
    }
}
