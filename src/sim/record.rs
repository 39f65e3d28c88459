//! `--record FILE`: one line per message written to a client,
//! `<partition>\t<sent_unix_ms>\t<the exact JSON line>` (partition 0 = a
//! replay). Heartbeats are not recorded. Lines are written when their last
//! byte is handed to the HTTP layer, and the file is flushed after every
//! batch, so a test can read it while the simulator runs.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

pub(crate) struct Recorder {
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    /// Creates (truncates) the file.
    pub(crate) fn create(path: &Path) -> io::Result<Recorder> {
        let f = crate::files::write_private(path)?;
        Ok(Recorder { out: Mutex::new(BufWriter::with_capacity(256 * 1024, f)) })
    }

    /// Records every complete line of `raw` (lines end with `\r\n`; empty
    /// lines are heartbeats and are skipped).
    pub(crate) fn lines(&self, partition: u8, sent_ms: i64, raw: &[u8]) {
        if raw.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut res = Ok(());
        for line in raw.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            res = res
                .and_then(|_| write!(out, "{partition}\t{sent_ms}\t"))
                .and_then(|_| out.write_all(line))
                .and_then(|_| out.write_all(b"\n"));
        }
        res = res.and_then(|_| out.flush());
        if let Err(e) = res {
            tracing::warn!(error = %e, "Record write failed");
        }
    }

    pub(crate) fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.flush() {
            tracing::warn!(error = %e, "Record flush failed");
        }
    }
}
