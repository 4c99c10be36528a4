//! Metrics: OpenTelemetry meters, exported in Prometheus text format on a listener of their own
//! (`serve --metrics 2112`). Off by default, and then free: instruments are created from the global meter, which
//! stays OpenTelemetry's no-op until [`install`] sets a real provider.
//!
//! The instruments live where the work happens (`server` for requests, `cache` for pulls and fills, `upstream`
//! for upstream requests, `admin` for prunes); this module only wires the exporter, serves `/metrics`, and
//! observes the process and the runtime.

pub mod histogram;
mod process;
pub mod tally;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use opentelemetry::metrics::Meter;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder, TextEncoder};

/// Whether metrics are on: hot paths skip working out labels when they are not.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The registry the exporter writes into, once [`install`] ran: instruments OpenTelemetry has no cheap form of
/// (see [`histogram`]) are registered in it directly.
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// Whether [`install`] ran.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The meter every instrument of the server comes from.
pub fn meter() -> Meter {
    opentelemetry::global::meter("ociregistry")
}

/// Latency buckets, in seconds: a cached manifest takes tens of microseconds, a cold blob seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The Prometheus side of the installed provider.
pub struct Exporter {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

/// Installs the global meter provider with a Prometheus exporter. Call before anything creates an instrument
/// (they bind to the provider present when first used).
pub fn install() -> anyhow::Result<Arc<Exporter>> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        // Labels say what a series is; scope labels and target_info would only repeat "ociregistry".
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .context("building the Prometheus exporter")?;
    let provider = SdkMeterProvider::builder().with_reader(exporter).build();
    let _ = REGISTRY.set(registry.clone());
    opentelemetry::global::set_meter_provider(provider.clone());
    ENABLED.store(true, Ordering::Relaxed);
    process::observe(&meter());
    meter()
        .u64_observable_counter("ociregistry_log_lines_dropped")
        .with_description(
            "Log lines dropped because the log writer fell behind (it never slows requests down)",
        )
        .with_callback(|o| o.observe(crate::logging::dropped_lines(), &[]))
        .build();
    Ok(Arc::new(Exporter { registry, provider }))
}

/// Adds `collector` to what a scrape shows (nothing happens before [`install`], as with OpenTelemetry's no-op
/// meter). A collector whose names clash with one registered before is a programming error, reported in the log.
pub fn register(collector: Box<dyn prometheus::core::Collector>) {
    if let Some(registry) = REGISTRY.get() {
        if let Err(err) = registry.register(collector) {
            tracing::error!(error = %err, "registering a metric");
        }
    }
}

impl Exporter {
    /// The current values in Prometheus text format.
    pub fn scrape(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    stop: tokio_util::sync::CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let exporter = exporter.clone();
            async move {
                match crate::blocking::spawn(move || exporter.scrape()).await {
                    Ok(Ok(body)) => (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        )],
                        body,
                    )
                        .into_response(),
                    Ok(Err(err)) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
                    }
                    Err(err) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
                    }
                }
            }
        }),
    );
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %err, "metrics listener failed");
    }
}

/// Where `metrics:` binds: a bare port takes the IP of `listen` (loopback by default, every interface when the
/// server listens on 0.0.0.0).
pub fn address(metrics: &crate::config::MetricsListen, listen: SocketAddr) -> SocketAddr {
    match metrics {
        crate::config::MetricsListen::Port(port) => SocketAddr::new(listen.ip(), *port),
        crate::config::MetricsListen::Address(addr) => *addr,
    }
}
