//! The watcher: probes and memory samples while a hostile client runs, and what they must show.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::client::{Proto, probe};
use super::server::Server;
use super::{PROBE_BUDGET, RSS_LIMIT_KIB};

#[derive(Debug, Default)]
pub struct Watched {
    probes: usize,
    failures: Vec<String>,
    latencies: Vec<Duration>,
    idle_rss_kib: u64,
    max_rss_kib: u64,
}

pub struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Watched>,
}

pub fn watch(server: &Server) -> Watcher {
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
    pub async fn finish(self, what: &str, server: &mut Server) -> Watched {
        self.finish_within(what, server, PROBE_BUDGET).await
    }

    pub async fn finish_within(self, what: &str, server: &mut Server, budget: Duration) -> Watched {
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
