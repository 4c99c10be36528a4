//! The accept loop: hyper's HTTP/1 and HTTP/2 server with the limits `axum::serve` does not set.
//!
//! - A cap on open connections (`max_connections`): beyond it, new connections wait in the kernel's backlog
//!   until one closes, so a flood of sockets cannot exhaust file descriptors. At the cap, the connection that
//!   has waited longest without completing a request head is closed to make room: clients that trickle
//!   their headers (slowloris) cannot keep real clients out.
//! - A header-read timeout (`header_read_timeout`): a client must send a request's headers within it, and an
//!   idle keep-alive connection is closed when no new request starts within it (slowloris). Response bodies
//!   are not bounded by it: a slow blob download continues as long as the client reads (TCP back-pressure).
//! - HTTP/2 keep-alive pings, so dead peers are noticed.
//!
//! - TLS (optional): rustls, with the handshake bounded by the same timeout; see [`crate::tls`].
//!
//! Graceful shutdown: on the signal the loop stops accepting, open connections finish their requests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Connections that have not completed a request head yet, oldest first: the ones shed at the cap.
#[derive(Default)]
struct Unproven {
    next_id: AtomicU64,
    queue: Mutex<VecDeque<(u64, tokio_util::sync::CancellationToken)>>,
}

impl Unproven {
    fn register(&self) -> (u64, tokio_util::sync::CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = tokio_util::sync::CancellationToken::new();
        self.lock().push_back((id, token.clone()));
        (id, token)
    }

    /// The connection sent a whole request head (or ended): it is no longer a candidate.
    fn proven(&self, id: u64) {
        let mut queue = self.lock();
        if let Some(at) = queue.iter().position(|(i, _)| *i == id) {
            queue.remove(at);
        }
    }

    /// Closes the oldest connection without a request yet; whether there was one.
    fn shed_oldest(&self) -> bool {
        match self.lock().pop_front() {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, VecDeque<(u64, tokio_util::sync::CancellationToken)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
    let unproven = Arc::new(Unproven::default());
    tokio::pin!(shutdown);
    loop {
        // Below the cap: take a slot, then accept. At the cap: accept one connection (the rest queue in the
        // kernel's backlog), make room by closing the connection that has waited longest without a request
        // head, and serve the new one once a slot is free. Connections that completed a request are never
        // closed for room: at the cap they hold it until they idle out.
        let ready = slots.clone().try_acquire_owned().ok();
        if ready.is_none() && !full_logged {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached; new connections wait, or replace ones without a request"
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
        let slot = match ready {
            Some(slot) => slot,
            None => {
                if unproven.shed_oldest() {
                    tracing::debug!(
                        "connection limit reached; closed the oldest connection without a request"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let (conn_id, shed) = unproven.register();
        let proven = Arc::new(AtomicBool::new(false));
        let service = {
            let unproven = unproven.clone();
            let proven = proven.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                // Read first: a swap on every request would be a locked instruction each time.
                if !proven.load(Ordering::Relaxed) && !proven.swap(true, Ordering::Relaxed) {
                    unproven.proven(conn_id);
                }
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(request)
            })
        };
        let unproven = unproven.clone();
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
                _ = shed.cancelled() => false,
            };
            if !first_byte {
                tracing::debug!(%peer, "connection sent nothing; closed");
                unproven.proven(conn_id);
                drop(slot);
                return;
            }
            let connection = async {
                match tls {
                    None => {
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        watcher.watch(connection).await
                    }
                    Some(tls) => {
                        // The handshake is bounded like a request head.
                        match tokio::time::timeout(
                            first_byte_timeout,
                            tls.acceptor().accept(stream),
                        )
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
                }
            };
            // Shed at the cap while it has not completed a request head; once it has, it is never shed.
            let shed_unproven = async {
                shed.cancelled().await;
                if proven.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            let served = tokio::select! {
                served = connection => served,
                _ = shed_unproven => {
                    tracing::debug!(%peer, "closed at the connection limit: no request head yet");
                    Ok(())
                }
            };
            if let Err(err) = served {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            unproven.proven(conn_id);
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
