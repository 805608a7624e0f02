//! Endless bodies, fast and trickled, on HTTP/1.1 and HTTP/2, are cut off and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{MARGIN, REQUEST_DEADLINE, watched_server};
use support::hostile::client::{Proto, alpn, connect_tls};
use support::hostile::server::series;
use support::tls::client_config;

type EndlessFrames = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send>,
>;

/// Bodies that never end, on HTTP/1.1 and HTTP/2: sent as fast as possible (cut off at the
/// 3 MiB limit with a 413, the HTTP/1.1 connection closed once 6 MiB were read, the HTTP/2
/// stream reset) and trickled (cut off by the 4 s request deadline with a 503). The server's
/// metrics count both kinds on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_bodies_are_cut_off_on_both_protocols() {
    let (_turn, mut server, watcher) = watched_server().await;
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
                connect_tls(addr, client_config(&ca, alpn(proto)))
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

/// 256 well-formed reviews of about 2.9 MiB each (a pod with a huge annotation), all at once on
/// four HTTP/2 connections of 64 streams, three times over: the server holds no more of them than
/// its byte budget (the rest are answered 503 at once, not queued), its memory stays under
/// 100 MiB, and the watcher's ordinary reviews are answered in budget throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_all_at_once_are_held_within_the_byte_budget() {
    let (_turn, mut server, watcher) = watched_server().await;
    let (addr, ca) = (server.addr, server.ca.clone());
    let mut review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(support::hostile::FIXTURE).unwrap()).unwrap();
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"example.com/blob": "x".repeat(2900 * 1024)});
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    assert!(body.len() > 2900 * 1024 && body.len() < 3 * 1024 * 1024);

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let started = Instant::now();
    for _round in 0..3 {
        let connections = futures::future::join_all((0..4).map(|_| {
            let ca = ca.clone();
            async move {
                let io = TokioIo::new(
                    connect_tls(addr, client_config(&ca, alpn(Proto::H2)))
                        .await
                        .unwrap(),
                );
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                tokio::spawn(connection);
                sender
            }
        }))
        .await;
        let requests = connections.iter().flat_map(|sender| {
            (0..64).map(|_| {
                let mut sender = sender.clone();
                let body = body.clone();
                async move {
                    let request = http::Request::post("https://localhost/mutate")
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(http_body_util::Full::new(body))
                        .unwrap();
                    let exchange = async {
                        sender.ready().await?;
                        let response = sender.send_request(request).await?;
                        let status = response.status().as_u16();
                        http_body_util::BodyExt::collect(response.into_body()).await?;
                        Ok::<u16, hyper::Error>(status)
                    };
                    tokio::time::timeout(Duration::from_secs(30), exchange)
                        .await
                        .expect("an answer within 30 s")
                        .unwrap_or(0)
                }
            })
        });
        for status in futures::future::join_all(requests).await {
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    let took = started.elapsed();
    let watched = watcher.finish("256 big bodies at once", &mut server).await;
    eprintln!("3 × 256 bodies of 2.9 MiB in {took:?}: answered {statuses:?}");
    drop(watched);
    assert!(
        statuses.keys().all(|s| [200, 503].contains(s)),
        "only reviews and refusals: {statuses:?}"
    );
    assert!(
        statuses.get(&503).is_some_and(|n| *n > 0),
        "the budget was never reached: {statuses:?}"
    );
    assert!(
        statuses.get(&200).is_some_and(|n| *n > 0),
        "nothing was reviewed: {statuses:?}"
    );
    let metrics = server.metrics_text().await;
    assert!(
        series(
            &metrics,
            "warmpool_webhook_reviews_total{outcome=\"overloaded\"}"
        ) > 0.0,
        "{metrics}"
    );
}
