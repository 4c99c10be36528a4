//! One structured access-log line per request (target `access`): method, path, query, status, bytes,
//! latency to the response head, client address and cache hit/miss. Silence it with `RUST_LOG=info,access=off`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::cache::CacheStatus;

pub async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let start = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let response = next.run(request).await;
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cache = response
        .extensions()
        .get::<CacheStatus>()
        .map_or("-", |c| c.as_str());
    tracing::info!(
        target: "access",
        method = %method,
        path = %uri.path(),
        query = %uri.query().unwrap_or(""),
        status = response.status().as_u16(),
        bytes,
        latency_us = start.elapsed().as_micros() as u64,
        client = %client.map_or(String::from("-"), |ip| ip.to_string()),
        cache = %cache,
    );
    response
}
