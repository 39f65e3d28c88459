//! The message model and the parser for every line the Compliance Firehose
//! can carry: the 14 compliance messages, heartbeats, `{"error":...}` and
//! `{"info":...}` (see `docs/protocol.md`, section 2 "Messages").
//!
//! Parsing is a pure function: the bytes of one line in (without its `\r\n`),
//! a typed [`Message`] or a typed [`ParseError`] out. Nothing here allocates
//! per message beyond the few vectors the message itself owns.

mod fast;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// A post id or a user id. X ids are unsigned 64-bit integers.
pub type Id = u64;

/// Event time in milliseconds since the Unix epoch.
pub type TimeMs = i64;

/// An event with its event time, as handed to a handler (the time decides
/// between toggles; see `rules::merge_toggle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed<T> {
    pub time_ms: TimeMs,
    pub event: T,
}

/// An uppercase ISO 3166-1 alpha-2 code, or `XX` (withheld everywhere) or
/// `XY` (withheld on a DMCA request: treated as everywhere).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Withheld in all countries.
    pub const ALL: Country = Country(*b"XX");
    /// Withheld on a DMCA request; treated as everywhere.
    pub const DMCA: Country = Country(*b"XY");

    /// Parses a two-letter code, case-insensitively; the result is uppercase.
    ///
    /// # Errors
    /// Anything that is not exactly two ASCII letters.
    pub fn parse(s: &str) -> Result<Country, ParseError> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(ParseError::new(ParseErrorKind::BadCountry, format!("country code {s:?} is not two letters"))),
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed from ASCII letters only.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// `XX` or `XY`: a withholding that applies in every country.
    pub fn is_everywhere(&self) -> bool {
        *self == Country::ALL || *self == Country::DMCA
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the stream, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A blank line: the server's keep-alive. Not a message, but proof of life.
    Heartbeat,
    /// One of the 14 compliance messages.
    Event(Event),
    /// `{"error":{...}}`: the server explains why it is about to disconnect.
    Error(Notice),
    /// `{"info":{...}}`: the closing line of a Replay request.
    Info(ReplayInfo),
    /// A JSON object whose type is not one we know. Counted and dead-lettered,
    /// never fatal.
    Unknown { kind: String },
}

/// A compliance event with its event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event time in ms (`timestamp_ms` or `timestampMs`). Permanent events
    /// without a time carry 0; toggling events always have one.
    pub time_ms: TimeMs,
    pub kind: EventKind,
}

/// What an event is about. Post events and user events are never linked: they
/// are handled by separate handlers that share no state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Status(StatusEvent),
    User(UserEvent),
}

/// Events about one post (and the like-delete, which the status handler owns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusEvent {
    Delete {
        id: Id,
        user_id: Option<Id>,
    },
    /// Boxed, as [`StatusEvent::Edit`]: both are rare, and carried inline
    /// they would make every event of a queue 64 bytes instead of 40.
    Withheld(Box<PostWithheld>),
    Drop {
        id: Id,
        user_id: Option<Id>,
    },
    Undrop {
        id: Id,
        user_id: Option<Id>,
    },
    Edit(Box<PostEdit>),
    /// `delete` of a favorite: the like (user, post) is removed.
    FavoriteDelete {
        user_id: Id,
        post_id: Id,
    },
}

// A queued state event (withheld, drop, undrop, edit) is this size: keep the
// rare large ones boxed.
const _: () = assert!(std::mem::size_of::<Timed<StatusEvent>>() <= 40);

/// Post events on their way to the status handler, each kind in the form the
/// handler needs. Deletes and like-deletes, most of the stream, are kept as
/// bare ids: a tombstone is forever, so what they do depends neither on
/// their time nor on their order (8 and 16 bytes an event instead of 40, in
/// queues of up to 2 x 65,536 events). The state events (withheld, drop,
/// undrop, edit), whose time and order matter, are kept whole, in arrival
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusEvents {
    deletes: Vec<Id>,
    like_deletes: Vec<(Id, Id)>,
    state: Vec<Timed<StatusEvent>>,
}

impl StatusEvents {
    pub fn push(&mut self, ev: Timed<StatusEvent>) {
        match ev.event {
            StatusEvent::Delete { id, .. } => self.deletes.push(id),
            StatusEvent::FavoriteDelete { user_id, post_id } => self.like_deletes.push((user_id, post_id)),
            _ => self.state.push(ev),
        }
    }

    /// Moves all of `other`'s events here (`other`'s state events after
    /// this one's).
    pub fn append(&mut self, other: &mut StatusEvents) {
        self.deletes.append(&mut other.deletes);
        self.like_deletes.append(&mut other.like_deletes);
        self.state.append(&mut other.state);
    }

    /// The posts deleted, in arrival order, repeats included.
    pub fn deletes(&self) -> &[Id] {
        &self.deletes
    }

    /// The `(user, post)` likes deleted, in arrival order, repeats included.
    pub fn like_deletes(&self) -> &[(Id, Id)] {
        &self.like_deletes
    }

    /// The state events, in arrival order (never a delete or a like-delete).
    pub fn state(&self) -> &[Timed<StatusEvent>] {
        &self.state
    }

    pub fn len(&self) -> usize {
        self.deletes.len() + self.like_deletes.len() + self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.deletes.clear();
        self.like_deletes.clear();
        self.state.clear();
    }
}

impl FromIterator<Timed<StatusEvent>> for StatusEvents {
    fn from_iter<I: IntoIterator<Item = Timed<StatusEvent>>>(iter: I) -> StatusEvents {
        let mut events = StatusEvents::default();
        for ev in iter {
            events.push(ev);
        }
        events
    }
}

impl From<Vec<Timed<StatusEvent>>> for StatusEvents {
    fn from(events: Vec<Timed<StatusEvent>>) -> StatusEvents {
        events.into_iter().collect()
    }
}

/// Account events on their way to the user handler: whole and in arrival
/// order, since their time and order decide what they do.
pub type UserEvents = Vec<Timed<UserEvent>>;

/// A `status_withheld`: the post is withheld in `countries` (permanent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostWithheld {
    pub id: Id,
    pub user_id: Option<Id>,
    pub countries: Vec<Country>,
}

/// A `tweet_edit`: `edit_ids` lists the whole edit chain; `id` is its newest
/// member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostEdit {
    pub id: Id,
    pub initial_id: Option<Id>,
    pub edit_ids: Vec<Id>,
}

/// Events about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEvent {
    Delete { user_id: Id },
    Undelete { user_id: Id },
    Protect { user_id: Id },
    Unprotect { user_id: Id },
    Suspend { user_id: Id },
    Unsuspend { user_id: Id },
    Withheld { user_id: Id, countries: Vec<Country> },
    ScrubGeo { user_id: Id, up_to_status_id: Id },
}

impl UserEvent {
    pub fn user_id(&self) -> Id {
        match *self {
            UserEvent::Delete { user_id }
            | UserEvent::Undelete { user_id }
            | UserEvent::Protect { user_id }
            | UserEvent::Unprotect { user_id }
            | UserEvent::Suspend { user_id }
            | UserEvent::Unsuspend { user_id }
            | UserEvent::Withheld { user_id, .. }
            | UserEvent::ScrubGeo { user_id, .. } => user_id,
        }
    }
}

impl StatusEvent {
    /// [`StatusEvent::type_name`] of a post delete.
    pub const DELETE: &'static str = "delete";
    /// [`StatusEvent::type_name`] of a like-delete.
    pub const FAVORITE_DELETE: &'static str = "delete_favorite";

    /// The wire name of the message type, with `delete_favorite` for the
    /// like-delete. Used as a metric label and in summaries.
    pub fn type_name(&self) -> &'static str {
        match self {
            StatusEvent::Delete { .. } => Self::DELETE,
            StatusEvent::Withheld(_) => "status_withheld",
            StatusEvent::Drop { .. } => "drop",
            StatusEvent::Undrop { .. } => "undrop",
            StatusEvent::Edit(_) => "tweet_edit",
            StatusEvent::FavoriteDelete { .. } => Self::FAVORITE_DELETE,
        }
    }
}

impl UserEvent {
    /// The wire name of the message type.
    pub fn type_name(&self) -> &'static str {
        match self {
            UserEvent::Delete { .. } => "user_delete",
            UserEvent::Undelete { .. } => "user_undelete",
            UserEvent::Protect { .. } => "user_protect",
            UserEvent::Unprotect { .. } => "user_unprotect",
            UserEvent::Suspend { .. } => "user_suspend",
            UserEvent::Unsuspend { .. } => "user_unsuspend",
            UserEvent::Withheld { .. } => "user_withheld",
            UserEvent::ScrubGeo { .. } => "scrub_geo",
        }
    }
}

impl Event {
    /// The position of the message type in [`EVENT_TYPES`] (for counters
    /// kept in arrays).
    pub fn type_index(&self) -> usize {
        match &self.kind {
            EventKind::Status(s) => match s {
                StatusEvent::Delete { .. } => 0,
                StatusEvent::Withheld(_) => 1,
                StatusEvent::Drop { .. } => 2,
                StatusEvent::Undrop { .. } => 3,
                StatusEvent::Edit(_) => 4,
                StatusEvent::FavoriteDelete { .. } => 13,
            },
            EventKind::User(u) => match u {
                UserEvent::Delete { .. } => 5,
                UserEvent::Undelete { .. } => 6,
                UserEvent::Protect { .. } => 7,
                UserEvent::Unprotect { .. } => 8,
                UserEvent::Suspend { .. } => 9,
                UserEvent::Unsuspend { .. } => 10,
                UserEvent::ScrubGeo { .. } => 11,
                UserEvent::Withheld { .. } => 12,
            },
        }
    }

    /// The wire name of the message type (see [`StatusEvent::type_name`]).
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            EventKind::Status(s) => s.type_name(),
            EventKind::User(u) => u.type_name(),
        }
    }
}

/// Every event type name, in a fixed order (for summaries and metrics).
pub const EVENT_TYPES: [&str; 14] = [
    "delete",
    "status_withheld",
    "drop",
    "undrop",
    "tweet_edit",
    "user_delete",
    "user_undelete",
    "user_protect",
    "user_unprotect",
    "user_suspend",
    "user_unsuspend",
    "scrub_geo",
    "user_withheld",
    "delete_favorite",
];

/// `{"error":{"message":...,"sent":...}}`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Notice {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub sent: Option<String>,
}

impl Notice {
    /// The server dropped buffered events ("unable to keep up"): what it had
    /// buffered is lost and must be recovered by Replay.
    pub fn is_buffer_full(&self) -> bool {
        self.message.to_ascii_lowercase().contains("keep up")
    }
}

/// `{"info":{...}}` closing a Replay stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplayInfo {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub sent: Option<String>,
    #[serde(default)]
    pub activity_count: Option<u64>,
    #[serde(default)]
    pub minutes_failed: Vec<String>,
    #[serde(default)]
    pub unprocessed_range: Option<UnprocessedRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UnprocessedRange {
    #[serde(rename = "fromDate")]
    pub from_date: String,
    #[serde(rename = "toDate")]
    pub to_date: String,
}

impl ReplayInfo {
    /// The replay covered its whole range ("Replay Request Completed").
    pub fn is_complete(&self) -> bool {
        self.minutes_failed.is_empty()
            && self.unprocessed_range.is_none()
            && self.message.eq_ignore_ascii_case("Replay Request Completed")
    }
}

/// Why a line could not be turned into a message. `kind` is a stable label
/// (dead-letter reason, metric label); `detail` says where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub detail: String,
}

impl ParseError {
    pub fn new(kind: ParseErrorKind, detail: impl Into<String>) -> ParseError {
        ParseError { kind, detail: detail.into() }
    }
}

/// The classes of bad input, each a dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseErrorKind {
    /// Not valid JSON, or not UTF-8.
    InvalidJson,
    /// Valid JSON, but not an object with a message type.
    NotAnObject,
    /// A known message type whose payload has the wrong shape.
    BadPayload,
    /// A required field is absent.
    MissingField,
    /// An id that is not an unsigned 64-bit integer.
    BadId,
    /// A time that is neither epoch milliseconds nor ISO-8601.
    BadTimestamp,
    /// A country code that is not two letters.
    BadCountry,
    /// A JSON object of a type we do not know.
    UnknownType,
    /// Longer than the maximum line size (set by the framer, not the parser).
    Oversized,
}

impl ParseErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParseErrorKind::InvalidJson => "invalid_json",
            ParseErrorKind::NotAnObject => "not_an_object",
            ParseErrorKind::BadPayload => "bad_payload",
            ParseErrorKind::MissingField => "missing_field",
            ParseErrorKind::BadId => "bad_id",
            ParseErrorKind::BadTimestamp => "bad_timestamp",
            ParseErrorKind::BadCountry => "bad_country",
            ParseErrorKind::UnknownType => "unknown_type",
            ParseErrorKind::Oversized => "oversized",
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses one line (its `\r\n` already removed).
///
/// A blank line (only ASCII white space) is a [`Message::Heartbeat`]. A JSON
/// object of an unknown type is `Ok(Message::Unknown)`: the caller counts and
/// dead-letters it.
///
/// # Errors
/// A [`ParseError`] for anything else that is not a well-formed message. This
/// function never panics, whatever the bytes.
pub fn parse_line(line: &[u8]) -> Result<Message, ParseError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Message::Heartbeat);
    }
    match fast::parse(line) {
        Some(raw) => raw.into_message(),
        None => parse_with_serde(line),
    }
}

/// Whether the fast path reads `line` (for tests that check the stream's
/// usual lines take it).
#[cfg(test)]
pub(crate) fn reads_fast(line: &[u8]) -> bool {
    fast::parse(line).is_some()
}

/// The fast path's reading of `line` (`None` when it leaves the line to
/// serde) and the reference parser's answer (after `parse_line`'s heartbeat
/// check): whenever the fast path reads a line, the two must be equal. For
/// the tests and the `parse_line` fuzz target (`src/fuzz.rs`); built only
/// in tests and under `cfg(fuzzing)`, which cargo-fuzz sets.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn parse_both_ways(line: &[u8]) -> (Option<Result<Message, ParseError>>, Result<Message, ParseError>) {
    let reference =
        if line.iter().all(u8::is_ascii_whitespace) { Ok(Message::Heartbeat) } else { parse_with_serde(line) };
    (fast::parse(line).map(RawMessage::into_message), reference)
}

/// The reference parser, for every line the fast path leaves (and, in
/// tests, for every line, to compare the two).
pub(crate) fn parse_with_serde(line: &[u8]) -> Result<Message, ParseError> {
    let raw: RawMessage = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(e) => return Err(classify_json_error(e)),
    };
    raw.into_message()
}

fn classify_json_error(e: serde_json::Error) -> ParseError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ParseErrorKind::InvalidJson,
        Category::Data => {
            // Our own typed errors travel through serde as custom messages
            // prefixed with their kind label.
            let msg = e.to_string();
            KINDS_IN_MESSAGES
                .iter()
                .find(|k| msg.starts_with(k.as_str()))
                .copied()
                .unwrap_or(ParseErrorKind::BadPayload)
        }
    };
    ParseError::new(kind, e.to_string())
}

const KINDS_IN_MESSAGES: [ParseErrorKind; 5] = [
    ParseErrorKind::BadId,
    ParseErrorKind::BadTimestamp,
    ParseErrorKind::BadCountry,
    ParseErrorKind::NotAnObject,
    ParseErrorKind::MissingField,
];

fn custom<E: de::Error>(kind: ParseErrorKind, detail: impl fmt::Display) -> E {
    E::custom(format_args!("{}: {}", kind.as_str(), detail))
}

// ---------------------------------------------------------------------------
// Wire shapes. Every field is optional here; required-ness is checked after,
// so that the error names the field.

/// An id given as a JSON number or a string of digits. Parsed straight to
/// `u64`, never through `f64` (trap 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireId(pub(crate) Id);

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned 64-bit id as a number or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireId, E> {
                Ok(WireId(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireId, E> {
                u64::try_from(v).map(WireId).map_err(|_| custom(ParseErrorKind::BadId, format_args!("negative id {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireId, E> {
                Err(custom(ParseErrorKind::BadId, format_args!("id {v} is not an integer")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireId, E> {
                parse_id_str(v).map(WireId).map_err(|e| custom(e.kind, e.detail))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a decimal id string.
///
/// # Errors
/// `BadId` for an empty string, a sign, any non-digit, or overflow.
pub fn parse_id_str(s: &str) -> Result<Id, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(ParseErrorKind::BadId, format!("id {s:?} is not a decimal integer")));
    }
    s.parse::<u64>().map_err(|_| ParseError::new(ParseErrorKind::BadId, format!("id {s:?} exceeds 64 bits")))
}

/// An event time: epoch milliseconds as a number or a digit string
/// (`timestamp_ms`), or an ISO-8601 string (`timestampMs`, trap 2). An
/// unreadable one keeps why, and the message decides: a permanent effect (delete, withheld, edit, scrub) needs no time
/// and is applied without it; a toggle cannot be ordered without one and is
/// refused. A line is never lost for a field its event does not need.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WireTime {
    At(TimeMs),
    Unreadable(ParseError),
}

impl WireTime {
    fn bad(detail: impl Into<String>) -> WireTime {
        WireTime::Unreadable(ParseError::new(ParseErrorKind::BadTimestamp, detail))
    }

    /// The time of a message that may carry it twice (`timestamp_ms` and
    /// `timestampMs`): the first readable one, else why neither is.
    fn either(ms: Option<WireTime>, iso: Option<WireTime>) -> Option<WireTime> {
        match (ms, iso) {
            (Some(WireTime::At(t)), _) | (_, Some(WireTime::At(t))) => Some(WireTime::At(t)),
            (ms, iso) => ms.or(iso),
        }
    }

    /// For a permanent effect: an unreadable time counts as none.
    fn or_none(t: Option<WireTime>) -> TimeMs {
        match t {
            Some(WireTime::At(t)) => t,
            _ => 0,
        }
    }
}

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireTime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("epoch milliseconds or an ISO-8601 time")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTime, E> {
                Ok(i64::try_from(v).map_or_else(|_| WireTime::bad(format!("time {v} out of range")), WireTime::At))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTime, E> {
                Ok(WireTime::At(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireTime, E> {
                if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                    Ok(WireTime::At(v as i64))
                } else {
                    Ok(WireTime::bad(format!("time {v} is not whole milliseconds")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTime, E> {
                Ok(parse_time_str(v).map_or_else(WireTime::Unreadable, WireTime::At))
            }
            fn visit_bool<E: de::Error>(self, _v: bool) -> Result<WireTime, E> {
                Ok(WireTime::bad("a boolean is not a time"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<WireTime, E> {
                Ok(WireTime::bad("null is not a time"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<WireTime, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(WireTime::bad("an array is not a time"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireTime, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(WireTime::bad("an object is not a time"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"1432228155593"` (epoch ms) or `"2014-08-27T23:49:41.839+00:00"`
/// (also with the offset written `+0000`).
///
/// # Errors
/// `BadTimestamp` for anything else.
pub fn parse_time_str(s: &str) -> Result<TimeMs, ParseError> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| ParseError::new(ParseErrorKind::BadTimestamp, format!("time {s:?} out of range")));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ParseError::new(
                ParseErrorKind::BadTimestamp,
                format!("time {s:?} is neither epoch milliseconds nor ISO-8601"),
            )
        })
}

struct WireCountries(Vec<Country>);

impl WireCountries {
    /// The codes in order, each once.
    fn from_codes(mut codes: Vec<Country>) -> WireCountries {
        codes.sort_unstable();
        codes.dedup();
        WireCountries(codes)
    }
}

/// One element of a country list, read or not.
struct WireCountry(Result<Country, ParseError>);

impl<'de> Deserialize<'de> for WireCountry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn not_a_code(what: &str) -> WireCountry {
            WireCountry(Err(ParseError::new(ParseErrorKind::BadCountry, format!("{what} is not a country code"))))
        }
        impl<'de> Visitor<'de> for V {
            type Value = WireCountry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a country code")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireCountry, E> {
                Ok(WireCountry(Country::parse(v)))
            }
            fn visit_u64<E: de::Error>(self, _v: u64) -> Result<WireCountry, E> {
                Ok(not_a_code("a number"))
            }
            fn visit_i64<E: de::Error>(self, _v: i64) -> Result<WireCountry, E> {
                Ok(not_a_code("a number"))
            }
            fn visit_f64<E: de::Error>(self, _v: f64) -> Result<WireCountry, E> {
                Ok(not_a_code("a number"))
            }
            fn visit_bool<E: de::Error>(self, _v: bool) -> Result<WireCountry, E> {
                Ok(not_a_code("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<WireCountry, E> {
                Ok(not_a_code("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<WireCountry, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(not_a_code("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireCountry, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(not_a_code("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WireCountries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireCountries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of country codes")
            }
            // A code that is not one (`"XXX"`, `5`) matches no country, so
            // it is passed over and the others apply: one bad code does not
            // cost the withholding in the countries named right. A list of
            // nothing but bad codes is refused (an operator should see it).
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<WireCountries, A::Error> {
                let mut out = Vec::with_capacity(2);
                let mut bad = None;
                while let Some(code) = seq.next_element::<WireCountry>()? {
                    match code.0 {
                        Ok(c) => out.push(c),
                        Err(e) => bad = bad.or(Some(e)),
                    }
                }
                match bad {
                    Some(e) if out.is_empty() => Err(custom(e.kind, e.detail)),
                    _ => Ok(WireCountries::from_codes(out)),
                }
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize, Default)]
struct WireStatusRef {
    id: Option<WireId>,
    id_str: Option<WireId>,
    user_id: Option<WireId>,
    user_id_str: Option<WireId>,
}

#[derive(Deserialize, Default)]
struct WireFavoriteRef {
    tweet_id: Option<WireId>,
    tweet_id_str: Option<WireId>,
    user_id: Option<WireId>,
    user_id_str: Option<WireId>,
}

#[derive(Deserialize, Default)]
struct WireDelete {
    status: Option<WireStatusRef>,
    favorite: Option<WireFavoriteRef>,
    timestamp_ms: Option<WireTime>,
    #[serde(rename = "timestampMs")]
    timestamp_iso: Option<WireTime>,
}

#[derive(Deserialize, Default)]
struct WireStatusEvent {
    status: Option<WireStatusRef>,
    withheld_in_countries: Option<WireCountries>,
    timestamp_ms: Option<WireTime>,
    #[serde(rename = "timestampMs")]
    timestamp_iso: Option<WireTime>,
}

#[derive(Deserialize, Default)]
struct WireEdit {
    id: Option<WireId>,
    id_str: Option<WireId>,
    initial_tweet_id: Option<WireId>,
    initial_tweet_id_str: Option<WireId>,
    edit_tweet_ids: Option<Vec<WireId>>,
    timestamp_ms: Option<WireTime>,
    #[serde(rename = "timestampMs")]
    timestamp_iso: Option<WireTime>,
}

#[derive(Deserialize, Default)]
struct WireUserRef {
    id: Option<WireId>,
    id_str: Option<WireId>,
}

#[derive(Deserialize, Default)]
struct WireUserEvent {
    id: Option<WireId>,
    id_str: Option<WireId>,
    user_id: Option<WireId>,
    user_id_str: Option<WireId>,
    user: Option<WireUserRef>,
    withheld_in_countries: Option<WireCountries>,
    up_to_status_id: Option<WireId>,
    up_to_status_id_str: Option<WireId>,
    timestamp_ms: Option<WireTime>,
    #[serde(rename = "timestampMs")]
    timestamp_iso: Option<WireTime>,
}

enum RawMessage {
    Delete(WireDelete),
    StatusWithheld(WireStatusEvent),
    Drop(WireStatusEvent),
    Undrop(WireStatusEvent),
    Edit(WireEdit),
    User(UserKind, WireUserEvent),
    Error(Notice),
    Info(ReplayInfo),
    Unknown(String),
}

#[derive(Clone, Copy)]
enum UserKind {
    Delete,
    Undelete,
    Protect,
    Unprotect,
    Suspend,
    Unsuspend,
    Withheld,
    ScrubGeo,
}

impl UserKind {
    fn from_name(name: &str) -> Option<UserKind> {
        Some(match name {
            "user_delete" => UserKind::Delete,
            "user_undelete" => UserKind::Undelete,
            "user_protect" => UserKind::Protect,
            "user_unprotect" => UserKind::Unprotect,
            "user_suspend" => UserKind::Suspend,
            "user_unsuspend" => UserKind::Unsuspend,
            "user_withheld" => UserKind::Withheld,
            "scrub_geo" => UserKind::ScrubGeo,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for RawMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMessage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object with one key naming the message type")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMessage, A::Error> {
                // The first key we recognise decides; other keys are tolerated
                // (trap 5). An object with no known key is Unknown(first key).
                let mut found: Option<RawMessage> = None;
                let mut first_unknown: Option<String> = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if found.is_some() {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let msg = match key.as_ref() {
                        "delete" => RawMessage::Delete(map.next_value()?),
                        "status_withheld" => RawMessage::StatusWithheld(map.next_value()?),
                        "drop" => RawMessage::Drop(map.next_value()?),
                        "undrop" => RawMessage::Undrop(map.next_value()?),
                        "tweet_edit" => RawMessage::Edit(map.next_value()?),
                        "error" => RawMessage::Error(map.next_value()?),
                        "info" => RawMessage::Info(map.next_value()?),
                        other => match UserKind::from_name(other) {
                            Some(kind) => RawMessage::User(kind, map.next_value()?),
                            None => {
                                if first_unknown.is_none() {
                                    first_unknown = Some(truncate(other, 64).to_owned());
                                }
                                map.next_value::<IgnoredAny>()?;
                                continue;
                            }
                        },
                    };
                    found = Some(msg);
                }
                Ok(found.unwrap_or_else(|| RawMessage::Unknown(first_unknown.unwrap_or_default())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _seq: A) -> Result<RawMessage, A::Error> {
                Err(custom(ParseErrorKind::NotAnObject, "a JSON array is not a message"))
            }
            fn visit_str<E: de::Error>(self, _v: &str) -> Result<RawMessage, E> {
                Err(custom(ParseErrorKind::NotAnObject, "a JSON string is not a message"))
            }
            fn visit_u64<E: de::Error>(self, _v: u64) -> Result<RawMessage, E> {
                Err(custom(ParseErrorKind::NotAnObject, "a JSON number is not a message"))
            }
            fn visit_i64<E: de::Error>(self, _v: i64) -> Result<RawMessage, E> {
                Err(custom(ParseErrorKind::NotAnObject, "a JSON number is not a message"))
            }
            fn visit_f64<E: de::Error>(self, _v: f64) -> Result<RawMessage, E> {
                Err(custom(ParseErrorKind::NotAnObject, "a JSON number is not a message"))
            }
            fn visit_bool<E: de::Error>(self, _v: bool) -> Result<RawMessage, E> {
                Err(custom(ParseErrorKind::NotAnObject, "a JSON boolean is not a message"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawMessage, E> {
                Err(custom(ParseErrorKind::NotAnObject, "null is not a message"))
            }
        }
        d.deserialize_any(V)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn missing(what: &str) -> ParseError {
    ParseError::new(ParseErrorKind::MissingField, format!("{what} is missing"))
}

/// Prefers the exact `*_str` form (trap 1): the bare number may have been
/// rounded by a float somewhere upstream.
///
/// Not inlined: at `opt-level = 1` (the test profile) rustc 1.95 turned
/// `u.user.and_then(|r| pick(r.id_str, r.id))` into a load whose address it
/// computed from the absent `user`'s uninitialised bytes, before testing
/// whether `user` was there: a SIGSEGV on a line without any user id (found
/// by `fast::tests::corrupted_lines_get_the_same_answer_as_serde_s`). A call
/// cannot be hoisted above that test.
#[inline(never)]
fn pick(exact: Option<WireId>, number: Option<WireId>) -> Option<Id> {
    exact.or(number).map(|w| w.0)
}

fn required_time(t: Option<WireTime>, ty: &str) -> Result<TimeMs, ParseError> {
    match t {
        Some(WireTime::At(t)) => Ok(t),
        Some(WireTime::Unreadable(e)) => Err(e),
        None => Err(missing(&format!("{ty}.timestamp_ms"))),
    }
}

impl RawMessage {
    fn into_message(self) -> Result<Message, ParseError> {
        let event = |time_ms, kind| Ok(Message::Event(Event { time_ms, kind }));
        match self {
            RawMessage::Error(n) => Ok(Message::Error(n)),
            RawMessage::Info(i) => Ok(Message::Info(i)),
            RawMessage::Unknown(kind) => Ok(Message::Unknown { kind }),
            RawMessage::Delete(d) => {
                let time = WireTime::or_none(WireTime::either(d.timestamp_ms, d.timestamp_iso));
                match (d.status, d.favorite) {
                    (Some(s), _) => {
                        let id = pick(s.id_str, s.id).ok_or_else(|| missing("delete.status.id_str"))?;
                        let user_id = pick(s.user_id_str, s.user_id);
                        event(time, EventKind::Status(StatusEvent::Delete { id, user_id }))
                    }
                    (None, Some(f)) => {
                        let post_id =
                            pick(f.tweet_id_str, f.tweet_id).ok_or_else(|| missing("delete.favorite.tweet_id_str"))?;
                        let user_id =
                            pick(f.user_id_str, f.user_id).ok_or_else(|| missing("delete.favorite.user_id_str"))?;
                        event(time, EventKind::Status(StatusEvent::FavoriteDelete { user_id, post_id }))
                    }
                    (None, None) => Err(missing("delete.status or delete.favorite")),
                }
            }
            RawMessage::StatusWithheld(w) => {
                let s = w.status.ok_or_else(|| missing("status_withheld.status"))?;
                let id = pick(s.id_str, s.id).ok_or_else(|| missing("status_withheld.status.id_str"))?;
                let countries =
                    w.withheld_in_countries.ok_or_else(|| missing("status_withheld.withheld_in_countries"))?.0;
                let time = WireTime::or_none(WireTime::either(w.timestamp_ms, w.timestamp_iso));
                let user_id = pick(s.user_id_str, s.user_id);
                event(time, EventKind::Status(StatusEvent::Withheld(Box::new(PostWithheld { id, user_id, countries }))))
            }
            RawMessage::Drop(w) | RawMessage::Undrop(w) if w.status.is_none() => Err(missing("drop.status")),
            RawMessage::Drop(w) => {
                let (id, user_id, time) = status_toggle(w, "drop")?;
                event(time, EventKind::Status(StatusEvent::Drop { id, user_id }))
            }
            RawMessage::Undrop(w) => {
                let (id, user_id, time) = status_toggle(w, "undrop")?;
                event(time, EventKind::Status(StatusEvent::Undrop { id, user_id }))
            }
            RawMessage::Edit(e) => {
                let id = pick(e.id_str, e.id).ok_or_else(|| missing("tweet_edit.id"))?;
                let initial_id = pick(e.initial_tweet_id_str, e.initial_tweet_id);
                let mut edit_ids: Vec<Id> = e.edit_tweet_ids.unwrap_or_default().into_iter().map(|w| w.0).collect();
                if edit_ids.is_empty() {
                    return Err(missing("tweet_edit.edit_tweet_ids"));
                }
                edit_ids.sort_unstable();
                edit_ids.dedup();
                let time = WireTime::or_none(WireTime::either(e.timestamp_ms, e.timestamp_iso));
                event(time, EventKind::Status(StatusEvent::Edit(Box::new(PostEdit { id, initial_id, edit_ids }))))
            }
            RawMessage::User(kind, u) => {
                let ty = match kind {
                    UserKind::ScrubGeo => "scrub_geo",
                    UserKind::Withheld => "user_withheld",
                    _ => "user event",
                };
                let user_id = pick(u.id_str, u.id)
                    .or_else(|| pick(u.user_id_str, u.user_id))
                    .or_else(|| u.user.and_then(|r| pick(r.id_str, r.id)))
                    .ok_or_else(|| missing(&format!("{ty} user id")))?;
                let time = WireTime::either(u.timestamp_ms, u.timestamp_iso);
                let ev = match kind {
                    UserKind::Withheld => UserEvent::Withheld {
                        user_id,
                        countries: u
                            .withheld_in_countries
                            .ok_or_else(|| missing("user_withheld.withheld_in_countries"))?
                            .0,
                    },
                    UserKind::ScrubGeo => UserEvent::ScrubGeo {
                        user_id,
                        up_to_status_id: pick(u.up_to_status_id_str, u.up_to_status_id)
                            .ok_or_else(|| missing("scrub_geo.up_to_status_id_str"))?,
                    },
                    UserKind::Delete => UserEvent::Delete { user_id },
                    UserKind::Undelete => UserEvent::Undelete { user_id },
                    UserKind::Protect => UserEvent::Protect { user_id },
                    UserKind::Unprotect => UserEvent::Unprotect { user_id },
                    UserKind::Suspend => UserEvent::Suspend { user_id },
                    UserKind::Unsuspend => UserEvent::Unsuspend { user_id },
                };
                // Toggling states are ordered by event time, so they need one;
                // permanent ones apply whenever they arrive.
                let time_ms = match kind {
                    UserKind::Withheld | UserKind::ScrubGeo => WireTime::or_none(time),
                    _ => required_time(time, ty)?,
                };
                event(time_ms, EventKind::User(ev))
            }
        }
    }
}

fn status_toggle(w: WireStatusEvent, ty: &str) -> Result<(Id, Option<Id>, TimeMs), ParseError> {
    let s = w.status.ok_or_else(|| missing(&format!("{ty}.status")))?;
    let id = pick(s.id_str, s.id).ok_or_else(|| missing(&format!("{ty}.status.id_str")))?;
    let time = required_time(WireTime::either(w.timestamp_ms, w.timestamp_iso), ty)?;
    Ok((id, pick(s.user_id_str, s.user_id), time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> Event {
        match parse_line(line.as_bytes()) {
            Ok(Message::Event(e)) => e,
            other => panic!("expected an event from {line}, got {other:?}"),
        }
    }

    fn err(line: &str) -> ParseErrorKind {
        match parse_line(line.as_bytes()) {
            Err(e) => e.kind,
            other => panic!("expected an error from {line}, got {other:?}"),
        }
    }

    const DOC_DELETE: &str = r#"{"delete":{"status":{"id":601430178305220600,"id_str":"601430178305220608","user_id":3198576760,"user_id_str":"3198576760"},"timestamp_ms":"1432228155593"}}"#;

    #[test]
    fn trap1_ids_above_2_pow_53_prefer_id_str_over_rounded_number() {
        let e = ev(DOC_DELETE);
        assert_eq!(
            e.kind,
            EventKind::Status(StatusEvent::Delete { id: 601430178305220608, user_id: Some(3198576760) })
        );
        assert_eq!(e.time_ms, 1432228155593);
    }

    #[test]
    fn trap1_bare_numbers_parse_as_u64_without_float_rounding() {
        // No id_str: the number itself must survive exactly (2^63 + 1 here).
        let e = ev(r#"{"user_suspend":{"id":9223372036854775809,"timestamp_ms":"1"}}"#);
        assert_eq!(e.kind, EventKind::User(UserEvent::Suspend { user_id: 9223372036854775809 }));
        let e = ev(r#"{"user_protect":{"id":18446744073709551615,"timestamp_ms":"1"}}"#);
        assert_eq!(e.kind, EventKind::User(UserEvent::Protect { user_id: u64::MAX }));
    }

    #[test]
    fn trap1_ids_accepted_as_numbers_or_strings() {
        let a = ev(r#"{"user_delete":{"id":"771136850","timestamp_ms":"1"}}"#);
        let b = ev(r#"{"user_delete":{"id":771136850,"timestamp_ms":1}}"#);
        assert_eq!(a, b);
    }

    #[test]
    fn trap1_bad_ids_are_errors_not_crashes() {
        assert_eq!(err(r#"{"user_delete":{"id":-5,"timestamp_ms":"1"}}"#), ParseErrorKind::BadId);
        assert_eq!(err(r#"{"user_delete":{"id":1.5e17,"timestamp_ms":"1"}}"#), ParseErrorKind::BadId);
        assert_eq!(err(r#"{"user_delete":{"id":"12a","timestamp_ms":"1"}}"#), ParseErrorKind::BadId);
        assert_eq!(err(r#"{"user_delete":{"id":"18446744073709551616","timestamp_ms":"1"}}"#), ParseErrorKind::BadId);
        assert_eq!(err(r#"{"user_delete":{"id":true,"timestamp_ms":"1"}}"#), ParseErrorKind::BadPayload);
    }

    #[test]
    fn trap2_timestamp_ms_string_and_timestampms_iso() {
        let e = ev(
            r#"{"user_withheld":{"user":{"id":1375036644,"id_str":"1375036644"},"withheld_in_countries":["XY"],"timestampMs":"2014-08-27T23:49:41.839+00:00"}}"#,
        );
        assert_eq!(e.time_ms, 1409183381839);
        assert_eq!(
            e.kind,
            EventKind::User(UserEvent::Withheld { user_id: 1375036644, countries: vec![Country::DMCA] })
        );
        assert_eq!(err(r#"{"user_protect":{"id":1,"timestamp_ms":"yesterday"}}"#), ParseErrorKind::BadTimestamp);
    }

    #[test]
    fn trap2_toggling_events_need_a_time_permanent_ones_do_not() {
        assert_eq!(err(r#"{"user_protect":{"id":1}}"#), ParseErrorKind::MissingField);
        assert_eq!(err(r#"{"drop":{"status":{"id_str":"5"}}}"#), ParseErrorKind::MissingField);
        assert_eq!(ev(r#"{"delete":{"status":{"id_str":"5"}}}"#).time_ms, 0);
    }

    /// A permanent effect is applied whatever its time field holds (it
    /// needs none); a toggle with an unreadable time is refused. Both time
    /// fields at once, and an offset written without its colon, are read.
    #[test]
    fn trap2_an_unreadable_time_costs_a_toggle_never_a_permanent_effect() {
        for bad in [r#""x""#, r#""2014-13-45""#, "true", "null", "{}", "[1]", "-1.5", r#""99999999999999999999""#] {
            for line in [
                format!(r#"{{"delete":{{"status":{{"id_str":"19"}},"timestamp_ms":{bad}}}}}"#),
                format!(r#"{{"delete":{{"status":{{"id_str":"19"}},"timestampMs":{bad}}}}}"#),
            ] {
                let e = ev(&line);
                assert_eq!(e.kind, EventKind::Status(StatusEvent::Delete { id: 19, user_id: None }), "{line}");
                assert_eq!(e.time_ms, 0, "{line}");
            }
            let withheld = format!(
                r#"{{"status_withheld":{{"status":{{"id_str":"17"}},"withheld_in_countries":["DE"],"timestamp_ms":{bad}}}}}"#
            );
            assert!(matches!(ev(&withheld).kind, EventKind::Status(StatusEvent::Withheld(_))), "{withheld}");
            let edit = format!(r#"{{"tweet_edit":{{"id":"2","edit_tweet_ids":["1","2"],"timestamp_ms":{bad}}}}}"#);
            assert!(matches!(ev(&edit).kind, EventKind::Status(StatusEvent::Edit(_))), "{edit}");
            for permanent in [
                format!(r#"{{"user_withheld":{{"id":7,"withheld_in_countries":["DE"],"timestampMs":{bad}}}}}"#),
                format!(r#"{{"scrub_geo":{{"user_id":7,"up_to_status_id_str":"9","timestamp_ms":{bad}}}}}"#),
            ] {
                assert!(matches!(ev(&permanent).kind, EventKind::User(_)), "{permanent}");
            }
            for toggle in [
                format!(r#"{{"user_protect":{{"id":1,"timestamp_ms":{bad}}}}}"#),
                format!(r#"{{"drop":{{"status":{{"id_str":"5"}},"timestampMs":{bad}}}}}"#),
            ] {
                let why = if bad == "null" { ParseErrorKind::MissingField } else { ParseErrorKind::BadTimestamp };
                assert_eq!(err(&toggle), why, "{toggle}");
            }
        }
        // Both fields: the first readable one, `timestamp_ms` first.
        let both = |ms: &str, iso: &str| {
            ev(&format!(r#"{{"user_protect":{{"id":15,"timestamp_ms":{ms},"timestampMs":{iso}}}}}"#)).time_ms
        };
        assert_eq!(both(r#""1432228177137""#, r#""2014-08-27T23:49:41.839+00:00""#), 1432228177137);
        assert_eq!(both(r#""x""#, r#""2014-08-27T23:49:41.839+00:00""#), 1409183381839);
        assert_eq!(both(r#""1432228177137""#, "null"), 1432228177137);
        assert_eq!(
            err(r#"{"user_protect":{"id":15,"timestamp_ms":"x","timestampMs":"y"}}"#),
            ParseErrorKind::BadTimestamp
        );
        for iso in ["2014-08-27T23:49:41.839+0000", "2014-08-27T23:49:41.839+00:00", "2014-08-27T23:49:41.839Z"] {
            let line = format!(r#"{{"user_protect":{{"id":11,"timestampMs":"{iso}"}}}}"#);
            assert_eq!(ev(&line).time_ms, 1409183381839, "{line}");
        }
        assert_eq!(
            ev(r#"{"user_protect":{"id":11,"timestampMs":"2014-08-28T01:49:41.839+0200"}}"#).time_ms,
            1409183381839
        );
    }

    #[test]
    fn trap3_documented_invalid_tweet_edit_is_an_input_error() {
        // Verbatim from the documentation: the comma after "id" is missing.
        let doc = r#"{"tweet_edit":{"id":"1557445923210514432" "initial_tweet_id":"1557433858676740098","edit_tweet_ids":["1557433858676740098","1557445923210514432"],"timestamp_ms":"1660155761384"}}"#;
        assert_eq!(err(doc), ParseErrorKind::InvalidJson);
        let fixed = doc.replace(r#"432" "initial"#, r#"432","initial"#);
        let e = ev(&fixed);
        assert_eq!(
            e.kind,
            EventKind::Status(StatusEvent::Edit(Box::new(PostEdit {
                id: 1557445923210514432,
                initial_id: Some(1557433858676740098),
                edit_ids: vec![1557433858676740098, 1557445923210514432],
            })))
        );
    }

    #[test]
    fn trap4_country_codes_xx_xy_and_case() {
        let e = ev(
            r#"{"status_withheld":{"status":{"id_str":"7","user_id_str":"8"},"withheld_in_countries":["de","XX","DE"],"timestamp_ms":"1"}}"#,
        );
        let EventKind::Status(StatusEvent::Withheld(w)) = e.kind else { panic!() };
        assert_eq!(w.countries, vec![Country::parse("DE").unwrap(), Country::ALL]);
        assert!(Country::ALL.is_everywhere() && Country::DMCA.is_everywhere());
        assert_eq!(
            err(r#"{"status_withheld":{"status":{"id_str":"7"},"withheld_in_countries":["DEU"]}}"#),
            ParseErrorKind::BadCountry
        );
        // A code that is not one matches no country: the others still apply.
        for line in [
            r#"{"status_withheld":{"status":{"id_str":"7"},"withheld_in_countries":["DEU","fr",5,null,{"a":1},["DE"],"DE"]}}"#,
            r#"{"user_withheld":{"id":7,"withheld_in_countries":["","FR","D1","de"],"timestampMs":"x"}}"#,
        ] {
            let countries = match ev(line).kind {
                EventKind::Status(StatusEvent::Withheld(w)) => w.countries,
                EventKind::User(UserEvent::Withheld { countries, .. }) => countries,
                other => panic!("{line}: {other:?}"),
            };
            assert_eq!(countries, vec![Country::parse("DE").unwrap(), Country::parse("FR").unwrap()], "{line}");
        }
        assert_eq!(
            err(r#"{"user_withheld":{"id":7,"withheld_in_countries":["DEU",null],"timestamp_ms":"1"}}"#),
            ParseErrorKind::BadCountry
        );
    }

    #[test]
    fn trap5_unknown_fields_are_tolerated() {
        let e = ev(
            r#"{"delete":{"status":{"id_str":"5","lang":"en","extra":{"a":[1,2]}},"timestamp_ms":"9","new_field":true},"envelope":1}"#,
        );
        assert_eq!(e.kind, EventKind::Status(StatusEvent::Delete { id: 5, user_id: None }));
    }

    #[test]
    fn trap5_unknown_types_are_classified_not_fatal() {
        assert_eq!(
            parse_line(br#"{"user_rename":{"id":5}}"#).unwrap(),
            Message::Unknown { kind: "user_rename".into() }
        );
        assert_eq!(parse_line(b"{}").unwrap(), Message::Unknown { kind: String::new() });
    }

    #[test]
    fn trap6_heartbeats_errors_and_info_lines() {
        assert_eq!(parse_line(b"").unwrap(), Message::Heartbeat);
        assert_eq!(parse_line(b"  \n").unwrap(), Message::Heartbeat);
        let Message::Error(n) = parse_line(br#"{"error":{"message":"Forced Disconnect: Too many connections. (Allowed Connections = 2)","sent":"2017-01-11T18:12:52+00:00"}}"#).unwrap() else { panic!() };
        assert!(n.message.starts_with("Forced Disconnect"));
        assert!(!n.is_buffer_full());
        let Message::Info(i) = parse_line(br#"{"info":{"message":"Replay Request Completed","sent":"2016-05-27T22:15:50+00:00","activity_count":8874}}"#).unwrap() else { panic!() };
        assert!(i.is_complete());
        let Message::Info(i) = parse_line(br#"{"info":{"message":"Replay Request Failed to Complete","sent":"x","unprocessed_range":{"fromDate":"201302200000","toDate":"201302200100"},"activity_count":1822}}"#).unwrap() else { panic!() };
        assert!(!i.is_complete());
        assert_eq!(i.unprocessed_range.unwrap().from_date, "201302200000");
    }

    #[test]
    fn both_kinds_of_delete() {
        let e = ev(
            r#"{"delete":{"favorite":{"tweet_id":696615514970279937,"tweet_id_str":"696615514970279937","user_id":2510287578,"user_id_str":"2510287578"},"timestamp_ms":"1480437031205"}}"#,
        );
        assert_eq!(
            e.kind,
            EventKind::Status(StatusEvent::FavoriteDelete { user_id: 2510287578, post_id: 696615514970279937 })
        );
        assert_eq!(err(r#"{"delete":{"timestamp_ms":"1"}}"#), ParseErrorKind::MissingField);
    }

    #[test]
    fn every_documented_example_parses() {
        let lines = [
            (
                r#"{"status_withheld":{"status":{"id":601430178305220600,"id_str":"601430178305220608","user_id":3198576760,"user_id_str":"3198576760"},"withheld_in_countries":["XY"],"timestamp_ms":"1432228155593"}}"#,
                "status_withheld",
            ),
            (
                r#"{"drop":{"status":{"id":601430178305220600,"id_str":"601430178305220600","user_id":3198576760,"user_id_str":"3198576760"},"timestamp_ms":"1432228155593"}}"#,
                "drop",
            ),
            (
                r#"{"undrop":{"status":{"id":601430178305220600,"id_str":"601430178305220600","user_id":3198576760,"user_id_str":"3198576760"},"timestamp_ms":"1432228155593"}}"#,
                "undrop",
            ),
            (
                r#"{"scrub_geo":{"user_id":519761961,"up_to_status_id":411552403083628540,"up_to_status_id_str":"411552403083628544","user_id_str":"519761961","timestamp_ms":"1432228180345"}}"#,
                "scrub_geo",
            ),
            (r#"{"user_delete":{"id":771136850,"timestamp_ms":"1432228153548"}}"#, "user_delete"),
            (r#"{"user_undelete":{"id":796250066,"timestamp_ms":"1432228149062"}}"#, "user_undelete"),
            (r#"{"user_protect":{"id":3182003550,"timestamp_ms":"1432228177137"}}"#, "user_protect"),
            (r#"{"user_unprotect":{"id":2911076065,"timestamp_ms":"1432228180113"}}"#, "user_unprotect"),
            (r#"{"user_suspend":{"id":3120539094,"timestamp_ms":"1432228194217"}}"#, "user_suspend"),
            (r#"{"user_unsuspend":{"id":3293130873,"timestamp_ms":"1432228193828"}}"#, "user_unsuspend"),
        ];
        for (line, ty) in lines {
            assert_eq!(ev(line).type_name(), ty, "{line}");
            assert_eq!(EVENT_TYPES[ev(line).type_index()], ty, "type_index of {line}");
        }
        for line in [
            DOC_DELETE,
            r#"{"delete":{"favorite":{"tweet_id":1,"user_id":2},"timestamp_ms":"1"}}"#,
            r#"{"user_withheld":{"user":{"id":1},"withheld_in_countries":["XY"],"timestamp_ms":"1"}}"#,
            r#"{"tweet_edit":{"id":"2","initial_tweet_id":"1","edit_tweet_ids":["1","2"],"timestamp_ms":"1"}}"#,
        ] {
            let e = ev(line);
            assert_eq!(EVENT_TYPES[e.type_index()], e.type_name(), "type_index of {line}");
        }
        let e = ev(lines[3].0);
        assert_eq!(
            e.kind,
            EventKind::User(UserEvent::ScrubGeo { user_id: 519761961, up_to_status_id: 411552403083628544 })
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 9] = [
            b"{",
            b"[1,2]",
            b"\"x\"",
            b"null",
            b"12",
            b"\xff\xfe{}",
            b"{\"delete\":5}",
            b"{\"delete\":{\"status\":[]}}",
            b"{\"user_withheld\":{\"id\":1,\"withheld_in_countries\":\"DE\"}}",
        ];
        for i in inputs {
            assert!(parse_line(i).is_err(), "{:?}", String::from_utf8_lossy(i));
        }
    }
}
