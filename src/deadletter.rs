//! The dead-letter file: every line that could not be used, with where it
//! came from and why, one JSON object a line. Nothing malformed is ever
//! silently lost.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How many lines of one reason are logged one by one; past that they are
/// only counted (and still written to the file).
const LOG_PER_REASON: u64 = 5;

/// The most bytes of a bad line kept in the record.
const KEEP_BYTES: usize = 64 * 1024;

pub struct DeadLetter {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    by_reason: HashMap<String, u64>,
    total: u64,
}

impl DeadLetter {
    /// The file is created on the first record only.
    pub fn new(path: impl Into<PathBuf>) -> DeadLetter {
        DeadLetter { path: path.into(), file: None, by_reason: HashMap::new(), total: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines dead-lettered so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Records one bad line: appended to the file, logged (the first lines of
    /// each reason one by one, then only counted).
    ///
    /// # Errors
    /// The file cannot be opened or written: the caller must stop, since the
    /// line would otherwise be lost.
    pub fn record(&mut self, source: &str, position: u64, reason: &str, detail: &str, line: &[u8]) -> io::Result<()> {
        self.total += 1;
        let n = self.by_reason.entry(reason.to_owned()).or_insert(0);
        *n += 1;
        let n = *n;
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create its directory {}: {e}", dir.display()))
                })?;
            }
            let f = crate::files::append_private(&self.path)?;
            self.file = Some(BufWriter::new(f));
        }
        if n <= LOG_PER_REASON {
            tracing::warn!(source, position, reason, detail, dead_letter = %self.path.display(), "Dead-lettered a bad line");
        } else if n == LOG_PER_REASON + 1 {
            tracing::warn!(reason, dead_letter = %self.path.display(), "More lines dead-lettered for this reason: counting them without logging each");
        }
        let kept = &line[..line.len().min(KEEP_BYTES)];
        let record = serde_json::json!({
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "source": source,
            "position": position,
            "reason": reason,
            "detail": detail,
            "bytes": line.len(),
            "line": String::from_utf8_lossy(kept),
        });
        let f = self.file.as_mut().expect("opened above");
        serde_json::to_writer(&mut *f, &record)?;
        f.write_all(b"\n")?;
        // Written through at once: a record is rare, and one the daemon
        // holds in a buffer would be lost by a crash.
        f.flush()
    }

    /// Flushes the file.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for DeadLetter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "Could not flush the dead-letter file");
        }
    }
}
