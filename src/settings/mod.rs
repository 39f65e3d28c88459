//! Configuration, in three steps, each in its own file:
//!
//! 1. [`file`]: the file as written ([`Settings`], every section of
//!    `config/complyd.toml` with its default);
//! 2. [`load`](mod@load): reading it, the TOML file then `COMPLYD_SECTION__KEY`
//!    environment overrides (`COMPLYD_STORE__URL` sets `store.url`), every
//!    unknown key and value of the wrong type listed at once;
//! 3. [`plan`](mod@plan): checking it once and turning it into the typed
//!    [`Plan`] the daemon runs on, or the [`StorePlan`] of an offline command.
//!
//! Secrets ([`secret`]) are never flags and never printed. Every problem is
//! reported at once, in one [`ConfigErrors`].

pub mod file;
pub mod load;
pub mod plan;
pub mod secret;

pub use file::{
    BackoffSettings, BatchJobSettings, BatchSettings, HandlerSettings, HttpSettings, LimiterSettings, LogFormat,
    LogSettings, ReplaySettings, RestartSettings, Settings, ShutdownSettings, StoreSettings, StreamSettings,
    DEFAULT_BEARER_TOKEN_ENV, DEFAULT_PASSWORD_ENV,
};
pub use plan::{BatchJobPlan, HandlerPlan, HttpPlan, LimiterPlan, Plan, ReplayPlan, StorePlan, StreamPlan};
pub use secret::Secret;

/// Where the config is read from when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "config/complyd.toml";

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the configuration:\n  - {}", .0.len(), .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

#[cfg(test)]
mod tests;
