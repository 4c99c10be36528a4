//! One structured access-log line per request (target `access`): request id, method, path, query, status,
//! bytes, latency to the response head, client address and cache hit/miss. Silence it with
//! `RUST_LOG=info,access=off`. Every request gets an id (also sent as `X-Request-Id`) whether or not the
//! line is written, so error messages can name it.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::request_id;
use crate::cache::CacheStatus;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn log_request(request: Request, next: Next) -> Response {
    let id = request_id::next();
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        let mut response = request_id::scope(id.clone(), next.run(request)).await;
        set_id(&mut response, &id);
        return response;
    }
    let start = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut response = request_id::scope(id.clone(), next.run(request)).await;
    set_id(&mut response, &id);
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
        id = %id,
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

fn set_id(response: &mut Response, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
}
