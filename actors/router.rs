//! The router: splits each partition batch into its status part and its user
//! part and hands each to its own handler.
//!
//! Each handler has a *lane*: at most one transaction at the handler, and
//! the parts that arrive meanwhile wait in the lane and are merged into the
//! next transaction (group commit: one transaction covers several partition
//! batches, each partition's position committed with it). A lane holds at
//! most `handlers.in_flight x batch.max_events` waiting events; past that
//! the router waits, and so does the partition that sent the batch: a slow
//! store slows the readers, and memory stays bounded. A [`Batch`] is
//! answered as soon as both parts are in their lanes, so the two handlers
//! never wait on each other (a slow user handler holds back status commits
//! only once its own lane is full).
//!
//! The handlers run on their own threads (SyncArbiter); they are only talked
//! to with request/response `send`, never `do_send`: their mailboxes are
//! unbounded, the lanes are what bounds them.

use super::commit::{HandlerError, Job, PartInfo};
use super::status_handler::{ApplyStatus, StatusHandler};
use super::user_handler::{ApplyUser, Maintain, UserHandler};
use crate::event::{StatusEvents, TimeMs, UserEvents};
use crate::health::Health;
use crate::store::{ApplyStats, Position};
use actix::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// Parsed events of one partition, with its position.
#[derive(Debug)]
pub struct Batch {
    /// 0: events of no partition's stream (a replay), committed without a
    /// position.
    pub partition: u8,
    pub status: StatusEvents,
    pub user: UserEvents,
    /// The largest event time of the batch.
    pub last_event_ms: TimeMs,
    /// Wall time the last byte of the batch was received.
    pub last_byte_ms: TimeMs,
    /// When the oldest event of the batch was received.
    pub received: Instant,
    /// Told whether both parts were committed (the replayer waits on it).
    pub committed: Option<oneshot::Sender<bool>>,
}

impl Message for Batch {
    /// Answered once both handlers have accepted their parts.
    type Result = ();
}

/// Waits until every accepted batch is committed (or given up on).
#[derive(Debug)]
pub struct Drain;

impl Message for Drain {
    type Result = ();
}

/// The events a lane holds for its handler.
trait Queue: Default + 'static {
    fn len(&self) -> usize;
    /// Moves all of `other`'s events to the end of this queue.
    fn append(&mut self, other: &mut Self);
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Queue for StatusEvents {
    fn len(&self) -> usize {
        StatusEvents::len(self)
    }
    fn append(&mut self, other: &mut Self) {
        StatusEvents::append(self, other);
    }
}

impl Queue for UserEvents {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn append(&mut self, other: &mut Self) {
        Vec::append(self, other);
    }
}

/// How a lane reaches its handler.
trait Sink<Q>: 'static {
    /// Sends a job (enqueued at once, in call order) and resolves with its
    /// outcome.
    fn submit(
        &self,
        job: Job<Q>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ApplyStats, HandlerError>>>>;
}

impl Sink<StatusEvents> for Addr<StatusHandler> {
    fn submit(
        &self,
        job: Job<StatusEvents>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ApplyStats, HandlerError>>>> {
        let req = self.send(ApplyStatus { job });
        Box::pin(async move { req.await.map_err(HandlerError::from).and_then(|r| r) })
    }
}

impl Sink<UserEvents> for Addr<UserHandler> {
    fn submit(
        &self,
        job: Job<UserEvents>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ApplyStats, HandlerError>>>> {
        let req = self.send(ApplyUser { job });
        Box::pin(async move { req.await.map_err(HandlerError::from).and_then(|r| r) })
    }
}

/// The parts waiting for one handler.
struct Lane<Q> {
    name: &'static str,
    events: Q,
    positions: BTreeMap<u8, Position>,
    parts: Vec<PartInfo>,
    /// Told whether the transaction holding their parts committed.
    waiters: Vec<oneshot::Sender<bool>>,
    /// A transaction is at the handler.
    busy: bool,
    /// Most events waiting (a part larger than this still goes alone).
    cap: usize,
    /// A transaction was given up on (only during a shutdown): no later one
    /// is tried, since its positions would pass the one given up on, whose
    /// events would then be in no gap.
    given_up: bool,
}

type LaneRef<Q> = Rc<RefCell<Lane<Q>>>;

/// Wakes the batches waiting for room, and the drain.
struct Signals {
    room: Notify,
    idle: Notify,
}

impl<Q: Queue> Lane<Q> {
    fn new(name: &'static str, cap: usize) -> LaneRef<Q> {
        Rc::new(RefCell::new(Lane {
            name,
            events: Q::default(),
            positions: BTreeMap::new(),
            parts: Vec::new(),
            waiters: Vec::new(),
            busy: false,
            cap: cap.max(1),
            given_up: false,
        }))
    }

    fn is_idle(&self) -> bool {
        !self.busy && self.events.is_empty() && self.parts.is_empty()
    }
}

/// One handler's share of a batch.
struct Part<Q> {
    events: Q,
    /// Partition 0: no position (replayed events).
    position: Position,
    received: Instant,
    /// Told whether the transaction holding it committed.
    done: Option<oneshot::Sender<bool>>,
}

/// Puts one part in its lane, waiting for room; then starts a transaction
/// if the handler is free.
async fn enqueue<Q: Queue>(
    lane: LaneRef<Q>,
    sink: Rc<dyn Sink<Q>>,
    signals: Rc<Signals>,
    health: Arc<Health>,
    part: Part<Q>,
) {
    let Part { mut events, position, received, done } = part;
    let info = PartInfo { partition: position.partition, events: events.len(), received };
    loop {
        {
            let mut l = lane.borrow_mut();
            if l.events.is_empty() || l.events.len() + events.len() <= l.cap {
                if l.events.is_empty() {
                    l.events = std::mem::take(&mut events);
                } else {
                    l.events.append(&mut events);
                }
                if position.partition != 0 {
                    let p = l.positions.entry(position.partition).or_insert(position);
                    p.last_event_ms = p.last_event_ms.max(position.last_event_ms);
                    p.last_byte_ms = p.last_byte_ms.max(position.last_byte_ms);
                }
                l.parts.push(info);
                l.waiters.extend(done);
                break;
            }
        }
        signals.room.notified().await;
    }
    kick(lane, sink, signals, health);
}

/// Starts the next transaction of a lane if its handler is free.
fn kick<Q: Queue>(lane: LaneRef<Q>, sink: Rc<dyn Sink<Q>>, signals: Rc<Signals>, health: Arc<Health>) {
    let job = {
        let mut l = lane.borrow_mut();
        if l.busy || l.parts.is_empty() {
            return;
        }
        l.busy = true;
        (
            Job {
                events: std::mem::take(&mut l.events),
                positions: std::mem::take(&mut l.positions).into_values().collect(),
                parts: std::mem::take(&mut l.parts),
            },
            std::mem::take(&mut l.waiters),
        )
    };
    let (job, waiters) = job;
    // Room again: the waiting parts form the next transaction.
    signals.room.notify_waiters();
    let n = job.events.len();
    let partitions: Vec<u8> = job.positions.iter().map(|p| p.partition).collect();
    let (name, given_up) = (lane.borrow().name, lane.borrow().given_up);
    let abandon = move |health: &Health| {
        let c = if name == "status" { &health.status } else { &health.user };
        c.abandoned.fetch_add(n as u64, Ordering::Relaxed);
    };
    if given_up {
        for w in waiters {
            let _ = w.send(false);
        }
        abandon(&health);
        tracing::error!(
            handler = name,
            partitions = ?partitions,
            events = n,
            "Data not committed: an earlier transaction of this handler was given up on, so this one is not tried (its positions would pass that one's); the restart's gap covers both"
        );
        release(lane, sink, signals, health);
        return;
    }
    let outcome = sink.submit(job);
    actix::spawn(async move {
        let r = outcome.await;
        for w in waiters {
            let _ = w.send(r.is_ok());
        }
        if let Err(e) = &r {
            abandon(&health);
            lane.borrow_mut().given_up = true;
            tracing::error!(
                handler = name,
                partitions = ?partitions,
                events = n,
                error = %e,
                "Data not committed: a transaction was given up on; its positions were not committed, so the gap is known"
            );
        }
        release(lane, sink, signals, health);
    });
}

/// A transaction is done with (committed, given up on, or not tried): the
/// next one may start, and the drain hears when nothing is left.
fn release<Q: Queue>(lane: LaneRef<Q>, sink: Rc<dyn Sink<Q>>, signals: Rc<Signals>, health: Arc<Health>) {
    lane.borrow_mut().busy = false;
    kick(lane.clone(), sink, signals.clone(), health);
    if lane.borrow().is_idle() {
        signals.idle.notify_waiters();
    }
}

pub struct Router {
    status_sink: Rc<dyn Sink<StatusEvents>>,
    user: Addr<UserHandler>,
    user_sink: Rc<dyn Sink<UserEvents>>,
    status_lane: LaneRef<StatusEvents>,
    user_lane: LaneRef<UserEvents>,
    signals: Rc<Signals>,
    health: Arc<Health>,
    maintain_every: Duration,
    maintain_busy: Arc<AtomicBool>,
}

impl Router {
    /// `lane_events`: the most events waiting per handler
    /// (`handlers.in_flight x batch.max_events`).
    pub fn new(
        status: Addr<StatusHandler>,
        user: Addr<UserHandler>,
        lane_events: usize,
        health: Arc<Health>,
        maintain_every: Duration,
    ) -> Router {
        Router {
            status_sink: Rc::new(status),
            user_sink: Rc::new(user.clone()),
            user,
            status_lane: Lane::new("status", lane_events),
            user_lane: Lane::new("user", lane_events),
            signals: Rc::new(Signals { room: Notify::new(), idle: Notify::new() }),
            health,
            maintain_every,
            maintain_busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts one maintenance pass on the user handler's thread (between
    /// its transactions), unless one is running.
    fn maintain(&mut self) {
        if self.maintain_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let user = self.user.clone();
        let busy = self.maintain_busy.clone();
        let health = self.health.clone();
        actix::spawn(async move {
            match user.send(Maintain).await {
                Ok(Ok(m)) if m.users_purged + m.posts_geo_scrubbed + m.posts_purged + m.copies_removed > 0 => {
                    tracing::info!(
                        users_purged = m.users_purged,
                        posts_purged = m.posts_purged,
                        posts_geo_scrubbed = m.posts_geo_scrubbed,
                        copies_removed = m.copies_removed,
                        pending = m.pending,
                        "Maintenance pass done"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "Maintenance pass failed; retrying at the next interval"),
                Err(e) => tracing::debug!(error = %e, "Maintenance skipped: the user handler is gone"),
            }
            health.maintenance_runs.fetch_add(1, Ordering::Relaxed);
            busy.store(false, Ordering::Release);
        });
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        ctx.run_interval(self.maintain_every, |act, _| act.maintain());
    }
}

impl Handler<Batch> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, b: Batch, _ctx: &mut Self::Context) -> Self::Result {
        let position =
            Position { partition: b.partition, last_event_ms: b.last_event_ms, last_byte_ms: b.last_byte_ms };
        let (sl, ul) = (self.status_lane.clone(), self.user_lane.clone());
        let (ss, us) = (self.status_sink.clone(), self.user_sink.clone());
        let (signals, health) = (self.signals.clone(), self.health.clone());
        Box::pin(async move {
            let Batch { status, user, received, committed, .. } = b;
            let (mut done_s, mut done_u) = (None, None);
            let waiter = |slot: &mut Option<oneshot::Receiver<bool>>| {
                committed.is_some().then(|| {
                    let (tx, rx) = oneshot::channel();
                    *slot = Some(rx);
                    tx
                })
            };
            if !status.is_empty() {
                let part = Part { events: status, position, received, done: waiter(&mut done_s) };
                enqueue(sl, ss, signals.clone(), health.clone(), part).await;
            }
            if !user.is_empty() {
                let part = Part { events: user, position, received, done: waiter(&mut done_u) };
                enqueue(ul, us, signals, health, part).await;
            }
            if let Some(committed) = committed {
                actix::spawn(async move {
                    let mut ok = true;
                    for rx in [done_s, done_u].into_iter().flatten() {
                        ok &= matches!(rx.await, Ok(true));
                    }
                    let _ = committed.send(ok);
                });
            }
        })
    }
}

impl Handler<Drain> for Router {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _ctx: &mut Self::Context) -> Self::Result {
        let (sl, ul, signals) = (self.status_lane.clone(), self.user_lane.clone(), self.signals.clone());
        Box::pin(async move {
            loop {
                let idle = signals.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if sl.borrow().is_idle() && ul.borrow().is_idle() {
                    return;
                }
                idle.await;
            }
        })
    }
}

/// Stops the router (after [`Drain`]); the handlers' threads end once their
/// addresses are gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Router {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Timed, UserEvent};

    /// Answers each job with the next outcome handed to it by the test, and
    /// keeps the jobs it was sent.
    struct Scripted {
        sent: Rc<RefCell<Vec<Vec<u8>>>>,
        outcomes: RefCell<Vec<oneshot::Receiver<bool>>>,
    }

    impl Sink<UserEvents> for Scripted {
        fn submit(
            &self,
            job: Job<UserEvents>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ApplyStats, HandlerError>>>> {
            self.sent.borrow_mut().push(job.positions.iter().map(|p| p.partition).collect());
            let outcome = self.outcomes.borrow_mut().remove(0);
            Box::pin(async move {
                match outcome.await {
                    Ok(true) => Ok(ApplyStats::default()),
                    _ => Err(HandlerError::Gone(actix::MailboxError::Closed)),
                }
            })
        }
    }

    fn part(partition: u8, at: TimeMs) -> (Part<UserEvents>, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let events = vec![Timed { time_ms: at, event: UserEvent::Protect { user_id: 1 } }];
        let position = Position { partition, last_event_ms: at, last_byte_ms: at };
        (Part { events, position, received: Instant::now(), done: Some(tx) }, rx)
    }

    /// Found by a review: during a shutdown a transaction is given up on
    /// (its store kept failing), and the next one of the same handler,
    /// holding later batches of the same partition, committed once the
    /// store came back: its position passed the batch given up on, whose
    /// events were then in no gap after the restart. Now no later
    /// transaction of that handler is tried.
    #[actix_rt::test]
    async fn after_a_transaction_given_up_on_no_later_one_commits_a_position_past_it() {
        let (first, first_outcome) = oneshot::channel();
        let (second, second_outcome) = oneshot::channel();
        let sent = Rc::new(RefCell::new(Vec::new()));
        let sink: Rc<dyn Sink<UserEvents>> =
            Rc::new(Scripted { sent: sent.clone(), outcomes: RefCell::new(vec![first_outcome, second_outcome]) });
        let lane: LaneRef<UserEvents> = Lane::new("user", 1_000);
        let signals = Rc::new(Signals { room: Notify::new(), idle: Notify::new() });
        let health = Arc::new(Health::new(&[3]));
        let (a, a_done) = part(3, 1_000);
        enqueue(lane.clone(), sink.clone(), signals.clone(), health.clone(), a).await;
        // The batch after it waits in the lane while the first is at the handler.
        let (b, b_done) = part(3, 2_000);
        enqueue(lane.clone(), sink.clone(), signals.clone(), health.clone(), b).await;
        assert_eq!(sent.borrow().len(), 1);
        first.send(false).unwrap();
        let within = |rx: oneshot::Receiver<bool>| async move {
            tokio::time::timeout(Duration::from_secs(5), rx).await.expect("answered").unwrap()
        };
        assert!(!within(a_done).await, "the first is given up on");
        // The store is back: it would commit the second if it were sent.
        let _ = second.send(true);
        assert!(!within(b_done).await, "the second is not committed either");
        assert_eq!(sent.borrow().len(), 1, "no later transaction reaches the handler: {:?}", sent.borrow());
        assert_eq!(health.user.abandoned.load(Ordering::Relaxed), 2);
        assert!(lane.borrow().is_idle(), "the drain still ends");
        // Later batches likewise.
        let (c, c_done) = part(3, 3_000);
        enqueue(lane.clone(), sink, signals, health.clone(), c).await;
        assert!(!within(c_done).await);
        assert_eq!((sent.borrow().len(), health.user.abandoned.load(Ordering::Relaxed)), (1, 3));
    }
}
