//! The dataset and the compliance state, behind one [`Store`] interface.
//!
//! SQLite is the embedded default ([`sqlite`]); PostgreSQL implements the same
//! interface for larger deployments. The rules themselves live in
//! [`crate::rules`]: a store loads state rows, lets the rules merge events into
//! them, and saves the result, one transaction per batch.
//!
//! Ids are `u64`; both backends keep them in signed 64-bit columns (`id as
//! i64`). X never issues ids of 2^63 or more (Snowflake ids are 63-bit); such
//! ids are stored and found exactly, only their export order is by the signed
//! value.

pub mod postgres;
mod rows;
pub mod sqlite;
mod url;

use crate::batch_job::{BatchJob, BatchType};
pub use crate::event::Timed;
use crate::event::{Id, StatusEvents, TimeMs, UserEvent};
use crate::gaps::{Gap, GapMove, NewGap};
pub use crate::post::{Embeds, NewLike, NewPost};
use crate::rules::embedded::Facts as EmbeddedFacts;
pub use crate::rules::import::ImportStats;
use crate::rules::user::UserState;
use crate::rules::visibility::Facts;
pub use crate::rules::{ApplyStats, TypeCounts};
pub use url::{redact_url, BadStoreUrl, StoreUrl};

/// Which handler wrote a partition position: each handler commits its own, and
/// a partition is caught up to the smaller of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    Status,
    User,
}

impl HandlerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            HandlerKind::Status => "status",
            HandlerKind::User => "user",
        }
    }
}

/// How far a handler has applied one partition's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: u8,
    /// Event time of the last applied message.
    pub last_event_ms: TimeMs,
    /// Wall time the last byte of that batch was received.
    pub last_byte_ms: TimeMs,
}

/// What a maintenance pass did (the per-post work kept off the event path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    /// Deleted posts whose content was removed.
    pub posts_deleted: u64,
    /// Stored retweets removed because their original was deleted or purged.
    pub retweets_cascaded: u64,
    pub users_purged: u64,
    pub posts_purged: u64,
    pub posts_geo_scrubbed: u64,
    /// Stored posts rewritten without the copies they carried of posts
    /// deleted or purged, the geo of copies whose author scrubbed it, or the
    /// profiles of purged users (quotes, retweets of quotes, v2 includes).
    pub copies_removed: u64,
    /// Work left for the next pass (a pass may be bounded).
    pub pending: u64,
}

/// One stored post as export sees it.
pub struct ScanRow<'a> {
    pub id: Id,
    pub author_id: Id,
    /// The post it retweets (whose facts are `facts.original`).
    pub retweet_of: Option<Id>,
    /// The stored JSON may hold the post's own geo.
    pub has_geo: bool,
    pub json: &'a str,
    pub facts: Facts,
    /// The posts and users the JSON carries.
    pub embeds: &'a Embeds,
    /// What the store knows of them (looked up for a chunk of rows at once;
    /// a retweet's original alone is judged from `facts.original`).
    pub embedded: &'a EmbeddedFacts,
}

/// Why a store operation failed. [`StoreError::kind`] says what can be done
/// about it; the handlers' retry policy and `main`'s exit codes match on
/// that, never on the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("the store's schema version {found} is newer than this complyd understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// A file of the store is missing or belongs to another store.
    #[error("{0}")]
    Damaged(String),
    #[error("store URL {0}")]
    BadUrl(#[from] BadStoreUrl),
    /// The TLS client for the store could not be set up (the URL's
    /// `sslrootcert` file).
    #[error("TLS setup for the store: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The server sent data of a form complyd does not read.
    #[error("unexpected data from the store: {0}")]
    Protocol(String),
    /// The store's server could not be reached (the URL shown is redacted).
    #[error("{0}")]
    Connect(String),
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A file of the store cannot be created or written (its directory is
    /// missing or not writable, its file system read-only).
    #[error("cannot write the store file {path}: {error}{}", files_hint(path, error))]
    Files { path: String, error: std::io::Error },
    /// No store where the URL points, for a command that never creates
    /// one ([`open_existing`]), or a PostgreSQL database that does not exist.
    #[error("{0}")]
    NoStore(String),
    /// A command that only reads may not write the store, and reading it
    /// needs a write (SQLite's `-wal` and `-shm` files beside it, a move of
    /// an earlier complyd's store to this version).
    #[error("{0}")]
    ReadOnly(String),
    /// Writing a command's output failed (not the store).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection or the machine failed (server gone, network, disk
    /// full, I/O): reopen the connection and retry.
    Transient,
    /// Another transaction was in the way (lock, serialization failure,
    /// deadlock): retry on the same connection.
    Conflict,
    /// Corrupt or refused: the store is damaged, too new, or refuses the
    /// work (permissions, unexpected data). Retrying as is will not help;
    /// an operator must act.
    Refused,
    /// The configuration names no usable store (a bad URL, TLS setup).
    Config,
}

impl ErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Refused => "refused",
            ErrorKind::Config => "config",
        }
    }
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Sqlite(e) => sqlite_kind(e),
            StoreError::Postgres(e) => postgres_kind(e),
            StoreError::SchemaTooNew { .. }
            | StoreError::Damaged(_)
            | StoreError::Protocol(_)
            | StoreError::ReadOnly(_) => ErrorKind::Refused,
            StoreError::BadUrl(_) | StoreError::Tls(_) | StoreError::NoStore(_) => ErrorKind::Config,
            StoreError::Connect(_) | StoreError::Io(_) | StoreError::Output(_) => ErrorKind::Transient,
            StoreError::Files { error, .. } => match error.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::Config,
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => ErrorKind::Refused,
                _ => ErrorKind::Transient,
            },
        }
    }
}

fn files_hint(path: &str, e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => " (its directory does not exist: create it, or fix store.url / --db)",
        std::io::ErrorKind::PermissionDenied if std::path::Path::new(path).exists() => {
            " (the file is not writable by this user)"
        }
        std::io::ErrorKind::PermissionDenied => " (its directory is not writable by this user)",
        std::io::ErrorKind::ReadOnlyFilesystem => " (its file system is mounted read-only)",
        _ => "",
    }
}

fn sqlite_kind(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => ErrorKind::Conflict,
        Some(C::SystemIoFailure | C::DiskFull | C::CannotOpen | C::OutOfMemory | C::FileLockingProtocolFailed) => {
            ErrorKind::Transient
        }
        // Corrupt files, read-only or forbidden files, constraint and type
        // errors, and anything that is not an SQLite failure (a value of an
        // unexpected type read back).
        _ => ErrorKind::Refused,
    }
}

fn postgres_kind(e: &::postgres::Error) -> ErrorKind {
    use ::postgres::error::SqlState as S;
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed (closed, I/O, TLS).
        return ErrorKind::Transient;
    };
    if [S::T_R_SERIALIZATION_FAILURE, S::T_R_DEADLOCK_DETECTED, S::LOCK_NOT_AVAILABLE].contains(code) {
        ErrorKind::Conflict
    } else if [
        S::DISK_FULL,
        S::INSUFFICIENT_RESOURCES,
        S::OUT_OF_MEMORY,
        S::TOO_MANY_CONNECTIONS,
        S::ADMIN_SHUTDOWN,
        S::CRASH_SHUTDOWN,
        S::CANNOT_CONNECT_NOW,
        S::CONNECTION_FAILURE,
        S::CONNECTION_EXCEPTION,
        S::QUERY_CANCELED,
    ]
    .contains(code)
    {
        ErrorKind::Transient
    } else {
        ErrorKind::Refused
    }
}

/// The dataset and its compliance state.
///
/// Every `apply_*` call is one transaction: the events and the partition
/// positions are committed together or not at all. Every method is
/// idempotent in effect: applying a batch twice changes nothing the second
/// time.
pub trait Store: Send {
    /// Applies post events (status handler). Writes status state and
    /// tombstones, never user state.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot commit; nothing of the batch is
    /// applied then.
    fn apply_status(&mut self, events: &StatusEvents, positions: &[Position]) -> Result<ApplyStats, StoreError>;

    /// Applies user events (user handler). Writes user state only: the cost is
    /// the same whatever the number of the user's stored posts.
    ///
    /// # Errors
    /// As [`Store::apply_status`].
    fn apply_user(&mut self, events: &[Timed<UserEvent>], positions: &[Position]) -> Result<ApplyStats, StoreError>;

    /// Stores posts, applying the rules already known (tombstones, purges,
    /// scrubbed geo), merging each into what is stored
    /// ([`crate::rules::import`]). Posts must come embedded posts first (as
    /// [`crate::post::parse_post_line`] returns them).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot commit.
    fn import(&mut self, posts: &[NewPost], likes: &[NewLike], now_ms: TimeMs) -> Result<ImportStats, StoreError>;

    /// What the visibility rule needs to know about one id.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn facts(&mut self, id: Id) -> Result<Facts, StoreError>;

    /// [`Store::facts`] for many ids, in the order given. A store across a
    /// network answers in a few round trips, not one per id.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn facts_many(&mut self, ids: &[Id]) -> Result<Vec<Facts>, StoreError> {
        ids.iter().map(|id| self.facts(*id)).collect()
    }

    /// The state of one user (the default when no event ever named them).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn user_state(&mut self, id: Id) -> Result<UserState, StoreError>;

    /// Visits every stored post in ascending id order, streaming: memory stays
    /// flat whatever the size of the store. Each row comes with the facts of
    /// the posts and users embedded in it, looked up for a chunk of rows at a
    /// time. A visitor error stops the scan.
    ///
    /// # Errors
    /// A [`StoreError`] from the store or the visitor.
    fn scan(&mut self, visit: &mut dyn FnMut(ScanRow<'_>) -> Result<(), StoreError>) -> Result<(), StoreError>;

    /// Runs the per-post work kept off the event path: the content of deleted
    /// posts and of their retweets, purges whose 30 days have passed, and geo
    /// removal after `scrub_geo`. At most `max_users` users (and ten times as
    /// many deleted posts) are processed; the rest is reported as pending.
    /// Until it runs, reads apply the same rules from the tombstones and the
    /// user state, so no answer waits for it.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot commit.
    fn maintain(&mut self, now_ms: TimeMs, max_users: usize) -> Result<MaintenanceStats, StoreError>;

    /// The committed positions of every handler and partition.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn positions(&mut self) -> Result<Vec<(HandlerKind, Position)>, StoreError>;

    /// Records a gap in the ledger ([`crate::gaps`]), with the first entry of
    /// its history; returns its id.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot commit.
    fn open_gap(&mut self, gap: &NewGap, now_ms: TimeMs) -> Result<i64, StoreError>;

    /// Moves gap `id` as `m` says, adding its note to the history, when
    /// [`GapState::may_move_to`](crate::gaps::GapState::may_move_to) allows
    /// it; false otherwise (an unknown gap, or one already repaired or
    /// unrepairable).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot commit.
    fn move_gap(&mut self, id: i64, m: &GapMove, now_ms: TimeMs) -> Result<bool, StoreError>;

    /// The gaps of the ledger (only the open and repairing ones when
    /// `unresolved_only`), oldest first, each with its history.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn gaps(&mut self, unresolved_only: bool) -> Result<Vec<Gap>, StoreError>;

    /// Every batch compliance job kept (`complyd batch-job`).
    ///
    /// # Errors
    /// Store errors.
    fn batch_jobs(&mut self) -> Result<Vec<BatchJob>, StoreError>;

    /// Keeps `job`: a new row, or the row of the same job id replaced.
    ///
    /// # Errors
    /// Store errors.
    fn save_batch_job(&mut self, job: &BatchJob) -> Result<(), StoreError>;

    /// Up to `limit` keys ([`key`]) above `after`, ascending: of the stored
    /// posts (`Tweets`) or of their authors (`Users`). What a batch job
    /// uploads, read a page at a time.
    ///
    /// # Errors
    /// Store errors.
    fn id_page(&mut self, kind: BatchType, after: i64, limit: usize) -> Result<Vec<i64>, StoreError>;

    /// The author of a stored post.
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn author_of(&mut self, id: Id) -> Result<Option<Id>, StoreError>;

    /// Whether the likes table holds (user, post) (for tests and the admin
    /// explain endpoint).
    ///
    /// # Errors
    /// A [`StoreError`] when the store cannot be read.
    fn has_like(&mut self, user_id: Id, post_id: Id) -> Result<bool, StoreError>;
}

/// Opens the store at `url` (a SQLite file is created when missing).
///
/// # Errors
/// The backend's error.
pub fn open_url(url: &StoreUrl) -> Result<Box<dyn Store>, StoreError> {
    Ok(match url {
        // The path came from a string: it is valid UTF-8.
        StoreUrl::Sqlite(path) => Box::new(sqlite::SqliteStore::open(&path.to_string_lossy())?),
        StoreUrl::Postgres(url) => Box::new(postgres::PostgresStore::open(url)?),
    })
}

/// [`open_url`] for a command that only reads (`check`, `export`, `gaps`,
/// `batch-job list`): a store that does not exist is refused, never created
/// (a mistyped `--db` would otherwise answer "0 posts" or "not visible").
/// A store of an earlier complyd is still brought to this version.
///
/// # Errors
/// [`StoreError::NoStore`] when the URL names no complyd store: no file,
/// a file that is not an SQLite database or holds no complyd store, a
/// PostgreSQL database without complyd's tables or no such database; else
/// the backend's error.
pub fn open_existing(url: &StoreUrl) -> Result<Box<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Sqlite(path) => Box::new(sqlite::SqliteStore::open_existing(&path.to_string_lossy())?),
        StoreUrl::Postgres(url) => Box::new(postgres::PostgresStore::open_existing(url)?),
    })
}

/// How [`StoreError::NoStore`] ends for a store a command will not create.
pub(crate) const NO_STORE_HINT: &str = "check --db or store.url (a command that only reads never creates a store)";

/// [`open_url`] for a connection that will only look posts and users up by
/// id (the query API's).
///
/// # Errors
/// The backend's error.
pub fn open_for_lookups(url: &StoreUrl) -> Result<Box<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Postgres(url) => {
            let mut store = postgres::PostgresStore::open(url)?;
            store.keep_to_indexes()?;
            Box::new(store)
        }
        StoreUrl::Sqlite(_) => open_url(url)?,
    })
}

/// [`open_url`] for a URL still to be parsed (tests, benchmarks).
///
/// # Errors
/// [`StoreError::BadUrl`] for a string that is not a store URL, or the
/// backend's error.
pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    open_url(&StoreUrl::parse(url)?)
}

/// The key a `u64` id is stored under (a bit-for-bit cast).
#[inline]
pub fn key(id: Id) -> i64 {
    id as i64
}

/// The id a stored key stands for.
#[inline]
pub fn id_of(key: i64) -> Id {
    key as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))
    }

    #[test]
    fn each_failure_has_the_kind_the_retry_policy_and_the_exit_code_need() {
        use rusqlite::ffi;
        for (e, kind) in [
            (sqlite(ffi::SQLITE_BUSY), ErrorKind::Conflict),
            (sqlite(ffi::SQLITE_LOCKED), ErrorKind::Conflict),
            (sqlite(ffi::SQLITE_FULL), ErrorKind::Transient),
            (sqlite(ffi::SQLITE_IOERR), ErrorKind::Transient),
            (sqlite(ffi::SQLITE_CANTOPEN), ErrorKind::Transient),
            (sqlite(ffi::SQLITE_CORRUPT), ErrorKind::Refused),
            (sqlite(ffi::SQLITE_NOTADB), ErrorKind::Refused),
            (sqlite(ffi::SQLITE_READONLY), ErrorKind::Refused),
            (StoreError::Sqlite(rusqlite::Error::InvalidColumnIndex(3)), ErrorKind::Refused),
            (StoreError::SchemaTooNew { found: 9, supported: 3 }, ErrorKind::Refused),
            (StoreError::Damaged("x-status belongs to another store".into()), ErrorKind::Refused),
            (StoreError::Protocol("binary COPY data".into()), ErrorKind::Refused),
            (StoreError::Connect("cannot connect".into()), ErrorKind::Transient),
            (StoreError::Io(std::io::Error::other("gone")), ErrorKind::Transient),
            (StoreError::BadUrl(StoreUrl::parse("mysql://h").unwrap_err()), ErrorKind::Config),
            (StoreError::Tls(crate::tls::TlsError::NoCertificate { path: "ca.pem".into() }), ErrorKind::Config),
            (
                StoreError::Files { path: "/no/dir/x.db".into(), error: std::io::ErrorKind::NotFound.into() },
                ErrorKind::Config,
            ),
            (
                StoreError::Files { path: "/ro/x.db".into(), error: std::io::ErrorKind::PermissionDenied.into() },
                ErrorKind::Refused,
            ),
        ] {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
