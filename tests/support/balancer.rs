//! A TCP load balancer for rollout tests: the Service in front of webhook processes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::cluster::eventually;
use crate::webhook::{WebhookProcess, readyz};

/// How often the balancer reads its backends' /readyz.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// One webhook process behind the balancer.
struct Backend {
    port: u16,
    metrics_port: u16,
    ever_ready: bool,
    unready_since: Option<Instant>,
    /// How long after turning unready it still gets new connections (the endpoints' lag).
    removal_delay: Duration,
    connections: u64,
    /// Connections routed here that the process refused (its port closed).
    refused: u64,
}

impl Backend {
    fn in_rotation(&self) -> bool {
        self.ever_ready
            && self
                .unready_since
                .is_none_or(|since| since.elapsed() < self.removal_delay)
    }

    fn removed(&self) -> bool {
        self.ever_ready && !self.in_rotation()
    }
}

/// A TCP load balancer on 127.0.0.1 standing for a Service in front of webhook processes: it
/// round-robins new connections over the ready ones (their `/readyz`, read every 100 ms) and
/// drops an unready one `removal_delay` late, as the endpoints catch up with a terminating pod.
pub struct Balancer {
    pub port: u16,
    removal_delay: Duration,
    backends: Arc<Mutex<Vec<Backend>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Balancer {
    pub async fn start(removal_delay: Duration) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let backends: Arc<Mutex<Vec<Backend>>> = Arc::default();
        let forward = tokio::spawn({
            let backends = Arc::clone(&backends);
            async move {
                let mut next = 0usize;
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    let target = {
                        let mut all = backends.lock().unwrap();
                        let rotation: Vec<usize> =
                            (0..all.len()).filter(|&i| all[i].in_rotation()).collect();
                        if rotation.is_empty() {
                            None
                        } else {
                            let i = rotation[next % rotation.len()];
                            next += 1;
                            all[i].connections += 1;
                            Some((i, all[i].port))
                        }
                    };
                    let backends = Arc::clone(&backends);
                    tokio::spawn(async move {
                        // Nothing in rotation: the connection is closed.
                        let Some((i, port)) = target else { return };
                        match TcpStream::connect(("127.0.0.1", port)).await {
                            Ok(mut server) => {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                            // Closed, as the client's connection to a closed port would be.
                            Err(_) => backends.lock().unwrap()[i].refused += 1,
                        }
                    });
                }
            }
        });
        let probe = tokio::spawn({
            let backends = Arc::clone(&backends);
            async move {
                loop {
                    let probed: Vec<(usize, u16)> = {
                        let all = backends.lock().unwrap();
                        (0..all.len())
                            .filter(|&i| !all[i].removed())
                            .map(|i| (i, all[i].metrics_port))
                            .collect()
                    };
                    for (i, metrics_port) in probed {
                        let ready = readyz(&format!("127.0.0.1:{metrics_port}")).await;
                        let mut all = backends.lock().unwrap();
                        let backend = &mut all[i];
                        if ready {
                            backend.ever_ready = true;
                            backend.unready_since = None;
                        } else if backend.ever_ready && backend.unready_since.is_none() {
                            backend.unready_since = Some(Instant::now());
                        }
                    }
                    tokio::time::sleep(PROBE_INTERVAL).await;
                }
            }
        });
        Balancer {
            port,
            removal_delay,
            backends,
            tasks: vec![forward, probe],
        }
    }

    /// Adds `process` as a backend; it joins the rotation once its /readyz answers 200.
    pub async fn add(&self, process: &WebhookProcess) {
        self.backends.lock().unwrap().push(Backend {
            port: process.port,
            metrics_port: process.metrics_port,
            ever_ready: false,
            unready_since: None,
            removal_delay: self.removal_delay,
            connections: 0,
            refused: 0,
        });
        let backends = Arc::clone(&self.backends);
        let port = process.port;
        eventually(
            "the new process in rotation",
            Duration::from_secs(10),
            || {
                let in_rotation = backends
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|b| b.port == port && b.in_rotation());
                async move { in_rotation.then_some(()) }
            },
        )
        .await;
    }

    /// (connections forwarded, connections refused by a backend still in rotation).
    pub fn counts(&self) -> (u64, u64) {
        let all = self.backends.lock().unwrap();
        (
            all.iter().map(|b| b.connections).sum(),
            all.iter().map(|b| b.refused).sum(),
        )
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
