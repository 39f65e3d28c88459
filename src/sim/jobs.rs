//! X API v2 batch compliance jobs, simulated (`/2/compliance/jobs`): a job
//! is created, its ids are uploaded to a signed upload URL that expires, it
//! is `in_progress` for `jobs.processing_ms`, then `complete` (or `failed`),
//! and its result is downloaded from a signed download URL that expires too.
//!
//! Which uploaded ids need action is decided by [`verdict`], a pure function
//! of the id, so a test knows what the result must hold.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::ctx::Ctx;
use super::gen::iso_millis;
use crate::clock::now_ms;

/// `[jobs]` of the simulator's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// The app's bearer token (`Authorization: Bearer ...`). Never logged.
    pub bearer_token: String,
    /// A job is `in_progress` this long after its upload, then `complete`.
    pub processing_ms: u64,
    /// The upload URL expires this long after the job's creation (X: 15 min).
    pub upload_expiry_ms: u64,
    /// The download URL expires this long after the job's creation (X: 7 days).
    pub download_expiry_ms: u64,
    /// More ids than this in one upload fail the job.
    pub max_ids: u64,
    /// Job creations allowed per window (X: 150 per 15 minutes).
    pub create_requests: u32,
    /// The window of `create_requests`, in milliseconds.
    pub create_window_ms: u64,
    /// Of every 1000 uploaded ids, about this many need action ([`verdict`]).
    pub action_per_mille: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            bearer_token: "sim-bearer-token".into(),
            processing_ms: 2_000,
            upload_expiry_ms: 15 * 60_000,
            download_expiry_ms: 7 * 86_400_000,
            max_ids: 1_000_000,
            create_requests: 150,
            create_window_ms: 15 * 60_000,
            action_per_mille: 200,
        }
    }
}

/// Which kind of ids a job holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Post ids.
    Tweets,
    /// User ids.
    Users,
}

/// What the simulated X says about `id` in a job of `kind`: `None` (nothing
/// to do, the id is not in the result) or the reason it needs action.
/// About `per_mille` ids of every 1000 get one.
pub fn verdict(kind: JobType, id: u64, per_mille: u32) -> Option<&'static str> {
    let h = splitmix(id ^ if kind == JobType::Tweets { 0x5eed_7ee7 } else { 0x5eed_05e5 });
    if (h % 1000) as u32 >= per_mille {
        return None;
    }
    // Deletions dominate, as in real results.
    Some(match (h >> 20) % 10 {
        0..=4 => "deleted",
        5 => "deactivated",
        6 => "protected",
        7 => "suspended",
        _ => "scrub_geo",
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the next job created suffers (from a `job_*` fault: one a job).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct JobFaults {
    /// The job fails after its upload.
    pub failed: bool,
    /// Its upload URL has expired before it is given out.
    pub upload_expired: bool,
    /// Its download URL has expired by the time it is complete.
    pub download_expired: bool,
    /// Malformed lines added to its result.
    pub bad_lines: u32,
}

struct SimJob {
    id: String,
    kind: JobType,
    name: Option<String>,
    created_ms: i64,
    upload_expires_ms: i64,
    download_expires_ms: i64,
    /// When the upload arrived, and the result it makes.
    uploaded: Option<(i64, Result<Vec<String>, String>)>,
    faults: JobFaults,
    /// The signature the signed URLs carry.
    sig: u64,
}

impl SimJob {
    /// `created`, `in_progress`, `complete`, `failed` or `expired`, now.
    fn status(&self, now: i64, processing_ms: u64) -> &'static str {
        match &self.uploaded {
            None if now >= self.upload_expires_ms => "expired",
            None => "created",
            Some((at, _)) if now < at + processing_ms as i64 => "in_progress",
            Some((_, Err(_))) => "failed",
            Some(_) if now >= self.download_expires_ms => "expired",
            Some(_) => "complete",
        }
    }

    fn json(&self, host: &str, now: i64, processing_ms: u64) -> serde_json::Value {
        let status = self.status(now, processing_ms);
        let mut v = serde_json::json!({
            "id": self.id,
            "created_at": iso_millis(self.created_ms),
            "type": self.kind,
            "resumable": false,
            "upload_url": format!("http://{host}/upload/{}?sig={}", self.id, self.sig),
            "upload_expires_at": iso_millis(self.upload_expires_ms),
            "download_url": format!("http://{host}/download/{}?sig={}", self.id, self.sig),
            "download_expires_at": iso_millis(self.download_expires_ms),
            "status": status,
        });
        if let Some(name) = &self.name {
            v["name"] = name.clone().into();
        }
        if let (Some((at, _)), "in_progress") = (&self.uploaded, status) {
            v["estimated_completion"] = iso_millis(at + processing_ms as i64).into();
        }
        if let Some((_, Err(e))) = &self.uploaded {
            if status == "failed" {
                v["error"] = e.clone().into();
            }
        }
        v
    }
}

/// Every job the simulator has created.
pub(crate) struct Jobs {
    list: Mutex<Vec<SimJob>>,
    next: Mutex<u64>,
    create_limit: super::limiter::Limiter,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Jobs {
    pub(crate) fn new(cfg: &JobsConfig) -> Jobs {
        Jobs {
            list: Mutex::new(Vec::new()),
            next: Mutex::new(1),
            create_limit: super::limiter::Limiter::new(cfg.create_requests, cfg.create_window_ms, true),
        }
    }
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json; charset=utf-8").body(body)
}

/// X API v2's error shape.
fn api_error(status: StatusCode, title: &str, detail: &str) -> HttpResponse {
    let body =
        serde_json::json!({ "title": title, "detail": detail, "type": "about:blank", "status": status.as_u16() });
    json_response(status, body.to_string())
}

/// The signed URLs' storage answers (plain text, as a storage service's).
fn storage_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(message.to_owned())
}

fn bearer_ok(req: &HttpRequest, token: &str) -> bool {
    let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match v.trim().split_once(' ') {
        Some((scheme, t)) => scheme.eq_ignore_ascii_case("bearer") && t.trim() == token,
        None => false,
    }
}

/// Serves `/2/compliance/jobs[/:id]`, `/upload/:id` and `/download/:id`;
/// `None` for any other path.
pub(crate) fn route(req: &HttpRequest, body: &[u8], ctx: &Arc<Ctx>) -> Option<HttpResponse> {
    let path = req.path();
    if let Some(rest) = path.strip_prefix("/upload/") {
        return Some(upload(req, rest, body, ctx));
    }
    if let Some(rest) = path.strip_prefix("/download/") {
        return Some(download(req, rest, ctx));
    }
    let rest = path.strip_prefix("/2/compliance/jobs")?;
    let cfg = &ctx.cfg.jobs;
    if !bearer_ok(req, &cfg.bearer_token) {
        tracing::info!(endpoint = "jobs", "Rejected bad credentials");
        return Some(api_error(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"));
    }
    let host = req.connection_info().host().to_owned();
    let now = now_ms();
    Some(match (req.method(), rest) {
        (&Method::POST, "" | "/") => create(body, &host, ctx),
        (&Method::GET, "" | "/") => {
            let q = web_query(req);
            let Some(kind) = q.iter().find(|(k, _)| k == "type").and_then(|(_, v)| parse_type(v)) else {
                return Some(api_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid Request",
                    "The `type` query parameter (tweets or users) is required.",
                ));
            };
            let list = lock(&ctx.jobs.list);
            let data: Vec<_> =
                list.iter().filter(|j| j.kind == kind).map(|j| j.json(&host, now, cfg.processing_ms)).collect();
            json_response(StatusCode::OK, serde_json::json!({ "data": data }).to_string())
        }
        (&Method::GET, id) => {
            let id = id.trim_start_matches('/');
            let list = lock(&ctx.jobs.list);
            match list.iter().find(|j| j.id == id) {
                Some(j) => json_response(
                    StatusCode::OK,
                    serde_json::json!({ "data": j.json(&host, now, cfg.processing_ms) }).to_string(),
                ),
                None => api_error(StatusCode::NOT_FOUND, "Not Found Error", &format!("Could not find job {id}")),
            }
        }
        _ => api_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", "Method not allowed"),
    })
}

fn web_query(req: &HttpRequest) -> Vec<(String, String)> {
    actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

fn parse_type(s: &str) -> Option<JobType> {
    match s {
        "tweets" => Some(JobType::Tweets),
        "users" => Some(JobType::Users),
        _ => None,
    }
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    resumable: Option<bool>,
}

fn create(body: &[u8], host: &str, ctx: &Arc<Ctx>) -> HttpResponse {
    let cfg = &ctx.cfg.jobs;
    let parsed = match serde_json::from_slice::<CreateBody>(body) {
        Ok(b) => b,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "Invalid Request", &format!("Invalid JSON body: {e}")),
    };
    let Some(kind) = parse_type(&parsed.kind) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "Invalid Request",
            &format!("type must be tweets or users, got {:?}", parsed.kind),
        );
    };
    if parsed.resumable == Some(true) {
        return api_error(StatusCode::BAD_REQUEST, "Invalid Request", "resumable uploads are not simulated");
    }
    if !ctx.jobs.create_limit.admit(Instant::now()) {
        return api_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", "Too Many Requests");
    }
    let now = now_ms();
    let faults = ctx.faults.take_job();
    if faults != JobFaults::default() {
        ctx.stats.faults_fired_total.fetch_add(1, Relaxed);
    }
    let n = {
        let mut next = lock(&ctx.jobs.next);
        let n = *next;
        *next += 1;
        n
    };
    let job = SimJob {
        id: (1_420_000_000_000_000_000u64 + n).to_string(),
        kind,
        name: parsed.name,
        created_ms: now,
        upload_expires_ms: if faults.upload_expired { now - 1 } else { now + cfg.upload_expiry_ms as i64 },
        download_expires_ms: now + cfg.download_expiry_ms as i64,
        uploaded: None,
        faults,
        sig: splitmix(n ^ now as u64),
    };
    let body = serde_json::json!({ "data": job.json(host, now, cfg.processing_ms) }).to_string();
    tracing::info!(job = %job.id, kind = ?kind, "Compliance job created");
    lock(&ctx.jobs.list).push(job);
    ctx.stats.jobs_created_total.fetch_add(1, Relaxed);
    json_response(StatusCode::OK, body)
}

/// `?sig=` matches the job's signature.
fn signed(req: &HttpRequest, job: &SimJob) -> bool {
    web_query(req).iter().any(|(k, v)| k == "sig" && v == &job.sig.to_string())
}

fn upload(req: &HttpRequest, id: &str, body: &[u8], ctx: &Arc<Ctx>) -> HttpResponse {
    if req.method() != Method::PUT {
        return storage_error(StatusCode::METHOD_NOT_ALLOWED, "Only PUT is supported");
    }
    let cfg = &ctx.cfg.jobs;
    let now = now_ms();
    let mut list = lock(&ctx.jobs.list);
    let Some(job) = list.iter_mut().find(|j| j.id == id).filter(|j| signed(req, j)) else {
        return storage_error(StatusCode::FORBIDDEN, "AccessDenied: invalid signature");
    };
    if now >= job.upload_expires_ms {
        return storage_error(StatusCode::BAD_REQUEST, "ExpiredToken: the signed upload URL has expired");
    }
    let text_plain = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
    if !text_plain {
        return storage_error(StatusCode::BAD_REQUEST, "the upload must be Content-Type: text/plain");
    }
    if job.uploaded.is_some() {
        return storage_error(StatusCode::CONFLICT, "this job's ids were uploaded already");
    }
    let result = job_result(job, body, cfg, now);
    job.uploaded = Some((now, result));
    ctx.stats.job_uploads_total.fetch_add(1, Relaxed);
    tracing::info!(job = %job.id, bytes = body.len(), "Compliance job ids uploaded");
    HttpResponse::Ok().finish()
}

/// The result lines of an upload, or why the job fails.
fn job_result(job: &SimJob, body: &[u8], cfg: &JobsConfig, now: i64) -> Result<Vec<String>, String> {
    if job.faults.failed {
        return Err("Job failed to process (simulated failure)".into());
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Err("The uploaded file is not UTF-8 text".into());
    };
    let mut lines = Vec::new();
    let mut ids = 0u64;
    for raw in text.lines() {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        ids += 1;
        if ids > cfg.max_ids {
            return Err(format!("The uploaded file has more than {} ids", cfg.max_ids));
        }
        let Ok(id) = raw.parse::<u64>() else {
            return Err(format!("The uploaded file has a line that is not an id: {raw:?}"));
        };
        if let Some(reason) = verdict(job.kind, id, cfg.action_per_mille) {
            // `redacted_at` is missing from some lines, as the docs warn.
            let redacted = (id % 5 != 0).then(|| iso_millis(now - 3_600_000 - (id % 1000) as i64 * 1000));
            let mut v = serde_json::json!({
                "id": id.to_string(),
                "action": "delete",
                "created_at": iso_millis(now - 86_400_000),
                "reason": reason,
            });
            if let Some(r) = redacted {
                v["redacted_at"] = r.into();
            }
            lines.push(v.to_string());
        }
    }
    let bad = [
        "this line is not JSON".to_owned(),
        r#"{"id":"12x4","action":"delete","reason":"deleted"}"#.to_owned(),
        r#"{"id":"1234","action":"delete","reason":"exploded"}"#.to_owned(),
        r#"{"id":"1234","action":"delete""#.to_owned(),
    ];
    for k in 0..job.faults.bad_lines as usize {
        let at = (k * 7) % (lines.len() + 1);
        lines.insert(at, bad[k % bad.len()].clone());
    }
    Ok(lines)
}

fn download(req: &HttpRequest, id: &str, ctx: &Arc<Ctx>) -> HttpResponse {
    if req.method() != Method::GET {
        return storage_error(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported");
    }
    let cfg = &ctx.cfg.jobs;
    let now = now_ms();
    let list = lock(&ctx.jobs.list);
    let Some(job) = list.iter().find(|j| j.id == id).filter(|j| signed(req, j)) else {
        return storage_error(StatusCode::FORBIDDEN, "AccessDenied: invalid signature");
    };
    if job.faults.download_expired || now >= job.download_expires_ms {
        return storage_error(StatusCode::BAD_REQUEST, "ExpiredToken: the signed download URL has expired");
    }
    match (job.status(now, cfg.processing_ms), &job.uploaded) {
        ("complete", Some((_, Ok(lines)))) => {
            let mut body = lines.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            ctx.stats.job_downloads_total.fetch_add(1, Relaxed);
            HttpResponse::Ok().content_type("application/json").body(body)
        }
        _ => storage_error(StatusCode::NOT_FOUND, "NoSuchKey: the result does not exist (yet)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_a_stable_share_of_ids() {
        let hits = (1..=100_000u64).filter(|&id| verdict(JobType::Tweets, id, 200).is_some()).count();
        assert!((18_000..22_000).contains(&hits), "{hits}");
        assert_eq!(verdict(JobType::Users, 42, 0), None);
        assert!(verdict(JobType::Users, 42, 1000).is_some());
        for id in 1..1000u64 {
            assert_eq!(verdict(JobType::Tweets, id, 200), verdict(JobType::Tweets, id, 200));
        }
    }
}
