//! What both backends share: the read query behind `facts` and `scan`, the
//! schema moves' accounting ([`Reread`]), and
//! the decoding of state columns into the rules' values, over a minimal
//! column-access trait that rusqlite and postgres rows both implement.

use super::{id_of, ScanRow, StoreError};
use crate::batch_job::{BatchJob, BatchType, Source, Stage};
use crate::event::Id;
use crate::gaps::{Gap, GapCause, GapEvent, GapState, Repair};
use crate::post::{Embeds, Form, NewPost, Relisted};
use crate::rules::embedded::{judged_by_own_facts, Facts as EmbeddedFacts};
use crate::rules::status::StatusState;
use crate::rules::user::UserState;
use crate::rules::visibility::{Facts, PostView};
use crate::rules::{countries_from_text, Toggle};
use std::collections::HashMap;

/// Typed access to the columns of one result row.
pub(crate) trait Cols {
    fn i64_opt(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn text_opt(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// A boolean expression (`x IS NOT NULL`) or a boolean/0-1 column.
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
    /// The post's JSON (column 4 of [`SCAN_SELECT`]), without copying where
    /// the backend allows.
    fn text(&self, i: usize) -> Result<&str, StoreError>;
}

/// Of `(post key, its author's scrub_up_to key)` rows, the posts the scrub
/// covers (a move's scrubbed step).
pub(crate) fn scrub_covered(rows: &[(i64, i64)]) -> Vec<i64> {
    rows.iter()
        .filter(|(id, up_to)| crate::rules::user::scrub_covers(super::id_of(*up_to), super::id_of(*id)))
        .map(|(id, _)| *id)
        .collect()
}

/// Where a store's move goes on from: its step and the next key.
pub(crate) type MoveMark = (&'static str, i64);

/// Where a move's withdraw step `steps[at]` goes on after a batch whose last
/// key was `last` (`None`: the batch was empty): the key after it, else the
/// next step from its start, else `None` (the move is done).
pub(crate) fn withdraw_next(steps: &[&'static str], at: usize, last: Option<i64>) -> Option<MoveMark> {
    let later = steps.get(at + 1).map(|s| (*s, i64::MIN));
    last.and_then(|l| l.checked_add(1)).map(|next| (steps[at], next)).or(later)
}

/// How a schema move reads the stored posts: `rows` posts a transaction,
/// and (for a test's cut) at most `stop_after` transactions in this process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MoveBatches {
    pub rows: i64,
    pub stop_after: Option<u64>,
}

impl Default for MoveBatches {
    fn default() -> Self {
        MoveBatches { rows: 10_000, stop_after: None }
    }
}

impl MoveBatches {
    /// Whether a test's cut stops the move after `done` transactions.
    pub fn cut(&self, done: u64) -> bool {
        self.stop_after.is_some_and(|n| done >= n)
    }
}

/// A progress line every this many transactions of a move (10^6 posts).
const MOVE_PROGRESS_EVERY: u64 = 100;

/// What a schema move's re-reading of the stored posts found
/// (`reread_batch` in each store), and the carrier links it made: kept
/// with the move's progress in the store, so that a move done over several
/// opens reports all of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reread {
    /// Rows read.
    pub read: u64,
    /// Rows imported again: their JSON carries what they did not list.
    pub again: u64,
    /// Rows whose JSON no longer reads as a post, now listed as unreadable.
    pub unreadable: u64,
    /// Carrier links made.
    pub links: u64,
}

impl Reread {
    /// Reads one stored row ([`crate::post::relisted`]): the posts to
    /// import again go to `again`; for a row whose JSON no longer reads as
    /// a post, the `embeds` column to store.
    pub fn row(
        &mut self,
        json: &str,
        embeds: Option<&str>,
        form: i64,
        every: bool,
        again: &mut Vec<NewPost>,
    ) -> Option<String> {
        self.read += 1;
        match crate::post::relisted(json, embeds, Form::from_i64(form), every) {
            Relisted::Listed => None,
            Relisted::Again(posts) => {
                self.again += 1;
                again.extend(posts);
                None
            }
            Relisted::Unreadable(embeds) => {
                self.unreadable += 1;
                Some(embeds)
            }
        }
    }

    /// The counts, in the order the stores keep them.
    pub fn counts(&self) -> [i64; 4] {
        [self.read, self.again, self.unreadable, self.links].map(|n| i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The counts kept by a store ([`Self::counts`]'s order).
    pub fn from_counts(c: [i64; 4]) -> Reread {
        let [read, again, unreadable, links] = c.map(|n| u64::try_from(n).unwrap_or(0));
        Reread { read, again, unreadable, links }
    }

    /// Logs how far a move is, every [`MOVE_PROGRESS_EVERY`] transactions
    /// of this open (`done`): its `step`, the next post it will read (its
    /// key) and the counts so far over every open.
    pub fn progress(&self, done: u64, step: &str, next: i64) {
        if done % MOVE_PROGRESS_EVERY == 0 {
            tracing::info!(step, next_id = id_of(next), posts_read = self.read, posts_relisted = self.again, links = self.links, "Store move under way: the stored posts are read in the order of their keys (ids above 2^63 first), and a move cut short goes on from its last commit");
        }
    }

    /// Logs the move to `version` once it is done (the counts over every
    /// open that took part; `rewritten`, the posts this open rewrote).
    pub fn log(&self, version: i64, rewritten: u64) {
        if self.unreadable > 0 {
            tracing::warn!(posts_read = self.read, posts_unreadable = self.unreadable, version, "Posts whose stored JSON no longer reads as a post: every answer now judges them, and withholds them where they cannot be edited");
        }
        if self.again > 0 || rewritten > 0 {
            tracing::info!(posts_read = self.read, posts_relisted = self.again, links = self.links, posts_rewritten = rewritten, version, "Store moved: every stored post's copies are listed as today's import lists them, and what was withdrawn from them taken out");
        }
    }
}

impl std::ops::AddAssign for Reread {
    fn add_assign(&mut self, o: Reread) {
        self.read += o.read;
        self.again += o.again;
        self.unreadable += o.unreadable;
        self.links += o.links;
    }
}

pub(crate) const STATUS_COLS: &str = "dropped, drop_t, superseded_by, withheld";
pub(crate) const USER_COLS: &str =
    "deleted, deleted_t, protected, protected_t, suspended, suspended_t, withheld, scrub_up_to, delete_log";

fn toggle(on: Option<i64>, t: Option<i64>) -> Option<Toggle> {
    match (on, t) {
        (Some(on), Some(t)) => Some(Toggle { on: on != 0, time_ms: t }),
        _ => None,
    }
}

/// The storage columns of a toggle: (on as 0/1, event time).
pub(crate) fn toggle_cols(t: Option<Toggle>) -> (Option<i64>, Option<i64>) {
    match t {
        Some(t) => (Some(i64::from(t.on)), Some(t.time_ms)),
        None => (None, None),
    }
}

/// Reads [`STATUS_COLS`] starting at `at`.
pub(crate) fn status_from(c: &impl Cols, at: usize) -> Result<StatusState, StoreError> {
    Ok(StatusState {
        dropped: toggle(c.i64_opt(at)?, c.i64_opt(at + 1)?),
        superseded_by: c.i64_opt(at + 2)?.map(id_of),
        withheld: countries_from_text(c.text_opt(at + 3)?.as_deref()),
    })
}

/// Reads [`USER_COLS`] starting at `at`.
pub(crate) fn user_from(c: &impl Cols, at: usize) -> Result<UserState, StoreError> {
    Ok(UserState {
        deleted: toggle(c.i64_opt(at)?, c.i64_opt(at + 1)?),
        protected: toggle(c.i64_opt(at + 2)?, c.i64_opt(at + 3)?),
        suspended: toggle(c.i64_opt(at + 4)?, c.i64_opt(at + 5)?),
        withheld: countries_from_text(c.text_opt(at + 6)?.as_deref()),
        scrub_up_to: c.i64_opt(at + 7)?.map(id_of),
        delete_log: UserState::parse_delete_log(c.text_opt(at + 8)?.as_deref()),
    })
}

/// A post, its own tombstone, its status and author state, for a retweet
/// the same about its original, and what its JSON embeds.
pub(crate) const SCAN_SELECT: &str = "
SELECT p.id, p.author_id, p.retweet_of, p.has_geo, p.json, pt.id IS NOT NULL,
       s.id IS NOT NULL, s.dropped, s.drop_t, s.superseded_by, s.withheld,
       u.id IS NOT NULL, u.deleted, u.deleted_t, u.protected, u.protected_t, u.suspended, u.suspended_t,
                         u.withheld, u.scrub_up_to, u.delete_log,
       q.id IS NOT NULL, qt.id IS NOT NULL,
       qs.id IS NOT NULL, qs.dropped, qs.drop_t, qs.superseded_by, qs.withheld,
       qu.id IS NOT NULL, qu.deleted, qu.deleted_t, qu.protected, qu.protected_t, qu.suspended, qu.suspended_t,
                          qu.withheld, qu.scrub_up_to, qu.delete_log,
       p.embeds
FROM posts p
LEFT JOIN tombstones pt ON pt.id = p.id
LEFT JOIN status_state s ON s.id = p.id
LEFT JOIN user_state u ON u.id = p.author_id
LEFT JOIN posts q ON q.id = p.retweet_of
LEFT JOIN tombstones qt ON qt.id = p.retweet_of
LEFT JOIN status_state qs ON qs.id = p.retweet_of
LEFT JOIN user_state qu ON qu.id = q.author_id";

/// [`SCAN_SELECT`]'s columns for a scan of every post (PostgreSQL only): the
/// original's facts are looked up for retweets alone (`LATERAL`), so the
/// planner streams `posts` in id order with merge joins instead of hashing the
/// whole `posts` table a second time and sorting the result on disk. For a
/// post that is not a retweet the original's columns are all NULL, which
/// [`scanned_from`] never reads.
pub(crate) const SCAN_ALL_LATERAL: &str = "
SELECT p.id, p.author_id, p.retweet_of, p.has_geo, p.json, pt.id IS NOT NULL,
       s.id IS NOT NULL, s.dropped, s.drop_t, s.superseded_by, s.withheld,
       u.id IS NOT NULL, u.deleted, u.deleted_t, u.protected, u.protected_t, u.suspended, u.suspended_t,
                         u.withheld, u.scrub_up_to, u.delete_log,
       o.*, p.embeds
FROM posts p
LEFT JOIN tombstones pt ON pt.id = p.id
LEFT JOIN status_state s ON s.id = p.id
LEFT JOIN user_state u ON u.id = p.author_id
LEFT JOIN LATERAL (
  SELECT q.id IS NOT NULL, qt.id IS NOT NULL,
         qs.id IS NOT NULL, qs.dropped, qs.drop_t, qs.superseded_by, qs.withheld,
         qu.id IS NOT NULL, qu.deleted, qu.deleted_t, qu.protected, qu.protected_t, qu.suspended, qu.suspended_t,
                            qu.withheld, qu.scrub_up_to, qu.delete_log
  FROM (SELECT p.retweet_of AS rid) r
  LEFT JOIN posts q ON q.id = r.rid
  LEFT JOIN tombstones qt ON qt.id = r.rid
  LEFT JOIN status_state qs ON qs.id = r.rid
  LEFT JOIN user_state qu ON qu.id = q.author_id
  WHERE p.retweet_of IS NOT NULL
) o ON true
ORDER BY p.id";

/// The number of columns of [`SCAN_SELECT`] and [`SCAN_ALL_LATERAL`].
pub(crate) const SCAN_COLUMNS: usize = 39;

/// One row of [`SCAN_SELECT`], decoded (the JSON stays in the row).
pub(crate) struct Scanned {
    pub id: Id,
    pub author_id: Id,
    pub retweet_of: Option<Id>,
    pub has_geo: bool,
    pub facts: Facts,
    pub embeds: Embeds,
}

pub(crate) fn scanned_from(c: &impl Cols) -> Result<Scanned, StoreError> {
    let id = c.i64_opt(0)?.map(id_of).unwrap_or_default();
    let retweet_of = c.i64_opt(2)?;
    let status = if c.flag(6)? { status_from(c, 7)? } else { StatusState::default() };
    let author = if c.flag(11)? { user_from(c, 12)? } else { UserState::default() };
    let original = match retweet_of {
        None => None,
        Some(_) => Some(PostView {
            stored: c.flag(21)?,
            tombstone: c.flag(22)?,
            status: if c.flag(23)? { status_from(c, 24)? } else { StatusState::default() },
            author: if c.flag(28)? { user_from(c, 29)? } else { UserState::default() },
        }),
    };
    Ok(Scanned {
        id,
        author_id: c.i64_opt(1)?.map(id_of).unwrap_or_default(),
        retweet_of: retweet_of.map(id_of),
        has_geo: c.flag(3)?,
        facts: Facts { post: PostView { stored: true, tombstone: c.flag(5)?, status, author }, original },
        embeds: Embeds::from_column(c.text_opt(38)?.as_deref()),
    })
}

/// The columns of a stored post, in [`NewPost`]'s order.
pub(crate) const POST_COLS: &str = "id, author_id, retweet_of, quote_of, has_geo, CAST(form AS BIGINT), embeds, json";

/// Reads [`POST_COLS`] starting at `at`: a stored post as import merges
/// into it.
pub(crate) fn post_from(c: &impl Cols, at: usize) -> Result<NewPost, StoreError> {
    let at = at + 1;
    Ok(NewPost {
        id: c.i64_opt(at - 1)?.map(id_of).unwrap_or_default(),
        author_id: c.i64_opt(at)?.map(id_of).unwrap_or_default(),
        retweet_of: c.i64_opt(at + 1)?.map(id_of),
        quote_of: c.i64_opt(at + 2)?.map(id_of),
        has_geo: c.flag(at + 3)?,
        form: Form::from_i64(c.i64_opt(at + 4)?.unwrap_or(1)),
        embeds: Embeds::from_column(c.text_opt(at + 5)?.as_deref()),
        json: c.text(at + 6)?.to_owned(),
    })
}

/// Rows held per chunk of a scan while the facts of what they embed are
/// looked up, and the JSON bytes they may hold: memory stays bounded.
const CHUNK_ROWS: usize = 1024;
const CHUNK_BYTES: usize = 4 << 20;

/// How a backend looks up, in one go, the facts of the posts and users that
/// a chunk of rows embeds.
pub(crate) trait Lookup {
    fn lookup(&mut self, posts: &[Id], users: &[Id], into: &mut EmbeddedFacts) -> Result<(), StoreError>;
}

/// Hands a scan's rows to the visitor in order, each with the facts of the
/// posts and users it embeds. Rows that embed nothing (or nothing but the
/// original they retweet, judged from their own facts) go through at once
/// when nothing is held back; from the first row that embeds more, rows
/// are held (their JSON copied) until the chunk is full, then its embedded
/// ids are looked up together and the chunk is visited.
#[derive(Default)]
pub(crate) struct Chunker {
    held: Vec<(Scanned, std::ops::Range<usize>)>,
    arena: String,
    posts: Vec<Id>,
    users: Vec<Id>,
    embedded: EmbeddedFacts,
}

/// The visitor a scan hands its rows to.
pub(crate) type Visit<'v> = dyn FnMut(ScanRow<'_>) -> Result<(), StoreError> + 'v;

impl Chunker {
    pub(crate) fn row(
        &mut self,
        s: Scanned,
        json: &str,
        lookup: &mut dyn Lookup,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let own = s.embeds.is_empty() || judged_by_own_facts(&s.embeds, s.retweet_of);
        if self.held.is_empty() && own {
            return visit(ScanRow {
                id: s.id,
                author_id: s.author_id,
                retweet_of: s.retweet_of,
                has_geo: s.has_geo,
                json,
                facts: s.facts,
                embeds: &s.embeds,
                embedded: &self.embedded,
            });
        }
        let start = self.arena.len();
        self.arena.push_str(json);
        self.held.push((s, start..self.arena.len()));
        if self.held.len() >= CHUNK_ROWS || self.arena.len() >= CHUNK_BYTES {
            self.flush(lookup, visit)?;
        }
        Ok(())
    }

    /// Looks up what the held rows embed, and visits them.
    pub(crate) fn flush(&mut self, lookup: &mut dyn Lookup, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.posts.clear();
        self.users.clear();
        for (s, _) in self.held.iter().filter(|(s, _)| !judged_by_own_facts(&s.embeds, s.retweet_of)) {
            self.posts.extend(&s.embeds.posts);
            self.users.extend(&s.embeds.users);
        }
        for ids in [&mut self.posts, &mut self.users] {
            ids.sort_unstable();
            ids.dedup();
        }
        self.embedded.clear();
        lookup.lookup(&self.posts, &self.users, &mut self.embedded)?;
        let Chunker { held, arena, embedded, .. } = self;
        let res = held.drain(..).try_for_each(|(s, range)| {
            visit(ScanRow {
                id: s.id,
                author_id: s.author_id,
                retweet_of: s.retweet_of,
                has_geo: s.has_geo,
                json: &arena[range],
                facts: s.facts,
                embeds: &s.embeds,
                embedded,
            })
        });
        arena.clear();
        embedded.clear();
        res
    }
}

/// A gap row as both backends read it: id, partition, from, to, cause,
/// state, repair, covered to, opened.
pub(super) type GapRow = (i64, i64, i64, i64, String, String, Option<String>, i64, i64);

/// Which gaps a read takes: all, or the unresolved ones.
pub(super) fn gap_filter(unresolved_only: bool) -> &'static str {
    if unresolved_only {
        "WHERE state IN ('open', 'repairing')"
    } else {
        ""
    }
}

/// The columns of a [`GapRow`], in order.
pub(super) const GAP_COLS: &str = "id, partition, from_ms, to_ms, cause, state, repair, covered_to_ms, opened_ms";

/// A history row: gap id, time, state, note (in the order they were written).
pub(super) type GapHistoryRow = (i64, i64, String, String);

/// The ledger from its rows (the stores only read them).
pub(super) fn assemble_gaps(rows: Vec<GapRow>, history: Vec<GapHistoryRow>) -> Result<Vec<Gap>, StoreError> {
    let bad = |what: &str, v: &str| StoreError::Protocol(format!("gap ledger: unknown {what} {v:?}"));
    let mut gaps = Vec::with_capacity(rows.len());
    let mut at: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    for (id, partition, from_ms, to_ms, cause, state, repair, covered_to_ms, opened_ms) in rows {
        at.insert(id, gaps.len());
        gaps.push(Gap {
            id,
            partition: u8::try_from(partition).map_err(|_| bad("partition", &partition.to_string()))?,
            from_ms,
            to_ms,
            cause: GapCause::parse(&cause).ok_or_else(|| bad("cause", &cause))?,
            state: GapState::parse(&state).ok_or_else(|| bad("state", &state))?,
            repair: match repair {
                Some(r) => Some(Repair::parse(&r).ok_or_else(|| bad("repair", &r))?),
                None => None,
            },
            covered_to_ms,
            opened_ms,
            history: Vec::new(),
        });
    }
    for (gap_id, at_ms, state, note) in history {
        if let Some(i) = at.get(&gap_id) {
            let state = GapState::parse(&state).ok_or_else(|| bad("state", &state))?;
            gaps[*i].history.push(GapEvent { at_ms, state, note });
        }
    }
    Ok(gaps)
}

/// The columns of a batch job row, in the order [`BatchJobRow`] reads them.
pub(super) const BATCH_JOB_COLS: &str =
    "job_id, kind, run, part, source, cursor_from, cursor_to, ids, last_part, stage,
     upload_url, upload_expires_ms, download_url, download_expires_ms, created_ms, updated_ms, result_lines, note";

/// A batch job row as both backends read it (the text columns still text).
pub(super) struct BatchJobRow {
    pub job_id: String,
    pub kind: String,
    pub run: i64,
    pub part: i64,
    pub source: String,
    pub cursor_from: i64,
    pub cursor_to: i64,
    pub ids: i64,
    pub last_part: bool,
    pub stage: String,
    pub upload_url: String,
    pub upload_expires_ms: i64,
    pub download_url: String,
    pub download_expires_ms: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub result_lines: Option<i64>,
    pub note: String,
}

impl BatchJobRow {
    pub(super) fn into_job(self) -> Result<BatchJob, StoreError> {
        let bad = |what: &str, v: &str| StoreError::Protocol(format!("batch_jobs: unknown {what} {v:?}"));
        Ok(BatchJob {
            kind: BatchType::parse(&self.kind).ok_or_else(|| bad("kind", &self.kind))?,
            stage: Stage::parse(&self.stage).ok_or_else(|| bad("stage", &self.stage))?,
            part: u32::try_from(self.part).map_err(|_| bad("part", &self.part.to_string()))?,
            source: Source::from_key(&self.source),
            ids: self.ids.max(0) as u64,
            result_lines: self.result_lines.map(|n| n.max(0) as u64),
            job_id: self.job_id,
            run: self.run,
            cursor_from: self.cursor_from,
            cursor_to: self.cursor_to,
            last_part: self.last_part,
            upload_url: self.upload_url,
            upload_expires_ms: self.upload_expires_ms,
            download_url: self.download_url,
            download_expires_ms: self.download_expires_ms,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            note: self.note,
        })
    }
}
