//! The X API v2 batch compliance endpoints, as complyd calls them: create a
//! job (`POST /2/compliance/jobs`), look at it (`GET .../:id`), upload its
//! ids to its signed upload URL (`PUT`, `text/plain`, streamed from a file
//! with its length), and download its result to a file.
//!
//! The bearer token goes only to the API; the signed URLs carry their own
//! signature and get no token. Neither ever reaches a log line or an error:
//! a signed URL is shown without its query ([`shown`]).

use crate::event::TimeMs;
use crate::progress::{Progress, Unit};
use crate::settings::BatchJobPlan;
use awc::http::{header, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt as _;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// A job as X describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    /// `created`, `in_progress`, `complete`, `failed` or `expired`.
    pub status: String,
    pub upload_url: String,
    pub upload_expires_ms: TimeMs,
    pub download_url: String,
    pub download_expires_ms: TimeMs,
    pub estimated_completion_ms: Option<TimeMs>,
    /// Why it failed (`failed` only).
    pub error: Option<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403 from the API: the token is wrong or lacks access.
    #[error("{what}: the bearer token was refused (HTTP {status}): check batch_job.bearer_token_env or batch_job.bearer_token_file")]
    Unauthorized { what: &'static str, status: u16 },
    /// 429: wait this long (X's `x-rate-limit-reset`, else a minute).
    #[error("{what}: rate limited (HTTP 429); the window resets in {} s", .retry_in.as_secs())]
    RateLimited { what: &'static str, retry_in: Duration },
    /// Any other 4xx: asking again as is will not help. From a signed URL,
    /// it means the URL expired or was refused.
    #[error("{what}: HTTP {status}: {detail}")]
    Refused { what: &'static str, status: u16, detail: String },
    /// 5xx, or the connection failed: worth asking again.
    #[error("{what}: {detail}")]
    Transient { what: &'static str, detail: String },
    /// An answer complyd cannot read.
    #[error("{what}: unexpected answer: {detail}")]
    Protocol { what: &'static str, detail: String },
    /// The local file of the ids or of the result.
    #[error("{what}: {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ApiError {
    /// Worth asking again after a pause.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transient { .. } | ApiError::RateLimited { .. })
    }
}

/// A signed URL as it may be shown: without its query (the signature).
pub fn shown(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or("");
    crate::store::redact_url(base)
}

/// The client of one command.
pub struct Api {
    client: awc::Client,
    jobs_url: String,
    authorization: crate::settings::Secret,
}

/// Answers longer than this (but results) are not read.
const MAX_ANSWER: usize = 1 << 20;

impl Api {
    pub fn new(plan: &BatchJobPlan) -> Api {
        let client = crate::tls::http_client(plan.connect_timeout, Duration::from_secs(60), plan.tls.clone());
        Api { client, jobs_url: plan.jobs_url.clone(), authorization: plan.authorization.clone() }
    }

    /// `POST /2/compliance/jobs`.
    pub async fn create(&self, kind: super::BatchType, name: &str) -> Result<JobInfo, ApiError> {
        const WHAT: &str = "creating a compliance job";
        let body = serde_json::json!({ "type": kind.as_str(), "name": name, "resumable": false });
        let res = self
            .client
            .post(self.jobs_url.as_str())
            .insert_header((header::AUTHORIZATION, self.authorization.expose()))
            .send_json(&body)
            .await;
        job_answer(WHAT, res).await
    }

    /// `GET /2/compliance/jobs/:id`.
    pub async fn get(&self, id: &str) -> Result<JobInfo, ApiError> {
        const WHAT: &str = "looking at the compliance job";
        let url = format!("{}/{id}", self.jobs_url);
        let res = self
            .client
            .get(url.as_str())
            .insert_header((header::AUTHORIZATION, self.authorization.expose()))
            .send()
            .await;
        job_answer(WHAT, res).await
    }

    /// `PUT`s the file at `path` to the signed `url`, as `text/plain` with
    /// its length, read a piece at a time.
    pub async fn upload(&self, url: &str, path: &Path) -> Result<(), ApiError> {
        const WHAT: &str = "uploading the ids";
        let file_err = |source| ApiError::File { what: WHAT, path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(file_err)?;
        let len = file.metadata().map_err(file_err)?.len();
        let progress = Progress::new("batch-job upload", Unit::Bytes, Some(len));
        let body = futures_util::stream::unfold((file, progress), |(mut file, mut progress)| async move {
            let mut buf = vec![0u8; 256 << 10];
            match file.read(&mut buf) {
                Ok(0) => {
                    progress.finish();
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    progress.add(n as u64);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (file, progress)))
                }
                Err(e) => Some((Err(e), (file, progress))),
            }
        });
        let res = self
            .client
            .put(url)
            .insert_header((header::CONTENT_TYPE, "text/plain"))
            // The whole upload, not only the answer's head.
            .timeout(Duration::from_secs(3600))
            .send_body(awc::body::SizedStream::new(len, body.boxed_local()))
            .await;
        let mut res = res.map_err(|e| ApiError::Transient { what: WHAT, detail: format!("{}: {e}", shown(url)) })?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let detail = answer_text(&mut res).await;
        Err(status_error(WHAT, status, &res, detail))
    }

    /// `GET`s the signed `url` into the file at `path`; answers its lines.
    pub async fn download(&self, url: &str, path: &Path) -> Result<u64, ApiError> {
        const WHAT: &str = "downloading the result";
        let file_err = |source| ApiError::File { what: WHAT, path: path.display().to_string(), source };
        let res = self.client.get(url).timeout(Duration::from_secs(3600)).send().await;
        let mut res = res.map_err(|e| ApiError::Transient { what: WHAT, detail: format!("{}: {e}", shown(url)) })?;
        let status = res.status();
        if !status.is_success() {
            let detail = answer_text(&mut res).await;
            return Err(status_error(WHAT, status, &res, detail));
        }
        let total =
            res.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let mut progress = Progress::new("batch-job download", Unit::Bytes, total);
        let tmp = path.with_extension("part");
        let mut out = std::io::BufWriter::new(crate::files::write_private(&tmp).map_err(file_err)?);
        let (mut lines, mut last) = (0u64, b'\n');
        while let Some(chunk) = res.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::Transient { what: WHAT, detail: format!("{}: {e}", shown(url)) })?;
            lines += memchr::memchr_iter(b'\n', &chunk).count() as u64;
            if let Some(&b) = chunk.last() {
                last = b;
            }
            out.write_all(&chunk).map_err(file_err)?;
            progress.add(chunk.len() as u64);
        }
        if last != b'\n' {
            lines += 1;
        }
        out.flush().map_err(file_err)?;
        out.into_inner().map_err(|e| file_err(e.into_error()))?.sync_all().map_err(file_err)?;
        std::fs::rename(&tmp, path).map_err(file_err)?;
        progress.finish();
        Ok(lines)
    }
}

/// The start of an answer's body, as text, for an error.
async fn answer_text<S>(res: &mut awc::ClientResponse<S>) -> String
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    match res.body().limit(MAX_ANSWER).await {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b[..b.len().min(300)]).trim().to_owned();
            if s.is_empty() {
                "(no body)".to_owned()
            } else {
                s
            }
        }
        Err(e) => format!("(body unreadable: {e})"),
    }
}

fn status_error<S>(what: &'static str, status: StatusCode, res: &awc::ClientResponse<S>, detail: String) -> ApiError {
    match status.as_u16() {
        401 | 403 if what != "uploading the ids" && what != "downloading the result" => {
            ApiError::Unauthorized { what, status: status.as_u16() }
        }
        429 => {
            let reset = res
                .headers()
                .get("x-rate-limit-reset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok());
            let now_s = crate::clock::now_ms() / 1000;
            let secs = reset.map_or(60, |r| (r - now_s).clamp(1, 15 * 60));
            ApiError::RateLimited { what, retry_in: Duration::from_secs(secs as u64) }
        }
        s if s >= 500 => ApiError::Transient { what, detail: format!("HTTP {s}: {detail}") },
        s => ApiError::Refused { what, status: s, detail },
    }
}

/// Reads the `{"data":{...}}` answer of the job endpoints.
async fn job_answer<S>(
    what: &'static str,
    res: Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
) -> Result<JobInfo, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut res = res.map_err(|e| ApiError::Transient { what, detail: format!("request failed: {e}") })?;
    let status = res.status();
    if !status.is_success() {
        let detail = answer_text(&mut res).await;
        return Err(status_error(what, status, &res, detail));
    }
    let body = res
        .body()
        .limit(MAX_ANSWER)
        .await
        .map_err(|e| ApiError::Transient { what, detail: format!("reading the answer: {e}") })?;
    parse_job(&body).map_err(|detail| ApiError::Protocol { what, detail })
}

/// A job from the API's JSON (`{"data":{...}}`).
///
/// # Errors
/// What is missing or malformed.
pub fn parse_job(body: &[u8]) -> Result<JobInfo, String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        data: Option<Data>,
        #[serde(default)]
        errors: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        id: String,
        status: String,
        #[serde(default)]
        upload_url: Option<String>,
        #[serde(default)]
        upload_expires_at: Option<String>,
        #[serde(default)]
        download_url: Option<String>,
        #[serde(default)]
        download_expires_at: Option<String>,
        #[serde(default)]
        estimated_completion: Option<String>,
        #[serde(default)]
        error: Option<String>,
    }
    let env: Envelope = serde_json::from_slice(body).map_err(|e| format!("not a job: {e}"))?;
    let Some(d) = env.data else {
        return Err(match env.errors {
            Some(e) => format!("errors: {}", e.to_string().chars().take(300).collect::<String>()),
            None => "no data".to_owned(),
        });
    };
    let time = |name: &str, v: &Option<String>| -> Result<TimeMs, String> {
        match v {
            Some(s) => crate::event::parse_time_str(s).map_err(|e| format!("{name}: {e}")),
            None => Ok(0),
        }
    };
    let estimated = match &d.estimated_completion {
        Some(s) => Some(crate::event::parse_time_str(s).map_err(|e| format!("estimated_completion: {e}"))?),
        None => None,
    };
    Ok(JobInfo {
        upload_expires_ms: time("upload_expires_at", &d.upload_expires_at)?,
        download_expires_ms: time("download_expires_at", &d.download_expires_at)?,
        id: d.id,
        status: d.status,
        upload_url: d.upload_url.unwrap_or_default(),
        download_url: d.download_url.unwrap_or_default(),
        estimated_completion_ms: estimated,
        error: d.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_reads_from_the_documented_answer() {
        let body = br#"{"data":{"type":"tweets","id":"1372966999991541762","resumable":false,
            "upload_url":"https://storage.googleapis.com/twttr-tweet-compliance/1372966999991541762/submission/1372966999991541762.json?X-Goog-Algorithm=A&X-Goog-Signature=SECRET",
            "upload_expires_at":"2021-03-19T17:42:40.000Z",
            "download_url":"https://storage.googleapis.com/twttr-tweet-compliance/1372966999991541762/delivery/1372966999991541762.json?X-Goog-Signature=SECRET",
            "download_expires_at":"2021-03-26T17:27:40.000Z","status":"created","created_at":"2021-03-19T17:27:40.000Z"}}"#;
        let j = parse_job(body).unwrap();
        assert_eq!(j.id, "1372966999991541762");
        assert_eq!(j.status, "created");
        assert_eq!(j.upload_expires_ms, 1_616_175_760_000);
        assert_eq!(j.estimated_completion_ms, None);
        assert!(!shown(&j.upload_url).contains("SECRET"), "{}", shown(&j.upload_url));
        let failed = br#"{"data":{"id":"1","status":"failed","error":"boom","estimated_completion":"2021-03-19T17:42:40+00:00"}}"#;
        let j = parse_job(failed).unwrap();
        assert_eq!(j.error.as_deref(), Some("boom"));
        assert_eq!(j.estimated_completion_ms, Some(1_616_175_760_000));
        assert!(parse_job(br#"{"errors":[{"message":"nope"}]}"#).unwrap_err().contains("nope"));
        assert!(parse_job(b"<html>").is_err());
    }
}
