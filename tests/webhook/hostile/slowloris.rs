//! Slowloris: headers trickled over HTTP/1.1 and HTTP/2 are cut off.

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::{HEADER_DEADLINE, MARGIN, watched_server};
use support::hostile::client::{Proto, alpn, connect_tls};
use support::hostile::raw::{
    H2_CONTINUATION, H2_HEADERS, H2_PREFACE, H2_SETTINGS, h2_frame, slowest_close, until_closed,
};
use support::tls::client_config;

/// Slowloris: 100 HTTP/1.1 clients trickle their headers a byte every 250 ms, 50 HTTP/2
/// clients trickle a header block in one-byte CONTINUATION frames. HTTP/1.1 ones are cut off by
/// the 2 s header deadline; HTTP/2 ones by the keep-alive ping they never answer (≤ 30 s), and
/// all the while they hold one connection slot each (of 1024) and no request slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_and_reviews_still_answered() {
    let (_turn, mut server, watcher) = watched_server().await;
    let (addr, ca) = (server.addr, server.ca.clone());

    // Connected in waves of 50 every 100 ms, so that the test measures trickling, not a
    // handshake storm on two cores.
    let h1 = (0..100u64).map(|i| {
        let ca = ca.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * (i / 50))).await;
            let tls = connect_tls(addr, client_config(&ca, alpn(Proto::H1)))
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
            let tls = connect_tls(addr, client_config(&ca, alpn(Proto::H2)))
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
