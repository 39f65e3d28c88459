//! The daemon's HTTP endpoint (127.0.0.1:8080 by default, `[http]`):
//!
//! * `GET /healthz`: the process is alive (JSON: every partition's state).
//! * `GET /readyz`: 200 when the store commits and every partition is
//!   connected or within its policy; 503 with the reasons otherwise.
//! * `GET /metrics`: Prometheus text.
//! * `GET /v1/posts/{id}?country=CC` and `POST /v1/posts/check`: may the
//!   post be shown (in CC, or everywhere)? `{"id":"...","visible":bool}`,
//!   never why: the documentation forbids showing compliance events to end
//!   users. An id that is not stored answers exactly like a hidden post.
//! * `GET /v1/admin/explain/{id}?country=CC`: why (every failing clause),
//!   for operators; off unless an admin bearer token is configured.
//!
//! Queries read the store through a small pool of their own connections, on
//! blocking threads (the store clients are synchronous).

use crate::clock::now_ms;
use crate::event::{parse_id_str, Country, Id, EVENT_TYPES};
use crate::health::{Health, LinkState, PartitionCounters, PartitionHealth};
use crate::rules::visibility::{explain, visible, Facts};
use crate::settings::{HttpPlan, Secret};
use crate::store::{self, Store, StoreError, StoreUrl};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusHandle};
use serde::Deserialize;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};

/// Most ids one `POST /v1/posts/check` may ask about.
pub const MAX_CHECK_IDS: usize = 10_000;

/// The process-wide Prometheus recorder (None when another recorder was
/// installed first). Latencies and batch sizes are histograms.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let sizes = [1.0, 10.0, 100.0, 500.0, 1000.0, 4096.0, 16384.0, 65536.0];
            let built = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("complyd_handler_batch_events".into()), &sizes));
            match built.map(|b| b.install_recorder()) {
                Ok(Ok(h)) => Some(h),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "No Prometheus recorder installed (another recorder is active)");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus buckets refused; no recorder installed");
                    None
                }
            }
        })
        .clone()
}

/// Store connections for the query API, opened when needed.
struct ReadPool {
    url: StoreUrl,
    idle: Mutex<Vec<Box<dyn Store>>>,
    keep: usize,
}

impl Drop for ReadPool {
    /// Closes the pooled connections on a plain thread: the synchronous
    /// PostgreSQL client blocks on a runtime of its own when dropped, which
    /// panics on the HTTP server's thread.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

thread_local! {
    /// An SQLite read connection per HTTP worker thread (keyed by store URL).
    static LOCAL: std::cell::RefCell<Option<(StoreUrl, Box<dyn Store>)>> = const { std::cell::RefCell::new(None) };
}

impl ReadPool {
    /// Runs `f` on a store connection. SQLite (a local file in WAL mode,
    /// where readers never wait for the writers) is read in the worker
    /// thread itself, with the worker's own connection: a lookup takes
    /// microseconds, less than handing it to another thread. Other stores
    /// (a network round trip) run on a blocking thread with a pooled
    /// connection. A connection that failed is dropped (the next query opens
    /// a new one).
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let res = if matches!(self.url, StoreUrl::Sqlite(_)) {
            Ok(LOCAL.with(|slot| {
                let mut slot = slot.borrow_mut();
                if !slot.as_ref().is_some_and(|(url, _)| *url == self.url) {
                    *slot = Some((self.url.clone(), store::open_for_lookups(&self.url)?));
                }
                let (_, conn) = slot.as_mut().expect("opened above");
                let out = f(conn.as_mut());
                if out.is_err() {
                    *slot = None;
                }
                out
            }))
        } else {
            let pool = self.clone();
            web::block(move || {
                let taken = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let mut conn = match taken {
                    Some(c) => c,
                    None => store::open_for_lookups(&pool.url)?,
                };
                let out = f(conn.as_mut())?;
                let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < pool.keep {
                    idle.push(conn);
                }
                Ok::<_, StoreError>(out)
            })
            .await
        };
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if let Some(suppressed) = crate::logging::allow("query-store") {
                    tracing::warn!(error = %e, suppressed, "Query API: the store could not answer");
                }
                Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable".to_owned()))
            }
            Err(_) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the query was interrupted".to_owned())),
        }
    }
}

/// An error answer: `{"error": "..."}` with its status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.0).json(serde_json::json!({ "error": self.1 }))
    }
}

#[derive(Clone)]
struct HttpState {
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    pool: Arc<ReadPool>,
    admin_token: Option<Secret>,
}

/// Starts the endpoint on the current actix System.
///
/// # Errors
/// The address cannot be bound.
pub fn start(
    plan: &HttpPlan,
    store_url: &StoreUrl,
    health: Arc<Health>,
) -> anyhow::Result<(actix_web::dev::ServerHandle, SocketAddr)> {
    let pool = Arc::new(ReadPool { url: store_url.clone(), idle: Mutex::new(Vec::new()), keep: plan.read_connections });
    let state = HttpState { health, metrics: metrics_handle(), pool, admin_token: plan.admin_token.clone() };
    let query = plan.query;
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_text));
        if query {
            app = app
                .app_data(web::JsonConfig::default().limit(1 << 20).error_handler(|e, _| {
                    use actix_web::error::JsonPayloadError as J;
                    match e {
                        J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the body is over 1 MiB: ask at most 10000 ids a request".into(),
                        )
                        .into(),
                        e => ApiError::bad(format!("the body is not a check request: {e}")).into(),
                    }
                }))
                .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::bad(e.to_string()).into()))
                .route("/v1/posts/check", web::post().to(check_many))
                .route("/v1/posts/{id}", web::get().to(check_one))
                .route("/v1/admin/explain/{id}", web::get().to(admin_explain));
        }
        app
    })
    .workers(plan.workers)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(plan.listen)
    .with_context(|| {
        format!("binding the HTTP endpoint to {}: set http.listen to a free address (port 0 picks one)", plan.listen)
    })?;
    let addr = server.addrs().first().copied().context("the HTTP endpoint bound no address")?;
    let srv = server.run();
    let handle = srv.handle();
    actix_rt::spawn(srv);
    Ok((handle, addr))
}

/// `/healthz`: the process is alive; the body says how every partition is.
async fn healthz(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json(state.health.report())
}

/// `/readyz`: 200 when every partition is usable and the store commits; 503
/// with the reasons otherwise (a configuration error, a failed partition).
async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let body = state.health.report();
    if state.health.readiness().0 {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountryQuery {
    country: Option<String>,
}

fn parse_country(c: Option<&str>) -> Result<Option<Country>, ApiError> {
    c.map(|c| Country::parse(c).map_err(|e| ApiError::bad(format!("country: {}", e.detail)))).transpose()
}

fn parse_id(s: &str) -> Result<Id, ApiError> {
    parse_id_str(s).map_err(|e| ApiError::bad(format!("id: {}", e.detail)))
}

/// `GET /v1/posts/{id}?country=CC`
async fn check_one(
    state: web::Data<HttpState>,
    id: web::Path<String>,
    q: web::Query<CountryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let country = parse_country(q.country.as_deref())?;
    let facts = state.pool.with(move |s| s.facts(id)).await?;
    let v = visible(&facts, country, now_ms());
    Ok(HttpResponse::Ok().content_type("application/json").body(format!("{{\"id\":\"{id}\",\"visible\":{v}}}")))
}

/// An id in a check request: a decimal string (exact), or a JSON integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    ids: Vec<IdValue>,
    country: Option<String>,
}

/// `POST /v1/posts/check` `{"ids":["1","2"],"country":"DE"}`: the answers in
/// the order asked, `{"results":[{"id":"1","visible":true},...]}`.
async fn check_many(state: web::Data<HttpState>, body: web::Json<CheckRequest>) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    if req.ids.len() > MAX_CHECK_IDS {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} ids asked; at most {MAX_CHECK_IDS} per request", req.ids.len()),
        ));
    }
    let country = parse_country(req.country.as_deref())?;
    let ids: Vec<Id> = req
        .ids
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            IdValue::Text(s) => parse_id(s).map_err(|e| ApiError::bad(format!("ids[{i}]: {e}"))),
            IdValue::Number(n) => Ok(*n),
        })
        .collect::<Result<_, _>>()?;
    let now = now_ms();
    let answers = state
        .pool
        .with(move |s| {
            let facts = s.facts_many(&ids)?;
            Ok(ids.iter().zip(&facts).map(|(id, f)| (*id, visible(f, country, now))).collect::<Vec<_>>())
        })
        .await?;
    let mut out = String::with_capacity(16 + answers.len() * 40);
    out.push_str("{\"results\":[");
    for (i, (id, v)) in answers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":\"{id}\",\"visible\":{v}}}");
    }
    out.push_str("]}");
    Ok(HttpResponse::Ok().content_type("application/json").body(out))
}

/// Compares in time independent of where the first difference is and of
/// the secret's length: every byte given is compared (with the secret's
/// bytes in turn, over again past its end), whatever its length. An empty
/// secret matches nothing.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let differ = given.iter().zip(secret.iter().cycle()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    !secret.is_empty() && given.len() == secret.len() && differ == 0
}

/// `GET /v1/admin/explain/{id}?country=CC` with `Authorization: Bearer TOKEN`.
async fn admin_explain(
    state: web::Data<HttpState>,
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<CountryQuery>,
) -> Result<HttpResponse, ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the admin endpoint is off (no admin token configured)".to_owned(),
        ));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(given.as_bytes(), token.expose().as_bytes()) {
        tracing::warn!(peer = ?req.peer_addr(), "Admin endpoint: missing or wrong bearer token");
        return Err(ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".to_owned()));
    }
    let id = parse_id(&id)?;
    let country = parse_country(q.country.as_deref())?;
    let facts: Facts = state.pool.with(move |s| s.facts(id)).await?;
    let now = now_ms();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id.to_string(),
        "country": country.map(|c| c.as_str().to_owned()),
        "visible": visible(&facts, country, now),
        "reasons": explain(&facts, country, now),
        "retweet": facts.original.is_some(),
    })))
}

/// One labelled sample line.
fn sample(out: &mut String, name: &str, labels: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{{{labels}}} {v}");
}

/// A partition gauge read at scrape time (None: no sample).
type GaugeFn = fn(&PartitionHealth, &PartitionCounters, i64) -> Option<f64>;
/// A partition counter.
type CounterFn = fn(&PartitionCounters) -> u64;

/// `/metrics`: the recorder's metrics (handlers, reconnects, dead letters,
/// latencies) plus the partitions' state and counters read from [`Health`].
async fn metrics_text(state: web::Data<HttpState>) -> HttpResponse {
    let h = &state.health;
    let mut out = String::new();
    if let Some(m) = &state.metrics {
        m.run_upkeep();
        out.push_str(&m.render());
    }
    let parts = h.partitions();
    let now = now_ms();
    let gauges: [(&str, &str, GaugeFn); 4] = [
        ("complyd_partition_connected", "1 while the partition's stream is open", |p, _, _| {
            Some(f64::from(u8::from(p.state == LinkState::Connected)))
        }),
        ("complyd_partition_failed", "1 past the restart intensity or on a configuration error", |p, _, _| {
            Some(f64::from(u8::from(p.failed || p.config_error.is_some())))
        }),
        (
            "complyd_partition_backoff_seconds",
            "the delay before the next connection request (0 unless waiting)",
            |p, _, now| Some(p.next_attempt_ms.map_or(0.0, |t| (t - now).max(0) as f64 / 1000.0)),
        ),
        (
            "complyd_partition_seconds_since_last_byte",
            "seconds since the last byte (heartbeats included)",
            |_, c, now| {
                let t = c.last_byte_ms.load(Relaxed);
                (t > 0).then(|| (now - t).max(0) as f64 / 1000.0)
            },
        ),
    ];
    for (name, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in &parts {
            if let Some(v) = get(p, &h.counters(p.partition), now) {
                sample(&mut out, name, &format!("partition=\"{}\"", p.partition), v);
            }
        }
    }
    let counters: [(&str, &str, CounterFn); 8] = [
        ("complyd_partition_bytes_total", "compressed bytes received", |c| c.bytes.load(Relaxed)),
        ("complyd_partition_decoded_bytes_total", "decompressed bytes framed", |c| c.bytes_decoded.load(Relaxed)),
        ("complyd_partition_heartbeats_total", "heartbeats received", |c| c.heartbeats.load(Relaxed)),
        ("complyd_partition_events_total", "events parsed and handed on", |c| c.events.load(Relaxed)),
        (
            "complyd_partition_dead_lettered_total",
            "lines dead-lettered (complyd_dead_lettered_total has the reasons)",
            |c| c.dead_lettered.load(Relaxed),
        ),
        ("complyd_partition_connections_total", "streams opened (HTTP 200)", |c| c.connections.load(Relaxed)),
        (
            "complyd_partition_cut_messages_total",
            "messages cut by the end of a connection, not applied (complyd_discarded_total has the reasons)",
            |c| c.cut_messages.load(Relaxed),
        ),
        ("complyd_partition_data_loss_disconnects_total", "full-buffer disconnects: events lost at the server", |c| {
            c.data_loss.load(Relaxed)
        }),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in &parts {
            sample(&mut out, name, &format!("partition=\"{}\"", p.partition), get(&h.counters(p.partition)));
        }
    }
    let name = "complyd_partition_messages_total";
    let _ = writeln!(out, "# HELP {name} compliance messages received, by type\n# TYPE {name} counter");
    for p in &parts {
        let c = h.counters(p.partition);
        for (ty, n) in EVENT_TYPES.iter().zip(&c.by_type) {
            sample(&mut out, name, &format!("partition=\"{}\",type=\"{ty}\"", p.partition), n.load(Relaxed));
        }
    }
    let gaps = h.unresolved_gaps();
    for (name, help, minutes) in [
        ("complyd_gaps_unresolved", "gaps of the ledger open or being repaired", false),
        ("complyd_gaps_unresolved_minutes", "their length, in minutes rounded up", true),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in &parts {
            let mine = gaps.iter().filter(|g| g.partition == p.partition);
            let v: i64 = if minutes { mine.map(|g| g.minutes()).sum() } else { mine.count() as i64 };
            sample(&mut out, name, &format!("partition=\"{}\"", p.partition), v.max(0) as u64);
        }
    }
    let _ = writeln!(
        out,
        "# HELP complyd_ready 1 when /readyz answers 200\n# TYPE complyd_ready gauge\ncomplyd_ready {}",
        u8::from(h.readiness().0)
    );
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"tok-123", b"tok-123"));
        assert!(!same_secret(b"tok-123", b"tok-124"));
        assert!(!same_secret(b"tok-12", b"tok-123"));
        assert!(!same_secret(b"", b"x"));
        assert!(!same_secret(b"tok-123tok-123", b"tok-123"), "the secret twice is not the secret");
        assert!(!same_secret(b"", b""), "an empty secret matches nothing");
    }
}
