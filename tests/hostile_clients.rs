//! Hostile clients against the real `warmpool webhook` binary over real TLS on 127.0.0.1.
//!
//! Each test starts a server, lets one kind of hostile client loose on it — trickled headers,
//! hundreds of silent connections, garbage handshakes, endless bodies, HTTP/2 rapid resets, a
//! burst of 10,000 reviews — and meanwhile a watcher sends a well-formed review on a fresh
//! connection (HTTP/1.1 and HTTP/2 in turn) every 100 ms and samples the server's resident
//! memory (`VmRSS`). Every test asserts that each of those reviews was answered correctly
//! within [`PROBE_BUDGET`], that memory stayed under [`RSS_LIMIT_KIB`], and what the server did
//! to the hostile client. Every loop is bounded in count and in time; only 127.0.0.1 is used.
//!
//! What `tests/webhook_server.rs` proves already is not repeated here: one stalled client per
//! deadline, bad JSON, 413 on a 4 MiB body, plain HTTP on the TLS port, certificate rotation,
//! drain on SIGTERM. The figures each test prints (`--nocapture`) are in RELIABILITY.md.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/tls.rs"]
mod tls;

use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tls::client_config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pod-create.json"
);

/// A well-formed review on a fresh connection is answered within this, whatever else happens.
const PROBE_BUDGET: Duration = Duration::from_secs(1);
/// The same while 10,000 reviews are being sent: the two cores are shared by the server and
/// the client that keeps it saturated, so a fresh connection waits its turn for CPU.
const BURST_PROBE_BUDGET: Duration = Duration::from_secs(2);
/// The server's resident memory stays under this (KiB).
const RSS_LIMIT_KIB: u64 = 100 * 1024;
/// The server's deadlines (src/webhook/server.rs), with a margin for a busy machine.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
const HEADER_DEADLINE: Duration = Duration::from_secs(2);
const REQUEST_DEADLINE: Duration = Duration::from_secs(4);
const FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const MARGIN: Duration = Duration::from_millis(2500);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One hostile test at a time: they measure latency and memory, and share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The server under test

struct Server {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    ca: PathBuf,
    /// The last lines of its log.
    logs: Arc<Mutex<VecDeque<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["certs", "--dns", "localhost", "--ip", "127.0.0.1", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(BIN)
            .arg("webhook")
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .env_remove("WARMPOOL_CONFIG")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "webhook listening"
                {
                    let addr = |k: &str| v[k].as_str().unwrap().parse::<SocketAddr>().unwrap();
                    let _ = tx.send((addr("address"), addr("metrics_address")));
                }
                let mut logs = sink.lock().unwrap();
                if logs.len() == 200 {
                    logs.pop_front();
                }
                logs.push_back(line);
            }
        });
        let (addr, metrics) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("webhook did not start: {:?}", logs.lock().unwrap()));
        Server {
            child,
            addr,
            metrics,
            ca: dir.path().join("ca.crt"),
            logs,
            _dir: dir,
        }
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors: the server's connections, roughly.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn assert_alive(&mut self) {
        let exited = self.child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "webhook exited ({exited:?}): {:?}",
            self.logs.lock().unwrap()
        );
    }

    /// GET on the plain-HTTP metrics port.
    async fn metrics_text(&self) -> String {
        let mut tcp = TcpStream::connect(self.metrics).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series in the Prometheus text, 0 when absent.
fn series(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

// ---------------------------------------------------------------------------------------------
// A well-behaved client

#[derive(Debug, Clone, Copy, PartialEq)]
enum Proto {
    H1,
    H2,
}

fn alpn(proto: Proto) -> &'static [&'static [u8]] {
    match proto {
        Proto::H1 => &[b"http/1.1"],
        Proto::H2 => &[b"h2"],
    }
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await??)
}

/// A review of the fixture pod with its own uid.
fn review_body(uid: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
    v["request"]["uid"] = Value::String(uid.to_owned());
    serde_json::to_vec(&v).unwrap()
}

fn post_request(proto: Proto, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    let (uri, builder) = match proto {
        Proto::H1 => (
            "/mutate",
            http::Request::builder().header(http::header::HOST, "localhost"),
        ),
        Proto::H2 => ("https://localhost/mutate", http::Request::builder()),
    };
    builder
        .method("POST")
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A sender on one connection, HTTP/1.1 or HTTP/2.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn open(addr: SocketAddr, ca: &Path, proto: Proto) -> Result<Sender, Error> {
        let io = TokioIo::new(tls_connect(addr, client_config(ca, alpn(proto))).await?);
        Ok(match proto {
            Proto::H1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                Sender::H1(sender)
            }
            Proto::H2 => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                Sender::H2(sender)
            }
        })
    }

    /// Posts a review; returns the status and the uid answered (for a 200).
    async fn review(&mut self, uid: &str) -> Result<(u16, Option<String>), Error> {
        let response = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(post_request(Proto::H1, review_body(uid)))
                    .await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(post_request(Proto::H2, review_body(uid)))
                    .await?
            }
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let answered = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["response"]["uid"].as_str().map(str::to_owned));
        Ok((status, answered))
    }
}

/// One review on a fresh connection, checked: 200, the uid echoed, a patch.
async fn probe(addr: SocketAddr, ca: &Path, proto: Proto, n: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let uid = format!("probe-{n}");
    let exchange = async {
        let mut sender = Sender::open(addr, ca, proto).await?;
        sender.review(&uid).await
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok((200, Some(answered)))) if answered == uid => Ok(started.elapsed()),
        Ok(Ok(other)) => Err(format!("{proto:?} probe {n}: answered {other:?}")),
        Ok(Err(e)) => Err(format!("{proto:?} probe {n}: {e}")),
        Err(_) => Err(format!("{proto:?} probe {n}: no answer within 5 s")),
    }
}

// ---------------------------------------------------------------------------------------------
// The watcher: probes and memory while a hostile client runs

#[derive(Debug, Default)]
struct Watched {
    probes: usize,
    failures: Vec<String>,
    latencies: Vec<Duration>,
    idle_rss_kib: u64,
    max_rss_kib: u64,
}

struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Watched>,
}

fn watch(server: &Server) -> Watcher {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, ca, pid) = (server.addr, server.ca.clone(), server.child.id());
    let idle_rss_kib = server.rss_kib();
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let rss = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0u64)
        };
        let mut watched = Watched {
            idle_rss_kib,
            ..Watched::default()
        };
        // Bounded: at most 10 minutes of probing, whatever the test does.
        for n in 0..6000u64 {
            if flag.load(Ordering::Relaxed) && n >= 3 {
                break;
            }
            let proto = if n % 2 == 0 { Proto::H1 } else { Proto::H2 };
            match probe(addr, &ca, proto, n).await {
                Ok(latency) => watched.latencies.push(latency),
                Err(e) => watched.failures.push(e),
            }
            watched.probes += 1;
            watched.max_rss_kib = watched.max_rss_kib.max(rss());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watched
    });
    Watcher { stop, task }
}

impl Watcher {
    /// Stops probing and asserts that every probe was answered in budget and memory stayed
    /// bounded; prints the figures.
    async fn finish(self, what: &str, server: &mut Server) -> Watched {
        self.finish_within(what, server, PROBE_BUDGET).await
    }

    async fn finish_within(self, what: &str, server: &mut Server, budget: Duration) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        let mut watched = self.task.await.unwrap();
        server.assert_alive();
        watched.max_rss_kib = watched.max_rss_kib.max(server.rss_kib());
        watched.latencies.sort();
        let pick = |q: f64| {
            watched
                .latencies
                .get(((watched.latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        eprintln!(
            "{what}: {} probes, {} failed, latency p50 {:?} p99 {:?} max {:?}; RSS idle {} KiB, max {} KiB",
            watched.probes,
            watched.failures.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0),
            watched.idle_rss_kib,
            watched.max_rss_kib,
        );
        assert!(
            watched.failures.is_empty(),
            "{what}: probes failed: {:?}",
            watched.failures
        );
        assert!(watched.probes >= 3, "{what}: too few probes");
        assert!(
            pick(1.0) < budget,
            "{what}: a probe took {:?} (budget {budget:?}): {:?}",
            pick(1.0),
            watched.latencies
        );
        assert!(
            watched.max_rss_kib < RSS_LIMIT_KIB,
            "{what}: RSS reached {} KiB",
            watched.max_rss_kib
        );
        watched
    }
}

/// Reads until the peer closes (EOF or error), at most `limit`; returns what was read and
/// when the connection closed (`None`: still open at `limit`).
async fn until_closed<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return (seen, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, Some(started.elapsed())),
            Ok(Ok(n)) => {
                if seen.len() < 64 * 1024 {
                    seen.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// The slowest of the closing times, or the first connection still open.
fn slowest_close(closed: &[Option<Duration>]) -> Result<Duration, usize> {
    closed.iter().try_fold(Duration::ZERO, |max, c| match c {
        Some(d) => Ok(max.max(*d)),
        None => Err(closed.iter().filter(|c| c.is_none()).count()),
    })
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 frames, for clients no library would be

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const H2_HEADERS: u8 = 0x1;
const H2_SETTINGS: u8 = 0x4;
const H2_CONTINUATION: u8 = 0x9;

// ---------------------------------------------------------------------------------------------
// The tests

/// Slowloris: 100 HTTP/1.1 clients trickle their headers a byte every 250 ms, 50 HTTP/2
/// clients trickle a header block in one-byte CONTINUATION frames. HTTP/1.1 ones are cut off by
/// the 2 s header deadline; HTTP/2 ones by the keep-alive ping they never answer (≤ 30 s), and
/// all the while they hold one connection slot each (of 1024) and no request slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_and_reviews_still_answered() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    let watcher = watch(&server);
    let (addr, ca) = (server.addr, server.ca.clone());

    // Connected in waves of 50 every 100 ms, so that the test measures trickling, not a
    // handshake storm on two cores.
    let h1 = (0..100u64).map(|i| {
        let ca = ca.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * (i / 50))).await;
            let tls = tls_connect(addr, client_config(&ca, alpn(Proto::H1)))
                .await
                .unwrap();
            let (mut reader, mut writer) = tokio::io::split(tls);
            let trickle = async move {
                writer
                    .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
                    .await?;
                writer.flush().await?;
                // 40 bytes over 10 s, at most; never the blank line that ends the headers.
                for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                    .iter()
                    .cycle()
                    .take(40)
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    writer.write_all(&[*b]).await?;
                    writer.flush().await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let ((answer, closed), _) =
                tokio::join!(until_closed(&mut reader, Duration::from_secs(15)), trickle);
            (answer, closed)
        })
    });
    let h2 = (0..50u32).map(|i| {
        let ca = ca.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let tls = tls_connect(addr, client_config(&ca, alpn(Proto::H2)))
                .await
                .unwrap();
            let (mut reader, mut writer) = tokio::io::split(tls);
            let trickle = async move {
                writer.write_all(H2_PREFACE).await?;
                writer.write_all(&h2_frame(H2_SETTINGS, 0, 0, &[])).await?;
                // :method POST, :scheme https, :path /, then a literal header never finished.
                let mut block = vec![0x83, 0x87, 0x84, 0x00, 6];
                block.extend_from_slice(b"x-slow");
                block.push(100);
                block.extend(std::iter::repeat_n(b'a', 100));
                let stream = 2 * i + 1;
                writer
                    .write_all(&h2_frame(H2_HEADERS, 0, stream, &block[..3]))
                    .await?;
                writer.flush().await?;
                for b in block[3..].iter().take(40) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    writer
                        .write_all(&h2_frame(H2_CONTINUATION, 0, stream, &[*b]))
                        .await?;
                    writer.flush().await?;
                }
                Ok::<_, std::io::Error>(())
            };
            let ((answer, closed), _) =
                tokio::join!(until_closed(&mut reader, Duration::from_secs(40)), trickle);
            (answer, closed)
        })
    });
    let h1 = futures::future::join_all(h1).await;
    let h1: Vec<_> = h1.into_iter().map(Result::unwrap).collect();
    let h2 = futures::future::join_all(h2).await;
    let h2: Vec<_> = h2.into_iter().map(Result::unwrap).collect();
    watcher.finish("slowloris", &mut server).await;

    for (answer, _) in &h1 {
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "a trickled request was served: {}",
            String::from_utf8_lossy(answer)
        );
    }
    let h1_closed: Vec<_> = h1.iter().map(|(_, c)| *c).collect();
    let h1_slowest = slowest_close(&h1_closed)
        .unwrap_or_else(|open| panic!("{open} trickling HTTP/1.1 clients still connected"));
    let h2_closed: Vec<_> = h2.iter().map(|(_, c)| *c).collect();
    let h2_slowest = slowest_close(&h2_closed)
        .unwrap_or_else(|open| panic!("{open} trickling HTTP/2 clients still connected"));
    eprintln!(
        "slowloris: 100 HTTP/1.1 tricklers all cut off, the last after {h1_slowest:?}; \
         50 HTTP/2 tricklers all cut off, the last after {h2_slowest:?}"
    );
    assert!(h1_slowest < HEADER_DEADLINE + MARGIN, "{h1_slowest:?}");
}

/// 400 connections that send nothing: 100 plain TCP, 100 TLS with HTTP/1.1, 100 TLS with h2
/// and no preface, 100 with the h2 preface and then silence. All are closed by the server's
/// deadlines (TLS handshake 2 s, HTTP/1 header read 2 s, first request 10 s); meanwhile reviews
/// are answered and memory stays bounded. (An h2 connection without a preface used to be held
/// for ever: hyper has no deadline for it, hence the server's first-request deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_silent_connections_are_closed_and_reviews_still_answered() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    let fds_idle = server.open_fds();
    let watcher = watch(&server);
    let (addr, ca) = (server.addr, server.ca.clone());

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Silent {
        Tcp,
        TlsH1,
        TlsH2,
        H2Preface,
    }
    let kinds = [Silent::Tcp, Silent::TlsH1, Silent::TlsH2, Silent::H2Preface];
    let opened = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let kind = kinds[i % 4];
            let (ca, opened) = (ca.clone(), Arc::clone(&opened));
            tokio::spawn(async move {
                // Opened in waves of 50 every 100 ms: all open at once within a second, without
                // turning the test into a handshake storm on two cores.
                tokio::time::sleep(Duration::from_millis(100 * (i as u64 / 50))).await;
                let limit = Duration::from_secs(45);
                let closed = match kind {
                    Silent::Tcp => {
                        let mut tcp = TcpStream::connect(addr).await.unwrap();
                        opened.fetch_add(1, Ordering::Relaxed);
                        until_closed(&mut tcp, limit).await
                    }
                    Silent::TlsH1 | Silent::TlsH2 | Silent::H2Preface => {
                        let proto = if kind == Silent::TlsH1 {
                            Proto::H1
                        } else {
                            Proto::H2
                        };
                        let mut tls = tls_connect(addr, client_config(&ca, alpn(proto)))
                            .await
                            .unwrap();
                        if kind == Silent::H2Preface {
                            tls.write_all(H2_PREFACE).await.unwrap();
                            tls.write_all(&h2_frame(H2_SETTINGS, 0, 0, &[]))
                                .await
                                .unwrap();
                            tls.flush().await.unwrap();
                        }
                        opened.fetch_add(1, Ordering::Relaxed);
                        until_closed(&mut tls, limit).await
                    }
                };
                (kind, closed.1)
            })
        })
        .collect();
    // All open at once (within the handshake deadline), then see the server's descriptors.
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fds_busy = server.open_fds();
    let rss_busy = server.rss_kib();
    let results: Vec<(Silent, Option<Duration>)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    watcher.finish("silent connections", &mut server).await;

    eprintln!(
        "silent connections: {} opened; server fds {fds_idle} idle, {fds_busy} with them open; RSS {rss_busy} KiB with them open",
        opened.load(Ordering::Relaxed)
    );
    for kind in kinds {
        let closed: Vec<_> = results
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, c)| *c)
            .collect();
        let slowest = slowest_close(&closed)
            .unwrap_or_else(|open| panic!("{kind:?}: {open} silent connections still open"));
        eprintln!(
            "silent connections: 100 × {kind:?} all closed by the server, the last after {slowest:?}"
        );
        let deadline = match kind {
            Silent::Tcp => HANDSHAKE_DEADLINE,
            Silent::TlsH1 => HEADER_DEADLINE,
            Silent::TlsH2 | Silent::H2Preface => FIRST_REQUEST_DEADLINE,
        };
        assert!(slowest < deadline + MARGIN, "{kind:?}: {slowest:?}");
    }
    assert!(
        fds_busy >= fds_idle + 300,
        "the connections were not open at once: {fds_idle} → {fds_busy}"
    );
    // Every descriptor is given back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.open_fds() > fds_idle + 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.open_fds() <= fds_idle + 4, "{}", server.open_fds());
}

/// 300 handshakes that are not TLS or are broken TLS: random bytes, a record header that
/// announces 16 KiB and stalls, an SSLv2-style hello, and real ClientHellos with bytes flipped
/// or followed by garbage. Each connection is closed without an HTTP answer within the handshake
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tls_handshakes_are_dropped_and_reviews_still_answered() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    let watcher = watch(&server);
    let addr = server.addr;

    // A real ClientHello, as bytes.
    let hello = {
        let config = client_config(&server.ca, &[b"h2", b"http/1.1"]);
        let mut conn =
            rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut bytes = Vec::new();
        conn.write_tls(&mut bytes).unwrap();
        bytes
    };
    // A small deterministic generator (xorshift), so a failure can be replayed.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut cases: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for i in 0..300 {
        let case = match i % 6 {
            0 => {
                let n = 1 + (next() % 2048) as usize;
                ("random bytes", (0..n).map(|_| next() as u8).collect())
            }
            1 => (
                "record header announcing 16 KiB, then stall",
                vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01],
            ),
            2 => (
                "SSLv2-style hello",
                vec![
                    0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
                ],
            ),
            3 | 4 => {
                let mut h = hello.clone();
                for _ in 0..1 + next() % 8 {
                    let at = (next() as usize) % h.len();
                    h[at] ^= 1 << (next() % 8);
                }
                ("ClientHello with bits flipped", h)
            }
            _ => {
                let mut h = hello.clone();
                h.extend((0..512).map(|_| next() as u8));
                ("ClientHello followed by garbage", h)
            }
        };
        cases.push(case);
    }
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|(what, bytes)| {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                // The server may close before all is written: that is fine.
                let _ = tcp.write_all(&bytes).await;
                let (answer, closed) = until_closed(&mut tcp, Duration::from_secs(10)).await;
                (what, answer, closed)
            })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    watcher.finish("garbage handshakes", &mut server).await;

    let mut slowest = Duration::ZERO;
    for (what, answer, closed) in &results {
        let Some(closed) = closed else {
            panic!("{what}: connection still open after 10 s");
        };
        slowest = slowest.max(*closed);
        assert!(
            !answer.windows(5).any(|w| w == b"HTTP/"),
            "{what}: got an HTTP answer"
        );
    }
    eprintln!("garbage handshakes: 300 connections, all closed, the last after {slowest:?}");
    assert!(slowest < HANDSHAKE_DEADLINE + MARGIN, "{slowest:?}");
}

type EndlessFrames = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send>,
>;

/// Bodies that never end, on HTTP/1.1 and HTTP/2: sent as fast as possible (cut off at the
/// 3 MiB limit with a 413, the HTTP/1.1 connection closed once 6 MiB were read, the HTTP/2
/// stream reset) and trickled (cut off by the 4 s request deadline with a 503). The server's
/// metrics count both kinds on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_bodies_are_cut_off_on_both_protocols() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    let watcher = watch(&server);
    let (addr, ca) = (server.addr, server.ca.clone());

    /// A body of `chunk`-byte frames every `pause`, bounded to 256 MiB and 30 s, that counts
    /// what the server took.
    fn endless(chunk: usize, pause: Duration, sent: Arc<AtomicU64>) -> StreamBody<EndlessFrames> {
        let started = Instant::now();
        let data = Bytes::from(vec![b' '; chunk]);
        let frames = futures::stream::iter(0..(256 * 1024 * 1024 / chunk))
            .take_while(move |_| {
                futures::future::ready(started.elapsed() < Duration::from_secs(30))
            })
            .then(move |_| {
                let (data, sent) = (data.clone(), Arc::clone(&sent));
                async move {
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                    Ok(Frame::data(data))
                }
            });
        StreamBody::new(Box::pin(frames))
    }

    let run = |proto: Proto, fast: bool| {
        let ca = ca.clone();
        async move {
            let sent = Arc::new(AtomicU64::new(0));
            let body = if fast {
                endless(64 * 1024, Duration::ZERO, Arc::clone(&sent))
            } else {
                endless(16, Duration::from_millis(100), Arc::clone(&sent))
            };
            let io = TokioIo::new(
                tls_connect(addr, client_config(&ca, alpn(proto)))
                    .await
                    .unwrap(),
            );
            let started = Instant::now();
            let response = match proto {
                Proto::H1 => {
                    let (mut s, c) = hyper::client::conn::http1::handshake(io).await.unwrap();
                    tokio::spawn(c);
                    let request = http::Request::post("/mutate")
                        .header(http::header::HOST, "localhost")
                        .body(body)
                        .unwrap();
                    tokio::time::timeout(Duration::from_secs(40), s.send_request(request)).await
                }
                Proto::H2 => {
                    let (mut s, c) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                            .await
                            .unwrap();
                    tokio::spawn(c);
                    let request = http::Request::post("https://localhost/mutate")
                        .body(body)
                        .unwrap();
                    tokio::time::timeout(Duration::from_secs(40), s.send_request(request)).await
                }
            };
            let after = started.elapsed();
            let status = match response {
                Ok(Ok(r)) => Some(r.status().as_u16()),
                Ok(Err(e)) => {
                    eprintln!("{proto:?} endless body (fast: {fast}): {e}");
                    None
                }
                Err(_) => panic!("{proto:?} endless body (fast: {fast}): no answer in 40 s"),
            };
            (proto, fast, status, after, sent.load(Ordering::Relaxed))
        }
    };
    let results = futures::future::join_all([
        tokio::spawn(run(Proto::H1, true)),
        tokio::spawn(run(Proto::H2, true)),
        tokio::spawn(run(Proto::H1, false)),
        tokio::spawn(run(Proto::H2, false)),
    ])
    .await;
    watcher.finish("endless bodies", &mut server).await;

    for result in results {
        let (proto, fast, status, after, sent) = result.unwrap();
        eprintln!(
            "endless body over {proto:?}, {}: answered {status:?} after {after:?}, {} KiB sent by then",
            if fast {
                "as fast as possible"
            } else {
                "16 bytes every 100 ms"
            },
            sent / 1024
        );
        if fast && proto == Proto::H1 {
            // The server answers 413 and closes the connection with the client still sending:
            // the client sees the 413, or only the connection reset that follows it.
            assert!(matches!(status, Some(413) | None), "{proto:?}: {status:?}");
            assert!(sent < 24 * 1024 * 1024, "{proto:?}: {sent} bytes taken");
        } else if fast {
            assert_eq!(status, Some(413), "{proto:?}");
            // Cut off near the 3 MiB limit (6 MiB read at most), plus what sits in buffers.
            assert!(sent < 24 * 1024 * 1024, "{proto:?}: {sent} bytes taken");
        } else {
            assert_eq!(status, Some(503), "{proto:?}");
            assert!(after < REQUEST_DEADLINE + MARGIN, "{proto:?}: {after:?}");
        }
    }
    let metrics = server.metrics_text().await;
    assert_eq!(
        series(
            &metrics,
            "warmpool_webhook_reviews_total{outcome=\"too_large\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        series(
            &metrics,
            "warmpool_webhook_reviews_total{outcome=\"timeout\"}"
        ),
        2.0,
        "{metrics}"
    );
}

/// 10,000 reviews as fast as 8 connections carry them: 4 HTTP/2 connections with 64 streams
/// each in flight, 4 HTTP/1.1 keep-alive connections. Each is answered — with its own uid, or
/// with a 503 when more than 256 are in flight (shed, never queued) — and probes on fresh
/// connections keep their budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_reviews_is_answered_without_queueing() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    let watcher = watch(&server);
    let (addr, ca) = (server.addr, server.ca.clone());
    const H2_CONNECTIONS: usize = 4;
    const H2_EACH: usize = 2000;
    const H1_CONNECTIONS: usize = 4;
    const H1_EACH: usize = 500;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..H2_CONNECTIONS {
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let Sender::H2(sender) = Sender::open(addr, &ca, Proto::H2).await.unwrap() else {
                unreachable!()
            };
            futures::stream::iter(0..H2_EACH)
                .map(|i| {
                    let mut sender = Sender::H2(sender.clone());
                    async move {
                        let uid = format!("burst-h2-{c}-{i}");
                        let t = Instant::now();
                        let answer = sender.review(&uid).await;
                        (uid, answer.map_err(|e| e.to_string()), t.elapsed())
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        }));
    }
    for c in 0..H1_CONNECTIONS {
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = Sender::open(addr, &ca, Proto::H1).await.unwrap();
            let mut out = Vec::new();
            for i in 0..H1_EACH {
                let uid = format!("burst-h1-{c}-{i}");
                let t = Instant::now();
                let answer = sender.review(&uid).await;
                out.push((uid, answer.map_err(|e| e.to_string()), t.elapsed()));
            }
            out
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(
            tokio::time::timeout(Duration::from_secs(300), task)
                .await
                .expect("burst finished within 5 minutes")
                .unwrap(),
        );
    }
    let took = started.elapsed();
    let rss_after = server.rss_kib();
    watcher
        .finish_within("burst", &mut server, BURST_PROBE_BUDGET)
        .await;

    assert_eq!(answers.len(), 10_000);
    let (mut ok, mut shed) = (0, 0);
    let mut latencies = Vec::new();
    for (uid, answer, latency) in &answers {
        match answer {
            Ok((200, Some(answered))) if answered == uid => ok += 1,
            Ok((503, _)) => shed += 1,
            other => panic!("{uid}: {other:?}"),
        }
        latencies.push(*latency);
    }
    latencies.sort();
    eprintln!(
        "burst: 10,000 reviews in {took:?} ({:.0}/s): {ok} answered with their uid, {shed} shed with 503; \
         latency p50 {:?} p99 {:?} max {:?}; RSS after {rss_after} KiB",
        10_000.0 / took.as_secs_f64(),
        latencies[5_000],
        latencies[9_900],
        latencies[9_999],
    );
    let metrics = server.metrics_text().await;
    assert_eq!(
        series(
            &metrics,
            "warmpool_webhook_reviews_total{outcome=\"overloaded\"}"
        ) as usize,
        shed,
        "{metrics}"
    );
    assert!(ok >= 9_000, "{ok} of 10,000 answered, {shed} shed");
}

/// HTTP/2 rapid reset (CVE-2023-44487): streams opened and cancelled at once, 5,000 of them on
/// a handful of connections. The server may refuse the abusive connection (GOAWAY); it must
/// keep serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_does_not_hurt_other_clients() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    let watcher = watch(&server);
    let (addr, ca) = (server.addr, server.ca.clone());

    let mut resets = 0u32;
    let mut connections = 0u32;
    let started = Instant::now();
    // Bounded by count (5,000 resets, 200 connections) and by time (60 s).
    while resets < 5_000 && connections < 200 && started.elapsed() < Duration::from_secs(60) {
        let Ok(io) = tls_connect(addr, client_config(&ca, alpn(Proto::H2))).await else {
            break;
        };
        connections += 1;
        let Ok((mut sender, connection)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await
        else {
            continue;
        };
        tokio::spawn(connection);
        for _ in 0..500 {
            if sender.ready().await.is_err() {
                break;
            }
            let pending = StreamBody::new(futures::stream::pending::<
                Result<Frame<Bytes>, std::convert::Infallible>,
            >());
            let request = http::Request::post("https://localhost/mutate")
                .body(pending)
                .unwrap();
            // Sent, then dropped: the client resets the stream.
            let response = sender.send_request(request);
            let _ = tokio::time::timeout(Duration::from_millis(1), response).await;
            resets += 1;
        }
    }
    let took = started.elapsed();
    watcher.finish("rapid reset", &mut server).await;
    eprintln!("rapid reset: {resets} streams reset on {connections} connections in {took:?}");
    assert!(resets >= 1_000, "only {resets} resets sent");
}
