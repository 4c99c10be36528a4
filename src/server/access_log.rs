//! One structured access-log line per request (target `access`): request id, method, path, query, status,
//! bytes, latency to the response head, client address and cache hit/miss. Silence it with
//! `RUST_LOG=info,access=off`. Every request gets an id (also sent as `X-Request-Id`) whether or not the
//! line is written, so error messages can name it; every answer says `X-Content-Type-Options: nosniff`. When
//! traces are exported, each request is also a span carrying that id (see `crate::traces`).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use smallvec::SmallVec;
use tracing::Instrument;

use super::request_id;
use crate::cache::CacheStatus;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn log_request(request: Request, next: Next) -> Response {
    let id = request_id::next();
    // Exported only when traces are on (see `crate::traces`); otherwise disabled at the callsite, fields unread.
    let span = tracing::trace_span!(
        target: "ociregistry::trace",
        "request",
        otel.name = %format_args!("{} {}", request.method(), super::telemetry::Endpoint::of(request.uri().path()).as_str()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        url.query = request.uri().query().unwrap_or(""),
        request_id = id,
        http.response.status_code = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    if span.is_disabled() {
        return observe(request, next, id).await;
    }
    let response = observe(request, next, id).instrument(span.clone()).await;
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(cache) = response.extensions().get::<CacheStatus>() {
        span.record("cache", cache.as_str());
    }
    response
}

/// The access-log line and the request metrics of one request.
async fn observe(request: Request, next: Next, id: u64) -> Response {
    let logging = crate::logging::access::enabled();
    let metrics = crate::metrics::enabled();
    if !logging && !metrics {
        let mut response = next.run(request).await;
        set_common_headers(&mut response, id);
        return response;
    }
    let start = Instant::now();
    let method = request.method().clone();
    // The endpoint kind is a metrics label only; the log line has the whole path.
    let endpoint = metrics.then(|| super::telemetry::Endpoint::of(request.uri().path()));
    // The target is kept only for the log line.
    let target = logging.then(|| Target::of(request.uri()));
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let mut response = next.run(request).await;
    // Only error answers carry the detail: a successful one skips the lookup.
    let error_code = if response.status().is_client_error() || response.status().is_server_error() {
        response
            .extensions()
            .get::<super::errors::ErrorDetail>()
            .map(|d| d.0.code())
    } else {
        None
    };
    set_common_headers(&mut response, id);
    let end = Instant::now();
    let elapsed = end - start;
    let cache_status = response.extensions().get::<CacheStatus>().copied();
    if let Some(endpoint) = endpoint {
        super::telemetry::record(
            endpoint,
            &method,
            response.status().as_u16(),
            elapsed,
            error_code,
        );
        if let (Some(cache), true) = (cache_status, method == axum::http::Method::GET) {
            response = super::telemetry::count_served(response, cache, endpoint);
        }
        super::telemetry::count_client(client, cache_status);
    }
    let Some(target) = target else {
        return response;
    };
    let (path, query) = target.parts();
    // The log line's size field only: metrics count the bytes actually sent.
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cache = cache_status.map_or("-", |c| c.as_str());
    let status = response.status().as_u16();
    let latency_us = elapsed.as_micros() as u64;
    if crate::logging::access::running() {
        crate::logging::access::submit(&crate::logging::access::AccessRecord {
            at: end,
            id,
            method: method.as_str(),
            path,
            query,
            status,
            bytes,
            latency_us,
            client,
            cache,
        });
    } else {
        // No access-log thread (the logger was not installed, e.g. embedded in a test): plain `tracing`.
        tracing::info!(
            target: "access",
            id = %id,
            method = %method,
            path = %path,
            query = %query,
            status,
            bytes,
            latency_us,
            client = %client.map_or(String::from("-"), |ip| ip.to_string()),
            cache = %cache,
        );
    }
    response
}

/// The request target (path and query), copied for the log line before the request is handed on: cloning the
/// `Uri` instead would allocate to share its bytes (hyper parses it into bytes owned by one buffer).
struct Target {
    bytes: SmallVec<[u8; 256]>,
    path_len: usize,
}

impl Target {
    fn of(uri: &axum::http::Uri) -> Target {
        let path = uri.path();
        let mut bytes = SmallVec::from_slice(path.as_bytes());
        if let Some(query) = uri.query() {
            bytes.extend_from_slice(query.as_bytes());
        }
        Target {
            bytes,
            path_len: path.len(),
        }
    }

    /// The path and the query without its `?` (empty when there is none).
    fn parts(&self) -> (&str, &str) {
        // Both came from `&str`s; the split is at the boundary between them.
        let path = std::str::from_utf8(&self.bytes[..self.path_len]).unwrap_or("");
        let query = std::str::from_utf8(&self.bytes[self.path_len..]).unwrap_or("");
        (path, query)
    }
}

/// The request id, and `nosniff`: content is never to be sniffed into another type.
fn set_common_headers(response: &mut Response, id: u64) {
    super::errors::with_request_id(response, id);
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID, HeaderValue::from(id));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
