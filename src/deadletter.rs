//! The dead-letter file: every line that could not be used, with where it
//! came from and why, one JSON object a line. Nothing malformed is ever
//! silently lost: while the file cannot be written (its disk full, its
//! directory gone), records are held in memory, up to a bound, and written
//! first when it can be again; the daemon's `/readyz` says why meanwhile.

use crate::health::Health;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many lines of one reason are logged one by one; past that they are
/// only counted (and still written to the file).
const LOG_PER_REASON: u64 = 5;

/// The most bytes of a bad line kept in the record.
const KEEP_BYTES: usize = 64 * 1024;

/// The most records, and bytes of records, held while the file cannot be
/// written; past either the oldest are dropped, counted as lost.
const HOLD_RECORDS: usize = 1024;
const HOLD_BYTES: usize = 8 * 1024 * 1024;

pub struct DeadLetter {
    path: PathBuf,
    file: Option<File>,
    by_reason: HashMap<String, u64>,
    total: u64,
    /// Records not written yet (the file could not be), oldest first.
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    /// Records dropped from `held` when it was full.
    lost: u64,
    /// A write failed part-way: the file may end in a torn record, which the
    /// next write ends with a newline first.
    torn: bool,
    /// Where the file's state is shown (`/readyz`), for the daemon.
    health: Option<Arc<Health>>,
}

impl DeadLetter {
    /// The file is created on the first record only.
    pub fn new(path: impl Into<PathBuf>) -> DeadLetter {
        DeadLetter {
            path: path.into(),
            file: None,
            by_reason: HashMap::new(),
            total: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            lost: 0,
            torn: false,
            health: None,
        }
    }

    /// Reports the file's state to `health`: a readiness reason while records
    /// are held unwritten.
    #[must_use]
    pub fn reporting_to(mut self, health: Arc<Health>) -> DeadLetter {
        self.health = Some(health);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines dead-lettered so far (written, held or lost).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Records held in memory because the file could not be written.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Records dropped because too many were held.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Gives up on the records held (the daemon stopping with the file
    /// still unwritable): they are counted as lost, and how many returned.
    pub fn discard_held(&mut self) -> usize {
        let n = self.clear_held();
        self.lost += n as u64;
        metrics::counter!("complyd_dead_letter_lost_total").increment(n as u64);
        n
    }

    /// Empties what is held; how many records it held.
    fn clear_held(&mut self) -> usize {
        let n = self.held.len();
        self.held.clear();
        self.held_bytes = 0;
        n
    }

    /// Makes sure records can be written, before anything depends on it:
    /// the directory is created and the file opened for appending. A file
    /// this call made is removed again (the file appears with its first
    /// record).
    ///
    /// # Errors
    /// The directory cannot be created or the file opened for appending.
    pub fn check_writable(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let existed = self.path.symlink_metadata().is_ok();
        self.open()?;
        if !existed {
            self.file = None;
            std::fs::remove_file(&self.path)?;
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create its directory {}: {e}", dir.display()))
                })?;
            }
            self.file = Some(crate::files::append_private(&self.path)?);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Records one bad line, for a command that stops when it cannot:
    /// appended to the file and logged (the first lines of each reason one
    /// by one, then only counted).
    ///
    /// # Errors
    /// The file cannot be opened or written: the caller must stop and say
    /// so (the line is not kept).
    pub fn record(&mut self, source: &str, position: u64, reason: &str, detail: &str, line: &[u8]) -> io::Result<()> {
        let res = self.append(source, position, reason, detail, line);
        if res.is_err() {
            self.clear_held();
        }
        res
    }

    /// Appends the record after any held before it; on failure it stays
    /// held.
    fn append(&mut self, source: &str, position: u64, reason: &str, detail: &str, line: &[u8]) -> io::Result<()> {
        self.total += 1;
        let n = self.by_reason.entry(reason.to_owned()).or_insert(0);
        *n += 1;
        let n = *n;
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
        let mut bytes = serde_json::to_vec(&record)?;
        bytes.push(b'\n');
        self.hold(bytes);
        self.write_held()?;
        if n <= LOG_PER_REASON {
            tracing::warn!(source, position, reason, detail, dead_letter = %self.path.display(), "Dead-lettered a bad line");
        } else if n == LOG_PER_REASON + 1 {
            tracing::warn!(reason, dead_letter = %self.path.display(), "More lines dead-lettered for this reason: counting them without logging each");
        }
        Ok(())
    }

    /// [`DeadLetter::record`] for the daemon, which goes on when the file
    /// cannot be written: the record is held (written first when the file
    /// can be), the failure counted and logged (rate-limited), and
    /// `/readyz` says why.
    pub fn record_or_hold(&mut self, source: &str, position: u64, reason: &str, detail: &str, line: &[u8]) {
        if let Err(e) = self.append(source, position, reason, detail, line) {
            metrics::counter!("complyd_dead_letter_write_errors_total").increment(1);
            if let Some(suppressed) = crate::logging::allow("deadletter-write") {
                tracing::error!(
                    source,
                    position,
                    reason,
                    error = %e,
                    dead_letter = %self.path.display(),
                    held = self.held.len(),
                    suppressed,
                    "Could not write to the dead-letter file: its records are held in memory until it can be written"
                );
            }
        }
    }

    fn hold(&mut self, record: Vec<u8>) {
        self.held_bytes += record.len();
        self.held.push_back(record);
        while self.held.len() > HOLD_RECORDS || (self.held_bytes > HOLD_BYTES && self.held.len() > 1) {
            let dropped = self.held.pop_front().expect("more than one held");
            self.held_bytes -= dropped.len();
            self.lost += 1;
            metrics::counter!("complyd_dead_letter_lost_total").increment(1);
            if let Some(suppressed) = crate::logging::allow("deadletter-lost") {
                tracing::error!(
                    dead_letter = %self.path.display(),
                    held = self.held.len(),
                    lost = self.lost,
                    suppressed,
                    "The dead-letter file has not been writable for too long: dropped the oldest record held for it"
                );
            }
        }
    }

    /// Writes the held records, oldest first; each leaves the memory once
    /// it is in the file. Records the state for `/readyz`.
    fn write_held(&mut self) -> io::Result<()> {
        let res = self.try_write_held();
        if let Some(h) = &self.health {
            h.set_dead_letter_error(
                res.as_ref().err().map(|e| {
                    format!("{} records held, not yet written to {}: {e}", self.held.len(), self.path.display())
                }),
            );
        }
        res
    }

    fn try_write_held(&mut self) -> io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let torn = self.torn;
        let f = self.open()?;
        if torn {
            f.write_all(b"\n")?;
        }
        self.torn = false;
        while let Some(r) = self.held.front() {
            if let Err(e) = self.file.as_mut().expect("opened above").write_all(r) {
                self.torn = true;
                return Err(e);
            }
            self.held_bytes -= r.len();
            self.held.pop_front();
        }
        Ok(())
    }

    /// Writes what is held (each record is written through as it comes:
    /// one the daemon held in a buffer would be lost by a crash).
    ///
    /// # Errors
    /// The file cannot be written: the records stay held.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_held()
    }
}

impl Drop for DeadLetter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                lost = self.held.len(),
                "Could not write the dead-letter file: the records held for it are lost"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line of the file is a whole record"))
            .collect()
    }

    #[test]
    fn records_held_while_the_file_cannot_be_written_are_written_first_when_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("sub");
        let path = blocker.join("dl.jsonl");
        let health = Arc::new(Health::new(&[1]));
        let mut dl = DeadLetter::new(&path).reporting_to(health.clone());
        // Its directory's name taken by a file: nothing can be written.
        std::fs::write(&blocker, "").unwrap();
        assert!(dl.check_writable().is_err());
        dl.record_or_hold("s", 1, "malformed", "d", b"first");
        dl.record_or_hold("s", 2, "malformed", "d", b"second");
        assert_eq!(dl.held(), 2);
        let (ready, why) = health.readiness();
        assert!(
            !ready && why.iter().any(|w| w.contains("dead-letter file") && w.contains("2 records held")),
            "{why:?}"
        );
        // Writable again: the held records come first, in order.
        std::fs::remove_file(&blocker).unwrap();
        dl.check_writable().unwrap();
        assert!(!path.exists(), "the check leaves no file behind");
        dl.record_or_hold("s", 3, "malformed", "d", b"third");
        let positions: Vec<u64> = lines(&path).iter().map(|r| r["position"].as_u64().unwrap()).collect();
        assert_eq!(positions, [1, 2, 3]);
        assert_eq!((dl.held(), dl.lost(), dl.total()), (0, 0, 3));
        assert!(!health.readiness().1.iter().any(|w| w.contains("dead-letter")), "{:?}", health.readiness().1);
    }

    #[test]
    fn past_the_bound_the_oldest_held_records_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a-file").join("dl.jsonl");
        std::fs::write(dir.path().join("a-file"), "").unwrap();
        let mut dl = DeadLetter::new(&path);
        for i in 0..HOLD_RECORDS as u64 + 10 {
            dl.record_or_hold("s", i, "malformed", "d", b"x");
        }
        assert_eq!((dl.held(), dl.lost()), (HOLD_RECORDS, 10));
        let big = vec![b'y'; KEEP_BYTES];
        for i in 0..200 {
            dl.record_or_hold("s", i, "oversized", "d", &big);
        }
        assert!(dl.held_bytes <= HOLD_BYTES, "{} bytes held", dl.held_bytes);
        std::fs::remove_file(dir.path().join("a-file")).unwrap();
        dl.flush().unwrap();
        let written = lines(&path);
        assert!(written.iter().all(|r| r["reason"] == "oversized" || r["reason"] == "malformed"));
        assert_eq!(written.last().unwrap()["position"], 199, "the newest are kept");
        assert_eq!(written.len() as u64 + dl.lost(), dl.total());
    }

    #[test]
    fn a_command_that_stops_keeps_nothing_held() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-file"), "").unwrap();
        let mut dl = DeadLetter::new(dir.path().join("a-file").join("dl.jsonl"));
        let err = dl.record("s", 1, "malformed", "d", b"x").unwrap_err();
        assert!(err.to_string().contains("cannot create its directory"), "{err}");
        assert_eq!((dl.held(), dl.total()), (0, 1));
    }
}
