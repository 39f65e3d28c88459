//! The offline commands of the command-line contract (rules.md): `import`,
//! `replay`, `apply-batch`, `check`, `export`. Each prints a one-line summary
//! on stderr; bad lines go to the dead-letter file and never stop the run.

pub use crate::batch_job::BatchType;
use crate::deadletter::DeadLetter;
use crate::event::{
    parse_id_str, parse_line, Country, EventKind, Id, Message, StatusEvent, StatusEvents, TimeMs, UserEvent, UserEvents,
};
use crate::post::{edit_tree, parse_import_line, remove_own_geo, ImportItem, NewLike, NewPost};
use crate::progress::{Progress, Unit};
use crate::rules::embedded;
use crate::rules::visibility::visible;
use crate::settings::ConfigErrors;
use crate::store::{ApplyStats, ErrorKind, ImportStats, MaintenanceStats, Store, StoreError, Timed};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};

/// Events handed to the store per transaction.
pub const BATCH: usize = 50_000;

/// How a command failed: the exit status follows from it. This is the one
/// place errors become exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// What the user must fix in the command line or the configuration
    /// (exit 1).
    #[error("{0}")]
    Usage(String),
    /// What failed while working: I/O, a store, a socket (exit 2).
    #[error("{0:#}")]
    Io(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 1,
            Failure::Io(_) => 2,
        }
    }
}

impl From<ConfigErrors> for Failure {
    fn from(e: ConfigErrors) -> Self {
        Failure::Usage(e.to_string())
    }
}

/// The daemon's, the demo's and the simulator's errors: a configuration
/// problem anywhere in the chain is a usage error, anything else a failure
/// while working.
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let config = e.chain().any(|c| {
            c.is::<ConfigErrors>() || c.downcast_ref::<StoreError>().is_some_and(|s| s.kind() == ErrorKind::Config)
        });
        if config {
            Failure::Usage(format!("{e:#}"))
        } else {
            Failure::Io(e)
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            ErrorKind::Config => Failure::Usage(e.to_string()),
            ErrorKind::Transient | ErrorKind::Conflict | ErrorKind::Refused => Failure::Io(anyhow::Error::new(e)),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e.into())
    }
}

use crate::clock::now_ms;

/// Opens one input: a path, or `-` for standard input.
fn open_input(name: &str) -> Result<Box<dyn BufRead>, Failure> {
    if name == "-" {
        return Ok(Box::new(BufReader::with_capacity(1 << 20, io::stdin())));
    }
    let f = File::open(name).map_err(|e| Failure::Io(anyhow::anyhow!("{name}: {e}")))?;
    Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
}

/// Calls `each(line_number, line)` for every line of every input, lines
/// split on `\n` with a trailing `\r` removed (so `\r\n` and `\n` files both
/// work).
fn for_each_line(
    what: &'static str,
    inputs: &[String],
    mut each: impl FnMut(&str, u64, &[u8]) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut buf = Vec::with_capacity(4096);
    // The bytes of every input, when every input is a file.
    let total = inputs
        .iter()
        .map(|name| (name != "-").then(|| std::fs::metadata(name).ok().map(|m| m.len())).flatten())
        .sum::<Option<u64>>();
    let mut progress = Progress::new(what, Unit::Bytes, total);
    for name in inputs {
        let mut r = open_input(name)?;
        let source = if name == "-" { "stdin" } else { name.as_str() };
        let mut n = 0u64;
        loop {
            buf.clear();
            let read = r.read_until(b'\n', &mut buf).map_err(|e| Failure::Io(anyhow::anyhow!("{source}: {e}")))?;
            if read == 0 {
                break;
            }
            n += 1;
            progress.add(read as u64);
            let mut line = buf.as_slice();
            if line.last() == Some(&b'\n') {
                line = &line[..line.len() - 1];
            }
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            each(source, n, line)?;
        }
    }
    progress.finish();
    Ok(())
}

/// Applies compliance messages to a store in batches, exactly as the stream
/// would: the status and user events of a batch go to their own handlers.
pub struct Applier<'s> {
    store: &'s mut dyn Store,
    status: StatusEvents,
    user: UserEvents,
    pub stats: ApplyStats,
    pub heartbeats: u64,
    pub notices: u64,
}

impl<'s> Applier<'s> {
    pub fn new(store: &'s mut dyn Store) -> Applier<'s> {
        Applier {
            store,
            status: StatusEvents::default(),
            user: Vec::with_capacity(BATCH),
            stats: ApplyStats::default(),
            heartbeats: 0,
            notices: 0,
        }
    }

    /// Takes one parsed message; flushes when a batch is full.
    ///
    /// # Errors
    /// The store could not commit a batch.
    pub fn push(&mut self, msg: Message) -> Result<(), StoreError> {
        match msg {
            Message::Event(e) => match e.kind {
                EventKind::Status(s) => self.status.push(Timed { time_ms: e.time_ms, event: s }),
                EventKind::User(u) => self.user.push(Timed { time_ms: e.time_ms, event: u }),
            },
            Message::Heartbeat => self.heartbeats += 1,
            Message::Error(n) => {
                self.notices += 1;
                tracing::warn!(notice = %n.message, "Stream error notice in the input");
            }
            Message::Info(i) => {
                self.notices += 1;
                tracing::info!(notice = %i.message, complete = i.is_complete(), "Replay info line in the input");
            }
            Message::Unknown { .. } => {}
        }
        if self.status.len() + self.user.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Takes parsed events (a replay's); flushes when a batch is full.
    ///
    /// # Errors
    /// The store could not commit a batch.
    pub fn extend(&mut self, mut status: StatusEvents, user: UserEvents) -> Result<(), StoreError> {
        self.status.append(&mut status);
        self.user.extend(user);
        if self.status.len() + self.user.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Commits what is pending.
    ///
    /// # Errors
    /// The store could not commit.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if !self.status.is_empty() {
            let s = self.store.apply_status(&self.status, &[])?;
            self.stats.merge(&s);
            self.status.clear();
        }
        if !self.user.is_empty() {
            let s = self.store.apply_user(&self.user, &[])?;
            self.stats.merge(&s);
            self.user.clear();
        }
        Ok(())
    }
}

/// Finishes the per-post work (purges, geo removal) before an offline
/// command exits.
///
/// # Errors
/// The store could not commit.
pub fn finish_maintenance(store: &mut dyn Store) -> Result<MaintenanceStats, StoreError> {
    let mut total = MaintenanceStats::default();
    loop {
        let m = store.maintain(now_ms(), 10_000)?;
        total.posts_deleted += m.posts_deleted;
        total.retweets_cascaded += m.retweets_cascaded;
        total.users_purged += m.users_purged;
        total.posts_purged += m.posts_purged;
        total.posts_geo_scrubbed += m.posts_geo_scrubbed;
        total.copies_removed += m.copies_removed;
        if m.pending == 0 {
            return Ok(total);
        }
    }
}

pub(crate) fn dead_letter_io(e: io::Error, dl: &DeadLetter) -> Failure {
    Failure::Io(anyhow::anyhow!("cannot write the dead-letter file {}: {e}", dl.path().display()))
}

/// `applied N (by type); duplicates N; stale N`, for the summaries.
pub fn applied_summary(stats: &ApplyStats) -> String {
    format!(
        "applied {} ({}); duplicates {}; stale {}",
        stats.applied.total(),
        stats.applied,
        stats.duplicates.total(),
        stats.stale.total()
    )
}

/// `complyd replay FILE...`
///
/// # Errors
/// A [`Failure`]: unreadable input, store or dead-letter failure.
pub fn replay(store: &mut dyn Store, dl: &mut DeadLetter, inputs: &[String]) -> Result<String, Failure> {
    let mut applier = Applier::new(store);
    let mut lines = 0u64;
    for_each_line("replay", inputs, |source, n, line| {
        lines += 1;
        match parse_line(line) {
            Ok(Message::Unknown { kind }) => {
                dl.record(source, n, "unknown_type", &format!("unknown message type {kind:?}"), line)
                    .map_err(|e| dead_letter_io(e, dl))?;
            }
            Ok(msg) => applier.push(msg)?,
            Err(e) => {
                dl.record(source, n, e.kind.as_str(), &e.detail, line).map_err(|e| dead_letter_io(e, dl))?;
            }
        }
        Ok(())
    })?;
    applier.flush()?;
    let (stats, heartbeats) = (applier.stats.clone(), applier.heartbeats);
    dl.flush().map_err(|e| dead_letter_io(e, dl))?;
    let m = finish_maintenance(store)?;
    Ok(format!(
        "replay: {lines} lines; {}; heartbeats {heartbeats}; dead-lettered {}; removed {} deleted posts and {} of their retweets; purged {} users ({} posts); geo scrubbed {} posts; withdrawn copies taken out of {} posts",
        applied_summary(&stats),
        dl.total(),
        m.posts_deleted,
        m.retweets_cascaded,
        m.users_purged,
        m.posts_purged,
        m.posts_geo_scrubbed,
        m.copies_removed,
    ))
}

/// `complyd import FILE...`
///
/// # Errors
/// A [`Failure`]: unreadable input, store or dead-letter failure.
pub fn import(store: &mut dyn Store, dl: &mut DeadLetter, inputs: &[String]) -> Result<String, Failure> {
    let mut posts: Vec<NewPost> = Vec::with_capacity(BATCH);
    let mut likes: Vec<NewLike> = Vec::new();
    let mut total = ImportStats::default();
    let mut lines = 0u64;
    let now = now_ms();
    for_each_line("import", inputs, |source, n, line| {
        lines += 1;
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                dl.record(source, n, "invalid_json", &format!("not UTF-8: {e}"), line)
                    .map_err(|e| dead_letter_io(e, dl))?;
                return Ok(());
            }
        };
        match parse_import_line(text) {
            Ok(ImportItem::Posts(p)) => posts.extend(p),
            Ok(ImportItem::Like(l)) => likes.push(l),
            Err(e) => dl.record(source, n, e.kind.as_str(), &e.detail, line).map_err(|e| dead_letter_io(e, dl))?,
        }
        if posts.len() + likes.len() >= BATCH {
            total.merge(&store.import(&posts, &likes, now)?);
            posts.clear();
            likes.clear();
        }
        Ok(())
    })?;
    total.merge(&store.import(&posts, &likes, now)?);
    dl.flush().map_err(|e| dead_letter_io(e, dl))?;
    let m = finish_maintenance(store)?;
    Ok(format!(
        "import: {lines} lines; stored {} posts, {} likes; refused {} (tombstoned, purged or retweeting a tombstone); stored without scrubbed geo {}; dead-lettered {}; purged {} users ({} posts)",
        total.stored, total.likes_stored, total.refused, total.geo_stripped, dl.total(), m.users_purged, m.posts_purged
    ))
}

#[derive(serde::Deserialize)]
struct BatchLine {
    id: serde_json::Value,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    redacted_at: Option<String>,
    reason: String,
}

/// `complyd apply-batch --type tweets|users FILE...`: X API v2 batch
/// compliance results, mapped onto the same events the stream sends. The
/// event time is `redacted_at` when present, else now.
///
/// # Errors
/// A [`Failure`]: unreadable input, store or dead-letter failure.
pub fn apply_batch(
    store: &mut dyn Store,
    dl: &mut DeadLetter,
    kind: BatchType,
    inputs: &[String],
) -> Result<String, Failure> {
    let now = now_ms();
    let mut lines = 0u64;
    let mut unknown_author = 0u64;
    let mut msgs: Vec<(Option<Id>, Id, TimeMs, String)> = Vec::new();
    for_each_line("apply-batch", inputs, |source, n, line| {
        lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let parsed: Result<BatchLine, String> = serde_json::from_slice(line).map_err(|e| e.to_string());
        let res = parsed.and_then(|b| {
            let id = match &b.id {
                serde_json::Value::String(s) => parse_id_str(s).map_err(|e| e.to_string())?,
                serde_json::Value::Number(n) => n.as_u64().ok_or("id is not an unsigned integer")?,
                _ => return Err("id is neither a string nor a number".to_owned()),
            };
            if b.action.as_deref().is_some_and(|a| a != "delete") {
                return Err(format!("unknown action {:?}", b.action));
            }
            let t = match &b.redacted_at {
                Some(s) => crate::event::parse_time_str(s).map_err(|e| e.to_string())?,
                None => now,
            };
            Ok((id, t, b.reason))
        });
        match res {
            Ok((id, t, reason)) => {
                let reasons = ["deleted", "deactivated", "scrub_geo", "protected", "suspended", "bounced"];
                if !reasons.contains(&reason.as_str()) {
                    dl.record(source, n, "bad_payload", &format!("unknown reason {reason:?}"), line)
                        .map_err(|e| dead_letter_io(e, dl))?;
                } else {
                    msgs.push((None, id, t, reason));
                }
            }
            Err(detail) => dl.record(source, n, "bad_payload", &detail, line).map_err(|e| dead_letter_io(e, dl))?,
        }
        Ok(())
    })?;
    let mut applier = Applier::new(store);
    for (_, id, t, reason) in &msgs {
        let ev = match (kind, reason.as_str()) {
            (BatchType::Tweets, "deleted" | "bounced") => {
                EventKind::Status(StatusEvent::Delete { id: *id, user_id: None })
            }
            (BatchType::Users, r) => EventKind::User(user_event_for(*id, r)),
            (BatchType::Tweets, r) => {
                // A post listed for its author's sake: act on the author, when
                // the post is stored (otherwise there is nothing to hide).
                match applier.store.author_of(*id)? {
                    Some(author) if r == "scrub_geo" => {
                        EventKind::User(UserEvent::ScrubGeo { user_id: author, up_to_status_id: *id })
                    }
                    Some(author) => EventKind::User(user_event_for(author, r)),
                    None => {
                        unknown_author += 1;
                        continue;
                    }
                }
            }
        };
        applier.push(Message::Event(crate::event::Event { time_ms: *t, kind: ev }))?;
    }
    applier.flush()?;
    let stats = applier.stats.clone();
    dl.flush().map_err(|e| dead_letter_io(e, dl))?;
    let m = finish_maintenance(store)?;
    Ok(format!(
        "apply-batch: {lines} lines; {}; not stored (author unknown) {unknown_author}; dead-lettered {}; purged {} users ({} posts); geo scrubbed {} posts; withdrawn copies taken out of {} posts",
        applied_summary(&stats),
        dl.total(),
        m.users_purged,
        m.posts_purged,
        m.posts_geo_scrubbed,
        m.copies_removed,
    ))
}

fn user_event_for(user_id: Id, reason: &str) -> UserEvent {
    match reason {
        "deleted" | "deactivated" => UserEvent::Delete { user_id },
        "protected" => UserEvent::Protect { user_id },
        "scrub_geo" => UserEvent::ScrubGeo { user_id, up_to_status_id: Id::MAX },
        // "suspended", "bounced"
        _ => UserEvent::Suspend { user_id },
    }
}

/// Parses a `--country` value.
///
/// # Errors
/// [`Failure::Usage`] for anything but two letters.
pub fn parse_country(s: &str) -> Result<Country, Failure> {
    Country::parse(s).map_err(|e| Failure::Usage(format!("--country: {}", e.detail)))
}

/// `complyd check ID...`: one JSON line per id.
///
/// # Errors
/// [`Failure::Usage`] for an id that is not a decimal u64; store failures.
pub fn check(
    store: &mut dyn Store,
    country: Option<Country>,
    ids: &[String],
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let parsed: Vec<Id> =
        ids.iter().map(|s| parse_id_str(s).map_err(|e| Failure::Usage(e.detail))).collect::<Result<_, _>>()?;
    let now = now_ms();
    for id in parsed {
        let facts = store.facts(id)?;
        let v = visible(&facts, country, now);
        writeln!(out, "{{\"id\":\"{id}\",\"visible\":{v}}}").map_err(StoreError::Output)?;
    }
    out.flush().map_err(StoreError::Output)?;
    Ok(())
}

/// `complyd export`: the stored posts visible in `country` (or everywhere),
/// ascending id, scrubbed geo removed, and each embedded post or user that
/// is not visible there removed ([`crate::rules::embedded`]). Returns how
/// many posts were written. A post is parsed only when something in it must
/// go; every other line is written as stored, byte for byte. A post that
/// must lose something but whose members to edit cannot be read as a tree
/// ([`edit_tree`]; import refuses such lines) is withheld, never written as
/// stored: counted and logged ([`Exported::withheld`]).
///
/// # Errors
/// Store failures or a write error (a closed pipe ends the export quietly).
pub fn export(store: &mut dyn Store, country: Option<Country>, out: impl Write) -> Result<u64, Failure> {
    Ok(export_with(store, country, out, &mut Progress::hidden())?.written)
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    pub written: u64,
    /// Visible posts not written: something in their JSON had to go and the
    /// members to edit could not be read as a tree.
    pub withheld: u64,
}

/// [`export`], counting every stored post it reads in `progress`.
///
/// # Errors
/// As [`export`].
pub fn export_with(
    store: &mut dyn Store,
    country: Option<Country>,
    out: impl Write,
    progress: &mut Progress,
) -> Result<Exported, Failure> {
    let now = now_ms();
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut done = Exported::default();
    let res = store.scan(&mut |row| {
        progress.add(1);
        if !visible(&row.facts, country, now) {
            return Ok(());
        }
        let own_geo = row.has_geo && row.facts.post.author.geo_scrubbed(row.id);
        let judge = embedded::InCountry {
            facts: row.embedded,
            retweet_of: row.retweet_of,
            original: row.facts.original.as_ref(),
            country,
            now_ms: now,
        };
        let io = if own_geo || embedded::changes_anything(&judge, &row.embeds.posts, &row.embeds.users) {
            let Some(json) = shown_json(row.json, own_geo, &judge) else {
                done.withheld += 1;
                if let Some(suppressed) = crate::logging::allow("export-withheld") {
                    tracing::warn!(
                        id = row.id,
                        suppressed,
                        "Post withheld from the export: something in its stored JSON must be removed and the part to edit cannot be read as a tree"
                    );
                }
                return Ok(());
            };
            w.write_all(json.as_bytes())
        } else {
            w.write_all(row.json.as_bytes())
        };
        io.and_then(|_| w.write_all(b"\n")).map_err(StoreError::Output)?;
        done.written += 1;
        Ok(())
    });
    match res {
        Ok(()) => {}
        Err(StoreError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(done),
        Err(e) => return Err(e.into()),
    }
    match w.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(done),
        Err(e) => Err(StoreError::Output(e).into()),
        Ok(()) => Ok(done),
    }
}

/// A stored post's JSON as it may be shown: without its own geo when
/// `own_geo` (its author scrubbed it), and without what `judge` hides of the
/// posts and users it embeds. Unchanged bytes when nothing was removed;
/// `None` when the members to edit cannot be read as a tree
/// ([`edit_tree`]): the post is then withheld, never shown as stored.
fn shown_json(json: &str, own_geo: bool, judge: &dyn embedded::Judge) -> Option<String> {
    edit_tree(json, |v| (own_geo && remove_own_geo(v)) | embedded::filter(v, judge)).or_stored(json)
}

/// A time for people: `2026-12-01 13:05:09Z`.
pub(crate) fn utc(ms: TimeMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// `complyd gaps`: the gap ledger, oldest first. A table (one gap a line,
/// its last move) or, with `json`, one JSON object a gap with its whole
/// history. Returns how many gaps are unresolved.
///
/// # Errors
/// The store cannot be read, or the output cannot be written.
pub fn gaps(store: &mut dyn Store, json: bool, mut out: impl Write) -> Result<usize, Failure> {
    let gaps = store.gaps(false)?;
    if json {
        for g in &gaps {
            let mut v = serde_json::to_value(g).map_err(|e| Failure::Io(e.into()))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("minutes".into(), g.minutes().into());
            }
            writeln!(out, "{v}").map_err(StoreError::Output)?;
        }
    } else {
        writeln!(
            out,
            "{:>4} {:>4}  {:<20}  {:<20}  {:>5}  {:<11}  {:<12}  last",
            "id", "part", "from (UTC)", "to (UTC)", "min", "cause", "state"
        )
        .map_err(StoreError::Output)?;
        for g in &gaps {
            let last = g.history.last().map_or_else(String::new, |e| format!("{} {}", utc(e.at_ms), e.note));
            writeln!(
                out,
                "{:>4} {:>4}  {:<20}  {:<20}  {:>5}  {:<11}  {:<12}  {last}",
                g.id,
                g.partition,
                utc(g.from_ms),
                utc(g.to_ms),
                g.minutes(),
                g.cause.as_str(),
                g.state.as_str()
            )
            .map_err(StoreError::Output)?;
        }
    }
    out.flush().map_err(StoreError::Output)?;
    Ok(gaps.iter().filter(|g| g.state.is_unresolved()).count())
}
