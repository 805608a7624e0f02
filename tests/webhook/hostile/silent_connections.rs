//! Hundreds of idle connections (TCP, TLS, h2 with and without a preface) are closed by the deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::{FIRST_REQUEST_DEADLINE, HANDSHAKE_DEADLINE, HEADER_DEADLINE, MARGIN, SERIAL};
use support::hostile::client::{Proto, alpn, connect_tls};
use support::hostile::raw::{H2_PREFACE, H2_SETTINGS, h2_frame, slowest_close, until_closed};
use support::hostile::server::Server;
use support::hostile::watcher::watch;
use support::tls::client_config;

/// 400 connections that send nothing: 100 plain TCP, 100 TLS with HTTP/1.1, 100 TLS with h2
/// and no preface, 100 with the h2 preface and then silence. All are closed by the server's
/// deadlines (TLS handshake 2 s, HTTP/1 header read 2 s, first request 10 s); meanwhile reviews
/// are answered and memory stays bounded. (An h2 connection without a preface used to be held
/// for ever: hyper has no deadline for it, hence the server's first-request deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_silent_connections_are_closed_and_reviews_still_answered() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start(super::BIN);
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
                        let mut tls = connect_tls(addr, client_config(&ca, alpn(proto)))
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

/// The plain-HTTP admin port (metrics and the kubelet's probes) has the same limits: 300 silent
/// connections and 100 that send half a request head, all opened at once, are all closed by the
/// header deadline, while `/healthz` and `/metrics` keep answering on fresh connections. (All at
/// once: the listen backlog must take the burst, or the kernel keeps connections the server never
/// sees, which no deadline can close.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_the_admin_port_are_closed_and_probes_still_answered() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start(super::BIN);
    let admin = server.metrics;
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(admin).await.unwrap();
                if i % 4 == 0 {
                    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
                        .await
                        .unwrap();
                }
                until_closed(&mut tcp, Duration::from_secs(30)).await.1
            })
        })
        .collect();
    // Meanwhile the kubelet's probe and a scrape, each on a fresh connection.
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < HEADER_DEADLINE {
        let text = server.metrics_text().await;
        assert!(text.starts_with("HTTP/1.0 200"), "{text}");
        let mut tcp = TcpStream::connect(admin).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = until_closed(&mut tcp, Duration::from_secs(5)).await;
        assert!(answer.starts_with(b"HTTP/1.0 200"), "{answer:?}");
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = Vec::new();
    for task in tasks {
        closed.push(task.await.unwrap());
    }
    let slowest = slowest_close(&closed)
        .unwrap_or_else(|open| panic!("{open} admin connections still open after 30 s"));
    eprintln!(
        "admin port: 400 idle connections closed within {slowest:?}; {probes} probes answered meanwhile"
    );
    assert!(slowest < HEADER_DEADLINE + MARGIN, "{slowest:?}");
    server.assert_alive();
}
