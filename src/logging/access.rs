//! The access log's own path: a request hands a small record to a bounded queue and goes on; one thread drains
//! the queue every few milliseconds, formats the records (text or JSON, the same lines the `tracing` formatter
//! would write) and passes them, batched, to the log writer. Formatting through `tracing-subscriber` on the
//! request's thread, and waking a writer thread per line, cost a fifth to a quarter of warm manifest throughput;
//! this costs a queue push. When the queue is full the record is dropped and counted.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::LogFormat;

/// Records queued for the formatter before new ones are dropped.
const QUEUED_RECORDS: usize = 64 * 1024;
/// Records formatted into one write at most.
const BATCH: usize = 4096;
/// How often the formatter drains the queue.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// One request, as the access log reports it.
pub struct AccessRecord {
    pub at: SystemTime,
    pub id: u64,
    pub method: axum::http::Method,
    /// The request target, `path` or `path?query`, copied: holding the request's `Uri` would keep the
    /// connection's read buffer referenced until the line is written, so the server could not reuse it.
    pub target: Box<str>,
    pub status: u16,
    pub bytes: Option<u64>,
    pub latency_us: u64,
    pub client: Option<IpAddr>,
    pub cache: &'static str,
}

impl AccessRecord {
    fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

static QUEUE: OnceLock<Sender<AccessRecord>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Records taken off the queue and handed to the writer (so shutdown can wait until all queued ones are).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static QUEUED: AtomicU64 = AtomicU64::new(0);

/// Records dropped because the formatter fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Whether the access-log thread runs (the logger was installed); without it callers log through `tracing`.
pub fn running() -> bool {
    QUEUE.get().is_some()
}

/// Queues `record` for the access-log thread, or drops and counts it when the queue is full.
pub fn submit(record: AccessRecord) {
    if let Some(queue) = QUEUE.get() {
        match queue.try_send(record) {
            Ok(()) => {
                QUEUED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Waits (up to `within`) until every record queued so far was handed to the writer: called at exit, before
/// the writer flushes, so the last requests' lines are not lost.
pub(super) fn drain(within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while WRITTEN.load(Ordering::Acquire) < QUEUED.load(Ordering::Relaxed)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Starts the formatter thread writing to `writer`. Once per process; later calls do nothing.
pub(super) fn start<W: Write + Send + 'static>(
    writer: W,
    format: LogFormat,
) -> std::io::Result<()> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUED_RECORDS);
    if QUEUE.set(tx).is_err() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("ociregistry-access".into())
        .spawn(move || run(rx, writer, format))?;
    Ok(())
}

fn run<W: Write>(queue: Receiver<AccessRecord>, mut writer: W, format: LogFormat) {
    let mut line = Vec::with_capacity(64 * 1024);
    let mut clock = Clock::default();
    loop {
        // Polled, not woken: a request's push never has to wake this thread (a futex call and a context switch
        // per request cost more than formatting the line). Lines reach the log at most one interval late.
        std::thread::sleep(DRAIN_INTERVAL);
        loop {
            line.clear();
            let mut taken = 0;
            for record in queue.try_iter().take(BATCH) {
                write_record(&mut line, &record, format, &mut clock);
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            // The writer is the non-blocking log writer: this hands the batch over, it does not wait for stderr.
            let _ = writer.write_all(&line);
            WRITTEN.fetch_add(taken, Ordering::Release);
        }
    }
}

fn write_record(out: &mut Vec<u8>, r: &AccessRecord, format: LogFormat, clock: &mut Clock) {
    match format {
        LogFormat::Text => write_text(out, r, clock),
        LogFormat::Json => write_json(out, r, clock),
    }
}

/// `2026-11-23T14:03:33.213112Z  INFO access: id=… method=GET path=… query= status=200 bytes=646 …`
fn write_text(out: &mut Vec<u8>, r: &AccessRecord, clock: &mut Clock) {
    clock.write(out, r.at);
    out.extend_from_slice(b"  INFO access: id=");
    push_int(out, r.id);
    out.extend_from_slice(b" method=");
    out.extend_from_slice(r.method.as_str().as_bytes());
    out.extend_from_slice(b" path=");
    out.extend_from_slice(r.path().as_bytes());
    out.extend_from_slice(b" query=");
    out.extend_from_slice(r.query().as_bytes());
    out.extend_from_slice(b" status=");
    push_int(out, r.status);
    if let Some(bytes) = r.bytes {
        out.extend_from_slice(b" bytes=");
        push_int(out, bytes);
    }
    out.extend_from_slice(b" latency_us=");
    push_int(out, r.latency_us);
    out.extend_from_slice(b" client=");
    match r.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" cache=");
    out.extend_from_slice(r.cache.as_bytes());
    out.push(b'\n');
}

/// The fields and names `tracing-subscriber`'s flattened JSON format uses for the same event.
fn write_json(out: &mut Vec<u8>, r: &AccessRecord, clock: &mut Clock) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    clock.write(out, r.at);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"id\":\"");
    push_int(out, r.id);
    out.extend_from_slice(b"\",\"method\":\"");
    out.extend_from_slice(r.method.as_str().as_bytes());
    out.extend_from_slice(b"\",\"path\":");
    let _ = serde_json::to_writer(&mut *out, r.path());
    out.extend_from_slice(b",\"query\":");
    let _ = serde_json::to_writer(&mut *out, r.query());
    out.extend_from_slice(b",\"status\":");
    push_int(out, r.status);
    if let Some(bytes) = r.bytes {
        out.extend_from_slice(b",\"bytes\":");
        push_int(out, bytes);
    }
    out.extend_from_slice(b",\"latency_us\":");
    push_int(out, r.latency_us);
    out.extend_from_slice(b",\"client\":\"");
    match r.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\",\"cache\":\"");
    out.extend_from_slice(r.cache.as_bytes());
    out.extend_from_slice(b"\",\"target\":\"access\"}\n");
}

fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// RFC 3339 UTC timestamps with microseconds; the date and time up to the second is formatted once per second.
#[derive(Default)]
struct Clock {
    second: u64,
    prefix: Vec<u8>,
}

impl Clock {
    fn write(&mut self, out: &mut Vec<u8>, at: SystemTime) {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since.as_secs();
        if self.prefix.is_empty() || second != self.second {
            self.second = second;
            self.prefix.clear();
            // `2026-11-23T14:03:33Z`: keep all but the `Z`.
            let whole = humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second),
            )
            .to_string();
            self.prefix
                .extend_from_slice(&whole.as_bytes()[..whole.len() - 1]);
        }
        out.extend_from_slice(&self.prefix);
        let _ = write!(out, ".{:06}Z", since.subsec_micros());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_795_442_613_213_112),
            id: 42,
            method: axum::http::Method::GET,
            target: "/v2/docker.io/library/alpine/manifests/3?ns=a%22b".into(),
            status: 200,
            bytes: Some(646),
            latency_us: 1527,
            client: Some("127.0.0.1".parse().unwrap()),
            cache: "hit",
        }
    }

    #[test]
    fn text_line_matches_the_tracing_format() {
        let mut out = Vec::new();
        write_text(&mut out, &record(), &mut Clock::default());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-23T14:03:33.213112Z  INFO access: id=42 method=GET path=/v2/docker.io/library/alpine/manifests/3 query=ns=a%22b status=200 bytes=646 latency_us=1527 client=127.0.0.1 cache=hit\n"
        );
    }

    #[test]
    fn json_line_is_valid_json_with_the_fields() {
        let mut r = record();
        r.bytes = None;
        r.client = None;
        let mut out = Vec::new();
        write_json(&mut out, &r, &mut Clock::default());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-23T14:03:33.213112Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["query"], "ns=a%22b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["client"], "-");
        assert!(v.get("bytes").is_none());
    }

    #[test]
    fn the_clock_reformats_when_the_second_changes() {
        let mut clock = Clock::default();
        let mut out = Vec::new();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_442_613);
        clock.write(&mut out, t);
        out.push(b' ');
        clock.write(&mut out, t + std::time::Duration::from_millis(1_500));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-23T14:03:33.000000Z 2026-11-23T14:03:34.500000Z"
        );
    }
}
