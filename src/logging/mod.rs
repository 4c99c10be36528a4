//! Log set-up: `tracing` events to stderr as text (default) or JSON lines, filtered by `RUST_LOG` or the
//! configured level. Lines go through a bounded non-blocking writer (`tracing-appender`): a request never
//! waits for stderr; if the writer falls behind, lines are dropped and counted
//! (`ociregistry_log_lines_dropped_total`) rather than slowing the server down. Access-log lines take a
//! cheaper path of their own ([`access`]).

pub mod access;

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// Lines buffered between the server and the writer thread before new ones are dropped.
const BUFFERED_LINES: usize = 128 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

static DROPPED: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Lines dropped because the writer (or the access-log formatter) fell behind.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64) + access::dropped()
}

/// Keeps the writer thread alive; dropping it flushes what is buffered (access-log records included) and the
/// spans still waiting for export.
pub struct LogGuard {
    traces: Option<crate::traces::Export>,
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Before `_writer` drops and flushes: the access log hands over the lines still buffered.
        access::drain();
        // Exports the last spans (an error goes to stderr while the writer still runs).
        self.traces.take();
    }
}

/// Installs the global subscriber: log lines filtered by `RUST_LOG` or `level`, and, when `otlp_endpoint` (or
/// the standard OTLP variables) says so, spans exported over OTLP (see [`crate::traces`]).
pub fn init(
    level: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<LogGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v)?,
        _ => EnvFilter::try_new(level)?,
    };
    use std::io::IsTerminal;
    // Colour only for people at a terminal: escape codes in files break log processing.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(BUFFERED_LINES)
        .lossy(true)
        .thread_name("ociregistry-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    // Straight to stderr, not through `writer`: the access log's thread already batches and never blocks a
    // request, and std's stderr lock keeps each of its batches whole against the writer thread's lines.
    access::start(std::io::stderr(), format);
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .boxed(),
    }
    .with_filter(filter);
    let traces = if crate::traces::wanted(otlp_endpoint) {
        Some(crate::traces::start(otlp_endpoint)?)
    } else {
        None
    };
    let spans = traces.as_ref().map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer())
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(crate::traces::TARGET, tracing::Level::TRACE),
            )
    });
    // Without traces, no `Option` layer: an absent layer counts as interested in every callsite, which would make
    // `tracing::enabled!` say yes to what the filter turns off (`access=off`).
    let registry = tracing_subscriber::registry().with(lines);
    match spans {
        Some(spans) => registry.with(spans).try_init(),
        None => registry.try_init(),
    }
    .map_err(|e| anyhow::anyhow!("installing logger: {e}"))?;
    access::decide()?;
    Ok(LogGuard {
        traces,
        _writer: guard,
    })
}
