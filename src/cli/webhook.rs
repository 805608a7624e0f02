//! `warmpool webhook`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::core::mutation::Rules;
use crate::telemetry::{self, LogFormat, Readiness, ShutdownSignals};
use crate::webhook::metrics::WebhookMetrics;
use crate::webhook::server::{self, AppState};
use crate::webhook::tls::{self, CertPaths, CertReloader, Expiry, Poll, ReloadingResolver};

/// How often the served certificate's expiry is checked besides at load and reload.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Serve the mutating admission webhook over HTTPS.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (YAML); built-in CargoCATs defaults without it.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM certificate chain served to the API server; re-read when it changes on disk.
    #[arg(long, env = "WARMPOOL_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of that certificate; re-read when it changes on disk.
    #[arg(long, env = "WARMPOOL_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Address of the HTTPS webhook endpoint (POST /mutate, GET /healthz, GET /readyz).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP /healthz, /readyz and /metrics endpoints.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// warmpool's own namespace, never mutated (set from the downward API by the chart).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// After SIGTERM (or Ctrl-C): keep accepting and serving, unready, this long before closing
    /// the port and draining (e.g. 5s, 1500ms; 0 closes it at once). Kubernetes removes a
    /// terminating pod from the Service's endpoints asynchronously, so the API server may still
    /// send reviews to it for a few seconds. A second signal ends the grace period at once.
    #[arg(long, default_value = "5s", value_parser = crate::config::duration::flag_or_zero)]
    pub shutdown_grace: Duration,
    /// Deadline to answer one request, body included (e.g. 4s, 800ms). Keep it under the
    /// webhook configuration's `timeoutSeconds`, so the API server gets the webhook's answer
    /// rather than its own timeout; the chart passes 80% of `webhook.timeoutSeconds`.
    #[arg(long, default_value = "4s", value_parser = crate::config::duration::flag)]
    pub request_timeout: Duration,
}

/// Loads everything that can be wrong (config, certificate, ports) before serving, so a bad
/// start fails at once with one line; then serves until SIGTERM or Ctrl-C, keeps serving
/// unready for `--shutdown-grace`, stops accepting and drains.
pub async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);

    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
    let rules = Rules::from_config(&config);
    let excluded = config
        .tenants
        .selector(args.namespace.as_deref())
        .map_err(|e| anyhow!("invalid config at `tenants.namespacePatterns`: {e}"))?;

    let provider = tls::provider();
    let reloader = CertReloader::load(
        CertPaths {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        Arc::clone(&provider),
    )?;
    let tls_config = tls::server_config(provider, reloader.resolver())
        .map_err(|e| anyhow!("cannot set up TLS: {e}"))?;

    let listener = crate::telemetry::plain_http::bind(args.listen)
        .map_err(|e| bind_error(&e, args.listen, "--listen"))?;
    let admin = telemetry::bind_admin(args.metrics_listen)
        .await
        .map_err(|e| bind_error(&e, args.metrics_listen, "--metrics-listen"))?;
    let address = listener.local_addr()?;
    let metrics_address = admin.local_addr()?;

    let mut registry = Registry::default();
    let metrics = WebhookMetrics::register(&mut registry);
    let ready = Readiness::default();
    let router = server::router(
        AppState::new(rules, excluded, metrics.clone(), ready.clone())
            .with_request_timeout(args.request_timeout),
    );
    let resolver = reloader.resolver();
    metrics.certificate_expiry(resolver.not_after());
    let certificate_expires = log_expiry(&resolver);

    // Flipped once the webhook has drained: stops the certificate poll and the admin server.
    let (stop, stopped) = watch::channel(false);
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let daily_resolver = Arc::clone(&resolver);
    let reload = tokio::spawn(reloader.run(
        move |poll, paths| match poll {
            Poll::Reloaded => {
                metrics.certificate_reload(true);
                metrics.certificate_expiry(resolver.not_after());
                tracing::info!(cert = %paths.cert.display(), "serving the new TLS certificate");
                log_expiry(&resolver);
            }
            Poll::Failed(e) => {
                metrics.certificate_reload(false);
                tracing::warn!(error = %e, "new TLS certificate not usable; still serving the previous one");
            }
            Poll::Unchanged => {}
        },
        stopped(),
    ));
    let daily = tokio::spawn({
        let (resolver, stop) = (daily_resolver, stopped());
        async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(EXPIRY_CHECK_INTERVAL) => log_expiry(&resolver),
                };
            }
        }
    });
    let admin = tokio::spawn(telemetry::serve_admin(
        admin,
        telemetry::admin_router(Arc::new(registry), ready.clone()),
        stopped(),
    ));

    // Install the signal handlers before announcing readiness, so a SIGTERM that follows the
    // "listening" line at once is a clean shutdown, not the default kill.
    let mut signals =
        ShutdownSignals::new().map_err(|e| anyhow!("cannot handle SIGTERM and Ctrl-C: {e}"))?;
    ready.set(true);
    tracing::info!(
        address = %address,
        metrics_address = %metrics_address,
        certificate_expires = certificate_expires.as_deref().unwrap_or("unknown"),
        shutdown_grace = ?args.shutdown_grace,
        request_timeout = ?args.request_timeout,
        "webhook listening"
    );

    // On the signal: unready at once (/readyz 503, so the endpoints drop this pod), but keep
    // accepting and serving through the grace period, during which the API server may still
    // send reviews here; then `serve` stops accepting and drains.
    let unready = ready.clone();
    let grace = args.shutdown_grace;
    let shutdown = async move {
        signals.next().await;
        unready.set(false);
        if grace.is_zero() {
            tracing::info!("shutdown requested; not ready, no grace period (--shutdown-grace 0)");
            return;
        }
        tracing::info!(
            grace = ?grace,
            "shutdown requested; not ready, still serving during the grace period while the endpoints drop this pod"
        );
        tokio::select! {
            () = tokio::time::sleep(grace) => tracing::info!("grace period over"),
            () = signals.next() => tracing::info!("second shutdown signal; grace period cut short"),
        }
    };
    let drain = server::drain_timeout(args.request_timeout);
    let drained = server::serve(listener, Arc::new(tls_config), router, shutdown, drain).await;

    let _ = stop.send(true);
    let _ = reload.await;
    let _ = daily.await;
    // The admin server closes its idle connections at once; do not wait on a stuck scrape.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), admin).await {
        tracing::warn!(error = %e, "metrics server ended with an error");
    }
    tracing::info!(drained, "webhook stopped");
    Ok(())
}

/// Logs how close the served certificate is to expiry: an error once expired, a warning within
/// [`tls::EXPIRY_WARNING`]. Returns the notAfter as RFC 3339 (for the "listening" line).
fn log_expiry(resolver: &ReloadingResolver) -> Option<String> {
    let Some(not_after) = resolver.not_after() else {
        tracing::warn!(
            "cannot read the serving certificate's notAfter; its expiry is not monitored (warmpool_webhook_certificate_expiry_timestamp_seconds is 0)"
        );
        return None;
    };
    let date = time::OffsetDateTime::from_unix_timestamp(not_after)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| not_after.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match tls::expiry(not_after, now) {
        Expiry::Expired => tracing::error!(
            not_after = %date,
            "the serving TLS certificate has expired: the API server refuses it, and with failurePolicy Ignore admits tenant pods unmutated; renew it (the Secret mounted at --tls-cert/--tls-key is re-read without a restart)"
        ),
        Expiry::Soon { days_left } => tracing::warn!(
            not_after = %date,
            days_left,
            "the serving TLS certificate expires soon; renew it before then (the Secret mounted at --tls-cert/--tls-key is re-read without a restart)"
        ),
        Expiry::Valid => {}
    }
    Some(date)
}

fn bind_error(e: &std::io::Error, address: SocketAddr, flag: &str) -> anyhow::Error {
    let fix = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process uses that port; stop it or choose another"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges; choose a higher one"
        }
        _ => "check the address",
    };
    anyhow!("cannot listen on {address} ({flag}): {e}; {fix} with {flag}")
}
