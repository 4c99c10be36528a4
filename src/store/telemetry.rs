//! Store gauges, read at scrape time: what the index holds (manifests, tag mappings, blobs), the bytes of the
//! cached blobs, and free space on the blob filesystem.

use std::sync::Arc;

use super::Store;

/// Registers the observable gauges of `store`.
pub fn observe(store: &Arc<Store>) {
    if !crate::metrics::enabled() {
        return;
    }
    let meter = crate::metrics::meter();
    for (name, description, pick) in [
        (
            "ociregistry_cached_manifests",
            "Manifests in the index",
            (|c: &super::IndexCounts| c.manifests) as fn(&super::IndexCounts) -> u64,
        ),
        (
            "ociregistry_cached_tags",
            "Tag mappings in the index (referrers records included)",
            |c: &super::IndexCounts| c.tags,
        ),
        (
            "ociregistry_cached_blobs",
            "Blobs in the index",
            |c: &super::IndexCounts| c.blobs,
        ),
    ] {
        let counts = store.clone();
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |o| {
                if let Ok(c) = counts.index_blocking(|index| index.counts()) {
                    o.observe(pick(&c), &[]);
                }
            })
            .build();
    }
    let bytes = store.clone();
    meter
        .u64_observable_gauge("ociregistry_disk_blob")
        .with_unit("By")
        .with_description("Bytes of the cached blobs")
        .with_callback(move |o| o.observe(bytes.blob_bytes(), &[]))
        .build();
    let free = store.clone();
    meter
        .u64_observable_gauge("ociregistry_disk_free")
        .with_unit("By")
        .with_description("Free bytes on the blob directory's filesystem")
        .with_callback(move |o| {
            if let Ok(bytes) = free.blobs.free_bytes() {
                o.observe(bytes, &[]);
            }
        })
        .build();
}

/// `ociregistry_bucket_requests_total{operation, result}`: requests to the shared bucket (scale-out mode).
static BUCKET_REQUESTS: std::sync::LazyLock<opentelemetry::metrics::Counter<u64>> =
    std::sync::LazyLock::new(|| {
        crate::metrics::meter()
            .u64_counter("ociregistry_bucket_requests")
            .with_description(
                "Requests to the shared bucket (scale-out mode), by operation and result (hit, miss, ok, error)",
            )
            .build()
    });

/// Counts one request to the shared bucket.
pub fn bucket(operation: &'static str, result: &'static str) {
    if crate::metrics::enabled() {
        BUCKET_REQUESTS.add(
            1,
            &[
                opentelemetry::KeyValue::new("operation", operation),
                opentelemetry::KeyValue::new("result", result),
            ],
        );
    }
}
