//! A deliberately small raw HTTP/1.1 client and an incremental gzip line
//! decoder, for tests that must see exactly what goes over the wire: chunk
//! by chunk, whether the body ended with the terminating chunk or the
//! connection was dropped, and whether the gzip member was complete.
//!
//! Not a general HTTP client: one request per connection, no TLS, no
//! redirects. Every read takes a timeout so a test can never hang. Used by
//! the `tests/sim/` tests as `common::sim_client`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use flate2::{Crc, Decompress, FlushDecompress, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// What the next read of a body gave.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEvent {
    /// Bytes of the body (one HTTP chunk for chunked bodies).
    Data(Bytes),
    /// The body ended properly (zero-length chunk, or Content-Length reached).
    End,
    /// The connection closed (or was reset) before the body ended.
    Dropped,
    /// Nothing arrived within the timeout.
    Timeout,
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

/// A response whose body is read incrementally.
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    stream: TcpStream,
    buf: BytesMut,
    framing: Framing,
    finished: bool,
}

/// Sends `GET path` (path and query) with the given extra headers.
///
/// # Errors
/// Connection or I/O errors, a malformed status line, or no answer in `timeout`.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)], timeout: Duration) -> io::Result<RawResponse> {
    request(addr, "GET", path, headers, &[], timeout).await
}

/// Sends any request with an optional body.
///
/// # Errors
/// As [`get`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<RawResponse> {
    tokio::time::timeout(timeout, request_inner(addr, method, path, headers, body))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in time"))?
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: complyd-sim-test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too long"));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the response head"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.advance(head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line: {status_line}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let hv = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let framing = if hv("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(n) = hv("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(RawResponse { status, headers, stream, buf, framing, finished: false })
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

impl RawResponse {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    async fn fill(&mut self, timeout: Duration) -> Result<bool, BodyEvent> {
        match tokio::time::timeout(timeout, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(BodyEvent::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => Err(BodyEvent::Dropped),
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// The next piece of the body, waiting at most `timeout` for bytes.
    pub async fn next_event(&mut self, timeout: Duration) -> BodyEvent {
        if self.finished {
            return BodyEvent::End;
        }
        match self.framing {
            Framing::Length(left) => {
                if left == 0 {
                    self.finished = true;
                    return BodyEvent::End;
                }
                if self.buf.is_empty() {
                    if let Err(e) = self.fill(timeout).await {
                        return e;
                    }
                }
                let n = left.min(self.buf.len());
                self.framing = Framing::Length(left - n);
                BodyEvent::Data(self.buf.split_to(n).freeze())
            }
            Framing::UntilClose => {
                if self.buf.is_empty() {
                    match self.fill(timeout).await {
                        Err(BodyEvent::Dropped) => {
                            self.finished = true;
                            return BodyEvent::End;
                        }
                        Err(e) => return e,
                        Ok(_) => {}
                    }
                }
                BodyEvent::Data(self.buf.split().freeze())
            }
            Framing::Chunked => {
                let deadline = tokio::time::Instant::now() + timeout;
                // Bounded: each round reads more bytes or returns.
                for _ in 0..1_000_000 {
                    if let Some(ev) = self.parse_chunk() {
                        return ev;
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Err(e) = self.fill(left).await {
                        return e;
                    }
                }
                BodyEvent::Timeout
            }
        }
    }

    fn parse_chunk(&mut self) -> Option<BodyEvent> {
        let line_end = find(&self.buf, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = match usize::from_str_radix(size_hex, 16) {
            Ok(s) => s,
            Err(_) => return Some(BodyEvent::Dropped),
        };
        if size == 0 {
            // Trailer section ends with an empty line.
            let rest = &self.buf[line_end + 2..];
            if rest.starts_with(b"\r\n") || find(rest, b"\r\n\r\n").is_some() {
                self.finished = true;
                return Some(BodyEvent::End);
            }
            return None;
        }
        if self.buf.len() < line_end + 2 + size + 2 {
            return None;
        }
        self.buf.advance(line_end + 2);
        let data = self.buf.split_to(size).freeze();
        self.buf.advance(2);
        Some(BodyEvent::Data(data))
    }

    /// Reads the whole body (for non-streaming answers).
    ///
    /// # Errors
    /// The body did not end properly within `timeout`.
    pub async fn body(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        for _ in 0..1_000_000 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                BodyEvent::Data(d) => out.extend_from_slice(&d),
                BodyEvent::End => return Ok(out),
                BodyEvent::Dropped => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body dropped")),
                BodyEvent::Timeout => return Err(io::Error::new(io::ErrorKind::TimedOut, "body timed out")),
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "body too long"))
    }
}

/// A decoded line of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A bare `\r\n`.
    Heartbeat,
    /// A message, without its `\r\n`.
    Message(Vec<u8>),
}

#[derive(PartialEq, Eq, Debug)]
enum GzState {
    Header,
    Body,
    Trailer,
    Done,
}

/// Incremental gzip decoder and `\r\n` framer: feed it compressed bytes cut
/// anywhere; it returns every complete line.
pub struct LineDecoder {
    state: GzState,
    pending_in: Vec<u8>,
    inflate: Decompress,
    crc: Crc,
    partial: Vec<u8>,
    output_pending: bool,
    /// Lines longer than 1 MiB seen (still returned).
    pub oversized_lines: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl LineDecoder {
    /// A decoder expecting a gzip header first.
    pub fn new() -> LineDecoder {
        LineDecoder {
            state: GzState::Header,
            pending_in: Vec::new(),
            inflate: Decompress::new(false),
            crc: Crc::new(),
            partial: Vec::new(),
            output_pending: false,
            oversized_lines: 0,
        }
    }

    /// Decompresses `data` and returns the lines it completes.
    ///
    /// # Errors
    /// Not gzip, corrupt deflate data, a bad trailer, or data after the end.
    pub fn feed(&mut self, data: &[u8]) -> io::Result<Vec<Line>> {
        self.pending_in.extend_from_slice(data);
        let mut decoded = Vec::new();
        for _ in 0..1_000_000 {
            match self.state {
                GzState::Header => {
                    if self.pending_in.len() < 10 {
                        break;
                    }
                    if self.pending_in[0] != 0x1f || self.pending_in[1] != 0x8b || self.pending_in[2] != 8 {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a gzip stream"));
                    }
                    if self.pending_in[3] != 0 {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "gzip header flags not supported"));
                    }
                    self.pending_in.drain(..10);
                    self.state = GzState::Body;
                }
                GzState::Body => {
                    if self.pending_in.is_empty() && !self.output_pending {
                        break;
                    }
                    let mut out = Vec::with_capacity(self.pending_in.len() * 4 + 4096);
                    let before_in = self.inflate.total_in();
                    let st = self
                        .inflate
                        .decompress_vec(&self.pending_in, &mut out, FlushDecompress::None)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let used = (self.inflate.total_in() - before_in) as usize;
                    self.pending_in.drain(..used);
                    self.crc.update(&out);
                    // A full output buffer may leave decoded bytes inside the
                    // inflater: call again even without new input.
                    self.output_pending = out.len() == out.capacity();
                    decoded.extend_from_slice(&out);
                    if st == Status::StreamEnd {
                        self.output_pending = false;
                        self.state = GzState::Trailer;
                    } else if used == 0 && out.is_empty() {
                        break;
                    }
                }
                GzState::Trailer => {
                    if self.pending_in.len() < 8 {
                        break;
                    }
                    let crc = u32::from_le_bytes([
                        self.pending_in[0],
                        self.pending_in[1],
                        self.pending_in[2],
                        self.pending_in[3],
                    ]);
                    let len = u32::from_le_bytes([
                        self.pending_in[4],
                        self.pending_in[5],
                        self.pending_in[6],
                        self.pending_in[7],
                    ]);
                    if crc != self.crc.sum() || len != self.crc.amount() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "gzip trailer mismatch"));
                    }
                    self.pending_in.drain(..8);
                    self.state = GzState::Done;
                }
                GzState::Done => {
                    if !self.pending_in.is_empty() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "data after the gzip trailer"));
                    }
                    break;
                }
            }
        }
        Ok(self.frame(&decoded))
    }

    fn frame(&mut self, data: &[u8]) -> Vec<Line> {
        self.partial.extend_from_slice(data);
        let mut lines = Vec::new();
        let mut start = 0;
        let mut search = 0;
        while let Some(i) = find(&self.partial[search..], b"\r\n").map(|i| i + search) {
            let line = &self.partial[start..i];
            if line.is_empty() {
                lines.push(Line::Heartbeat);
            } else {
                if line.len() > 1024 * 1024 {
                    self.oversized_lines += 1;
                }
                lines.push(Line::Message(line.to_vec()));
            }
            start = i + 2;
            search = start;
        }
        self.partial.drain(..start);
        lines
    }

    /// Bytes decoded after the last `\r\n` (an incomplete message).
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Whether the gzip member ended with a valid trailer.
    pub fn is_complete(&self) -> bool {
        self.state == GzState::Done
    }
}

/// How a stream body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Terminating zero-length chunk.
    Clean,
    /// The connection closed without it.
    Dropped,
}

/// A line and when it was decoded.
#[derive(Debug, Clone)]
pub struct TimedLine {
    /// When the chunk that completed it arrived.
    pub at: std::time::Instant,
    /// The line.
    pub line: Line,
}

/// A stream response plus its decoder, keeping everything that arrived.
pub struct StreamReader {
    /// The response (status, headers, body reader).
    pub resp: RawResponse,
    /// The decoder the body goes through.
    pub decoder: LineDecoder,
    /// Every line decoded so far.
    pub lines: Vec<TimedLine>,
    /// Each body chunk's arrival time and compressed length.
    pub chunks: Vec<(std::time::Instant, usize)>,
    /// The compressed body so far.
    pub compressed: Vec<u8>,
    /// Set once the body ended.
    pub end: Option<StreamEnd>,
    /// A decoding error (corrupt gzip), if any.
    pub error: Option<String>,
}

impl StreamReader {
    /// Opens `path` with the given headers.
    ///
    /// # Errors
    /// As [`get`].
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<StreamReader> {
        let resp = get(addr, path, headers, Duration::from_secs(10)).await?;
        Ok(StreamReader::from_response(resp))
    }

    /// Wraps a response already opened.
    pub fn from_response(resp: RawResponse) -> StreamReader {
        StreamReader {
            resp,
            decoder: LineDecoder::new(),
            lines: Vec::new(),
            chunks: Vec::new(),
            compressed: Vec::new(),
            end: None,
            error: None,
        }
    }

    /// Reads until `done(self)` holds, the body ends, or `total` elapses.
    /// Returns whether `done` held.
    pub async fn read_until(&mut self, total: Duration, mut done: impl FnMut(&StreamReader) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + total;
        for _ in 0..10_000_000 {
            if done(self) {
                return true;
            }
            if self.end.is_some() || self.error.is_some() {
                return false;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.resp.next_event(left).await {
                BodyEvent::Data(d) => {
                    let now = std::time::Instant::now();
                    self.chunks.push((now, d.len()));
                    self.compressed.extend_from_slice(&d);
                    match self.decoder.feed(&d) {
                        Ok(lines) => self.lines.extend(lines.into_iter().map(|line| TimedLine { at: now, line })),
                        Err(e) => self.error = Some(e.to_string()),
                    }
                }
                BodyEvent::End => self.end = Some(StreamEnd::Clean),
                BodyEvent::Dropped => self.end = Some(StreamEnd::Dropped),
                BodyEvent::Timeout => return done(self),
            }
        }
        false
    }

    /// Reads for `d` (or until the body ends).
    pub async fn read_for(&mut self, d: Duration) {
        self.read_until(d, |_| false).await;
    }

    /// Reads until `n` messages arrived in all (or `timeout`).
    pub async fn read_messages(&mut self, n: usize, timeout: Duration) -> bool {
        self.read_until(timeout, |r| r.message_count() >= n).await
    }

    /// Reads until the body ends (or `timeout`); returns how it ended.
    pub async fn read_to_end(&mut self, timeout: Duration) -> Option<StreamEnd> {
        self.read_until(timeout, |r| r.end.is_some()).await;
        self.end
    }

    /// The messages (not heartbeats) so far.
    pub fn messages(&self) -> Vec<&[u8]> {
        self.lines
            .iter()
            .filter_map(|l| match &l.line {
                Line::Message(m) => Some(m.as_slice()),
                Line::Heartbeat => None,
            })
            .collect()
    }

    /// The messages as strings (lossy).
    pub fn message_strings(&self) -> Vec<String> {
        self.messages().into_iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect()
    }

    /// How many messages (not heartbeats) so far.
    pub fn message_count(&self) -> usize {
        self.lines.iter().filter(|l| matches!(l.line, Line::Message(_))).count()
    }

    /// Arrival times of the heartbeats.
    pub fn heartbeat_times(&self) -> Vec<std::time::Instant> {
        self.lines.iter().filter(|l| l.line == Line::Heartbeat).map(|l| l.at).collect()
    }
}
