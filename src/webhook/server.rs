//! The HTTPS admission server: routes, limits, the TLS accept loop and the drain on shutdown.
//!
//! The accept loop is our own (tokio-rustls + hyper-util) rather than `axum::serve`, so that each
//! limit is explicit: a TLS handshake deadline, a header-read deadline, a whole-request deadline
//! well under the API server's `timeoutSeconds`, a body limit, a bound on open connections and
//! on requests in flight (excess requests get a 503 at once instead of waiting in a queue), and a
//! bounded drain of in-flight requests on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::field::Empty;

use crate::mutation::Rules;
use crate::telemetry::Readiness;
use crate::tenant::TenantSelector;
use crate::webhook::metrics::WebhookMetrics;
use crate::webhook::review::{Decision, review};

/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Time for a client to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a client to send a request's headers (HTTP/1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to answer a request, body included: under the API server's smallest sensible
/// `timeoutSeconds` (5; the default is 10), so it sees our error rather than its own deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Open connections at most; beyond it new ones wait in the kernel's accept backlog.
const MAX_CONNECTIONS: usize = 1024;
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
        }
    }
}

/// The HTTPS routes: `POST /mutate`, `GET /healthz`, `GET /readyz`. Every error is a JSON body
/// `{"error": "..."}`.
pub fn router(state: AppState) -> Router {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    Router::new()
        .route(
            "/mutate",
            post(mutate).layer(middleware::from_fn_with_state(in_flight, guard)),
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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn json_error(status: StatusCode, message: impl AsRef<str>) -> Response {
    let body = serde_json::json!({ "error": message.as_ref() });
    (status, axum::Json(body)).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Sheds load beyond [`MAX_IN_FLIGHT`] and bounds each request by [`REQUEST_TIMEOUT`].
async fn guard(State(in_flight): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_IN_FLIGHT} reviews already in flight; retry"),
        );
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout = ?REQUEST_TIMEOUT, "request not completed in time");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "request not completed within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )
        }
    }
}

/// `POST /mutate`: one AdmissionReview, answered inline (the review is CPU-only and takes
/// microseconds, so it runs on the async worker rather than hopping to a thread pool).
async fn mutate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "review",
        uid = Empty,
        namespace = Empty,
        pod = Empty,
        decision = Empty,
        duration_us = Empty,
    );
    let _entered = span.enter();
    let metrics = &state.metrics;
    let finish = |outcome: &'static str| {
        let elapsed = started.elapsed();
        span.record("decision", outcome);
        span.record("duration_us", elapsed.as_micros() as u64);
        metrics.review(outcome, elapsed.as_secs_f64());
    };

    // Refuse a declared oversize body before reading it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match body {
        _ if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) => return too_large(finish),
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large(finish);
        }
        Err(rejection) => {
            finish("body_error");
            tracing::warn!(error = %rejection.body_text(), "cannot read the request body");
            return json_error(rejection.status(), rejection.body_text());
        }
    };

    match review(&body, &state.rules, &state.excluded) {
        Ok(reviewed) => {
            span.record("uid", reviewed.uid.as_str());
            span.record("namespace", reviewed.namespace.as_str());
            span.record("pod", reviewed.name.as_str());
            finish(reviewed.decision.metric_label());
            match &reviewed.decision {
                Decision::Patched(injected) => {
                    for what in injected {
                        metrics.injected(what.as_str());
                    }
                    let injected: Vec<&str> = injected.iter().map(|i| i.as_str()).collect();
                    tracing::info!(injected = injected.join(","), "pod patched");
                }
                Decision::Unchanged => tracing::info!("pod already steered to the pool"),
                Decision::Skipped(reason) => {
                    tracing::info!(reason = %reason, skip = reason.metric_label(), "pod skipped");
                }
                Decision::Ignored(why) => tracing::debug!(reason = why, "request ignored"),
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                reviewed.body,
            )
                .into_response()
        }
        Err(e) => {
            finish(e.metric_label());
            tracing::warn!(error = %e, "rejected a request that is not an AdmissionReview");
            json_error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

fn too_large(finish: impl FnOnce(&'static str)) -> Response {
    finish("too_large");
    tracing::warn!(limit = MAX_BODY_BYTES, "request body too large");
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body exceeds {MAX_BODY_BYTES} bytes (3 MiB)"),
    )
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then stops accepting and
/// waits up to [`DRAIN_TIMEOUT`] for open requests. Returns whether the drain completed.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(connection_builder());
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let service = TowerToHyperService::new(router.clone());
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
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);

    let open = graceful.count();
    tracing::info!(
        connections = open,
        "stopped accepting; draining in-flight requests"
    );
    match tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out; closing the remaining connections");
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
