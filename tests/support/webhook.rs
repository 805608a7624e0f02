//! The real `warmpool webhook` process on loopback, registered with the real API server by a
//! url-based MutatingWebhookConfiguration, scoped to one test's namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use warmpool::config::Config;

use super::cluster::{ChildGuard, eventually, free_port, spawn_warmpool};

/// A running webhook server and what is needed to register it.
pub struct Webhook {
    pub process: Option<ChildGuard>,
    pub port: u16,
    pub metrics_port: u16,
    pub ca_bundle: String,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Webhook {
    /// Writes certificates with `warmpool certs` and starts `warmpool webhook` on 127.0.0.1.
    pub async fn start(binary: &Path, config: Option<&Config>) -> Webhook {
        let mut webhook = Webhook::certificates(binary, config);
        let (port, metrics_port) = (webhook.port, webhook.metrics_port);
        webhook.process = Some(webhook.spawn_on(binary, port, metrics_port, &[], &webhook.log));
        wait_ready(metrics_port, &webhook.log).await;
        webhook
    }

    /// `warmpool webhook` on this one's certificates and configuration, on `port` and
    /// `metrics_port`, with `extra` arguments, logging to `log`.
    fn spawn_on(
        &self,
        binary: &Path,
        port: u16,
        metrics_port: u16,
        extra: &[&str],
        log: &Path,
    ) -> ChildGuard {
        let d = self.dir.path();
        let (cert, key, config) = (d.join("tls.crt"), d.join("tls.key"), d.join("config.yaml"));
        let listen = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "webhook",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics,
        ];
        if config.exists() {
            args.extend(["--config", config.to_str().unwrap()]);
        }
        args.extend(extra);
        spawn_warmpool(binary, &args, &[], log)
    }

    /// Stops the server (the API server then meets a closed port).
    pub fn stop(&mut self) {
        self.process = None;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Registers this server with the API server through the chart's own
    /// MutatingWebhookConfiguration (`helm template`, both entries: by label and by name),
    /// rendered for `patterns` and scoped to this test run by `tenants.namespaceMatchExpressions`:
    /// only namespaces labelled [`RUN_LABEL`]`=<run>` are sent here. Every namespace a test
    /// creates carries that label from its creation on ([`run_labels`]), so whatever the
    /// reconciler or a person later adds, one of the chart's entries selects it.
    pub async fn register(
        &self,
        client: &Client,
        run: &str,
        patterns: &[&str],
        own_namespace: &str,
    ) {
        let url = format!("https://127.0.0.1:{}/mutate", self.port);
        self.register_url(client, run, patterns, own_namespace, &url)
            .await;
    }

    /// [`Webhook::register`] for the tenants `<prefix>*` of run `run`, whose own namespace is
    /// `<run>-system`.
    pub async fn register_prefix(&self, client: &Client, run: &str, prefix: &str) {
        let pattern = format!("{prefix}*");
        self.register(client, run, &[&pattern], &format!("{run}-system"))
            .await;
    }
}

/// The label that scopes a test run's webhook registration to that run's namespaces.
pub const RUN_LABEL: &str = "warmpool.test/run";

/// The labels every namespace of test run `run` is created with.
pub fn run_labels(run: &str) -> serde_json::Value {
    json!({ RUN_LABEL: run })
}

/// The chart's MutatingWebhookConfiguration for `patterns`, scoped to `run`'s namespaces.
pub fn chart_webhook_configuration(
    run: &str,
    patterns: &[&str],
    own_namespace: &str,
) -> serde_json::Value {
    let scope = json!([{"key": RUN_LABEL, "operator": "In", "values": [run]}]);
    let args = [
        "--show-only=templates/webhook.yaml".to_owned(),
        "--set=certs.mode=provided".to_owned(),
        "--set=certs.provided.secretName=unused".to_owned(),
        "--set=certs.provided.caBundle=unused".to_owned(),
        format!("--set-json=tenants.namespacePatterns={}", json!(patterns)),
        format!("--set-json=tenants.namespaceMatchExpressions={scope}"),
    ];
    let docs = super::helm::template("warmpool", own_namespace, &args);
    docs.into_iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("the chart renders a MutatingWebhookConfiguration")
}

/// Deletes a webhook configuration (best effort).
pub async fn unregister(client: &Client, name: &str) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// GET /readyz on the plain-HTTP metrics port, with nothing but a TCP stream.
pub async fn readyz(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// Waits (at most 20 s) until /readyz on `metrics_port` answers 200; `log` is named if not.
async fn wait_ready(metrics_port: u16, log: &Path) {
    let addr = format!("127.0.0.1:{metrics_port}");
    eventually(
        &format!("webhook ready (log: {})", log.display()),
        Duration::from_secs(20),
        || {
            let addr = addr.clone();
            async move { readyz(&addr).await.then_some(()) }
        },
    )
    .await;
}

/// One more `warmpool webhook` process serving the certificates and configuration of a
/// [`Webhook`], on ports of its own: the replicas of a rollout.
pub struct WebhookProcess {
    pub process: ChildGuard,
    pub port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Webhook {
    /// Certificates (and the configuration, if any) as [`Webhook::start`] writes them, with no
    /// process yet: start them with [`Webhook::spawn_process`].
    pub fn certificates(binary: &Path, config: Option<&Config>) -> Webhook {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_bundle = super::loopback::certs(binary, dir.path());
        if let Some(config) = config {
            let yaml = serde_saphyr::to_string(config).expect("the configuration as YAML");
            std::fs::write(dir.path().join("config.yaml"), yaml).expect("config");
        }
        Webhook {
            process: None,
            port: free_port(),
            metrics_port: free_port(),
            ca_bundle,
            log: dir.path().join("webhook.log"),
            dir,
        }
    }

    /// Starts another `warmpool webhook` on this one's certificates and configuration, with
    /// `extra` arguments, on fresh ports; returns once its /readyz answers 200. Its log is
    /// `webhook-<port>.log` beside this one's.
    pub async fn spawn_process(&self, binary: &Path, extra: &[&str]) -> WebhookProcess {
        let (port, metrics_port) = (free_port(), free_port());
        let log = self.dir.path().join(format!("webhook-{port}.log"));
        let process = WebhookProcess {
            process: self.spawn_on(binary, port, metrics_port, extra, &log),
            port,
            metrics_port,
            log,
        };
        wait_ready(metrics_port, &process.log).await;
        process
    }

    /// [`Webhook::register`], with the webhook entries calling `url` instead of this server
    /// (a load balancer in front of several processes, say).
    pub async fn register_url(
        &self,
        client: &Client,
        run: &str,
        patterns: &[&str],
        own_namespace: &str,
        url: &str,
    ) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let _ = api.delete(run, &DeleteParams::default()).await;
        let mut object = chart_webhook_configuration(run, patterns, own_namespace);
        object["metadata"] = json!({"name": run, "labels": {RUN_LABEL: run}});
        for entry in object["webhooks"].as_array_mut().expect("webhooks") {
            entry["clientConfig"] = json!({"url": url, "caBundle": self.ca_bundle});
        }
        let object: MutatingWebhookConfiguration =
            serde_json::from_value(object).expect("webhook configuration");
        api.create(&PostParams::default(), &object)
            .await
            .expect("webhook configuration created");
    }
}

impl WebhookProcess {
    /// Sends SIGTERM, as the kubelet does to a terminating pod.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.process.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.process.0.id());
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.process.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "webhook still running {limit:?} after SIGTERM: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One review, `body`, POSTed to /mutate on 127.0.0.1:`port` over a new TLS connection (a new
/// handshake, so the certificate served now), within 5 s: Ok when it is answered 200 with its
/// `uid` and a patch.
pub async fn review(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    uid: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        let request = http::Request::post("/mutate")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&answer).map_err(|e| format!("JSON: {e}"))?;
        if status == 200
            && answer["response"]["uid"] == uid
            && answer["response"]["patchType"] == "JSONPatch"
        {
            Ok(())
        } else {
            Err(format!("answered {status}: {answer}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 5 s".into()))
}
