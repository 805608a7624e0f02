//! Logs, metrics and the plain-HTTP admin endpoints (`/healthz`, `/readyz`, `/metrics`) that
//! both long-running subcommands share.

pub mod plain_http;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global `tracing` subscriber. `RUST_LOG` overrides the default `info` level.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a pipe or a file (a container's log) are
    // noise to read, and styling every field was a fifth of the instructions of a review's
    // log line (docs/performance-history.md).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second call (tests start several servers in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().event_format(JsonLines::default()).try_init(),
    };
}

/// tracing-subscriber's JSON lines (`flatten_event`, the current span and the span list), byte
/// for byte, with warmpool's own events written straight from the fields each span stored as
/// JSON when it was made. The stock formatter parses every span's stored fields back into a
/// `serde_json::Value` to write them, twice a line (`span` and `spans`): a third of a review's
/// instructions with `--log-format json` (docs/performance-history.md). Events from other
/// crates (the `log` records of rustls among them) still go through the stock formatter.
pub struct JsonLines {
    stock: Format<Json, SystemTime>,
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines {
            stock: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true),
        }
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if !meta.target().starts_with("warmpool") {
            return self.stock.format_event(ctx, writer, event);
        }
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(br#"{"timestamp":""#);
        SystemTime.format_time(&mut Writer::new(&mut Utf8(&mut line)))?;
        line.extend_from_slice(br#"","level":""#);
        line.extend_from_slice(meta.level().as_str().as_bytes());
        line.push(b'"');
        let mut fields = JsonEventFields {
            line: &mut line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.extend_from_slice(br#","target":"#);
        push_json(&mut line, meta.target())?;
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &current {
            line.extend_from_slice(br#","span":"#);
            push_span(&mut line, span)?;
            line.extend_from_slice(br#","spans":["#);
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    push_span(&mut line, &span)?;
                }
            }
            line.push(b']');
        }
        line.extend_from_slice(b"}\n");
        writer.write_str(std::str::from_utf8(&line).map_err(|_| std::fmt::Error)?)
    }
}

/// A span as the stock formatter writes it: its stored fields (a JSON object, keys sorted),
/// then its `name`.
fn push_span<S>(line: &mut Vec<u8>, span: &SpanRef<'_, S>) -> std::fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    let stored = extensions
        .get::<FormattedFields<JsonFields>>()
        .map_or("", |f| f.fields.as_str());
    match stored.strip_suffix('}') {
        Some(fields) if fields.starts_with('{') && fields.len() > 1 => {
            line.extend_from_slice(fields.as_bytes());
            line.push(b',');
        }
        _ => line.push(b'{'),
    }
    line.extend_from_slice(br#""name":"#);
    push_json(line, span.metadata().name())?;
    line.push(b'}');
    Ok(())
}

fn push_json<T: serde::Serialize + ?Sized>(line: &mut Vec<u8>, value: &T) -> std::fmt::Result {
    serde_json::to_writer(line, value).map_err(|_| std::fmt::Error)
}

/// `fmt::Write` into a byte buffer (what is written is UTF-8 by construction).
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// An event's fields as `,"name":value` each, as tracing-serde's map visitor writes them.
struct JsonEventFields<'a> {
    line: &'a mut Vec<u8>,
    result: std::fmt::Result,
}

impl JsonEventFields<'_> {
    fn entry<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if self.result.is_err() {
            return;
        }
        self.line.push(b',');
        self.result = push_json(self.line, field.name()).and_then(|()| {
            self.line.push(b':');
            push_json(self.line, value)
        });
    }
}

impl Visit for JsonEventFields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.entry(field, &format_args!("{value:?}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }
}

/// A process-wide "ready" flag: false until start-up is done, false again on shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: Readiness,
}

/// `/healthz` (alive), `/readyz` (503 until ready), `/metrics` (Prometheus text format).
pub fn admin_router(registry: Arc<Registry>, ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { registry, ready })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `listen` now (so a port in use fails at start) and serves `router` until `shutdown`.
pub async fn bind_admin(listen: SocketAddr) -> Result<TcpListener, std::io::Error> {
    crate::telemetry::plain_http::bind(listen)
}

/// Serves the admin router on an already-bound listener until `shutdown` completes.
pub async fn serve_admin(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    crate::telemetry::plain_http::serve(listener, router, shutdown).await
}

/// Resolves on SIGTERM or Ctrl-C: the moment to turn unready and drain.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// SIGTERM and Ctrl-C, listened to from [`ShutdownSignals::new`] on: each call of
/// [`ShutdownSignals::next`] resolves on one signal, so a second one can cut a grace period short
/// (a signal that arrives between two calls is kept for the next).
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers now: from here on SIGTERM and Ctrl-C no longer end the process.
    pub fn new() -> Result<Self, std::io::Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Resolves on the next SIGTERM or Ctrl-C.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Lines written by a JSON subscriber with `format` for the events of `emit`, timestamps
    /// blanked.
    fn json_lines<E>(format: E, emit: &dyn Fn()) -> Vec<String>
    where
        E: for<'w> FormatEvent<tracing_subscriber::Registry, JsonFields> + Send + Sync + 'static,
    {
        #[derive(Clone, Default)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .json()
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let (_, rest) = line.split_once(r#"","level""#).expect(line);
                format!("{{\"timestamp\":\"…{rest}")
            })
            .collect()
    }

    /// Our JSON lines are the stock formatter's (`flatten_event`, current span, span list)
    /// byte for byte, for the webhook's own events and every kind of field.
    #[test]
    fn json_lines_are_the_stock_formatters() {
        let emit = || {
            tracing::info!("no span at all");
            let review = tracing::info_span!(
                "review",
                uid = "q\"u\\o\ntë\u{1}",
                namespace = "demo-1",
                pod = "web-",
                decision = "patched",
                duration_us = 12u64,
            );
            {
                let _entered = review.enter();
                tracing::info!(injected = "node-affinity,tolerations", "pod patched");
                let reason = std::io::Error::other("a \"reason\"");
                tracing::info!(reason = %reason, skip = "bound", "pod skipped");
                tracing::warn!(error = ?reason, limit = 3u64, "warned");
                tracing::debug!(reason = "not a Pod", "request ignored");
                let inner = tracing::info_span!("inner", flag = true, n = -4i64, x = 1.5f64);
                let _inner = inner.enter();
                tracing::info!(nan = f64::NAN, big = u64::MAX, "nested");
                let empty = tracing::info_span!("empty");
                let _empty = empty.enter();
                tracing::info!("in an empty span");
            }
            let recorded = tracing::info_span!("recorded", a = tracing::field::Empty, b = 1u64);
            recorded.record("a", "later");
            tracing::info!(parent: &recorded, "explicit parent, no current span");
            let _entered = recorded.enter();
            tracing::error!(target: "elsewhere", other = 1u64, "another crate's event");
            tracing::trace!(v = ?vec![1, 2], "debug field");
        };
        let stock = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true);
        let expected = json_lines(stock, &emit);
        assert_eq!(expected.len(), 10, "{expected:#?}");
        assert_eq!(json_lines(JsonLines::default(), &emit), expected);
    }

    #[tokio::test]
    async fn readiness_follows_the_flag_and_metrics_are_encoded() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("warmpool_test_things", "Things counted", counter.clone());
        counter.inc();
        let ready = Readiness::default();
        let router = admin_router(Arc::new(registry), ready.clone());

        assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&router, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.set(true);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
        let (status, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("warmpool_test_things_total 1"), "{body}");
    }
}
