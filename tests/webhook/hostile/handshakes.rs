//! Garbage and broken TLS handshakes are dropped within the handshake deadline.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::{HANDSHAKE_DEADLINE, MARGIN, watched_server};
use support::hostile::raw::until_closed;
use support::tls::client_config;

/// 300 handshakes that are not TLS or are broken TLS: random bytes, a record header that
/// announces 16 KiB and stalls, an SSLv2-style hello, and real ClientHellos with bytes flipped
/// or followed by garbage. Each connection is closed without an HTTP answer within the handshake
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tls_handshakes_are_dropped_and_reviews_still_answered() {
    let (_turn, mut server, watcher) = watched_server().await;
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
