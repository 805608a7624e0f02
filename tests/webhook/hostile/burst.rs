//! A burst of 10,000 reviews is answered or shed, never queued.

use std::time::{Duration, Instant};

use futures::StreamExt as _;

use super::{BURST_PROBE_BUDGET, watched_server};
use support::hostile::client::{Proto, Sender};
use support::hostile::server::series;

/// 10,000 reviews as fast as 8 connections carry them: 4 HTTP/2 connections with 64 streams
/// each in flight, 4 HTTP/1.1 keep-alive connections. Each is answered — with its own uid, or
/// with a 503 when more than 256 are in flight (shed, never queued) — and probes on fresh
/// connections keep their budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_reviews_is_answered_without_queueing() {
    let (_turn, mut server, watcher) = watched_server().await;
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
