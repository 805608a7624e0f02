//! The real `warmpool webhook` process on loopback, registered with the real API server by a
//! url-based MutatingWebhookConfiguration, scoped to one test's namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

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
    pub async fn start(binary: &Path, config_yaml: Option<&str>) -> Webhook {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(binary)
            .args(["certs", "--out"])
            .arg(dir.path())
            .args(["--dns", "localhost", "--ip", "127.0.0.1"])
            .output()
            .expect("warmpool certs runs");
        assert!(
            out.status.success(),
            "warmpool certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca_bundle = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut webhook = Webhook {
            process: None,
            port: free_port(),
            metrics_port: free_port(),
            ca_bundle,
            log: dir.path().join("webhook.log"),
            dir,
        };
        if let Some(yaml) = config_yaml {
            std::fs::write(webhook.dir.path().join("config.yaml"), yaml).expect("config");
        }
        webhook.process = Some(webhook.spawn(binary));
        webhook.wait_ready().await;
        webhook
    }

    fn spawn(&self, binary: &Path) -> ChildGuard {
        let d = self.dir.path();
        let cert = d.join("tls.crt");
        let key = d.join("tls.key");
        let listen = format!("127.0.0.1:{}", self.port);
        let metrics = format!("127.0.0.1:{}", self.metrics_port);
        let config = d.join("config.yaml");
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
        spawn_warmpool(binary, &args, &[], &self.log)
    }

    async fn wait_ready(&self) {
        let addr = format!("127.0.0.1:{}", self.metrics_port);
        let log = self.log.clone();
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

    /// Stops the server (the API server then meets a closed port).
    pub fn stop(&mut self) {
        self.process = None;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Registers this server for pods in namespaces whose name starts with `prefix` (the CEL
    /// entry) or that carry `warmpool.io/tenant=enabled` and `warmpool.test/run=<run>` (the label
    /// entry), as the chart does but scoped to one test.
    pub async fn register(&self, client: &Client, name: &str, prefix: &str, run: &str) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        let url = format!("https://127.0.0.1:{}/mutate", self.port);
        let common = json!({
            "clientConfig": {"url": url, "caBundle": self.ca_bundle},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
        });
        let mut by_label = common.clone();
        by_label["name"] = json!("by-label.warmpool.io");
        by_label["namespaceSelector"] = json!({"matchExpressions": [
            {"key": "warmpool.io/tenant", "operator": "In", "values": ["enabled"]},
            {"key": "warmpool.test/run", "operator": "In", "values": [run]},
        ]});
        let mut by_name = common;
        by_name["name"] = json!("by-name.warmpool.io");
        by_name["namespaceSelector"] = json!({"matchExpressions": [
            {"key": "warmpool.io/tenant", "operator": "NotIn", "values": ["enabled", "disabled"]},
        ]});
        by_name["matchConditions"] = json!([
            {"name": "tenant-name", "expression": format!("request.namespace.startsWith('{prefix}')")}
        ]);
        let object: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "labels": {"warmpool.test/run": run}},
            "webhooks": [by_label, by_name],
        }))
        .expect("webhook configuration");
        api.create(&PostParams::default(), &object)
            .await
            .expect("webhook configuration created");
    }
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
