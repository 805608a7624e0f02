//! HTTP/2 rapid reset (CVE-2023-44487) does not hurt other clients.

use std::time::{Duration, Instant};

use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::watched_server;
use support::hostile::client::{Proto, alpn, connect_tls};
use support::tls::client_config;

/// HTTP/2 rapid reset (CVE-2023-44487): streams opened and cancelled at once, 5,000 of them on
/// a handful of connections. The server may refuse the abusive connection (GOAWAY); it must
/// keep serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_does_not_hurt_other_clients() {
    let (_turn, mut server, watcher) = watched_server().await;
    let (addr, ca) = (server.addr, server.ca.clone());

    let mut resets = 0u32;
    let mut connections = 0u32;
    let started = Instant::now();
    // Bounded by count (5,000 resets, 200 connections) and by time (60 s).
    while resets < 5_000 && connections < 200 && started.elapsed() < Duration::from_secs(60) {
        let Ok(io) = connect_tls(addr, client_config(&ca, alpn(Proto::H2))).await else {
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
