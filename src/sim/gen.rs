//! Deterministic generator of compliance events and of the matching posts
//! dataset.
//!
//! Everything here is a pure function of `(seed, index)`: event `i` is the
//! same bytes whatever the order, the thread or the moment it is generated in,
//! which is what makes replay, backfill and "same seed, same bytes" possible.
//! A private splitmix64 stream is used rather than a `rand` generator because
//! `rand` does not promise the same values across versions or platforms.
//!
//! The wire traps of docs/protocol.md, section 2.3, are all produced:
//! numeric ids above 2^53 rounded the way a JavaScript float prints them
//! beside an exact `*_str`, user events carrying only an exact numeric id,
//! `timestamp_ms` as a string of epoch milliseconds except `user_withheld`'s
//! ISO-8601 `timestampMs`, exact duplicates, unknown fields and unknown
//! message types, and the same users toggling their states over time.

use std::io::Write as _;

use serde_json::{json, Map, Value};

use super::config::GeneratorConfig;

/// X's snowflake epoch (2010-11-04T01:42:54.657Z).
pub(crate) const TWEPOCH_MS: i64 = 1_288_834_974_657;
/// Creation time of dataset post 0 (2023-01-01T00:00:00Z).
const POSTS_BASE_MS: i64 = 1_672_531_200_000;
/// Creation time of the first "new style" (snowflake) user id (2016-01-01).
const USERS_BASE_MS: i64 = 1_451_606_400_000;
/// Largest integer an IEEE double represents exactly.
const F64_EXACT_MAX: u64 = 1 << 53;
/// Event spacing used when `rate = 0` ("as fast as possible"): event times
/// advance as if the rate were one million events per second.
pub(crate) const NOMINAL_UNLIMITED_RATE: f64 = 1_000_000.0;
/// Users picked for user events are most of the time authors of the first
/// posts (a few dozen users), so the same users flip their states again and
/// again.
const HOT_POSTS: u64 = 640;

const D_USER: u64 = 0x5553_4552;
const D_POST: u64 = 0x504f_5354;
const D_EVENT: u64 = 0x4556_4e54;

const COUNTRIES: [&str; 14] = ["DE", "FR", "GB", "IN", "TR", "RU", "BR", "JP", "KR", "US", "ES", "IT", "XX", "XY"];

const WORDS: [&str; 24] = [
    "compliance",
    "firehose",
    "stream",
    "café",
    "naïve",
    "日本語",
    "🙂",
    "über",
    "post",
    "partition",
    "heartbeat",
    "gzip",
    "replay",
    "delete",
    "Ελληνικά",
    "русский",
    "mañana",
    "한국어",
    "🚀",
    "tweet",
    "data",
    "x",
    "hello",
    "world",
];

/// (full_name, country_code, longitude, latitude)
const PLACES: [(&str, &str, f64, f64); 6] = [
    ("Berlin, Germany", "DE", 13.405, 52.52),
    ("Paris, France", "FR", 2.3522, 48.8566),
    ("Mumbai, India", "IN", 72.8777, 19.076),
    ("São Paulo, Brazil", "BR", -46.6333, -23.5505),
    ("東京都 千代田区, 日本", "JP", 139.7528, 35.6852),
    ("İstanbul, Türkiye", "TR", 28.9784, 41.0082),
];

#[inline]
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A tiny portable random stream (splitmix64), keyed by (seed, domain, index).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, domain: u64, i: u64) -> Rng {
        let a = splitmix(seed ^ domain.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Rng(splitmix(a ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)))
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / F64_EXACT_MAX as f64)
    }

    #[inline]
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// What the generator knows about dataset post `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PostMeta {
    pub id: u64,
    pub time_ms: i64,
    /// Index of the author in the users table.
    pub author: u64,
    /// Dataset index of the retweeted original (always an original itself).
    pub retweet_of: Option<u64>,
    /// Index into `PLACES` when the post carries geo data.
    pub place: Option<usize>,
    text_seed: u64,
}

/// The posts and users the events refer to. Post `k` does not depend on how
/// many posts the dataset has (a longer dataset extends a shorter one), and
/// its author is one of the first `k / 10 + 1` users.
#[derive(Clone, Debug)]
pub(crate) struct Dataset {
    seed: u64,
    posts: u64,
}

impl Dataset {
    pub(crate) fn new(seed: u64, posts: u64) -> Dataset {
        Dataset { seed, posts }
    }

    pub(crate) fn posts(&self) -> u64 {
        self.posts
    }

    /// The id of user `u`: a quarter are snowflake ids above 2^53, the rest
    /// older 9-digit ids. Distinct for distinct `u`.
    pub(crate) fn user_id(&self, u: u64) -> u64 {
        let mut r = Rng::new(self.seed, D_USER, u);
        if r.below(4) == 0 {
            let t = (USERS_BASE_MS - TWEPOCH_MS) as u64 + u.wrapping_mul(1000);
            (t << 22) | r.below(1 << 22)
        } else {
            100_000_000 + u.wrapping_mul(37) + r.below(37)
        }
    }

    pub(crate) fn post(&self, k: u64) -> PostMeta {
        let mut r = Rng::new(self.seed, D_POST, k);
        let time_ms = POSTS_BASE_MS + (k as i64).wrapping_mul(30_000) + r.below(30_000) as i64;
        let id = (((time_ms - TWEPOCH_MS) as u64) << 22) | r.below(1 << 22);
        let u = r.unit();
        let author = ((k / 10 + 1) as f64 * u * u) as u64;
        let retweet_of = if k > 0 && r.chance(0.15) { Some(r.below(k)) } else { None };
        let has_geo = r.chance(0.12);
        let place = r.below(PLACES.len() as u64) as usize;
        let text_seed = r.next_u64();
        // A retweet of a retweet retweets the original.
        let retweet_of = retweet_of.map(|mut j| {
            for _ in 0..64 {
                match self.post_retweet_of(j) {
                    Some(o) => j = o,
                    None => break,
                }
            }
            j
        });
        PostMeta {
            id,
            time_ms,
            author,
            retweet_of,
            place: if has_geo && retweet_of.is_none() { Some(place) } else { None },
            text_seed,
        }
    }

    /// Just the retweet link of post `k`, without resolving chains.
    fn post_retweet_of(&self, k: u64) -> Option<u64> {
        let mut r = Rng::new(self.seed, D_POST, k);
        let _ = r.below(30_000);
        let _ = r.below(1 << 22);
        let _ = r.unit();
        if k > 0 && r.chance(0.15) {
            Some(r.below(k))
        } else {
            None
        }
    }

    fn user_value(&self, u: u64) -> Value {
        let id = self.user_id(u);
        json!({
            "id": id,
            "id_str": id.to_string(),
            "name": format!("Sim User {u}"),
            "screen_name": format!("simuser{u}"),
        })
    }

    fn post_value(&self, k: u64) -> Value {
        let m = self.post(k);
        let mut o = Map::new();
        o.insert("created_at".into(), Value::String(twitter_time(m.time_ms)));
        o.insert("id".into(), json!(m.id));
        o.insert("id_str".into(), Value::String(m.id.to_string()));
        o.insert("user".into(), self.user_value(m.author));
        if let Some(j) = m.retweet_of {
            let orig = self.post_value(j);
            let author = self.post(j).author;
            let text = orig.get("text").and_then(Value::as_str).unwrap_or_default().to_string();
            o.insert("text".into(), Value::String(format!("RT @simuser{author}: {text}")));
            o.insert("retweeted_status".into(), orig);
        } else {
            o.insert("text".into(), Value::String(post_text(m.text_seed)));
        }
        match m.place {
            Some(p) => {
                let (name, cc, lon, lat) = PLACES[p];
                let mut r = Rng::new(m.text_seed, D_POST, 1);
                let lon = round6(lon + (r.unit() - 0.5) * 0.1);
                let lat = round6(lat + (r.unit() - 0.5) * 0.1);
                o.insert("coordinates".into(), json!({"type": "Point", "coordinates": [lon, lat]}));
                o.insert("geo".into(), json!({"type": "Point", "coordinates": [lat, lon]}));
                o.insert(
                    "place".into(),
                    json!({
                        "id": format!("{:016x}", splitmix(p as u64 + 1)),
                        "full_name": name,
                        "country_code": cc,
                        "place_type": "city",
                    }),
                );
            }
            None => {
                o.insert("coordinates".into(), Value::Null);
                o.insert("geo".into(), Value::Null);
                o.insert("place".into(), Value::Null);
            }
        }
        Value::Object(o)
    }

    /// Post `k` as one X API v1.1 JSON object (no line terminator).
    pub(crate) fn post_json(&self, k: u64) -> String {
        self.post_value(k).to_string()
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn post_text(seed: u64) -> String {
    let mut r = Rng::new(seed, D_POST, 2);
    let n = 3 + r.below(12);
    let mut s = String::new();
    for w in 0..n {
        if w > 0 {
            // Post text may contain a newline (never a carriage return).
            s.push(if r.chance(0.05) { '\n' } else { ' ' });
        }
        s.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// The 14 message types of docs/protocol.md, section 2.1, plus the
/// unknown type the generator sends now and then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    DeleteStatus,
    DeleteFavorite,
    StatusWithheld,
    Drop,
    Undrop,
    TweetEdit,
    ScrubGeo,
    UserDelete,
    UserUndelete,
    UserProtect,
    UserUnprotect,
    UserSuspend,
    UserUnsuspend,
    UserWithheld,
    /// A message type the documentation does not list (`user_verify`).
    Unknown,
}

impl EventKind {
    /// The 14 documented kinds, in the order of `MixConfig`'s fields.
    pub const DOCUMENTED: [EventKind; 14] = [
        EventKind::DeleteStatus,
        EventKind::DeleteFavorite,
        EventKind::StatusWithheld,
        EventKind::Drop,
        EventKind::Undrop,
        EventKind::TweetEdit,
        EventKind::ScrubGeo,
        EventKind::UserDelete,
        EventKind::UserUndelete,
        EventKind::UserProtect,
        EventKind::UserUnprotect,
        EventKind::UserSuspend,
        EventKind::UserUnsuspend,
        EventKind::UserWithheld,
    ];

    /// The top-level key of the message (`delete` for both delete kinds).
    pub fn wire_name(self) -> &'static str {
        match self {
            EventKind::DeleteStatus | EventKind::DeleteFavorite => "delete",
            EventKind::StatusWithheld => "status_withheld",
            EventKind::Drop => "drop",
            EventKind::Undrop => "undrop",
            EventKind::TweetEdit => "tweet_edit",
            EventKind::ScrubGeo => "scrub_geo",
            EventKind::UserDelete => "user_delete",
            EventKind::UserUndelete => "user_undelete",
            EventKind::UserProtect => "user_protect",
            EventKind::UserUnprotect => "user_unprotect",
            EventKind::UserSuspend => "user_suspend",
            EventKind::UserUnsuspend => "user_unsuspend",
            EventKind::UserWithheld => "user_withheld",
            EventKind::Unknown => "user_verify",
        }
    }
}

/// Up to three distinct country codes (indexes into `COUNTRIES`).
#[derive(Clone, Copy, Debug)]
struct Countries {
    n: u8,
    c: [u8; 3],
}

impl Countries {
    fn pick(r: &mut Rng) -> Countries {
        let n = 1 + r.below(3) as usize;
        let mut c = [0u8; 3];
        let mut got = 0;
        let mut tries = 0;
        while got < n && tries < 16 {
            tries += 1;
            let x = r.below(COUNTRIES.len() as u64) as u8;
            if !c[..got].contains(&x) {
                c[got] = x;
                got += 1;
            }
        }
        Countries { n: got as u8, c }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (k, &x) in self.c[..self.n as usize].iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(COUNTRIES[x as usize].as_bytes());
            out.push(b'"');
        }
        out.push(b']');
    }
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    /// delete / status_withheld / drop / undrop of a post.
    Status {
        id: u64,
        user: u64,
        countries: Option<Countries>,
    },
    Favorite {
        tweet: u64,
        user: u64,
    },
    Edit {
        ids: [u64; 4],
        n: u8,
    },
    ScrubGeo {
        user: u64,
        up_to: u64,
    },
    User {
        id: u64,
    },
    UserWithheld {
        id: u64,
        countries: Countries,
    },
    Unknown {
        id: u64,
    },
}

/// One generated event, ready to be written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub kind: EventKind,
    pub time_ms: i64,
    extra: bool,
    plan: Plan,
}

impl Event {
    /// The id that routes the event: the Post id for Post events, the user id
    /// for user events (and for scrub_geo).
    pub(crate) fn key(&self) -> u64 {
        match self.plan {
            Plan::Status { id, .. } => id,
            Plan::Favorite { tweet, .. } => tweet,
            Plan::Edit { ids, n } => ids[n as usize - 1],
            Plan::ScrubGeo { user, .. } => user,
            Plan::User { id } | Plan::UserWithheld { id, .. } | Plan::Unknown { id } => id,
        }
    }

    /// The partition (1..=8) the event is delivered on.
    pub(crate) fn partition(&self) -> u8 {
        partition_of(self.key())
    }

    /// Appends the message (without the `\r\n` terminator).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let t = self.time_ms;
        match self.plan {
            Plan::Status { id, user, countries } => {
                out.extend_from_slice(b"{\"");
                out.extend_from_slice(self.kind.wire_name().as_bytes());
                out.extend_from_slice(b"\":{\"status\":{\"id\":");
                push_js_number(out, id);
                out.extend_from_slice(b",\"id_str\":");
                push_quoted(out, id);
                out.extend_from_slice(b",\"user_id\":");
                push_js_number(out, user);
                out.extend_from_slice(b",\"user_id_str\":");
                push_quoted(out, user);
                out.push(b'}');
                if let Some(c) = countries {
                    out.extend_from_slice(b",\"withheld_in_countries\":");
                    c.write(out);
                }
                self.tail(out, t);
            }
            Plan::Favorite { tweet, user } => {
                out.extend_from_slice(b"{\"delete\":{\"favorite\":{\"tweet_id\":");
                push_js_number(out, tweet);
                out.extend_from_slice(b",\"tweet_id_str\":");
                push_quoted(out, tweet);
                out.extend_from_slice(b",\"user_id\":");
                push_js_number(out, user);
                out.extend_from_slice(b",\"user_id_str\":");
                push_quoted(out, user);
                out.push(b'}');
                self.tail(out, t);
            }
            Plan::Edit { ids, n } => {
                let ids = &ids[..n as usize];
                out.extend_from_slice(b"{\"tweet_edit\":{\"id\":");
                push_quoted(out, ids[ids.len() - 1]);
                out.extend_from_slice(b",\"initial_tweet_id\":");
                push_quoted(out, ids[0]);
                out.extend_from_slice(b",\"edit_tweet_ids\":[");
                for (k, &id) in ids.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    push_quoted(out, id);
                }
                out.push(b']');
                self.tail(out, t);
            }
            Plan::ScrubGeo { user, up_to } => {
                out.extend_from_slice(b"{\"scrub_geo\":{\"user_id\":");
                push_js_number(out, user);
                out.extend_from_slice(b",\"up_to_status_id\":");
                push_js_number(out, up_to);
                out.extend_from_slice(b",\"up_to_status_id_str\":");
                push_quoted(out, up_to);
                out.extend_from_slice(b",\"user_id_str\":");
                push_quoted(out, user);
                self.tail(out, t);
            }
            Plan::User { id } => {
                // User events carry only an exact numeric id.
                out.extend_from_slice(b"{\"");
                out.extend_from_slice(self.kind.wire_name().as_bytes());
                out.extend_from_slice(b"\":{\"id\":");
                push_u64(out, id);
                self.tail(out, t);
            }
            Plan::UserWithheld { id, countries } => {
                out.extend_from_slice(b"{\"user_withheld\":{\"user\":{\"id\":");
                push_js_number(out, id);
                out.extend_from_slice(b",\"id_str\":");
                push_quoted(out, id);
                out.extend_from_slice(b"},\"withheld_in_countries\":");
                countries.write(out);
                if self.extra {
                    out.extend_from_slice(b",\"source\":\"complyd-sim\"");
                }
                out.extend_from_slice(b",\"timestampMs\":\"");
                out.extend_from_slice(iso_millis(t).as_bytes());
                out.extend_from_slice(b"\"}}");
            }
            Plan::Unknown { id } => {
                out.extend_from_slice(b"{\"user_verify\":{\"id\":");
                push_u64(out, id);
                out.extend_from_slice(",\"note\":\"ünïcödé ✓ 日本語 🙂\",\"timestamp_ms\":\"".as_bytes());
                push_u64(out, t.max(0) as u64);
                out.extend_from_slice(b"\"}}");
            }
        }
    }

    /// `,"timestamp_ms":"T"}}` (plus the occasional unknown field).
    fn tail(&self, out: &mut Vec<u8>, t: i64) {
        if self.extra {
            out.extend_from_slice(b",\"source\":\"complyd-sim\"");
        }
        out.extend_from_slice(b",\"timestamp_ms\":\"");
        push_u64(out, t.max(0) as u64);
        out.extend_from_slice(b"\"}}");
    }
}

/// The partition (1..=8) of an id.
pub(crate) fn partition_of(id: u64) -> u8 {
    (id % 8) as u8 + 1
}

/// The event generator: event `i` (any `i64`, negative ones lie before the
/// epoch) is a pure function of the seed, the dataset size and the mix.
#[derive(Clone, Debug)]
pub(crate) struct Generator {
    seed: u64,
    ds: Dataset,
    epoch_ms: i64,
    step_ms: f64,
    cum: [u64; 14],
    total: u64,
    duplicate_ratio: f64,
    unknown_ratio: f64,
    extra_field_ratio: f64,
    dataset_ratio: f64,
    active_posts: u64,
}

impl Generator {
    pub(crate) fn new(seed: u64, posts: u64, rate: f64, epoch_ms: i64, g: &GeneratorConfig) -> Generator {
        let weights = g.mix.weights();
        let mut cum = [0u64; 14];
        let mut acc = 0u64;
        for (k, w) in weights.iter().enumerate() {
            acc += u64::from(*w);
            cum[k] = acc;
        }
        let rate = if rate > 0.0 { rate } else { NOMINAL_UNLIMITED_RATE };
        Generator {
            seed,
            ds: Dataset::new(seed, posts),
            epoch_ms,
            step_ms: 1000.0 / rate,
            cum,
            total: acc.max(1),
            duplicate_ratio: g.duplicate_ratio,
            unknown_ratio: g.unknown_ratio,
            extra_field_ratio: g.extra_field_ratio,
            dataset_ratio: g.dataset_ratio,
            active_posts: g.active_posts,
        }
    }

    pub(crate) fn epoch_ms(&self) -> i64 {
        self.epoch_ms
    }

    /// Event time of event `i`.
    #[inline]
    pub(crate) fn time_ms(&self, i: i64) -> i64 {
        self.epoch_ms.saturating_add((i as f64 * self.step_ms).floor() as i64)
    }

    /// The smallest index whose event time is `>= t`.
    pub(crate) fn first_index_at_or_after(&self, t: i64) -> i64 {
        let mut i = (t.saturating_sub(self.epoch_ms) as f64 / self.step_ms).ceil() as i64;
        for _ in 0..64 {
            if self.time_ms(i.saturating_sub(1)) >= t {
                i = i.saturating_sub(1);
            } else {
                break;
            }
        }
        for _ in 0..64 {
            if self.time_ms(i) < t {
                i = i.saturating_add(1);
            } else {
                break;
            }
        }
        i
    }

    /// Event `i`. A small share are exact copies of one of the 64 previous
    /// events (same bytes, same partition).
    pub(crate) fn event(&self, i: i64) -> Event {
        let mut r = Rng::new(self.seed, D_EVENT, i as u64);
        if r.chance(self.duplicate_ratio) {
            let d = 1 + r.below(64) as i64;
            let j = i.wrapping_sub(d);
            let mut r = Rng::new(self.seed, D_EVENT, j as u64);
            let _ = r.chance(self.duplicate_ratio);
            return self.base(j, r);
        }
        self.base(i, r)
    }

    fn base(&self, i: i64, mut r: Rng) -> Event {
        let t = self.time_ms(i).max(0);
        let unknown = r.chance(self.unknown_ratio);
        let extra = r.chance(self.extra_field_ratio);
        if unknown {
            let id = self.pick_user(&mut r);
            return Event { kind: EventKind::Unknown, time_ms: t, extra, plan: Plan::Unknown { id } };
        }
        let x = r.below(self.total);
        let k = self.cum.iter().position(|&c| x < c).unwrap_or(0);
        let kind = EventKind::DOCUMENTED[k];
        let plan = match kind {
            EventKind::DeleteStatus | EventKind::Drop | EventKind::Undrop => {
                let (id, user) = self.pick_post(&mut r, t);
                Plan::Status { id, user, countries: None }
            }
            EventKind::StatusWithheld => {
                let (id, user) = self.pick_post(&mut r, t);
                Plan::Status { id, user, countries: Some(Countries::pick(&mut r)) }
            }
            EventKind::DeleteFavorite => {
                let (tweet, _) = self.pick_post(&mut r, t);
                let user = self.pick_user(&mut r);
                Plan::Favorite { tweet, user }
            }
            EventKind::TweetEdit => {
                let (initial, _) = self.pick_post(&mut r, t - 3_600_000);
                let n = 2 + r.below(3) as usize;
                let mut ids = [0u64; 4];
                ids[0] = initial;
                for e in 1..n {
                    let at = t - (n - 1 - e) as i64 * 60_000;
                    let fresh = fresh_id(at, &mut r);
                    ids[e] = fresh.max(ids[e - 1] + 1 + r.below(1000));
                }
                Plan::Edit { ids, n: n as u8 }
            }
            EventKind::ScrubGeo => {
                if self.ds.posts() > 0 && r.chance(self.dataset_ratio) {
                    let m = self.ds.post(self.dataset_post(&mut r));
                    Plan::ScrubGeo { user: self.ds.user_id(m.author), up_to: m.id }
                } else {
                    let user = self.pick_user(&mut r);
                    Plan::ScrubGeo { user, up_to: fresh_id(t, &mut r) }
                }
            }
            EventKind::UserWithheld => {
                let id = self.pick_user(&mut r);
                Plan::UserWithheld { id, countries: Countries::pick(&mut r) }
            }
            _ => Plan::User { id: self.pick_user(&mut r) },
        };
        Event { kind, time_ms: t, extra, plan }
    }

    /// A post (and its author): mostly a dataset post, otherwise a recent
    /// post the dataset does not hold.
    fn pick_post(&self, r: &mut Rng, t: i64) -> (u64, u64) {
        if self.ds.posts() > 0 && r.chance(self.dataset_ratio) {
            let m = self.ds.post(self.dataset_post(r));
            (m.id, self.ds.user_id(m.author))
        } else {
            let id = fresh_id(t, r);
            let user = self.pick_user(r);
            (id, user)
        }
    }

    /// A dataset post (its index): any, or one of the `active_posts`
    /// spread evenly over the dataset.
    fn dataset_post(&self, r: &mut Rng) -> u64 {
        let posts = self.ds.posts();
        match self.active_posts {
            a if a > 0 && a < posts => r.below(a) * (posts / a),
            _ => r.below(posts),
        }
    }

    /// A user: mostly a dataset author (often one of the hot few, so the same
    /// users toggle their states over time), otherwise an unknown user.
    fn pick_user(&self, r: &mut Rng) -> u64 {
        if self.ds.posts() > 0 && r.chance(self.dataset_ratio) {
            // The author of a dataset post: prolific users come up often, and
            // the authors of the first posts (a few users) most of all.
            let posts = self.ds.posts();
            let k = if r.chance(0.6) { r.below(posts.min(HOT_POSTS)) } else { self.dataset_post(r) };
            self.ds.user_id(self.ds.post(k).author)
        } else if r.chance(0.2) {
            fresh_id(USERS_BASE_MS + r.below(250_000_000_000) as i64, r)
        } else {
            10_000_000 + r.below(4_000_000_000)
        }
    }
}

/// A snowflake id minted at time `t`.
fn fresh_id(t: i64, r: &mut Rng) -> u64 {
    let ms = (t - TWEPOCH_MS).max(1) as u64;
    (ms << 22) | r.below(1 << 22)
}

/// Appends `v` in decimal.
#[inline]
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut n = buf.len();
    loop {
        n -= 1;
        buf[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[n..]);
}

#[inline]
fn push_quoted(out: &mut Vec<u8>, v: u64) {
    out.push(b'"');
    push_u64(out, v);
    out.push(b'"');
}

/// Appends `v` the way a JavaScript number prints it: exact up to 2^53,
/// beyond that rounded to a double and printed with its shortest digits
/// padded with zeros (601430178305220608 prints as 601430178305220600).
#[inline]
pub(crate) fn push_js_number(out: &mut Vec<u8>, v: u64) {
    if v <= F64_EXACT_MAX {
        push_u64(out, v);
    } else {
        let _ = write!(out, "{}", v as f64);
    }
}

/// `2014-08-27T23:49:41.839+00:00`
pub(crate) fn iso_millis(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string(),
        None => "1970-01-01T00:00:00.000+00:00".to_string(),
    }
}

/// `2016-05-27T22:15:50+00:00`
pub(crate) fn iso_seconds(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
        None => "1970-01-01T00:00:00+00:00".to_string(),
    }
}

/// `Wed Oct 10 20:19:24 +0000 2018` (the v1.1 `created_at` format).
fn twitter_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(d) => d.format("%a %b %d %H:%M:%S +0000 %Y").to_string(),
        None => "Thu Jan 01 00:00:00 +0000 1970".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn generator(seed: u64) -> Generator {
        Generator::new(seed, 1000, 1000.0, 1_700_000_000_000, &GeneratorConfig::default())
    }

    fn line(g: &Generator, i: i64) -> String {
        let mut v = Vec::new();
        g.event(i).write(&mut v);
        String::from_utf8(v).expect("utf-8")
    }

    #[test]
    fn active_posts_bounds_the_dataset_posts_the_events_name() {
        let (posts, active) = (10_000, 100);
        let named = |active_posts: u64| {
            let g = Generator::new(
                4,
                posts,
                1000.0,
                1_700_000_000_000,
                &GeneratorConfig { active_posts, ..GeneratorConfig::default() },
            );
            let index: HashMap<u64, u64> = (0..posts).map(|k| (g.ds.post(k).id, k)).collect();
            let mut seen = HashSet::new();
            for i in 0..20_000 {
                if let Plan::Status { id, .. } | Plan::Favorite { tweet: id, .. } = g.event(i).plan {
                    seen.extend(index.get(&id).copied());
                }
            }
            seen
        };
        let few = named(active);
        // Spread over the whole dataset: every 100th post, the last ones too.
        assert!(few.iter().all(|k| k % (posts / active) == 0), "{few:?}");
        assert!(few.len() > 90 && few.len() <= active as usize, "{}", few.len());
        assert!(few.iter().any(|&k| k >= posts - posts / active));
        let all = named(0);
        assert!(all.len() > 5_000, "without the setting, any post: {}", all.len());
    }

    #[test]
    fn js_rounding_matches_the_documented_examples() {
        let mut v = Vec::new();
        push_js_number(&mut v, 601_430_178_305_220_608);
        assert_eq!(v, b"601430178305220600");
        v.clear();
        push_js_number(&mut v, 411_552_403_083_628_544);
        assert_eq!(v, b"411552403083628540");
        v.clear();
        push_js_number(&mut v, 3_198_576_760);
        assert_eq!(v, b"3198576760");
    }

    #[test]
    fn events_are_pure_functions_of_seed_and_index() {
        let a = generator(7);
        let b = generator(7);
        let c = generator(8);
        let mut differ = 0;
        for i in -50..500 {
            assert_eq!(line(&a, i), line(&b, i));
            if line(&a, i) != line(&c, i) {
                differ += 1;
            }
        }
        assert!(differ > 500, "other seeds must give other events ({differ})");
    }

    #[test]
    fn every_line_is_one_json_object_with_the_traps() {
        let g = generator(3);
        let mut kinds = HashSet::new();
        let mut rounded = 0;
        let mut seen: HashMap<String, i64> = HashMap::new();
        let mut dups = 0;
        for i in 0..20_000 {
            let ev = g.event(i);
            let l = line(&g, i);
            assert!(!l.contains('\r') && !l.contains('\n') && !l.contains('\t'), "{l}");
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let o = v.as_object().expect("object");
            assert_eq!(o.len(), 1, "{l}");
            let (name, inner) = o.iter().next().expect("one key");
            assert_eq!(name, ev.kind.wire_name());
            kinds.insert(ev.kind);
            if let Some(s) = inner.get("status") {
                let id_str: u64 = s["id_str"].as_str().unwrap().parse().unwrap();
                assert_eq!(partition_of(id_str), ev.partition());
                let raw = l.split("\"id\":").nth(1).unwrap().split(',').next().unwrap();
                if raw != id_str.to_string() {
                    rounded += 1;
                    assert!(id_str > F64_EXACT_MAX);
                }
            }
            if ev.kind == EventKind::UserWithheld {
                let ts = inner["timestampMs"].as_str().unwrap();
                assert!(ts.ends_with("+00:00") && ts.contains('T'), "{ts}");
                assert!(inner.get("timestamp_ms").is_none());
            } else {
                let ts = inner["timestamp_ms"].as_str().expect("timestamp_ms is a string");
                assert_eq!(ts.parse::<i64>().unwrap(), ev.time_ms);
            }
            if let Some(prev) = seen.insert(l.clone(), i) {
                assert!(i - prev <= 64);
                dups += 1;
            }
        }
        assert_eq!(kinds.len(), 15, "all 14 types plus unknown: {kinds:?}");
        assert!(rounded > 1000, "rounded ids: {rounded}");
        assert!(dups > 20, "duplicates: {dups}");
    }

    /// The daemon's parser reads every documented line the simulator sends
    /// (unknown fields included) on its fast path, to the same message as
    /// the reference parser; only the unknown type is left to serde.
    #[test]
    fn the_parser_s_fast_path_reads_every_documented_line() {
        let g = generator(5);
        let mut extra = 0;
        for i in 0..20_000 {
            let ev = g.event(i);
            let l = line(&g, i);
            let fast = crate::event::reads_fast(l.as_bytes());
            assert_eq!(fast, ev.kind != EventKind::Unknown, "{l}");
            let parsed = crate::event::parse_line(l.as_bytes());
            assert_eq!(parsed, crate::event::parse_with_serde(l.as_bytes()), "{l}");
            assert!(parsed.is_ok(), "{l}");
            extra += usize::from(ev.extra && fast);
        }
        assert!(extra > 50, "lines with an unknown field read fast: {extra}");
    }

    #[test]
    fn index_time_mapping_round_trips() {
        for rate in [0.3, 1.0, 7.0, 1000.0, 333_333.0] {
            let g = Generator::new(1, 10, rate, 1_700_000_000_123, &GeneratorConfig::default());
            for t in [1_700_000_000_000, 1_700_000_000_123, 1_700_000_060_000, 1_699_990_000_001] {
                let i = g.first_index_at_or_after(t);
                assert!(g.time_ms(i) >= t);
                assert!(g.time_ms(i - 1) < t);
            }
        }
    }

    #[test]
    fn dataset_is_prefix_stable_and_ids_are_unique() {
        let small = Dataset::new(9, 100);
        let big = Dataset::new(9, 10_000);
        let mut ids = HashSet::new();
        for k in 0..10_000 {
            let m = big.post(k);
            assert!(ids.insert(m.id));
            assert!(m.id > F64_EXACT_MAX);
            if k < 100 {
                assert_eq!(small.post_json(k), big.post_json(k));
            }
            if let Some(j) = m.retweet_of {
                assert!(j < k && big.post(j).retweet_of.is_none());
            }
        }
        let users: HashSet<u64> = (0..5_000).map(|u| big.user_id(u)).collect();
        assert_eq!(users.len(), 5_000);
    }
}
