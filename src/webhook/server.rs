//! The HTTPS admission server: routes, limits, the TLS accept loop and the drain on shutdown.
//!
//! The accept loop is our own (tokio-rustls + hyper-util) rather than `axum::serve`, so that each
//! limit is explicit: a TLS handshake deadline, a header-read deadline, a whole-request deadline
//! well under the API server's `timeoutSeconds`, a body limit, a byte budget for the bodies held
//! at once, shared by all clients and capped per client ([`super::body_budget`]), a bound on open
//! connections and on requests in flight (excess requests get a 503 at once instead of waiting in
//! a queue), and a bounded drain of in-flight requests on shutdown. When to stop accepting (after the grace
//! period that follows SIGTERM) is the caller's `shutdown` future.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::field::Empty;

use crate::core::mutation::{Injected, Rules};
// The limits the admin port shares.
use crate::core::tenant::TenantSelector;
use crate::telemetry::Readiness;
use crate::telemetry::plain_http::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
use crate::webhook::body_budget::{BodyBudget, Client, Reservation};
use crate::webhook::metrics::WebhookMetrics;
use crate::webhook::review::{Decision, Reviewed, review};

/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Of a body over the limit, how much is read and dropped so that the client gets the 413;
/// beyond it the connection is closed.
const DISCARD_LIMIT: usize = 2 * MAX_BODY_BYTES;
/// The most reserved up front for a body, whatever its declared length.
const PREALLOCATE_LIMIT: usize = 256 * 1024;
/// Time for a client to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a client to start its first request once the TLS handshake is done. hyper bounds
/// an HTTP/1 request head by [`HEADER_READ_TIMEOUT`], but an HTTP/2 connection waits for the
/// client's preface with no deadline: without this one, a client that completes the handshake
/// and then sends nothing would hold a connection slot for ever. (Clients, the API server
/// included, open a connection to send a request at once; after the first request an idle
/// HTTP/2 connection is kept by its keep-alive pings.)
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to answer a request, body included, when `--request-timeout` is not given: under the
/// API server's smallest sensible `timeoutSeconds` (5, the chart's; Kubernetes' default is 10),
/// so it sees our error rather than its own deadline. The chart passes 80% of its
/// `webhook.timeoutSeconds` instead ([`AppState::with_request_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Requests being answered at most; beyond it a request gets a 503 at once.
const MAX_IN_FLIGHT: usize = 256;
/// Concurrent HTTP/2 streams on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routes need, built once at start; nothing is re-read per request.
#[derive(Clone)]
pub struct AppState {
    rules: Arc<Rules>,
    excluded: Arc<TenantSelector>,
    metrics: WebhookMetrics,
    ready: Readiness,
    request_timeout: Duration,
    bodies: Arc<BodyBudget>,
}

impl AppState {
    pub fn new(
        rules: Rules,
        excluded: TenantSelector,
        metrics: WebhookMetrics,
        ready: Readiness,
    ) -> Self {
        AppState {
            rules: Arc::new(rules),
            excluded: Arc::new(excluded),
            metrics,
            ready,
            request_timeout: REQUEST_TIMEOUT,
            bodies: Arc::new(BodyBudget::default()),
        }
    }

    /// Holds request bodies within `budget` instead of the default one.
    pub fn with_body_budget(mut self, budget: BodyBudget) -> Self {
        self.bodies = Arc::new(budget);
        self
    }

    /// Bounds each request by `timeout` instead of [`REQUEST_TIMEOUT`]. Keep it under the
    /// webhook configuration's `timeoutSeconds`, with room for the network and the API server.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// The HTTPS routes: `POST /mutate`, `GET /healthz`, `GET /readyz`. Every error is a JSON body
/// `{"error": "..."}`.
pub fn router(state: AppState) -> Router {
    router_with_limit(state, MAX_IN_FLIGHT)
}

fn router_with_limit(state: AppState, max_in_flight: usize) -> Router {
    // Each request clones the state it extracts: one `Arc` each rather than the dozen handles
    // inside (the metrics alone hold five), whose counts were 2 % of a small review's CPU.
    let guard_state = Arc::new(GuardState {
        in_flight: Semaphore::new(max_in_flight),
        metrics: state.metrics.clone(),
        request_timeout: state.request_timeout,
    });
    Router::new()
        .route(
            "/mutate",
            post(mutate).layer(middleware::from_fn_with_state(guard_state, guard)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                "no such route; the webhook serves POST /mutate",
            )
        })
        .method_not_allowed_fallback(|| async {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; the webhook serves POST /mutate",
            )
        })
        .with_state(Arc::new(state))
}

fn json_error(status: StatusCode, message: impl AsRef<str>) -> Response {
    let body = serde_json::json!({ "error": message.as_ref() });
    (status, axum::Json(body)).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

struct GuardState {
    in_flight: Semaphore,
    metrics: WebhookMetrics,
    request_timeout: Duration,
}

/// Sheds load beyond [`MAX_IN_FLIGHT`] and bounds each request by the request timeout
/// ([`REQUEST_TIMEOUT`] unless configured); both are counted as review outcomes (`overloaded`,
/// `timeout`).
async fn guard(State(guard): State<Arc<GuardState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let Ok(_permit) = guard.in_flight.try_acquire() else {
        guard
            .metrics
            .review("overloaded", started.elapsed().as_secs_f64());
        tracing::warn!("too many reviews in flight; answered 503");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many reviews in flight; retry",
        );
    };
    let timeout = guard.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            guard
                .metrics
                .review("timeout", started.elapsed().as_secs_f64());
            tracing::warn!(timeout = ?timeout, "request not completed in time");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("request not completed within {timeout:?}"),
            )
        }
    }
}

/// `POST /mutate`: one AdmissionReview, answered inline (the review is CPU-only and takes
/// microseconds, so it runs on the async worker rather than hopping to a thread pool).
async fn mutate(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let metrics = &state.metrics;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let client = request.extensions().get::<Client>().copied();
    let reservation = state.bodies.reservation(client);
    // Held until the answer is made: the review reads the body in place.
    let body = read_body(request.into_body(), declared, reservation).await;
    let (body, _reservation) = match body {
        Ok(body) => body,
        Err(BodyError::Busy) => {
            let span = finish(metrics, started, "overloaded", None);
            let _entered = span.enter();
            tracing::warn!(
                client = client.map(|c| c.0.to_string()).as_deref(),
                "request bodies beyond the byte budget; answered 503"
            );
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bytes held at once; retry",
            );
        }
        Err(BodyError::TooLarge) => {
            let span = finish(metrics, started, "too_large", None);
            let _entered = span.enter();
            tracing::warn!(limit = MAX_BODY_BYTES, "request body too large");
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_BODY_BYTES} bytes (3 MiB)"),
            );
        }
        Err(BodyError::Read(e)) => {
            let span = finish(metrics, started, "body_error", None);
            let _entered = span.enter();
            tracing::warn!(error = %e, "cannot read the request body");
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
    };

    match review(&body, &state.rules, &state.excluded) {
        Ok(reviewed) => {
            let outcome = reviewed.decision.metric_label();
            let span = finish(metrics, started, outcome, Some(&reviewed));
            let _entered = span.enter();
            match &reviewed.decision {
                Decision::Patched(injected) => {
                    for what in injected {
                        metrics.injected(*what);
                    }
                    tracing::info!(injected = &*joined(injected), "pod patched");
                }
                Decision::Unchanged => tracing::info!("pod already steered to the pool"),
                Decision::Skipped(reason) => {
                    tracing::info!(reason = %reason, skip = reason.metric_label(), "pod skipped");
                }
                Decision::Ignored(why) => tracing::debug!(reason = why, "request ignored"),
            }
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                )],
                reviewed.body,
            )
                .into_response()
        }
        Err(e) => {
            let span = finish(metrics, started, e.metric_label(), None);
            let _entered = span.enter();
            tracing::warn!(error = %e, "rejected a request that is not an AdmissionReview");
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// Counts one review and returns its span, made once with every field it will show. (A span
/// opened at the start and filled in with `record` costs the formatting subscriber a
/// re-format of its fields per `record`, and with `--log-format json` a re-parse of them; the
/// body read has no events of its own to place in it.)
fn finish(
    metrics: &WebhookMetrics,
    started: Instant,
    outcome: &'static str,
    reviewed: Option<&Reviewed>,
) -> tracing::Span {
    let elapsed = started.elapsed();
    metrics.review(outcome, elapsed.as_secs_f64());
    let duration_us = elapsed.as_micros() as u64;
    match reviewed {
        Some(r) => tracing::info_span!(
            "review",
            uid = r.uid.as_str(),
            namespace = r.namespace.as_str(),
            pod = r.name.as_str(),
            decision = outcome,
            duration_us,
        ),
        None => tracing::info_span!(
            "review",
            uid = Empty,
            namespace = Empty,
            pod = Empty,
            decision = outcome,
            duration_us,
        ),
    }
}

/// The injections as the log line shows them (`node-affinity,tolerations`): a constant for the
/// sorted, deduplicated lists that `mutate` returns, so that the common line allocates nothing.
fn joined(injected: &[Injected]) -> Cow<'static, str> {
    match injected {
        [one] => Cow::Borrowed(one.as_str()),
        [Injected::NodeAffinity, Injected::Tolerations] => {
            Cow::Borrowed("node-affinity,tolerations")
        }
        _ => Cow::Owned(
            injected
                .iter()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

enum BodyError {
    TooLarge,
    /// The byte budget, or the client's share of it, cannot hold it now.
    Busy,
    Read(axum::Error),
}

/// Reads a body of at most [`MAX_BODY_BYTES`]. Of a larger one, up to [`DISCARD_LIMIT`] bytes
/// are read and dropped before the 413 is sent: an HTTP/1 client still sending its body would
/// otherwise hit a closed connection instead of reading the answer. Every byte is held within
/// `reservation` (a declared length is reserved up front, so an oversubscribed body is refused
/// before it is read).
async fn read_body(
    body: Body,
    declared: Option<u64>,
    mut reservation: Reservation,
) -> Result<(Vec<u8>, Reservation), BodyError> {
    if declared.is_some_and(|n| n > DISCARD_LIMIT as u64) {
        return Err(BodyError::TooLarge);
    }
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        discard(body, DISCARD_LIMIT).await;
        return Err(BodyError::TooLarge);
    }
    if let Some(n) = declared
        && !reservation.grow_to(n as usize)
    {
        return Err(BodyError::Busy);
    }
    // Reserve what is declared, within reason: a client may declare and not send.
    let reserve = declared.map_or(0, |n| n.min(PREALLOCATE_LIMIT as u64) as usize);
    let mut buffer = Vec::with_capacity(reserve);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buffer.len() + data.len() > MAX_BODY_BYTES {
            discard(
                body,
                DISCARD_LIMIT.saturating_sub(buffer.len() + data.len()),
            )
            .await;
            return Err(BodyError::TooLarge);
        }
        if !reservation.grow_to(buffer.len() + data.len()) {
            return Err(BodyError::Busy);
        }
        buffer.extend_from_slice(&data);
    }
    Ok((buffer, reservation))
}

async fn discard(mut body: Body, mut budget: usize) {
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match budget.checked_sub(data.len()) {
            Some(left) => budget = left,
            None => return,
        }
    }
}

/// How long a drain waits: [`DRAIN_TIMEOUT`], or longer when requests may run longer (a
/// request deadline above it), so no request still within its deadline is cut.
pub fn drain_timeout(request_timeout: Duration) -> Duration {
    DRAIN_TIMEOUT.max(request_timeout + Duration::from_secs(1))
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then stops accepting (the
/// port closes) and waits up to `drain` ([`drain_timeout`]) for open requests. Returns whether the drain
/// completed. Connections keep being accepted and served until then, ready or not: the caller's
/// `shutdown` includes the grace period during which the endpoints still send reviews here.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> bool {
    let acceptor = TlsAcceptor::from(tls);
    // The protocol is the one agreed by ALPN: sniffing the first bytes (hyper-util's automatic
    // mode) would wait for them with no deadline.
    let http1 = Arc::new(connection_builder().http1_only());
    let http2 = Arc::new(connection_builder().http2_only());
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    while let Some((permit, tcp, peer)) =
        crate::telemetry::plain_http::accept(&listener, &connections, shutdown.as_mut()).await
    {
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (http1, http2) = (Arc::clone(&http1), Arc::clone(&http2));
        let started = Arc::new(AtomicBool::new(false));
        let service = TowerToHyperService::new(router.clone().map_request({
            let started = Arc::clone(&started);
            move |mut request: Request<hyper::body::Incoming>| {
                started.store(true, Ordering::Relaxed);
                request.extensions_mut().insert(Client(peer.ip()));
                request
            }
        }));
        // Taken before the handshake, so a drain waits for handshakes under way too.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => http2,
                _ => http1,
            };
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(tls), service));
            let first_request = async {
                tokio::time::sleep(FIRST_REQUEST_TIMEOUT).await;
                if started.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                () = first_request => {
                    tracing::debug!(%peer, "no request within the deadline after the handshake; closed");
                }
            }
        });
    }
    drop(listener);

    let open = graceful.count();
    tracing::info!(
        connections = open,
        "stopped accepting; draining in-flight requests"
    );
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(timeout = ?drain, "drain timed out; closing the remaining connections");
            false
        }
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_drain_outlasts_every_request_deadline() {
        assert_eq!(drain_timeout(Duration::from_secs(4)), DRAIN_TIMEOUT);
        assert_eq!(
            drain_timeout(Duration::from_secs(24)),
            Duration::from_secs(25)
        );
    }

    use super::*;
    use crate::config::Config;

    fn state() -> AppState {
        let config = Config::default();
        AppState::new(
            Rules::from_config(&config),
            TenantSelector::new(&config.tenants.namespace_patterns, None).unwrap(),
            WebhookMetrics::register(&mut prometheus_client::registry::Registry::default()),
            Readiness::default(),
        )
    }

    async fn json(response: Response) -> serde_json::Value {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    /// Requests beyond the in-flight limit are answered 503 at once, not queued.
    #[tokio::test]
    async fn requests_beyond_the_limit_are_shed_not_queued() {
        let router = router_with_limit(state(), 1);
        // A review whose body never finishes holds the only slot.
        let stalled = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<hyper::body::Frame<axum::body::Bytes>, std::convert::Infallible>,
        >());
        let first = tokio::spawn(
            router
                .clone()
                .oneshot(Request::post("/mutate").body(Body::new(stalled)).unwrap()),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;

        let started = Instant::now();
        let response = router
            .clone()
            .oneshot(Request::post("/mutate").body(Body::from("{}")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            json(response).await["error"]
                .as_str()
                .unwrap()
                .contains("in flight")
        );
        first.abort();
    }

    /// The request deadline is the configured one: a body that never ends gets the 503 of that
    /// deadline, counted as a `timeout`.
    #[tokio::test]
    async fn the_request_deadline_is_the_configured_one() {
        let router = router(state().with_request_timeout(Duration::from_millis(300)));
        let stalled = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<hyper::body::Frame<axum::body::Bytes>, std::convert::Infallible>,
        >());
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            router.oneshot(Request::post("/mutate").body(Body::new(stalled)).unwrap()),
        )
        .await
        .expect("answered by the 300 ms deadline, long before 10 s")
        .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            json(response).await["error"],
            "request not completed within 300ms"
        );
    }

    #[test]
    fn injections_are_joined_as_before() {
        use Injected::{NodeAffinity, Tolerations};
        for injected in [
            &[][..],
            &[NodeAffinity],
            &[Tolerations],
            &[NodeAffinity, Tolerations],
            &[Tolerations, NodeAffinity],
            &[NodeAffinity, NodeAffinity],
        ] {
            let expected: Vec<&str> = injected.iter().map(|i| i.as_str()).collect();
            assert_eq!(joined(injected), expected.join(","));
        }
    }

    #[tokio::test]
    async fn readyz_follows_readiness() {
        let state = state();
        let ready = state.ready.clone();
        let router = router(state);
        let get = |router: Router| async move {
            router
                .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        };
        assert_eq!(get(router.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
        ready.set(true);
        assert_eq!(get(router.clone()).await, StatusCode::OK);
    }
}
