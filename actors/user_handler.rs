//! The user handler: applies user events (user_delete/undelete,
//! protect/unprotect, suspend/unsuspend, user_withheld, scrub_geo) with its
//! own store connection, in its own transactions, each committed together
//! with the partition's position. It owns the user state and never reads or
//! writes status state. A user event costs the same whatever the number of
//! the user's posts.
//!
//! Between batches it also runs the per-post work kept off the event path
//! ([`Maintain`]: 30-day purges and geo removal after `scrub_geo`), bounded
//! per pass.
//!
//! Runs on its own thread (`SyncArbiter`, one thread). Talk to it only with
//! `send(..).await`.

use super::commit::{commit_with_retry, HandlerError, Job, StoreSlot};
use crate::clock::now_ms;
use crate::event::UserEvents;
use crate::health::Health;
use crate::store::{ApplyStats, HandlerKind, MaintenanceStats, Store, StoreUrl};
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// A user transaction: the user parts of one or more partition batches.
#[derive(Debug)]
pub struct ApplyUser {
    pub job: Job<UserEvents>,
}

impl Message for ApplyUser {
    type Result = Result<ApplyStats, HandlerError>;
}

/// One bounded maintenance pass.
#[derive(Debug)]
pub struct Maintain;

impl Message for Maintain {
    type Result = Result<MaintenanceStats, HandlerError>;
}

pub struct UserHandler {
    store: StoreSlot,
    health: Arc<Health>,
    retry: Duration,
    maintain_max_users: usize,
}

impl UserHandler {
    pub fn new(
        url: StoreUrl,
        store: Option<Box<dyn Store>>,
        health: Arc<Health>,
        retry: Duration,
        maintain_max_users: usize,
    ) -> UserHandler {
        UserHandler { store: StoreSlot::new(url, store), health, retry, maintain_max_users }
    }
}

impl Actor for UserHandler {
    type Context = SyncContext<Self>;
}

impl Handler<ApplyUser> for UserHandler {
    type Result = Result<ApplyStats, HandlerError>;

    fn handle(&mut self, msg: ApplyUser, _ctx: &mut Self::Context) -> Self::Result {
        let job = msg.job;
        commit_with_retry(
            HandlerKind::User,
            &mut self.store,
            &self.health,
            self.retry,
            &job.positions,
            &job.parts,
            |s| s.apply_user(&job.events, &job.positions),
        )
    }
}

impl Handler<Maintain> for UserHandler {
    type Result = Result<MaintenanceStats, HandlerError>;

    fn handle(&mut self, _: Maintain, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.get()?;
        Ok(store.maintain(now_ms(), self.maintain_max_users)?)
    }
}
