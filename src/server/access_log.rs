//! One structured access-log line per request (target `access`): request id, method, path, query, status,
//! bytes, latency to the response head, client address and cache hit/miss. Silence it with
//! `RUST_LOG=info,access=off`. Every request gets an id (also sent as `X-Request-Id`) whether or not the
//! line is written, so error messages can name it; every answer says `X-Content-Type-Options: nosniff`. When
//! traces are exported, each request is also a span carrying that id (see `crate::traces`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::request_id;
use super::telemetry::{Endpoint, Served};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub async fn log_request(request: Request, next: Next) -> Response {
    let id = request_id::next();
    // Formatted once, for the `X-Request-Id` header and the log line.
    let mut id_text = itoa::Buffer::new();
    let id_text = id_text.format(id);
    // Exported only when traces are on (see `crate::traces`); otherwise disabled at the callsite, fields unread.
    let span = tracing::trace_span!(
        target: "ociregistry::trace",
        "request",
        otel.name = %format_args!("{} {}", request.method(), Endpoint::of(request.uri().path()).as_str()),
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
        return observe(request, next, id, id_text).await;
    }
    let response = observe(request, next, id, id_text)
        .instrument(span.clone())
        .await;
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(served) = response.extensions().get::<Served>() {
        span.record("cache", served.cache.as_str());
    }
    response
}

/// The access-log line and the request metrics of one request.
async fn observe(request: Request, next: Next, id: u64, id_text: &str) -> Response {
    let logging = crate::logging::access::enabled();
    let metrics = crate::metrics::enabled();
    if !logging && !metrics {
        let mut response = next.run(request).await;
        set_common_headers(&mut response, id, id_text);
        return response;
    }
    // The request clock (see [`start_clock`]).
    let start = quanta::Instant::now();
    let method = request.method().clone();
    // The target, for the line and for the endpoint label of an answer that does not say its kind: a
    // reference-counted handle on the request's bytes, not a copy (a copy on the stack would cost more: it makes
    // every request's future larger to move).
    let target = request.uri().clone();
    // Looked up only for what uses it: the log line, or requests by client network.
    let client = if logging || super::telemetry::counts_clients() {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    } else {
        None
    };
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
    set_common_headers(&mut response, id, id_text);
    let end = quanta::Instant::now();
    let elapsed = end - start;
    let served = response.extensions().get::<Served>().copied();
    let cache_status = served.map(|s| s.cache);
    // Asked once, for the served bytes and the log line (before the metrics wrap a blob's body).
    let size = http_body::Body::size_hint(response.body()).exact();
    if metrics {
        let endpoint = served.map_or_else(|| Endpoint::of(target.path()), |s| s.endpoint);
        super::telemetry::record(
            endpoint,
            &method,
            response.status().as_u16(),
            elapsed,
            error_code,
        );
        if let (Some(cache), true) = (cache_status, method == axum::http::Method::GET) {
            super::telemetry::count_served(&mut response, size, cache, endpoint);
        }
        super::telemetry::count_client(client, cache_status);
    }
    if !logging {
        return response;
    }
    // The log line's size field only: metrics count the bytes actually sent. A body of known size says it
    // without a header lookup; an empty one (a HEAD, a 304) leaves it to `Content-Length`.
    let bytes = match size {
        Some(n) if n > 0 => Some(n),
        _ => response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
    };
    let cache = cache_status.map_or("-", |c| c.as_str());
    let status = response.status().as_u16();
    let latency_us = elapsed.as_micros() as u64;
    let (path, query) = (target.path(), target.query().unwrap_or(""));
    if crate::logging::access::running() {
        crate::logging::access::submit(&crate::logging::access::AccessRecord {
            at: end,
            id: id_text,
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

/// Calibrates the clock that times requests for the log line and the latency histogram, when either is on. It
/// reads the CPU's time-stamp counter where that is invariant (a third of the cost of reading the system's
/// monotonic clock here: about 8 ns against 21, twice per request) and the system clock otherwise. Calibrating
/// takes up to 200 ms: done at start-up, not in the first request.
pub fn start_clock() {
    if crate::logging::access::enabled() || crate::metrics::enabled() {
        let _ = quanta::Instant::now();
    }
}

/// The request id, and `nosniff`: content is never to be sniffed into another type.
fn set_common_headers(response: &mut Response, id: u64, id_text: &str) {
    super::errors::with_request_id(response, id);
    let headers = response.headers_mut();
    // A copy of digits: cheaper than `HeaderValue::from(u64)`, which grows a buffer to format into.
    let id_value = HeaderValue::from_str(id_text).expect("digits are a valid header value");
    headers.insert(X_REQUEST_ID, id_value);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
