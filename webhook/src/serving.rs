//! Serving the admission port: hyper itself rather than `axum::serve`, for the limits a port that
//! the API server calls on every matching write must have. `axum::serve` sets no timer, so hyper's
//! header read timeout never fires there: a client that sends its headers one byte at a time
//! would hold its connection for ever. Here:
//! - a client has [`Limits::header_read_timeout`] to send a request's headers (HTTP/1), and an
//!   HTTP/2 connection that stops answering pings is closed;
//! - the listener holds at most `--max-connections` connections ([`crate::tls::TlsListener`]);
//! - the admission routes answer within 30 s, body read included (`server::admission_router`).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::tls::{Peer, TlsListener};

/// The timeouts of the admission port's connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How often an idle HTTP/2 connection is pinged; one that does not answer within the same
    /// time is closed.
    pub keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// How long connections get to finish their requests after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(20);

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish (up to
/// [`DRAIN`]). Each request carries the connection's [`Peer`] as `ConnectInfo`.
pub async fn serve(
    mut listener: TlsListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keep_alive)
        .keep_alive_timeout(limits.keep_alive)
        // WebSocket over HTTP/2, as `axum::serve` enables it (the proxy's exec).
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let peer = Peer::of(&io);
        let service =
            router
                .clone()
                .map_request(move |request: http::Request<hyper::body::Incoming>| {
                    let mut request = request.map(Body::new);
                    request.extensions_mut().insert(ConnectInfo(peer.clone()));
                    request
                });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admission connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {}s after shutdown: closing them",
            DRAIN.as_secs()
        );
    }
}
