//! Progress on long work (`import`, `replay`, `apply-batch`, `export` to a
//! file, `replay --from`): a bar on stderr when it is a terminal; otherwise
//! (a log collector, CI, a pipe) a plain line at most every
//! [`PLAIN_EVERY`], so a long run still says how far it is without flooding
//! anything. Nothing is drawn for work that ends before the first line is
//! due.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is written when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    /// A count of things, named (`posts`, `minutes`).
    Items(&'static str),
}

/// The progress of one piece of work.
pub struct Progress {
    what: &'static str,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    /// Counted but not yet shown (the bar is told in steps, not per line).
    unshown: u64,
    /// How much is counted before the bar or the line is looked at.
    step: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    next_plain: Option<Instant>,
}

impl Progress {
    /// Progress of `what` (`import`, `export`), out of `total` when known.
    pub fn new(what: &'static str, unit: Unit, total: Option<u64>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress::with(what, unit, total, terminal)
    }

    fn with(what: &'static str, unit: Unit, total: Option<u64>, terminal: bool) -> Progress {
        let started = Instant::now();
        let bar = terminal.then(|| {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr_with_hz(4)),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4)),
            };
            let count = match unit {
                Unit::Bytes => "{bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)".to_owned(),
                Unit::Items(name) if total.is_some() => format!("{{pos}}/{{len}} {name} ({{per_sec}}, {{eta}} left)"),
                Unit::Items(name) => format!("{{pos}} {name} ({{per_sec}})"),
            };
            let template = if total.is_some() {
                format!("{what}: [{{elapsed_precise}}] {{wide_bar}} {count}")
            } else {
                format!("{what}: [{{elapsed_precise}}] {{spinner}} {count}")
            };
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        // About a thousandth of the work at a time, and never per line of a
        // big one (the bar has a lock).
        let step = match (unit, total) {
            (Unit::Items(_), Some(t)) => (t / 1000).clamp(1, 1024),
            (Unit::Items(_), None) => 1024,
            (Unit::Bytes, _) => 1 << 16,
        };
        Progress {
            what,
            unit,
            total,
            done: 0,
            unshown: 0,
            step,
            started,
            bar,
            next_plain: (!terminal).then(|| started + PLAIN_EVERY),
        }
    }

    /// Progress that shows nothing (tests, a library caller).
    pub fn hidden() -> Progress {
        Progress {
            what: "",
            unit: Unit::Bytes,
            total: None,
            done: 0,
            unshown: 0,
            step: u64::MAX,
            started: Instant::now(),
            bar: None,
            next_plain: None,
        }
    }

    /// `n` more done.
    #[inline]
    pub fn add(&mut self, n: u64) {
        self.done += n;
        self.unshown += n;
        if self.unshown >= self.step {
            self.show();
        }
    }

    fn show(&mut self) {
        self.unshown = 0;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if let Some(next) = self.next_plain {
            let now = Instant::now();
            if now >= next {
                self.next_plain = Some(now + PLAIN_EVERY);
                eprintln!("{}", self.plain_line(now));
            }
        }
    }

    /// The line written when stderr is not a terminal.
    fn plain_line(&self, now: Instant) -> String {
        let secs = now.duration_since(self.started).as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let (done, rate) = match self.unit {
            Unit::Bytes => (format!("{:.1} MB", self.done as f64 / 1e6), format!("{:.1} MB/s", rate / 1e6)),
            Unit::Items(name) => (format!("{} {name}", self.done), format!("{rate:.0} {name}/s")),
        };
        match self.total {
            Some(t) if t > 0 => {
                let share = self.done as f64 / t as f64;
                let left = if share > 0.0 { secs / share - secs } else { 0.0 };
                format!("{}: {done} ({:.0}%), {rate}, about {left:.0} s left", self.what, share * 100.0)
            }
            _ => format!("{}: {done}, {rate}", self.what),
        }
    }

    /// The work is over: the bar goes (the summary line follows it).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far_how_fast_and_how_long_is_left() {
        let mut p = Progress::with("import", Unit::Bytes, Some(4_000_000), false);
        p.done = 1_000_000;
        let line = p.plain_line(p.started + Duration::from_secs(2));
        assert_eq!(line, "import: 1.0 MB (25%), 0.5 MB/s, about 6 s left");
        let mut q = Progress::with("export", Unit::Items("posts"), None, false);
        q.done = 3_000;
        assert_eq!(q.plain_line(q.started + Duration::from_secs(3)), "export: 3000 posts, 1000 posts/s");
        assert!(p.bar.is_none() && q.bar.is_none(), "no bar unless stderr is a terminal");
        assert!(Progress::hidden().next_plain.is_none());
    }
}
