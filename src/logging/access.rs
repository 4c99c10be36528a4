//! The access log's own path: a request formats its line straight into a buffer of its own thread (an
//! uncontended lock: no queue, no allocation, nothing handed between cores per request; the whole line at once,
//! when the response head is ready, see [`write_line`]), and one thread takes the buffers and writes them to
//! stderr when one holds 512 KiB or 100 ms have passed. Formatting through `tracing-subscriber` on the request's
//! thread, and waking a writer thread per line, cost a fifth to a quarter of warm manifest throughput; a queue
//! of records formatted by that thread still cost a tenth; taking the buffers every 10 ms cost about a twentieth
//! where the server shared its core. The lines are the ones the `tracing` formatter would write (text or JSON).
//! Lines of different worker threads can reach the log up to 100 ms out of order (each carries its timestamp).
//! When a thread's buffer is full (the writer fell far behind) the line is dropped and counted.

use std::io::Write;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use quanta::Instant;

use thread_local::ThreadLocal;

use super::LogFormat;

/// Bytes of formatted lines a thread holds before new lines are dropped (about 10,000 lines).
const BUFFER_LIMIT: usize = 2 * 1024 * 1024;
/// How long lines may wait in a thread's buffer when they come slowly: the longest an access line is late.
const MAX_DELAY: Duration = Duration::from_millis(100);
/// A thread's buffer this full wakes the drain thread before [`MAX_DELAY`] is up, so a busy server hands its
/// lines over in large batches at a rate set by its traffic, not by a timer.
const HAND_OVER_BYTES: usize = 512 * 1024;

/// One request, as the access log reports it, formatted into a line at once when the response head is ready.
pub struct AccessRecord<'a> {
    /// When the response head was ready, by the request clock (the wall-clock time is worked out from it, see
    /// [`Clock`]).
    pub at: Instant,
    /// The request id, in decimal.
    pub id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub status: u16,
    pub bytes: Option<u64>,
    pub latency_us: u64,
    pub client: Option<IpAddr>,
    pub cache: &'static str,
}

/// A thread's formatted lines not yet handed to the writer.
struct Lines {
    out: Vec<u8>,
    clock: Clock,
    client: ClientText,
}

/// What a thread's buffer, and the drain thread's spare, hold from the start: a line more than the hand-over size
/// (a longer one grows it). Made this large at once, a buffer is a mapping of its own (glibc maps allocations past
/// 128 KiB) and never passes through the heap the request path allocates from: grown by doubling from empty, it
/// left freed chunks there that sent a warm manifest GET's small allocations down malloc's slower paths (a few
/// hundred instructions per request by callgrind). Pages are touched only as lines fill them.
const BUFFER_START: usize = HAND_OVER_BYTES + 64 * 1024;

impl Default for Lines {
    fn default() -> Self {
        Lines {
            out: Vec::with_capacity(BUFFER_START),
            clock: Clock::default(),
            client: ClientText::default(),
        }
    }
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
#[inline]
pub fn enabled() -> bool {
    match ENABLED.get() {
        Some(on) => *on,
        None => tracing::enabled!(target: "access", tracing::Level::INFO),
    }
}

/// Whether the access log's own path is running (the logger was installed with access lines on); when it is
/// not, callers log through `tracing`.
#[inline]
pub fn running() -> bool {
    DRAINER.get().is_some() && ACCESS_LOG.get().is_some()
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
    let Lines { out, clock, client } = &mut *lines;
    let before = out.len();
    let wall = clock.wall(record.at);
    client.set(record.client);
    write_record(out, record, wall, log.format, clock, client);
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
        writer: Mutex::new((Box::new(writer), Vec::with_capacity(BUFFER_START))),
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
    client: &ClientText,
) {
    let stamp = clock.stamp(at);
    match format {
        LogFormat::Text => write_line::<TextWords>(out, r, &stamp, client),
        LogFormat::Json => write_line::<JsonWords>(out, r, &stamp, client),
    }
}

/// The words around a line's fields, per format, and how its strings are written. One writer serves both
/// formats, compiled once for each, so every word is a constant (a few moves to copy).
trait LineWords {
    const START: &'static [u8];
    const ID: &'static [u8];
    const METHOD: &'static [u8];
    const PATH: &'static [u8];
    const QUERY: &'static [u8];
    const STATUS: &'static [u8];
    const BYTES: &'static [u8];
    const LATENCY: &'static [u8];
    const CLIENT: &'static [u8];
    const CACHE: &'static [u8];
    const END: &'static [u8];
    /// The most bytes a string field's byte is written as.
    const GROWTH: usize;
    /// Writes a string field (method, path, query).
    fn string(line: &mut LineWriter<'_>, s: &str);
}

/// `2026-11-23T14:03:33.213112Z  INFO access: id=42 method=GET path=/v2/… query= status=200 bytes=646
/// latency_us=1527 client=127.0.0.1 cache=hit`: the fields and order the `tracing` formatter writes.
struct TextWords;

impl LineWords for TextWords {
    const START: &'static [u8] = b"";
    const ID: &'static [u8] = b"  INFO access: id=";
    const METHOD: &'static [u8] = b" method=";
    const PATH: &'static [u8] = b" path=";
    const QUERY: &'static [u8] = b" query=";
    const STATUS: &'static [u8] = b" status=";
    const BYTES: &'static [u8] = b" bytes=";
    const LATENCY: &'static [u8] = b" latency_us=";
    const CLIENT: &'static [u8] = b" client=";
    const CACHE: &'static [u8] = b" cache=";
    const END: &'static [u8] = b"\n";
    const GROWTH: usize = 1;

    /// As it is (the `tracing` formatter's `Display` of a field).
    #[inline(always)]
    fn string(line: &mut LineWriter<'_>, s: &str) {
        line.put(s.as_bytes());
    }
}

/// The fields and names `tracing-subscriber`'s flattened JSON format uses for the same event.
struct JsonWords;

impl LineWords for JsonWords {
    const START: &'static [u8] = b"{\"timestamp\":\"";
    const ID: &'static [u8] = b"\",\"level\":\"INFO\",\"id\":\"";
    const METHOD: &'static [u8] = b"\",\"method\":";
    const PATH: &'static [u8] = b",\"path\":";
    const QUERY: &'static [u8] = b",\"query\":";
    const STATUS: &'static [u8] = b",\"status\":";
    const BYTES: &'static [u8] = b",\"bytes\":";
    const LATENCY: &'static [u8] = b",\"latency_us\":";
    const CLIENT: &'static [u8] = b",\"client\":\"";
    const CACHE: &'static [u8] = b"\",\"cache\":\"";
    const END: &'static [u8] = b"\",\"target\":\"access\"}\n";
    /// `\u001f`.
    const GROWTH: usize = 6;

    /// A JSON string literal, escaped as `serde_json` escapes: quotes, backslashes and control characters.
    fn string(line: &mut LineWriter<'_>, s: &str) {
        line.put(b"\"");
        let mut rest = s.as_bytes();
        while let Some(at) = rest
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        {
            line.put(&rest[..at]);
            match rest[at] {
                b'"' => line.put(b"\\\""),
                b'\\' => line.put(b"\\\\"),
                b'\n' => line.put(b"\\n"),
                b'\r' => line.put(b"\\r"),
                b'\t' => line.put(b"\\t"),
                0x08 => line.put(b"\\b"),
                0x0c => line.put(b"\\f"),
                b => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    line.put(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]);
                }
            }
            rest = &rest[at + 1..];
        }
        line.put(rest);
        line.put(b"\"");
    }
}

/// Room for a line's fixed parts: the longest (JSON, both numbers at 20 digits, a 39-byte IPv6 client, empty
/// strings in their quotes) takes 262 bytes; an IPv4 client's padding (see `LineWriter::put_client`) at most 15
/// more, past the end of the text it shares the room with. The id comes on top, and the strings, at most
/// [`LineWords::GROWTH`] bytes for each of theirs.
const LINE_ROOM: usize = 320;

/// Formats a line after `out`'s end: room for its longest form is reserved once, and each part is copied
/// straight into it (a bounds check and a copy; no field has a capacity check, a call or a buffer of its own).
fn write_line<W: LineWords>(
    out: &mut Vec<u8>,
    r: &AccessRecord<'_>,
    stamp: &[u8; STAMP_LEN],
    client: &ClientText,
) {
    let room = LINE_ROOM + r.id.len() + W::GROWTH * (r.method.len() + r.path.len() + r.query.len());
    append(out, room, |line| {
        line.put(W::START);
        line.put(stamp);
        line.put(W::ID);
        line.put(r.id.as_bytes());
        line.put(W::METHOD);
        W::string(line, r.method);
        line.put(W::PATH);
        W::string(line, r.path);
        line.put(W::QUERY);
        W::string(line, r.query);
        line.put(W::STATUS);
        line.put_status(r.status);
        if let Some(bytes) = r.bytes {
            line.put(W::BYTES);
            line.put_int(bytes);
        }
        line.put(W::LATENCY);
        line.put_int(r.latency_us);
        line.put(W::CLIENT);
        line.put_client(client);
        line.put(W::CACHE);
        line.put(r.cache.as_bytes());
        line.put(W::END);
    });
}

/// Appends to `out` what `write` writes, at most `room` bytes, straight into `out`'s spare capacity.
#[inline(always)]
fn append(out: &mut Vec<u8>, room: usize, write: impl FnOnce(&mut LineWriter<'_>)) {
    out.reserve(room);
    let mut line = LineWriter {
        spare: &mut out.spare_capacity_mut()[..room],
        len: 0,
    };
    write(&mut line);
    let written = line.len;
    // SAFETY: `LineWriter` initialised the first `written` bytes of the spare capacity (it writes only through
    // bounds-checked slices of it, from its start, and counts what it wrote), so they are now part of the `Vec`.
    unsafe { out.set_len(out.len() + written) };
}

/// A line being written into a buffer's spare capacity, from its start.
struct LineWriter<'a> {
    spare: &'a mut [MaybeUninit<u8>],
    len: usize,
}

impl LineWriter<'_> {
    /// Bytes at the end of what is written: a literal's length is known where this is inlined, so the copy is a
    /// few moves. Past the reserved room it panics (a test writes the longest lines), never writes out of bounds.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and an initialised byte is a valid `MaybeUninit`.
        let bytes = unsafe { &*(bytes as *const [u8] as *const [MaybeUninit<u8>]) };
        self.spare[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// A number in decimal.
    fn put_int(&mut self, n: impl itoa::Integer) {
        self.put(itoa::Buffer::new().format(n).as_bytes());
    }

    /// An HTTP status: three digits, from the table.
    fn put_status(&mut self, status: u16) {
        if !(100..1000).contains(&status) {
            return self.put_int(status);
        }
        let status = usize::from(status);
        let pair = PAIRS[status % 100];
        self.put(&[b'0' + (status / 100) as u8, pair[0], pair[1]]);
    }

    /// The client's address. An IPv4 address goes in as a fixed-size move of [`SHORT_CLIENT`] bytes (not a call),
    /// the part past its length overwritten by the next part.
    fn put_client(&mut self, client: &ClientText) {
        if client.len <= SHORT_CLIENT {
            self.put(&client.text[..SHORT_CLIENT]);
            self.len -= SHORT_CLIENT - client.len;
        } else {
            self.put(&client.text[..client.len]);
        }
    }
}

/// The longest IPv4 address, `255.255.255.255`, and one byte.
const SHORT_CLIENT: usize = 16;

/// The text of the client address a thread's last line named, as `Display` writes it (`-` for none): clients keep
/// their connections open, so most lines repeat the one before (formatting an address cost a tenth of a line).
struct ClientText {
    ip: Option<IpAddr>,
    /// At most 39 bytes (`Ipv6Addr`'s longest `Display`).
    text: [u8; 48],
    len: usize,
}

impl Default for ClientText {
    fn default() -> Self {
        let mut text = [0; 48];
        text[0] = b'-';
        ClientText {
            ip: None,
            text,
            len: 1,
        }
    }
}

impl ClientText {
    /// Makes this the text of `ip`.
    fn set(&mut self, ip: Option<IpAddr>) {
        if ip == self.ip {
            return;
        }
        let Some(addr) = ip else {
            *self = ClientText::default();
            return;
        };
        let mut text = [0; 48];
        let mut rest = &mut text[..];
        // Always fits.
        let _ = write!(rest, "{addr}");
        let len = 48 - rest.len();
        *self = ClientText { ip, text, len };
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

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            at: Instant::now(),
            id: "42",
            method: "GET",
            path: "/v2/docker.io/library/alpine/manifests/3",
            query: "ns=a%22b",
            status: 200,
            bytes: Some(646),
            latency_us: 1527,
            client: Some("127.0.0.1".parse().unwrap()),
            cache: "hit",
        }
    }

    fn written(write: impl FnOnce(&mut LineWriter<'_>)) -> Vec<u8> {
        let mut out = b"before".to_vec();
        append(&mut out, LINE_ROOM, write);
        assert_eq!(&out[..6], b"before");
        out.split_off(6)
    }

    fn line(r: &AccessRecord<'_>, format: LogFormat) -> String {
        let mut out = Vec::new();
        let mut client = ClientText::default();
        client.set(r.client);
        write_record(&mut out, r, at(), format, &mut Clock::default(), &client);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_line_matches_the_tracing_format() {
        assert_eq!(
            line(&record(), LogFormat::Text),
            "2026-11-23T14:03:33.213112Z  INFO access: id=42 method=GET path=/v2/docker.io/library/alpine/manifests/3 query=ns=a%22b status=200 bytes=646 latency_us=1527 client=127.0.0.1 cache=hit\n"
        );
    }

    #[test]
    fn json_line_is_valid_json_with_the_fields() {
        let mut r = record();
        r.bytes = None;
        r.client = None;
        let v: serde_json::Value = serde_json::from_str(&line(&r, LogFormat::Json)).unwrap();
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
        // One thread's text, changing and repeating, as a thread's lines would.
        let mut client = ClientText::default();
        for ip in [
            "127.0.0.1",
            "127.0.0.1",
            "10.200.3.45",
            "0.0.0.0",
            "255.255.255.255",
            "1.22.100.9",
            "::1",
            "fd00::1:2",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::ffff:255.255.255.255",
            "1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            client.set(Some(ip));
            let written = written(|line| {
                line.put_client(&client);
                line.put(b" next");
            });
            assert_eq!(written, format!("{ip} next").as_bytes());
        }
        client.set(None);
        assert_eq!(written(|line| line.put_client(&client)), b"-");
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
            let written = written(|line| {
                line.put(b"x");
                line.put_int(n);
                line.put(b"y");
            });
            assert_eq!(written, format!("x{n}y").as_bytes());
        }
        for status in [0, 7, 99, 100, 200, 404, 999, 1000, u16::MAX] {
            let written = written(|line| line.put_status(status));
            assert_eq!(written, status.to_string().as_bytes());
        }
    }

    /// Every length of method, path and query, every client kind and the largest numbers: each line is the one
    /// `format!` writes (text) or parses back to its fields (JSON), so no piece overflows or drops a byte.
    #[test]
    fn lines_of_any_field_lengths_are_whole() {
        let max_id = u64::MAX.to_string();
        let strings = |s: &str| -> Vec<String> {
            [0, 1, 3, 47, 48, 49, 100, 200, 400, 5000]
                .iter()
                .map(|&n| s.repeat(n))
                .collect()
        };
        let clients: [Option<IpAddr>; 3] = [
            None,
            Some("255.255.255.255".parse().unwrap()),
            Some(
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
                    .parse()
                    .unwrap(),
            ),
        ];
        for method in strings("M") {
            for path in strings("p\\é") {
                for query in strings("\"\n\u{1}\u{1f}\t") {
                    for client in clients {
                        let r = AccessRecord {
                            at: Instant::now(),
                            id: &max_id,
                            method: &method,
                            path: &path,
                            query: &query,
                            status: u16::MAX,
                            bytes: Some(u64::MAX),
                            latency_us: u64::MAX,
                            client,
                            cache: "miss",
                        };
                        let client = client.map_or("-".to_string(), |ip| ip.to_string());
                        assert_eq!(
                            line(&r, LogFormat::Text),
                            format!(
                                "2026-11-23T14:03:33.213112Z  INFO access: id={} method={method} path={path} query={query} status={} bytes={} latency_us={} client={client} cache=miss\n",
                                u64::MAX, u16::MAX, u64::MAX, u64::MAX
                            )
                        );
                        let json = line(&r, LogFormat::Json);
                        // Escaped byte for byte as `serde_json` escapes.
                        for (name, value) in
                            [("method", &method), ("path", &path), ("query", &query)]
                        {
                            let field =
                                format!("\"{name}\":{}", serde_json::to_string(value).unwrap());
                            assert!(json.contains(&field), "{field}");
                        }
                        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                        assert_eq!(v["method"], method.as_str());
                        assert_eq!(v["path"], path.as_str());
                        assert_eq!(v["query"], query.as_str());
                        assert_eq!(v["client"], client.as_str());
                        assert_eq!(v["latency_us"], u64::MAX);
                        assert_eq!(v["id"], u64::MAX.to_string());
                    }
                }
            }
        }
    }
}
