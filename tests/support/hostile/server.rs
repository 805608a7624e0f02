//! The server under test: the real `warmpool webhook` started on 127.0.0.1, its memory, descriptors and metrics.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::loopback::{certs, webhook_command};

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The plain-HTTP admin port (`/metrics`, `/healthz`, `/readyz`).
    pub metrics: SocketAddr,
    pub ca: PathBuf,
    /// The last lines of its log.
    logs: Arc<Mutex<VecDeque<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `binary` (the test crate's `CARGO_BIN_EXE_warmpool`) as `warmpool webhook`.
    pub fn start(binary: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        certs(binary, dir.path());
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let mut child = webhook_command(binary, &cert, &key).spawn().unwrap();
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
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Open file descriptors: the server's connections, roughly.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn assert_alive(&mut self) {
        let exited = self.child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "webhook exited ({exited:?}): {:?}",
            self.logs.lock().unwrap()
        );
    }

    /// GET on the plain-HTTP metrics port.
    pub async fn metrics_text(&self) -> String {
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

pub use crate::loopback::series;
