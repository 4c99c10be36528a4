//! Request metrics: requests by endpoint kind, method and status; latency to the response head; API errors by
//! OCI code; bytes served from the cache and from upstream fills. Labels are bounded: never a repository or
//! a digest.

use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;

use crate::cache::CacheStatus;

struct Instruments {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    errors: Counter<u64>,
    served: Counter<u64>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = crate::metrics::meter();
    Instruments {
        requests: meter
            .u64_counter("ociregistry_http_requests")
            .with_description("Requests to the registry API, by endpoint kind, method and status")
            .build(),
        duration: meter
            .f64_histogram("ociregistry_http_request_duration")
            .with_unit("s")
            .with_description("Time to the response head, by endpoint kind and method")
            .with_boundaries(crate::metrics::LATENCY_BUCKETS.to_vec())
            .build(),
        errors: meter
            .u64_counter("ociregistry_http_errors")
            .with_description("API error answers, by OCI error code")
            .build(),
        served: meter
            .u64_counter("ociregistry_served")
            .with_unit("By")
            .with_description("Bytes of manifest and blob bodies answered, by cache hit or miss")
            .build(),
    }
});

/// The kind of endpoint a path is, for labels.
pub fn endpoint(path: &str) -> &'static str {
    if path == "/v2" || path == "/v2/" {
        "base"
    } else if path.contains("/manifests/") {
        "manifest"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.contains("/referrers/") {
        "referrers"
    } else {
        "other"
    }
}

/// Counts the body bytes actually sent (a client that leaves early is not counted for what it did not get),
/// and records them as served when the body is dropped.
pub fn count_served(
    response: axum::response::Response,
    cache: CacheStatus,
) -> axum::response::Response {
    use http_body_util::BodyExt;
    struct Served {
        bytes: u64,
        cache: CacheStatus,
    }
    impl Drop for Served {
        fn drop(&mut self) {
            if self.bytes > 0 {
                INSTRUMENTS
                    .served
                    .add(self.bytes, &[KeyValue::new("cache", self.cache.as_str())]);
            }
        }
    }
    let (parts, body) = response.into_parts();
    let mut served = Served { bytes: 0, cache };
    let body = body.map_frame(move |frame| {
        // Borrowing the whole struct makes the closure own it, so its Drop runs with the body.
        let served = &mut served;
        if let Some(data) = frame.data_ref() {
            served.bytes += bytes::Buf::remaining(data) as u64;
        }
        frame
    });
    axum::response::Response::from_parts(parts, axum::body::Body::new(body))
}

/// Records one answered request.
pub fn record(
    endpoint: &'static str,
    method: &axum::http::Method,
    status: u16,
    elapsed: Duration,
    error_code: Option<&'static str>,
) {
    let i = &*INSTRUMENTS;
    let method = match *method {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        _ => "other",
    };
    i.requests.add(
        1,
        &[
            KeyValue::new("endpoint", endpoint),
            KeyValue::new("method", method),
            KeyValue::new("status", i64::from(status)),
        ],
    );
    i.duration.record(
        elapsed.as_secs_f64(),
        &[
            KeyValue::new("endpoint", endpoint),
            KeyValue::new("method", method),
        ],
    );
    if let Some(code) = error_code {
        i.errors.add(1, &[KeyValue::new("code", code)]);
    }
}
