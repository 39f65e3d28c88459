//! What the simulator's request handlers share ([`Ctx`]), and its JSON
//! error body: the server routes requests, and the stream and replay
//! connections it starts use these, never the server itself.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::config::SimConfig;
use super::fault::FaultBoard;
use super::gen::{iso_seconds, Generator};
use super::gz::Piece;
use super::limiter::Limiter;
use super::producer::Registration;
use super::record::Recorder;
use super::stats::Stats;
use crate::clock::now_ms;

/// Everything the request handlers share.
pub(crate) struct Ctx {
    pub cfg: SimConfig,
    pub gen: Arc<Generator>,
    pub faults: FaultBoard,
    pub stats: Arc<Stats>,
    pub recorder: Option<Recorder>,
    pub stream_limit: Limiter,
    pub replay_limit: Limiter,
    pub regs: mpsc::UnboundedSender<Registration>,
    pub heartbeat: Piece,
    /// The batch compliance jobs created so far.
    pub jobs: super::jobs::Jobs,
}

/// `{"error":{"message":"...","sent":"..."}}`
pub(crate) fn error_json(message: &str) -> String {
    let m = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".into());
    format!("{{\"error\":{{\"message\":{m},\"sent\":\"{}\"}}}}", iso_seconds(now_ms()))
}
