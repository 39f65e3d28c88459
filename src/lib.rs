//! complyd keeps a stored dataset of X posts compliant with the X Compliance
//! Firehose. See README.md (commands), `docs/rules.md` (rules), `docs/ARCHITECTURE.md` (code map).
//!
//! Domain modules (pure or blocking, no actix): [`event`], [`framing`],
//! [`post`], [`rules`], [`store`], [`deadletter`], [`settings`],
//! [`commands`]. The actors live in `actors/` and use these, never the other
//! way round. [`tls`] builds every outgoing connection's TLS and HTTP client.

pub mod backoff;
pub mod batch_job;
pub mod clock;
pub mod commands;
pub mod daemon;
pub mod deadletter;
pub mod event;
pub mod files;
pub mod framing;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzz;
pub mod gaps;
pub mod health;
pub mod http;
pub mod inflate;
pub mod limiter;
pub mod logging;
pub mod post;
pub mod progress;
pub mod rules;
pub mod settings;
pub mod sim;
pub mod store;
pub mod tls;

#[path = "../actors/mod.rs"]
pub mod actors;
