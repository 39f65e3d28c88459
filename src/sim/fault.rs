//! Faults: what they are (the JSON of `POST /admin/faults` and of
//! `[[faults]]` in the config) and the board that holds the armed ones until a
//! connection or a request claims them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// How a replay ends (its closing `info` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// Every event of the range, then "Replay Request Completed".
    #[default]
    Completed,
    /// The first minute of the range is left out and listed in
    /// `minutes_failed` ("Replay Request Completed with Errors").
    CompletedWithErrors,
    /// Only the first half of the range (whole minutes) is sent; the rest is
    /// named in `unprocessed_range` ("Replay Request Failed to Complete").
    Failed,
}

fn d_stall() -> u64 {
    120_000
}
fn d_lines() -> u32 {
    3
}
fn d_oversized() -> usize {
    1_572_864
}
fn d_bps() -> u64 {
    256
}
/// Largest oversized line (64 MiB).
const MAX_OVERSIZED: usize = 64 * 1024 * 1024;
fn one() -> u32 {
    1
}

/// What goes wrong. Connection faults act on stream connections; `status`
/// on connection attempts; `replay_*` on replay requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Send the first half of a message (no `\r\n`), then drop the TCP
    /// connection without the terminating zero-length chunk. That message and
    /// the rest of its batch are lost.
    DropMidMessage,
    /// Send nothing at all (no data, no heartbeat) for `duration_ms`, then
    /// carry on (a live connection that fell too far behind meanwhile then
    /// gets the full-buffer disconnect).
    Stall {
        /// How long (default 120000 ms).
        #[serde(default = "d_stall")]
        duration_ms: u64,
    },
    /// Answer the next `count` connection attempts with this HTTP status
    /// (401, 429 or 503 are the documented ones) and the matching JSON body.
    Status {
        /// The status code (400-599).
        status: u16,
    },
    /// Send `{"error":{"message":"Forced Disconnect: ...","sent":"..."}}`,
    /// then end the stream cleanly (gzip trailer, zero-length chunk).
    ForcedDisconnect {
        /// The message (default: `forced_disconnect_message` of the config).
        #[serde(default)]
        message: Option<String>,
    },
    /// Throw away what is buffered for the connection (and then incoming
    /// events until at least `lose_events` were thrown away), send the
    /// "unable to keep up" error, end the stream cleanly. Lost events are
    /// never written, never recorded, and counted in `events_skipped`.
    FullBuffer {
        /// Least number of events lost (default 0: only what is buffered).
        #[serde(default)]
        lose_events: u64,
    },
    /// Send `lines` malformed lines (invalid JSON, truncated JSON, HTML, a
    /// JSON array...), then carry on.
    Malformed {
        /// How many (default 3).
        #[serde(default = "d_lines")]
        lines: u32,
    },
    /// Send one valid JSON line of an unknown type that is `bytes` long
    /// (default 1.5 MiB), then carry on.
    Oversized {
        /// Line length without `\r\n` (default 1572864).
        #[serde(default = "d_oversized")]
        bytes: usize,
    },
    /// Send the first half of a message, compressed and cut inside its deflate
    /// block, then end the HTTP body cleanly with no gzip trailer.
    TruncatedGzip,
    /// Write at most `bytes_per_sec` (in small pieces) for `duration_ms`
    /// (for the rest of the connection when absent). A live connection soon
    /// falls behind and gets the full-buffer disconnect.
    Trickle {
        /// Compressed bytes per second (default 256).
        #[serde(default = "d_bps")]
        bytes_per_sec: u64,
        /// How long (default: until the connection ends).
        #[serde(default)]
        duration_ms: Option<u64>,
    },
    /// The next `count` replays end this way.
    ReplayOutcome {
        /// The outcome.
        outcome: ReplayOutcome,
    },
    /// The next `count` replays are dropped half-way (no `info` line, no
    /// terminating chunk).
    ReplayAbort,
    /// The next `count` batch compliance jobs fail after their upload.
    JobFailed,
    /// The next `count` jobs are created with an upload URL already expired.
    JobUploadExpired,
    /// The next `count` jobs' download URLs have expired when they complete.
    JobDownloadExpired,
    /// The next `count` jobs' results carry `lines` malformed lines.
    JobBadLines {
        /// How many (default 3).
        #[serde(default = "d_lines")]
        lines: u32,
    },
}

/// One fault: its kind plus where, how often and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// What goes wrong (`"kind"` in JSON, with the kind's own fields).
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Partition 1..=8; absent = every partition. For connection faults,
    /// "every partition" arms one copy per partition; for `status` it means
    /// the next attempts whatever their partition.
    #[serde(default)]
    pub partition: Option<u8>,
    /// How many connections (connection faults), attempts (`status`) or
    /// replays (`replay_*`) it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Connection faults fire once the connection has sent this many events
    /// (0 = at once, on the open connection or the next one).
    #[serde(default)]
    pub after_events: u64,
}

impl Fault {
    /// A fault on every partition, once, at once.
    pub fn new(kind: FaultKind) -> Fault {
        Fault { kind, partition: None, count: 1, after_events: 0 }
    }

    /// Only on partition `p` (1..=8).
    pub fn on_partition(mut self, p: u8) -> Fault {
        self.partition = Some(p);
        self
    }

    /// Applies to `n` connections / attempts / replays.
    pub fn times(mut self, n: u32) -> Fault {
        self.count = n;
        self
    }

    /// Fires once the connection has sent `n` events.
    pub fn after(mut self, n: u64) -> Fault {
        self.after_events = n;
        self
    }

    /// Checks the fields.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(p) = self.partition {
            if !(1..=8).contains(&p) {
                return Err(format!("partition must be 1..=8, got {p}"));
            }
        }
        if self.count == 0 {
            return Err("count must be at least 1".into());
        }
        const WEEK_MS: u64 = 7 * 86_400_000;
        match &self.kind {
            FaultKind::Status { status } if !(400..=599).contains(status) => {
                Err(format!("status must be an HTTP error status (400-599), got {status}"))
            }
            FaultKind::Stall { duration_ms } if *duration_ms > WEEK_MS => {
                Err(format!("duration_ms must not exceed {WEEK_MS}"))
            }
            FaultKind::Trickle { bytes_per_sec, duration_ms } => {
                if *bytes_per_sec == 0 {
                    Err("bytes_per_sec must be > 0".into())
                } else if duration_ms.is_some_and(|d| d > WEEK_MS) {
                    Err(format!("duration_ms must not exceed {WEEK_MS}"))
                } else {
                    Ok(())
                }
            }
            FaultKind::Oversized { bytes } if !(64..=MAX_OVERSIZED).contains(bytes) => {
                Err(format!("bytes must be within 64..={MAX_OVERSIZED}"))
            }
            FaultKind::Malformed { lines } if *lines > 100_000 => Err("lines must not exceed 100000".into()),
            _ => Ok(()),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            FaultKind::DropMidMessage => "drop_mid_message",
            FaultKind::Stall { .. } => "stall",
            FaultKind::Status { .. } => "status",
            FaultKind::ForcedDisconnect { .. } => "forced_disconnect",
            FaultKind::FullBuffer { .. } => "full_buffer",
            FaultKind::Malformed { .. } => "malformed",
            FaultKind::Oversized { .. } => "oversized",
            FaultKind::TruncatedGzip => "truncated_gzip",
            FaultKind::Trickle { .. } => "trickle",
            FaultKind::ReplayOutcome { .. } => "replay_outcome",
            FaultKind::ReplayAbort => "replay_abort",
            FaultKind::JobFailed => "job_failed",
            FaultKind::JobUploadExpired => "job_upload_expired",
            FaultKind::JobDownloadExpired => "job_download_expired",
            FaultKind::JobBadLines { .. } => "job_bad_lines",
        }
    }
}

struct Armed {
    id: u64,
    fault: Fault,
    remaining: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The armed faults.
pub(crate) struct FaultBoard {
    next_id: AtomicU64,
    conn: [Mutex<Vec<Armed>>; 8],
    gens: [AtomicU64; 8],
    notify: [Notify; 8],
    status: Mutex<Vec<Armed>>,
    replay: Mutex<Vec<Armed>>,
    jobs: Mutex<Vec<Armed>>,
}

impl FaultBoard {
    pub(crate) fn new() -> FaultBoard {
        FaultBoard {
            next_id: AtomicU64::new(1),
            conn: Default::default(),
            gens: Default::default(),
            notify: Default::default(),
            status: Mutex::new(Vec::new()),
            replay: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
        }
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Arms a (validated) fault.
    pub(crate) fn arm(&self, fault: Fault) {
        match fault.kind {
            FaultKind::Status { .. } => {
                let a = Armed { id: self.id(), remaining: fault.count, fault };
                lock(&self.status).push(a);
            }
            FaultKind::ReplayOutcome { .. } | FaultKind::ReplayAbort => {
                let a = Armed { id: self.id(), remaining: fault.count, fault };
                lock(&self.replay).push(a);
            }
            FaultKind::JobFailed
            | FaultKind::JobUploadExpired
            | FaultKind::JobDownloadExpired
            | FaultKind::JobBadLines { .. } => {
                let a = Armed { id: self.id(), remaining: fault.count, fault };
                lock(&self.jobs).push(a);
            }
            _ => {
                let parts: Vec<u8> = match fault.partition {
                    Some(p) => vec![p],
                    None => (1..=8).collect(),
                };
                for p in parts {
                    let i = usize::from(p - 1);
                    let a = Armed { id: self.id(), remaining: fault.count, fault: fault.clone() };
                    lock(&self.conn[i]).push(a);
                    self.gens[i].fetch_add(1, Ordering::Release);
                    self.notify[i].notify_waiters();
                }
            }
        }
    }

    /// Puts back a connection fault that a connection claimed but never
    /// fired (it closed first), for the next connection.
    pub(crate) fn rearm(&self, p: u8, mut fault: Fault) {
        fault.partition = Some(p);
        fault.count = 1;
        self.arm(fault);
    }

    pub(crate) fn generation(&self, p: u8) -> u64 {
        self.gens[usize::from(p - 1)].load(Ordering::Acquire)
    }

    pub(crate) fn notify(&self, p: u8) -> &Notify {
        &self.notify[usize::from(p - 1)]
    }

    /// Claims, for one connection, every armed fault of partition `p` it has
    /// not claimed before.
    pub(crate) fn claim(&self, p: u8, claimed: &mut Vec<u64>) -> Vec<Fault> {
        let mut list = lock(&self.conn[usize::from(p - 1)]);
        let mut out = Vec::new();
        list.retain_mut(|a| {
            if claimed.contains(&a.id) {
                return true;
            }
            claimed.push(a.id);
            out.push(a.fault.clone());
            a.remaining -= 1;
            a.remaining > 0
        });
        out
    }

    /// Consumes one armed `status` fault that applies to this attempt.
    pub(crate) fn take_status(&self, partition: Option<u8>) -> Option<u16> {
        let mut list = lock(&self.status);
        let pos = list.iter().position(|a| a.fault.partition.is_none() || a.fault.partition == partition)?;
        let status = match list[pos].fault.kind {
            FaultKind::Status { status } => status,
            _ => 503,
        };
        list[pos].remaining -= 1;
        if list[pos].remaining == 0 {
            list.remove(pos);
        }
        Some(status)
    }

    /// Consumes the replay faults for one replay: (outcome override, abort).
    pub(crate) fn take_replay(&self) -> (Option<ReplayOutcome>, bool) {
        let mut list = lock(&self.replay);
        let mut outcome = None;
        let mut abort = false;
        list.retain_mut(|a| {
            let take = match a.fault.kind {
                FaultKind::ReplayOutcome { outcome: o } if outcome.is_none() => {
                    outcome = Some(o);
                    true
                }
                FaultKind::ReplayAbort if !abort => {
                    abort = true;
                    true
                }
                _ => false,
            };
            if take {
                a.remaining -= 1;
            }
            a.remaining > 0
        });
        (outcome, abort)
    }

    /// Consumes the fault of one job being created: the first armed job
    /// fault (one job suffers one fault; the next job the next one).
    pub(crate) fn take_job(&self) -> super::jobs::JobFaults {
        let mut out = super::jobs::JobFaults::default();
        let mut list = lock(&self.jobs);
        let Some(a) = list.first_mut() else {
            return out;
        };
        match a.fault.kind {
            FaultKind::JobFailed => out.failed = true,
            FaultKind::JobUploadExpired => out.upload_expired = true,
            FaultKind::JobDownloadExpired => out.download_expired = true,
            FaultKind::JobBadLines { lines } => out.bad_lines = lines,
            _ => {}
        }
        a.remaining -= 1;
        if a.remaining == 0 {
            list.remove(0);
        }
        out
    }

    /// Every armed fault with its remaining count.
    pub(crate) fn list(&self) -> Vec<Fault> {
        let mut out = Vec::new();
        let mut push = |list: &Vec<Armed>| {
            for a in list {
                let mut f = a.fault.clone();
                f.count = a.remaining;
                out.push(f);
            }
        };
        push(&lock(&self.status));
        push(&lock(&self.replay));
        push(&lock(&self.jobs));
        for (i, m) in self.conn.iter().enumerate() {
            let list = lock(m);
            for a in list.iter() {
                let mut f = a.fault.clone();
                f.count = a.remaining;
                f.partition = Some(i as u8 + 1);
                out.push(f);
            }
        }
        out
    }

    /// Disarms everything; returns how many entries were dropped.
    pub(crate) fn clear(&self) -> usize {
        let mut n = lock(&self.status).drain(..).count();
        n += lock(&self.replay).drain(..).count();
        n += lock(&self.jobs).drain(..).count();
        for m in &self.conn {
            n += lock(m).drain(..).count();
        }
        n
    }
}

/// The malformed lines the `malformed` fault cycles through. None contains a
/// carriage return, a newline or a tab.
pub(crate) const MALFORMED_LINES: [&str; 6] = [
    // The documented tweet_edit example, with its missing comma.
    r#"{"tweet_edit":{"id":"1557445923210514432" "initial_tweet_id":"1557433858676740098","edit_tweet_ids":["1557433858676740098","1557445923210514432"],"timestamp_ms":"1660155761384"}}"#,
    r#"{"delete":{"status":{"id":601430178305220600,"id_str":"6014301783052"#,
    "<html><body><h1>502 Bad Gateway</h1></body></html>",
    r#"{"delete":{"status":{"id":,"id_str":""},"timestamp_ms":}}"#,
    r#"[{"user_delete":{"id":771136850,"timestamp_ms":"1432228153548"}}]"#,
    r#"{"user_protect":{"id":3182003550,"timestamp_ms":"1432228177137"}"#,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_admin_json() {
        let f: Fault = serde_json::from_str(r#"{"kind":"stall","partition":3,"duration_ms":500}"#).unwrap();
        assert_eq!(f.kind, FaultKind::Stall { duration_ms: 500 });
        assert_eq!((f.partition, f.count, f.after_events), (Some(3), 1, 0));
        let f: Fault = serde_json::from_str(r#"{"kind":"drop_mid_message"}"#).unwrap();
        assert_eq!(f, Fault::new(FaultKind::DropMidMessage));
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"nope"}"#).is_err());
        let bad = Fault::new(FaultKind::DropMidMessage).on_partition(9);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn claims_are_once_per_connection_and_counted() {
        let b = FaultBoard::new();
        b.arm(Fault::new(FaultKind::TruncatedGzip).on_partition(2).times(2));
        let (mut c1, mut c2, mut c3) = (Vec::new(), Vec::new(), Vec::new());
        assert_eq!(b.claim(2, &mut c1).len(), 1);
        assert_eq!(b.claim(2, &mut c1).len(), 0, "a connection claims a fault once");
        assert_eq!(b.claim(2, &mut c2).len(), 1);
        assert_eq!(b.claim(2, &mut c3).len(), 0, "count exhausted");
        assert_eq!(b.claim(1, &mut c3).len(), 0, "other partitions untouched");
    }

    #[test]
    fn status_faults_count_down() {
        let b = FaultBoard::new();
        b.arm(Fault::new(FaultKind::Status { status: 503 }).times(2));
        assert_eq!(b.take_status(Some(4)), Some(503));
        assert_eq!(b.take_status(Some(1)), Some(503));
        assert_eq!(b.take_status(Some(1)), None);
    }
}
