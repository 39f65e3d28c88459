//! HTTP routing and request checks. One catch-all service so every path,
//! method and malformed request gets a deliberate answer (and never a panic).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use tokio::sync::{mpsc, oneshot};

use super::config::SimConfig;
use super::conn::StreamConn;
use super::ctx::{error_json, Ctx};
use super::fault::Fault;
use super::limiter::Limiter;
use super::producer::{Registration, SubState};
use super::replay::{check_window, parse_date, ReplayConn};
use crate::clock::now_ms;

/// The documented 406 message.
pub(crate) const GZIP_REQUIRED: &str = "This connection requires compression. To enable compression, send an 'Accept-Encoding: gzip' header in your request and be ready to uncompress the stream as it is read on the client end.";

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status).content_type("application/json; charset=utf-8").body(body)
}

fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    let mut r = json_response(status, error_json(message));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Compliance Firehose\""));
    }
    r
}

/// The answer a `status` fault forces.
fn status_fault_response(status: u16) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let msg = match status {
        401 => "Invalid credentials. Please verify the username and password of your console account.",
        429 => "Rate limited: too many connection requests.",
        503 => "Service Unavailable. Please reconnect with exponential backoff.",
        _ => code.canonical_reason().unwrap_or("Error"),
    };
    error_response(code, msg)
}

/// The catch-all service.
pub(crate) async fn route(req: HttpRequest, body: web::Bytes, ctx: web::Data<Ctx>) -> HttpResponse {
    let ctx = ctx.into_inner();
    ctx.stats.requests_total.fetch_add(1, Relaxed);
    let resp = dispatch(&req, &body, &ctx).await;
    ctx.stats.response(resp.status().as_u16());
    resp
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Stream,
    Replay,
}

/// `/{stream|replay}/compliance/accounts/:account/publishers/twitter/:label.json`
fn parse_path(path: &str) -> Option<(Endpoint, &str, &str)> {
    let seg: Vec<&str> = path.split('/').collect();
    if seg.len() != 8 || !seg[0].is_empty() {
        return None;
    }
    let ep = match seg[1] {
        "stream" => Endpoint::Stream,
        "replay" => Endpoint::Replay,
        _ => return None,
    };
    if seg[2] != "compliance" || seg[3] != "accounts" || seg[5] != "publishers" || seg[6] != "twitter" {
        return None;
    }
    let label = seg[7].strip_suffix(".json")?;
    Some((ep, seg[4], label))
}

async fn dispatch(req: &HttpRequest, body: &[u8], ctx: &Arc<Ctx>) -> HttpResponse {
    let path = req.path();
    if let Some(rest) = path.strip_prefix("/admin/") {
        if ctx.cfg.admin {
            return admin(req.method(), rest, body, ctx);
        }
        return error_response(StatusCode::NOT_FOUND, "Not found");
    }
    if let Some(resp) = super::jobs::route(req, body, ctx) {
        return resp;
    }
    let Some((ep, account, label)) = parse_path(path) else {
        return error_response(StatusCode::NOT_FOUND, "Not found");
    };
    if account != ctx.cfg.account || label != ctx.cfg.label {
        return error_response(StatusCode::NOT_FOUND, "No such stream for this account");
    }
    if req.method() != Method::GET {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported");
    }
    let query = match web::Query::<Vec<(String, String)>>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(_) => return error_response(StatusCode::BAD_REQUEST, "Malformed query string"),
    };
    match ep {
        Endpoint::Stream => stream(req, &query, ctx).await,
        Endpoint::Replay => replay(req, &query, ctx),
    }
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// HTTP Basic with the configured user and password.
fn authorized(req: &HttpRequest, cfg: &SimConfig) -> bool {
    let Some(h) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Ok(s) = h.to_str() else { return false };
    let s = s.trim();
    let Some((scheme, cred)) = s.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(cred.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", cfg.username, cfg.password);
    decoded == expected.as_bytes()
}

/// `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers().get_all(header::ACCEPT_ENCODING).filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if !(coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")) {
                return false;
            }
            parts.all(|p| match p.trim().strip_prefix("q=") {
                Some(q) => q.trim().parse::<f64>().map_or(true, |q| q > 0.0),
                None => true,
            })
        },
    )
}

async fn stream(req: &HttpRequest, q: &[(String, String)], ctx: &Arc<Ctx>) -> HttpResponse {
    let cfg = &ctx.cfg;
    let partition_param = param(q, "partition");
    let parsed = partition_param.and_then(|s| s.trim().parse::<u8>().ok()).filter(|p| (1..=8).contains(p));
    if let Some(status) = ctx.faults.take_status(parsed) {
        ctx.stats.faults_fired_total.fetch_add(1, Relaxed);
        tracing::info!(status, partition = ?parsed, "Fault answered a connection attempt");
        return status_fault_response(status);
    }
    let gate = Gate {
        endpoint: "stream",
        what: "connection",
        limiter: &ctx.stream_limit,
        limit: cfg.rate_limit.connections,
        window_ms: cfg.rate_limit.window_ms,
    };
    if let Some(refused) = gate.check(req, cfg) {
        return refused;
    }
    let p = match (partition_param, parsed) {
        (None, _) => {
            return error_response(StatusCode::BAD_REQUEST, "The 'partition' parameter is required (1-8).");
        }
        (Some(v), None) => {
            return error_response(StatusCode::BAD_REQUEST, &format!("Invalid partition '{v}': must be 1-8."));
        }
        (Some(_), Some(p)) => p,
    };
    let backfill_minutes = match param(q, "backfillMinutes") {
        None => None,
        Some(_) if !cfg.backfill.accepted => {
            return error_response(StatusCode::BAD_REQUEST, "backfillMinutes is not supported on this stream.");
        }
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if (1..=cfg.backfill.max_minutes).contains(&n) => Some(n),
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid backfillMinutes '{v}': must be 1-{}.", cfg.backfill.max_minutes),
                );
            }
        },
    };
    let cap = if cfg.rate > 0.0 { cfg.buffer_batches } else { cfg.buffer_batches.min(4) };
    let (tx, rx) = mpsc::channel(cap.max(1));
    let state = Arc::new(SubState::default());
    let (btx, brx) = oneshot::channel();
    let reg = Registration { partition: p, tx, state: state.clone(), boundary: btx };
    if ctx.regs.send(reg).is_err() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "The stream is shutting down.");
    }
    let boundary = match tokio::time::timeout(Duration::from_secs(10), brx).await {
        Ok(Ok(b)) => b,
        _ => return error_response(StatusCode::SERVICE_UNAVAILABLE, "The stream is busy; reconnect."),
    };
    let backfill = backfill_minutes.filter(|_| !cfg.backfill.ignored).map(|n| {
        let now_t = ctx.gen.time_ms(boundary);
        let from = ctx.gen.first_index_at_or_after(now_t - i64::from(n) * 60_000);
        let floor = boundary.saturating_sub(cfg.backfill.max_events as i64);
        (from.max(floor), boundary)
    });
    tracing::info!(partition = p, first_event = boundary, backfill_minutes = ?backfill_minutes, "Stream connection opened");
    let conn = StreamConn::new(ctx.clone(), p, rx, state, backfill);
    gzip_response(futures_util::stream::unfold(conn, |mut c| async move { c.next().await.map(|item| (item, c)) }))
}

/// The checks both endpoints make, in the real server's order: credentials
/// (401), the endpoint's own request limit (429), gzip (406).
struct Gate<'a> {
    endpoint: &'static str,
    /// What the limit counts, for the message ("connection", "replay").
    what: &'static str,
    limiter: &'a Limiter,
    limit: u32,
    window_ms: u64,
}

impl Gate<'_> {
    fn check(&self, req: &HttpRequest, cfg: &SimConfig) -> Option<HttpResponse> {
        if !authorized(req, cfg) {
            tracing::info!(endpoint = self.endpoint, "Rejected bad credentials");
            return Some(error_response(
                StatusCode::UNAUTHORIZED,
                "Invalid credentials. Please verify the username and password of your console account.",
            ));
        }
        if !self.limiter.admit(Instant::now()) {
            tracing::info!(
                endpoint = self.endpoint,
                limit = self.limit,
                window_ms = self.window_ms,
                "Request rate limit exceeded"
            );
            return Some(error_response(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Rate limited: exceeded {} {} requests per {} seconds for this account.",
                    self.limit,
                    self.what,
                    self.window_ms as f64 / 1000.0
                ),
            ));
        }
        if !accepts_gzip(req) {
            return Some(error_response(StatusCode::NOT_ACCEPTABLE, GZIP_REQUIRED));
        }
        None
    }
}

fn replay(req: &HttpRequest, q: &[(String, String)], ctx: &Arc<Ctx>) -> HttpResponse {
    let cfg = &ctx.cfg;
    let gate = Gate {
        endpoint: "replay",
        what: "replay",
        limiter: &ctx.replay_limit,
        limit: cfg.replay.requests,
        window_ms: cfg.replay.window_ms,
    };
    if let Some(refused) = gate.check(req, cfg) {
        return refused;
    }
    let (Some(from), Some(to)) = (param(q, "fromDate"), param(q, "toDate")) else {
        return error_response(StatusCode::BAD_REQUEST, "fromDate and toDate are required (YYYYMMDDHHMM, UTC).");
    };
    let window =
        parse_date("fromDate", from).and_then(|f| parse_date("toDate", to).map(|t| (f, t))).and_then(|(f, t)| {
            check_window(f, t, now_ms(), cfg.replay.min_age_minutes, cfg.replay.max_age_minutes).map(|_| (f, t))
        });
    let (from_ms, to_ms) = match window {
        Ok(w) => w,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, &msg),
    };
    let (forced, abort) = ctx.faults.take_replay();
    if forced.is_some() || abort {
        ctx.stats.faults_fired_total.fetch_add(1, Relaxed);
    }
    let outcome = forced.unwrap_or(cfg.replay.outcome);
    ctx.stats.replays_total.fetch_add(1, Relaxed);
    tracing::info!(from = %from, to = %to, outcome = ?outcome, abort, "Replay started");
    let conn = ReplayConn::new(ctx.clone(), from_ms, to_ms, outcome, abort);
    gzip_response(futures_util::stream::unfold(conn, |mut c| async move { c.next().await.map(|item| (item, c)) }))
}

/// A 200 whose body is a gzip stream of JSON lines (both endpoints).
fn gzip_response<S>(body: S) -> HttpResponse
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + 'static,
{
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .insert_header((header::CONTENT_ENCODING, "gzip"))
        .streaming(body)
}

fn admin(method: &Method, rest: &str, body: &[u8], ctx: &Arc<Ctx>) -> HttpResponse {
    match (method.as_str(), rest) {
        ("POST", "faults") => {
            let faults: Result<Vec<Fault>, String> = match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v @ serde_json::Value::Array(_)) => serde_json::from_value(v).map_err(|e| e.to_string()),
                Ok(v) => serde_json::from_value::<Fault>(v).map(|f| vec![f]).map_err(|e| e.to_string()),
                Err(e) => Err(format!("body is not JSON: {e}")),
            };
            let faults = match faults {
                Ok(f) => f,
                Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("Invalid fault: {e}")),
            };
            let problems: Vec<String> = faults
                .iter()
                .enumerate()
                .filter_map(|(k, f)| f.validate().err().map(|e| format!("[{k}] {e}")))
                .collect();
            if !problems.is_empty() {
                return error_response(StatusCode::BAD_REQUEST, &format!("Invalid fault: {}", problems.join("; ")));
            }
            let n = faults.len();
            for f in faults {
                tracing::info!(fault = f.name(), partition = ?f.partition, count = f.count, "Fault armed");
                ctx.faults.arm(f);
            }
            json_response(StatusCode::OK, format!("{{\"armed\":{n}}}"))
        }
        ("GET", "faults") => {
            let list = ctx.faults.list();
            let body = serde_json::json!({ "faults": list });
            json_response(StatusCode::OK, body.to_string())
        }
        ("DELETE", "faults") => {
            let n = ctx.faults.clear();
            json_response(StatusCode::OK, format!("{{\"cleared\":{n}}}"))
        }
        ("GET", "stats") => match serde_json::to_string(&ctx.stats.snapshot()) {
            Ok(s) => json_response(StatusCode::OK, s),
            Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        (_, "faults") | (_, "stats") => error_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        _ => error_response(StatusCode::NOT_FOUND, "Not found"),
    }
}
