//! The PostgreSQL store, for large datasets and several daemons sharing one
//! database. Same schema semantics as SQLite; every batch is a handful of
//! set-based statements (`unnest` arrays), never one statement per event.
//! The two bulk paths use binary COPY: an import writes its new posts with
//! `COPY ... FROM STDIN`, and a scan (export) reads one `COPY ... TO STDOUT`
//! stream.
//!
//! Concurrent writers converge: state rows are created when missing, then
//! locked in id order (`FOR UPDATE`), merged by the same pure rules as every
//! backend ("later event time wins" included), and written back. A
//! transaction-scoped advisory lock (shared for import, exclusive for the
//! maintenance pass) keeps a post from being stored just as its tombstone's
//! content removal runs.
//!
//! The synchronous `postgres` client runs its own small runtime: call it from
//! a plain thread (a SyncArbiter actor), never from inside an async task.

use super::rows::{
    assemble_gaps, gap_filter, post_from, scanned_from, scrub_covered, status_from, toggle_cols, user_from,
    withdraw_next, BatchJobRow, Chunker, Cols, GapHistoryRow, GapRow, Lookup, MoveBatches, MoveMark, Reread,
    BATCH_JOB_COLS, GAP_COLS, POST_COLS, SCAN_ALL_LATERAL, SCAN_COLUMNS, SCAN_SELECT, STATUS_COLS, USER_COLS,
};
use super::{
    id_of, key, redact_url, ApplyStats, ErrorKind, HandlerKind, ImportStats, MaintenanceStats, NewLike, Position,
    ScanRow, Store, StoreError, Timed,
};
use crate::batch_job::{BatchJob, BatchType};
use crate::event::{Id, StatusEvents, TimeMs, UserEvent};
use crate::gaps::{Gap, GapMove, GapState, NewGap, Repair};
use crate::post::{strip_own_geo, Embeds, NewPost};
use crate::rules::embedded::Facts as EmbeddedFacts;
use crate::rules::import::{self, Loaded, Planned, Refusal};
use crate::rules::status::{StatusBatch, StatusState};
use crate::rules::user::UserState;
use crate::rules::visibility::{Facts, PostView};
use crate::rules::{self, countries_to_text};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, IsolationLevel, Row, Statement, Transaction};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};
use std::sync::LazyLock;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 7;

const MIGRATIONS: [&str; 7] = [
    // 0 -> 1
    "
    CREATE TABLE posts (
        id          bigint PRIMARY KEY,
        author_id   bigint NOT NULL,
        retweet_of  bigint,
        has_geo     boolean NOT NULL,
        json        text NOT NULL
    );
    CREATE INDEX posts_by_author ON posts (author_id, id);
    CREATE INDEX posts_by_retweet_of ON posts (retweet_of) WHERE retweet_of IS NOT NULL;
    CREATE TABLE likes (user_id bigint NOT NULL, post_id bigint NOT NULL, PRIMARY KEY (user_id, post_id));

    -- status handler
    CREATE TABLE tombstones (id bigint PRIMARY KEY, reason smallint NOT NULL);
    CREATE TABLE content_pending (seq bigserial PRIMARY KEY, id bigint NOT NULL);
    CREATE TABLE status_state (
        id bigint PRIMARY KEY, dropped bigint, drop_t bigint, superseded_by bigint, withheld text
    );
    CREATE TABLE like_tombstones (user_id bigint NOT NULL, post_id bigint NOT NULL, PRIMARY KEY (user_id, post_id));

    -- user handler
    CREATE TABLE user_state (
        id bigint PRIMARY KEY,
        deleted bigint, deleted_t bigint,
        protected bigint, protected_t bigint,
        suspended bigint, suspended_t bigint,
        withheld text, scrub_up_to bigint, delete_log text, purge_at bigint
    );
    CREATE INDEX user_state_purge_at ON user_state (purge_at) WHERE purge_at IS NOT NULL;
    CREATE TABLE geo_scrub_pending (user_id bigint PRIMARY KEY);

    -- maintenance; at_ms: the purge time carried out
    CREATE TABLE purge_done (user_id bigint PRIMARY KEY, at_ms bigint NOT NULL);

    -- stream positions, committed with each batch
    CREATE TABLE positions (
        handler text NOT NULL, partition integer NOT NULL,
        last_event_ms bigint NOT NULL, last_byte_ms bigint NOT NULL,
        PRIMARY KEY (handler, partition)
    );
    ",
    // 1 -> 2: the quote link, the form and the embedded ids (the posts
    // embedded in stored JSON are then re-imported: `move_posts`)
    "
    ALTER TABLE posts ADD COLUMN IF NOT EXISTS quote_of bigint,
                      ADD COLUMN IF NOT EXISTS form smallint NOT NULL DEFAULT 1,
                      ADD COLUMN IF NOT EXISTS embeds text;
    ",
    // 2 -> 3: the gap ledger (`crate::gaps`)
    "
    CREATE TABLE gaps (
        id bigserial PRIMARY KEY, partition integer NOT NULL,
        from_ms bigint NOT NULL, to_ms bigint NOT NULL,
        cause text NOT NULL, state text NOT NULL,
        repair text, covered_to_ms bigint NOT NULL, opened_ms bigint NOT NULL
    );
    CREATE TABLE gap_history (
        seq bigserial PRIMARY KEY, gap_id bigint NOT NULL,
        at_ms bigint NOT NULL, state text NOT NULL, note text NOT NULL
    );
    ",
    // 3 -> 4: the batch compliance jobs (`crate::batch_job`); the signed
    // URLs are kept to resume, never shown
    "
    CREATE TABLE batch_jobs (
        job_id text PRIMARY KEY, kind text NOT NULL,
        run bigint NOT NULL, part bigint NOT NULL, source text NOT NULL,
        cursor_from bigint NOT NULL, cursor_to bigint NOT NULL,
        ids bigint NOT NULL, last_part boolean NOT NULL, stage text NOT NULL,
        upload_url text NOT NULL, upload_expires_ms bigint NOT NULL,
        download_url text NOT NULL, download_expires_ms bigint NOT NULL,
        created_ms bigint NOT NULL, updated_ms bigint NOT NULL,
        result_lines bigint, note text NOT NULL
    );
    ",
    // 4 -> 5: which stored post carries a copy of which other post, and
    // which carries which user's profile (v2 `includes.users`; see
    // `remove_copies`; the links a carrier's stored form lists go with its
    // row, `delete_content`; a link may outlive its copy, and whoever
    // follows it then finds nothing to remove).
    "
    CREATE TABLE embedded_in (
        embedded_id bigint NOT NULL,
        post_id     bigint NOT NULL,
        PRIMARY KEY (embedded_id, post_id)
    );
    CREATE TABLE embedded_users (
        user_id bigint NOT NULL,
        post_id bigint NOT NULL,
        PRIMARY KEY (user_id, post_id)
    );
    ",
    // 5 -> 6: no table changes; what twarc's flattened files carry is
    // listed by re-importing them (`migrate`).
    "SELECT 1",
    // 6 -> 7: no table changes; every stored row is read again, and
    // re-imported where it lists less than it carries (`migrate`).
    "SELECT 1",
];

const TOMBSTONE_DELETE: i16 = 1;
const TOMBSTONE_CASCADE: i16 = 2;
const TOMBSTONE_PURGE: i16 = 3;

fn tombstone_reason(why: Refusal) -> i16 {
    match why {
        Refusal::Tombstoned => TOMBSTONE_DELETE,
        Refusal::RetweetOfTombstone => TOMBSTONE_CASCADE,
        Refusal::AuthorPurged => TOMBSTONE_PURGE,
    }
}

/// Advisory lock keys (per schema, so that stores in different schemas of
/// one database never contend).
const LOCK_MIGRATE: &str = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.complyd.migrate'))";
const LOCK_IMPORT: &str = "SELECT pg_advisory_xact_lock_shared(hashtext(current_schema() || '.complyd.content'))";
const LOCK_MAINTAIN: &str = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.complyd.content'))";

/// How often a batch is retried after a deadlock or serialization failure.
const RETRIES: usize = 5;

/// `complyd_meta` keys of a move of the stored posts under way
/// ([`PostgresStore::move_posts`]): the key of the next post to re-read,
/// or (the second step) whose carrier links to make; that (from version 1)
/// every post that may carry another is imported again; the counts so far
/// ([`Reread::counts`]'s order).
const MOVE_REREAD_FROM: &str = "move_reread_from";
const MOVE_LINK_FROM: &str = "move_link_from";
const MOVE_EVERY_CARRIER: &str = "move_every_carrier";
const MOVE_COUNTS: [&str; 4] = ["move_read", "move_relisted", "move_unreadable", "move_links"];
/// All of them, for `key = ANY(..)` (`LIKE` would take `_` for any
/// character).
const MOVE_KEYS: [&str; 10] = [
    MOVE_REREAD_FROM,
    MOVE_LINK_FROM,
    WITHDRAW_FROM[0],
    WITHDRAW_FROM[1],
    WITHDRAW_FROM[2],
    MOVE_EVERY_CARRIER,
    MOVE_COUNTS[0],
    MOVE_COUNTS[1],
    MOVE_COUNTS[2],
    MOVE_COUNTS[3],
];
/// The marks of the move's last steps, which take out of the linked
/// carriers what was already withdrawn ([`withdraw_batch`]): the copies of
/// tombstones, the profiles of purged users, the geo of scrubbed copies.
const WITHDRAW_FROM: [&str; 3] = ["move_gone_from", "move_purged_from", "move_scrubbed_from"];
/// The marks of each step of a move under way.
const MOVE_STEPS: [&str; 5] = [MOVE_REREAD_FROM, MOVE_LINK_FROM, WITHDRAW_FROM[0], WITHDRAW_FROM[1], WITHDRAW_FROM[2]];
/// The marks of a move cut short by the builds of ff2fac5..33d5f7b.
const EARLIER_MOVE_KEYS: [&str; 2] = ["move_reread_after", "move_link_after"];
/// The version a store waits at while its posts are moved: the moves to
/// 6 and 7 change no table (`MIGRATIONS`), so a store whose move is under
/// way is at 6, and an earlier complyd that opens it moves it again.
const MOVE_FROM: i64 = 6;

pub struct PostgresStore {
    client: Client,
    /// Statements prepared once per session: planning the read query's seven
    /// joins costs more than running it.
    statements: HashMap<String, Statement>,
    /// For cancelling a scan the visitor stopped, and for the look-up
    /// connection.
    tls: crate::tls::PostgresTls,
    /// The URL (without `sslrootcert`), for the look-up connection (never
    /// logged: it may hold a password).
    url: String,
    /// A second connection, opened on the first scan that needs it: while
    /// the scan's COPY streams on the first, the facts of embedded posts are
    /// looked up here, in the scan's snapshot.
    lookup: Option<Client>,
}

/// A transaction with the session's statement cache.
struct Conn<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    statements: &'a mut HashMap<String, Statement>,
}

impl Conn<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let st = self.statement(sql)?;
        Ok(self.tx.query(&st, params)?)
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        Ok(self.tx.execute(&st, params)?)
    }
}

impl Cols for Row {
    fn i64_opt(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn text_opt(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn text(&self, i: usize) -> Result<&str, StoreError> {
        Ok(self.try_get(i)?)
    }
}

/// Binary `COPY ... TO STDOUT` data, read row by row. The server sends each
/// row as one message: a row is decoded where it lies in the reader's buffer
/// when it is whole there, and copied into `buf` only when it is not, so a
/// scan allocates nothing per row.
#[derive(Default)]
struct CopyRows {
    buf: Vec<u8>,
    /// (start, end) of each field of the current row; `None` for NULL.
    fields: Vec<Option<(usize, usize)>>,
}

/// One row of [`CopyRows`]: its bytes and its fields' places in them.
struct CopyRow<'a> {
    data: &'a [u8],
    fields: &'a [Option<(usize, usize)>],
}

/// What the start of some binary COPY data holds.
enum Parsed {
    /// A whole row, this many bytes long.
    Row(usize),
    /// The trailer: no more rows.
    End,
    /// The beginning of a row only.
    Partial,
}

/// The signature that opens binary COPY data.
const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

fn copy_format_error(what: &str) -> StoreError {
    StoreError::Protocol(format!("binary COPY data: {what}"))
}

/// Finds the fields of the row at the start of `data`.
fn parse_row(data: &[u8], fields: &mut Vec<Option<(usize, usize)>>) -> Parsed {
    fields.clear();
    let Some(&[a, b]) = data.get(..2) else { return Parsed::Partial };
    let count = i16::from_be_bytes([a, b]);
    if count == -1 {
        return Parsed::End;
    }
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = data.get(at..at + 4) else { return Parsed::Partial };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        match usize::try_from(len) {
            Err(_) => fields.push(None),
            Ok(len) if at + len <= data.len() => {
                fields.push(Some((at, at + len)));
                at += len;
            }
            Ok(_) => return Parsed::Partial,
        }
    }
    Parsed::Row(at)
}

impl CopyRows {
    /// Reads the header of binary COPY data.
    fn read_header(r: &mut impl Read) -> Result<(), StoreError> {
        let mut head = [0u8; 19];
        r.read_exact(&mut head)?;
        if &head[..11] != COPY_SIGNATURE {
            return Err(copy_format_error("no PGCOPY signature"));
        }
        let ext = u32::from_be_bytes([head[15], head[16], head[17], head[18]]);
        std::io::copy(&mut r.take(u64::from(ext)), &mut std::io::sink())?;
        Ok(())
    }

    /// Calls `f` with each row of `r` in turn, up to the trailer.
    fn for_each(
        &mut self,
        r: &mut impl BufRead,
        mut f: impl FnMut(&CopyRow<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        loop {
            let data = r.fill_buf()?;
            if data.is_empty() {
                return Err(copy_format_error("no trailer"));
            }
            match parse_row(data, &mut self.fields) {
                Parsed::End => return Ok(()),
                Parsed::Row(len) => {
                    f(&CopyRow { data, fields: &self.fields })?;
                    r.consume(len);
                }
                Parsed::Partial => {
                    if !self.read_row(r)? {
                        return Ok(());
                    }
                    f(&CopyRow { data: &self.buf, fields: &self.fields })?;
                }
            }
        }
    }

    /// Reads the next row into `buf`, field by field (for a row split
    /// across messages); `false` at the trailer.
    fn read_row(&mut self, r: &mut impl Read) -> Result<bool, StoreError> {
        let mut count = [0u8; 2];
        r.read_exact(&mut count)?;
        let count = i16::from_be_bytes(count);
        if count == -1 {
            return Ok(false);
        }
        self.buf.clear();
        self.fields.clear();
        for _ in 0..count {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            match usize::try_from(i32::from_be_bytes(len)) {
                Err(_) => self.fields.push(None),
                Ok(len) => {
                    let start = self.buf.len();
                    self.buf.resize(start + len, 0);
                    r.read_exact(&mut self.buf[start..])?;
                    self.fields.push(Some((start, start + len)));
                }
            }
        }
        Ok(true)
    }
}

impl CopyRow<'_> {
    fn bytes(&self, i: usize) -> Result<Option<&[u8]>, StoreError> {
        match self.fields.get(i) {
            None => Err(copy_format_error(&format!("no column {i}"))),
            Some(f) => Ok(f.map(|(a, b)| &self.data[a..b])),
        }
    }

    fn str(&self, i: usize) -> Result<Option<&str>, StoreError> {
        self.bytes(i)?
            .map(|b| std::str::from_utf8(b).map_err(|_| copy_format_error(&format!("column {i} is not UTF-8"))))
            .transpose()
    }
}

/// The columns as the query types them (bigint, boolean, text): a value of
/// another size is refused, as `Row::try_get` refuses another type.
impl Cols for CopyRow<'_> {
    fn i64_opt(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.bytes(i)?
            .map(|b| {
                <[u8; 8]>::try_from(b)
                    .map(i64::from_be_bytes)
                    .map_err(|_| copy_format_error(&format!("column {i} is not a bigint")))
            })
            .transpose()
    }
    fn text_opt(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.str(i)?.map(str::to_owned))
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        match self.bytes(i)? {
            Some([b]) => Ok(*b != 0),
            _ => Err(copy_format_error(&format!("column {i} is not a boolean"))),
        }
    }
    fn text(&self, i: usize) -> Result<&str, StoreError> {
        self.str(i)?.ok_or_else(|| copy_format_error(&format!("column {i} is NULL")))
    }
}

impl PostgresStore {
    /// Connects (TLS when the server offers it, or as `sslmode` says; the
    /// server's certificate verified against the built-in roots, or those of
    /// the URL's `sslrootcert` file: `crate::tls`) and migrates.
    ///
    /// # Errors
    /// Connection or migration errors; the URL's password is never shown.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut store = Self::connect(url)?;
        store.migrate_with(MoveBatches::default())?;
        Ok(store)
    }

    /// [`Self::open`] for a command that never creates a store
    /// ([`super::open_existing`]): refuses a database without complyd's
    /// tables before creating any.
    ///
    /// # Errors
    /// [`StoreError::NoStore`], or those of [`Self::open`].
    pub fn open_existing(url: &str) -> Result<PostgresStore, StoreError> {
        let mut store = Self::connect(url)?;
        let found: bool = store
            .client
            .query_one("SELECT to_regclass('complyd_meta') IS NOT NULL AND to_regclass('posts') IS NOT NULL", &[])?
            .get(0);
        if !found {
            return Err(StoreError::NoStore(format!(
                "no store at {}: the database holds no complyd tables: {}",
                redact_url(url),
                super::NO_STORE_HINT
            )));
        }
        // A store of this version with no move under way needs no write, so
        // that a role that may only read, or a standby, can check and
        // export it (`migrate_with` takes a lock and writes).
        let keys: Vec<&str> = MOVE_KEYS.iter().chain(&EARLIER_MOVE_KEYS).copied().collect();
        let row = store.client.query_one(
            "SELECT coalesce((SELECT value FROM complyd_meta WHERE key = 'schema_version'), 0),
                    EXISTS (SELECT 1 FROM complyd_meta WHERE key = ANY($1))",
            &[&keys],
        )?;
        let (version, moving): (i64, bool) = (row.get(0), row.get(1));
        if version == SCHEMA_VERSION && !moving {
            return Ok(store);
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
        }
        store.migrate_with(MoveBatches::default()).map_err(|e| {
            let denied = [postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION, postgres::error::SqlState::INSUFFICIENT_PRIVILEGE];
            match &e {
                StoreError::Postgres(pe) if pe.code().is_some_and(|c| denied.contains(c)) => StoreError::ReadOnly(format!(
                    "the store at {} is of an earlier complyd (schema version {version}; this one reads {SCHEMA_VERSION}) \
                     or part way through a move to this version, and moving it needs write access ({}): \
                     run any complyd command on it once as a role that may write it",
                    redact_url(url),
                    pe.as_db_error().map_or_else(|| pe.to_string(), |d| d.message().to_owned())
                )),
                _ => e,
            }
        })?;
        Ok(store)
    }

    fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let (url, ca_file) = super::url::split_ca_file(url);
        let tls = crate::tls::postgres_tls(crate::tls::client_config(ca_file.as_deref())?);
        let client = Client::connect(&url, tls.clone()).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            // complyd creates tables, never the database.
            if e.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) {
                return StoreError::NoStore(format!(
                    "no database at {}{cause}: create it (createdb), or fix store.url / --db",
                    redact_url(&url)
                ));
            }
            StoreError::Connect(format!("cannot connect to {}: {e}{cause}", redact_url(&url)))
        })?;
        Ok(PostgresStore { client, statements: HashMap::new(), tls, url, lookup: None })
    }

    /// Opens the store at `url` as [`Self::open`] does, but moves its posts
    /// `rows` a transaction and stops after `batches` of them, as a kill
    /// would (for tests of a move cut short). Returns whether the move was
    /// done.
    ///
    /// # Errors
    /// Connection or migration errors.
    #[doc(hidden)]
    pub fn open_cut_after(url: &str, rows: i64, batches: u64) -> Result<bool, StoreError> {
        Self::connect(url)?.migrate_with(MoveBatches { rows, stop_after: Some(batches) })
    }

    /// Brings the schema to [`SCHEMA_VERSION`], then finishes the move of
    /// the stored posts, if one is under way ([`Self::move_posts`]). Returns
    /// false when `batches` stopped it first.
    fn migrate_with(&mut self, batches: MoveBatches) -> Result<bool, StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute(LOCK_MIGRATE, &[])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS complyd_meta (key text PRIMARY KEY, value bigint NOT NULL)")?;
        let found: i64 =
            tx.query_opt("SELECT value FROM complyd_meta WHERE key = 'schema_version'", &[])?.map_or(0, |r| r.get(0));
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        for (v, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO complyd_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&(v as i64 + 1)],
            )?;
        }
        // The marks of a move cut short by the builds of ff2fac5..33d5f7b,
        // which took version 7 first: that move starts again.
        let cut_earlier = tx.execute("DELETE FROM complyd_meta WHERE key = ANY($1)", &[&&EARLIER_MOVE_KEYS[..]])? > 0;
        if (1..SCHEMA_VERSION).contains(&found) || cut_earlier {
            // A store of an earlier complyd, whose import read fewer shapes
            // (before 2, no quote links, forms or embedded ids at all;
            // before 6, twarc's flattened files; before 7, either format's
            // copies inside a post of the other and what an `includes.tweets`
            // copy or a copy it could not store carries): its posts are
            // moved, in transactions of their own, after this one, and the
            // version takes its last step with the move's.
            tx.execute("UPDATE complyd_meta SET value = LEAST(value, $1) WHERE key = 'schema_version'", &[&MOVE_FROM])?;
            // A move not yet started (one under way keeps its place).
            tx.execute(
                "INSERT INTO complyd_meta (key, value) SELECT $1, $2
                 WHERE NOT EXISTS (SELECT 1 FROM complyd_meta WHERE key = ANY($3))",
                &[&MOVE_REREAD_FROM, &i64::MIN, &&MOVE_STEPS[..]],
            )?;
            if found == 1 {
                tx.execute(
                    "INSERT INTO complyd_meta (key, value) VALUES ($1, 1) ON CONFLICT (key) DO NOTHING",
                    &[&MOVE_EVERY_CARRIER],
                )?;
            }
        }
        // Most opens find no move under way: no transaction more for them.
        let moving: bool =
            tx.query_one("SELECT EXISTS (SELECT 1 FROM complyd_meta WHERE key = ANY($1))", &[&&MOVE_STEPS[..]])?.get(0);
        tx.commit()?;
        if !moving {
            return Ok(true);
        }
        self.move_posts(batches)
    }

    /// Moves the stored posts of an earlier complyd's store, `batches.rows`
    /// posts a transaction, with how far it got kept in `complyd_meta`: a
    /// move cut short (a kill, a lost connection, a full disk) goes on from
    /// its last commit at the next open, and every process that opens the
    /// store meanwhile takes its share of the batches (each holds the
    /// migration lock) and returns only once the move is done.
    ///
    /// First every post, its own line's or a copy's, is read with today's
    /// import and re-imported where its row lists less than it carries (all
    /// those that may carry another, from version 1); then the carriers of
    /// copies are linked; then what was withdrawn is taken out of them,
    /// `batches.rows` withdrawn ids a transaction ([`withdraw_batch`]).
    /// Returns false when `batches.stop_after` stopped it first (a test's
    /// cut).
    fn move_posts(&mut self, batches: MoveBatches) -> Result<bool, StoreError> {
        let (mut done, mut rewritten) = (0, 0);
        loop {
            if batches.cut(done) {
                return Ok(false);
            }
            let mut tx = self.client.transaction()?;
            tx.execute(LOCK_MIGRATE, &[])?;
            let meta: HashMap<String, i64> = tx
                .query("SELECT key, value FROM complyd_meta WHERE key = ANY($1)", &[&&MOVE_KEYS[..]])?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let mut total = Reread::from_counts(MOVE_COUNTS.map(|k| meta.get(k).copied().unwrap_or(0)));
            let mut batch = Reread::default();
            let mut c = Conn { tx: &mut tx, statements: &mut self.statements };
            let (step, next) = if let Some(&from) = meta.get(MOVE_REREAD_FROM) {
                let every = meta.contains_key(MOVE_EVERY_CARRIER);
                match reread_batch(&mut c, from, batches.rows, every, &mut batch)? {
                    Some(next) => (MOVE_REREAD_FROM, next),
                    None => {
                        c.execute("DELETE FROM complyd_meta WHERE key = $1", &[&MOVE_REREAD_FROM])?;
                        (MOVE_LINK_FROM, i64::MIN)
                    }
                }
            } else if let Some(&from) = meta.get(MOVE_LINK_FROM) {
                let (next, links) = link_batch(&mut c, from, batches.rows)?;
                batch.links = links;
                match next {
                    Some(next) => (MOVE_LINK_FROM, next),
                    None => {
                        c.execute("DELETE FROM complyd_meta WHERE key = $1", &[&MOVE_LINK_FROM])?;
                        (WITHDRAW_FROM[0], i64::MIN)
                    }
                }
            } else if let Some((at, from)) =
                WITHDRAW_FROM.iter().enumerate().find_map(|(at, k)| meta.get(*k).map(|from| (at, *from)))
            {
                let (went_on, n) = withdraw_batch(&mut c, at, from, batches.rows)?;
                rewritten += n;
                c.execute("DELETE FROM complyd_meta WHERE key = $1", &[&WITHDRAW_FROM[at]])?;
                match went_on {
                    Some(step) => step,
                    None => {
                        c.execute("DELETE FROM complyd_meta WHERE key = ANY($1)", &[&&MOVE_KEYS[..]])?;
                        c.execute(
                            "UPDATE complyd_meta SET value = $1 WHERE key = 'schema_version'",
                            &[&SCHEMA_VERSION],
                        )?;
                        tx.commit()?;
                        total.log(SCHEMA_VERSION, rewritten);
                        return Ok(true);
                    }
                }
            } else {
                // Nothing to move, or another process finished it.
                return Ok(true);
            };
            total += batch;
            for (k, v) in [(step, next)].into_iter().chain(MOVE_COUNTS.into_iter().zip(total.counts())) {
                c.execute(
                    "INSERT INTO complyd_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&k, &v],
                )?;
            }
            tx.commit()?;
            done += 1;
            total.progress(done, step, next);
        }
    }

    /// Keeps this session's plans to the indexes, for a connection that
    /// only looks rows up by key. Its statements are prepared once, and
    /// after five runs PostgreSQL may keep a generic plan made against the
    /// tables as they were then: on a new store, sequential scans that every
    /// later lookup repeats over the grown tables until autovacuum next
    /// analyzes them (as [`Self::with_tx`] says for the handlers).
    ///
    /// # Errors
    /// Database errors.
    pub fn keep_to_indexes(&mut self) -> Result<(), StoreError> {
        self.client.batch_execute("SET enable_seqscan = off")?;
        Ok(())
    }

    /// Brings an empty schema to `version` exactly (for migration tests: a
    /// store as an older complyd left it).
    ///
    /// # Errors
    /// Connection or database errors.
    #[doc(hidden)]
    pub fn create_at_version(url: &str, version: i64) -> Result<(), StoreError> {
        let mut client = Client::connect(url, postgres::NoTls)?;
        let mut tx = client.transaction()?;
        tx.batch_execute("CREATE TABLE complyd_meta (key text PRIMARY KEY, value bigint NOT NULL)")?;
        for sql in MIGRATIONS.iter().take(usize::try_from(version).unwrap_or(0)) {
            tx.batch_execute(sql)?;
        }
        tx.execute("INSERT INTO complyd_meta (key, value) VALUES ('schema_version', $1)", &[&version])?;
        tx.commit()?;
        Ok(())
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// Database errors.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_opt("SELECT value FROM complyd_meta WHERE key = 'schema_version'", &[])?
            .map_or(0, |r| r.get(0)))
    }

    /// A statement of this session, prepared on first use.
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// Runs `f` in a transaction, retried on deadlock or serialization
    /// failure (concurrent writers).
    fn with_tx<T>(&mut self, mut f: impl FnMut(&mut Conn<'_, '_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            let mut tx = self.client.transaction()?;
            // The session's statements are prepared once, and after five
            // runs PostgreSQL may keep a generic plan made against the
            // tables as they were then: a new store's tiny tables give
            // sequential scans, which every later transaction repeats over
            // the grown tables until autovacuum next analyzes them (a
            // minute or more at full rate, each transaction slower than the
            // last). Every statement here finds its rows by key, so the
            // plans are kept to the indexes. (Planning each transaction's
            // statements afresh instead, for its arrays of up to 65,536
            // ids, cost a quarter of the rate.)
            tx.batch_execute("SET LOCAL enable_seqscan = off")?;
            let res = f(&mut Conn { tx: &mut tx, statements: &mut self.statements });
            match res.and_then(|v| tx.commit().map(|()| v).map_err(StoreError::from)) {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < RETRIES => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "Store transaction conflicted with another writer; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn sorted_unique(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v.dedup();
    v
}

fn save_positions(c: &mut Conn<'_, '_>, handler: HandlerKind, positions: &[Position]) -> Result<(), StoreError> {
    if positions.is_empty() {
        return Ok(());
    }
    let parts: Vec<i32> = positions.iter().map(|p| i32::from(p.partition)).collect();
    let ev: Vec<i64> = positions.iter().map(|p| p.last_event_ms).collect();
    let by: Vec<i64> = positions.iter().map(|p| p.last_byte_ms).collect();
    c.execute(
        "INSERT INTO positions (handler, partition, last_event_ms, last_byte_ms)
         SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::bigint[])
         ON CONFLICT (handler, partition) DO UPDATE SET
           last_event_ms = GREATEST(positions.last_event_ms, excluded.last_event_ms),
           last_byte_ms = GREATEST(positions.last_byte_ms, excluded.last_byte_ms)",
        &[&handler.as_str(), &parts, &ev, &by],
    )?;
    Ok(())
}

/// Tombstones `ids` (sorted) with `reason`; returns those that were new.
fn add_tombstones(c: &mut Conn<'_, '_>, ids: &[i64], reason: i16) -> Result<HashSet<i64>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(c.query(
        "INSERT INTO tombstones (id, reason) SELECT unnest($1::bigint[]), $2 ON CONFLICT DO NOTHING RETURNING id",
        &[&ids, &reason],
    )?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// Removes the content of `ids` and of every stored retweet of them (which
/// become tombstones), and their copies (and the profiles of the `purged`
/// users) from the posts that carry them, each carrier rewritten once.
/// Returns (posts removed, retweets cascaded, carriers rewritten).
fn delete_content(c: &mut Conn<'_, '_>, ids: &[i64], purged: &[i64]) -> Result<(u64, u64, u64), StoreError> {
    if ids.is_empty() {
        return Ok((0, 0, remove_copies(c, &[], &[], purged)?));
    }
    // Each removed row takes its own links as a carrier with it.
    let removed = c.query("DELETE FROM posts WHERE id = ANY($1) RETURNING id, retweet_of, embeds", &[&ids])?;
    let cascaded = c.query("DELETE FROM posts WHERE retweet_of = ANY($1) RETURNING id, retweet_of, embeds", &[&ids])?;
    let carriers = removed
        .iter()
        .chain(&cascaded)
        .map(|r| {
            let embeds = Embeds::from_column(r.get::<_, Option<&str>>(2));
            (id_of(r.get(0)), r.get::<_, Option<i64>>(1).map(id_of), embeds)
        })
        .collect::<Vec<_>>();
    for l in carrier_links(carriers.iter().map(|(id, rt, e)| (*id, *rt, e))) {
        if !l.carried.is_empty() {
            c.execute(
                &format!(
                    "DELETE FROM {table} l USING unnest($1::bigint[], $2::bigint[]) AS u(carried, post_id)
                     WHERE l.{column} = u.carried AND l.post_id = u.post_id",
                    table = l.table,
                    column = l.column
                ),
                &[&l.carried, &l.posts],
            )?;
        }
    }
    let removed = removed.len() as u64;
    let retweets: Vec<i64> = sorted_unique(cascaded.iter().map(|r| r.get(0)).collect());
    add_tombstones(c, &retweets, TOMBSTONE_CASCADE)?;
    let rewritten = remove_copies(c, &sorted_unique([ids, &retweets].concat()), &[], purged)?;
    Ok((removed, retweets.len() as u64, rewritten))
}

/// Links of one table, from what posts carry to the posts: `carried[i]`
/// is carried by `posts[i]`.
struct Links {
    table: &'static str,
    /// The column naming what is carried (a post's or a user's id).
    column: &'static str,
    carried: Vec<i64>,
    posts: Vec<i64>,
}

/// The links `posts` (id, retweet_of, embeds) have, for each link table
/// (`embedded_in`, `embedded_users`), sorted, without repeats.
fn carrier_links<'a>(posts: impl Iterator<Item = (Id, Option<Id>, &'a Embeds)> + Clone) -> [Links; 2] {
    let links = |table, column, mut pairs: Vec<(i64, i64)>| {
        pairs.sort_unstable();
        pairs.dedup();
        let (carried, posts) = pairs.into_iter().unzip();
        Links { table, column, carried, posts }
    };
    [
        links(
            "embedded_in",
            "embedded_id",
            posts
                .clone()
                .flat_map(|(id, rt, e)| rules::embedded::tracked_copies(e, rt).map(move |c| (key(c), key(id))))
                .collect(),
        ),
        links(
            "embedded_users",
            "user_id",
            posts.flat_map(|(id, _, e)| rules::embedded::tracked_users(e).map(move |u| (key(u), key(id)))).collect(),
        ),
    ]
}

/// Links each of `posts` to the copies and the profiles it carries
/// (`embedded_in`, `embedded_users`).
fn link_copies_of(c: &mut Conn<'_, '_>, posts: &[&NewPost]) -> Result<u64, StoreError> {
    let mut links = 0;
    for l in carrier_links(posts.iter().map(|p| (p.id, p.retweet_of, &p.embeds))) {
        if l.carried.is_empty() {
            continue;
        }
        links += c.execute(
            &format!(
                "INSERT INTO {} ({}, post_id) SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING",
                l.table, l.column
            ),
            &[&l.carried, &l.posts],
        )?;
    }
    Ok(links)
}

/// Takes the copies of the tombstones `gone` (sorted), the geo of the
/// copies of the `scrubbed` posts and the profiles of the `purged` users
/// out of the stored posts that carry them (`embedded_in`,
/// `embedded_users`, and the retweets of a scrubbed post), then drops the
/// links of the tombstones and purged users: their later carriers lose them
/// at import. Returns how many posts were rewritten.
fn remove_copies(c: &mut Conn<'_, '_>, gone: &[i64], scrubbed: &[i64], purged: &[i64]) -> Result<u64, StoreError> {
    if gone.is_empty() && scrubbed.is_empty() && purged.is_empty() {
        return Ok(0);
    }
    // The carriers' ids first, each set by its own index: one query with
    // `id IN (..) OR retweet_of = ANY(..)` walked the whole table.
    let carrier_ids: Vec<i64> = c
        .query(
            "SELECT post_id FROM embedded_in WHERE embedded_id = ANY($1)
             UNION SELECT id FROM posts WHERE retweet_of = ANY($2)
             UNION SELECT post_id FROM embedded_users WHERE user_id = ANY($3)",
            &[&[gone, scrubbed].concat(), &scrubbed, &purged],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if carrier_ids.is_empty() {
        return Ok(0);
    }
    let carriers =
        // Locked (in id order) until the rewrite commits: an import running
        // beside this one may rewrite the same carrier for another copy.
        c.query(&format!("SELECT {POST_COLS} FROM posts WHERE id = ANY($1) ORDER BY id FOR UPDATE"), &[&carrier_ids])?;
    let withdrawn = rules::embedded::Withdrawn {
        tombstones: gone.iter().map(|k| id_of(*k)).collect(),
        scrubbed: scrubbed.iter().map(|k| id_of(*k)).collect(),
        purged_users: purged.iter().map(|k| id_of(*k)).collect(),
    };
    let (mut ids, mut embeds, mut jsons) = (Vec::new(), Vec::new(), Vec::new());
    for row in &carriers {
        if let Some(p) = rules::embedded::without_withdrawn(&post_from(row, 0)?, &withdrawn) {
            ids.push(key(p.id));
            embeds.push(p.embeds.to_column());
            jsons.push(p.json);
        }
    }
    if !ids.is_empty() {
        c.execute(
            "UPDATE posts p SET embeds = u.e, json = u.j FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, e, j)
             WHERE p.id = u.id",
            &[&ids, &embeds, &jsons],
        )?;
    }
    c.execute("DELETE FROM embedded_in WHERE embedded_id = ANY($1)", &[&gone])?;
    c.execute("DELETE FROM embedded_users WHERE user_id = ANY($1)", &[&purged])?;
    Ok(ids.len() as u64)
}

/// Links the carriers of copies among the `rows` stored posts from the key
/// `from` on that list embedded ids (a move's second step). Returns the
/// key to go on from (`None`: no post is left) and the links made.
fn link_batch(c: &mut Conn<'_, '_>, from: i64, rows: i64) -> Result<(Option<i64>, u64), StoreError> {
    let rows = c.query(
        &format!("SELECT {POST_COLS} FROM posts WHERE id >= $1 AND embeds IS NOT NULL ORDER BY id LIMIT $2"),
        &[&from, &rows],
    )?;
    let Some(last) = rows.last() else { return Ok((None, 0)) };
    let next = last.get::<_, i64>(0).checked_add(1);
    let posts: Vec<NewPost> = rows.iter().map(|r| post_from(r, 0)).collect::<Result<_, _>>()?;
    Ok((next, link_copies_of(c, &posts.iter().collect::<Vec<_>>())?))
}

/// One transaction of the move's last steps ([`WITHDRAW_FROM`], step
/// `at`): the `rows` withdrawn ids from the key `from` on, taken out of
/// their carriers ([`remove_copies`]; done twice, it changes nothing
/// twice). A store written before version 5 kept those in the carriers'
/// JSON, one before 7 those it did not list. Returns the mark to go on
/// from (`None`: nothing is left) and how many posts were rewritten.
fn withdraw_batch(
    c: &mut Conn<'_, '_>,
    at: usize,
    from: i64,
    rows: i64,
) -> Result<(Option<MoveMark>, u64), StoreError> {
    let sql = match at {
        0 => {
            "SELECT DISTINCT e.embedded_id, 0::bigint FROM embedded_in e JOIN tombstones t ON t.id = e.embedded_id
              WHERE e.embedded_id >= $1 ORDER BY 1 LIMIT $2"
        }
        1 => {
            "SELECT DISTINCT user_id, 0::bigint FROM embedded_users
              WHERE user_id >= $1 AND user_id IN (SELECT user_id FROM purge_done) ORDER BY 1 LIMIT $2"
        }
        _ => {
            "SELECT p.id, u.scrub_up_to FROM posts p JOIN user_state u ON u.id = p.author_id
              WHERE p.id >= $1 AND u.scrub_up_to IS NOT NULL AND (p.id IN (SELECT embedded_id FROM embedded_in)
                OR EXISTS (SELECT 1 FROM posts r WHERE r.retweet_of = p.id)) ORDER BY p.id LIMIT $2"
        }
    };
    let found: Vec<(i64, i64)> = c.query(sql, &[&from, &rows])?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let next = withdraw_next(&WITHDRAW_FROM, at, found.last().map(|(id, _)| *id));
    if found.is_empty() {
        return Ok((next, 0));
    }
    let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
    let rewritten = match at {
        0 => remove_copies(c, &ids, &[], &[])?,
        1 => remove_copies(c, &[], &[], &ids)?,
        _ => remove_copies(c, &[], &scrub_covered(&found), &[])?,
    };
    Ok((next, rewritten))
}

/// Writes posts none of which is stored yet (a stored one fails the COPY with
/// a unique violation).
fn copy_posts(c: &mut Conn<'_, '_>, rows: &[&Planned]) -> Result<(), StoreError> {
    let sink = c.tx.copy_in(
        "COPY posts (id, author_id, retweet_of, quote_of, has_geo, form, embeds, json) FROM STDIN (FORMAT binary)",
    )?;
    let types = [Type::INT8, Type::INT8, Type::INT8, Type::INT8, Type::BOOL, Type::INT2, Type::TEXT, Type::TEXT];
    let mut w = BinaryCopyInWriter::new(sink, &types);
    for Planned { post: r, .. } in rows {
        let form = r.form.as_i64() as i16;
        w.write(&[
            &key(r.id),
            &key(r.author_id),
            &r.retweet_of.map(key),
            &r.quote_of.map(key),
            &r.has_geo,
            &form,
            &r.embeds.to_column(),
            &r.json,
        ])?;
    }
    w.finish()?;
    Ok(())
}

/// Writes posts as the plan merged them. Should another importer have
/// written one of them meanwhile, the links it knew are kept all the same.
fn upsert_posts(c: &mut Conn<'_, '_>, rows: &[&Planned]) -> Result<(), StoreError> {
    let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for Planned { post: r, .. } in rows {
        cols.0.push(key(r.id));
        cols.1.push(key(r.author_id));
        cols.2.push(r.retweet_of.map(key));
        cols.3.push(r.quote_of.map(key));
        cols.4.push(r.has_geo);
        cols.5.push(r.form.as_i64() as i16);
        cols.6.push(r.embeds.to_column());
        cols.7.push(r.json.as_str());
    }
    c.execute(
        "INSERT INTO posts (id, author_id, retweet_of, quote_of, has_geo, form, embeds, json)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[], $6::smallint[],
                              $7::text[], $8::text[])
         ON CONFLICT (id) DO UPDATE SET author_id = excluded.author_id,
           retweet_of = COALESCE(excluded.retweet_of, posts.retweet_of),
           quote_of = COALESCE(excluded.quote_of, posts.quote_of),
           has_geo = excluded.has_geo, form = excluded.form, embeds = excluded.embeds, json = excluded.json",
        &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6, &cols.7],
    )?;
    Ok(())
}

/// Reads the stored JSON of the `rows` posts from the key `from` on with
/// today's import and imports again those whose row does not list all
/// they carry, or, with `every_carrier`, every one that may carry another
/// ([`crate::post::relisted`]), so that what they carry is stored and
/// listed (a move's first step). A row whose JSON no longer reads as a post
/// is listed as unreadable, so that every answer judges it. Returns the key
/// to go on from, or `None` when no post is left.
fn reread_batch(
    c: &mut Conn<'_, '_>,
    from: i64,
    rows: i64,
    every_carrier: bool,
    r: &mut Reread,
) -> Result<Option<i64>, StoreError> {
    // Whether the row may carry another post: searched in its JSON only
    // when it is to be imported again for that.
    let carrier = if every_carrier {
        "retweet_of IS NOT NULL OR strpos(json, '\"quoted_status\"') > 0 OR strpos(json, '\"includes\"') > 0"
    } else {
        "false"
    };
    let rows: Vec<(i64, i16, Option<String>, String, bool)> = c
        .query(
            &format!("SELECT id, form, embeds, json, {carrier} FROM posts WHERE id >= $1 ORDER BY id LIMIT $2"),
            &[&from, &rows],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let Some(&(last, ..)) = rows.last() else { return Ok(None) };
    let mut again = Vec::new();
    for (id, form, embeds, json, carrier) in &rows {
        let every = every_carrier && *carrier;
        if let Some(embeds) = r.row(json, embeds.as_deref(), i64::from(*form), every, &mut again) {
            c.execute("UPDATE posts SET embeds = $2 WHERE id = $1", &[id, &embeds])?;
        }
    }
    if !again.is_empty() {
        PostgresStore::import_once(c, &again, &[], crate::clock::now_ms())?;
    }
    Ok(last.checked_add(1))
}

fn load_users(c: &mut Conn<'_, '_>, ids: &[i64], lock: bool) -> Result<HashMap<Id, UserState>, StoreError> {
    let sql = format!(
        "SELECT id, {USER_COLS} FROM user_state WHERE id = ANY($1) ORDER BY id{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let mut out = HashMap::with_capacity(ids.len());
    for row in c.query(&sql, &[&ids])? {
        out.insert(id_of(row.get(0)), user_from(&row, 1)?);
    }
    Ok(out)
}

impl PostgresStore {
    fn apply_status_once(
        c: &mut Conn<'_, '_>,
        events: &StatusEvents,
        positions: &[Position],
    ) -> Result<ApplyStats, StoreError> {
        let mut stats = ApplyStats::default();
        let batch = StatusBatch::of(events);
        // Deletes: the tombstone set says which are new, and those alone
        // are queued for the maintenance pass, in the server (the ids of a
        // transaction's new tombstones never come back as rows).
        let mut new_tombstones = 0;
        if !batch.deletes.is_empty() {
            let deletes: Vec<i64> = batch.deletes.iter().map(|id| key(*id)).collect();
            new_tombstones = c.execute(
                "WITH new AS (
                   INSERT INTO tombstones (id, reason) SELECT unnest($1::bigint[]), $2
                   ON CONFLICT DO NOTHING RETURNING id)
                 INSERT INTO content_pending (id) SELECT id FROM new ORDER BY id",
                &[&deletes, &TOMBSTONE_DELETE],
            )?;
        }
        let mut new_like_tombstones = 0;
        if !batch.like_deletes.is_empty() {
            let (us, ps): (Vec<i64>, Vec<i64>) = batch.like_deletes.iter().map(|(u, p)| (key(*u), key(*p))).unzip();
            let counted = c.query(
                "WITH gone AS (
                   INSERT INTO like_tombstones (user_id, post_id) SELECT * FROM unnest($1::bigint[], $2::bigint[])
                   ON CONFLICT DO NOTHING RETURNING 1)
                 SELECT count(*) FROM gone",
                &[&us, &ps],
            )?;
            new_like_tombstones = counted.first().map_or(0, |r| r.get::<_, i64>(0)) as u64;
            c.execute(
                "DELETE FROM likes l USING unnest($1::bigint[], $2::bigint[]) AS d(u, p) WHERE l.user_id = d.u AND l.post_id = d.p",
                &[&us, &ps],
            )?;
        }
        batch.record_tombstones(new_tombstones, new_like_tombstones, &mut stats);
        // Status state rows: created when missing, locked in id order.
        let touched = sorted_unique(batch.touched.iter().map(|id| key(*id)).collect());
        let mut loaded: HashMap<Id, StatusState> = HashMap::with_capacity(touched.len());
        if !touched.is_empty() {
            c.execute("INSERT INTO status_state (id) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING", &[&touched])?;
            let sql = format!("SELECT id, {STATUS_COLS} FROM status_state WHERE id = ANY($1) ORDER BY id FOR UPDATE");
            for row in c.query(&sql, &[&touched])? {
                loaded.insert(id_of(row.get(0)), status_from(&row, 1)?);
            }
        }
        let changed = rules::status::merge_batch(events.state(), loaded, &mut stats);
        if !changed.is_empty() {
            let (mut ids, mut d, mut dt, mut sb, mut w) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (id, s) in &changed {
                let (on, t) = toggle_cols(s.dropped);
                ids.push(key(*id));
                d.push(on);
                dt.push(t);
                sb.push(s.superseded_by.map(key));
                w.push(countries_to_text(&s.withheld));
            }
            c.execute(
                "UPDATE status_state s SET dropped = u.d, drop_t = u.dt, superseded_by = u.sb, withheld = u.w
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[]) AS u(id, d, dt, sb, w)
                 WHERE s.id = u.id",
                &[&ids, &d, &dt, &sb, &w],
            )?;
        }
        save_positions(c, HandlerKind::Status, positions)?;
        Ok(stats)
    }

    fn apply_user_once(
        c: &mut Conn<'_, '_>,
        events: &[Timed<UserEvent>],
        positions: &[Position],
    ) -> Result<ApplyStats, StoreError> {
        let mut stats = ApplyStats::default();
        let ids = sorted_unique(rules::user::batch_users(events).into_iter().map(key).collect());
        if !ids.is_empty() {
            c.execute("INSERT INTO user_state (id) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING", &[&ids])?;
        }
        let loaded = load_users(c, &ids, true)?;
        let changed = rules::user::merge_batch(events, loaded, &mut stats);
        if !changed.is_empty() {
            let mut cols: [Vec<Option<i64>>; 6] = Default::default();
            let (mut ids, mut withheld, mut scrub, mut log, mut purge) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for u in &changed {
                let s = &u.state;
                ids.push(key(u.id));
                for (i, t) in [s.deleted, s.protected, s.suspended].into_iter().enumerate() {
                    let (on, at) = toggle_cols(t);
                    cols[2 * i].push(on);
                    cols[2 * i + 1].push(at);
                }
                withheld.push(countries_to_text(&s.withheld));
                scrub.push(s.scrub_up_to.map(key));
                log.push(s.delete_log_text());
                purge.push(s.purge_at());
            }
            c.execute(
                "UPDATE user_state s SET deleted = u.d, deleted_t = u.dt, protected = u.p, protected_t = u.pt,
                   suspended = u.s, suspended_t = u.st, withheld = u.w, scrub_up_to = u.sc, delete_log = u.l, purge_at = u.pa
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
                             $8::text[], $9::bigint[], $10::text[], $11::bigint[])
                   AS u(id, d, dt, p, pt, s, st, w, sc, l, pa)
                 WHERE s.id = u.id",
                &[&ids, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &withheld, &scrub, &log, &purge],
            )?;
            let scrubbed = sorted_unique(changed.iter().filter(|u| u.scrubbed).map(|u| key(u.id)).collect());
            if !scrubbed.is_empty() {
                c.execute(
                    "INSERT INTO geo_scrub_pending (user_id) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING",
                    &[&scrubbed],
                )?;
            }
        }
        save_positions(c, HandlerKind::User, positions)?;
        Ok(stats)
    }

    fn import_once(
        c: &mut Conn<'_, '_>,
        posts: &[NewPost],
        likes: &[NewLike],
        now_ms: TimeMs,
    ) -> Result<ImportStats, StoreError> {
        c.execute(LOCK_IMPORT, &[])?;
        let mut loaded = Loaded::default();
        let ids: Vec<i64> = Loaded::post_ids(posts).into_iter().map(key).collect();
        for row in c.query(&format!("SELECT {POST_COLS} FROM posts WHERE id = ANY($1)"), &[&ids])? {
            let post = post_from(&row, 0)?;
            loaded.rows.insert(post.id, post);
        }
        let ids: Vec<i64> = Loaded::tombstone_ids(posts, &loaded.rows).into_iter().map(key).collect();
        loaded.tombstones =
            c.query("SELECT id FROM tombstones WHERE id = ANY($1)", &[&ids])?.iter().map(|r| id_of(r.get(0))).collect();
        let ids: Vec<i64> = Loaded::copy_ids(posts, &loaded.rows).into_iter().map(key).collect();
        if !ids.is_empty() {
            loaded.authors = c
                .query("SELECT id, author_id FROM posts WHERE id = ANY($1)", &[&ids])?
                .iter()
                .map(|r| (id_of(r.get(0)), id_of(r.get(1))))
                .collect();
        }
        let users: Vec<i64> = Loaded::user_ids(posts, &loaded.authors).into_iter().map(key).collect();
        loaded.users = load_users(c, &users, false)?;
        let plan = import::plan(posts, loaded, now_ms);
        let mut stats = plan.stats;
        if !plan.tombstones.is_empty() {
            let (ids, reasons): (Vec<i64>, Vec<i16>) =
                plan.tombstones.iter().map(|(id, why)| (key(*id), tombstone_reason(*why))).unzip();
            // A new tombstone may have a row (a form stored before its
            // delete was known) and carriers: the maintenance pass removes
            // them, as for a delete.
            c.execute(
                "WITH new AS (
                   INSERT INTO tombstones (id, reason) SELECT * FROM unnest($1::bigint[], $2::smallint[])
                   ON CONFLICT DO NOTHING RETURNING id)
                 INSERT INTO content_pending (id) SELECT id FROM new ORDER BY id",
                &[&ids, &reasons],
            )?;
        }
        link_copies_of(c, &plan.rows.iter().map(|r| &r.post).collect::<Vec<_>>())?;
        let (stored, new): (Vec<&Planned>, Vec<&Planned>) = plan.rows.iter().partition(|r| r.stored);
        if !stored.is_empty() {
            upsert_posts(c, &stored)?;
        }
        if !new.is_empty() {
            // New posts, the usual case, go in with one binary COPY (the
            // server inserts them in pages rather than row by row, and has no
            // 50,000-element arrays to unpack). When another importer stored
            // one of them meanwhile, the COPY fails on the primary key: the
            // savepoint undoes it and they are written with the upsert.
            c.tx.batch_execute("SAVEPOINT import_copy")?;
            match copy_posts(c, &new) {
                Ok(()) => c.tx.batch_execute("RELEASE SAVEPOINT import_copy")?,
                Err(StoreError::Postgres(e)) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    c.tx.batch_execute("ROLLBACK TO SAVEPOINT import_copy")?;
                    upsert_posts(c, &new)?;
                }
                Err(e) => return Err(e),
            }
        }
        if !plan.scrubbed_new.is_empty() {
            let scrubbed: Vec<i64> = plan.scrubbed_new.iter().map(|id| key(*id)).collect();
            remove_copies(c, &[], &scrubbed, &[])?;
        }
        if !likes.is_empty() {
            let mut pairs: Vec<(i64, i64)> = likes.iter().map(|l| (key(l.user_id), key(l.post_id))).collect();
            pairs.sort_unstable();
            pairs.dedup();
            let (us, ps): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
            let gone: HashSet<(Id, Id)> = c
                .query(
                    "SELECT t.user_id, t.post_id FROM like_tombstones t
                     JOIN unnest($1::bigint[], $2::bigint[]) AS d(u, p) ON t.user_id = d.u AND t.post_id = d.p",
                    &[&us, &ps],
                )?
                .iter()
                .map(|r| (id_of(r.get(0)), id_of(r.get(1))))
                .collect();
            let tombstoned: HashSet<Id> = c
                .query("SELECT id FROM tombstones WHERE id = ANY($1)", &[&ps])?
                .iter()
                .map(|r| id_of(r.get(0)))
                .collect();
            let keep = import::plan_likes(likes, &gone, &tombstoned, &mut stats);
            let (us, ps): (Vec<i64>, Vec<i64>) = keep.into_iter().map(|(u, p)| (key(u), key(p))).unzip();
            c.execute(
                "INSERT INTO likes (user_id, post_id) SELECT * FROM unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING",
                &[&us, &ps],
            )?;
        }
        Ok(stats)
    }
}

/// The facts of embedded posts and users for a chunk of a scan, on the
/// look-up connection, in the scan's snapshot.
struct PgLookup<'a> {
    client: &'a mut Option<Client>,
    url: &'a str,
    tls: &'a crate::tls::PostgresTls,
    snapshot: String,
    /// A transaction in the snapshot is open on `client`.
    open: bool,
}

impl PgLookup<'_> {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            *self.client = None;
        }
        if self.client.is_none() {
            let c = Client::connect(self.url, self.tls.clone()).map_err(|e| {
                StoreError::Connect(format!("cannot open the look-up connection to {}: {e}", redact_url(self.url)))
            })?;
            *self.client = Some(c);
        }
        let c = self.client.as_mut().expect("connected above");
        if !self.open {
            c.batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                self.snapshot.replace('\'', "")
            ))?;
            self.open = true;
        }
        Ok(c)
    }

    /// Ends the look-up transaction, if one was opened.
    fn close(&mut self) {
        if self.open {
            if let Some(c) = self.client.as_mut() {
                if c.batch_execute("COMMIT").is_err() {
                    *self.client = None;
                }
            }
            self.open = false;
        }
    }
}

impl Lookup for PgLookup<'_> {
    fn lookup(&mut self, posts: &[Id], users: &[Id], into: &mut EmbeddedFacts) -> Result<(), StoreError> {
        let posts: Vec<i64> = posts.iter().map(|id| key(*id)).collect();
        let users: Vec<i64> = users.iter().map(|id| key(*id)).collect();
        let c = self.client()?;
        if !posts.is_empty() {
            for row in c.query(&format!("{SCAN_SELECT} WHERE p.id = ANY($1)"), &[&posts])? {
                let s = scanned_from(&row)?;
                into.posts.insert(s.id, s.facts);
            }
        }
        if !users.is_empty() {
            for row in c.query(&format!("SELECT id, {USER_COLS} FROM user_state WHERE id = ANY($1)"), &[&users])? {
                into.users.insert(id_of(row.get(0)), user_from(&row, 1)?);
            }
        }
        Ok(())
    }
}

/// The facts of the posts `keys` (SQL naming a one-column relation `k(id)`),
/// one row each, stored or not: [`SCAN_SELECT`]'s columns (those of the
/// post's own rows NULL for a post not stored; its tombstone's either way),
/// then its key.
///
/// Every id costs one round trip and the same eight index lookups: where a
/// post has no row (deleted, or never stored) its id stands in for the
/// author's and the original's, rows that are looked up and not read. So
/// no answer's timing tells a deleted post, an id never stored and a stored
/// post hidden for its author apart by the lookups made (until 2026-12-07 a
/// post with no row took a second round trip, about 50 µs on loopback and a
/// whole round trip over a network; then, with one query, a stored post's
/// lookups still cost 20-35 µs more: BENCHMARKS.md, "Does timing tell a
/// withdrawn post apart?"). The columns a post that is not a retweet has
/// for its original describe itself, and [`scanned_from`] never reads them;
/// a retweet whose original is not stored reads no author for it.
/// The post's JSON is not sent (NULL in its place): the facts do not read
/// it, and its size would set a stored post's answers apart.
fn facts_sql(keys: &str) -> String {
    let (columns, _) = SCAN_SELECT.split_once("FROM posts p").expect("SCAN_SELECT reads posts p");
    // The original's author is known only when the original is stored
    // (else `qu` is the stand-in's row).
    let columns = columns.replacen("p.json,", "NULL,", 1).replacen(
        "qu.id IS NOT NULL",
        "q.id IS NOT NULL AND qu.id IS NOT NULL",
        1,
    );
    debug_assert!(!columns.contains("p.json") && columns.contains("AND qu.id"));
    format!(
        "{columns}, k.id FROM {keys}
         LEFT JOIN posts p ON p.id = k.id
         LEFT JOIN tombstones pt ON pt.id = k.id
         LEFT JOIN status_state s ON s.id = k.id
         LEFT JOIN user_state u ON u.id = coalesce(p.author_id, k.id)
         LEFT JOIN posts q ON q.id = coalesce(p.retweet_of, k.id)
         LEFT JOIN tombstones qt ON qt.id = coalesce(p.retweet_of, k.id)
         LEFT JOIN status_state qs ON qs.id = coalesce(p.retweet_of, k.id)
         LEFT JOIN user_state qu ON qu.id = coalesce(q.author_id, k.id)"
    )
}

/// One row of [`facts_sql`].
fn facts_from(row: &Row) -> Result<Facts, StoreError> {
    if row.i64_opt(0)?.is_some() {
        return Ok(scanned_from(row)?.facts);
    }
    let tombstone = row.flag(5)?; // pt.id IS NOT NULL
    Ok(Facts { post: PostView { stored: false, tombstone, ..PostView::default() }, original: None })
}

impl Store for PostgresStore {
    fn apply_status(&mut self, events: &StatusEvents, positions: &[Position]) -> Result<ApplyStats, StoreError> {
        self.with_tx(|c| Self::apply_status_once(c, events, positions))
    }

    fn apply_user(&mut self, events: &[Timed<UserEvent>], positions: &[Position]) -> Result<ApplyStats, StoreError> {
        self.with_tx(|c| Self::apply_user_once(c, events, positions))
    }

    fn import(&mut self, posts: &[NewPost], likes: &[NewLike], now_ms: TimeMs) -> Result<ImportStats, StoreError> {
        self.with_tx(|c| Self::import_once(c, posts, likes, now_ms))
    }

    fn facts(&mut self, id: Id) -> Result<Facts, StoreError> {
        static SQL: LazyLock<String> = LazyLock::new(|| facts_sql("(SELECT $1::bigint) k(id)"));
        let st = self.statement(&SQL)?;
        facts_from(&self.client.query_one(&st, &[&key(id)])?)
    }

    /// The same SQL as [`Store::facts`] above ([`facts_sql`]), for many ids:
    /// the property test's check of one against the other finds a fault of
    /// the bulk path, and its check of the export against the rules one of
    /// the SQL.
    fn facts_many(&mut self, ids: &[Id]) -> Result<Vec<Facts>, StoreError> {
        let keys: Vec<i64> = ids.iter().map(|id| key(*id)).collect();
        static SQL: LazyLock<String> = LazyLock::new(|| facts_sql("unnest($1::bigint[]) k(id)"));
        let st = self.statement(&SQL)?;
        let mut found = HashMap::with_capacity(ids.len());
        for row in self.client.query(&st, &[&keys])? {
            found.insert(id_of(row.try_get(SCAN_COLUMNS)?), facts_from(&row)?);
        }
        ids.iter()
            .map(|id| found.get(id).cloned().ok_or_else(|| StoreError::Damaged(format!("no answer for post {id}"))))
            .collect()
    }

    fn user_state(&mut self, id: Id) -> Result<UserState, StoreError> {
        let st = self.statement(&format!("SELECT {USER_COLS} FROM user_state WHERE id = $1"))?;
        match self.client.query_opt(&st, &[&key(id)])? {
            Some(row) => user_from(&row, 0),
            None => Ok(UserState::default()),
        }
    }

    fn scan(&mut self, visit: &mut dyn FnMut(ScanRow<'_>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        // One binary COPY of the whole scan: the server streams while this
        // side decodes (TCP flow control keeps memory flat), where fetching a
        // portal in slices left each side idle while the other worked; and
        // binary fields decode with no per-row allocation.
        let cancel = self.client.cancel_token();
        let PostgresStore { client, lookup, url, tls, .. } = self;
        let mut tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()?;
        // The planner prices the LATERAL lookups (done for retweets only) far
        // above the JIT thresholds: compiling would cost more than it saves.
        // The author's state comes through a cache keyed by author (Memoize)
        // bounded by twice work_mem: at the default 4 MB it holds some 50,000
        // users and keeps evicting; 64 MB holds about ten times as many, for
        // this one query.
        tx.batch_execute("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'")?;
        // Embedded posts are looked up on a second connection, in this
        // transaction's snapshot.
        let snapshot: String = tx.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
        let mut lookups = PgLookup { client: lookup, url, tls, snapshot, open: false };
        let mut reader = tx.copy_out(format!("COPY ({SCAN_ALL_LATERAL}) TO STDOUT (FORMAT binary)").as_str())?;
        CopyRows::read_header(&mut reader)?;
        let mut chunker = Chunker::default();
        let res = CopyRows::default()
            .for_each(&mut reader, |row| {
                if row.fields.len() != SCAN_COLUMNS {
                    return Err(copy_format_error(&format!("{} columns instead of {SCAN_COLUMNS}", row.fields.len())));
                }
                chunker.row(scanned_from(row)?, row.text(4)?, &mut lookups, visit)
            })
            .and_then(|()| chunker.flush(&mut lookups, visit));
        lookups.close();
        drop(reader);
        if res.is_err() {
            // Stopped early (`complyd export | head`): the rollback would
            // otherwise wait for the server to send the rest of the COPY.
            let _ = cancel.cancel_query(self.tls.clone());
            return res;
        }
        tx.commit()?;
        Ok(())
    }

    fn maintain(&mut self, now_ms: TimeMs, max_users: usize) -> Result<MaintenanceStats, StoreError> {
        let limit = i64::try_from(max_users).unwrap_or(i64::MAX);
        self.with_tx(|c| {
            let mut stats = MaintenanceStats::default();
            c.execute(LOCK_MAINTAIN, &[])?;
            // Content of deleted posts and their retweets.
            let max_deleted = limit.saturating_mul(10);
            let queued: Vec<(i64, i64)> = c
                .query("SELECT seq, id FROM content_pending ORDER BY seq LIMIT $1", &[&max_deleted.saturating_add(1)])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let take = queued.len().min(usize::try_from(max_deleted).unwrap_or(usize::MAX));
            if queued.len() > take {
                stats.pending += 1;
            }
            if take > 0 {
                let ids = sorted_unique(queued[..take].iter().map(|q| q.1).collect());
                let (removed, cascaded, rewritten) = delete_content(c, &ids, &[])?;
                stats.posts_deleted += removed;
                stats.retweets_cascaded += cascaded;
                stats.copies_removed += rewritten;
                c.execute("DELETE FROM content_pending WHERE seq <= $1", &[&queued[take - 1].0])?;
            }
            // Purges whose 30 days have passed and that were not carried out
            // for this purge time (see the SQLite store).
            let due: Vec<(i64, i64)> = c
                .query(
                    "SELECT u.id, u.purge_at FROM user_state u LEFT JOIN purge_done d ON d.user_id = u.id
                     WHERE u.purge_at IS NOT NULL AND u.purge_at <= $1 AND (d.at_ms IS NULL OR d.at_ms <> u.purge_at)
                     ORDER BY u.id LIMIT $2",
                    &[&now_ms, &limit.saturating_add(1)],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            for (i, (uid, purge_at)) in due.iter().enumerate() {
                if i >= max_users {
                    stats.pending += 1;
                    break;
                }
                let ids: Vec<i64> = sorted_unique(
                    c.query("SELECT id FROM posts WHERE author_id = $1", &[uid])?.iter().map(|r| r.get(0)).collect(),
                );
                add_tombstones(c, &ids, TOMBSTONE_PURGE)?;
                let (_, cascaded, rewritten) = delete_content(c, &ids, &[*uid])?;
                stats.retweets_cascaded += cascaded;
                stats.copies_removed += rewritten;
                c.execute(
                    "INSERT INTO purge_done (user_id, at_ms) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET at_ms = excluded.at_ms",
                    &[uid, purge_at],
                )?;
                stats.users_purged += 1;
                stats.posts_purged += ids.len() as u64;
            }
            // Geo removal after scrub_geo.
            let pending: Vec<(i64, Option<i64>)> = c
                .query(
                    "SELECT g.user_id, u.scrub_up_to FROM geo_scrub_pending g LEFT JOIN user_state u ON u.id = g.user_id
                     ORDER BY g.user_id LIMIT $1",
                    &[&limit.saturating_add(1)],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            // Every covered post of the pass, whose copies lose their geo at
            // the end (one look-up of their carriers, not one per user).
            let mut covered = Vec::new();
            for (i, (uid, up_to)) in pending.iter().enumerate() {
                if i >= max_users {
                    stats.pending += 1;
                    break;
                }
                if let Some(up_to) = up_to {
                    // The author's posts, with the JSON of those with geo.
                    let rows: Vec<(i64, Option<String>)> = c
                        .query("SELECT id, CASE WHEN has_geo THEN json END FROM posts WHERE author_id = $1", &[uid])?
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .filter(|(id, _)| rules::user::scrub_covers(id_of(*up_to), id_of(*id)))
                        .collect();
                    // The post's own geo.
                    let (mut ids, mut jsons) = (Vec::new(), Vec::new());
                    for (id, json) in rows {
                        covered.push(id);
                        // JSON that cannot be edited keeps its geo flag:
                        // every answer then removes the geo or withholds the
                        // post.
                        if let Some(json) = json.as_deref().and_then(strip_own_geo) {
                            ids.push(id);
                            jsons.push(json);
                        }
                    }
                    stats.posts_geo_scrubbed += ids.len() as u64;
                    c.execute(
                        "UPDATE posts p SET json = u.j, has_geo = false FROM unnest($1::bigint[], $2::text[]) AS u(id, j)
                         WHERE p.id = u.id",
                        &[&ids, &jsons],
                    )?;
                }
                c.execute("DELETE FROM geo_scrub_pending WHERE user_id = $1", &[uid])?;
            }
            stats.copies_removed += remove_copies(c, &[], &sorted_unique(covered), &[])?;
            Ok(stats)
        })
    }

    fn open_gap(&mut self, gap: &NewGap, now_ms: TimeMs) -> Result<i64, StoreError> {
        self.with_tx(|c| {
            let id: i64 = c
                .query(
                    "INSERT INTO gaps (partition, from_ms, to_ms, cause, state, repair, covered_to_ms, opened_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $2, $7) RETURNING id",
                    &[
                        &i32::from(gap.partition),
                        &gap.from_ms,
                        &gap.to_ms,
                        &gap.cause.as_str(),
                        &gap.state.as_str(),
                        &gap.repair.map(Repair::as_str),
                        &now_ms,
                    ],
                )?
                .first()
                .map(|r| r.get(0))
                .ok_or_else(|| StoreError::Protocol("INSERT ... RETURNING gave no row".into()))?;
            c.execute(
                "INSERT INTO gap_history (gap_id, at_ms, state, note) VALUES ($1, $2, $3, $4)",
                &[&id, &now_ms, &gap.state.as_str(), &gap.note],
            )?;
            Ok(id)
        })
    }

    fn move_gap(&mut self, id: i64, m: &GapMove, now_ms: TimeMs) -> Result<bool, StoreError> {
        self.with_tx(|c| {
            let from: Option<String> =
                c.query("SELECT state FROM gaps WHERE id = $1 FOR UPDATE", &[&id])?.first().map(|r| r.get(0));
            if !from.as_deref().and_then(GapState::parse).is_some_and(|f| f.may_move_to(m.to)) {
                return Ok(false);
            }
            c.execute(
                "UPDATE gaps SET state = $2, repair = coalesce($3, repair), covered_to_ms = coalesce($4, covered_to_ms)
                 WHERE id = $1",
                &[&id, &m.to.as_str(), &m.repair.map(Repair::as_str), &m.covered_to_ms],
            )?;
            c.execute(
                "INSERT INTO gap_history (gap_id, at_ms, state, note) VALUES ($1, $2, $3, $4)",
                &[&id, &now_ms, &m.to.as_str(), &m.note],
            )?;
            Ok(true)
        })
    }

    fn gaps(&mut self, unresolved_only: bool) -> Result<Vec<Gap>, StoreError> {
        let filter = gap_filter(unresolved_only);
        let rows: Vec<GapRow> = self
            .client
            .query(&format!("SELECT {GAP_COLS} FROM gaps {filter} ORDER BY from_ms, partition, id"), &[])?
            .iter()
            .map(|r| {
                let partition: i32 = r.get(1);
                (r.get(0), i64::from(partition), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8))
            })
            .collect();
        let history: Vec<GapHistoryRow> = self
            .client
            .query(
                &format!(
                    "SELECT gap_id, at_ms, state, note FROM gap_history
                     WHERE gap_id IN (SELECT id FROM gaps {filter}) ORDER BY seq"
                ),
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        assemble_gaps(rows, history)
    }

    fn positions(&mut self) -> Result<Vec<(HandlerKind, Position)>, StoreError> {
        let rows = self.client.query(
            "SELECT handler, partition, last_event_ms, last_byte_ms FROM positions ORDER BY partition, handler",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let h: &str = r.get(0);
                let part: i32 = r.get(1);
                (
                    if h == "user" { HandlerKind::User } else { HandlerKind::Status },
                    Position {
                        partition: u8::try_from(part).unwrap_or(0),
                        last_event_ms: r.get(2),
                        last_byte_ms: r.get(3),
                    },
                )
            })
            .collect())
    }

    fn batch_jobs(&mut self) -> Result<Vec<BatchJob>, StoreError> {
        let rows = self
            .client
            .query(&format!("SELECT {BATCH_JOB_COLS} FROM batch_jobs ORDER BY kind, run, part, created_ms"), &[])?;
        rows.iter()
            .map(|r| {
                BatchJobRow {
                    job_id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    run: r.try_get(2)?,
                    part: r.try_get(3)?,
                    source: r.try_get(4)?,
                    cursor_from: r.try_get(5)?,
                    cursor_to: r.try_get(6)?,
                    ids: r.try_get(7)?,
                    last_part: r.try_get(8)?,
                    stage: r.try_get(9)?,
                    upload_url: r.try_get(10)?,
                    upload_expires_ms: r.try_get(11)?,
                    download_url: r.try_get(12)?,
                    download_expires_ms: r.try_get(13)?,
                    created_ms: r.try_get(14)?,
                    updated_ms: r.try_get(15)?,
                    result_lines: r.try_get(16)?,
                    note: r.try_get(17)?,
                }
                .into_job()
            })
            .collect()
    }

    fn save_batch_job(&mut self, j: &BatchJob) -> Result<(), StoreError> {
        let st = self.statement(&format!(
            "INSERT INTO batch_jobs ({BATCH_JOB_COLS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (job_id) DO UPDATE SET kind = excluded.kind, run = excluded.run, part = excluded.part,
               source = excluded.source, cursor_from = excluded.cursor_from, cursor_to = excluded.cursor_to,
               ids = excluded.ids, last_part = excluded.last_part, stage = excluded.stage,
               upload_url = excluded.upload_url, upload_expires_ms = excluded.upload_expires_ms,
               download_url = excluded.download_url, download_expires_ms = excluded.download_expires_ms,
               created_ms = excluded.created_ms, updated_ms = excluded.updated_ms,
               result_lines = excluded.result_lines, note = excluded.note"
        ))?;
        self.client.execute(
            &st,
            &[
                &j.job_id,
                &j.kind.as_str(),
                &j.run,
                &i64::from(j.part),
                &j.source.key(),
                &j.cursor_from,
                &j.cursor_to,
                &(j.ids as i64),
                &j.last_part,
                &j.stage.as_str(),
                &j.upload_url,
                &j.upload_expires_ms,
                &j.download_url,
                &j.download_expires_ms,
                &j.created_ms,
                &j.updated_ms,
                &j.result_lines.map(|n| n as i64),
                &j.note,
            ],
        )?;
        Ok(())
    }

    fn id_page(&mut self, kind: BatchType, after: i64, limit: usize) -> Result<Vec<i64>, StoreError> {
        let st = self.statement(match kind {
            BatchType::Tweets => "SELECT id FROM posts WHERE id > $1 ORDER BY id LIMIT $2",
            BatchType::Users => "SELECT DISTINCT author_id FROM posts WHERE author_id > $1 ORDER BY author_id LIMIT $2",
        })?;
        let rows = self.client.query(&st, &[&after, &(limit as i64)])?;
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    fn author_of(&mut self, id: Id) -> Result<Option<Id>, StoreError> {
        let st = self.statement("SELECT author_id FROM posts WHERE id = $1")?;
        Ok(self.client.query_opt(&st, &[&key(id)])?.map(|r| id_of(r.get(0))))
    }

    fn has_like(&mut self, user_id: Id, post_id: Id) -> Result<bool, StoreError> {
        let st = self.statement("SELECT 1 FROM likes WHERE user_id = $1 AND post_id = $2")?;
        Ok(self.client.query_opt(&st, &[&key(user_id), &key(post_id)])?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binary COPY data: the header, then rows of (bigint or NULL, text).
    fn copy_data(rows: &[(Option<i64>, &str)]) -> Vec<u8> {
        let mut d = COPY_SIGNATURE.to_vec();
        d.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        for (n, text) in rows {
            d.extend(2i16.to_be_bytes());
            match n {
                Some(n) => {
                    d.extend(8i32.to_be_bytes());
                    d.extend(n.to_be_bytes());
                }
                None => d.extend((-1i32).to_be_bytes()),
            }
            d.extend((text.len() as i32).to_be_bytes());
            d.extend(text.as_bytes());
        }
        d.extend((-1i16).to_be_bytes());
        d
    }

    fn read_all(data: &[u8], chunk: usize) -> Vec<(Option<i64>, String)> {
        let mut r = std::io::BufReader::with_capacity(chunk, data);
        CopyRows::read_header(&mut r).unwrap();
        let mut out = Vec::new();
        CopyRows::default()
            .for_each(&mut r, |row| {
                out.push((row.i64_opt(0)?, row.text(1)?.to_owned()));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn binary_copy_rows_read_the_same_whole_or_split_across_messages() {
        let rows = [(Some(-5), "{\"id\":1}"), (None, ""), (Some(i64::MAX), "é")];
        let data = copy_data(&rows);
        let want: Vec<(Option<i64>, String)> = rows.iter().map(|(n, t)| (*n, t.to_string())).collect();
        assert_eq!(read_all(&data, 1 << 16), want);
        for chunk in [1, 2, 3, 7] {
            assert_eq!(read_all(&data, chunk), want, "chunks of {chunk} bytes");
        }
    }

    #[test]
    fn binary_copy_data_cut_short_is_an_error() {
        let data = copy_data(&[(Some(1), "abc")]);
        let mut r = std::io::BufReader::new(&data[..data.len() - 4]);
        CopyRows::read_header(&mut r).unwrap();
        assert!(CopyRows::default().for_each(&mut r, |_| Ok(())).is_err());
    }
}
