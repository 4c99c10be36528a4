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
