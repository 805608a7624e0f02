//! The plain-HTTP accept loop of the admin endpoints (`/healthz`, `/readyz`, `/metrics`), with
//! the webhook's limits: they are reachable from every pod too, and the kubelet's probes must
//! get through whatever else connects. At most [`MAX_CONNECTIONS`] open (beyond it new ones wait
//! in the kernel's backlog), a deadline for the request head (which hyper also applies to an idle
//! keep-alive connection) and one for the whole answer, HTTP/1 only, small buffers; on shutdown
//! the port closes and open requests get [`DRAIN_TIMEOUT`] to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections at most (each port); beyond it new ones wait in the kernel's accept backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// The kernel's queue of connections not yet accepted. The standard library's 128 is too short
/// for a burst: past it the kernel drops the handshake's last packet, and a client that then
/// sends nothing holds a connection the server never sees (and so can never time out).
pub const LISTEN_BACKLOG: u32 = 1024;
/// Time for a client to send a request's headers (HTTP/1). hyper also applies it to an idle
/// keep-alive connection waiting for its next request, so such a connection is closed after it;
/// Go clients (the API server) retry a request that meets a connection closed while idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to answer a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for open requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener on `address` with a [`LISTEN_BACKLOG`] of its own (the webhook's HTTPS port and
/// the admin port alike).
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As the standard library does for a listener: a restart may bind again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection, with its slot among `connections`; `None` once `shutdown` resolves. A
/// failed accept (out of file descriptors and the like) pauses rather than spins. Both accept
/// loops (the webhook's TLS one and the admin one) take their connections here.
pub async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        () = &mut shutdown => return None,
        permit = Arc::clone(connections).acquire_owned() => permit.ok()?, // never closed
    };
    loop {
        tokio::select! {
            () = &mut shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => return Some((permit, tcp, peer)),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router.layer(middleware::from_fn(within_deadline));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(16 * 1024);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    while let Some((permit, tcp, peer)) = accept(&listener, &connections, shutdown.as_mut()).await {
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin drain timed out");
    }
    Ok(())
}

async fn within_deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not answered within {REQUEST_TIMEOUT:?}\n"),
        )
            .into_response(),
    }
}
