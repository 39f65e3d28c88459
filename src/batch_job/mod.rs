//! X API v2 batch compliance jobs, run end to end (`complyd batch-job run`):
//! the ids (of the store, or of a file) are split into parts of at most
//! `batch_job.max_ids`; each part gets a job that is created, uploaded,
//! waited for, downloaded and applied through `apply-batch`. Every job's id
//! and stage are kept in the store, so an interrupted command resumes the
//! job it had paid for instead of creating another.
//!
//! This module holds what a job is and what comes next for it ([`Run`],
//! [`Step`]); [`api`] speaks to X, [`run`] carries the steps out.

pub mod api;
pub mod run;

use crate::event::TimeMs;
use std::fmt;

/// The kind of ids a job (or a batch-compliance result file) lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum BatchType {
    Tweets,
    Users,
}

impl BatchType {
    pub fn as_str(&self) -> &'static str {
        match self {
            BatchType::Tweets => "tweets",
            BatchType::Users => "users",
        }
    }
    pub fn parse(s: &str) -> Option<BatchType> {
        match s {
            "tweets" => Some(BatchType::Tweets),
            "users" => Some(BatchType::Users),
            _ => None,
        }
    }
}

impl fmt::Display for BatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job stands, as complyd has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Created at X; its ids are not uploaded yet.
    Created,
    /// Its ids are uploaded; X is working on it.
    Uploaded,
    /// Its result is downloaded (beside the store), not yet applied.
    Downloaded,
    /// Its result is applied to the store: this part is done.
    Applied,
    /// X said it failed: the part needs another job.
    Failed,
    /// Its upload or download URL expired first: the part needs another job.
    Expired,
}

impl Stage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Created => "created",
            Stage::Uploaded => "uploaded",
            Stage::Downloaded => "downloaded",
            Stage::Applied => "applied",
            Stage::Failed => "failed",
            Stage::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        [Stage::Created, Stage::Uploaded, Stage::Downloaded, Stage::Applied, Stage::Failed, Stage::Expired]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
    /// Failed or expired: another job must take its place.
    pub fn is_dead(&self) -> bool {
        matches!(self, Stage::Failed | Stage::Expired)
    }
}

/// Where the ids of a run come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The stored posts (`tweets`) or their authors (`users`), in ascending
    /// id order; a part's cursors are store keys.
    Store,
    /// A file, one id a line; a part's cursors are line numbers.
    File(String),
}

impl Source {
    /// As kept in the store: `store` or `file:PATH`.
    pub fn key(&self) -> String {
        match self {
            Source::Store => "store".to_owned(),
            Source::File(p) => format!("file:{p}"),
        }
    }
    pub fn from_key(s: &str) -> Source {
        match s.strip_prefix("file:") {
            Some(p) => Source::File(p.to_owned()),
            None => Source::Store,
        }
    }
    /// The cursor a run starts after.
    pub fn start(&self) -> i64 {
        match self {
            Source::Store => i64::MIN,
            Source::File(_) => 0,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Store => f.write_str("the store"),
            Source::File(p) => write!(f, "{p}"),
        }
    }
}

/// One job, as kept in the store (`batch_jobs`). The signed URLs are
/// credentials of a kind: they are kept to resume, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BatchJob {
    /// X's id of the job.
    pub job_id: String,
    pub kind: BatchType,
    /// Which run (per kind) and which part of it.
    pub run: i64,
    pub part: u32,
    pub source: Source,
    /// The part's ids: after `cursor_from`, up to `cursor_to` included.
    pub cursor_from: i64,
    pub cursor_to: i64,
    pub ids: u64,
    /// No ids of the source come after this part.
    pub last_part: bool,
    pub stage: Stage,
    pub upload_url: String,
    pub upload_expires_ms: TimeMs,
    pub download_url: String,
    pub download_expires_ms: TimeMs,
    pub created_ms: TimeMs,
    pub updated_ms: TimeMs,
    /// Lines of the downloaded result.
    pub result_lines: Option<u64>,
    /// What happened last: why it failed, or what applying it did.
    pub note: String,
}

impl fmt::Debug for BatchJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchJob")
            .field("job_id", &self.job_id)
            .field("kind", &self.kind)
            .field("run", &self.run)
            .field("part", &self.part)
            .field("source", &self.source)
            .field("cursors", &(self.cursor_from, self.cursor_to))
            .field("ids", &self.ids)
            .field("last_part", &self.last_part)
            .field("stage", &self.stage)
            .field("result_lines", &self.result_lines)
            .field("note", &self.note)
            .finish_non_exhaustive()
    }
}

/// The parts of one run of one kind, each with its latest job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub kind: BatchType,
    pub run: i64,
    pub source: Source,
    /// Latest job per part, in part order.
    pub parts: Vec<BatchJob>,
}

/// What comes next in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Carry this part's job on from its stage.
    Continue(BatchJob),
    /// This part's job failed or expired: create another for its ids.
    Replace(BatchJob),
    /// Take the next part: the ids after `after`.
    NewPart { part: u32, after: i64 },
    /// Every part is applied.
    Done,
}

impl Run {
    /// The runs in `jobs` (any order), of every kind, oldest first.
    pub fn all(jobs: &[BatchJob]) -> Vec<Run> {
        let mut sorted: Vec<&BatchJob> = jobs.iter().collect();
        sorted.sort_by_key(|j| (j.kind.as_str(), j.run, j.part, j.created_ms));
        let mut runs: Vec<Run> = Vec::new();
        for j in sorted {
            match runs.last_mut() {
                Some(r) if r.kind == j.kind && r.run == j.run => match r.parts.last_mut() {
                    Some(p) if p.part == j.part => *p = j.clone(),
                    _ => r.parts.push(j.clone()),
                },
                _ => runs.push(Run { kind: j.kind, run: j.run, source: j.source.clone(), parts: vec![j.clone()] }),
            }
        }
        runs
    }

    /// The run of `kind` still to finish, if any (the latest one).
    pub fn unfinished(jobs: &[BatchJob], kind: BatchType) -> Option<Run> {
        Run::all(jobs).into_iter().rfind(|r| r.kind == kind).filter(|r| r.next() != Step::Done)
    }

    /// The number the next run of `kind` takes.
    pub fn next_number(jobs: &[BatchJob], kind: BatchType) -> i64 {
        jobs.iter().filter(|j| j.kind == kind).map(|j| j.run).max().unwrap_or(0) + 1
    }

    /// What to do next: the first part not applied, else the next part
    /// unless the last one is known.
    pub fn next(&self) -> Step {
        for p in &self.parts {
            match p.stage {
                Stage::Applied => {}
                s if s.is_dead() => return Step::Replace(p.clone()),
                _ => return Step::Continue(p.clone()),
            }
        }
        match self.parts.last() {
            Some(p) if p.last_part => Step::Done,
            Some(p) => Step::NewPart { part: p.part + 1, after: p.cursor_to },
            None => Step::NewPart { part: 1, after: self.source.start() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(run: i64, part: u32, created: i64, stage: Stage, last: bool) -> BatchJob {
        BatchJob {
            job_id: format!("{run}-{part}-{created}"),
            kind: BatchType::Tweets,
            run,
            part,
            source: Source::Store,
            cursor_from: i64::from(part) * 10 - 10,
            cursor_to: i64::from(part) * 10,
            ids: 10,
            last_part: last,
            stage,
            upload_url: "u".into(),
            upload_expires_ms: 0,
            download_url: "d".into(),
            download_expires_ms: 0,
            created_ms: created,
            updated_ms: created,
            result_lines: None,
            note: String::new(),
        }
    }

    #[test]
    fn a_run_goes_on_from_its_first_part_not_applied() {
        let jobs = vec![
            job(1, 1, 1, Stage::Applied, false),
            job(1, 2, 2, Stage::Failed, false),
            job(1, 2, 3, Stage::Uploaded, false),
        ];
        let run = Run::unfinished(&jobs, BatchType::Tweets).unwrap();
        assert_eq!(run.parts.len(), 2);
        assert_eq!(run.next(), Step::Continue(jobs[2].clone()), "the latest job of part 2, not the failed one");
        assert_eq!(Run::unfinished(&jobs, BatchType::Users), None);
    }

    #[test]
    fn a_dead_job_is_replaced_and_a_finished_part_leads_to_the_next() {
        let jobs = vec![job(1, 1, 1, Stage::Applied, false), job(1, 2, 2, Stage::Expired, false)];
        assert_eq!(Run::unfinished(&jobs, BatchType::Tweets).unwrap().next(), Step::Replace(jobs[1].clone()));
        let jobs = vec![job(1, 1, 1, Stage::Applied, false)];
        assert_eq!(Run::unfinished(&jobs, BatchType::Tweets).unwrap().next(), Step::NewPart { part: 2, after: 10 });
    }

    #[test]
    fn a_run_whose_last_part_is_applied_is_done_and_the_next_run_is_new() {
        let jobs = vec![job(1, 1, 1, Stage::Applied, false), job(1, 2, 2, Stage::Applied, true)];
        assert_eq!(Run::unfinished(&jobs, BatchType::Tweets), None);
        assert_eq!(Run::next_number(&jobs, BatchType::Tweets), 2);
        assert_eq!(Run::next_number(&jobs, BatchType::Users), 1);
        // An older unfinished run is not resumed once a newer one exists.
        let jobs = vec![job(1, 1, 1, Stage::Uploaded, false), job(2, 1, 2, Stage::Applied, true)];
        assert_eq!(Run::unfinished(&jobs, BatchType::Tweets), None);
    }

    #[test]
    fn stages_and_sources_read_back_what_they_wrote() {
        for s in [Stage::Created, Stage::Uploaded, Stage::Downloaded, Stage::Applied, Stage::Failed, Stage::Expired] {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
        assert_eq!(Stage::parse("done"), None);
        for s in [Source::Store, Source::File("/tmp/a b.txt".into())] {
            assert_eq!(Source::from_key(&s.key()), s);
        }
    }
}
