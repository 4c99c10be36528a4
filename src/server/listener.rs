//! The accept loop: hyper's HTTP/1 and HTTP/2 server with the limits `axum::serve` does not set.
//!
//! - A cap on open connections (`max_connections`): beyond it, new connections wait in the kernel's backlog
//!   until one closes, so a flood of sockets cannot exhaust file descriptors.
//! - A header-read timeout (`header_read_timeout`): a client must send a request's headers within it, and an
//!   idle keep-alive connection is closed when no new request starts within it (slowloris). Response bodies
//!   are not bounded by it: a slow blob download continues as long as the client reads (TCP back-pressure).
//! - HTTP/2 keep-alive pings, so dead peers are noticed.
//!
//! - TLS (optional): rustls, with the handshake bounded by the same timeout; see [`crate::tls`].
//!
//! Graceful shutdown: on the signal the loop stops accepting, open connections finish their requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::tls::ReloadingTls;

/// Limits of the HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Largest request head (request line and headers) accepted; a larger one gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
// Most headers in a request: hyper's default, 100. Setting it explicitly, even to 100, moves the header
// array to the heap (one allocation per request, about 5% of throughput according to hyper's docs).

/// Serves `app` on `listener` until `shutdown` completes, then waits up to `grace` for open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<ReloadingTls>>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first byte are dropped at once on shutdown, not after the timeout.
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut full_logged = false;
    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting: at the cap, connections queue in the backlog instead of being
        // accepted and starved.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        if slots.available_permits() == 0 && !full_logged {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached; new connections wait"
            );
            full_logged = true;
        } else if slots.available_permits() > limits.max_connections / 10 {
            full_logged = false;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(request)
            },
        );
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte_timeout = limits.header_read_timeout;
        let stopping = stopping.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // hyper's header timeout starts once it reads a request; the protocol sniffing before that has none.
            // A connection that sends nothing at all is closed after the same timeout.
            let mut first = [0u8; 1];
            let first_byte = tokio::select! {
                peeked = tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)) => {
                    matches!(peeked, Ok(Ok(1..)))
                }
                _ = stopping.cancelled() => false,
            };
            if !first_byte {
                tracing::debug!(%peer, "connection sent nothing; closed");
                drop(slot);
                return;
            }
            let served = match tls {
                None => {
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
                Some(tls) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(first_byte_timeout, tls.acceptor().accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let connection = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned();
                            watcher.watch(connection).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = served {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    stopping.cancel();
    tracing::info!("shutting down: finishing open requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}
