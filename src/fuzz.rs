//! The properties the fuzz targets check, one function per target: bytes
//! in, a panic when an invariant breaks. `fuzz/fuzz_targets/*.rs` (cargo-fuzz,
//! its own workspace) call them, and so does the corpus replay below, which
//! runs every file of `tests/data/fuzz/<target>/` in `cargo test`. Built
//! only in tests and under `cfg(fuzzing)`, which cargo-fuzz sets.
//!
//! Each function drives the library through its public API, as the daemon
//! and the offline commands do; only [`parse_line`] also asks for the
//! reference parser's answer ([`event::parse_both_ways`]).

use crate::event::Id;
use crate::event::{self, Message, ParseErrorKind, StatusEvent, UserEvent, EVENT_TYPES};
use crate::framing::{Frame, LineFramer, OVERSIZED_HEAD};
use crate::inflate::Inflate;
use crate::post::{self, Form, ImportItem, NewPost};
use crate::rules::embedded::{self, Judge, Verdict};
use std::cell::RefCell;
use std::io::Write as _;

/// A target's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/` file and of its
/// corpus directories.
pub const TARGETS: [(&str, Check); 5] = [
    ("framer", framer),
    ("inflate", inflate),
    ("inflate_roundtrip", inflate_roundtrip),
    ("parse_line", parse_line),
    ("import_line", import_line),
];

/// A frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Line(Vec<u8>),
    Oversized { len: usize, head: Vec<u8> },
}

fn owned(f: Frame<'_>) -> Owned {
    match f {
        Frame::Line(l) => Owned::Line(l.to_vec()),
        Frame::Oversized { len, head } => Owned::Oversized { len, head: head.to_vec() },
    }
}

/// The `\r\n`-terminated lines of `input` (leftmost first) and what follows
/// the last one.
fn lines_of(input: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::new();
    let mut start = 0;
    for pos in memchr::memmem::find_iter(input, b"\r\n") {
        lines.push(&input[start..pos]);
        start = pos + 2;
    }
    (lines, &input[start..])
}

/// What the framer must hand out for one whole line.
fn check_frame(frame: &Owned, line: &[u8], max_line: usize) {
    match frame {
        Owned::Line(l) => {
            assert!(
                line.len() <= max_line,
                "a line of {} bytes over max_line {max_line} was not oversized",
                line.len()
            );
            assert_eq!(l, line, "a line changed on its way through the framer");
        }
        Owned::Oversized { len, head } => {
            assert!(line.len() > max_line, "a line of {} bytes within max_line {max_line} was oversized", line.len());
            assert_eq!(*len, line.len(), "an oversized line's length");
            assert!(line.starts_with(head), "an oversized line's head is not its first bytes");
            assert!(
                head.len() <= OVERSIZED_HEAD && head.len() >= OVERSIZED_HEAD.min(max_line + 1),
                "an oversized line's head has {} bytes (max_line {max_line})",
                head.len()
            );
        }
    }
}

/// `LineFramer`: the input (after 3 bytes choosing `max_line` and how many
/// chunk sizes follow) fed in chunks of those sizes.
///
/// Invariants: the frames are the input's `\r\n`-separated lines in order,
/// each whole (`Line`) when at most `max_line` bytes, else `Oversized` with
/// its exact length and a head of its first bytes, and the same frames
/// (heads included) whatever the chunking; `pending()` after each chunk is
/// the bytes since the last `\r\n`; at the end `take_rest` gives those bytes
/// unless they were too long to hold, and framing them again with `\r\n`
/// (as the replayer does) gives the frame of that line; `reset` forgets a
/// partial line, even one being discarded.
pub fn framer(data: &[u8]) {
    let Some((&[a, b, n], rest)) = data.split_first_chunk::<3>() else { return };
    let max_line = 1 + usize::from(u16::from_le_bytes([a, b])) % 512;
    let (sizes, input) = rest.split_at(usize::from(n % 16).min(rest.len()));
    let (lines, tail) = lines_of(input);

    let mut f = LineFramer::new(max_line);
    let mut got = Vec::new();
    // `boundary`: where the bytes after the last "\r\n" fed so far start.
    let (mut pos, mut boundary) = (0, 0);
    for s in sizes.iter().cycle() {
        if pos >= input.len() {
            break;
        }
        if *s == 0 {
            f.push(&[], |fr| got.push(owned(fr)));
        }
        let end = (pos + 1 + usize::from(*s)).min(input.len());
        f.push(&input[pos..end], |fr| got.push(owned(fr)));
        let from = pos.saturating_sub(1);
        if let Some(p) = memchr::memmem::rfind(&input[from..end], b"\r\n") {
            boundary = from + p + 2;
        }
        pos = end;
        assert_eq!(f.pending(), pos - boundary, "pending() after {pos} bytes");
    }
    f.push(&input[pos..], |fr| got.push(owned(fr)));

    let mut whole = Vec::new();
    let mut w = LineFramer::new(max_line);
    w.push(input, |fr| whole.push(owned(fr)));
    assert_eq!(got, whole, "the frames depend on the chunking");
    assert_eq!(got.len(), lines.len(), "one frame per line");
    for (frame, line) in got.iter().zip(&lines) {
        check_frame(frame, line, max_line);
    }

    assert_eq!(f.pending(), tail.len(), "pending() at the end");
    let rest = f.take_rest();
    let held = !tail.is_empty() && tail.len() <= max_line + 1;
    assert_eq!(rest.as_deref(), held.then_some(tail), "take_rest()");
    assert_eq!(f.pending(), 0, "pending() after take_rest()");
    if let Some(mut r) = rest {
        r.extend_from_slice(b"\r\n");
        let mut again = Vec::new();
        f.push(&r, |fr| again.push(owned(fr)));
        assert_eq!(again.len(), 1, "the rest framed again");
        check_frame(&again[0], tail, max_line);
    }

    w.reset();
    w.push(input, |_| {});
    w.reset();
    assert_eq!(w.pending(), 0, "pending() after reset()");
    let mut after = Vec::new();
    w.push(b"\r\n", |fr| after.push(owned(fr)));
    assert_eq!(after, [Owned::Line(Vec::new())], "a line after reset()");
}

/// Bytes decoded past this are not kept (a gzip bomb): the comparisons stop.
const MAX_DECODED: usize = 16 << 20;

/// The piece size a byte chooses: 1 to 8,129 bytes, small ones more often
/// (the daemon reads 8 KiB pieces).
fn piece_size(b: u8) -> usize {
    1 + usize::from(b) * usize::from(b) / 8
}

/// Decodes `input` in pieces of `piece` bytes, then finishes: all decoded
/// bytes, or `Err` (with what was decoded before the error); `None` once
/// more than `MAX_DECODED` bytes came out.
fn gunzip(input: &[u8], piece: usize) -> Option<Result<Vec<u8>, Vec<u8>>> {
    let mut inf = Inflate::gzip();
    let mut out = Vec::new();
    let mut all = Vec::new();
    for c in input.chunks(piece) {
        let res = inf.decode(c, &mut out);
        all.extend_from_slice(&out);
        if all.len() > MAX_DECODED {
            return None;
        }
        if res.is_err() {
            return Some(Err(all));
        }
    }
    let res = inf.finish(&mut out);
    all.extend_from_slice(&out);
    Some(if res.is_ok() { Ok(all) } else { Err(all) })
}

/// `Inflate` on arbitrary bytes (after one byte choosing the piece size).
///
/// Invariants: no panic; whether the body decodes, and to what, does not
/// depend on the pieces it comes in; identity hands the bytes on as they are.
pub fn inflate(data: &[u8]) {
    let Some((&p, input)) = data.split_first() else { return };
    let (Some(pieces), Some(whole)) = (gunzip(input, piece_size(p)), gunzip(input, input.len().max(1))) else {
        return;
    };
    assert_eq!(pieces.is_ok(), whole.is_ok(), "decoding succeeds or fails whatever the pieces");
    if let (Ok(a), Ok(b)) = (&pieces, &whole) {
        assert!(a == b, "the decoded bytes depend on the pieces");
    }

    let mut id = Inflate::identity();
    let mut out = Vec::new();
    let mut all = Vec::new();
    for c in input.chunks(piece_size(p)) {
        id.decode(c, &mut out).expect("identity never fails");
        all.extend_from_slice(&out);
    }
    id.finish(&mut out).expect("identity never fails");
    assert!(out.is_empty() && all == input, "identity changed the bytes");
}

/// `Inflate` on real gzip: the payload (after 4 bytes choosing the level,
/// the piece size, a second member and a cut) compressed, as one member or
/// two, then decoded whole and cut short.
///
/// Invariants: the whole body decodes to the payload whatever the pieces;
/// a body cut anywhere decodes to a prefix of the payload, and `finish`
/// accepts it only when the cut falls between two members (an empty body
/// is refused too).
pub fn inflate_roundtrip(data: &[u8]) {
    let Some((&[level, p, split, cut], payload)) = data.split_first_chunk::<4>() else { return };
    let level = flate2::Compression::new(u32::from(level % 10));
    let at = if split & 1 == 1 { usize::from(split) * payload.len() / 256 } else { payload.len() };
    let mut gz = Vec::new();
    let mut ends = Vec::new();
    for part in [&payload[..at], &payload[at..]] {
        if part.is_empty() && !ends.is_empty() {
            continue;
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
        enc.write_all(part).expect("compress in memory");
        gz.extend_from_slice(&enc.finish().expect("compress in memory"));
        ends.push(gz.len());
    }
    let piece = piece_size(p);
    match gunzip(&gz, piece) {
        Some(Ok(d)) => assert!(d == payload, "the decoded bytes differ from the payload"),
        Some(Err(_)) => panic!("a whole gzip body failed to decode ({} bytes, pieces of {piece})", gz.len()),
        None => unreachable!("payloads are shorter than MAX_DECODED"),
    }

    let cut = usize::from(cut) * gz.len() / 256;
    let decoded = gunzip(&gz[..cut], piece).expect("payloads are shorter than MAX_DECODED");
    let (Ok(d) | Err(d)) = &decoded;
    assert!(payload.starts_with(d), "a cut body decoded to bytes that are not the payload's first ones");
    if decoded.is_ok() {
        assert!(ends.contains(&cut), "a body cut at {cut} of {} was accepted as complete", gz.len());
    }
}

/// `event::parse_line` on arbitrary bytes.
///
/// Invariants: no panic; the answer is the reference parser's, and so is
/// the fast path's whenever it reads the line; a heartbeat is a blank line;
/// an event's type name and index agree, its countries and edit ids are
/// sorted and distinct, its country codes two uppercase letters; the parser
/// never answers `oversized` (the framer's reason).
pub fn parse_line(data: &[u8]) {
    let got = event::parse_line(data);
    let (fast, reference) = event::parse_both_ways(data);
    if let Some(fast) = fast {
        assert_eq!(fast, reference, "the fast path disagrees with serde");
    }
    assert_eq!(got, reference, "parse_line disagrees with serde");
    let countries_ok = |c: &[event::Country]| {
        c.windows(2).all(|w| w[0] < w[1])
            && c.iter().all(|c| c.as_str().len() == 2 && c.as_str().bytes().all(|b| b.is_ascii_uppercase()))
    };
    match &got {
        Ok(Message::Heartbeat) => assert!(data.iter().all(u8::is_ascii_whitespace), "a heartbeat that is not blank"),
        Ok(Message::Event(e)) => {
            assert_eq!(EVENT_TYPES[e.type_index()], e.type_name(), "type_index and type_name");
            match &e.kind {
                event::EventKind::Status(StatusEvent::Withheld(w)) => {
                    assert!(countries_ok(&w.countries), "countries {:?}", w.countries);
                }
                event::EventKind::User(UserEvent::Withheld { countries, .. }) => {
                    assert!(countries_ok(countries), "countries {countries:?}");
                }
                event::EventKind::Status(StatusEvent::Edit(e)) => {
                    let ids = &e.edit_ids;
                    assert!(!ids.is_empty(), "an edit without edit ids");
                    assert!(ids.windows(2).all(|w| w[0] < w[1]), "edit ids {ids:?}");
                }
                _ => {}
            }
        }
        Ok(Message::Unknown { kind }) => assert!(kind.len() <= 64, "an unknown type name of {} bytes", kind.len()),
        Ok(Message::Error(_) | Message::Info(_)) => {}
        Err(e) => assert_ne!(e.kind, ParseErrorKind::Oversized, "the parser answered oversized"),
    }
}

/// `post::parse_import_line` on arbitrary text (`import` dead-letters a line
/// that is not UTF-8 before it gets here).
///
/// Invariants: no panic; a blank line stores nothing; otherwise the line's
/// own post comes last, as `TopLevel`, with the line as its JSON, after its
/// embedded posts (`Embedded`), each a piece of the line and listed in the
/// post's `embeds`. For each post stored: every post and user the answers
/// judge in its JSON (`rules::embedded::filter`) is listed in its `embeds`,
/// or an unreadable one (0) is, which makes every answer edit it; so is a 0
/// when the answers cut something without judging it (an id they cannot
/// read, a copy too deep). And `post::edit_tree`, which reads only the
/// members a removal may touch, leaves what editing the whole tree leaves.
/// With everything withdrawn, nothing import lists is left.
pub fn import_line(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(ImportItem::Posts(posts)) = post::parse_import_line(line) else { return };
    let Some((own, embedded)) = posts.split_last() else {
        assert!(line.trim().is_empty(), "a line that is not blank stored nothing");
        return;
    };
    assert_eq!(own.form, Form::TopLevel, "the line's own post");
    assert_eq!(own.json, line, "the line's own post keeps the line");
    for e in embedded {
        assert_eq!(e.form, Form::Embedded, "post {} before the line's own", e.id);
        assert!(line.contains(&e.json), "embedded post {}'s JSON is not a piece of the line", e.id);
        assert!(own.embeds.posts.contains(&e.id), "embedded post {} not in embeds {:?}", e.id, own.embeds);
    }
    for p in &posts {
        check_listed(p);
        check_withdrawn(p);
        check_edit(&p.json);
    }
}

/// Shows every post and user, and writes down which it was asked about.
#[derive(Default)]
struct Asked {
    posts: RefCell<Vec<Id>>,
    users: RefCell<Vec<Id>>,
}

impl Judge for Asked {
    fn post(&self, id: Id) -> Verdict {
        self.posts.borrow_mut().push(id);
        Verdict::Show
    }
    fn user(&self, id: Id) -> bool {
        self.users.borrow_mut().push(id);
        true
    }
}

/// Hides every post and user.
struct Everything;

impl Judge for Everything {
    fn post(&self, _: Id) -> Verdict {
        Verdict::Hide
    }
    fn user(&self, _: Id) -> bool {
        false
    }
}

/// With every post and user withdrawn, the answers leave nothing in `p`'s
/// JSON that import would list as a copy or a profile (an unreadable 0
/// aside): what they do not judge, they do not cut.
fn check_withdrawn(p: &NewPost) {
    let Some(mut tree) = post::json_tree(&p.json) else { return };
    embedded::filter(&mut tree, &Everything);
    let Ok(Some(left)) = post::parse_post_line(&tree.to_string()).map(|mut posts| posts.pop()) else { return };
    let carried = left.embeds.posts.iter().chain(&left.embeds.users).any(|id| *id != 0);
    assert!(!carried, "post {}: {:?} left with everything withdrawn: {tree}", p.id, left.embeds);
}

/// Every verdict, by the id's remainder.
struct Mixed;

impl Judge for Mixed {
    fn post(&self, id: Id) -> Verdict {
        [Verdict::Hide, Verdict::ShowWithoutGeo, Verdict::Show][(id % 3) as usize]
    }
    fn user(&self, id: Id) -> bool {
        id % 2 == 0
    }
}

/// What the answers judge or cut in `p`'s JSON is what its `embeds` list
/// (see [`import_line`]).
fn check_listed(p: &NewPost) {
    let Some(mut tree) = post::json_tree(&p.json) else { return };
    let asked = Asked::default();
    let cut = embedded::filter(&mut tree, &asked);
    let zero = p.embeds.posts.contains(&0) || p.embeds.users.contains(&0);
    assert!(!cut || zero, "post {}: the answers cut what no id in {:?} makes them edit", p.id, p.embeds);
    for id in asked.posts.into_inner() {
        assert!(zero || p.embeds.posts.contains(&id), "post {}: copy {id} judged, not in {:?}", p.id, p.embeds);
    }
    for id in asked.users.into_inner() {
        assert!(zero || p.embeds.users.contains(&id), "post {}: user {id} judged, not in {:?}", p.id, p.embeds);
    }
}

/// [`post::edit_tree`] leaves what editing the whole tree leaves.
fn check_edit(json: &str) {
    let edit = |v: &mut serde_json::Value| post::remove_own_geo(v) | embedded::filter(v, &Mixed);
    let whole = post::json_tree(json).map(|mut v| (edit(&mut v), v));
    match (post::edit_tree(json, edit), whole) {
        (post::Edited::Unreadable, Some(_)) => panic!("read whole, but not in part: {json}"),
        (post::Edited::Unchanged, Some((changed, _))) => assert!(!changed, "changed whole, not in part: {json}"),
        (post::Edited::Changed(edited), Some((changed, v))) => {
            assert!(changed, "changed in part, not whole: {json}");
            let part = post::json_tree(&edited).expect("edit_tree writes JSON");
            assert!(same(&part, &v), "{json}\npart: {part}\nwhole: {v}");
        }
        (_, None) => {}
    }
}

/// Equal trees, numbers within a float's rounding: serde_json reads a long
/// number differently as written and as it writes it back.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, v), (l, w))| k == l && same(v, w))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
        (Value::Number(x), Value::Number(y)) if x != y => match (x.as_f64(), y.as_f64()) {
            (Some(f), Some(g)) => (f - g).abs() <= f.abs().max(g.abs()) * 1e-12,
            _ => false,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::TARGETS;
    use std::path::{Path, PathBuf};

    /// Minimized crashes and a few interesting inputs of the fuzz runs, one
    /// directory per target (RELIABILITY.md, "Fuzzing").
    const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz");

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_fuzz_corpus_file_replays_with_its_invariants() {
        let mut failed = Vec::new();
        for (name, check) in TARGETS {
            let dir = Path::new(CORPUS).join(name);
            let files = files(&dir);
            assert!(!files.is_empty(), "{} holds no corpus file", dir.display());
            for f in files {
                let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failed.push(f.display().to_string());
                }
            }
        }
        assert!(failed.is_empty(), "invariants broken by {failed:#?}");
    }

    #[test]
    fn every_target_has_a_corpus_directory_and_a_fuzz_target() {
        let targets = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/fuzz_targets");
        let mut names: Vec<String> = files(Path::new(targets))
            .iter()
            .map(|p| p.file_stem().expect("a file name").to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut ours: Vec<&str> = TARGETS.iter().map(|t| t.0).collect();
        ours.sort_unstable();
        assert_eq!(names, ours, "fuzz/fuzz_targets/ and fuzz::TARGETS");
    }
}
