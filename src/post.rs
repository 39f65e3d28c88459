//! Posts as they are imported into the dataset: X API v1.1 / enterprise
//! "original format" objects, and X API v2 objects (wrapped in `{"data":...}`
//! or bare). A retweet carries its original embedded; importing it stores both.

use crate::event::{parse_id_str, Id, ParseError, ParseErrorKind};
use serde::Deserialize;
use serde_json::value::RawValue;

/// One post ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub id: Id,
    pub author_id: Id,
    /// The post this one retweets, if it is a retweet.
    pub retweet_of: Option<Id>,
    /// The JSON holds geo data (`coordinates`, `geo` or `place`, here or in
    /// the embedded original).
    pub has_geo: bool,
    /// The original JSON object, byte for byte.
    pub json: String,
}

#[derive(Deserialize)]
struct IdAny(#[serde(deserialize_with = "de_id")] Id);

fn de_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| D::Error::custom(format!("bad_id: id {n} is not an unsigned integer"))),
        serde_json::Value::String(s) => parse_id_str(s).map_err(|e| D::Error::custom(e.to_string())),
        _ => Err(D::Error::custom("bad_id: id is neither a number nor a string")),
    }
}

#[derive(Deserialize)]
struct UserRef {
    id: Option<IdAny>,
    id_str: Option<IdAny>,
}

#[derive(Deserialize)]
struct RefTweet {
    #[serde(rename = "type")]
    kind: String,
    id: IdAny,
}

/// The fields of either format that import needs. Sub-objects are kept raw.
#[derive(Deserialize)]
struct WirePost<'a> {
    // v1.1
    id: Option<IdAny>,
    id_str: Option<IdAny>,
    user: Option<UserRef>,
    #[serde(borrow)]
    retweeted_status: Option<&'a RawValue>,
    #[serde(borrow)]
    coordinates: Option<&'a RawValue>,
    #[serde(borrow)]
    place: Option<&'a RawValue>,
    // both
    #[serde(borrow)]
    geo: Option<&'a RawValue>,
    // v2
    author_id: Option<IdAny>,
    referenced_tweets: Option<Vec<RefTweet>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    includes: Option<Includes<'a>>,
    // complyd's like record: {"like":{"user_id":"..","tweet_id":".."}}
    like: Option<LikeRef>,
}

#[derive(Deserialize)]
struct LikeRef {
    user_id: IdAny,
    tweet_id: IdAny,
}

/// A like: user `user_id` liked post `post_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLike {
    pub user_id: Id,
    pub post_id: Id,
}

/// What one import line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportItem {
    /// A post, and the original it retweets first when it is a retweet.
    Posts(Vec<NewPost>),
    Like(NewLike),
}

/// Parses one import line: a post (see [`parse_post_line`]) or a like record
/// `{"like":{"user_id":"..","tweet_id":".."}}`.
///
/// # Errors
/// As [`parse_post_line`].
pub fn parse_import_line(line: &str) -> Result<ImportItem, ParseError> {
    if line.trim_start().starts_with("{\"like\"") {
        let w: WirePost = serde_json::from_str(line).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
        if let Some(l) = w.like {
            return Ok(ImportItem::Like(NewLike { user_id: l.user_id.0, post_id: l.tweet_id.0 }));
        }
    }
    parse_post_line(line).map(ImportItem::Posts)
}

#[derive(Deserialize)]
struct Includes<'a> {
    #[serde(borrow, default)]
    tweets: Vec<&'a RawValue>,
}

fn is_present(v: Option<&RawValue>) -> bool {
    matches!(v, Some(r) if r.get() != "null" && r.get() != "{}" && r.get() != "[]")
}

fn bad(kind: ParseErrorKind, detail: impl Into<String>) -> ParseError {
    ParseError::new(kind, detail)
}

/// Parses one import line into the posts it stores: the post itself and, for
/// a retweet, the original embedded in it (first the original, then the
/// retweet). A blank line gives nothing.
///
/// # Errors
/// A [`ParseError`] when the line is not JSON, or lacks an id or author.
pub fn parse_post_line(line: &str) -> Result<Vec<NewPost>, ParseError> {
    if line.trim().is_empty() {
        return Ok(Vec::new());
    }
    let wire: WirePost = serde_json::from_str(line).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data if e.to_string().starts_with("bad_id") => ParseErrorKind::BadId,
            serde_json::error::Category::Data => ParseErrorKind::BadPayload,
            _ => ParseErrorKind::InvalidJson,
        };
        bad(kind, e.to_string())
    })?;
    let mut out = Vec::with_capacity(2);
    if let Some(data) = wire.data {
        // v2 wrapped: {"data":{...},"includes":{"tweets":[...]}}
        let inner: WirePost = serde_json::from_str(data.get()).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
        let post = v2_post(&inner, line)?;
        if let Some(q) = post.retweet_of {
            for t in wire.includes.iter().flat_map(|i| i.tweets.iter()) {
                let inc: WirePost = serde_json::from_str(t.get()).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
                if inc.id.as_ref().map(|i| i.0) == Some(q) {
                    out.push(v2_post(&inc, t.get())?);
                }
            }
        }
        out.push(post);
        return Ok(out);
    }
    if wire.author_id.is_some() && wire.user.is_none() {
        out.push(v2_post(&wire, line)?);
        return Ok(out);
    }
    // v1.1 / original format.
    let mut post = v1_post(&wire, line)?;
    if let Some(rt) = wire.retweeted_status {
        let orig: WirePost = serde_json::from_str(rt.get()).map_err(|e| bad(ParseErrorKind::BadPayload, e.to_string()))?;
        let original = v1_post(&orig, rt.get())?;
        post.retweet_of = Some(original.id);
        post.has_geo |= original.has_geo;
        out.push(original);
    }
    out.push(post);
    Ok(out)
}

fn v1_post(w: &WirePost, json: &str) -> Result<NewPost, ParseError> {
    let id = w
        .id_str
        .as_ref()
        .or(w.id.as_ref())
        .map(|i| i.0)
        .ok_or_else(|| bad(ParseErrorKind::MissingField, "post has no id_str or id"))?;
    let author_id = w
        .user
        .as_ref()
        .and_then(|u| u.id_str.as_ref().or(u.id.as_ref()))
        .map(|i| i.0)
        .ok_or_else(|| bad(ParseErrorKind::MissingField, format!("post {id} has no user.id_str")))?;
    let has_geo = is_present(w.coordinates) || is_present(w.geo) || is_present(w.place);
    Ok(NewPost { id, author_id, retweet_of: None, has_geo, json: json.to_owned() })
}

fn v2_post(w: &WirePost, json: &str) -> Result<NewPost, ParseError> {
    let id = w.id.as_ref().map(|i| i.0).ok_or_else(|| bad(ParseErrorKind::MissingField, "v2 post has no id"))?;
    let author_id = w
        .author_id
        .as_ref()
        .map(|i| i.0)
        .ok_or_else(|| bad(ParseErrorKind::MissingField, format!("v2 post {id} has no author_id")))?;
    let retweet_of =
        w.referenced_tweets.iter().flatten().find(|r| r.kind == "retweeted").map(|r| r.id.0);
    Ok(NewPost { id, author_id, retweet_of, has_geo: is_present(w.geo), json: json.to_owned() })
}

/// Which geo data to remove from a stored JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoScrub {
    /// The post's own geo (`coordinates`, `geo`, `place`; v2 `data.geo` and
    /// `includes.places`).
    pub own: bool,
    /// The geo of the original embedded in a retweet (`retweeted_status`).
    pub embedded: bool,
}

const GEO_KEYS: [&str; 3] = ["coordinates", "geo", "place"];

/// Returns `json` without the geo data `scrub` names. Unparseable JSON (which
/// import never stores) is returned unchanged.
pub fn strip_geo(json: &str, scrub: GeoScrub) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    fn strip_obj(v: &mut serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            for k in GEO_KEYS {
                o.shift_remove(k);
            }
        }
    }
    if scrub.own {
        strip_obj(&mut v);
        if let Some(data) = v.get_mut("data") {
            strip_obj(data);
        }
        if let Some(inc) = v.get_mut("includes").and_then(|i| i.as_object_mut()) {
            inc.shift_remove("places");
        }
    }
    if scrub.embedded {
        if let Some(rt) = v.get_mut("retweeted_status") {
            strip_obj(rt);
        }
        if let Some(tweets) = v.pointer_mut("/includes/tweets").and_then(|t| t.as_array_mut()) {
            for t in tweets {
                strip_obj(t);
            }
        }
    }
    serde_json::to_string(&v).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_post_prefers_id_str_and_finds_geo() {
        let line = r#"{"id":1557445923210514400,"id_str":"1557445923210514432","user":{"id":5,"id_str":"5"},"text":"hi\nthere","coordinates":{"type":"Point","coordinates":[1,2]},"geo":null,"place":null}"#;
        let posts = parse_post_line(line).unwrap();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].id, 1557445923210514432);
        assert_eq!(posts[0].author_id, 5);
        assert!(posts[0].has_geo);
        assert_eq!(posts[0].json, line);
    }

    #[test]
    fn v1_retweet_stores_the_embedded_original_too() {
        let line = r#"{"id_str":"20","user":{"id_str":"2"},"retweeted_status":{"id_str":"10","user":{"id_str":"1"},"place":{"name":"Oslo"}}}"#;
        let posts = parse_post_line(line).unwrap();
        assert_eq!(posts.len(), 2);
        assert_eq!((posts[0].id, posts[0].author_id, posts[0].retweet_of, posts[0].has_geo), (10, 1, None, true));
        assert_eq!((posts[1].id, posts[1].author_id, posts[1].retweet_of), (20, 2, Some(10)));
        assert_eq!(posts[0].json, r#"{"id_str":"10","user":{"id_str":"1"},"place":{"name":"Oslo"}}"#);
    }

    #[test]
    fn v2_wrapped_and_bare() {
        let wrapped = r#"{"data":{"id":"30","author_id":"3","text":"x","referenced_tweets":[{"type":"retweeted","id":"10"}]},"includes":{"tweets":[{"id":"10","author_id":"1","geo":{"place_id":"p"}}]}}"#;
        let posts = parse_post_line(wrapped).unwrap();
        assert_eq!(posts.len(), 2);
        assert_eq!((posts[0].id, posts[0].author_id, posts[0].has_geo), (10, 1, true));
        assert_eq!((posts[1].id, posts[1].author_id, posts[1].retweet_of), (30, 3, Some(10)));
        let bare = r#"{"id":"31","author_id":"3","geo":{"place_id":"p"}}"#;
        let posts = parse_post_line(bare).unwrap();
        assert_eq!((posts[0].id, posts[0].has_geo, posts[0].retweet_of), (31, true, None));
    }

    #[test]
    fn bad_posts_are_errors() {
        assert_eq!(parse_post_line("{nope").unwrap_err().kind, ParseErrorKind::InvalidJson);
        assert_eq!(parse_post_line(r#"{"id_str":"1"}"#).unwrap_err().kind, ParseErrorKind::MissingField);
        assert_eq!(parse_post_line(r#"{"id_str":"x1","user":{"id":1}}"#).unwrap_err().kind, ParseErrorKind::BadId);
        assert!(parse_post_line("  ").unwrap().is_empty());
    }

    #[test]
    fn strip_geo_removes_only_what_is_asked_and_keeps_key_order() {
        let line = r#"{"id_str":"20","coordinates":[1],"user":{"id_str":"2"},"retweeted_status":{"id_str":"10","geo":{"a":1},"place":{"b":2}}}"#;
        let own = strip_geo(line, GeoScrub { own: true, embedded: false });
        assert_eq!(own, r#"{"id_str":"20","user":{"id_str":"2"},"retweeted_status":{"id_str":"10","geo":{"a":1},"place":{"b":2}}}"#);
        let emb = strip_geo(line, GeoScrub { own: false, embedded: true });
        assert_eq!(emb, r#"{"id_str":"20","coordinates":[1],"user":{"id_str":"2"},"retweeted_status":{"id_str":"10"}}"#);
    }
}
