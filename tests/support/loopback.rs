//! The real binary on 127.0.0.1, no cluster needed: certificates from `warmpool certs`,
//! `warmpool webhook` on ports the kernel picks (read from its "webhook listening" log line),
//! and a rustls client (hyper's HTTP/1 and HTTP/2 clients over tokio-rustls) to speak to it.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::process::succeed;
use crate::tls::client_config;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `warmpool certs` for localhost and 127.0.0.1 into `dir` (ca.crt, tls.crt, tls.key); returns
/// what it prints, the CA bundle.
pub fn certs(binary: impl AsRef<Path>, dir: &Path) -> String {
    let out = succeed(
        Command::new(binary.as_ref())
            .args(["certs", "--dns", "localhost", "--ip", "127.0.0.1", "--out"])
            .arg(dir),
        "warmpool certs",
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `warmpool webhook` serving `cert` and `key`, its TLS and metrics ports picked by the kernel
/// on 127.0.0.1 (its JSON "webhook listening" log line names them), logging JSON at `info` to a
/// piped stderr, with no configuration or namespace from the environment. Add arguments, then
/// spawn it.
pub fn webhook_command(binary: impl AsRef<Path>, cert: &Path, key: &Path) -> Command {
    let mut command = Command::new(binary.as_ref());
    command
        .arg("webhook")
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env_remove("WARMPOOL_CONFIG")
        .env_remove("POD_NAMESPACE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

// ---------------------------------------------------------------------------------------------
// The server under test

/// A running `warmpool webhook`, killed when dropped.
pub struct Webhook {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    _certs: Option<tempfile::TempDir>,
}

impl Webhook {
    /// Starts a webhook on fresh certificates.
    pub fn start(bin: &str) -> (Webhook, PathBuf) {
        Webhook::start_args(bin, &[])
    }

    /// Starts a webhook on fresh certificates, with `extra` arguments.
    pub fn start_args(bin: &str, extra: &[&str]) -> (Webhook, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        certs(bin, dir.path());
        let ca = dir.path().join("ca.crt");
        let mut webhook = Webhook::start_with(
            bin,
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
            extra,
        );
        webhook._certs = Some(dir);
        (webhook, ca)
    }

    pub fn start_with(bin: &str, cert: &Path, key: &Path, extra: &[&str]) -> Webhook {
        let mut child = webhook_command(bin, cert, key).args(extra).spawn().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listening = logs.lock().unwrap().iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["message"] == "webhook listening").then(|| {
                    let addr = |k: &str| v[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
                    (addr("address"), addr("metrics_address"))
                })
            });
            if let Some((addr, metrics)) = listening {
                return Webhook {
                    child,
                    addr,
                    metrics,
                    logs,
                    _certs: None,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("webhook exited with {status}: {:?}", logs.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "webhook did not start: {:?}",
                logs.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "webhook still running: {:?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `warmpool webhook` with `args` expecting it to fail at start; returns its stderr.
pub fn start_failure(bin: &str, args: &[OsString]) -> String {
    let mut child = Command::new(bin)
        .arg("webhook")
        .args(args)
        .env_remove("WARMPOOL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("webhook {args:?} did not fail at start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{args:?}: {stderr}");
    stderr
}

// ---------------------------------------------------------------------------------------------
// A rustls client

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Proto {
    H1,
    H2,
}

/// The ALPN protocol a client offers for `proto`.
pub fn alpn(proto: Proto) -> &'static [&'static [u8]] {
    match proto {
        Proto::H1 => &[b"http/1.1"],
        Proto::H2 => &[b"h2"],
    }
}

/// A TLS connection to `addr` with `config`, for the name `localhost`.
pub async fn connect_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await??)
}

/// A TLS connection to `addr` trusting only `ca`, offering `proto`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    proto: Proto,
) -> Result<TlsStream<TcpStream>, Error> {
    connect_tls(addr, client_config(ca, alpn(proto))).await
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: http::Version,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn request(
    proto: Proto,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    let uri = match proto {
        Proto::H1 => path.to_owned(),
        Proto::H2 => format!("https://localhost:{}{path}", addr.port()),
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    if proto == Proto::H1 {
        builder = builder.header(http::header::HOST, format!("localhost:{}", addr.port()));
    }
    builder
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

pub async fn read_reply(response: http::Response<hyper::body::Incoming>) -> Result<Reply, Error> {
    let status = response.status().as_u16();
    let version = response.version();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok(Reply {
        status,
        version,
        content_type,
        body,
    })
}

/// One request on a new connection.
pub async fn send(
    addr: SocketAddr,
    ca: &Path,
    proto: Proto,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Reply, Error> {
    let tls = tls_connect(addr, ca, proto).await?;
    let io = TokioIo::new(tls);
    let request = request(proto, addr, method, path, body);
    let exchange = async {
        let response = match proto {
            Proto::H1 => {
                let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
            Proto::H2 => {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                sender.send_request(request).await?
            }
        };
        read_reply(response).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await?
}

pub async fn post(addr: SocketAddr, ca: &Path, body: Vec<u8>) -> Reply {
    send(addr, ca, Proto::H1, "POST", "/mutate", body)
        .await
        .unwrap()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::repo_root().join("tests/fixtures").join(name)).unwrap()
}

/// GET on the plain-HTTP metrics port.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request(Proto::H1, addr, "GET", path, Vec::new()))
        .await?;
    let reply = read_reply(response).await?;
    Ok((reply.status, String::from_utf8(reply.body)?))
}

/// The value of one series in the Prometheus text, 0 when absent.
pub fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

pub fn assert_json_error(reply: &Reply, status: u16) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let message = reply.json()["error"].as_str().map(str::to_owned);
    assert!(message.is_some_and(|m| !m.is_empty()), "{:?}", reply.json());
}

pub fn request_uid(review: &[u8]) -> String {
    let v: Value = serde_json::from_slice(review).unwrap();
    v["request"]["uid"].as_str().unwrap().to_owned()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "connection still open after {limit:?}: {}",
        String::from_utf8_lossy(&answer)
    );
    (answer, started.elapsed())
}

/// The index of the first log line whose message is `message`.
pub fn log_index(logs: &[String], message: &str) -> Option<usize> {
    logs.iter().position(|l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["message"].as_str() == Some(message))
    })
}

/// Polls `GET /readyz` on the metrics port until it answers 503.
pub async fn wait_unready(webhook: &Webhook) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if admin_get(webhook.metrics, "/readyz").await.unwrap().0 == 503 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still ready after SIGTERM: {:?}",
            webhook.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
