//! The actors of the daemon (`complyd run`): supervisor, partition streams,
//! router, status handler and user handler. See `docs/ARCHITECTURE.md`.
//!
//! ```text
//! Supervisor (backoff per class, restart intensity, one ConnectLimiter)
//!   -> PartitionStream x N (awc GET, gzip, \r\n framing, idle timeout, parse, batch)
//!        -> Router (send().await: backpressure)
//!             -> StatusHandler (own store connection, own transactions)
//!             -> UserHandler   (own store connection, own transactions, maintenance)
//! ```
//!
//! They record what they do in [`crate::health`], the state they share with
//! the HTTP endpoints and the demo.

mod commit;
pub mod gap_keeper;
pub mod partition;
pub mod replayer;
pub mod router;
pub mod status_handler;
pub mod supervisor;
pub mod user_handler;
