//! The embedded default store: SQLite (bundled), WAL, one transaction per
//! batch. Table ownership follows the design: the status handler writes
//! `status_state`, `tombstones`, `content_pending`, `like_tombstones`;
//! the user handler writes `user_state` and `geo_scrub_pending`; neither reads
//! the other's tables. Both meet only in [`SqliteStore::facts`] and
//! [`SqliteStore::scan`], at read time.
//!
//! A store is three files, so that the two handlers never wait on each other
//! (SQLite admits one writer per file): `PATH` holds the dataset (`posts`,
//! `likes`, `purge_done`), `PATH-status` the status handler's tables and
//! `PATH-user` the user handler's, each with the stream positions its handler
//! commits. Every connection attaches the two handler files (as `status` and
//! `user`). On the event path each handler writes its own file only, under
//! that file's lock only (removing content, likes included, is left to the
//! maintenance pass, which writes one file per transaction). One writer per
//! file also lets SQLite's checkpoints catch up and keeps each WAL bounded;
//! with one file and two writers committing back to back, the WAL grew by
//! hundreds of MB a minute at full rate.

use super::rows::{
    assemble_gaps, gap_filter, post_from, scanned_from, scrub_covered, status_from, toggle_cols, user_from,
    withdraw_next, BatchJobRow, Chunker, Cols, GapHistoryRow, GapRow, Lookup, MoveBatches, MoveMark, Reread,
    BATCH_JOB_COLS, GAP_COLS, POST_COLS, SCAN_SELECT, STATUS_COLS, USER_COLS,
};
use super::{
    id_of, key, ApplyStats, HandlerKind, ImportStats, MaintenanceStats, NewLike, Position, ScanRow, Store, StoreError,
    Timed,
};
use crate::batch_job::{BatchJob, BatchType};
use crate::event::{Id, StatusEvents, TimeMs, UserEvent};
use crate::gaps::{Gap, GapMove, GapState, NewGap, Repair};
use crate::post::{strip_own_geo, Embeds, NewPost};
use crate::rules;
use crate::rules::countries_to_text;
use crate::rules::embedded::Facts as EmbeddedFacts;
use crate::rules::import::{self, Loaded, Planned, Refusal};
use crate::rules::status::{StatusBatch, StatusState};
use crate::rules::user::UserState;
use crate::rules::visibility::{Facts, PostView};
use rusqlite::{params, Connection, DatabaseName, OptionalExtension, Row, TransactionBehavior};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// The schema version this build writes (the main file's). Version 3 adds
/// the quote link, the form and the embedded ids to `posts`; version 4 the
/// gap ledger ([`GAP_LEDGER`]); version 5 the batch jobs ([`BATCH_JOBS`]);
/// version 6 the carriers of copies ([`EMBEDDED_IN`]); version 7 re-read
/// the stored posts of twarc's flattened files; version 8 re-reads every
/// stored row (`migrate_to_8`).
pub const SCHEMA_VERSION: i64 = 8;

/// Which stored post carries a copy of which other post (quoted, inside a
/// retweeted quote, in v2 `includes.tweets`; [`rules::embedded::tracked_copies`])
/// and which carries which user's profile (v2 `includes.users`): when a post
/// becomes a tombstone, its author scrubs its geo or a user is purged, the
/// carriers are found here and what was withdrawn is taken out of their
/// JSON ([`remove_copies`]). The links a carrier's stored form lists go
/// with its row ([`unlink_carrier`]); a link may outlive its copy (a richer
/// form replaced it, or a rewrite dropped it): whoever follows it finds
/// nothing to remove.
const EMBEDDED_IN: &str = "
    CREATE TABLE IF NOT EXISTS main.embedded_in (
        embedded_id INTEGER NOT NULL,
        post_id     INTEGER NOT NULL,
        PRIMARY KEY (embedded_id, post_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS main.embedded_users (
        user_id INTEGER NOT NULL,
        post_id INTEGER NOT NULL,
        PRIMARY KEY (user_id, post_id)
    ) WITHOUT ROWID;";

/// The batch compliance jobs (`crate::batch_job`), in the main file beside
/// the posts they were about.
const BATCH_JOBS: &str = "
    CREATE TABLE IF NOT EXISTS main.batch_jobs (
        job_id      TEXT PRIMARY KEY,  -- X's id of the job
        kind        TEXT NOT NULL,     -- tweets, users
        run         INTEGER NOT NULL,  -- run number, per kind
        part        INTEGER NOT NULL,  -- part of the run (a failed part's new job keeps it)
        source      TEXT NOT NULL,     -- store, or file:PATH
        cursor_from INTEGER NOT NULL,  -- the part's ids: after this key (or line) ...
        cursor_to   INTEGER NOT NULL,  -- ... up to this one
        ids         INTEGER NOT NULL,
        last_part   INTEGER NOT NULL,
        stage       TEXT NOT NULL,     -- created, uploaded, downloaded, applied, failed, expired
        upload_url  TEXT NOT NULL,     -- signed URLs: kept to resume, never shown
        upload_expires_ms   INTEGER NOT NULL,
        download_url        TEXT NOT NULL,
        download_expires_ms INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL,
        result_lines INTEGER,
        note        TEXT NOT NULL
    );
";

/// The gap ledger (`crate::gaps`), in the status file: a gap is about the
/// stream positions the status file holds.
const GAP_LEDGER: &str = "
    CREATE TABLE IF NOT EXISTS status.gaps (
        id        INTEGER PRIMARY KEY,
        partition INTEGER NOT NULL,
        from_ms   INTEGER NOT NULL,   -- event time not covered, from (inclusive)
        to_ms     INTEGER NOT NULL,   -- to (exclusive)
        cause     TEXT NOT NULL,      -- disconnect, restart, full_buffer
        state     TEXT NOT NULL,      -- open, repairing, repaired, unrepairable
        repair    TEXT,               -- backfill, replay (what is repairing it)
        covered_to_ms INTEGER NOT NULL, -- a replay has covered [from_ms, covered_to_ms)
        opened_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS status.gap_history (
        seq    INTEGER PRIMARY KEY,
        gap_id INTEGER NOT NULL,
        at_ms  INTEGER NOT NULL,
        state  TEXT NOT NULL,
        note   TEXT NOT NULL
    );
";

/// The schema version of the handler files, since version 2 of the store.
const HANDLER_VERSION: i64 = 2;

/// Version 1, all in one file. Version 2 moves the handlers' tables to their
/// own files ([`HANDLER_FILES`]); a new store is created at version 1 and
/// moved the same way.
const MIGRATIONS: [&str; 1] = [
    // 0 -> 1
    "
    CREATE TABLE posts (
        id          INTEGER PRIMARY KEY,
        author_id   INTEGER NOT NULL,
        retweet_of  INTEGER,
        has_geo     INTEGER NOT NULL,
        json        TEXT NOT NULL
    );
    CREATE INDEX posts_by_author ON posts(author_id, id);
    CREATE INDEX posts_by_retweet_of ON posts(retweet_of) WHERE retweet_of IS NOT NULL;
    CREATE TABLE likes (
        user_id INTEGER NOT NULL,
        post_id INTEGER NOT NULL,
        PRIMARY KEY (user_id, post_id)
    ) WITHOUT ROWID;

    -- status handler
    CREATE TABLE tombstones (
        id     INTEGER PRIMARY KEY,
        reason INTEGER NOT NULL          -- 1 delete, 2 retweet of a deleted post, 3 author purged
    );
    CREATE TABLE status_state (
        id            INTEGER PRIMARY KEY,
        dropped       INTEGER,
        drop_t        INTEGER,
        superseded_by INTEGER,
        withheld      TEXT
    );
    -- deleted posts whose content the maintenance pass has yet to remove:
    -- append-only (seq grows), so the event path writes sequential pages
    CREATE TABLE content_pending (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL);
    CREATE TABLE like_tombstones (
        user_id INTEGER NOT NULL,
        post_id INTEGER NOT NULL,
        PRIMARY KEY (user_id, post_id)
    ) WITHOUT ROWID;

    -- user handler
    CREATE TABLE user_state (
        id          INTEGER PRIMARY KEY,
        deleted     INTEGER, deleted_t   INTEGER,
        protected   INTEGER, protected_t INTEGER,
        suspended   INTEGER, suspended_t INTEGER,
        withheld    TEXT,
        scrub_up_to INTEGER,
        delete_log  TEXT,
        purge_at    INTEGER
    );
    CREATE INDEX user_state_purge_at ON user_state(purge_at) WHERE purge_at IS NOT NULL;
    CREATE TABLE geo_scrub_pending (user_id INTEGER PRIMARY KEY);

    -- maintenance (off the event path); at_ms: the purge time carried out
    CREATE TABLE purge_done (user_id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);

    -- stream positions, committed with each batch
    CREATE TABLE positions (
        handler       TEXT NOT NULL,
        partition     INTEGER NOT NULL,
        last_event_ms INTEGER NOT NULL,
        last_byte_ms  INTEGER NOT NULL,
        PRIMARY KEY (handler, partition)
    ) WITHOUT ROWID;
    ",
];

/// One handler's file: its attached schema name, the suffix of its file name,
/// the version-2 tables it holds, and how each is copied from version 1.
struct HandlerFile {
    schema: &'static str,
    suffix: &'static str,
    ddl: &'static str,
    /// (table, copy from version 1's main file)
    tables: &'static [(&'static str, &'static str)],
}

const HANDLER_FILES: [HandlerFile; 2] = [
    HandlerFile {
        schema: "status",
        suffix: "-status",
        ddl: "
        CREATE TABLE status.tombstones (
            id     INTEGER PRIMARY KEY,
            reason INTEGER NOT NULL      -- 1 delete, 2 retweet of a deleted post, 3 author purged
        );
        CREATE TABLE status.status_state (
            id            INTEGER PRIMARY KEY,
            dropped       INTEGER,
            drop_t        INTEGER,
            superseded_by INTEGER,
            withheld      TEXT
        );
        -- deleted posts whose content the maintenance pass has yet to remove:
        -- append-only (seq grows), so the event path writes sequential pages
        CREATE TABLE status.content_pending (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL);
        CREATE TABLE status.like_tombstones (
            user_id INTEGER NOT NULL,
            post_id INTEGER NOT NULL,
            PRIMARY KEY (user_id, post_id)
        ) WITHOUT ROWID;
        -- removed likes the maintenance pass has yet to delete from the main
        -- file's likes (until then, the like tombstone hides them)
        CREATE TABLE status.like_pending (
            seq     INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL,
            post_id INTEGER NOT NULL
        );
        CREATE TABLE status.positions (
            partition     INTEGER PRIMARY KEY,
            last_event_ms INTEGER NOT NULL,
            last_byte_ms  INTEGER NOT NULL
        );
        ",
        tables: &[
            ("tombstones", "INSERT INTO status.tombstones SELECT id, reason FROM main.tombstones"),
            (
                "status_state",
                "INSERT INTO status.status_state SELECT id, dropped, drop_t, superseded_by, withheld FROM main.status_state",
            ),
            ("content_pending", "INSERT INTO status.content_pending SELECT seq, id FROM main.content_pending"),
            ("like_tombstones", "INSERT INTO status.like_tombstones SELECT user_id, post_id FROM main.like_tombstones"),
            ("like_pending", ""), // new in version 2: version 1 removed likes at once
            (
                "positions",
                "INSERT INTO status.positions SELECT partition, last_event_ms, last_byte_ms FROM main.positions WHERE handler = 'status'",
            ),
        ],
    },
    HandlerFile {
        schema: "user",
        suffix: "-user",
        ddl: "
        CREATE TABLE user.user_state (
            id          INTEGER PRIMARY KEY,
            deleted     INTEGER, deleted_t   INTEGER,
            protected   INTEGER, protected_t INTEGER,
            suspended   INTEGER, suspended_t INTEGER,
            withheld    TEXT,
            scrub_up_to INTEGER,
            delete_log  TEXT,
            purge_at    INTEGER
        );
        CREATE INDEX user.user_state_purge_at ON user_state(purge_at) WHERE purge_at IS NOT NULL;
        CREATE TABLE user.geo_scrub_pending (user_id INTEGER PRIMARY KEY);
        CREATE TABLE user.positions (
            partition     INTEGER PRIMARY KEY,
            last_event_ms INTEGER NOT NULL,
            last_byte_ms  INTEGER NOT NULL
        );
        ",
        tables: &[
            ("user_state", "INSERT INTO user.user_state SELECT * FROM main.user_state"),
            ("geo_scrub_pending", "INSERT INTO user.geo_scrub_pending SELECT user_id FROM main.geo_scrub_pending"),
            (
                "positions",
                "INSERT INTO user.positions SELECT partition, last_event_ms, last_byte_ms FROM main.positions WHERE handler = 'user'",
            ),
        ],
    },
];

/// Every file of the SQLite store at `path` (SQLite's own `-wal` and `-shm`
/// files beside each not included): the main file, then the status and the
/// user handler's files. Back them up, move them and delete them together.
pub fn store_files(path: &str) -> Vec<String> {
    let mut files = vec![path.to_owned()];
    files.extend(HANDLER_FILES.iter().map(|f| handler_file(path, f)));
    files
}

fn handler_file(path: &str, f: &HandlerFile) -> String {
    if path.is_empty() || path == ":memory:" {
        path.to_owned()
    } else {
        format!("{path}{}", f.suffix)
    }
}

/// The handler file `f` of the store at `path` is missing (version 0) or
/// of another store (version `v`).
fn not_of_this_store(path: &str, f: &HandlerFile, v: i64) -> StoreError {
    StoreError::Damaged(format!(
        "{} is missing or not of this store (schema version {v}, expected {HANDLER_VERSION}): restore it from the backup taken with {path}",
        handler_file(path, f)
    ))
}

/// No complyd store at `path` (`why`: what is there instead).
fn no_store(path: &str, why: &str) -> StoreError {
    StoreError::NoStore(format!("no store at {path}{why}: {}", super::NO_STORE_HINT))
}

const NOT_A_STORE: &str = " (an empty file, or an SQLite database that is not a complyd store)";

/// The main file's schema version as read (`read`), for a command that
/// never creates a store: a file that is not a database, or a database
/// that is not a complyd store (version 0), is no store.
fn store_version(path: &str, read: rusqlite::Result<i64>) -> Result<i64, StoreError> {
    match read {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            Err(no_store(path, &format!(" (not an SQLite database: {e})")))
        }
        Err(e) => Err(e.into()),
        Ok(0) => Err(no_store(path, NOT_A_STORE)),
        Ok(v) => Ok(v),
    }
}

/// A file's device, inode and owner, where the platform tells them.
fn file_id(path: &str) -> Option<(u64, u64, u32)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.uid()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The user this process runs as (its effective user id).
fn this_user() -> Option<u32> {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(unsafe { libc::geteuid() })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The URI that opens the store file `file` for reading only.
fn read_only_uri(file: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
    // An absolute path after an empty authority: `file:` and `//x` would
    // read `x` as a host.
    let authority = if file.starts_with('/') { "//" } else { "" };
    format!("file:{authority}{}?mode=ro", percent_encoding::utf8_percent_encode(file, RESERVED))
}

/// A plain connection to the store at `path` with the handler files
/// attached, and no migration: for tools and tests that look at the tables
/// directly, or lock the whole store (`BEGIN EXCLUSIVE` takes every file).
///
/// # Errors
/// SQLite errors.
pub fn connect(path: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    for f in &HANDLER_FILES {
        conn.execute("ATTACH DATABASE ?1 AS ?2", params![handler_file(path, f), f.schema])?;
    }
    Ok(conn)
}

/// How long a transaction waits for another writer before failing with
/// "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Each connection's page cache of each file (see `SqliteStore::open`).
const PAGE_CACHE_KIB: i64 = 512;

/// The busy handler: SQLite admits one writer at a time, and the daemon's two
/// handlers each have a connection. SQLite's own handler (`busy_timeout`)
/// sleeps 1, 2, 5, 10, .. up to 100 ms between attempts, so a handler could
/// go on sleeping for up to 100 ms after the other's transaction had ended
/// (measured at full rate: 459 sleeps, 8.9 s asleep in 12 s between the two
/// handlers, a third of them 25-100 ms long). Polling every 50 µs (every
/// 1 ms after the first 5 ms) takes the lock within a millisecond of its
/// release, for a negligible cost; the total wait is bounded as before.
fn wait_for_writer(attempt: i32) -> bool {
    thread_local!(static WAITING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    let since = WAITING_SINCE.with(|s| {
        let since = match s.get() {
            Some(t) if attempt > 0 => t,
            _ => now,
        };
        s.set(Some(since));
        since
    });
    let waited = now.duration_since(since);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(if waited < Duration::from_millis(5) {
        Duration::from_micros(50)
    } else {
        Duration::from_millis(1)
    });
    true
}

const TOMBSTONE_DELETE: i64 = 1;
const TOMBSTONE_CASCADE: i64 = 2;
const TOMBSTONE_PURGE: i64 = 3;

fn tombstone_reason(why: Refusal) -> i64 {
    match why {
        Refusal::Tombstoned => TOMBSTONE_DELETE,
        Refusal::RetweetOfTombstone => TOMBSTONE_CASCADE,
        Refusal::AuthorPurged => TOMBSTONE_PURGE,
    }
}

pub struct SqliteStore {
    conn: Connection,
    path: String,
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the store at `path`.
    ///
    /// # Errors
    /// SQLite errors, or [`StoreError::SchemaTooNew`].
    pub fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let mut store = Self::open_files(path)?;
        store.migrate(MoveBatches::default())?;
        Ok(store)
    }

    /// The store at `path` for a command that never creates a store
    /// ([`super::open_existing`]): refuses a path with no file, a file that
    /// is not an SQLite database or holds no complyd store, and a store
    /// whose handler files are gone, before creating or writing anything.
    /// A store whose files this user may read but not write (a snapshot on
    /// read-only media, another user's store) is opened for reading only
    /// ([`Self::open_read_only`]).
    ///
    /// # Errors
    /// [`StoreError::NoStore`], [`StoreError::Damaged`],
    /// [`StoreError::ReadOnly`], or those of [`Self::open`].
    pub fn open_existing(path: &str) -> Result<SqliteStore, StoreError> {
        if !Path::new(path).is_file() {
            return Err(no_store(path, ""));
        }
        if let Err(e) = std::fs::File::open(path) {
            return Err(StoreError::NoStore(format!("cannot read the store file {path}: {e}")));
        }
        let unwritable = store_files(path)
            .into_iter()
            .filter(|f| Path::new(f).exists())
            .find_map(|f| std::fs::OpenOptions::new().append(true).open(&f).err().map(|e| (f, e)));
        if let Some((file, e)) = unwritable {
            return Self::open_read_only(path, &file, &e);
        }
        // Without SQLITE_OPEN_CREATE: nothing is created here (a WAL store's
        // own -wal and -shm files aside).
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let version = Connection::open_with_flags(path, flags).and_then(|c| user_version(&c, "main"));
        if store_version(path, version)? >= 2 {
            if let Some(f) = HANDLER_FILES.iter().find(|f| !Path::new(&handler_file(path, f)).is_file()) {
                return Err(not_of_this_store(path, f, 0));
            }
        }
        Self::open(path)
    }

    /// [`Self::open_existing`] for a store this user may not write
    /// (`file` is one of its files, which the OS refused to open for
    /// writing with `denied`): read-only connections (`mode=ro`), and only
    /// to a store of this version, which needs no move. SQLite reads a WAL
    /// file only beside its `-wal` and `-shm` files (they exist while
    /// complyd has the store open): where they are missing it would create
    /// them, owned by this user, so that the store's owner could no longer
    /// write it; this refuses instead. (SQLite's `immutable` would read
    /// without them, but it skips a WAL, and nothing can tell a reader that
    /// a complyd has begun writing meanwhile: it could miss a delete.)
    fn open_read_only(path: &str, file: &str, denied: &std::io::Error) -> Result<SqliteStore, StoreError> {
        let cannot = |why: &str| {
            StoreError::ReadOnly(format!("the store {path} is read-only to this user ({file}: {denied}), and {why}"))
        };
        // Each file's mode from its header, before SQLite opens anything: a
        // file that is no database (or empty) is no store.
        let mut wal_files = Vec::new();
        for f in store_files(path) {
            let mut header = Vec::with_capacity(20);
            let read = std::fs::File::open(&f)
                .and_then(|h| std::io::Read::read_to_end(&mut std::io::Read::take(h, 20), &mut header));
            match read {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && f != path => continue,
                Err(e) => return Err(StoreError::NoStore(format!("cannot read the store file {f}: {e}"))),
                Ok(0) if f == path => return Err(no_store(path, NOT_A_STORE)),
                Ok(n) if n < 20 || &header[..16] != b"SQLite format 3\0" => {
                    return Err(match HANDLER_FILES.iter().find(|h| handler_file(path, h) == f) {
                        Some(h) => not_of_this_store(path, h, 0),
                        None => no_store(path, " (not an SQLite database)"),
                    });
                }
                // Bytes 18 and 19: 2 in a WAL file.
                Ok(_) if header[18] == 2 || header[19] == 2 => wal_files.push(f),
                Ok(_) => {}
            }
        }
        let beside = |f: &str| [format!("{f}-wal"), format!("{f}-shm")];
        // Which -wal and -shm files were there before SQLite opened them.
        let mut found = Vec::new();
        for f in &wal_files {
            let [wal, shm] = beside(f);
            if let Some((b, e)) = [&wal, &shm].into_iter().find_map(|b| match std::fs::File::open(b) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some((b, e)),
                _ => None,
            }) {
                return Err(cannot(&format!(
                    "SQLite reads it only beside {wal} and {shm}, and this user cannot read {b} ({e}): \
                     its owner must let this user read them too"
                )));
            }
            found.extend([&wal, &shm].into_iter().filter_map(|b| file_id(b).map(|id| (b.clone(), id))));
            if !(Path::new(&wal).is_file() && Path::new(&shm).is_file()) {
                let read_only_fs = matches!(
                    std::fs::OpenOptions::new().append(true).open(f),
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::ReadOnlyFilesystem)
                );
                return Err(cannot(&if read_only_fs {
                    format!(
                        "SQLite reads it only beside {wal} and {shm}, which it cannot create on a read-only \
                         file system: copy the store's files to a writable directory and read the copy"
                    )
                } else {
                    format!(
                        "SQLite reads it only beside {wal} and {shm}, which exist while complyd has the store \
                         open: read it while complyd runs, or as a user who may write its files, or read a copy"
                    )
                }));
            }
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        const TO_MOVE: &str = "it must first be moved to this version of complyd by a user who may write its \
                               files: run any complyd command on it once as such a user";
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open_with_flags(read_only_uri(path), flags)?;
            conn.busy_handler(Some(wait_for_writer))?;
            let version = store_version(path, user_version(&conn, "main"))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
            }
            if version < SCHEMA_VERSION {
                return Err(cannot(&format!(
                    "it is the store of an earlier complyd (schema version {version}): {TO_MOVE}"
                )));
            }
            for f in &HANDLER_FILES {
                let file = handler_file(path, f);
                if !Path::new(&file).is_file() {
                    return Err(not_of_this_store(path, f, 0));
                }
                conn.execute("ATTACH DATABASE ?1 AS ?2", params![read_only_uri(&file), f.schema])?;
                let v = user_version(&conn, f.schema)?;
                if v != HANDLER_VERSION {
                    return Err(not_of_this_store(path, f, v));
                }
            }
            Ok(conn)
        };
        // Whether the reads succeed or not:
        let opened = open();
        // The `-wal` and `-shm` files may have gone between the check above
        // and the reads (the daemon's last connection closing): then SQLite
        // made them, owned by this user, and the store's owner could not
        // write them. Open, this connection keeps the owner's from going.
        // Only files this process made are removed: never those another
        // process opened meanwhile (another inode, another owner), which
        // may hold what it committed.
        let (me, found) = (this_user(), &found);
        let made: Vec<String> = wal_files
            .iter()
            .flat_map(|f| {
                let owner = file_id(f).map(|(_, _, uid)| uid);
                beside(f).into_iter().filter(move |b| {
                    let before = found.iter().find(|(f, _)| f == b).map(|(_, id)| *id);
                    file_id(b).is_some_and(|now| {
                        Some(now) != before && me.is_some_and(|me| now.2 == me) && Some(now.2) != owner
                    })
                })
            })
            .collect();
        if !made.is_empty() {
            drop(opened);
            for m in &made {
                let _ = std::fs::remove_file(m);
            }
            return Err(cannot(&format!(
                "{} went as it was opened (complyd closed the store): read it while complyd runs, or as a user \
                 who may write its files, or read a copy",
                made.join(" and ")
            )));
        }
        let conn = opened?;
        // A move to 4 cut between its two files (`migrate` finishes it).
        if !conn.prepare("SELECT 1 FROM status.sqlite_master WHERE name = 'gap_history'")?.exists([])? {
            return Err(cannot(&format!("its gap ledger is missing (a move cut short): {TO_MOVE}")));
        }
        for schema in ["main", "status", "user"] {
            conn.pragma_update(Some(DatabaseName::Attached(schema)), "cache_size", -PAGE_CACHE_KIB)?;
        }
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(SqliteStore { conn, path: path.to_owned() })
    }

    /// The store's files, created when missing, with this connection's
    /// settings: not yet migrated.
    fn open_files(path: &str) -> Result<SqliteStore, StoreError> {
        // A new store's files are readable by their owner only (SQLite gives
        // the -wal and -shm files the same mode).
        if !path.is_empty() && path != ":memory:" {
            for file in store_files(path) {
                // Created when missing, and writable: SQLite's own error for
                // a file it cannot write is "unable to open database file".
                crate::files::create_private(Path::new(&file))
                    .and_then(|()| std::fs::OpenOptions::new().append(true).open(&file).map(drop))
                    .map_err(|error| StoreError::Files { path: file.clone(), error })?;
            }
        }
        let conn = connect(path)?;
        conn.busy_handler(Some(wait_for_writer))?;
        // Page cache limits (KiB), per file and connection: 512 KiB, a
        // quarter of SQLite's default. A connection's cache of a file lasts
        // until another connection commits to that file, so each handler's
        // cache of its own file fills up to its limit and stays. Pages
        // outside it come from the operating system's page cache, which
        // holds the files: 512 KiB and 2 MiB stored the same events per
        // second at full rate, with 10^6 posts in the store too, and 512 KiB
        // peaked about 1.5 MB lower (BENCHMARKS.md, "Memory below the
        // peers'"); at 32 MiB the daemon peaked at 100 MB instead of 51 for
        // the same rate ("SQLite page caches of 2 MiB").
        for schema in ["main", "status", "user"] {
            let db = Some(DatabaseName::Attached(schema));
            conn.pragma_update(db, "journal_mode", "WAL")?;
            conn.pragma_update(db, "synchronous", "NORMAL")?;
            conn.pragma_update(db, "cache_size", -PAGE_CACHE_KIB)?;
        }
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The posts' file holds what the rules withdraw (a deleted or purged
        // post's words, scrubbed coordinates): SQLite leaves a deleted row's
        // bytes in the page's free space, where anyone who reads the file
        // finds them. `secure_delete` overwrites them with zeros. The other
        // two files hold ids and states only, and the event path writes
        // there, so they keep the cheaper default.
        conn.pragma_update(Some(DatabaseName::Main), "secure_delete", "ON")?;
        // Checkpoint every 40 MiB of WAL rather than 4: pages written by many
        // batches (tombstones, state rows) are copied back once.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        Ok(SqliteStore { conn, path: path.to_owned() })
    }

    /// Opens the store at `path` as [`Self::open`] does, but moves its
    /// posts `rows` a transaction and stops after `batches` of them, as a
    /// kill would (for tests of a move cut short). Returns whether the move
    /// was done.
    ///
    /// # Errors
    /// SQLite errors.
    #[doc(hidden)]
    pub fn open_cut_after(path: &str, rows: i64, batches: u64) -> Result<bool, StoreError> {
        Self::open_files(path)?.migrate(MoveBatches { rows, stop_after: Some(batches) })
    }

    /// Brings the store to [`SCHEMA_VERSION`]. Returns false when
    /// `batches` stopped the move to 8 first.
    fn migrate(&mut self, batches: MoveBatches) -> Result<bool, StoreError> {
        let found = user_version(&self.conn, "main")?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        for f in &HANDLER_FILES {
            let v = user_version(&self.conn, f.schema)?;
            if found == 0 && v != 0 {
                return Err(StoreError::Damaged(format!(
                    "{} belongs to another store ({} is new): move it away, or restore {} with it",
                    handler_file(&self.path, f),
                    self.path,
                    self.path
                )));
            }
            if found >= 2 && v != HANDLER_VERSION {
                return Err(not_of_this_store(&self.path, f, v));
            }
        }
        if found < 1 {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if user_version(&tx, "main")? == 0 {
                tx.execute_batch(MIGRATIONS[0])?;
                tx.pragma_update(Some(DatabaseName::Main), "user_version", 1)?;
            }
            tx.commit()?;
        }
        if found < 2 {
            self.migrate_1_to_2()?;
        }
        if found < 3 {
            self.migrate_2_to_3()?;
        }
        // The ledger's tables are in the status file and the version in the
        // main one, which commit apart: checked on every open, so a move cut
        // between the two is finished.
        let has_ledger: bool =
            self.conn.prepare("SELECT 1 FROM status.sqlite_master WHERE name = 'gap_history'")?.exists([])?;
        if found < 4 || !has_ledger {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(GAP_LEDGER)?;
            if user_version(&tx, "main")? < 4 {
                tx.pragma_update(Some(DatabaseName::Main), "user_version", 4)?;
            }
            tx.commit()?;
        }
        if found < 5 {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(BATCH_JOBS)?;
            if user_version(&tx, "main")? < 5 {
                tx.pragma_update(Some(DatabaseName::Main), "user_version", 5)?;
            }
            tx.commit()?;
        }
        if found < 8 {
            return self.migrate_to_8(batches);
        }
        Ok(true)
    }

    /// Reads the stored JSON of every post, its own line's or a copy's,
    /// with today's import and imports again each one that carries
    /// something its row does not list ([`crate::post::relisted`]): an
    /// import of an earlier complyd read fewer shapes (twarc's flattened
    /// expansions before version 7; before version 8, either format's
    /// copies inside a post of the other, what an `includes.tweets` copy or
    /// a copy it could not store carries in turn, and references whose type
    /// or id held a lone surrogate escape), and no later delete would have
    /// found the copies it left unlisted. Then lists the carriers of copies
    /// ([`EMBEDDED_IN`]) and takes out of them the copies of posts that are
    /// already tombstones, the geo of copies already scrubbed and the
    /// profiles of users already purged, which a store before version 8
    /// kept in the carriers' JSON where it did not list them. It replaces
    /// the moves to 6 and 7, which read fewer posts.
    ///
    /// The posts are read `batches.rows` a transaction, in the order of
    /// their keys, and the withdrawn taken out `batches.rows` withdrawn ids
    /// a transaction ([`withdraw_batch`]), with the step, the next key and
    /// the counts so far kept in [`MOVE_PROGRESS`]: a move cut short goes
    /// on from there at the next open. The version moves to 8 in the
    /// transaction that finds nothing more to take out. Returns false when
    /// `batches.stop_after` stopped it first (a test's cut).
    fn migrate_to_8(&mut self, batches: MoveBatches) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(EMBEDDED_IN)?;
        // The mark of a move cut short by the builds of 2f558fe..33d5f7b
        // (the last id done, no counts): that move starts again.
        if tx.prepare("SELECT 1 FROM pragma_table_info('move_progress', 'main') WHERE name = 'after'")?.exists([])? {
            tx.execute_batch("DROP TABLE main.move_progress")?;
        }
        tx.execute_batch(MOVE_PROGRESS)?;
        if user_version(&tx, "main")? < 8 {
            tx.execute(
                "INSERT INTO main.move_progress (step, next)
                 SELECT 'reread', ?1 WHERE NOT EXISTS (SELECT 1 FROM main.move_progress)",
                [i64::MIN],
            )?;
        }
        tx.commit()?;
        let (mut done, mut rewritten) = (0u64, 0u64);
        loop {
            if batches.cut(done) {
                return Ok(false);
            }
            let at: Option<(String, i64, Reread)> = self
                .conn
                .prepare_cached("SELECT step, next, read, relisted, unreadable, links FROM main.move_progress")?
                .query_row([], |r| {
                    Ok((r.get(0)?, r.get(1)?, Reread::from_counts([r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?])))
                })
                .optional()?;
            let Some((step, from, mut total)) = at else { return Ok(true) }; // another connection did it
            let mut batch = Reread::default();
            let (tx, to_step, next) = if step == "reread" {
                // The batch's rows and import commit on their own: done again
                // after a cut, they change nothing twice.
                let next = self.reread_batch("TRUE", from, batches.rows, false, &mut batch)?;
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                match next {
                    Some(next) => (tx, "reread", next),
                    None => (tx, "link", i64::MIN),
                }
            } else if step == "link" {
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let (next, links) = link_batch(&tx, from, batches.rows)?;
                batch.links = links;
                match next {
                    Some(next) => (tx, "link", next),
                    None => (tx, WITHDRAW_STEPS[0], i64::MIN),
                }
            } else {
                let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let (went_on, n) = withdraw_batch(&tx, &step, from, batches.rows)?;
                rewritten += n;
                let Some((to_step, next)) = went_on else {
                    // Only a connection that finds the mark where it read it
                    // finishes the move: another may have, meanwhile.
                    let sql = "DELETE FROM main.move_progress WHERE step = ?1 AND next = ?2";
                    if tx.execute(sql, params![step, from])? == 0 {
                        continue;
                    }
                    if user_version(&tx, "main")? < 8 {
                        tx.pragma_update(Some(DatabaseName::Main), "user_version", 8)?;
                    }
                    tx.commit()?;
                    total.log(8, rewritten);
                    return Ok(true);
                };
                (tx, to_step, next)
            };
            total += batch;
            // Only where this connection found the move: another one that
            // went further meanwhile keeps its mark.
            let [read, relisted, unreadable, links] = total.counts();
            tx.prepare_cached(
                "UPDATE main.move_progress SET step = ?3, next = ?4, read = ?5, relisted = ?6, unreadable = ?7, links = ?8
                 WHERE step = ?1 AND next = ?2",
            )?
            .execute(params![step, from, to_step, next, read, relisted, unreadable, links])?;
            tx.commit()?;
            done += 1;
            total.progress(done, to_step, next);
        }
    }

    /// Reads the stored JSON of the `rows` posts from the key `from` on
    /// that `filter` (SQL) selects, and imports again those whose row does
    /// not list all they carry, or all of them with `every`
    /// ([`crate::post::relisted`]), so that what they carry is stored and
    /// listed (the moves to versions 3 and 8). A row whose JSON no longer
    /// reads as a post is listed as unreadable, so that every answer judges
    /// it. Returns the key to go on from, or `None` when no post is left.
    fn reread_batch(
        &mut self,
        filter: &str,
        from: i64,
        rows: i64,
        every: bool,
        r: &mut Reread,
    ) -> Result<Option<i64>, StoreError> {
        let rows: Vec<(i64, i64, Option<String>, String)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, form, embeds, json FROM main.posts WHERE id >= ?1 AND {filter} ORDER BY id LIMIT ?2"
            ))?
            .query_map([from, rows], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let Some(&(last, ..)) = rows.last() else { return Ok(None) };
        let mut again = Vec::new();
        for (id, form, embeds, json) in &rows {
            if let Some(embeds) = r.row(json, embeds.as_deref(), *form, every, &mut again) {
                self.conn.execute("UPDATE main.posts SET embeds = ?2 WHERE id = ?1", params![id, embeds])?;
            }
        }
        if !again.is_empty() {
            self.import(&again, &[], crate::clock::now_ms())?;
        }
        Ok(last.checked_add(1))
    }

    /// Adds the quote link, the form and the embedded ids to `posts`, then
    /// re-imports the stored JSON of every post that may carry another
    /// (a retweet, a quote, v2 expansions), so that the posts embedded in it
    /// are stored and listed: until then, a read could not know what to
    /// remove from it. The version moves to 3 only at the end: a run cut
    /// short starts the re-import again, which changes nothing twice.
    fn migrate_2_to_3(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let has_column: bool =
            tx.prepare("SELECT 1 FROM pragma_table_info('posts', 'main') WHERE name = 'embeds'")?.exists([])?;
        if !has_column {
            tx.execute_batch(
                "ALTER TABLE main.posts ADD COLUMN quote_of INTEGER;
                 ALTER TABLE main.posts ADD COLUMN form INTEGER NOT NULL DEFAULT 1;
                 ALTER TABLE main.posts ADD COLUMN embeds TEXT;",
            )?;
        }
        // The re-import below lists carriers of copies (version 6's table).
        tx.execute_batch(EMBEDDED_IN)?;
        tx.commit()?;
        let (mut r, mut from) = (Reread::default(), i64::MIN);
        while let Some(next) = self.reread_batch(
            "(retweet_of IS NOT NULL OR instr(json, '\"quoted_status\"') > 0 OR instr(json, '\"includes\"') > 0)",
            from,
            10_000,
            true,
            &mut r,
        )? {
            from = next;
        }
        let reimported = r.again;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if user_version(&tx, "main")? < 3 {
            tx.pragma_update(Some(DatabaseName::Main), "user_version", 3)?;
        }
        tx.commit()?;
        if reimported > 0 {
            tracing::info!(posts = reimported, "Store moved to schema 3: the posts embedded in stored retweets, quotes and expansions are now stored and listed");
        }
        Ok(())
    }

    /// Moves the handlers' tables to their files. Each handler file is
    /// filled in its own transaction (from scratch, so a run that stopped
    /// half-way simply starts again), then the main file drops its copies
    /// and takes version 2: until that last commit, the main file's tables
    /// are the store.
    fn migrate_1_to_2(&mut self) -> Result<(), StoreError> {
        for f in &HANDLER_FILES {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if user_version(&tx, "main")? != 1 {
                return Ok(()); // another connection did it meanwhile
            }
            for (table, _) in f.tables {
                tx.execute_batch(&format!("DROP TABLE IF EXISTS {}.{table}", f.schema))?;
            }
            tx.execute_batch(f.ddl)?;
            for (_, copy) in f.tables {
                tx.execute_batch(copy)?;
            }
            tx.pragma_update(Some(DatabaseName::Attached(f.schema)), "user_version", 2)?;
            tx.commit()?;
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if user_version(&tx, "main")? == 1 {
            for f in &HANDLER_FILES {
                for (table, _) in f.tables {
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS main.{table}"))?;
                }
            }
            tx.pragma_update(Some(DatabaseName::Main), "user_version", 2)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Creates an empty store of schema version 1 at `path`, everything in
    /// one file, as the first complyd left it (for migration tests).
    ///
    /// # Errors
    /// SQLite errors.
    #[doc(hidden)]
    pub fn create_version_1(path: &str) -> Result<(), StoreError> {
        let c = Connection::open(path)?;
        c.execute_batch(MIGRATIONS[0])?;
        c.pragma_update(None, "user_version", 1)?;
        Ok(())
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(user_version(&self.conn, "main")?)
    }
}

/// The schema version of one of the store's files (`main`, `status`, `user`).
fn user_version(conn: &Connection, schema: &str) -> rusqlite::Result<i64> {
    conn.pragma_query_value(Some(DatabaseName::Attached(schema)), "user_version", |r| r.get(0))
}

impl Cols for Row<'_> {
    fn i64_opt(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.get(i)?)
    }
    fn text_opt(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<&str, StoreError> {
        Ok(self.get_ref(i)?.as_str().map_err(rusqlite::Error::from)?)
    }
}

fn load_user(tx: &rusqlite::Transaction, id: Id) -> Result<UserState, StoreError> {
    let sql = format!("SELECT {USER_COLS} FROM user_state WHERE id = ?1");
    let mut st = tx.prepare_cached(&sql)?;
    let mut rows = st.query([key(id)])?;
    match rows.next()? {
        Some(row) => user_from(row, 0),
        None => Ok(UserState::default()),
    }
}

fn is_tombstone(tx: &rusqlite::Transaction, id: Id) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM tombstones WHERE id = ?1")?
        .query_row([key(id)], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Makes `id` a tombstone; true when it was not one already.
fn add_tombstone(tx: &rusqlite::Transaction, id: Id, reason: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("INSERT OR IGNORE INTO tombstones (id, reason) VALUES (?1, ?2)")?
        .execute(params![key(id), reason])?
        > 0)
}

/// Where a move to 8 is ([`SqliteStore::migrate_to_8`]): its step
/// (`reread`, `link`, then [`WITHDRAW_STEPS`]), the key it goes on from, and
/// the counts so far ([`Reread::counts`]'s order). Empty once done.
const MOVE_PROGRESS: &str = "CREATE TABLE IF NOT EXISTS main.move_progress (
    step TEXT NOT NULL, next INTEGER NOT NULL, read INTEGER NOT NULL DEFAULT 0,
    relisted INTEGER NOT NULL DEFAULT 0, unreadable INTEGER NOT NULL DEFAULT 0, links INTEGER NOT NULL DEFAULT 0)";

/// Lists the carriers of copies ([`EMBEDDED_IN`]) among the `rows` stored
/// posts from the key `from` on that list embedded ids (the move to 8's
/// second step); a batch done twice inserts nothing twice. Returns the key
/// to go on from (`None`: no post is left) and the links made.
fn link_batch(tx: &rusqlite::Transaction, from: i64, rows: i64) -> Result<(Option<i64>, u64), StoreError> {
    let rows: Vec<(i64, Option<i64>, Option<String>)> = tx
        .prepare_cached(
            "SELECT id, retweet_of, embeds FROM main.posts WHERE id >= ?1 AND embeds IS NOT NULL ORDER BY id LIMIT ?2",
        )?
        .query_map([from, rows], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let Some(&(last, _, _)) = rows.last() else { return Ok((None, 0)) };
    let mut links = 0;
    for (id, retweet_of, embeds) in rows {
        let embeds = crate::post::Embeds::from_column(embeds.as_deref());
        links += link_carrier(tx, id_of(id), retweet_of.map(id_of), &embeds)?;
    }
    Ok((last.checked_add(1), links))
}

/// The steps of the move to 8 that take out of the listed carriers what
/// was already withdrawn: the copies of posts already tombstones, the
/// profiles of users already purged, the geo of copies already scrubbed.
const WITHDRAW_STEPS: [&str; 3] = ["gone", "purged", "scrubbed"];

/// One transaction of [`WITHDRAW_STEPS`]: the `rows` withdrawn ids of
/// `step` from the key `from` on, taken out of their carriers
/// ([`remove_copies`]; done twice, it changes nothing twice). Returns the
/// step and key to go on from (`None`: nothing is left) and how many posts
/// were rewritten.
fn withdraw_batch(
    tx: &rusqlite::Transaction,
    step: &str,
    from: i64,
    rows: i64,
) -> Result<(Option<MoveMark>, u64), StoreError> {
    let Some(at) = WITHDRAW_STEPS.iter().position(|s| *s == step) else {
        return Err(StoreError::Damaged(format!(
            "the store's move to version 8 is at a step this complyd does not know: {step}"
        )));
    };
    let ids = |sql: &str| -> rusqlite::Result<Vec<(i64, i64)>> {
        tx.prepare_cached(sql)?.query_map([from, rows], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
    };
    let found = match at {
        // Joined, not `IN (SELECT ..)`: SQLite would walk every tombstone
        // up to the cursor in each batch.
        0 => ids(
            "SELECT DISTINCT e.embedded_id, 0 FROM main.embedded_in e JOIN status.tombstones t ON t.id = e.embedded_id
             WHERE e.embedded_id >= ?1 ORDER BY e.embedded_id LIMIT ?2",
        )?,
        1 => ids(
            "SELECT DISTINCT e.user_id, 0 FROM main.embedded_users e JOIN main.purge_done d ON d.user_id = e.user_id
             WHERE e.user_id >= ?1 ORDER BY e.user_id LIMIT ?2",
        )?,
        _ => ids("SELECT p.id, u.scrub_up_to FROM main.posts p JOIN user.user_state u ON u.id = p.author_id
             WHERE p.id >= ?1 AND u.scrub_up_to IS NOT NULL AND (p.id IN (SELECT embedded_id FROM main.embedded_in)
               OR EXISTS (SELECT 1 FROM main.posts r WHERE r.retweet_of = p.id))
             ORDER BY p.id LIMIT ?2")?,
    };
    let next = withdraw_next(&WITHDRAW_STEPS, at, found.last().map(|(id, _)| *id));
    if found.is_empty() {
        return Ok((next, 0));
    }
    let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
    let rewritten = match at {
        0 => remove_copies(tx, &ids, &[], &[])?,
        1 => remove_copies(tx, &[], &[], &ids)?,
        _ => remove_copies(tx, &[], &scrub_covered(&found), &[])?,
    };
    Ok((next, rewritten))
}

/// A deferred transaction holding the write lock of `schema`'s file only
/// (`BEGIN IMMEDIATE` would lock every attached file).
fn write_tx<'c>(conn: &'c mut Connection, schema: &str) -> rusqlite::Result<rusqlite::Transaction<'c>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    take_write_lock(&tx, schema)?;
    Ok(tx)
}

/// Takes the write lock of `schema`'s file (waiting for its writer, if any)
/// by a write that changes nothing: the first statement of a transaction,
/// so that what it reads next is what it writes over (a deferred
/// transaction that read first could find another writer's commit in its
/// way when it comes to write).
fn take_write_lock(tx: &rusqlite::Transaction, schema: &str) -> rusqlite::Result<()> {
    let table = match schema {
        "main" => "main.purge_done",
        "status" => "status.positions",
        _ => "user.positions",
    };
    tx.execute_batch(&format!("UPDATE {table} SET rowid = rowid WHERE 0"))
}

/// The oldest rows of one of the status file's to-do tables (at most `max`)
/// and whether more are waiting. `sql` selects `seq` first, in `seq` order,
/// with `LIMIT ?1`.
fn oldest_pending<T>(
    conn: &Connection,
    sql: &str,
    max: usize,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<(Vec<T>, bool)> {
    let limit = i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1);
    let mut rows: Vec<T> = conn.prepare_cached(sql)?.query_map([limit], row)?.collect::<Result<_, _>>()?;
    let more = rows.len() > max;
    rows.truncate(max);
    Ok((rows, more))
}

/// Marks a to-do table's rows up to `last_seq` done, in a transaction of
/// the status file of its own (the last step of a maintenance pass).
fn clear_pending(conn: &mut Connection, table: &str, last_seq: i64) -> rusqlite::Result<()> {
    let tx = write_tx(conn, "status")?;
    tx.prepare_cached(&format!("DELETE FROM status.{table} WHERE seq <= ?1"))?.execute([last_seq])?;
    tx.commit()
}

/// The stored retweets of the posts `ids`.
fn retweets_of(tx: &rusqlite::Transaction, ids: &[i64]) -> rusqlite::Result<Vec<i64>> {
    let mut st = tx.prepare_cached("SELECT id FROM main.posts WHERE retweet_of = ?1")?;
    let mut out = Vec::new();
    for id in ids {
        for r in st.query_map([id], |r| r.get(0))? {
            out.push(r?);
        }
    }
    Ok(out)
}

/// Removes the content of the posts `ids` and of their `retweets` (already
/// tombstones), and their copies (and the profiles of the `purged` users)
/// from the posts that carry them, each carrier rewritten once. Returns the
/// number of rows removed from each, and of carriers rewritten.
fn delete_posts(
    tx: &rusqlite::Transaction,
    ids: &[i64],
    retweets: &[i64],
    purged: &[i64],
) -> Result<(u64, u64, u64), StoreError> {
    // Each removed row takes its own links as a carrier with it.
    let mut del = tx.prepare_cached("DELETE FROM main.posts WHERE id = ?1 RETURNING retweet_of, embeds")?;
    let mut delete = |id: &i64| -> Result<u64, StoreError> {
        let row = |r: &Row| Ok((r.get::<_, Option<i64>>(0)?, Embeds::from_column(r.get_ref(1)?.as_str_or_null()?)));
        let Some((retweet_of, embeds)) = del.query_row([id], row).optional()? else {
            return Ok(0);
        };
        unlink_carrier(tx, id_of(*id), retweet_of.map(id_of), &embeds)?;
        Ok(1)
    };
    let mut removed = 0;
    for id in ids {
        removed += delete(id)?;
    }
    let mut cascaded = 0;
    for id in retweets {
        cascaded += delete(id)?;
    }
    let mut gone = [ids, retweets].concat();
    gone.sort_unstable();
    let rewritten = remove_copies(tx, &gone, &[], purged)?;
    Ok((removed, cascaded, rewritten))
}

/// Links the post `id` to the copies and the profiles its `embeds` list
/// ([`EMBEDDED_IN`]). Returns how many links were new.
fn link_carrier(tx: &rusqlite::Transaction, id: Id, retweet_of: Option<Id>, embeds: &Embeds) -> rusqlite::Result<u64> {
    let mut links = 0;
    let mut link =
        tx.prepare_cached("INSERT OR IGNORE INTO main.embedded_in (embedded_id, post_id) VALUES (?1, ?2)")?;
    for e in rules::embedded::tracked_copies(embeds, retweet_of) {
        links += link.execute(params![key(e), key(id)])? as u64;
    }
    let mut link = tx.prepare_cached("INSERT OR IGNORE INTO main.embedded_users (user_id, post_id) VALUES (?1, ?2)")?;
    for u in rules::embedded::tracked_users(embeds) {
        links += link.execute(params![key(u), key(id)])? as u64;
    }
    Ok(links)
}

/// Drops the links [`link_carrier`] made for the post `id`, whose row is
/// removed.
fn unlink_carrier(tx: &rusqlite::Transaction, id: Id, retweet_of: Option<Id>, embeds: &Embeds) -> rusqlite::Result<()> {
    // Most posts carry nothing: no statement is looked up for them.
    if rules::embedded::tracked_copies(embeds, retweet_of).next().is_some() {
        let mut unlink = tx.prepare_cached("DELETE FROM main.embedded_in WHERE embedded_id = ?1 AND post_id = ?2")?;
        for e in rules::embedded::tracked_copies(embeds, retweet_of) {
            unlink.execute(params![key(e), key(id)])?;
        }
    }
    if rules::embedded::tracked_users(embeds).next().is_some() {
        let mut unlink = tx.prepare_cached("DELETE FROM main.embedded_users WHERE user_id = ?1 AND post_id = ?2")?;
        for u in rules::embedded::tracked_users(embeds) {
            unlink.execute(params![key(u), key(id)])?;
        }
    }
    Ok(())
}

/// Takes the copies of the tombstones `gone`, the geo of the copies of the
/// `scrubbed` posts and the profiles of the `purged` users out of the
/// stored posts that carry them ([`EMBEDDED_IN`], and the retweets of a
/// scrubbed post), then drops the links of the tombstones and purged users:
/// their later carriers lose them at import. Returns how many posts were
/// rewritten.
fn remove_copies(
    tx: &rusqlite::Transaction,
    gone: &[i64],
    scrubbed: &[i64],
    purged: &[i64],
) -> Result<u64, StoreError> {
    let mut carriers = retweets_of(tx, scrubbed)?;
    for (sql, ids) in [
        ("SELECT post_id FROM main.embedded_in WHERE embedded_id = ?1", [gone, scrubbed].concat()),
        ("SELECT post_id FROM main.embedded_users WHERE user_id = ?1", purged.to_vec()),
    ] {
        let mut st = tx.prepare_cached(sql)?;
        for id in ids {
            for c in st.query_map([id], |r| r.get::<_, i64>(0))? {
                carriers.push(c?);
            }
        }
    }
    if carriers.is_empty() {
        return Ok(0);
    }
    carriers.sort_unstable();
    carriers.dedup();
    let withdrawn = rules::embedded::Withdrawn {
        tombstones: gone.iter().map(|k| id_of(*k)).collect(),
        scrubbed: scrubbed.iter().map(|k| id_of(*k)).collect(),
        purged_users: purged.iter().map(|k| id_of(*k)).collect(),
    };
    let mut rewritten = 0;
    let mut read = tx.prepare_cached(&format!("SELECT {POST_COLS} FROM main.posts WHERE id = ?1"))?;
    let mut write = tx.prepare_cached("UPDATE main.posts SET embeds = ?2, json = ?3 WHERE id = ?1")?;
    for c in carriers {
        let Some(post) = read.query([c])?.next()?.map(|row| post_from(row, 0)).transpose()? else {
            continue;
        };
        if let Some(p) = rules::embedded::without_withdrawn(&post, &withdrawn) {
            write.execute(params![c, p.embeds.to_column(), p.json])?;
            rewritten += 1;
        }
    }
    let mut unlink = tx.prepare_cached("DELETE FROM main.embedded_in WHERE embedded_id = ?1")?;
    for id in gone {
        unlink.execute([id])?;
    }
    let mut unlink = tx.prepare_cached("DELETE FROM main.embedded_users WHERE user_id = ?1")?;
    for id in purged {
        unlink.execute([id])?;
    }
    Ok(rewritten)
}

/// Saves the handler's stream positions, in its own file. The first
/// statement of each handler transaction, after the file's write lock.
fn save_positions(tx: &rusqlite::Transaction, handler: HandlerKind, positions: &[Position]) -> rusqlite::Result<()> {
    let schema = handler.as_str(); // each handler's schema is named after it
    take_write_lock(tx, schema)?;
    let mut st = tx.prepare_cached(&format!(
        "INSERT INTO {schema}.positions (partition, last_event_ms, last_byte_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (partition) DO UPDATE SET
           last_event_ms = max(last_event_ms, excluded.last_event_ms),
           last_byte_ms = max(last_byte_ms, excluded.last_byte_ms)"
    ))?;
    for p in positions {
        st.execute(params![p.partition, p.last_event_ms, p.last_byte_ms])?;
    }
    Ok(())
}

/// The facts of embedded posts and users, for a chunk of a scan.
struct SqliteLookup<'c> {
    conn: &'c Connection,
}

/// A JSON array of store keys, for `IN (SELECT value FROM json_each(?1))`.
fn key_array(ids: &[Id]) -> String {
    let mut s = String::with_capacity(ids.len() * 20 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&key(*id).to_string());
    }
    s.push(']');
    s
}

impl Lookup for SqliteLookup<'_> {
    fn lookup(&mut self, posts: &[Id], users: &[Id], into: &mut EmbeddedFacts) -> Result<(), StoreError> {
        if !posts.is_empty() {
            let sql = format!("{SCAN_SELECT} WHERE p.id IN (SELECT value FROM json_each(?1))");
            let mut st = self.conn.prepare_cached(&sql)?;
            let mut rows = st.query([key_array(posts)])?;
            while let Some(row) = rows.next()? {
                let s = scanned_from(row)?;
                into.posts.insert(s.id, s.facts);
            }
        }
        if !users.is_empty() {
            let sql = format!("SELECT id, {USER_COLS} FROM user_state WHERE id IN (SELECT value FROM json_each(?1))");
            let mut st = self.conn.prepare_cached(&sql)?;
            let mut rows = st.query([key_array(users)])?;
            while let Some(row) = rows.next()? {
                into.users.insert(id_of(row.get(0)?), user_from(row, 1)?);
            }
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn apply_status(&mut self, events: &StatusEvents, positions: &[Position]) -> Result<ApplyStats, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        save_positions(&tx, HandlerKind::Status, positions)?;
        let mut stats = ApplyStats::default();
        let batch = StatusBatch::of(events);
        // The tombstone hides the post (and its retweets) at once; removing
        // the content is per-post work for the maintenance pass, in id
        // order, off the event path.
        let mut new_deletes = 0;
        if !batch.deletes.is_empty() {
            let mut tombstone = tx.prepare_cached("INSERT OR IGNORE INTO tombstones (id, reason) VALUES (?1, ?2)")?;
            let mut pending = tx.prepare_cached("INSERT INTO content_pending (id) VALUES (?1)")?;
            for id in &batch.deletes {
                if tombstone.execute(params![key(*id), TOMBSTONE_DELETE])? > 0 {
                    pending.execute([key(*id)])?;
                    new_deletes += 1;
                }
            }
        }
        // The like tombstone hides the like at once; the row in the main
        // file is deleted by the maintenance pass, so that the event path
        // writes the status file only (one lock: no handler ever waits for a
        // lock while holding another).
        let mut new_like_deletes = 0;
        if !batch.like_deletes.is_empty() {
            let mut gone =
                tx.prepare_cached("INSERT OR IGNORE INTO status.like_tombstones (user_id, post_id) VALUES (?1, ?2)")?;
            let mut unlike = tx.prepare_cached("INSERT INTO status.like_pending (user_id, post_id) VALUES (?1, ?2)")?;
            for (user_id, post_id) in &batch.like_deletes {
                if gone.execute(params![key(*user_id), key(*post_id)])? > 0 {
                    unlike.execute(params![key(*user_id), key(*post_id)])?;
                    new_like_deletes += 1;
                }
            }
        }
        batch.record_tombstones(new_deletes, new_like_deletes, &mut stats);
        let mut loaded: HashMap<Id, StatusState> = HashMap::with_capacity(batch.touched.len());
        {
            let mut load = tx.prepare_cached(&format!("SELECT {STATUS_COLS} FROM status_state WHERE id = ?1"))?;
            for id in &batch.touched {
                if let Some(row) = load.query([key(*id)])?.next()? {
                    loaded.insert(*id, status_from(row, 0)?);
                }
            }
        }
        let changed = rules::status::merge_batch(events.state(), loaded, &mut stats);
        {
            let mut save = tx.prepare_cached(
                "INSERT OR REPLACE INTO status_state (id, dropped, drop_t, superseded_by, withheld) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, s) in changed {
                let (d, dt) = toggle_cols(s.dropped);
                save.execute(params![key(id), d, dt, s.superseded_by.map(key), countries_to_text(&s.withheld)])?;
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    fn apply_user(&mut self, events: &[Timed<UserEvent>], positions: &[Position]) -> Result<ApplyStats, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        save_positions(&tx, HandlerKind::User, positions)?;
        let mut stats = ApplyStats::default();
        let ids = rules::user::batch_users(events);
        let mut loaded: HashMap<Id, UserState> = HashMap::with_capacity(ids.len());
        // The stored purge time of each stored row (absent: no row yet).
        let mut stored_purge: HashMap<Id, Option<TimeMs>> = HashMap::with_capacity(ids.len());
        {
            let mut load = tx.prepare_cached(&format!("SELECT {USER_COLS}, purge_at FROM user_state WHERE id = ?1"))?;
            for id in ids {
                if let Some(row) = load.query([key(id)])?.next()? {
                    loaded.insert(id, user_from(row, 0)?);
                    stored_purge.insert(id, row.i64_opt(9)?);
                }
            }
        }
        let changed = rules::user::merge_batch(events, loaded, &mut stats);
        {
            // A stored row is updated in place; the purge index is touched
            // only when the purge time changes (most toggles leave it).
            const SET: &str =
                "deleted = ?2, deleted_t = ?3, protected = ?4, protected_t = ?5, suspended = ?6, suspended_t = ?7,
                               withheld = ?8, scrub_up_to = ?9, delete_log = ?10";
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO user_state (id, {USER_COLS}, purge_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?;
            let mut update = tx.prepare_cached(&format!("UPDATE user_state SET {SET} WHERE id = ?1"))?;
            let mut update_purge =
                tx.prepare_cached(&format!("UPDATE user_state SET {SET}, purge_at = ?11 WHERE id = ?1"))?;
            let mut pending = tx.prepare_cached("INSERT OR IGNORE INTO geo_scrub_pending (user_id) VALUES (?1)")?;
            for u in changed {
                let s = &u.state;
                let (d, dt) = toggle_cols(s.deleted);
                let (p, pt) = toggle_cols(s.protected);
                let (su, st) = toggle_cols(s.suspended);
                let (withheld, scrub_up_to, delete_log, purge_at) =
                    (countries_to_text(&s.withheld), s.scrub_up_to.map(key), s.delete_log_text(), s.purge_at());
                let row: [&dyn rusqlite::ToSql; 11] =
                    [&key(u.id), &d, &dt, &p, &pt, &su, &st, &withheld, &scrub_up_to, &delete_log, &purge_at];
                match stored_purge.get(&u.id) {
                    Some(stored) if *stored == purge_at => update.execute(&row[..10])?,
                    Some(_) => update_purge.execute(&row[..])?,
                    None => insert.execute(&row[..])?,
                };
                if u.scrubbed {
                    pending.execute([key(u.id)])?;
                }
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    fn import(&mut self, posts: &[NewPost], likes: &[NewLike], now_ms: TimeMs) -> Result<ImportStats, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut loaded = Loaded::default();
        {
            let sql = format!("SELECT {POST_COLS} FROM main.posts WHERE id = ?1");
            let mut st = tx.prepare_cached(&sql)?;
            for id in Loaded::post_ids(posts) {
                if let Some(row) = st.query([key(id)])?.next()? {
                    loaded.rows.insert(id, post_from(row, 0)?);
                }
            }
        }
        for id in Loaded::tombstone_ids(posts, &loaded.rows) {
            if is_tombstone(&tx, id)? {
                loaded.tombstones.insert(id);
            }
        }
        for id in Loaded::copy_ids(posts, &loaded.rows) {
            let author = tx
                .prepare_cached("SELECT author_id FROM main.posts WHERE id = ?1")?
                .query_row([key(id)], |r| r.get::<_, i64>(0))
                .optional()?;
            if let Some(author) = author {
                loaded.authors.insert(id, id_of(author));
            }
        }
        for id in Loaded::user_ids(posts, &loaded.authors) {
            loaded.users.insert(id, load_user(&tx, id)?);
        }
        let plan = import::plan(posts, loaded, now_ms);
        for (id, why) in &plan.tombstones {
            // A new tombstone may have a row (a form stored before its
            // delete was known) and carriers: the maintenance pass removes
            // them, as for a delete.
            if add_tombstone(&tx, *id, tombstone_reason(*why))? {
                tx.prepare_cached("INSERT INTO status.content_pending (id) VALUES (?1)")?.execute([key(*id)])?;
            }
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO main.posts (id, author_id, retweet_of, quote_of, has_geo, form, embeds, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE main.posts SET author_id = ?2, retweet_of = ?3, quote_of = ?4, has_geo = ?5, form = ?6,
                 embeds = ?7, json = ?8 WHERE id = ?1",
            )?;
            for Planned { post: r, stored } in &plan.rows {
                link_carrier(&tx, r.id, r.retweet_of, &r.embeds)?;
                let row = params![
                    key(r.id),
                    key(r.author_id),
                    r.retweet_of.map(key),
                    r.quote_of.map(key),
                    r.has_geo,
                    r.form.as_i64(),
                    r.embeds.to_column(),
                    r.json
                ];
                if *stored {
                    update.execute(row)?
                } else {
                    insert.execute(row)?
                };
            }
        }
        if !plan.scrubbed_new.is_empty() {
            let scrubbed: Vec<i64> = plan.scrubbed_new.iter().map(|id| key(*id)).collect();
            remove_copies(&tx, &[], &scrubbed, &[])?;
        }
        let mut stats = plan.stats;
        let (mut gone, mut tombstoned) = (HashSet::new(), HashSet::new());
        for l in likes {
            let like_gone = tx
                .prepare_cached("SELECT 1 FROM like_tombstones WHERE user_id = ?1 AND post_id = ?2")?
                .query_row(params![key(l.user_id), key(l.post_id)], |_| Ok(()))
                .optional()?
                .is_some();
            if like_gone {
                gone.insert((l.user_id, l.post_id));
            }
            if is_tombstone(&tx, l.post_id)? {
                tombstoned.insert(l.post_id);
            }
        }
        for (user_id, post_id) in import::plan_likes(likes, &gone, &tombstoned, &mut stats) {
            tx.prepare_cached("INSERT OR IGNORE INTO likes (user_id, post_id) VALUES (?1, ?2)")?
                .execute(params![key(user_id), key(post_id)])?;
        }
        tx.commit()?;
        Ok(stats)
    }

    fn facts(&mut self, id: Id) -> Result<Facts, StoreError> {
        let sql = format!("{SCAN_SELECT} WHERE p.id = ?1");
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut rows = st.query([key(id)])?;
        match rows.next()? {
            Some(row) => Ok(scanned_from(row)?.facts),
            None => {
                let tombstone = self
                    .conn
                    .prepare_cached("SELECT 1 FROM tombstones WHERE id = ?1")?
                    .query_row([key(id)], |_| Ok(()))
                    .optional()?
                    .is_some();
                Ok(Facts { post: PostView { stored: false, tombstone, ..PostView::default() }, original: None })
            }
        }
    }

    fn user_state(&mut self, id: Id) -> Result<UserState, StoreError> {
        let sql = format!("SELECT {USER_COLS} FROM user_state WHERE id = ?1");
        let mut st = self.conn.prepare_cached(&sql)?;
        let mut rows = st.query([key(id)])?;
        match rows.next()? {
            Some(row) => user_from(row, 0),
            None => Ok(UserState::default()),
        }
    }

    fn scan(&mut self, visit: &mut dyn FnMut(ScanRow<'_>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let conn = &self.conn;
        let sql = format!("{SCAN_SELECT} ORDER BY p.id");
        let mut st = conn.prepare(&sql)?;
        let mut rows = st.query([])?;
        // SQLite runs the look-ups on the same connection, between steps of
        // the scan, in the same read transaction.
        let mut lookup = SqliteLookup { conn };
        let mut chunker = Chunker::default();
        while let Some(row) = rows.next()? {
            chunker.row(scanned_from(row)?, row.text(4)?, &mut lookup, visit)?;
        }
        chunker.flush(&mut lookup, visit)
    }

    /// Each step writes one file in its own transaction (a transaction over
    /// several files is not atomic in WAL mode), in an order that a crash
    /// between steps cannot hurt: the tombstones first, then the content,
    /// then the to-do entry. A step that ran is harmless to run again.
    fn maintain(&mut self, now_ms: TimeMs, max_users: usize) -> Result<MaintenanceStats, StoreError> {
        let mut stats = MaintenanceStats::default();
        let limit = i64::try_from(max_users).unwrap_or(i64::MAX);
        // Content of deleted posts, and the retweets of them, in id order.
        let max_deleted = max_users.saturating_mul(10);
        let tx = write_tx(&mut self.conn, "status")?;
        let (deleted, more) = oldest_pending(
            &tx,
            "SELECT seq, id FROM status.content_pending ORDER BY seq LIMIT ?1",
            max_deleted,
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        stats.pending += u64::from(more);
        if let Some(&(last_seq, _)) = deleted.last() {
            // In id order: neighbouring rows share pages.
            let mut ids: Vec<i64> = deleted.iter().map(|(_, id)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            let retweets = retweets_of(&tx, &ids)?;
            for r in &retweets {
                add_tombstone(&tx, id_of(*r), TOMBSTONE_CASCADE)?;
            }
            tx.commit()?;
            let tx = write_tx(&mut self.conn, "main")?;
            let (removed, cascaded, rewritten) = delete_posts(&tx, &ids, &retweets, &[])?;
            tx.commit()?;
            stats.posts_deleted += removed;
            stats.retweets_cascaded += cascaded;
            stats.copies_removed += rewritten;
            clear_pending(&mut self.conn, "content_pending", last_seq)?;
        } else {
            tx.commit()?;
        }
        // Removed likes.
        let (likes, more) = oldest_pending(
            &self.conn,
            "SELECT seq, user_id, post_id FROM status.like_pending ORDER BY seq LIMIT ?1",
            max_deleted,
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
        )?;
        stats.pending += u64::from(more);
        if let Some(&(last_seq, _, _)) = likes.last() {
            let mut pairs: Vec<(i64, i64)> = likes.iter().map(|&(_, u, p)| (u, p)).collect();
            pairs.sort_unstable();
            let tx = write_tx(&mut self.conn, "main")?;
            {
                let mut del = tx.prepare_cached("DELETE FROM main.likes WHERE user_id = ?1 AND post_id = ?2")?;
                for (u, p) in pairs {
                    del.execute(params![u, p])?;
                }
            }
            tx.commit()?;
            clear_pending(&mut self.conn, "like_pending", last_seq)?;
        }
        // Purges whose 30 days have passed and that were not carried out for
        // this purge time (a late undelete can lift a purge carried out, and
        // a later delete bring a new one: `purge_done` holds the purge time
        // carried out).
        let due: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT u.id, u.purge_at FROM user.user_state u LEFT JOIN main.purge_done d ON d.user_id = u.id
                 WHERE u.purge_at IS NOT NULL AND u.purge_at <= ?1 AND (d.at_ms IS NULL OR d.at_ms <> u.purge_at)
                 ORDER BY u.id LIMIT ?2",
            )?
            .query_map(params![now_ms, limit.saturating_add(1)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (i, (uid, purge_at)) in due.iter().enumerate() {
            if i >= max_users {
                stats.pending += 1;
                break;
            }
            let tx = write_tx(&mut self.conn, "status")?;
            let ids: Vec<i64> = tx
                .prepare_cached("SELECT id FROM main.posts WHERE author_id = ?1")?
                .query_map([uid], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let retweets = retweets_of(&tx, &ids)?;
            for id in &ids {
                add_tombstone(&tx, id_of(*id), TOMBSTONE_PURGE)?;
            }
            for r in &retweets {
                add_tombstone(&tx, id_of(*r), TOMBSTONE_CASCADE)?;
            }
            tx.commit()?;
            let tx = write_tx(&mut self.conn, "main")?;
            let (_, cascaded, rewritten) = delete_posts(&tx, &ids, &retweets, &[*uid])?;
            tx.prepare_cached("INSERT OR REPLACE INTO main.purge_done (user_id, at_ms) VALUES (?1, ?2)")?
                .execute(params![uid, purge_at])?;
            tx.commit()?;
            stats.retweets_cascaded += cascaded;
            stats.copies_removed += rewritten;
            stats.users_purged += 1;
            stats.posts_purged += ids.len() as u64;
        }
        // Geo removal after scrub_geo.
        let pending: Vec<i64> = self
            .conn
            .prepare_cached("SELECT user_id FROM user.geo_scrub_pending ORDER BY user_id LIMIT ?1")?
            .query_map([limit.saturating_add(1)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for (i, uid) in pending.iter().enumerate() {
            if i >= max_users {
                stats.pending += 1;
                break;
            }
            let tx = write_tx(&mut self.conn, "main")?;
            let up_to: Option<i64> = tx
                .prepare_cached("SELECT scrub_up_to FROM user.user_state WHERE id = ?1")?
                .query_row([uid], |r| r.get(0))
                .optional()?
                .flatten();
            if let Some(up_to) = up_to {
                // The author's posts, with the JSON of those with geo.
                let rows: Vec<(i64, Option<String>)> = tx
                    .prepare_cached("SELECT id, CASE WHEN has_geo THEN json END FROM main.posts WHERE author_id = ?1")?
                    .query_map([uid], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let mut covered = Vec::new();
                for (id, json) in rows {
                    if !rules::user::scrub_covers(id_of(up_to), id_of(id)) {
                        continue;
                    }
                    covered.push(id);
                    // The post's own geo; its copies carried by other posts
                    // below.
                    // JSON that cannot be edited keeps its geo flag: every
                    // answer then removes the geo or withholds the post.
                    if let Some(json) = json.as_deref().and_then(strip_own_geo) {
                        tx.prepare_cached("UPDATE main.posts SET json = ?2, has_geo = 0 WHERE id = ?1")?
                            .execute(params![id, json])?;
                        stats.posts_geo_scrubbed += 1;
                    }
                }
                stats.copies_removed += remove_copies(&tx, &[], &covered, &[])?;
            }
            tx.commit()?;
            let tx = write_tx(&mut self.conn, "user")?;
            tx.prepare_cached("DELETE FROM user.geo_scrub_pending WHERE user_id = ?1")?.execute([uid])?;
            tx.commit()?;
        }
        Ok(stats)
    }

    fn positions(&mut self) -> Result<Vec<(HandlerKind, Position)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT 'status', partition, last_event_ms, last_byte_ms FROM status.positions
             UNION ALL SELECT 'user', partition, last_event_ms, last_byte_ms FROM user.positions
             ORDER BY 2, 1",
        )?;
        let rows = st.query_map([], |r| {
            let h: String = r.get(0)?;
            Ok((
                if h == "user" { HandlerKind::User } else { HandlerKind::Status },
                Position { partition: r.get(1)?, last_event_ms: r.get(2)?, last_byte_ms: r.get(3)? },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn open_gap(&mut self, gap: &NewGap, now_ms: TimeMs) -> Result<i64, StoreError> {
        let tx = write_tx(&mut self.conn, "status")?;
        tx.prepare_cached(
            "INSERT INTO status.gaps (partition, from_ms, to_ms, cause, state, repair, covered_to_ms, opened_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?2, ?7)",
        )?
        .execute(params![
            gap.partition,
            gap.from_ms,
            gap.to_ms,
            gap.cause.as_str(),
            gap.state.as_str(),
            gap.repair.map(Repair::as_str),
            now_ms
        ])?;
        let id = tx.last_insert_rowid();
        tx.prepare_cached("INSERT INTO status.gap_history (gap_id, at_ms, state, note) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![id, now_ms, gap.state.as_str(), gap.note])?;
        tx.commit()?;
        Ok(id)
    }

    fn move_gap(&mut self, id: i64, m: &GapMove, now_ms: TimeMs) -> Result<bool, StoreError> {
        let tx = write_tx(&mut self.conn, "status")?;
        let from: Option<String> = tx
            .prepare_cached("SELECT state FROM status.gaps WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if !from.as_deref().and_then(GapState::parse).is_some_and(|f| f.may_move_to(m.to)) {
            return Ok(false);
        }
        tx.prepare_cached(
            "UPDATE status.gaps SET state = ?2, repair = coalesce(?3, repair), covered_to_ms = coalesce(?4, covered_to_ms)
             WHERE id = ?1",
        )?
        .execute(params![id, m.to.as_str(), m.repair.map(Repair::as_str), m.covered_to_ms])?;
        tx.prepare_cached("INSERT INTO status.gap_history (gap_id, at_ms, state, note) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![id, now_ms, m.to.as_str(), m.note])?;
        tx.commit()?;
        Ok(true)
    }

    fn gaps(&mut self, unresolved_only: bool) -> Result<Vec<Gap>, StoreError> {
        let filter = gap_filter(unresolved_only);
        let rows: Vec<GapRow> = self
            .conn
            .prepare_cached(&format!("SELECT {GAP_COLS} FROM status.gaps {filter} ORDER BY from_ms, partition, id"))?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
            })?
            .collect::<Result<_, _>>()?;
        let history: Vec<GapHistoryRow> = self
            .conn
            .prepare_cached(&format!(
                "SELECT gap_id, at_ms, state, note FROM status.gap_history
                 WHERE gap_id IN (SELECT id FROM status.gaps {filter}) ORDER BY seq"
            ))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        assemble_gaps(rows, history)
    }

    fn batch_jobs(&mut self) -> Result<Vec<BatchJob>, StoreError> {
        let rows: Vec<BatchJobRow> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {BATCH_JOB_COLS} FROM main.batch_jobs ORDER BY kind, run, part, created_ms"
            ))?
            .query_map([], |r| {
                Ok(BatchJobRow {
                    job_id: r.get(0)?,
                    kind: r.get(1)?,
                    run: r.get(2)?,
                    part: r.get(3)?,
                    source: r.get(4)?,
                    cursor_from: r.get(5)?,
                    cursor_to: r.get(6)?,
                    ids: r.get(7)?,
                    last_part: r.get(8)?,
                    stage: r.get(9)?,
                    upload_url: r.get(10)?,
                    upload_expires_ms: r.get(11)?,
                    download_url: r.get(12)?,
                    download_expires_ms: r.get(13)?,
                    created_ms: r.get(14)?,
                    updated_ms: r.get(15)?,
                    result_lines: r.get(16)?,
                    note: r.get(17)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter().map(BatchJobRow::into_job).collect()
    }

    fn save_batch_job(&mut self, j: &BatchJob) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO main.batch_jobs ({BATCH_JOB_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ))?
            .execute(params![
                j.job_id,
                j.kind.as_str(),
                j.run,
                j.part,
                j.source.key(),
                j.cursor_from,
                j.cursor_to,
                j.ids as i64,
                j.last_part,
                j.stage.as_str(),
                j.upload_url,
                j.upload_expires_ms,
                j.download_url,
                j.download_expires_ms,
                j.created_ms,
                j.updated_ms,
                j.result_lines.map(|n| n as i64),
                j.note
            ])?;
        Ok(())
    }

    fn id_page(&mut self, kind: BatchType, after: i64, limit: usize) -> Result<Vec<i64>, StoreError> {
        let sql = match kind {
            BatchType::Tweets => "SELECT id FROM main.posts WHERE id > ?1 ORDER BY id LIMIT ?2",
            BatchType::Users => {
                "SELECT DISTINCT author_id FROM main.posts WHERE author_id > ?1 ORDER BY author_id LIMIT ?2"
            }
        };
        let keys = self
            .conn
            .prepare_cached(sql)?
            .query_map(params![after, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn author_of(&mut self, id: Id) -> Result<Option<Id>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT author_id FROM posts WHERE id = ?1")?
            .query_row([key(id)], |r| r.get::<_, i64>(0))
            .optional()?
            .map(id_of))
    }

    fn has_like(&mut self, user_id: Id, post_id: Id) -> Result<bool, StoreError> {
        Ok(self
            .conn
            // The like tombstone is in the status file and the removal in the
            // main file: a crash between their commits must not bring it back.
            .prepare_cached(
                "SELECT 1 FROM main.likes l WHERE user_id = ?1 AND post_id = ?2
                 AND NOT EXISTS (SELECT 1 FROM status.like_tombstones t WHERE t.user_id = ?1 AND t.post_id = ?2)",
            )?
            .query_row(params![key(user_id), key(post_id)], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{StatusEvent, UserEvent};

    /// The first column of every row `sql` returns.
    fn column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
        conn.prepare(sql).unwrap().query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn delete(id: Id) -> Timed<StatusEvent> {
        Timed { time_ms: 1, event: StatusEvent::Delete { id, user_id: Some(1) } }
    }

    /// `.cargo/config.toml` builds the bundled SQLite without the options
    /// that make every connection of the process share one page cache
    /// behind one mutex, and one allocator counter behind another: the two
    /// handlers (and the query API's readers) contended for them on every
    /// page fetch and allocation.
    #[test]
    fn the_bundled_sqlite_gives_each_connection_its_own_page_cache() {
        let options: Vec<String> = column(&Connection::open_in_memory().unwrap(), "PRAGMA compile_options");
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
    }

    #[test]
    fn deletes_count_once_per_post_whatever_their_order_in_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        let first = s.apply_status(&StatusEvents::from(vec![delete(30), delete(10), delete(30)]), &[]).unwrap();
        assert_eq!((first.applied.get("delete"), first.duplicates.get("delete")), (2, 1));
        let unlike = |post_id| Timed { time_ms: 1, event: StatusEvent::FavoriteDelete { user_id: 7, post_id } };
        let second =
            s.apply_status(&StatusEvents::from(vec![delete(20), delete(10), unlike(5), unlike(5)]), &[]).unwrap();
        assert_eq!((second.applied.get("delete"), second.duplicates.get("delete")), (1, 1));
        assert_eq!((second.applied.get("delete_favorite"), second.duplicates.get("delete_favorite")), (1, 1));
        let pending: Vec<i64> = s
            .conn
            .prepare("SELECT id FROM content_pending ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(pending, [10, 20, 30], "each deleted post's content is removed once");
        assert!(s.facts(10).unwrap().post.tombstone && s.facts(20).unwrap().post.tombstone);
    }

    /// A stored user row is updated in place, its purge-index entry only
    /// when the purge time changes: a user deleted in a later batch than
    /// its first event must enter the index, one toggled after its delete
    /// must stay in it, and one undeleted in time must leave it.
    #[test]
    fn user_rows_updated_in_place_keep_the_purge_index_right() {
        const DAY: TimeMs = 86_400_000;
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        let ev = |t, event| Timed { time_ms: t, event };
        // Batch 1: every user gets a row without a purge time.
        let first: Vec<_> = (1..=4).map(|u| ev(DAY, UserEvent::Protect { user_id: u })).collect();
        s.apply_user(&first, &[]).unwrap();
        // Batch 2: 1, 2 and 3 deleted (purge time set on a stored row).
        let deletes: Vec<_> = (1..=3).map(|u| ev(2 * DAY, UserEvent::Delete { user_id: u })).collect();
        s.apply_user(&deletes, &[]).unwrap();
        // Batch 3: 2 toggled (purge time unchanged), 3 undeleted within 30 days.
        s.apply_user(
            &[ev(3 * DAY, UserEvent::Unprotect { user_id: 2 }), ev(4 * DAY, UserEvent::Undelete { user_id: 3 })],
            &[],
        )
        .unwrap();
        let indexed: Vec<i64> = column(
            &s.conn,
            "SELECT id FROM user.user_state INDEXED BY user_state_purge_at WHERE purge_at IS NOT NULL ORDER BY id",
        );
        assert_eq!(indexed, vec![1, 2], "deleted and not undeleted in time");
        let check: String = s.conn.query_row("PRAGMA user.integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let m = s.maintain(40 * DAY, 100).unwrap();
        assert_eq!(m.users_purged, 2, "{m:?}");
    }

    #[test]
    fn a_removed_like_is_hidden_at_once_and_deleted_by_the_maintenance_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        let like = |user_id, post_id| NewLike { user_id, post_id };
        s.import(&[], &[like(7, 5), like(8, 5)], 0).unwrap();
        let unlike = Timed { time_ms: 1, event: StatusEvent::FavoriteDelete { user_id: 7, post_id: 5 } };
        s.apply_status(&StatusEvents::from(vec![unlike.clone(), unlike]), &[]).unwrap();
        assert!(!s.has_like(7, 5).unwrap() && s.has_like(8, 5).unwrap());
        let rows =
            |s: &SqliteStore| -> i64 { s.conn.query_row("SELECT count(*) FROM main.likes", [], |r| r.get(0)).unwrap() };
        assert_eq!(rows(&s), 2, "the event path does not write the main file");
        let bounded = s.maintain(0, 0).unwrap();
        assert!(bounded.pending > 0 && rows(&s) == 2, "a pass bounded to nothing leaves the work pending");
        s.maintain(0, 100).unwrap();
        assert_eq!(rows(&s), 1, "the removed like's row is gone");
        let pending: i64 = s.conn.query_row("SELECT count(*) FROM status.like_pending", [], |r| r.get(0)).unwrap();
        assert_eq!(pending, 0);
        s.import(&[], &[like(7, 5)], 0).unwrap();
        assert!(!s.has_like(7, 5).unwrap(), "nor does a later import bring it back");
    }

    #[test]
    fn a_writer_waits_for_the_other_writer_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut s = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let other = connect(path.to_str().unwrap()).unwrap();
        other.execute_batch("BEGIN; INSERT INTO user.geo_scrub_pending (user_id) VALUES (9);").unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            other.execute_batch("COMMIT").unwrap();
        });
        let stats = s.apply_user(&[Timed { time_ms: 1, event: UserEvent::Protect { user_id: 5 } }], &[]).unwrap();
        holder.join().unwrap();
        assert_eq!(stats.applied.get("user_protect"), 1);
    }

    /// Holds `schema`'s write lock from another connection while `apply`
    /// runs; true when `apply` finished without it (a 20 s wait means it
    /// needed the lock).
    fn runs_while_locked(path: &std::path::Path, schema: &str, apply: impl FnOnce(&mut SqliteStore)) -> bool {
        let mut s = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let mut holder = connect(path.to_str().unwrap()).unwrap();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let schema = schema.to_owned();
        let t = std::thread::spawn(move || {
            let tx = write_tx(&mut holder, &schema).unwrap();
            locked.send(()).unwrap();
            let in_time = wait.recv_timeout(Duration::from_secs(20)).is_ok();
            tx.commit().unwrap();
            in_time
        });
        is_locked.recv().unwrap();
        apply(&mut s);
        let _ = done.send(());
        t.join().unwrap()
    }

    #[test]
    fn the_two_handlers_never_wait_on_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let pos = [Position { partition: 1, last_event_ms: 5, last_byte_ms: 6 }];
        let user = |s: &mut SqliteStore| {
            s.apply_user(&[Timed { time_ms: 1, event: UserEvent::Protect { user_id: 5 } }], &pos).unwrap();
        };
        let status = |s: &mut SqliteStore| {
            let unlike = Timed { time_ms: 1, event: StatusEvent::FavoriteDelete { user_id: 7, post_id: 3 } };
            s.apply_status(&StatusEvents::from(vec![delete(10), unlike]), &pos).unwrap();
        };
        assert!(runs_while_locked(&path, "status", user), "the user handler waited for the status handler's file");
        assert!(runs_while_locked(&path, "user", status), "the status handler waited for the user handler's file");
        // Nor for the main file, which imports and the maintenance pass write
        // (a handler holding its lock while waiting for another could
        // deadlock with an import, which takes them all).
        assert!(runs_while_locked(&path, "main", status), "the status handler waited for the main file");
        assert!(runs_while_locked(&path, "main", user), "the user handler waited for the main file");
        // And the lock is real: a writer of the same file waits for it.
        let writer_waits = !runs_while_locked(&path, "user", |s| {
            // Gives up after 200 ms of "database is locked" instead of 30 s.
            s.conn
                .busy_handler(Some(|n| {
                    std::thread::sleep(Duration::from_millis(10));
                    n < 20
                }))
                .unwrap();
            assert!(s.apply_user(&[Timed { time_ms: 2, event: UserEvent::Protect { user_id: 6 } }], &pos).is_err());
        });
        assert!(!writer_waits, "the holder was released by the test, in time");
        let mut s = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let stored = s.positions().unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert!(s.facts(10).unwrap().post.tombstone);
    }

    #[test]
    fn each_wal_stays_bounded_while_both_handlers_commit_back_to_back() {
        // Checkpoints every 100 pages here; without them that keep up, the
        // status file's WAL ends at ~12 MB (every page ever written). With
        // one file and two writers the WAL was never restarted at full rate
        // (1.2 GB after a 12 s run, BENCHMARKS.md): a timing this small test
        // does not reproduce; it guards the one-writer-per-file result.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap().to_owned();
        let open = || {
            let s = SqliteStore::open(&path).unwrap();
            s.conn.pragma_update(None, "wal_autocheckpoint", 100).unwrap();
            s
        };
        let (mut status, mut user) = (open(), open());
        // Scattered keys: nearly every event dirties its own page.
        let scattered = |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) + 1;
        let t = std::thread::spawn(move || {
            for b in 0..100u64 {
                let batch: StatusEvents = (0..200).map(|k| delete(scattered(b * 200 + k))).collect();
                status.apply_status(&batch, &[Position { partition: 1, last_event_ms: 1, last_byte_ms: 1 }]).unwrap();
            }
        });
        for b in 0..100u64 {
            let batch: Vec<_> = (0..200)
                .map(|k| Timed { time_ms: b as i64, event: UserEvent::Protect { user_id: scattered(b * 200 + k) } })
                .collect();
            user.apply_user(&batch, &[Position { partition: 1, last_event_ms: 1, last_byte_ms: 1 }]).unwrap();
        }
        t.join().unwrap();
        for f in store_files(&path) {
            let wal = std::fs::metadata(format!("{f}-wal")).map(|m| m.len()).unwrap_or(0);
            assert!(wal < 8 << 20, "{f}-wal is {wal} bytes");
        }
    }

    /// A version-1 store (everything in one file) with a little of every
    /// table.
    fn v1_store(path: &str) {
        SqliteStore::create_version_1(path).unwrap();
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "INSERT INTO posts VALUES (10, 5, NULL, 0, '{}'), (11, 5, NULL, 0, '{}'), (12, 6, NULL, 0, '{}');
             INSERT INTO likes VALUES (7, 12), (8, 12);
             INSERT INTO tombstones VALUES (10, 1);
             INSERT INTO content_pending (id) VALUES (10);
             INSERT INTO like_tombstones VALUES (8, 12);
             INSERT INTO status_state (id, withheld) VALUES (12, 'DE');
             INSERT INTO user_state (id, protected, protected_t) VALUES (5, 1, 100);
             INSERT INTO geo_scrub_pending VALUES (6);
             INSERT INTO positions VALUES ('status', 3, 1000, 2000), ('user', 3, 900, 1900);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }

    fn assert_v1_data_kept(s: &mut SqliteStore) {
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(s.facts(10).unwrap().post.tombstone);
        let why =
            |s: &mut SqliteStore, id| crate::rules::visibility::explain(&s.facts(id).unwrap(), None, 0).join("; ");
        assert!(why(s, 11).contains("protected"), "user state moved: {}", why(s, 11));
        assert!(why(s, 12).contains("withheld"), "status state moved: {}", why(s, 12));
        assert!(s.has_like(7, 12).unwrap() && !s.has_like(8, 12).unwrap());
        let positions = s.positions().unwrap();
        assert_eq!(
            positions,
            vec![
                (HandlerKind::Status, Position { partition: 3, last_event_ms: 1000, last_byte_ms: 2000 }),
                (HandlerKind::User, Position { partition: 3, last_event_ms: 900, last_byte_ms: 1900 }),
            ]
        );
        let left: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM main.sqlite_master WHERE name IN ('tombstones', 'user_state', 'positions')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "the main file no longer has the handlers' tables");
        let m = s.maintain(0, 100).unwrap();
        assert_eq!(m.posts_deleted, 1, "the pending content removal moved too");
    }

    /// Every post `lines` store.
    fn parsed(lines: &[impl AsRef<str>]) -> Vec<NewPost> {
        lines.iter().flat_map(|l| crate::post::parse_post_line(l.as_ref()).unwrap()).collect()
    }

    /// A store at `path` holding `posts`, made by `older` (SQL) into what an
    /// earlier complyd left, then opened by today's.
    fn moved_from(path: &str, posts: &[NewPost], older: &str) -> SqliteStore {
        earlier_store(path, posts, older);
        let s = SqliteStore::open(path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        s
    }

    /// A store at `path` holding `posts`, made by `older` (SQL) into what an
    /// earlier complyd left.
    fn earlier_store(path: &str, posts: &[NewPost], older: &str) {
        let mut s = SqliteStore::open(path).unwrap();
        s.import(posts, &[], 0).unwrap();
        s.conn.execute_batch(older).unwrap();
    }

    /// Opens the store at `path` cut after every second transaction of one
    /// post until its move is done, checking that each open goes further
    /// (a move that started again each time would never end). Returns the
    /// marks the cuts left: (step, next key, posts read, posts relisted).
    fn open_cut_until_moved(path: &str) -> Vec<(String, i64, i64, i64)> {
        let mark = || -> Vec<(String, i64, i64, i64)> {
            let c = connect(path).unwrap();
            let mut st = c.prepare("SELECT step, next, read, relisted FROM main.move_progress").unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let mut marks: Vec<(String, i64, i64, i64)> = Vec::new();
        for _ in 0..50 {
            if SqliteStore::open_cut_after(path, 1, 2).unwrap() {
                return marks;
            }
            let m = mark();
            assert_eq!(m.len(), 1, "a cut move keeps how far it got: {m:?}");
            let went_on = marks.last().is_none_or(|l| (l.0.as_str(), l.1) != (m[0].0.as_str(), m[0].1));
            assert!(went_on, "the move went no further after a cut: {marks:?}");
            marks.push(m[0].clone());
        }
        panic!("the move never ended: {marks:?}");
    }

    fn json(s: &SqliteStore, id: i64) -> String {
        s.conn.query_row("SELECT json FROM main.posts WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    }

    #[test]
    fn the_withdrawn_are_taken_out_a_batch_a_transaction_and_a_cut_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut s = SqliteStore::open(path.to_str().unwrap()).unwrap();
        // Quotes of posts by user 1; `of` above 2^63 is a negative key.
        let quote = |id: u64, of: u64, author: u64| {
            format!(
                r#"{{"id_str":"{id}","user":{{"id_str":"3"}},"quoted_status_id_str":"{of}","quoted_status":{{"id_str":"{of}","user":{{"id_str":"{author}"}},"text":"WORDS{of}","place":{{"full_name":"PLACE{of}"}}}}}}"#
            )
        };
        const HIGH: u64 = 9_223_372_036_854_775_809;
        let mut lines: Vec<String> =
            [(300, 100), (301, 101), (302, 102), (303, HIGH)].map(|(id, of)| quote(id, of, 1)).to_vec();
        // Posts by user 2 (scrubbed up to 105: 104 covered) and user 4
        // (scrubbed up to 50: 99 not covered, and before 104 in key order).
        lines.extend([quote(310, 99, 4), quote(311, 104, 2), quote(312, 106, 2)]);
        // Profiles of users 9 and 8 (purged) and 7 (kept).
        for (id, user) in [(320, 9), (321, 8), (322, 7)] {
            lines.push(format!(
                r#"{{"data":{{"id":"{id}","author_id":"3","text":"hi"}},"includes":{{"users":[{{"id":"{user}","name":"PROFILE{user}"}}]}}}}"#
            ));
        }
        s.import(&parsed(&lines), &[], 0).unwrap();
        // As an earlier complyd left them: withdrawn, still in the carriers.
        s.conn
            .execute_batch(&format!(
                "INSERT INTO status.tombstones VALUES (100, 1), (101, 1), (102, 1), ({}, 1);
                 INSERT INTO user.user_state (id, scrub_up_to) VALUES (2, 105), (4, 50);
                 INSERT INTO main.purge_done VALUES (9, 1), (8, 1);",
                HIGH as i64
            ))
            .unwrap();
        let mut marks = Vec::new();
        let mut at = Some((WITHDRAW_STEPS[0], i64::MIN));
        while let Some((step, from)) = at {
            let tx = s.conn.transaction().unwrap();
            let (next, rewritten) = withdraw_batch(&tx, step, from, 1).unwrap();
            tx.commit().unwrap();
            marks.push((step, from, rewritten));
            at = next;
            assert!(marks.len() < 30, "{marks:?}");
        }
        // One withdrawn id a transaction, each going on from the last.
        let step =
            |name: &str| -> Vec<(i64, u64)> { marks.iter().filter(|m| m.0 == name).map(|m| (m.1, m.2)).collect() };
        assert_eq!(step("gone"), [(i64::MIN, 1), (HIGH as i64 + 1, 1), (101, 1), (102, 1), (103, 0)], "{marks:?}");
        assert_eq!(step("purged"), [(i64::MIN, 1), (9, 1), (10, 0)], "{marks:?}");
        // 99 (not covered), then 104 (covered), then 106 (not covered).
        assert_eq!(step("scrubbed"), [(i64::MIN, 0), (100, 1), (105, 0), (107, 0)], "{marks:?}");
        for (id, gone) in [(300, "WORDS100"), (301, "WORDS101"), (302, "WORDS102"), (303, "WORDS9223372036854775809")] {
            assert!(!json(&s, id).contains(gone), "{}", json(&s, id));
        }
        assert!(!json(&s, 311).contains("PLACE104") && json(&s, 311).contains("WORDS104"), "{}", json(&s, 311));
        for (id, kept) in [(310, "PLACE99"), (312, "PLACE106"), (322, "PROFILE7")] {
            assert!(json(&s, id).contains(kept), "{}", json(&s, id));
        }
        for (id, gone) in [(320, "PROFILE9"), (321, "PROFILE8")] {
            assert!(!json(&s, id).contains(gone), "{}", json(&s, id));
        }
        // A batch done again (a cut before its mark was saved) changes
        // nothing twice.
        let tx = s.conn.transaction().unwrap();
        assert_eq!(withdraw_batch(&tx, "gone", i64::MIN, 10).unwrap(), (Some(("purged", i64::MIN)), 0));
        assert_eq!(withdraw_batch(&tx, "scrubbed", i64::MIN, 10).unwrap(), (Some(("scrubbed", 107)), 0));
        assert!(withdraw_batch(&tx, "moving", 0, 1).is_err(), "an unknown step is refused");
    }

    #[test]
    fn the_move_to_version_6_takes_copies_of_deleted_posts_out_of_their_carriers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        // A version 5 store: quote 300 carries 100 (deleted, its row
        // removed), quote 301 carries 101 (kept), and retweet 303 carries
        // 102, whose author scrubbed its geo; nothing lists the carriers.
        let quote = |id: u64, of: u64, words: &str| {
            format!(
                r#"{{"id_str":"{id}","user":{{"id_str":"3"}},"quoted_status_id_str":"{of}","quoted_status":{{"id_str":"{of}","user":{{"id_str":"1"}},"text":"{words}"}}}}"#
            )
        };
        let retweet = r#"{"id_str":"303","user":{"id_str":"3"},"retweeted_status":{"id_str":"102","user":{"id_str":"2"},"text":"here","place":{"full_name":"PLACE102"}}}"#;
        // And v2 post 304 carries the profile of user 9, purged.
        let v2 =
            r#"{"data":{"id":"304","author_id":"3","text":"hi"},"includes":{"users":[{"id":"9","name":"PROFILE9"}]}}"#;
        let lines = [quote(300, 100, "GONE100"), quote(301, 101, "KEPT101"), retweet.to_owned(), v2.to_owned()];
        let mut s = moved_from(
            path,
            &parsed(&lines),
            "DROP TABLE main.embedded_in; DROP TABLE main.embedded_users; DELETE FROM main.posts WHERE id = 100;
             INSERT INTO status.tombstones VALUES (100, 1);
             INSERT INTO user.user_state (id, scrub_up_to) VALUES (2, 102);
             INSERT INTO main.purge_done VALUES (9, 1);
             UPDATE main.posts SET json = '{}', has_geo = 0 WHERE id = 102;
             PRAGMA main.user_version = 5;",
        );
        assert!(!json(&s, 300).contains("GONE100"), "{}", json(&s, 300));
        assert!(json(&s, 301).contains("KEPT101"));
        assert!(!json(&s, 303).contains("PLACE102") && json(&s, 303).contains("here"), "{}", json(&s, 303));
        assert!(!json(&s, 304).contains("PROFILE9") && json(&s, 304).contains("hi"), "{}", json(&s, 304));
        // 101's carrier is listed now: its delete takes the copy out too.
        s.apply_status(&StatusEvents::from(vec![delete(101)]), &[]).unwrap();
        let m = s.maintain(0, 100).unwrap();
        assert_eq!((m.posts_deleted, m.copies_removed), (1, 1));
        assert!(!json(&s, 301).contains("KEPT101"), "{}", json(&s, 301));
    }

    #[test]
    fn a_removed_post_takes_its_links_as_a_carrier_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut s = SqliteStore::open(path.to_str().unwrap()).unwrap();
        let lines = [
            // Carries a copy of 100 and user 9's profile.
            r#"{"data":{"id":"300","author_id":"3","text":"q","referenced_tweets":[{"type":"quoted","id":"100"}]},"includes":{"tweets":[{"id":"100","author_id":"1","text":"orig"}],"users":[{"id":"9","name":"N"}]}}"#,
            // Quotes 101; its retweet 302 carries 101 inside 301.
            r#"{"id_str":"301","user":{"id_str":"3"},"quoted_status_id_str":"101","quoted_status":{"id_str":"101","user":{"id_str":"1"},"text":"w"}}"#,
            r#"{"id_str":"302","user":{"id_str":"4"},"retweeted_status":{"id_str":"301","user":{"id_str":"3"},"quoted_status_id_str":"101","quoted_status":{"id_str":"101","user":{"id_str":"1"},"text":"w"}}}"#,
            // Stays: quotes 100 too.
            r#"{"id_str":"304","user":{"id_str":"5"},"quoted_status_id_str":"100","quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"orig"}}"#,
        ];
        let posts: Vec<NewPost> = lines.iter().flat_map(|l| crate::post::parse_post_line(l).unwrap()).collect();
        s.import(&posts, &[], 0).unwrap();
        let links = |s: &SqliteStore| -> Vec<String> {
            column(
                &s.conn,
                "SELECT 'post ' || embedded_id || ' in ' || post_id FROM main.embedded_in
                 UNION ALL SELECT 'user ' || user_id || ' in ' || post_id FROM main.embedded_users ORDER BY 1",
            )
        };
        assert_eq!(links(&s).len(), 5, "{:?}", links(&s));
        // 300 and 301 are deleted (301's retweet 302 with it).
        s.apply_status(&StatusEvents::from(vec![delete(300), delete(301)]), &[]).unwrap();
        let m = s.maintain(0, 100).unwrap();
        assert_eq!((m.posts_deleted, m.retweets_cascaded), (2, 1));
        assert_eq!(links(&s), vec!["post 100 in 304"]);
        // The link that stays still finds its carrier.
        s.apply_status(&StatusEvents::from(vec![delete(100)]), &[]).unwrap();
        assert_eq!(s.maintain(0, 100).unwrap().copies_removed, 1);
    }

    #[test]
    fn a_stored_post_no_step_can_edit_is_withheld_never_shown_as_stored() {
        // Import refuses such JSON now; a store written before may hold it,
        // here in the members the export must edit (the quote, the place).
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path().join("s.db").to_str().unwrap()).unwrap();
        let lines = [
            r#"{"id_str":"300","user":{"id_str":"3"},"quoted_status_id_str":"100","quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"GONE100"}}"#,
            r#"{"id_str":"301","user":{"id_str":"2"},"text":"here","place":{"full_name":"PLACE301"}}"#,
            r#"{"id_str":"302","user":{"id_str":"2"},"text":"KEPT302"}"#,
        ];
        let posts: Vec<NewPost> = lines.iter().flat_map(|l| crate::post::parse_post_line(l).unwrap()).collect();
        s.import(&posts, &[], 0).unwrap();
        s.conn
            .execute_batch(
                r#"UPDATE main.posts SET json = replace(replace(json, '"text":"GONE100"', '"n":1e400,"text":"GONE100"'), '"full_name"', '"n":1e400,"full_name"') WHERE id IN (300, 301)"#,
            )
            .unwrap();
        s.apply_status(&StatusEvents::from(vec![delete(100)]), &[]).unwrap();
        let scrub = Timed { time_ms: 1, event: UserEvent::ScrubGeo { user_id: 2, up_to_status_id: 302 } };
        s.apply_user(&[scrub], &[]).unwrap();
        s.maintain(0, 100).unwrap();
        let mut out = Vec::new();
        let done =
            crate::commands::export_with(&mut s, None, &mut out, &mut crate::progress::Progress::hidden()).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!((done.written, done.withheld), (1, 2), "{out}");
        assert!(out.contains("KEPT302") && !out.contains("GONE100") && !out.contains("PLACE301"), "{out}");
    }

    #[test]
    fn the_move_from_version_6_judges_what_twarc_files_carry_and_relinks_carriers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        // A version 6 store: twarc's flattened 300 quotes 100 and mentions
        // user 2, unlisted (version 6 did not read them); quote 310, whose
        // text was cut inside an emoji, carries 110 but lost its link when
        // its rewrite failed. 100 and 110 are deleted, user 2 purged.
        let twarc = r#"{"id":"300","author_id":"3","text":"t","author":{"id":"3","name":"Three"},"referenced_tweets":[{"type":"quoted","id":"100","text":"GONE100","author_id":"1"}],"entities":{"mentions":[{"start":0,"end":1,"username":"two","id":"2","name":"PROFILE2"}]}}"#;
        let cut = r#"{"id_str":"310","user":{"id_str":"3"},"text":"cut \ud83d","quoted_status_id_str":"110","quoted_status":{"id_str":"110","user":{"id_str":"1"},"text":"GONE110"}}"#;
        let mut s = moved_from(
            path,
            &parsed(&[twarc, cut]),
            "UPDATE main.posts SET embeds = NULL WHERE id = 300; DELETE FROM main.posts WHERE id IN (100, 110);
             DELETE FROM main.embedded_in; DELETE FROM main.embedded_users;
             INSERT INTO status.tombstones VALUES (100, 1), (110, 1);
             INSERT INTO main.purge_done VALUES (2, 1);
             PRAGMA main.user_version = 6;",
        );
        for (id, gone) in [(300, "GONE100"), (300, "PROFILE2"), (310, "GONE110")] {
            assert!(!json(&s, id).contains(gone), "{gone} in {}", json(&s, id));
        }
        assert!(json(&s, 300).contains(r#""username":"two""#), "{}", json(&s, 300));
        // 300's own copies are listed now: a later delete finds it.
        let twarc2 = r#"{"id":"301","author_id":"3","text":"t","author":{"id":"3","name":"Three"},"referenced_tweets":[{"type":"quoted","id":"120","text":"LATER120","author_id":"1"}]}"#;
        s.import(&crate::post::parse_post_line(twarc2).unwrap(), &[], 0).unwrap();
        s.apply_status(&StatusEvents::from(vec![delete(120)]), &[]).unwrap();
        assert_eq!(s.maintain(0, 100).unwrap().copies_removed, 1);
        assert!(!json(&s, 301).contains("LATER120"), "{}", json(&s, 301));
    }

    /// The lines whose copies an import before version 8 did not list: a
    /// v1.1 copy inside a v2 post, twarc's expansion inside a v1.1 quoted
    /// copy and inside an `includes.tweets` copy, a reference whose type a
    /// lone surrogate escape cut, a v1.1 copy inside v2's `data`, what a
    /// v1.1 copy import cannot store carries, a copy whose carrier was
    /// deleted. The copies' words say whether the test deletes them
    /// (`GONE`, [`DELETED_SINCE`]) or not (`KEPT`); one id is above 2^53.
    const UNLISTED_BEFORE_8: &str = include_str!("../../tests/data/unlisted_before_schema_8.jsonl");
    const DELETED_SINCE: [Id; 9] = [9_007_199_254_740_993, 110, 120, 130, 140, 150, 160, 180, 460];
    /// A post an earlier import stored and today's refuses (an id that is
    /// not a string or a number), which carries `CUT170`.
    const REFUSED_TODAY: &str = r#"{"id":"470","author_id":"4","text":"H470","referenced_tweets":[{"type":"quoted","id":true,"text":"CUT170"}]}"#;

    #[test]
    fn the_move_to_version_8_lists_what_an_earlier_import_missed_and_takes_out_the_withdrawn() {
        assert_move_to_8(Opens::One);
    }

    #[test]
    fn a_move_to_version_8_cut_short_goes_on_from_its_last_commit() {
        assert_move_to_8(Opens::Cut);
    }

    #[test]
    fn two_connections_opening_during_a_move_to_version_8_both_finish_it() {
        assert_move_to_8(Opens::Two);
    }

    #[test]
    fn a_move_to_version_8_cut_by_an_earlier_build_starts_again() {
        // The mark of 2f558fe..33d5f7b: the last id done, the re-reading
        // over. It is not today's mark, and it starts again.
        assert_move_to_8_from(
            Opens::One,
            "DROP TABLE main.move_progress;
             CREATE TABLE main.move_progress (step TEXT NOT NULL, after INTEGER NOT NULL);
             INSERT INTO main.move_progress VALUES ('link', 9000000000000000000);",
        );
    }

    /// How a test opens a store to move it.
    #[derive(Clone, Copy, PartialEq)]
    enum Opens {
        /// Once.
        One,
        /// Over and over, cut after every second transaction of one post.
        Cut,
        /// From two threads at once, each a connection of its own moving a
        /// post a transaction (as two processes would, or a daemon's
        /// handlers and a command).
        Two,
    }

    /// The move to 8 of a version 7 store, opened as `opens` says.
    fn assert_move_to_8(opens: Opens) {
        assert_move_to_8_from(opens, "");
    }

    /// [`assert_move_to_8`] of a store that `extra` (SQL) changed further.
    fn assert_move_to_8_from(opens: Opens, extra: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        let lines = parsed(&UNLISTED_BEFORE_8.lines().collect::<Vec<_>>());
        let listed = |s: &SqliteStore| -> Vec<(i64, Option<String>)> {
            let mut st = s.conn.prepare("SELECT id, embeds FROM main.posts ORDER BY id").unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
        };
        // What today's complyd holds after the same import and deletes.
        let today = {
            let other = dir.path().join("today.db");
            let mut s = SqliteStore::open(other.to_str().unwrap()).unwrap();
            s.import(&lines, &[], 0).unwrap();
            s.apply_status(&StatusEvents::from(DELETED_SINCE.map(delete).to_vec()), &[]).unwrap();
            s.maintain(0, 100).unwrap();
            listed(&s)
        };
        // As a version 7 store held them: stored, nothing listed; the
        // posts they carry were deleted since (rows gone, copies left).
        let ids = DELETED_SINCE.map(|id| id.to_string()).join(", ");
        let tombstones = DELETED_SINCE.map(|id| format!("({id}, 1)")).join(", ");
        earlier_store(
            path,
            &lines,
            &format!(
                "UPDATE main.posts SET embeds = NULL; DELETE FROM main.embedded_in; DELETE FROM main.embedded_users;
                 DELETE FROM main.posts WHERE id IN ({ids}); INSERT INTO status.tombstones VALUES {tombstones};
                 INSERT INTO main.posts (id, author_id, has_geo, form, json) VALUES (470, 4, 0, 1, '{REFUSED_TODAY}');
                 PRAGMA main.user_version = 7; {extra}"
            ),
        );
        if opens == Opens::Two {
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                let both: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            SqliteStore::open_cut_after(path, 1, u64::MAX)
                        })
                    })
                    .collect();
                for opened in both {
                    assert!(opened.join().unwrap().unwrap(), "each open returns once the move is done");
                }
            });
        }
        if opens == Opens::Cut {
            let rows_before: i64 =
                connect(path).unwrap().query_row("SELECT count(*) FROM main.posts", [], |r| r.get(0)).unwrap();
            let marks = open_cut_until_moved(path);
            assert!(
                marks.len() >= 3
                    && marks.iter().any(|(step, ..)| step == "link")
                    && marks.iter().any(|(step, ..)| WITHDRAW_STEPS.contains(&step.as_str())),
                "the cuts fell in every step: {marks:?}"
            );
            // The counts the move reports add up over the opens: every row
            // read (and the copies stored on the way, after the cursor).
            let (_, _, read, relisted) = marks.last().unwrap();
            assert!(*read >= rows_before && *relisted > 0, "{rows_before} rows: {marks:?}");
        }
        let mut s = SqliteStore::open(path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let left: i64 = s.conn.query_row("SELECT count(*) FROM main.move_progress", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0, "the move is recorded as done");
        let holding: Vec<i64> = {
            let mut st = s.conn.prepare("SELECT id FROM main.posts WHERE instr(json, 'GONE') > 0").unwrap();
            st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        assert!(holding.is_empty(), "a withdrawn copy stays in the stored JSON of {holding:?}");
        for (id, kept) in [(410, "KEPT20"), (420, "KEPT30"), (430, "D430"), (440, "E440"), (60, "KEPT60")] {
            assert!(json(&s, id).contains(kept), "{kept} not in {id}: {}", json(&s, id));
        }
        let mut out = Vec::new();
        crate::commands::export(&mut s, None, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("GONE"), "a withdrawn copy is exported: {out}");
        // The row today's import refuses is listed as unreadable: every
        // answer judges it, and cuts what it cannot judge.
        assert!(out.contains("H470") && !out.contains("CUT170"), "{out}");
        let mut rows = listed(&s);
        rows.retain(|(id, embeds)| *id != 470 || embeds.as_deref() != Some("0"));
        assert_eq!(rows, today, "every row lists what today's import and maintenance leave");
        // The copies are listed now: a later delete finds them.
        s.apply_status(&StatusEvents::from(vec![delete(20), delete(30)]), &[]).unwrap();
        s.maintain(0, 100).unwrap();
        assert!(!json(&s, 410).contains("KEPT20") && !json(&s, 420).contains("KEPT30"));
    }

    #[test]
    fn a_version_1_store_moves_to_three_files_keeping_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        v1_store(path);
        let mut s = SqliteStore::open(path).unwrap();
        assert_v1_data_kept(&mut s);
        drop(s);
        for f in store_files(path) {
            assert!(std::path::Path::new(&f).exists(), "{f}");
        }
    }

    #[test]
    fn a_move_to_version_2_cut_short_starts_again_from_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        v1_store(path);
        // As if a first run had filled the status file, then stopped before
        // the main file's commit; the status file even has a stray row.
        {
            let c = connect(path).unwrap();
            c.execute_batch(HANDLER_FILES[0].ddl).unwrap();
            c.execute_batch("INSERT INTO status.tombstones VALUES (10, 1), (99, 1); PRAGMA status.user_version = 2;")
                .unwrap();
        }
        let mut s = SqliteStore::open(path).unwrap();
        assert_v1_data_kept(&mut s);
        assert!(!s.facts(99).unwrap().post.tombstone, "the main file's tables are what is moved");
    }

    #[test]
    fn a_missing_or_foreign_handler_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        SqliteStore::open(path).unwrap().apply_status(&StatusEvents::from(vec![delete(10)]), &[]).unwrap();
        let status = format!("{path}-status");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{status}{suffix}"));
        }
        match SqliteStore::open(path) {
            Err(StoreError::Damaged(m)) => assert!(m.contains(&status) && m.contains("missing"), "{m}"),
            other => panic!("expected Damaged, got {:?}", other.map(|_| ())),
        }
        // A new main file beside another store's handler file.
        let other = dir.path().join("t.db");
        let other = other.to_str().unwrap();
        SqliteStore::open(other).unwrap();
        std::fs::remove_file(other).unwrap();
        match SqliteStore::open(other) {
            Err(StoreError::Damaged(m)) => {
                assert!(m.contains(&format!("{other}-status")) && m.contains("another store"), "{m}")
            }
            other => panic!("expected Damaged, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn the_move_to_version_3_stores_and_lists_what_stored_posts_embed() {
        // A store of an earlier complyd: quote 300 carries 100 (deleted
        // since) and quote 301 carries 101; neither quoted post was stored.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let path = path.to_str().unwrap();
        {
            let c = Connection::open(path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(
                r#"INSERT INTO posts VALUES
                   (300, 3, NULL, 0, '{"id_str":"300","user":{"id_str":"3"},"text":"Q300","quoted_status":{"id_str":"100","user":{"id_str":"1"},"text":"GONE100"}}'),
                   (301, 3, NULL, 0, '{"id_str":"301","user":{"id_str":"3"},"text":"Q301","quoted_status":{"id_str":"101","user":{"id_str":"1"},"text":"KEPT101"}}');
                   INSERT INTO tombstones VALUES (100, 1);
                   PRAGMA user_version = 1;"#,
            )
            .unwrap();
        }
        let mut s = SqliteStore::open(path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.author_of(101).unwrap(), Some(1), "the embedded quoted post is now stored");
        assert_eq!(s.author_of(100).unwrap(), None, "a tombstone is not stored");
        let mut out = Vec::new();
        crate::commands::export(&mut s, None, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("Q300") && out.contains("Q301") && out.contains("KEPT101"), "{out}");
        assert!(!out.contains("GONE100"), "the deleted quoted post is removed from its quote: {out}");
        // Opening again changes nothing.
        drop(s);
        let mut s = SqliteStore::open(path).unwrap();
        let mut again = Vec::new();
        crate::commands::export(&mut s, None, &mut again).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), out);
    }

    // Regression: a store bug found by the daemon's tests (and by the property
    // test): a `user_delete`/`user_undelete` that is stale for the toggle is
    // still part of the delete history (the 30-day purge is computed from the
    // whole history), but the store saved a user only when the toggle changed,
    // so the history entry was lost when the stale event came alone in its
    // batch, and the final state depended on batch boundaries. Fixed in
    // `rules/user.rs` (`apply_delete` counts a new history entry as a change).
    #[test]
    fn a_stale_delete_alone_in_its_batch_is_kept_in_the_delete_history() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        let mut st = crate::store::open(&url).unwrap();
        let undelete = Timed { time_ms: 2_000, event: UserEvent::Undelete { user_id: 5 } };
        let delete = Timed { time_ms: 1_000, event: UserEvent::Delete { user_id: 5 } };
        st.apply_user(std::slice::from_ref(&undelete), &[]).unwrap();
        st.apply_user(std::slice::from_ref(&delete), &[]).unwrap();

        let other = format!("sqlite:{}", dir.path().join("t.db").display());
        let mut one_batch = crate::store::open(&other).unwrap();
        one_batch.apply_user(&[undelete, delete], &[]).unwrap();

        let a = author_log(&dir.path().join("s.db"));
        let b = author_log(&dir.path().join("t.db"));
        assert_eq!(a, b, "the delete history depends on batch boundaries");
    }

    fn author_log(db: &std::path::Path) -> Option<String> {
        let c = crate::store::sqlite::connect(db.to_str().unwrap()).unwrap();
        c.query_row("SELECT delete_log FROM user_state WHERE id = 5", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn schema_is_versioned_reopening_keeps_data_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        {
            let mut s = SqliteStore::open(path).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            let posts = crate::post::parse_post_line(r#"{"id_str":"5","user":{"id_str":"1"}}"#).unwrap();
            assert_eq!(s.import(&posts, &[], 0).unwrap().stored, 1);
        }
        {
            let mut s = SqliteStore::open(path).unwrap();
            assert_eq!(s.author_of(5).unwrap(), Some(1), "migrations ran once; data kept");
            s.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        match SqliteStore::open(path) {
            Err(StoreError::SchemaTooNew { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
        }
    }
}
