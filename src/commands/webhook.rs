//! `warmpool webhook`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::mutation::Rules;
use crate::telemetry::{self, LogFormat, Readiness};
use crate::tenant::TenantSelector;
use crate::webhook::metrics::WebhookMetrics;
use crate::webhook::server::{self, AppState};
use crate::webhook::tls::{self, CertPaths, CertReloader, Poll};

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
}

/// Loads everything that can be wrong (config, certificate, ports) before serving, so a bad
/// start fails at once with one line; then serves until SIGTERM or Ctrl-C and drains.
pub async fn run(args: Args) -> anyhow::Result<()> {
    telemetry::init_logging(args.log_format);

    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
    let rules = Rules::from_config(&config);
    let excluded = TenantSelector::new(
        &config.tenants.namespace_patterns,
        args.namespace.as_deref(),
    )
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

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| bind_error(&e, args.listen, "--listen"))?;
    let admin = telemetry::bind_admin(args.metrics_listen)
        .await
        .map_err(|e| bind_error(&e, args.metrics_listen, "--metrics-listen"))?;
    let address = listener.local_addr()?;
    let metrics_address = admin.local_addr()?;

    let mut registry = Registry::default();
    let metrics = WebhookMetrics::register(&mut registry);
    let ready = Readiness::default();
    let router = server::router(AppState::new(
        rules,
        excluded,
        metrics.clone(),
        ready.clone(),
    ));

    // Flipped once the webhook has drained: stops the certificate poll and the admin server.
    let (stop, stopped) = watch::channel(false);
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let reload = tokio::spawn(reloader.run(
        move |poll, paths| match poll {
            Poll::Reloaded => {
                metrics.certificate_reload(true);
                tracing::info!(cert = %paths.cert.display(), "serving the new TLS certificate");
            }
            Poll::Failed(e) => {
                metrics.certificate_reload(false);
                tracing::warn!(error = %e, "new TLS certificate not usable; still serving the previous one");
            }
            Poll::Unchanged => {}
        },
        stopped(),
    ));
    let admin = tokio::spawn(telemetry::serve_admin(
        admin,
        telemetry::admin_router(Arc::new(registry), ready.clone()),
        stopped(),
    ));

    // Install the signal handlers (on first poll) before announcing readiness, so a SIGTERM
    // that follows the "listening" line at once is a clean shutdown, not the default kill.
    let mut signal = Box::pin(telemetry::shutdown_signal());
    if futures::poll!(&mut signal).is_ready() {
        return Ok(());
    }
    ready.set(true);
    tracing::info!(
        address = %address,
        metrics_address = %metrics_address,
        "webhook listening"
    );

    let unready = ready.clone();
    let shutdown = async move {
        signal.await;
        unready.set(false);
        tracing::info!("shutdown requested; not ready");
    };
    let drained = server::serve(listener, Arc::new(tls_config), router, shutdown).await;

    let _ = stop.send(true);
    let _ = reload.await;
    // The admin server closes its idle connections at once; do not wait on a stuck scrape.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), admin).await {
        tracing::warn!(error = %e, "metrics server ended with an error");
    }
    tracing::info!(drained, "webhook stopped");
    Ok(())
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
