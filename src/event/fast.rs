//! The parser's fast path: one pass over the bytes for the shapes the
//! stream carries nearly always, filling the same wire structures the serde
//! path fills, so that [`RawMessage::into_message`] (every rule about
//! required fields and `*_str` precedence) is shared by both.
//!
//! It accepts a line only when it is certain the serde path would read the
//! same thing: a JSON object with exactly one key, a compliance message type,
//! whose payload uses only the fields we know (plus unknown fields with
//! simple values), strings of printable ASCII without escapes, integers
//! without sign, fraction or exponent that fit their type, no `null`, no
//! known key twice. Anything else, well-formed or not, returns `None` and
//! goes to the serde path, which is the reference and the only source of
//! syntax and value errors. `tests` (and `sim::gen`'s) check the two agree
//! on a corpus, on random corruptions of it, and on every line the
//! simulator writes.
//!
//! Why by hand: serde_json spends ~580 ns on a typical 150-byte line here
//! (validating and copying strings, generic visitor dispatch), which was the
//! largest cost of the daemon's stream threads; this path parses ~3 times
//! as many lines a second (BENCHMARKS.md, "Parser fast path, a page cache
//! per connection, user rows in place").

use super::{
    parse_time_str, Country, RawMessage, UserKind, WireCountries, WireDelete, WireEdit, WireFavoriteRef, WireId,
    WireStatusEvent, WireStatusRef, WireTime, WireUserEvent, WireUserRef,
};

/// The line as the serde path would read it, or `None` when this path is
/// not certain of that.
pub(super) fn parse(line: &[u8]) -> Option<RawMessage> {
    let mut c = Cursor { b: line, i: 0 };
    c.eat(b'{')?;
    let key = c.string()?;
    c.eat(b':')?;
    let raw = match key {
        b"delete" => RawMessage::Delete(c.delete()?),
        b"status_withheld" => RawMessage::StatusWithheld(c.status_event()?),
        b"drop" => RawMessage::Drop(c.status_event()?),
        b"undrop" => RawMessage::Undrop(c.status_event()?),
        b"tweet_edit" => RawMessage::Edit(c.edit()?),
        other => RawMessage::User(UserKind::from_name(std::str::from_utf8(other).ok()?)?, c.user_event()?),
    };
    c.eat(b'}')?;
    c.ws();
    (c.i == c.b.len()).then_some(raw)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

/// Sets a field seen for the first time (serde refuses a key given twice).
fn set<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

impl<'a> Cursor<'a> {
    /// Skips JSON white space.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after white space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        if self.peek()? != byte {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// A string of printable ASCII without escapes (so valid UTF-8).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => return None,
                0x20..=0x7e => self.i += 1,
                _ => return None,
            }
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Some(s)
    }

    /// A JSON integer without sign, fraction or exponent that fits in `u64`.
    fn unsigned(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let v = self.digits()?;
        // JSON forbids leading zeros; a fraction or an exponent makes a float.
        if (self.i - start > 1 && self.b[start] == b'0') || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }

    /// A run of at least one ASCII digit, as a `u64` (`None` on overflow).
    fn digits(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        // Eight digits at a time while eight are there (ids have 10 to 20,
        // times 13): the parser reads 9 % more lines a second (BENCHMARKS.md,
        // "Eight digits at a time"). Two runs at most: 16 digits cannot
        // overflow, and the loop below counts the rest.
        while self.i - start < 16 {
            let Some(eight) = self.b.get(self.i..self.i + 8).and_then(eight_digits) else {
                break;
            };
            v = v * 100_000_000 + eight;
            self.i += 8;
        }
        while let Some(&d) = self.b.get(self.i) {
            let x = d.wrapping_sub(b'0');
            if x > 9 {
                break;
            }
            // Up to 19 digits cannot overflow (10^19 - 1 < 2^64 - 1); a
            // longer run is redone with checks below.
            v = v.wrapping_mul(10).wrapping_add(u64::from(x));
            self.i += 1;
        }
        match self.i - start {
            0 => None,
            1..=19 => Some(v),
            _ => decimal(&self.b[start..self.i]),
        }
    }

    /// An id as a number or a decimal string (`WireId`'s accepted forms).
    fn id(&mut self) -> Option<WireId> {
        if self.peek()? == b'"' {
            self.i += 1;
            let v = self.digits()?;
            self.literal(b"\"")?;
            Some(WireId(v))
        } else {
            self.unsigned().map(WireId)
        }
    }

    /// An event time (`WireTime`'s accepted forms).
    fn time(&mut self) -> Option<WireTime> {
        if self.peek()? != b'"' {
            return self.unsigned().and_then(|v| i64::try_from(v).ok()).map(WireTime::At);
        }
        let start = self.i;
        self.i += 1;
        if let Some(ms) = self.digits() {
            if self.literal(b"\"").is_some() {
                return i64::try_from(ms).ok().map(WireTime::At);
            }
        }
        // ISO-8601 (or anything else, which serde reports).
        self.i = start;
        let s = self.string()?;
        parse_time_str(std::str::from_utf8(s).ok()?).ok().map(WireTime::At)
    }

    /// `[v, ...]`, each element read by `item`.
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.eat(b'[')?;
        let mut out = Vec::with_capacity(4);
        if self.peek()? == b']' {
            self.i += 1;
            return Some(out);
        }
        loop {
            out.push(item(self)?);
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    fn countries(&mut self) -> Option<WireCountries> {
        let codes = self.array(|c| match c.string()? {
            [a, b] => Country::parse(std::str::from_utf8(&[*a, *b]).ok()?).ok(),
            _ => None,
        })?;
        Some(WireCountries::from_codes(codes))
    }

    /// `{"key": value, ...}`, each value read by `field` (which returns
    /// `None` to give up).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The value of a field we do not know, when it is simple (serde
    /// ignores it): a string as [`Cursor::string`], an integer as
    /// [`Cursor::unsigned`], `true` or `false`.
    fn skip_unknown(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            _ => self.unsigned().map(drop),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    fn status_ref(&mut self) -> Option<WireStatusRef> {
        let mut r = WireStatusRef::default();
        self.object(|c, key| match key {
            b"id" => set(&mut r.id, c.id()),
            b"id_str" => set(&mut r.id_str, c.id()),
            b"user_id" => set(&mut r.user_id, c.id()),
            b"user_id_str" => set(&mut r.user_id_str, c.id()),
            _ => c.skip_unknown(),
        })?;
        Some(r)
    }

    fn favorite_ref(&mut self) -> Option<WireFavoriteRef> {
        let mut r = WireFavoriteRef::default();
        self.object(|c, key| match key {
            b"tweet_id" => set(&mut r.tweet_id, c.id()),
            b"tweet_id_str" => set(&mut r.tweet_id_str, c.id()),
            b"user_id" => set(&mut r.user_id, c.id()),
            b"user_id_str" => set(&mut r.user_id_str, c.id()),
            _ => c.skip_unknown(),
        })?;
        Some(r)
    }

    fn delete(&mut self) -> Option<WireDelete> {
        let mut d = WireDelete::default();
        self.object(|c, key| match key {
            b"status" => set(&mut d.status, c.status_ref()),
            b"favorite" => set(&mut d.favorite, c.favorite_ref()),
            b"timestamp_ms" | b"timestampMs" => set(&mut d.timestamp_ms, c.time()),
            _ => c.skip_unknown(),
        })?;
        Some(d)
    }

    fn status_event(&mut self) -> Option<WireStatusEvent> {
        let mut e = WireStatusEvent::default();
        self.object(|c, key| match key {
            b"status" => set(&mut e.status, c.status_ref()),
            b"withheld_in_countries" => set(&mut e.withheld_in_countries, c.countries()),
            b"timestamp_ms" | b"timestampMs" => set(&mut e.timestamp_ms, c.time()),
            _ => c.skip_unknown(),
        })?;
        Some(e)
    }

    fn edit(&mut self) -> Option<WireEdit> {
        let mut e = WireEdit::default();
        self.object(|c, key| match key {
            b"id" => set(&mut e.id, c.id()),
            b"id_str" => set(&mut e.id_str, c.id()),
            b"initial_tweet_id" => set(&mut e.initial_tweet_id, c.id()),
            b"initial_tweet_id_str" => set(&mut e.initial_tweet_id_str, c.id()),
            b"edit_tweet_ids" => set(&mut e.edit_tweet_ids, c.array(Cursor::id)),
            b"timestamp_ms" | b"timestampMs" => set(&mut e.timestamp_ms, c.time()),
            _ => c.skip_unknown(),
        })?;
        Some(e)
    }

    fn user_ref(&mut self) -> Option<WireUserRef> {
        let mut r = WireUserRef::default();
        self.object(|c, key| match key {
            b"id" => set(&mut r.id, c.id()),
            b"id_str" => set(&mut r.id_str, c.id()),
            _ => c.skip_unknown(),
        })?;
        Some(r)
    }

    fn user_event(&mut self) -> Option<WireUserEvent> {
        let mut u = WireUserEvent::default();
        self.object(|c, key| match key {
            b"id" => set(&mut u.id, c.id()),
            b"id_str" => set(&mut u.id_str, c.id()),
            b"user_id" => set(&mut u.user_id, c.id()),
            b"user_id_str" => set(&mut u.user_id_str, c.id()),
            b"user" => set(&mut u.user, c.user_ref()),
            b"withheld_in_countries" => set(&mut u.withheld_in_countries, c.countries()),
            b"up_to_status_id" => set(&mut u.up_to_status_id, c.id()),
            b"up_to_status_id_str" => set(&mut u.up_to_status_id_str, c.id()),
            b"timestamp_ms" | b"timestampMs" => set(&mut u.timestamp_ms, c.time()),
            _ => c.skip_unknown(),
        })?;
        Some(u)
    }
}

/// The value of 8 bytes when all are ASCII digits (SWAR: one 64-bit word,
/// little-endian, so the first byte is the most significant digit).
#[inline]
fn eight_digits(b: &[u8]) -> Option<u64> {
    let w = u64::from_le_bytes(b.try_into().ok()?);
    let x = w.wrapping_sub(0x3030_3030_3030_3030);
    // A byte below b'0', or from 0xb0 up, has its top bit set in `x`; one
    // from b':' up has it set once 0x46 is added (b'9' + 0x46 = 0x7f). A
    // borrow or carry between bytes starts only at a byte already caught.
    if (x | w.wrapping_add(0x4646_4646_4646_4646)) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_ffff_0000_ffff;
    Some((x.wrapping_mul(10_000) + (x >> 32)) & 0xffff_ffff)
}

/// A non-empty string of ASCII digits that fits in `u64` (what
/// [`super::parse_id_str`] accepts).
pub(super) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Up to 19 digits cannot overflow (10^19 - 1 < 2^64 - 1); only a 20th
    // needs checking.
    let (head, last) = if s.len() > 19 { s.split_at(19) } else { (s, &[][..]) };
    let v = head.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    last.iter().try_fold(v, |v, &d| v.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_line, parse_with_serde, Message};
    use proptest::prelude::*;

    /// Lines of every shape the fast path reads, in the forms the stream
    /// uses (numbers beside exact strings, ISO times, unknown fields).
    const CORPUS: [&str; 16] = [
        r#"{"delete":{"status":{"id":601430178305220600,"id_str":"601430178305220608","user_id":3198576760,"user_id_str":"3198576760"},"timestamp_ms":"1432228155593"}}"#,
        r#"{"delete":{"favorite":{"tweet_id":696615514970279937,"tweet_id_str":"696615514970279937","user_id":2510287578,"user_id_str":"2510287578"},"timestamp_ms":"1480437031205"}}"#,
        r#"{"status_withheld":{"status":{"id":601430178305220600,"id_str":"601430178305220608","user_id":3198576760,"user_id_str":"3198576760"},"withheld_in_countries":["XY","de","DE"],"timestamp_ms":"1432228155593"}}"#,
        r#"{"drop":{"status":{"id":601430178305220600,"id_str":"601430178305220600","user_id":3198576760,"user_id_str":"3198576760"},"timestamp_ms":"1432228155593"}}"#,
        r#"{"undrop":{"status":{"id":601430178305220600,"id_str":"601430178305220600","user_id":3198576760,"user_id_str":"3198576760"},"timestamp_ms":1432228155593}}"#,
        r#"{"scrub_geo":{"user_id":519761961,"up_to_status_id":411552403083628540,"up_to_status_id_str":"411552403083628544","user_id_str":"519761961","timestamp_ms":"1432228180345"}}"#,
        r#"{"user_delete":{"id":771136850,"timestamp_ms":"1432228153548"}}"#,
        r#"{"user_undelete":{"id":"796250066","timestamp_ms":"1432228149062"}}"#,
        r#"{"user_protect":{"id":18446744073709551615,"timestamp_ms":"1432228177137"}}"#,
        r#"{"user_unprotect":{"id":2911076065,"timestamp_ms":"1432228180113","source":"complyd-sim"}}"#,
        r#"{"user_suspend":{"id":3120539094,"timestampMs":"2014-08-27T23:49:41.839+00:00"}}"#,
        r#"{"user_unsuspend":{"id":3293130873,"timestamp_ms":"1432228193828","flag":true,"n":0}}"#,
        r#"{"user_withheld":{"user":{"id":1375036644,"id_str":"1375036644"},"withheld_in_countries":["XY"],"timestampMs":"2014-08-27T23:49:41.839+00:00"}}"#,
        r#"{"tweet_edit":{"id":"1557445923210514432","initial_tweet_id":"1557433858676740098","edit_tweet_ids":["1557433858676740098","1557445923210514432"],"timestamp_ms":"1660155761384"}}"#,
        r#" { "delete" : { "status" : { "id_str" : "5" } , "timestamp_ms" : "9" } } "#,
        r#"{"user_withheld":{"id":1,"withheld_in_countries":[],"timestamp_ms":"1"}}"#,
    ];

    type Parsed = Result<Message, super::super::ParseError>;

    /// The fast path's answer, and the reference parser's (serde, after
    /// `parse_line`'s heartbeat check).
    fn both(line: &[u8]) -> (Option<Parsed>, Parsed) {
        super::super::parse_both_ways(line)
    }

    #[test]
    fn the_fast_path_reads_every_usual_shape_exactly_as_serde_does() {
        for line in CORPUS {
            let (fast, reference) = both(line.as_bytes());
            let fast = fast.unwrap_or_else(|| panic!("the fast path gave up on {line}"));
            assert!(reference.is_ok(), "{line}: {reference:?}");
            assert_eq!(fast, reference, "{line}");
            assert_eq!(parse_line(line.as_bytes()), reference, "{line}");
        }
    }

    #[test]
    fn what_the_fast_path_cannot_be_sure_of_goes_to_serde() {
        // Each is either an error serde must explain or a form the fast path
        // leaves to serde; parse_line must answer exactly as serde does.
        let lines: &[&str] = &[
            r#"{"user_delete":{"id":1,"id":2,"timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":01,"timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":1.0,"timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":1e3,"timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":-1,"timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":18446744073709551616,"timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":"18446744073709551616","timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":"99999999999999999999","timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":"184467440737095516150","timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":"","timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"9223372036854775808"}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":9223372036854775808}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"2014-13-45"}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1"}} x"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1",}}"#,
            r#"{"user_withheld":{"id":7,"withheld_in_countries":["DEU"],"timestamp_ms":"1"}}"#,
            r#"{"user_withheld":{"id":7,"withheld_in_countries":["D1"],"timestamp_ms":"1"}}"#,
            r#"{"tweet_edit":{"id":"2","edit_tweet_ids":["1",null],"timestamp_ms":"1"}}"#,
            r#"{"delete":{"status":{"id_str":"5"},"status":{"id_str":"6"}}}"#,
            r#"{"user_delete":{"id":"1\u0032","timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":null,"id_str":"7","timestamp_ms":"1"}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1","note":"ünï"}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1","extra":{"a":1}}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1","extra":-2.5}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1","extra":nul}}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1"},"other":1}"#,
            r#"{"user_delete":{"id":7,"timestamp_ms":"1"}"#,
            r#"{"user_delete":[7,null,null,null,null,null,null,null,"1"]}"#,
            r#"{"user_withheld":{"id":7,"withheld_in_countries":"DE","timestamp_ms":"1"}}"#,
            r#"{"tweet_edit":{"id":"2","edit_tweet_ids":[],"timestamp_ms":"1"}}"#,
            r#"{"delete":5}"#,
            r#"{"delete":{}}"#,
            r#"{"user_rename":{"id":5}}"#,
            r#"{"error":{"message":"Forced Disconnect","sent":"x"}}"#,
            r#"{"info":{"message":"Replay Request Completed","activity_count":1}}"#,
            r#"{"user_protect":{"id":1}}"#,
            "{\"user_protect\":{\"id\":1,\"timestamp_ms\":\"1\u{7f}\"}}",
            "\u{feff}{\"user_protect\":{\"id\":1,\"timestamp_ms\":\"1\"}}",
            // Read by serde alone: both time fields, a time a permanent
            // effect does without, a list with one code that is not one.
            r#"{"user_delete":{"id":1,"timestamp_ms":"1","timestampMs":"2"}}"#,
            r#"{"delete":{"status":{"id_str":"19"},"timestamp_ms":"x"}}"#,
            r#"{"status_withheld":{"status":{"id_str":"17"},"withheld_in_countries":["DE","XXX",5],"timestamp_ms":"1"}}"#,
        ];
        for line in lines {
            let (fast, reference) = both(line.as_bytes());
            if let Some(fast) = fast {
                assert_eq!(fast, reference, "the fast path disagrees with serde on {line}");
            }
            assert_eq!(parse_line(line.as_bytes()), reference, "{line}");
        }
        // The fast path must leave (not misread) the forms serde refuses.
        for line in &lines[..19] {
            assert!(parse_with_serde(line.as_bytes()).is_err(), "{line} should be an error");
            assert!(super::parse(line.as_bytes()).is_none(), "the fast path accepted {line}");
        }
    }

    /// A line of the corpus with a few bytes or JSON fragments changed,
    /// inserted or removed, or the line cut short: mostly broken JSON,
    /// sometimes another valid line (a key twice, a float, a null...).
    fn corrupted() -> impl Strategy<Value = Vec<u8>> {
        const BYTES: &[u8] = b"\"\\,:{}[]-.eE0 19xn\xff";
        const FRAGMENTS: &[&str] = &[
            ".5",
            "e3",
            "E-1",
            "0",
            "00",
            "-",
            "null",
            "true",
            "[]",
            "{}",
            " ",
            "\"XX\"",
            "\"\\u0041\"",
            r#","id":1"#,
            r#","id_str":"2""#,
            r#","user_id":3"#,
            r#","timestampMs":"4""#,
            r#","timestamp_ms":5"#,
            r#","user":{"id":6}"#,
            r#","status":{"id":7}"#,
            r#","x":{"y":1}"#,
            r#","x":"z""#,
            r#","withheld_in_countries":["de"]"#,
        ];
        let edit =
            (0usize..5, any::<prop::sample::Index>(), prop::sample::select(BYTES), prop::sample::select(FRAGMENTS));
        (prop::sample::select(CORPUS.to_vec()), prop::collection::vec(edit, 1..4)).prop_map(|(line, edits)| {
            let mut b = line.as_bytes().to_vec();
            for (op, at, byte, fragment) in edits {
                let i = at.index(b.len() + 1);
                match op {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    2 if i < b.len() => {
                        b.remove(i);
                    }
                    3 => {
                        b.splice(i..i, fragment.bytes());
                    }
                    _ => b.truncate(i),
                }
            }
            b
        })
    }

    #[test]
    fn eight_digits_reads_eight_ascii_digits_and_nothing_else() {
        assert_eq!(super::eight_digits(b"01234567"), Some(1_234_567));
        assert_eq!(super::eight_digits(b"99999999"), Some(99_999_999));
        assert_eq!(super::eight_digits(b"1234567"), None);
        for at in 0..8 {
            for byte in (0u8..=255).filter(|b| !b.is_ascii_digit()) {
                let mut w = *b"98765432";
                w[at] = byte;
                assert_eq!(super::eight_digits(&w), None, "{w:?}");
            }
        }
    }

    proptest! {
        /// Numbers of every length (1 to 25 digits: leading zeros, past
        /// u64), bare or quoted, read as serde reads them.
        #[test]
        fn numbers_of_every_length_read_as_serde_reads_them(
            n in any::<u64>(),
            zeros in 0usize..3,
            extra in "[0-9]{0,4}",
            quoted in any::<bool>(),
            next in prop::sample::select(&b"0x.e\xff"[..]),
        ) {
            let digits = format!("{}{n}{extra}", "0".repeat(zeros));
            let q = if quoted { "\"" } else { "" };
            for id in [format!("{q}{digits}{q}"), format!("{q}{digits}{}{q}", next as char)] {
                for line in [
                    format!(r#"{{"user_delete":{{"id":{id},"timestamp_ms":"1"}}}}"#),
                    format!(r#"{{"delete":{{"status":{{"id":{id},"user_id":{id}}},"timestamp_ms":{id}}}}}"#),
                ] {
                    let (fast, reference) = both(line.as_bytes());
                    if let Some(fast) = fast {
                        prop_assert_eq!(fast, reference.clone(), "{}", line);
                    }
                    prop_assert_eq!(parse_line(line.as_bytes()), reference, "{}", line);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn corrupted_lines_get_the_same_answer_as_serde_s(line in corrupted()) {
            let (fast, reference) = both(&line);
            if let Some(fast) = fast {
                prop_assert_eq!(fast, reference.clone());
            }
            prop_assert_eq!(parse_line(&line), reference);
        }
    }
}
