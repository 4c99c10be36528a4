//! The access log's own path: a request formats its line straight into a buffer of its own thread (an
//! uncontended lock: no queue, no allocation, nothing handed between cores per request; what is known before the
//! request is handed on, its id and target, is formatted then, see [`Opening`]), and one thread takes
//! the buffers and writes them to stderr when one holds 512 KiB or 100 ms have passed. Formatting through
//! `tracing-subscriber` on the request's thread, and waking a writer thread per line, cost a fifth to a quarter
//! of warm manifest throughput; a queue of records formatted by that thread still cost a tenth; taking the
//! buffers every 10 ms cost about a twentieth where the server shared its core. The lines are the ones the
//! `tracing` formatter would write (text or JSON). Lines of different worker threads can reach the log up to
//! 100 ms out of order (each carries its timestamp). When a thread's buffer is full (the writer fell far behind)
//! the line is dropped and counted.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use thread_local::ThreadLocal;

use super::LogFormat;

/// Bytes of formatted lines a thread holds before new lines are dropped (about 10,000 lines).
const BUFFER_LIMIT: usize = 2 * 1024 * 1024;
/// How long lines may wait in a thread's buffer when they come slowly: the longest an access line is late.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// A thread's buffer this full wakes the drain thread before [`MAX_DELAY`] is up, so a busy server hands its
/// lines over in large batches at a rate set by its traffic, not by a timer.
const HAND_OVER_BYTES: usize = 512 * 1024;

/// The part of a request's line known before the request is handed on, formatted then: its id, method, path and
/// query (`  INFO access: id=… method=GET path=… query=…`, or the JSON fields). The target has to be copied out
/// of the request before it is handed on anyway; copied as this, it goes into the line in one piece.
pub struct Opening {
    /// From this thread's spare buffers, given back when dropped (on whichever thread the request ended): no
    /// allocation per request once each thread has a few.
    bytes: Vec<u8>,
}

/// Buffers of this thread for the [`Opening`]s of requests to come.
const SPARE_OPENINGS: usize = 64;
thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        if bytes.capacity() > 4096 {
            return;
        }
        bytes.clear();
        // At thread exit the spares may be gone already: the buffer is then freed.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_OPENINGS {
                spare.push(bytes);
            }
        });
    }
}

/// One request, as the access log reports it: the [`Opening`] and what the response said, formatted at once.
pub struct AccessRecord<'a> {
    /// When the response head was ready (the wall-clock time is worked out from it, see [`Clock`]).
    pub at: Instant,
    pub opening: &'a Opening,
    pub status: u16,
    pub bytes: Option<u64>,
    pub latency_us: u64,
    pub client: Option<IpAddr>,
    pub cache: &'static str,
}

/// A thread's formatted lines not yet handed to the writer.
#[derive(Default)]
struct Lines {
    out: Vec<u8>,
    clock: Clock,
}

struct AccessLog {
    format: LogFormat,
    threads: ThreadLocal<Mutex<Lines>>,
    /// Where the lines go (stderr) and a spare buffer to swap in.
    writer: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
    /// The drain thread found no lines and sleeps until a request wakes it.
    idle: AtomicBool,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Whether access-log lines pass the log filter, decided once the logger is installed (see [`enabled`]).
static ENABLED: OnceLock<bool> = OnceLock::new();
/// The thread that hands lines over, once started.
static DRAINER: OnceLock<std::thread::Thread> = OnceLock::new();

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Whether access-log lines are wanted. The filter is fixed when the logger is installed, so the answer is taken
/// once then (asking `tracing` costs as much as a tenth of formatting the line); before that, or without the
/// logger (embedded in a test), `tracing` is asked each time.
pub fn enabled() -> bool {
    match ENABLED.get() {
        Some(on) => *on,
        None => tracing::enabled!(target: "access", tracing::Level::INFO),
    }
}

/// The start of a request's line, when the access log is running (the logger was installed with access lines
/// on); `None` otherwise, and callers then log through `tracing`.
pub fn open(id: u64, method: &str, path: &str, query: &str) -> Option<Opening> {
    DRAINER.get()?;
    let log = ACCESS_LOG.get()?;
    Some(Opening::new(log.format, id, method, path, query))
}

impl Opening {
    fn new(format: LogFormat, id: u64, method: &str, path: &str, query: &str) -> Opening {
        let mut bytes = SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(256));
        match format {
            LogFormat::Text => {
                bytes.extend_from_slice(b"  INFO access: id=");
                push_int(&mut bytes, id);
                bytes.extend_from_slice(b" method=");
                bytes.extend_from_slice(method.as_bytes());
                bytes.extend_from_slice(b" path=");
                bytes.extend_from_slice(path.as_bytes());
                bytes.extend_from_slice(b" query=");
                bytes.extend_from_slice(query.as_bytes());
            }
            LogFormat::Json => {
                bytes.extend_from_slice(b"\",\"level\":\"INFO\",\"id\":\"");
                push_int(&mut bytes, id);
                bytes.extend_from_slice(b"\",\"method\":");
                push_json_str(&mut bytes, method);
                bytes.extend_from_slice(b",\"path\":");
                push_json_str(&mut bytes, path);
                bytes.extend_from_slice(b",\"query\":");
                push_json_str(&mut bytes, query);
            }
        }
        Opening { bytes }
    }
}

/// Formats `record` into this thread's buffer, or drops and counts it when the buffer is full.
pub fn submit(record: &AccessRecord<'_>) {
    let Some(log) = ACCESS_LOG.get() else {
        return;
    };
    let mut lines = lock(log.threads.get_or_default());
    if lines.out.len() >= BUFFER_LIMIT {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Lines { out, clock } = &mut *lines;
    let before = out.len();
    let wall = clock.wall(record.at);
    write_record(out, record, wall, log.format, clock);
    let filled = before < HAND_OVER_BYTES && out.len() >= HAND_OVER_BYTES;
    drop(lines);
    if filled {
        log.wake();
    } else {
        log.wake_if_idle();
    }
}

/// Hands every buffered line to the writer now: called at exit, before the writer flushes, so the last
/// requests' lines are not lost.
pub(super) fn drain() {
    if let Some(log) = ACCESS_LOG.get() {
        log.hand_over();
    }
}

/// Sets up the access log writing to `writer`. Once per process; later calls do nothing. Lines are taken only
/// once [`decide`] has started the thread that hands them over.
pub(super) fn start<W: Write + Send + 'static>(writer: W, format: LogFormat) {
    let _ = ACCESS_LOG.set(AccessLog {
        format,
        threads: ThreadLocal::new(),
        writer: Mutex::new((Box::new(writer), Vec::with_capacity(64 * 1024))),
        idle: AtomicBool::new(false),
    });
}

/// Takes the answer of [`enabled`] for the rest of the process, and starts the thread that hands lines over when
/// access-log lines are wanted (with the access log off, nothing runs). Called once the logger is installed.
pub(super) fn decide() -> std::io::Result<()> {
    let on = tracing::enabled!(target: "access", tracing::Level::INFO);
    let _ = ENABLED.set(on);
    if !on || DRAINER.get().is_some() {
        return Ok(());
    }
    let Some(log) = ACCESS_LOG.get() else {
        return Ok(());
    };
    let drainer = std::thread::Builder::new()
        .name("ociregistry-access".into())
        .spawn(move || loop {
            // Woken by a request only when its thread's buffer fills (a futex call and a context switch per
            // request would cost more than formatting the line), otherwise after MAX_DELAY: each wake-up costs
            // the core a switch and its caches, so fewer and larger batches are cheaper. An early wake-up (a
            // request's wake meant for an earlier round) only hands over a smaller batch.
            std::thread::park_timeout(MAX_DELAY);
            if !log.hand_over() {
                // A quiet interval: sleep until a request brings a line, so an idle server does not wake ten
                // times a second. Marked idle before the last look: a request that finds the mark unparks (the
                // token of an unpark that comes before the park is kept); one that does not, wrote its line before
                // this look took its thread's lock.
                log.idle.store(true, Ordering::SeqCst);
                if !log.hand_over() {
                    std::thread::park();
                }
                log.idle.store(false, Ordering::SeqCst);
            }
        })?;
    let _ = DRAINER.set(drainer.thread().clone());
    Ok(())
}

impl AccessLog {
    /// Swaps each thread's lines out (holding its lock only for the swap) and writes them; whether there were any.
    fn hand_over(&self) -> bool {
        let mut writer = lock(&self.writer);
        let (writer, spare) = &mut *writer;
        let mut any = false;
        for lines in self.threads.iter() {
            {
                let mut lines = lock(lines);
                if lines.out.is_empty() {
                    continue;
                }
                std::mem::swap(&mut lines.out, spare);
            }
            any = true;
            // This thread may wait for stderr; requests never do (a full buffer drops their line).
            let _ = writer.write_all(spare);
            spare.clear();
        }
        any
    }

    /// Wakes the drain thread now: a thread's buffer is full enough to hand over.
    fn wake(&self) {
        if let Some(drainer) = DRAINER.get() {
            drainer.unpark();
        }
    }

    /// Wakes the drain thread if it went to sleep for want of lines.
    fn wake_if_idle(&self) {
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            if let Some(drainer) = DRAINER.get() {
                drainer.unpark();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_record(
    out: &mut Vec<u8>,
    r: &AccessRecord<'_>,
    at: Duration,
    format: LogFormat,
    clock: &mut Clock,
) {
    let stamp = clock.stamp(at);
    let mut tail = Tail::new();
    match format {
        LogFormat::Text => write_tail::<TextWords>(&mut tail, r),
        LogFormat::Json => write_tail::<JsonWords>(&mut tail, r),
    }
    // Room for the whole line at once, then three copies: the timestamp (a fixed size), the opening, the tail.
    out.reserve(JSON_HEAD.len() + stamp.len() + r.opening.bytes.len() + tail.len);
    if format == LogFormat::Json {
        out.extend_from_slice(JSON_HEAD);
    }
    out.extend_from_slice(&stamp);
    out.extend_from_slice(&r.opening.bytes);
    out.extend_from_slice(tail.as_bytes());
}

const JSON_HEAD: &[u8] = b"{\"timestamp\":\"";

/// The words around the fields of a line's tail, per format. One writer serves both formats, compiled once for
/// each, so every word is a constant (a few moves to copy).
trait TailWords {
    const STATUS: &'static [u8];
    const BYTES: &'static [u8];
    const LATENCY: &'static [u8];
    const CLIENT: &'static [u8];
    const CACHE: &'static [u8];
    const END: &'static [u8];
}

/// `… status=200 bytes=646 latency_us=1527 client=127.0.0.1 cache=hit`: the fields and order the `tracing`
/// formatter writes.
struct TextWords;

impl TailWords for TextWords {
    const STATUS: &'static [u8] = b" status=";
    const BYTES: &'static [u8] = b" bytes=";
    const LATENCY: &'static [u8] = b" latency_us=";
    const CLIENT: &'static [u8] = b" client=";
    const CACHE: &'static [u8] = b" cache=";
    const END: &'static [u8] = b"\n";
}

/// The fields and names `tracing-subscriber`'s flattened JSON format uses for the same event.
struct JsonWords;

impl TailWords for JsonWords {
    const STATUS: &'static [u8] = b",\"status\":";
    const BYTES: &'static [u8] = b",\"bytes\":";
    const LATENCY: &'static [u8] = b",\"latency_us\":";
    const CLIENT: &'static [u8] = b",\"client\":\"";
    const CACHE: &'static [u8] = b"\",\"cache\":\"";
    const END: &'static [u8] = b"\",\"target\":\"access\"}\n";
}

/// The line after the [`Opening`]: status, bytes, latency, client and cache.
fn write_tail<W: TailWords>(tail: &mut Tail, r: &AccessRecord<'_>) {
    tail.put(W::STATUS);
    tail.put_status(r.status);
    if let Some(bytes) = r.bytes {
        tail.put(W::BYTES);
        tail.put_int(bytes);
    }
    tail.put(W::LATENCY);
    tail.put_int(r.latency_us);
    tail.put(W::CLIENT);
    tail.put_client(r.client);
    tail.put(W::CACHE);
    tail.put_short(r.cache);
    tail.put(W::END);
}

/// Room for a line's tail: the longest (JSON, an IPv6 client, both numbers at 20 digits) takes about 150 bytes.
const TAIL_ROOM: usize = 192;

/// The end of a line, built on the stack and copied into the buffer in one piece. Its pieces go in as
/// fixed-size moves and digit by digit: one `memcpy` call and one capacity check for the tail, not one per
/// field (those were a tenth of the line's cost).
struct Tail {
    bytes: [u8; TAIL_ROOM],
    len: usize,
}

impl Tail {
    fn new() -> Tail {
        Tail {
            bytes: [0; TAIL_ROOM],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// A literal: its length is known where this is inlined, so the copy is a few moves.
    #[inline(always)]
    fn put(&mut self, literal: &[u8]) {
        self.bytes[self.len..self.len + literal.len()].copy_from_slice(literal);
        self.len += literal.len();
    }

    /// A short string (a cache status), byte by byte: cheaper than a call for three or four bytes.
    fn put_short(&mut self, s: &str) {
        for &b in s.as_bytes() {
            self.bytes[self.len] = b;
            self.len += 1;
        }
    }

    /// A number in decimal.
    fn put_int(&mut self, n: impl itoa::Integer) {
        let mut buffer = itoa::Buffer::new();
        let digits = buffer.format(n).as_bytes();
        self.bytes[self.len..self.len + digits.len()].copy_from_slice(digits);
        self.len += digits.len();
    }

    /// An HTTP status: three digits, from the table.
    fn put_status(&mut self, status: u16) {
        if !(100..1000).contains(&status) {
            return self.put_int(status);
        }
        let status = usize::from(status);
        self.bytes[self.len] = b'0' + (status / 100) as u8;
        self.bytes[self.len + 1..self.len + 3].copy_from_slice(&PAIRS[status % 100]);
        self.len += 3;
    }

    /// The client address as `Display` writes it (IPv4 by table: `core::fmt` costs more than the rest of the line).
    fn put_client(&mut self, client: Option<IpAddr>) {
        match client {
            Some(IpAddr::V4(ip)) => {
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.put(b".");
                    }
                    // Three bytes go in whatever the octet's length; the next piece overwrites the padding.
                    let (digits, len) = OCTETS[usize::from(octet)];
                    self.bytes[self.len..self.len + 3].copy_from_slice(&digits);
                    self.len += len;
                }
            }
            Some(ip) => {
                let mut rest = &mut self.bytes[self.len..];
                let room = rest.len();
                // At most 45 bytes (`Ipv6Addr`'s longest form): always fits.
                let _ = write!(rest, "{ip}");
                self.len += room - rest.len();
            }
            None => self.put(b"-"),
        }
    }
}

/// `00` to `99`.
const PAIRS: [[u8; 2]; 100] = {
    let mut table = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        table[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    table
};

/// The id in the line's opening (a `Vec`: the opening is built there).
fn push_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a `&str` into memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Every octet's digits, padded to three bytes, and how many there are.
const OCTETS: [([u8; 3], usize); 256] = {
    let mut table = [([0u8; 3], 0usize); 256];
    let mut n = 0;
    while n < 256 {
        let (h, t, u) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = if n >= 100 {
            ([b'0' + h, b'0' + t, b'0' + u], 3)
        } else if n >= 10 {
            ([b'0' + t, b'0' + u, 0], 2)
        } else {
            ([b'0' + u, 0, 0], 1)
        };
        n += 1;
    }
    table
};

/// RFC 3339 UTC timestamps with microseconds; the date and time up to the second is formatted once per second.
/// The wall-clock time of a line is worked out from the monotonic instant the request already read, against a
/// reading of both clocks taken at most a second earlier: one clock read less per request, and never more than a
/// second's worth of clock adjustment behind. Times are kept as durations since the Unix epoch: cheaper to add
/// and split than `SystemTime`.
#[derive(Default)]
struct Clock {
    second: u64,
    /// `2026-11-23T14:03:33.000000Z` for `second` (none before the first line): each line copies it and fills in
    /// the microseconds.
    stamp: Option<[u8; STAMP_LEN]>,
    synced: Option<(Instant, Duration)>,
}

/// `2026-11-23T14:03:33.213112Z` (years 0 to 9999).
const STAMP_LEN: usize = 27;

impl Clock {
    /// The wall-clock time of `at`, as a duration since the Unix epoch.
    fn wall(&mut self, at: Instant) -> Duration {
        if let Some((instant, epoch)) = self.synced {
            match at.checked_duration_since(instant) {
                Some(after) if after < Duration::from_secs(1) => return epoch + after,
                _ => {}
            }
        }
        let (instant, epoch) = (Instant::now(), epoch_now());
        self.synced = Some((instant, epoch));
        match at.checked_duration_since(instant) {
            Some(after) => epoch + after,
            None => epoch.saturating_sub(instant - at),
        }
    }

    /// The timestamp of `since_epoch`.
    fn stamp(&mut self, since_epoch: Duration) -> [u8; STAMP_LEN] {
        let second = since_epoch.as_secs();
        let mut stamp = match self.stamp {
            Some(stamp) if second == self.second => stamp,
            _ => {
                // `2026-11-23T14:03:33Z`: keep all but the `Z`.
                let whole = humantime::format_rfc3339_seconds(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(second),
                )
                .to_string();
                let mut stamp = *b"0000-00-00T00:00:00.000000Z";
                stamp[..19].copy_from_slice(&whole.as_bytes()[..19]);
                self.second = second;
                self.stamp = Some(stamp);
                stamp
            }
        };
        let micros = since_epoch.subsec_micros() as usize;
        stamp[20..22].copy_from_slice(&PAIRS[micros / 10_000]);
        stamp[22..24].copy_from_slice(&PAIRS[micros / 100 % 100]);
        stamp[24..26].copy_from_slice(&PAIRS[micros % 100]);
        stamp
    }
}

fn epoch_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Duration {
        Duration::from_micros(1_795_442_613_213_112)
    }

    fn opening(format: LogFormat) -> Opening {
        Opening::new(
            format,
            42,
            "GET",
            "/v2/docker.io/library/alpine/manifests/3",
            "ns=a%22b",
        )
    }

    fn record(opening: &Opening) -> AccessRecord<'_> {
        AccessRecord {
            at: Instant::now(),
            opening,
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
        let opening = opening(LogFormat::Text);
        let mut clock = Clock::default();
        write_record(
            &mut out,
            &record(&opening),
            at(),
            LogFormat::Text,
            &mut clock,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-23T14:03:33.213112Z  INFO access: id=42 method=GET path=/v2/docker.io/library/alpine/manifests/3 query=ns=a%22b status=200 bytes=646 latency_us=1527 client=127.0.0.1 cache=hit\n"
        );
    }

    #[test]
    fn json_line_is_valid_json_with_the_fields() {
        let opening = opening(LogFormat::Json);
        let mut r = record(&opening);
        r.bytes = None;
        r.client = None;
        let mut out = Vec::new();
        write_record(&mut out, &r, at(), LogFormat::Json, &mut Clock::default());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-23T14:03:33.213112Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["id"], "42");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/v2/docker.io/library/alpine/manifests/3");
        assert_eq!(v["query"], "ns=a%22b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["client"], "-");
        assert!(v.get("bytes").is_none());
    }

    #[test]
    fn the_clock_reformats_when_the_second_changes() {
        let mut clock = Clock::default();
        let mut out = Vec::new();
        let t = Duration::from_secs(1_795_442_613);
        out.extend_from_slice(&clock.stamp(t));
        out.push(b' ');
        out.extend_from_slice(&clock.stamp(t + Duration::from_micros(1_500_007)));
        out.push(b' ');
        out.extend_from_slice(&clock.stamp(t + Duration::from_micros(1_999_999)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-23T14:03:33.000000Z 2026-11-23T14:03:34.500007Z 2026-11-23T14:03:34.999999Z"
        );
    }

    #[test]
    fn wall_time_follows_the_instant_and_resyncs() {
        let mut clock = Clock::default();
        let start = Instant::now();
        let before = epoch_now();
        let first = clock.wall(start);
        let later = clock.wall(start + Duration::from_millis(300));
        assert_eq!(later - first, Duration::from_millis(300));
        let slack = Duration::from_millis(50);
        assert!(first + slack >= before && first <= epoch_now() + slack);
        // An instant before the reading (another task's, formatted later) is placed before it.
        // (Both clocks are read again, so allow for the time between the two readings of each pair.)
        let earlier = clock.wall(start - Duration::from_millis(5));
        let gap = first.abs_diff(earlier);
        assert!(gap.abs_diff(Duration::from_millis(5)) < Duration::from_millis(2));
        // Past the second since the last reading, both clocks are read again.
        let synced = clock.synced.unwrap().0;
        clock.wall(start + Duration::from_secs(2));
        assert!(clock.synced.unwrap().0 > synced);
    }

    #[test]
    fn clients_are_written_as_display_writes_them() {
        for ip in [
            "127.0.0.1",
            "10.200.3.45",
            "0.0.0.0",
            "255.255.255.255",
            "1.22.100.9",
            "::1",
            "fd00::1:2",
        ] {
            let mut tail = Tail::new();
            tail.put_client(Some(ip.parse().unwrap()));
            assert_eq!(tail.as_bytes(), ip.as_bytes());
        }
        let mut tail = Tail::new();
        tail.put_client(None);
        assert_eq!(tail.as_bytes(), b"-");
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            1_000_000,
            u64::MAX,
        ] {
            let mut tail = Tail::new();
            tail.put(b"x");
            tail.put_int(n);
            tail.put(b"y");
            assert_eq!(tail.as_bytes(), format!("x{n}y").as_bytes());
        }
        for status in [0, 7, 99, 100, 200, 404, 999, 1000, u16::MAX] {
            let mut tail = Tail::new();
            tail.put_status(status);
            assert_eq!(tail.as_bytes(), status.to_string().as_bytes());
        }
    }

    #[test]
    fn the_longest_tail_fits() {
        let opening = opening(LogFormat::Json);
        let mut r = record(&opening);
        r.status = u16::MAX;
        r.bytes = Some(u64::MAX);
        r.latency_us = u64::MAX;
        r.client = Some(
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                .parse()
                .unwrap(),
        );
        r.cache = "miss";
        for tail_of in [write_tail::<TextWords>, write_tail::<JsonWords>] {
            let mut tail = Tail::new();
            tail_of(&mut tail, &r);
            assert!(tail.len + 16 < TAIL_ROOM, "{} bytes", tail.len);
        }
    }
}
