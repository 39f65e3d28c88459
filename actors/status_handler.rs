//! The status handler: applies post events (delete, status_withheld, drop,
//! undrop, tweet_edit, the like-delete) with its own store connection, in its
//! own transactions, each committed together with the partition's position.
//! It owns the status state and never reads or writes user state.
//!
//! Runs on its own thread (`SyncArbiter`, one thread): the store is blocking.
//! Talk to it only with `send(..).await` (its mailbox is unbounded; the
//! router bounds what is in flight).

use super::commit::{commit_with_retry, HandlerError, Job, StoreSlot};
use crate::event::StatusEvents;
use crate::health::Health;
use crate::store::{ApplyStats, HandlerKind, Store, StoreUrl};
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// A status transaction: the status parts of one or more partition batches.
#[derive(Debug)]
pub struct ApplyStatus {
    pub job: Job<StatusEvents>,
}

impl Message for ApplyStatus {
    /// The transaction's effect; an error only when the daemon shuts down
    /// while the store keeps failing.
    type Result = Result<ApplyStats, HandlerError>;
}

pub struct StatusHandler {
    store: StoreSlot,
    health: Arc<Health>,
    retry: Duration,
}

impl StatusHandler {
    /// `store` is this handler's own connection (opened by the caller so
    /// that a bad store fails the start; reopened from `url` if lost).
    pub fn new(url: StoreUrl, store: Option<Box<dyn Store>>, health: Arc<Health>, retry: Duration) -> StatusHandler {
        StatusHandler { store: StoreSlot::new(url, store), health, retry }
    }
}

impl Actor for StatusHandler {
    type Context = SyncContext<Self>;
}

impl Handler<ApplyStatus> for StatusHandler {
    type Result = Result<ApplyStats, HandlerError>;

    fn handle(&mut self, msg: ApplyStatus, _ctx: &mut Self::Context) -> Self::Result {
        let job = msg.job;
        commit_with_retry(
            HandlerKind::Status,
            &mut self.store,
            &self.health,
            self.retry,
            &job.positions,
            &job.parts,
            |s| s.apply_status(&job.events, &job.positions),
        )
    }
}
