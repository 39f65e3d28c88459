//! Byte-level `\r\n` framing for the decompressed stream.
//!
//! Messages end with the two bytes `\r\n`; a post's text may hold `\n` but
//! never `\r`, so a lone `\n` is never a boundary. HTTP chunks and gzip blocks
//! do not line up with messages and may split a UTF-8 character: the framer
//! works on bytes and only hands out whole lines. Memory is bounded by the
//! maximum line size: a longer line is reported as [`Frame::Oversized`] and its
//! bytes are discarded as they arrive, never buffered.

/// One framed unit.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole line without its `\r\n` (empty for a heartbeat).
    Line(&'a [u8]),
    /// A line longer than the maximum; `len` is its full length in bytes and
    /// `head` its first bytes (for the dead-letter file).
    Oversized { len: usize, head: &'a [u8] },
}

/// How many bytes of an oversized line are kept for the dead-letter record.
pub const OVERSIZED_HEAD: usize = 256;

/// Splits a byte stream into `\r\n`-terminated lines.
#[derive(Debug)]
pub struct LineFramer {
    /// The current unfinished line; while discarding, only its head.
    buf: Vec<u8>,
    max_line: usize,
    /// Set while the current line is over the maximum and being skipped.
    discarding: Option<Discard>,
    /// Where in `buf` the search for `\r\n` resumes (everything before has no
    /// boundary).
    scanned: usize,
}

#[derive(Debug, Clone, Copy)]
struct Discard {
    /// Bytes of the long line seen so far (a trailing `\r` included).
    seen: usize,
    /// The last byte seen was `\r`: a `\n` next ends the line.
    pending_cr: bool,
}

impl LineFramer {
    /// `max_line` is the longest line (without `\r\n`) that is buffered.
    pub fn new(max_line: usize) -> LineFramer {
        LineFramer { buf: Vec::with_capacity(64 * 1024), max_line: max_line.max(1), discarding: None, scanned: 0 }
    }

    /// Feeds the next bytes; `on_frame` is called for every completed line, in
    /// order.
    pub fn push(&mut self, mut chunk: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !chunk.is_empty() {
            if let Some(d) = self.discarding {
                let (consumed, line_len) = if d.pending_cr && chunk[0] == b'\n' {
                    (1, Some(d.seen - 1))
                } else {
                    match find_crlf(chunk) {
                        Some(pos) => (pos + 2, Some(d.seen + pos)),
                        None => (chunk.len(), None),
                    }
                };
                match line_len {
                    Some(len) => {
                        on_frame(Frame::Oversized { len, head: &self.buf });
                        self.buf.clear();
                        self.scanned = 0;
                        self.discarding = None;
                    }
                    None => {
                        self.discarding =
                            Some(Discard { seen: d.seen + consumed, pending_cr: chunk.last() == Some(&b'\r') });
                    }
                }
                chunk = &chunk[consumed..];
                continue;
            }
            // Take as much of the chunk as can still form a line of max_line
            // bytes plus its "\r\n".
            let room = (self.max_line + 2).saturating_sub(self.buf.len()).max(1);
            let take = chunk.len().min(room);
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            let mut start = 0;
            let mut from = self.scanned.saturating_sub(1);
            while let Some(pos) = find_crlf(&self.buf[from..]) {
                let end = from + pos;
                on_frame(Frame::Line(&self.buf[start..end]));
                start = end + 2;
                from = start;
            }
            if start > 0 {
                self.buf.drain(..start);
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_line + 1 {
                // No boundary within max_line + 2 bytes (a final "\r" may still
                // pair with the next "\n"): the line is oversized. Keep its head,
                // skip the rest as it comes.
                let seen = self.buf.len();
                let pending_cr = self.buf.last() == Some(&b'\r');
                self.buf.truncate(OVERSIZED_HEAD.min(seen - usize::from(pending_cr)));
                self.discarding = Some(Discard { seen, pending_cr });
            }
        }
    }

    /// Bytes of an unfinished line held or skipped (for a truncated-stream
    /// report).
    pub fn pending(&self) -> usize {
        match self.discarding {
            Some(d) => d.seen,
            None => self.buf.len(),
        }
    }

    /// The unfinished line at the end of a body that ended cleanly (a last
    /// line without its `\r\n`), taken out; None when there is none or it
    /// was too long.
    pub fn take_rest(&mut self) -> Option<Vec<u8>> {
        let rest = (self.discarding.is_none() && !self.buf.is_empty()).then(|| std::mem::take(&mut self.buf));
        self.reset();
        rest
    }

    /// Forgets any partial line (after a disconnect: a new connection starts
    /// at a message boundary).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.discarding = None;
    }
}

fn find_crlf(hay: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |fr| {
                out.push(match fr {
                    Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    Frame::Oversized { len, .. } => format!("<oversized {len}>"),
                })
            });
        }
        out
    }

    #[test]
    fn splits_on_crlf_only_never_on_bare_lf() {
        assert_eq!(frames(100, &[b"a\nb\r\nc\r\n"]), vec!["a\nb", "c"]);
    }

    #[test]
    fn heartbeat_is_an_empty_line() {
        assert_eq!(frames(100, &[b"\r\n\r\nx\r\n"]), vec!["", "", "x"]);
    }

    #[test]
    fn crlf_split_across_chunks() {
        assert_eq!(frames(100, &[b"abc\r", b"\ndef\r", b"\n"]), vec!["abc", "def"]);
    }

    #[test]
    fn utf8_character_split_across_chunks_is_reassembled() {
        let s = "caf\u{e9} \u{1F600}\r\n".as_bytes();
        for cut in 1..s.len() {
            assert_eq!(frames(100, &[&s[..cut], &s[cut..]]), vec!["caf\u{e9} \u{1F600}"], "cut at {cut}");
        }
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let data = b"{\"a\":1}\r\n\r\nline with \n inside\r\n{\"b\":2}\r\n";
        let whole = frames(1000, &[data]);
        for cut in 0..=data.len() {
            assert_eq!(frames(1000, &[&data[..cut], &data[cut..]]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(frames(1000, &bytes), whole);
    }

    #[test]
    fn oversized_line_is_reported_and_memory_stays_bounded() {
        let mut f = LineFramer::new(10);
        let mut out = Vec::new();
        f.push(b"ok\r\n", |fr| out.push(format!("{fr:?}")));
        for _ in 0..1000 {
            f.push(&[b'x'; 100], |fr| out.push(format!("{fr:?}")));
            assert!(f.buf.len() <= OVERSIZED_HEAD, "buffer grew to {}", f.buf.len());
        }
        f.push(b"\r\nnext\r\n", |fr| out.push(format!("{fr:?}")));
        assert_eq!(out.len(), 3);
        assert!(out[1].starts_with("Oversized { len: 100000"), "{}", out[1]);
        assert_eq!(out[2], format!("{:?}", Frame::Line(b"next")));
    }

    #[test]
    fn oversized_line_ending_with_cr_split_from_lf() {
        let long = vec![b'y'; 50];
        let mut c1 = long.clone();
        c1.push(b'\r');
        assert_eq!(frames(10, &[&c1, b"\nz\r\n"]), vec!["<oversized 50>", "z"]);
    }

    #[test]
    fn line_of_exactly_max_is_kept() {
        assert_eq!(frames(5, &[b"12345\r\n123456\r\n"]), vec!["12345", "<oversized 6>"]);
        assert_eq!(frames(5, &[b"123", b"45\r", b"\n"]), vec!["12345"]);
    }
}
