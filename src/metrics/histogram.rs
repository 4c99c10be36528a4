//! A latency histogram for the request path, counted in cells of each thread's own and exported straight to the
//! Prometheus registry as a `histogram` family (buckets, `_sum`, `_count`), with the same series an OpenTelemetry
//! histogram would give.
//!
//! Why not an OpenTelemetry histogram: a `record` costs two dynamic calls and a lock on cells every thread
//! shares, about 85 ns, a percent of a warm manifest GET (`docs/benchmarks.md`, cost of metrics and the access
//! log), and OpenTelemetry has no observable histogram a scrape could fill from cells like these. A record here is
//! a bucket search (a warm manifest's is the first bucket) and two adds on a cache line no other core writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto;
use thread_local::ThreadLocal;

use super::tally::add_own;

/// Time histograms for a fixed set of series (label values known by index).
pub struct TimeHistograms {
    /// The family's name, help and label names.
    desc: Desc,
    /// Upper bounds in seconds, as exported, and in nanoseconds, as compared.
    bounds: Vec<f64>,
    bounds_ns: Vec<u64>,
    /// Each series' label values, in the order of the label names.
    series: Vec<Vec<&'static str>>,
    /// Per thread, per series: a count per bucket (the last one past every bound), then the sum in nanoseconds.
    threads: ThreadLocal<Box<[AtomicU64]>>,
}

impl TimeHistograms {
    /// Histograms `name` (its unit in the name, e.g. `_seconds`), one per entry of `series` (label values for
    /// `label_names`), with buckets bounded by `bounds` (seconds, ascending).
    pub fn new(
        name: &str,
        help: &str,
        bounds: &[f64],
        label_names: &[&str],
        series: Vec<Vec<&'static str>>,
    ) -> prometheus::Result<TimeHistograms> {
        let desc = Desc::new(
            name.into(),
            help.into(),
            label_names.iter().map(|l| l.to_string()).collect(),
            HashMap::new(),
        )?;
        Ok(TimeHistograms {
            desc,
            bounds: bounds.to_vec(),
            bounds_ns: bounds.iter().map(|s| (s * 1e9).round() as u64).collect(),
            series,
            threads: ThreadLocal::new(),
        })
    }

    /// Cells per series: the buckets, one past the last bound, and the sum.
    fn stride(&self) -> usize {
        self.bounds.len() + 2
    }

    /// Records `elapsed` in series `index` (`index < series.len()`).
    pub fn record(&self, index: usize, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let stride = self.stride();
        let cells = self.threads.get_or(|| {
            (0..self.series.len() * stride)
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        let series = &cells[index * stride..(index + 1) * stride];
        // `le` buckets: a time equal to a bound belongs to it.
        let bucket = self
            .bounds_ns
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.bounds_ns.len());
        add_own(&series[bucket], 1);
        add_own(&series[stride - 1], nanos);
    }

    /// The family as a scrape shows it: every series, summed over the threads.
    fn family(&self) -> proto::MetricFamily {
        let stride = self.stride();
        let mut totals = vec![0u64; self.series.len() * stride];
        for cells in self.threads.iter() {
            for (total, cell) in totals.iter_mut().zip(cells.iter()) {
                *total = total.wrapping_add(cell.load(Ordering::Relaxed));
            }
        }
        let metrics = self
            .series
            .iter()
            .zip(totals.chunks(stride))
            .map(|(values, cells)| {
                let mut cumulative = 0;
                let buckets = self
                    .bounds
                    .iter()
                    .zip(cells)
                    .map(|(&bound, &n)| {
                        cumulative += n;
                        let mut bucket = proto::Bucket::default();
                        bucket.set_upper_bound(bound);
                        bucket.set_cumulative_count(cumulative);
                        bucket
                    })
                    .collect();
                let mut histogram = proto::Histogram::default();
                histogram.set_bucket(buckets);
                histogram.set_sample_count(cumulative + cells[stride - 2]);
                histogram.set_sample_sum(cells[stride - 1] as f64 / 1e9);
                let mut metric = proto::Metric::default();
                metric.set_label(
                    self.desc
                        .variable_labels
                        .iter()
                        .zip(values)
                        .map(|(name, value)| {
                            let mut pair = proto::LabelPair::default();
                            pair.set_name(name.clone());
                            pair.set_value(value.to_string());
                            pair
                        })
                        .collect(),
                );
                metric.set_histogram(histogram);
                metric
            })
            .collect();
        let mut family = proto::MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.set_metric(metrics);
        family
    }
}

/// The registry's handle on shared histograms.
pub struct Exported(pub Arc<TimeHistograms>);

impl Collector for Exported {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![self.0.family()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histograms() -> Arc<TimeHistograms> {
        Arc::new(
            TimeHistograms::new(
                "test_duration_seconds",
                "Test times",
                &[0.001, 0.01],
                &["kind"],
                vec![vec!["a"], vec!["b"]],
            )
            .unwrap(),
        )
    }

    #[test]
    fn records_into_le_buckets_across_threads_and_scrapes_as_prometheus_text() {
        let h = histograms();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    h.record(0, Duration::from_micros(500));
                    h.record(0, Duration::from_millis(1)); // on the bound: its bucket
                    h.record(0, Duration::from_millis(5));
                    h.record(1, Duration::from_secs(2)); // past every bound
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let registry = prometheus::Registry::new();
        registry.register(Box::new(Exported(h.clone()))).unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "# TYPE test_duration_seconds histogram",
            "test_duration_seconds_bucket{kind=\"a\",le=\"0.001\"} 6",
            "test_duration_seconds_bucket{kind=\"a\",le=\"0.01\"} 9",
            "test_duration_seconds_bucket{kind=\"a\",le=\"+Inf\"} 9",
            "test_duration_seconds_count{kind=\"a\"} 9",
            "test_duration_seconds_sum{kind=\"a\"} 0.0195",
            "test_duration_seconds_bucket{kind=\"b\",le=\"0.01\"} 0",
            "test_duration_seconds_bucket{kind=\"b\",le=\"+Inf\"} 3",
            "test_duration_seconds_sum{kind=\"b\"} 6",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
