//! Upstream metrics: request latency and errors by namespace and kind (manifest, blob, referrers, token), bytes
//! fetched, and the rate-limit budget each upstream last stated.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dashmap::DashMap;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::{KeyValue, StringValue, Value};

use crate::error::RegistryError;

struct Instruments {
    duration: Histogram<f64>,
    errors: Counter<u64>,
    fetched: Counter<u64>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = crate::metrics::meter();
    let remaining = RATE_LIMIT_REMAINING.clone();
    meter
        .u64_observable_gauge("ociregistry_upstream_ratelimit_remaining")
        .with_description("Requests left in the upstream's rate-limit window, as it last stated (ratelimit-remaining)")
        .with_callback(move |o| {
            for entry in remaining.iter() {
                o.observe(
                    *entry.value(),
                    &[KeyValue::new("namespace", Value::String(StringValue::from(entry.key().clone())))],
                );
            }
        })
        .build();
    Instruments {
        duration: meter
            .f64_histogram("ociregistry_upstream_request_duration")
            .with_unit("s")
            .with_description("Time to the upstream's answer (headers), by namespace and kind")
            .with_boundaries(crate::metrics::LATENCY_BUCKETS.to_vec())
            .build(),
        errors: meter
            .u64_counter("ociregistry_upstream_errors")
            .with_description("Failed upstream requests, by namespace, kind and reason (connect, timeout, 4xx, 5xx, 429, digest_mismatch, other)")
            .build(),
        fetched: meter
            .u64_counter("ociregistry_upstream_fetched")
            .with_unit("By")
            .with_description("Bytes of manifests and blobs received from upstreams, by namespace")
            .build(),
    }
});

/// Upstreams whose rate limit is tracked at most (unlisted hosts are bounded by policy, but keep it finite).
const MAX_RATE_LIMITED: usize = 1000;

static RATE_LIMIT_REMAINING: LazyLock<Arc<DashMap<Arc<str>, u64>>> =
    LazyLock::new(Default::default);

fn namespace(registry: &Arc<str>) -> KeyValue {
    KeyValue::new(
        "namespace",
        Value::String(StringValue::from(registry.clone())),
    )
}

/// The kind of an upstream request, from the path it asks for.
pub fn kind(path: &str) -> &'static str {
    if path.starts_with("manifests/") {
        "manifest"
    } else if path.starts_with("blobs/") {
        "blob"
    } else if path.starts_with("referrers/") {
        "referrers"
    } else {
        "other"
    }
}

/// Records an answered request (any status) and, for a failing status, an error.
pub fn answered(registry: &Arc<str>, kind: &'static str, status: u16, elapsed: Duration) {
    if !crate::metrics::enabled() {
        return;
    }
    let i = &*INSTRUMENTS;
    i.duration.record(
        elapsed.as_secs_f64(),
        &[namespace(registry), KeyValue::new("kind", kind)],
    );
    let reason = match status {
        429 => "429",
        // A 404 is an answer about the thing asked for (an unknown tag), not upstream trouble.
        404 => return,
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => return,
    };
    error(registry, kind, reason);
}

/// Records a request that got no answer (or a refused one), classified from the error.
pub fn failed(registry: &Arc<str>, kind: &'static str, err: &RegistryError) {
    if !crate::metrics::enabled() {
        return;
    }
    let reason = match err {
        RegistryError::TooManyRequests { .. } => "429",
        RegistryError::UpstreamDigestMismatch(_) => "digest_mismatch",
        RegistryError::UpstreamUnavailable(m) if m.contains("timed out") => "timeout",
        RegistryError::UpstreamUnavailable(m) if m.contains("unreachable") => "connect",
        _ => "other",
    };
    error(registry, kind, reason);
}

pub fn error(registry: &Arc<str>, kind: &'static str, reason: &'static str) {
    if crate::metrics::enabled() {
        INSTRUMENTS.errors.add(
            1,
            &[
                namespace(registry),
                KeyValue::new("kind", kind),
                KeyValue::new("reason", reason),
            ],
        );
    }
}

pub fn fetched(registry: &Arc<str>, bytes: u64) {
    if crate::metrics::enabled() {
        INSTRUMENTS.fetched.add(bytes, &[namespace(registry)]);
    }
}

pub fn rate_limit_remaining(registry: &str, remaining: u64) {
    if !crate::metrics::enabled() {
        return;
    }
    LazyLock::force(&INSTRUMENTS);
    if let Some(mut entry) = RATE_LIMIT_REMAINING.get_mut(registry) {
        *entry = remaining;
    } else if RATE_LIMIT_REMAINING.len() < MAX_RATE_LIMITED {
        RATE_LIMIT_REMAINING.insert(Arc::from(registry), remaining);
    }
}
