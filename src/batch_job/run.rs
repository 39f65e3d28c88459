//! `complyd batch-job run` and `complyd batch-job list`: a run's steps
//! ([`super::Run::next`]) carried out against X, each stage kept in the
//! store before the next begins, so that the command can be stopped at any
//! moment and run again without creating a job it already has.
//!
//! Files beside the store (`batch_job` plan's `dir`): the ids of a part
//! (`<kind>-run<R>-part<P>.ids`, kept until the part is applied, for the
//! jobs that may replace a failed one) and each job's result
//! (`<job id>.result.jsonl`, kept).

use super::api::{Api, ApiError, JobInfo};
use super::{BatchJob, BatchType, Run, Source, Stage, Step};
use crate::clock::now_ms;
use crate::commands::{apply_batch, Failure};
use crate::deadletter::DeadLetter;
use crate::event::parse_id_str;
use crate::settings::BatchJobPlan;
use crate::store::{id_of, Store};
use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `complyd batch-job run` was asked.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub kind: BatchType,
    /// Ids from this file instead of the store.
    pub file: Option<PathBuf>,
    /// Start a new run even when one is unfinished (that one is left as is).
    pub new: bool,
}

/// Store keys read at a time while writing a part's ids.
const PAGE: usize = 10_000;
/// Transient failures asked again before the command gives up (resumable).
const TRIES: u32 = 6;

/// Runs (or resumes) a run of batch compliance jobs to its end.
///
/// # Errors
/// A [`Failure`]: a usage error (an unfinished run from another source, a
/// refused token), or a failure while working; either way what is done is
/// kept, and running the command again goes on from there.
pub fn run(store: &mut dyn Store, dl: &mut DeadLetter, plan: &BatchJobPlan, args: &RunArgs) -> Result<String, Failure> {
    let source = match &args.file {
        Some(p) => {
            let abs = std::fs::canonicalize(p).map_err(|e| Failure::Io(anyhow::anyhow!("{}: {e}", p.display())))?;
            Source::File(abs.display().to_string())
        }
        None => Source::Store,
    };
    let jobs = store.batch_jobs()?;
    let mut run = match Run::unfinished(&jobs, args.kind) {
        Some(r) if !args.new => {
            if r.source != source {
                return Err(Failure::Usage(format!(
                    "an unfinished {} run ({}) takes its ids from {}: finish it first (give the same source), or start anew with --new",
                    args.kind,
                    r.run,
                    r.source
                )));
            }
            eprintln!(
                "batch-job: resuming {} run {} from {} ({} parts begun)",
                args.kind,
                r.run,
                r.source,
                r.parts.len()
            );
            r
        }
        _ => Run { kind: args.kind, run: Run::next_number(&jobs, args.kind), source, parts: Vec::new() },
    };
    crate::files::private_dir(&plan.dir)
        .map_err(|e| Failure::Io(anyhow::anyhow!("cannot create {}: {e}", plan.dir.display())))?;
    // The HTTP calls run on this runtime, one `block_on` each; the store is
    // used between them, never inside (the PostgreSQL client blocks on a
    // runtime of its own, which cannot start inside another).
    let system = actix_rt::System::new();
    let api = system.block_on(async { Api::new(plan) });
    let mut worker = Worker { store, dl, plan, api: &api, system: &system, created: HashMap::new(), applied: 0 };
    worker.finish(&mut run)?;
    let ids: u64 = run.parts.iter().map(|p| p.ids).sum();
    let lines: u64 = run.parts.iter().filter_map(|p| p.result_lines).sum();
    Ok(format!(
        "batch-job: {} run {} done: {ids} ids in {} parts, {lines} result lines applied; {} jobs created by this command, {} results applied by it; dead-lettered {}",
        run.kind,
        run.run,
        run.parts.len(),
        worker.created.values().sum::<u32>(),
        worker.applied,
        dl.total()
    ))
}

struct Worker<'a> {
    store: &'a mut dyn Store,
    dl: &'a mut DeadLetter,
    plan: &'a BatchJobPlan,
    api: &'a Api,
    system: &'a actix_rt::SystemRunner,
    /// Jobs this command created, per part.
    created: HashMap<u32, u32>,
    /// Results this command applied.
    applied: u32,
}

impl Worker<'_> {
    fn finish(&mut self, run: &mut Run) -> Result<(), Failure> {
        loop {
            match run.next() {
                Step::Done => return Ok(()),
                Step::NewPart { part, after } => {
                    let spool = self.spool_path(run.run, run.kind, part);
                    let s = self.spool(run.kind, &run.source, after, None, &spool)?;
                    if s.ids == 0 {
                        match run.parts.last_mut() {
                            None => {
                                eprintln!("batch-job: no {} ids in {}: nothing to check", run.kind, run.source);
                                return Ok(());
                            }
                            // The part before was the last after all.
                            Some(prev) => {
                                prev.last_part = true;
                                self.store.save_batch_job(prev)?;
                                continue;
                            }
                        }
                    }
                    let job = self.create(run, part, after, s.to, s.ids, s.last)?;
                    run.parts.push(job);
                }
                Step::Replace(dead) => {
                    let n = self.created.get(&dead.part).copied().unwrap_or(0);
                    if n >= self.plan.attempts {
                        return Err(Failure::Io(anyhow::anyhow!(
                            "part {} of {} run {}: {n} jobs created by this command failed or expired (the last, {}: {}); run the command again to try once more",
                            dead.part,
                            run.kind,
                            run.run,
                            dead.job_id,
                            dead.note
                        )));
                    }
                    let job =
                        self.create(run, dead.part, dead.cursor_from, dead.cursor_to, dead.ids, dead.last_part)?;
                    replace(run, job);
                }
                Step::Continue(job) => {
                    let job = self.advance(run, job)?;
                    replace(run, job);
                }
            }
        }
    }

    fn spool_path(&self, run: i64, kind: BatchType, part: u32) -> PathBuf {
        self.plan.dir.join(format!("{kind}-run{run}-part{part}.ids"))
    }

    fn result_path(&self, job: &BatchJob) -> PathBuf {
        self.plan.dir.join(format!("{}.result.jsonl", job.job_id))
    }

    /// Creates a job for a part's ids and keeps it (stage created).
    fn create(&mut self, run: &Run, part: u32, from: i64, to: i64, ids: u64, last: bool) -> Result<BatchJob, Failure> {
        let name = format!("complyd {} run {} part {part}", run.kind, run.run);
        let info = self.system.block_on(retrying(|| self.api.create(run.kind, &name))).map_err(api_failure)?;
        *self.created.entry(part).or_insert(0) += 1;
        let now = now_ms();
        let job = BatchJob {
            job_id: info.id.clone(),
            kind: run.kind,
            run: run.run,
            part,
            source: run.source.clone(),
            cursor_from: from,
            cursor_to: to,
            ids,
            last_part: last,
            stage: Stage::Created,
            upload_url: info.upload_url.clone(),
            upload_expires_ms: info.upload_expires_ms,
            download_url: info.download_url.clone(),
            download_expires_ms: info.download_expires_ms,
            created_ms: now,
            updated_ms: now,
            result_lines: None,
            note: String::new(),
        };
        self.store.save_batch_job(&job)?;
        eprintln!("batch-job: job {} created for part {part} of {} run {} ({ids} ids)", job.job_id, run.kind, run.run);
        Ok(job)
    }

    /// Moves a job one stage on (or to failed/expired), and keeps it.
    fn advance(&mut self, run: &Run, mut job: BatchJob) -> Result<BatchJob, Failure> {
        match job.stage {
            Stage::Created => self.upload(run, &mut job)?,
            Stage::Uploaded => self.wait_and_download(&mut job)?,
            Stage::Downloaded => self.apply(&mut job)?,
            Stage::Applied | Stage::Failed | Stage::Expired => return Ok(job),
        }
        job.updated_ms = now_ms();
        self.store.save_batch_job(&job)?;
        Ok(job)
    }

    fn upload(&mut self, run: &Run, job: &mut BatchJob) -> Result<(), Failure> {
        // A margin: an upload begun just before the expiry may be refused.
        if now_ms() + 5_000 >= job.upload_expires_ms {
            job.stage = Stage::Expired;
            job.note = "its upload URL expired before the ids were uploaded".to_owned();
            eprintln!("batch-job: job {}: {}; another job takes its part", job.job_id, job.note);
            return Ok(());
        }
        let spool = self.spool_path(run.run, run.kind, job.part);
        if !spool.exists() {
            // Removed meanwhile: the same ids again (their bad lines were
            // dead-lettered the first time).
            self.spool(run.kind, &run.source, job.cursor_from, Some(job.cursor_to), &spool)?;
        }
        match self.system.block_on(retrying(|| self.api.upload(&job.upload_url, &spool))) {
            Ok(()) => {
                job.stage = Stage::Uploaded;
                eprintln!("batch-job: job {}: {} ids uploaded", job.job_id, job.ids);
            }
            Err(e @ ApiError::Refused { .. }) => {
                job.stage = Stage::Expired;
                job.note = format!("the upload was refused: {e}");
                eprintln!("batch-job: job {}: {}; another job takes its part", job.job_id, job.note);
            }
            Err(e) => return Err(api_failure(e)),
        }
        Ok(())
    }

    fn wait_and_download(&mut self, job: &mut BatchJob) -> Result<(), Failure> {
        let started = Instant::now();
        let mut progress =
            crate::progress::Progress::new("batch-job wait", crate::progress::Unit::Items("s waited"), None);
        let mut waited = 0u64;
        let info: JobInfo = loop {
            let info = self.system.block_on(retrying(|| self.api.get(&job.job_id))).map_err(api_failure)?;
            match info.status.as_str() {
                "complete" | "failed" | "expired" => break info,
                status => {
                    if started.elapsed() >= self.plan.max_wait {
                        return Err(Failure::Io(anyhow::anyhow!(
                            "job {} is still {status} after {} s (batch_job.max_wait_ms); run the command again to go on waiting for the same job",
                            job.job_id,
                            started.elapsed().as_secs()
                        )));
                    }
                    let pause = pause_for(&info, now_ms(), self.plan.poll_interval);
                    std::thread::sleep(pause);
                    let now = started.elapsed().as_secs();
                    progress.add(now - waited);
                    waited = now;
                }
            }
        };
        progress.finish();
        match info.status.as_str() {
            "failed" => {
                job.stage = Stage::Failed;
                job.note = format!("X says it failed: {}", info.error.as_deref().unwrap_or("(no reason given)"));
                eprintln!("batch-job: job {}: {}; another job takes its part", job.job_id, job.note);
                return Ok(());
            }
            "expired" => {
                job.stage = Stage::Expired;
                job.note = "X says it expired".to_owned();
                eprintln!("batch-job: job {}: {}; another job takes its part", job.job_id, job.note);
                return Ok(());
            }
            _ => {}
        }
        if !info.download_url.is_empty() {
            job.download_url = info.download_url;
            job.download_expires_ms = info.download_expires_ms;
        }
        let path = self.result_path(job);
        match self.system.block_on(retrying(|| self.api.download(&job.download_url, &path))) {
            Ok(lines) => {
                job.stage = Stage::Downloaded;
                job.result_lines = Some(lines);
                eprintln!("batch-job: job {}: result downloaded ({lines} lines)", job.job_id);
            }
            Err(e @ ApiError::Refused { .. }) => {
                job.stage = Stage::Expired;
                job.note = format!("its result could not be downloaded: {e}");
                eprintln!("batch-job: job {}: {}; another job takes its part", job.job_id, job.note);
            }
            Err(e) => return Err(api_failure(e)),
        }
        Ok(())
    }

    fn apply(&mut self, job: &mut BatchJob) -> Result<(), Failure> {
        let path = self.result_path(job);
        if !path.exists() {
            // Lost after the download: fetch it again while it can be.
            job.stage = if now_ms() < job.download_expires_ms { Stage::Uploaded } else { Stage::Expired };
            job.note = format!("its result file {} is missing", path.display());
            return Ok(());
        }
        let summary = apply_batch(&mut *self.store, self.dl, job.kind, &[path.display().to_string()])?;
        job.stage = Stage::Applied;
        job.note = summary.clone();
        // The part's ids were kept for the jobs that might replace this one.
        let _ = std::fs::remove_file(self.spool_path(job.run, job.kind, job.part));
        self.applied += 1;
        eprintln!("batch-job: job {}: {summary}", job.job_id);
        Ok(())
    }

    /// Writes a part's ids to `path`, one a line: after cursor `after`, at
    /// most `max_ids` of them (or, with `upto`, those up to that cursor).
    fn spool(
        &mut self,
        kind: BatchType,
        source: &Source,
        after: i64,
        upto: Option<i64>,
        path: &Path,
    ) -> Result<Spooled, Failure> {
        let io = |e: std::io::Error| Failure::Io(anyhow::anyhow!("writing {}: {e}", path.display()));
        let mut out = BufWriter::new(crate::files::write_private(path).map_err(io)?);
        let max = self.plan.max_ids;
        let mut s = Spooled { to: after, ids: 0, last: false };
        match source {
            Source::Store => loop {
                let want = (max - s.ids).min(PAGE as u64) as usize;
                if want == 0 {
                    s.last = self.store.id_page(kind, s.to, 1)?.is_empty();
                    break;
                }
                let page = self.store.id_page(kind, s.to, want)?;
                for &k in &page {
                    if upto.is_some_and(|u| k > u) {
                        s.last = true;
                        break;
                    }
                    writeln!(out, "{}", id_of(k)).map_err(io)?;
                    s.to = k;
                    s.ids += 1;
                }
                if s.last || page.len() < want {
                    s.last = true;
                    break;
                }
            },
            Source::File(name) => {
                let f = std::fs::File::open(name).map_err(|e| Failure::Io(anyhow::anyhow!("{name}: {e}")))?;
                let mut lines = BufReader::new(f);
                let mut n = 0i64;
                let mut buf = Vec::new();
                s.last = true;
                loop {
                    buf.clear();
                    let read =
                        lines.read_until(b'\n', &mut buf).map_err(|e| Failure::Io(anyhow::anyhow!("{name}: {e}")))?;
                    if read == 0 {
                        break;
                    }
                    n += 1;
                    if n <= after {
                        continue;
                    }
                    if upto.is_some_and(|u| n > u) {
                        break;
                    }
                    let line = buf.trim_ascii();
                    if line.is_empty() {
                        continue;
                    }
                    if s.ids == max {
                        // One more id: this part is not the last.
                        s.last = false;
                        break;
                    }
                    let parsed = std::str::from_utf8(line)
                        .map_err(|e| e.to_string())
                        .and_then(|t| parse_id_str(t).map_err(|e| e.to_string()));
                    match parsed {
                        Ok(id) => {
                            writeln!(out, "{id}").map_err(io)?;
                            s.ids += 1;
                        }
                        // Dead-lettered once: not again when the part is
                        // written anew (`upto`).
                        Err(detail) if upto.is_none() => self
                            .dl
                            .record(name, n as u64, "bad_id", &format!("not an id: {detail}"), line)
                            .map_err(|e| Failure::Io(anyhow::anyhow!("cannot write the dead-letter file: {e}")))?,
                        Err(_) => {}
                    }
                    s.to = n;
                }
            }
        }
        out.flush().map_err(io)?;
        self.dl.flush().map_err(|e| Failure::Io(anyhow::anyhow!("cannot write the dead-letter file: {e}")))?;
        Ok(s)
    }
}

/// A part's ids written out.
struct Spooled {
    /// The cursor of the last id written.
    to: i64,
    ids: u64,
    /// No ids come after.
    last: bool,
}

fn replace(run: &mut Run, job: BatchJob) {
    match run.parts.iter_mut().find(|p| p.part == job.part) {
        Some(p) => *p = job,
        None => run.parts.push(job),
    }
}

/// How long to wait before looking at a job again: until X's estimated
/// completion when it lies ahead (looked at again within the hour), else
/// the poll interval.
pub fn pause_for(info: &JobInfo, now: i64, poll: Duration) -> Duration {
    match info.estimated_completion_ms {
        Some(at) if at > now => Duration::from_millis((at - now) as u64 + 200).min(Duration::from_secs(3600)),
        _ => poll,
    }
}

/// Calls again after a transient failure (a pause that doubles, or X's
/// rate-limit reset), [`TRIES`] times at most.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if e.is_transient() && tries + 1 < TRIES => {
                let pause = match &e {
                    ApiError::RateLimited { retry_in, .. } => *retry_in,
                    _ => Duration::from_secs(1 << tries),
                };
                eprintln!("batch-job: {e}; asking again in {} s", pause.as_secs().max(1));
                tokio::time::sleep(pause).await;
                tries += 1;
            }
            r => return r,
        }
    }
}

/// A refused token is the configuration's fault (exit 1); anything else
/// happened while working (exit 2), and the command can be run again.
fn api_failure(e: ApiError) -> Failure {
    match e {
        ApiError::Unauthorized { .. } => Failure::Usage(e.to_string()),
        e => Failure::Io(anyhow::Error::new(e).context("batch-job stopped; run it again to go on where it stopped")),
    }
}

/// `complyd batch-job list`: every job kept, a table or JSON lines.
///
/// # Errors
/// Store or output errors.
pub fn list(store: &mut dyn Store, kind: Option<BatchType>, json: bool, mut out: impl Write) -> Result<usize, Failure> {
    let jobs: Vec<BatchJob> = store.batch_jobs()?.into_iter().filter(|j| kind.map_or(true, |k| j.kind == k)).collect();
    let w = |e: std::io::Error| Failure::Io(anyhow::anyhow!("writing the list: {e}"));
    if json {
        for j in &jobs {
            let v = serde_json::json!({
                "job_id": j.job_id,
                "type": j.kind.as_str(),
                "run": j.run,
                "part": j.part,
                "source": j.source.key(),
                "ids": j.ids,
                "last_part": j.last_part,
                "stage": j.stage.as_str(),
                "created_at": crate::commands::utc(j.created_ms),
                "updated_at": crate::commands::utc(j.updated_ms),
                "result_lines": j.result_lines,
                "note": j.note,
            });
            writeln!(out, "{v}").map_err(w)?;
        }
    } else {
        writeln!(
            out,
            "{:<22} {:<6} {:>4} {:>4} {:>10} {:<10} {:<20} {:>8}  NOTE",
            "JOB", "TYPE", "RUN", "PART", "IDS", "STAGE", "UPDATED (UTC)", "RESULT"
        )
        .map_err(w)?;
        for j in &jobs {
            writeln!(
                out,
                "{:<22} {:<6} {:>4} {:>4} {:>10} {:<10} {:<20} {:>8}  {}",
                j.job_id,
                j.kind.as_str(),
                j.run,
                j.part,
                j.ids,
                j.stage.as_str(),
                crate::commands::utc(j.updated_ms),
                j.result_lines.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                j.note
            )
            .map_err(w)?;
        }
    }
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_honours_the_estimated_completion() {
        let mut info = JobInfo {
            id: "1".into(),
            status: "in_progress".into(),
            upload_url: String::new(),
            upload_expires_ms: 0,
            download_url: String::new(),
            download_expires_ms: 0,
            estimated_completion_ms: Some(100_000),
            error: None,
        };
        let poll = Duration::from_secs(30);
        assert_eq!(pause_for(&info, 40_000, poll), Duration::from_millis(60_200));
        assert_eq!(pause_for(&info, 100_000, poll), poll, "an estimate in the past: poll");
        info.estimated_completion_ms = Some(10 * 3_600_000);
        assert_eq!(pause_for(&info, 0, poll), Duration::from_secs(3600), "looked at again within the hour");
        info.estimated_completion_ms = None;
        assert_eq!(pause_for(&info, 0, poll), poll);
    }
}
