//! A well-behaved client: TLS, HTTP/1.1 or HTTP/2, reviews, and the probe on a fresh connection.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use super::{Error, FIXTURE};
use crate::tls::client_config;

pub use crate::loopback::{Proto, alpn, connect_tls};

/// A review of the fixture pod with its own uid.
pub fn review_body(uid: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap();
    v["request"]["uid"] = Value::String(uid.to_owned());
    serde_json::to_vec(&v).unwrap()
}

pub fn post_request(proto: Proto, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    let (uri, builder) = match proto {
        Proto::H1 => (
            "/mutate",
            http::Request::builder().header(http::header::HOST, "localhost"),
        ),
        Proto::H2 => ("https://localhost/mutate", http::Request::builder()),
    };
    builder
        .method("POST")
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A sender on one connection, HTTP/1.1 or HTTP/2.
pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub async fn open(addr: SocketAddr, ca: &Path, proto: Proto) -> Result<Sender, Error> {
        let io = TokioIo::new(connect_tls(addr, client_config(ca, alpn(proto))).await?);
        Ok(match proto {
            Proto::H1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                Sender::H1(sender)
            }
            Proto::H2 => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                Sender::H2(sender)
            }
        })
    }

    /// Posts a review; returns the status and the uid answered (for a 200).
    pub async fn review(&mut self, uid: &str) -> Result<(u16, Option<String>), Error> {
        let response = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(post_request(Proto::H1, review_body(uid)))
                    .await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(post_request(Proto::H2, review_body(uid)))
                    .await?
            }
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let answered = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["response"]["uid"].as_str().map(str::to_owned));
        Ok((status, answered))
    }
}

/// One review on a fresh connection, checked: 200, the uid echoed, a patch.
pub async fn probe(addr: SocketAddr, ca: &Path, proto: Proto, n: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let uid = format!("probe-{n}");
    let exchange = async {
        let mut sender = Sender::open(addr, ca, proto).await?;
        sender.review(&uid).await
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok((200, Some(answered)))) if answered == uid => Ok(started.elapsed()),
        Ok(Ok(other)) => Err(format!("{proto:?} probe {n}: answered {other:?}")),
        Ok(Err(e)) => Err(format!("{proto:?} probe {n}: {e}")),
        Err(_) => Err(format!("{proto:?} probe {n}: no answer within 5 s")),
    }
}
