//! Cache metrics: manifest and blob pulls by namespace and source (cache or upstream), single-flight joins,
//! uncached blobs (full disk), stale tags served and tag revalidations, hot-cache hits; fills in flight and
//! hot-cache size are observed at scrape time.

use std::sync::{Arc, LazyLock};

use opentelemetry::metrics::Counter;
use opentelemetry::{KeyValue, StringValue, Value};

use super::CacheStatus;
use crate::metrics::tally::{Counters, Tally};

struct Instruments {
    /// Pulls by namespace and source (observable counters over these: counted on every request).
    manifest_pulls: Arc<Pulls>,
    blob_pulls: Arc<Pulls>,
    fill_joins: Counter<u64>,
    uncached_blobs: Counter<u64>,
    stale_tags: Counter<u64>,
    revalidations: Counter<u64>,
    /// Hot-cache lookups: misses at 0, hits at 1.
    hot_requests: Arc<Counters<2>>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = crate::metrics::meter();
    Instruments {
        manifest_pulls: pulls(
            &meter,
            "ociregistry_manifest_pulls",
            "Manifests served, by upstream namespace and source (cache or upstream)",
        ),
        blob_pulls: pulls(
            &meter,
            "ociregistry_blob_pulls",
            "Blobs served, by upstream namespace and source (cache or upstream)",
        ),
        fill_joins: meter
            .u64_counter("ociregistry_fill_joins")
            .with_description(
                "Requests that joined a blob download already in flight (single flight)",
            )
            .build(),
        uncached_blobs: meter
            .u64_counter("ociregistry_uncached_blobs")
            .with_description(
                "Blobs streamed from the upstream without being stored (disk below min_free_bytes)",
            )
            .build(),
        stale_tags: meter
            .u64_counter("ociregistry_stale_tags_served")
            .with_description("Tag resolutions served past their TTL, by namespace and reason")
            .build(),
        revalidations: meter
            .u64_counter("ociregistry_tag_revalidations")
            .with_description(
                "Background tag revalidations, by namespace and result (moved, unchanged, failed)",
            )
            .build(),
        hot_requests: Counters::exported(
            meter
                .u64_observable_counter("ociregistry_hot_cache_requests")
                .with_description("Hot-cache lookups of manifests and tags, by result"),
            "result",
            ["miss", "hit"],
        ),
    }
});

/// Pulls by namespace, one tally per source (so counting looks the namespace up by `&str`, cloning nothing).
#[derive(Default)]
struct Pulls {
    cache: Tally<Arc<str>>,
    upstream: Tally<Arc<str>>,
}

impl Pulls {
    fn add(&self, registry: &Arc<str>, status: CacheStatus) {
        let tally = match status {
            CacheStatus::Hit => &self.cache,
            CacheStatus::Miss => &self.upstream,
        };
        tally.add_borrowed(&**registry, 1, || registry.clone());
    }
}

/// A pulls counter: counted in a [`Pulls`], exported as an observable counter.
fn pulls(
    meter: &opentelemetry::metrics::Meter,
    name: &'static str,
    description: &'static str,
) -> Arc<Pulls> {
    let pulls = Arc::new(Pulls::default());
    let observed = pulls.clone();
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |o| {
            for (tally, status) in [
                (&observed.cache, CacheStatus::Hit),
                (&observed.upstream, CacheStatus::Miss),
            ] {
                tally.each(|registry, n| o.observe(n, &[namespace(registry), source(status)]));
            }
        })
        .build();
    pulls
}

fn namespace(registry: &Arc<str>) -> KeyValue {
    KeyValue::new(
        "namespace",
        Value::String(StringValue::from(registry.clone())),
    )
}

fn source(status: CacheStatus) -> KeyValue {
    KeyValue::new(
        "source",
        match status {
            CacheStatus::Hit => "cache",
            CacheStatus::Miss => "upstream",
        },
    )
}

pub fn manifest_pull(registry: &Arc<str>, status: CacheStatus) {
    if crate::metrics::enabled() {
        INSTRUMENTS.manifest_pulls.add(registry, status);
    }
}

pub fn blob_pull(registry: &Arc<str>, status: CacheStatus) {
    if crate::metrics::enabled() {
        INSTRUMENTS.blob_pulls.add(registry, status);
    }
}

pub fn fill_join() {
    if crate::metrics::enabled() {
        INSTRUMENTS.fill_joins.add(1, &[]);
    }
}

pub fn uncached_blob() {
    if crate::metrics::enabled() {
        INSTRUMENTS.uncached_blobs.add(1, &[]);
    }
}

pub fn stale_tag(registry: &Arc<str>, reason: &'static str) {
    if crate::metrics::enabled() {
        INSTRUMENTS
            .stale_tags
            .add(1, &[namespace(registry), KeyValue::new("reason", reason)]);
    }
}

pub fn revalidation(registry: &Arc<str>, result: &'static str) {
    if crate::metrics::enabled() {
        INSTRUMENTS
            .revalidations
            .add(1, &[namespace(registry), KeyValue::new("result", result)]);
    }
}

pub fn hot(hit: bool) {
    if crate::metrics::enabled() {
        INSTRUMENTS.hot_requests.add(usize::from(hit), 1);
    }
}

/// Observes the in-flight fills and the hot cache's size at scrape time.
pub fn observe(cache: &super::PullThrough) {
    if !crate::metrics::enabled() {
        return;
    }
    let meter = crate::metrics::meter();
    let fills = cache.fills.clone();
    meter
        .u64_observable_gauge("ociregistry_fills_in_flight")
        .with_description("Blob downloads in progress")
        .with_callback(move |o| o.observe(fills.len() as u64, &[]))
        .build();
    let manifests = cache.hot.manifests.clone();
    let tags = cache.hot.tags.clone();
    meter
        .u64_observable_gauge("ociregistry_hot_cache_entries")
        .with_description("Entries in the in-memory hot cache, by kind")
        .with_callback(move |o| {
            // moka counts lazily; settle pending work first (scrapes run on a blocking thread).
            futures::executor::block_on(async {
                manifests.run_pending_tasks().await;
                tags.run_pending_tasks().await;
            });
            o.observe(
                manifests.entry_count(),
                &[KeyValue::new("kind", "manifest")],
            );
            o.observe(tags.entry_count(), &[KeyValue::new("kind", "tag")]);
        })
        .build();
    let manifests = cache.hot.manifests.clone();
    let tags = cache.hot.tags.clone();
    meter
        .u64_observable_gauge("ociregistry_hot_cache")
        .with_unit("By")
        .with_description("Weighted size of the in-memory hot cache (bounded by hot_cache_bytes)")
        .with_callback(move |o| o.observe(manifests.weighted_size() + tags.weighted_size(), &[]))
        .build();
}
