//! Operations metrics: prune runs, images and bytes removed, by what started them; the configured ceiling.

use std::sync::LazyLock;

use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;

use super::PruneReport;

/// What started a removal.
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    /// `ociregistry prune` (the admin API).
    Manual,
    /// `prune_older_than`.
    Automatic,
    /// `max_cache_bytes`.
    Ceiling,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Automatic => "automatic",
            Trigger::Ceiling => "ceiling",
        }
    }
}

struct Instruments {
    runs: Counter<u64>,
    images: Counter<u64>,
    bytes: Counter<u64>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = crate::metrics::meter();
    Instruments {
        runs: meter
            .u64_counter("ociregistry_prune_runs")
            .with_description("Prune and eviction runs, by trigger (manual, automatic, ceiling)")
            .build(),
        images: meter
            .u64_counter("ociregistry_pruned_images")
            .with_description("Images removed by prunes and evictions, by trigger")
            .build(),
        bytes: meter
            .u64_counter("ociregistry_pruned")
            .with_unit("By")
            .with_description("Bytes freed by prunes and evictions, by trigger")
            .build(),
    }
});

pub fn pruned(trigger: Trigger, report: &PruneReport) {
    if !crate::metrics::enabled() {
        return;
    }
    let labels = [KeyValue::new("trigger", trigger.as_str())];
    INSTRUMENTS.runs.add(1, &labels);
    INSTRUMENTS.images.add(report.images.len() as u64, &labels);
    INSTRUMENTS.bytes.add(report.bytes_freed, &labels);
}

/// Exports `max_cache_bytes` (0: no ceiling), so dashboards and alerts can compare the cache with it.
pub fn observe_ceiling(max_cache_bytes: Option<u64>) {
    if !crate::metrics::enabled() {
        return;
    }
    LazyLock::force(&INSTRUMENTS);
    crate::metrics::meter()
        .u64_observable_gauge("ociregistry_max_cache")
        .with_unit("By")
        .with_description("The configured max_cache_bytes (0: no ceiling)")
        .with_callback(move |o| o.observe(max_cache_bytes.unwrap_or(0), &[]))
        .build();
}

/// The per-repository gauges of docker-registry-exporter, from the last index snapshot.
#[derive(Default)]
struct RepositorySeries {
    tags: Vec<(String, u64)>,
    /// (repository, tag, layers, size)
    images: Vec<(String, String, u64, u64)>,
}

static REPOSITORIES: std::sync::LazyLock<std::sync::Mutex<std::sync::Arc<RepositorySeries>>> =
    std::sync::LazyLock::new(Default::default);

/// Registers `repository_tags_total`, `repository_tag_layers_total` and `repository_tag_size_bytes`; their
/// values come from [`refresh_repositories`], so a scrape never reads the index.
pub fn observe_repositories() {
    if !crate::metrics::enabled() {
        return;
    }
    let meter = crate::metrics::meter();
    let current = || {
        REPOSITORIES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };
    meter
        .u64_observable_gauge("repository_tags_total")
        .with_description("Tags of each cached repository (docker-registry-exporter's name)")
        .with_callback(move |o| {
            for (repository, tags) in &current().tags {
                o.observe(*tags, &[KeyValue::new("repository", repository.clone())]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("repository_tag_layers_total")
        .with_description("Layers of each cached tag, all cached platforms together (docker-registry-exporter's name)")
        .with_callback(move |o| {
            for (repository, tag, layers, _) in &current().images {
                o.observe(
                    *layers,
                    &[
                        KeyValue::new("repository", repository.clone()),
                        KeyValue::new("tag", tag.clone()),
                    ],
                );
            }
        })
        .build();
    meter
        .u64_observable_gauge("repository_tag_size_bytes")
        .with_description("Bytes of each cached tag's image: manifests and blobs (docker-registry-exporter's name)")
        .with_callback(move |o| {
            for (repository, tag, _, size) in &current().images {
                o.observe(
                    *size,
                    &[
                        KeyValue::new("repository", repository.clone()),
                        KeyValue::new("tag", tag.clone()),
                    ],
                );
            }
        })
        .build();
}

/// Recomputes the per-repository series from a snapshot, keeping at most `max_series` tags (repositories in
/// name order); whether some were left out.
pub fn refresh_repositories(catalog: &super::plan::Catalog<'_>, max_series: usize) -> bool {
    let mut tags: std::collections::BTreeMap<String, u64> = Default::default();
    let mut images = Vec::new();
    for root in catalog.roots.values() {
        let layers: u64 = root
            .manifests
            .iter()
            .filter_map(|d| catalog.snapshot.manifests.get(d))
            .filter(|m| !crate::manifest::is_index_type(&m.media_type))
            // An image manifest references its config first, then its layers.
            .map(|m| m.references.len().saturating_sub(1) as u64)
            .sum();
        for (repository, tag) in &root.names {
            if let Some(tag) = tag {
                *tags.entry(repository.clone()).or_default() += 1;
                images.push((repository.clone(), tag.clone(), layers, root.size));
            }
        }
    }
    images.sort();
    let truncated = images.len() > max_series;
    images.truncate(max_series);
    let kept: std::collections::BTreeSet<&String> = images.iter().map(|(r, ..)| r).collect();
    let tags = tags.into_iter().filter(|(r, _)| kept.contains(r)).collect();
    *REPOSITORIES.lock().unwrap_or_else(|e| e.into_inner()) =
        std::sync::Arc::new(RepositorySeries { tags, images });
    truncated
}
