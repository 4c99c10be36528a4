//! Trace export: with `otlp_endpoint` (`--otlp-endpoint`) or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the spans of target [`TARGET`] (one per API request, one per upstream
//! request) go to an OpenTelemetry collector over OTLP/HTTP (protobuf, or JSON with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) through `tracing-opentelemetry`. Off by default, and then free:
//! those spans are at TRACE level under a target no other layer enables, so `span!` skips them at the callsite.
//!
//! The exporter runs on the batch processor's own thread with a blocking HTTP client (the crate's own reqwest
//! 0.12, not a second copy): exporting never touches the request path, and the final flush at exit works after
//! the async runtime is gone.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The target of exported spans.
pub const TARGET: &str = "ociregistry::trace";

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where spans go, when anywhere: the configured base URL (`/v1/traces` is appended, as for the standard
/// variable), else the standard environment variables (read by the exporter itself).
pub fn wanted(endpoint: Option<&str>) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    endpoint.is_some_and(|e| !e.trim().is_empty())
        || set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
}

/// The provider exporting spans; flushed and shut down when dropped.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer("ociregistry")
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // Exports what is still batched (the last requests before a SIGTERM).
        if let Err(err) = self.provider.shutdown() {
            eprintln!("ociregistry: exporting the last traces: {err}");
        }
    }
}

/// Builds the exporter. Call outside the async runtime (the blocking HTTP client refuses to be built in one).
pub fn start(endpoint: Option<&str>) -> anyhow::Result<Export> {
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP HTTP client panicked"))?
    .context("building the OTLP HTTP client")?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(client))
        .with_protocol(protocol()?)
        .with_timeout(EXPORT_TIMEOUT);
    if let Some(base) = endpoint.filter(|e| !e.trim().is_empty()) {
        builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = builder.build().context("the OTLP trace exporter")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("ociregistry")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build();
    Ok(Export { provider })
}

/// `http/protobuf` (the default, as the OTLP specification says) or `http/json`, from the standard variables.
fn protocol() -> anyhow::Result<opentelemetry_otlp::Protocol> {
    let chosen = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    match chosen.as_deref().map(str::trim) {
        None | Some("http/protobuf") => Ok(opentelemetry_otlp::Protocol::HttpBinary),
        Some("http/json") => Ok(opentelemetry_otlp::Protocol::HttpJson),
        Some(other) => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL {other:?}: this build exports over http/protobuf or http/json (not grpc)"
        ),
    }
}

/// reqwest's blocking client as the exporter's HTTP client.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        // Runs on the batch processor's thread, which may block.
        let (parts, body) = request.into_parts();
        let mut outgoing = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let response = outgoing.send()?;
        let status = response.status();
        let headers = response.headers().clone();
        // The collector's answer is small; cap what is read of it.
        let mut body = Vec::new();
        use std::io::Read;
        response.take(1024 * 1024).read_to_end(&mut body)?;
        let mut answer = opentelemetry_http::Response::builder().status(status.as_u16());
        for (name, value) in &headers {
            answer = answer.header(name.as_str(), value.as_bytes());
        }
        Ok(answer.body(opentelemetry_http::Bytes::from(body))?)
    }
}
