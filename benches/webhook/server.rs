//! The server under test: the `warmpool webhook` process, started, waited for, stopped with SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;

use crate::connection::Connection;
use crate::options::Options;

/// The server under test.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub started: Instant,
}

impl Server {
    pub fn start(options: &Options, certs: &Path) -> Result<Server, String> {
        let addr = free_port()?;
        let admin = free_port()?;
        let logs = match &options.server_logs {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let started = Instant::now();
        let child = Command::new(&options.server)
            .arg("webhook")
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--metrics-listen")
            .arg(admin.to_string())
            .args(["--namespace", "warmpool"])
            // The bench stops its server at once; a rollout grace would only add to its run time.
            .args(["--shutdown-grace", "0s"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", options.server.display()))?;
        Ok(Server {
            child,
            addr,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /readyz` over TLS until 200; returns the time since exec.
    pub async fn wait_ready(&mut self, connector: &TlsConnector) -> Result<Duration, String> {
        let deadline = self.started + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited at start: {status}"));
            }
            if let Ok(mut connection) = Connection::open(self.addr, connector).await
                && let Ok((200, _)) = connection.get("/readyz").await
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err("the server was not ready within 20 s".into());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and whether it exited 0 within the drain time.
    pub fn stop_gracefully(&mut self) -> bool {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            self.stop();
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    self.stop();
                    return false;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

pub fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| format!("bind: {e}"))
}
