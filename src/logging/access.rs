//! The access log's own path: a request formats its line straight into a ring buffer of its own thread (no lock,
//! no locked instruction, no allocation, nothing handed between cores per request; the whole line at once, when
//! the response head is ready, see [`write_line`]), and one thread empties the rings to stderr when one holds
//! 512 KiB or 100 ms have passed. Formatting through `tracing-subscriber` on the request's thread, and waking a
//! writer thread per line, cost a fifth to a quarter of warm manifest throughput; a queue of records formatted by
//! that thread still cost a tenth; taking the buffers every 10 ms cost about a twentieth where the server shared
//! its core. A buffer behind a per-thread lock cost the request the time its line's stores took to reach memory:
//! releasing the lock waited for them (see `docs/benchmarks.md`). The lines are the ones the `tracing` formatter
//! would write (text or JSON). Lines of different worker threads can reach the log up to 100 ms out of order
//! (each carries its timestamp). When a thread's ring is full (the writer fell far behind) the line is dropped
//! and counted.

use std::cell::RefCell;
use std::io::Write;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use quanta::Instant;

use super::LogFormat;

/// Bytes of formatted lines a thread's ring holds: past this, new lines are dropped (about 8,000 text lines). Each
/// worker thread that logs keeps its ring for its life (written round, all of it is soon resident).
const RING_BYTES: usize = 2 * 1024 * 1024;
/// How long lines may wait in a thread's ring when they come slowly: the longest an access line is late (but
/// see [`IDLE_WAKE`]).
const MAX_DELAY: Duration = Duration::from_millis(100);
/// How often the drain thread looks at the rings when it found none with lines (an idle server). A request
/// wakes it at once, except in one race: a line written just as the drain thread went idle waits for this.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// This many bytes written by a thread since it last woke the drain thread wake it before [`MAX_DELAY`] is up,
/// so a busy server hands its lines over in large batches at a rate set by its traffic, not by a timer.
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

/// A worker thread's side of the access log: the write end of its ring, and what its lines repeat.
struct ThreadLines {
    ring: rtrb::Producer<u8>,
    clock: Clock,
    client: ClientText,
    /// A line that would wrap round the ring's end is formatted here first.
    scratch: Vec<u8>,
    /// Bytes written since this thread last woke the drain thread.
    unannounced: usize,
}

thread_local! {
    static THREAD_LINES: RefCell<Option<ThreadLines>> = const { RefCell::new(None) };
}

struct AccessLog {
    format: LogFormat,
    /// Where the lines go (stderr), and the read ends of the threads' rings: only the thread that holds this lock
    /// reads the rings (the drain thread, or the exit path).
    drain: Mutex<Drain>,
    /// Read ends of rings made since the last hand-over: a new thread never waits for the writer.
    joining: Mutex<Vec<rtrb::Consumer<u8>>>,
    /// The drain thread found no lines and sleeps until a request wakes it (or [`IDLE_WAKE`]).
    idle: AtomicBool,
}

struct Drain {
    out: Box<dyn Write + Send>,
    rings: Vec<rtrb::Consumer<u8>>,
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

/// Formats `record` into this thread's ring, or drops and counts it when the ring is full.
pub fn submit(record: &AccessRecord<'_>) {
    let Some(log) = ACCESS_LOG.get() else {
        return;
    };
    // A thread being torn down has no ring left: its line is dropped, and counted.
    let written = THREAD_LINES.try_with(|lines| {
        let mut lines = lines.borrow_mut();
        let lines = lines.get_or_insert_with(|| log.join());
        let written = lines.write(record, log.format);
        lines.unannounced += written;
        let full = lines.unannounced >= HAND_OVER_BYTES;
        if full {
            lines.unannounced = 0;
        }
        (written, full)
    });
    match written {
        Ok((0, _)) | Err(_) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok((_, true)) => log.wake(),
        Ok((_, false)) => log.wake_if_idle(),
    }
}

impl ThreadLines {
    fn new(ring: rtrb::Producer<u8>) -> ThreadLines {
        ThreadLines {
            ring,
            clock: Clock::default(),
            client: ClientText::default(),
            scratch: Vec::new(),
            unannounced: 0,
        }
    }

    /// Writes `r`'s line into the ring: the bytes written, 0 when the ring has no room for it.
    fn write(&mut self, r: &AccessRecord<'_>, format: LogFormat) -> usize {
        let room = line_room(r, format);
        let Ok(mut chunk) = self.ring.write_chunk_uninit(room) else {
            return 0;
        };
        let wall = self.clock.wall(r.at);
        self.client.set(r.client);
        let stamp = self.clock.stamp(wall);
        let (first, second) = chunk.as_mut_slices();
        let written = if first.len() >= room {
            let mut line = LineWriter {
                spare: first,
                len: 0,
            };
            write_line(&mut line, r, &stamp, format, &self.client);
            line.len
        } else {
            // Round the ring's end (one line in thousands): formatted aside, then copied in two parts.
            self.scratch.clear();
            write_record(&mut self.scratch, r, &stamp, format, &self.client);
            let (head, tail) = self.scratch.split_at(first.len().min(self.scratch.len()));
            LineWriter {
                spare: first,
                len: 0,
            }
            .put(head);
            LineWriter {
                spare: second,
                len: 0,
            }
            .put(tail);
            self.scratch.len()
        };
        // SAFETY: the first `written` bytes of the chunk (of its first part, then its second) were written above
        // by `LineWriter`s, which write only from their slice's start and count what they wrote: the whole line,
        // or the scratch line's two parts.
        unsafe { chunk.commit(written) };
        written
    }
}

/// The most bytes `r`'s line can take.
fn line_room(r: &AccessRecord<'_>, format: LogFormat) -> usize {
    let growth = match format {
        LogFormat::Text => TextWords::GROWTH,
        LogFormat::Json => JsonWords::GROWTH,
    };
    LINE_ROOM + r.id.len() + growth * (r.method.len() + r.path.len() + r.query.len())
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
        drain: Mutex::new(Drain {
            out: Box::new(writer),
            rings: Vec::new(),
        }),
        joining: Mutex::new(Vec::new()),
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
            // Woken by a request only when its thread wrote another 512 KiB (a futex call and a context switch
            // per request would cost more than formatting the line), otherwise after MAX_DELAY: each wake-up
            // costs the core a switch and its caches, so fewer and larger batches are cheaper. An early wake-up
            // (a request's wake meant for an earlier round) only hands over a smaller batch.
            std::thread::park_timeout(MAX_DELAY);
            if log.hand_over() {
                continue;
            }
            // A quiet interval: sleep until a request brings a line, so an idle server does not wake ten times a
            // second. Marked idle before the last look: a request that finds the mark unparks (the token of an
            // unpark that comes before the park is kept). A request's line and its look at the mark are not
            // ordered by a fence (that would cost every request what the ring saves), so a line written in that
            // instant is found at the next IDLE_WAKE.
            log.idle.store(true, Ordering::SeqCst);
            while !log.hand_over() {
                std::thread::park_timeout(IDLE_WAKE);
            }
            log.idle.store(false, Ordering::SeqCst);
        })?;
    let _ = DRAINER.set(drainer.thread().clone());
    Ok(())
}

impl AccessLog {
    /// A new ring for the calling thread: its read end joins the drain's.
    fn join(&self) -> ThreadLines {
        let (ring, reader) = rtrb::RingBuffer::new(RING_BYTES);
        lock(&self.joining).push(reader);
        ThreadLines::new(ring)
    }

    /// Writes out what each thread's ring holds (taking, from each, what it held when looked at); whether there
    /// were any lines. Rings of threads that ended are dropped once empty.
    fn hand_over(&self) -> bool {
        let mut drain = lock(&self.drain);
        let Drain { out, rings } = &mut *drain;
        rings.append(&mut lock(&self.joining));
        let mut any = false;
        rings.retain_mut(|ring| {
            let held = ring.slots();
            if held > 0 {
                any = true;
                if let Ok(chunk) = ring.read_chunk(held) {
                    let (first, second) = chunk.as_slices();
                    // This thread may wait for stderr; requests never do (a full ring drops their line).
                    let _ = out.write_all(first).and_then(|()| out.write_all(second));
                    chunk.commit_all();
                }
            }
            !(ring.is_abandoned() && ring.is_empty())
        });
        any
    }

    /// Wakes the drain thread now: a thread wrote enough to hand over.
    fn wake(&self) {
        if let Some(drainer) = DRAINER.get() {
            drainer.unpark();
        }
    }

    /// Wakes the drain thread if it went to sleep for want of lines.
    #[inline]
    fn wake_if_idle(&self) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::SeqCst) {
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

/// Appends `r`'s line to `out` (the line that wraps round a ring, and tests).
fn write_record(
    out: &mut Vec<u8>,
    r: &AccessRecord<'_>,
    stamp: &[u8; STAMP_LEN],
    format: LogFormat,
    client: &ClientText,
) {
    append(out, line_room(r, format), |line| {
        write_line(line, r, stamp, format, client)
    });
}

/// Writes `r`'s line in `format`.
fn write_line(
    line: &mut LineWriter<'_>,
    r: &AccessRecord<'_>,
    stamp: &[u8; STAMP_LEN],
    format: LogFormat,
    client: &ClientText,
) {
    match format {
        LogFormat::Text => write_words::<TextWords>(line, r, stamp, client),
        LogFormat::Json => write_words::<JsonWords>(line, r, stamp, client),
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
    /// Writes a string field that is mostly short (method, query).
    fn short_string(line: &mut LineWriter<'_>, s: &str) {
        Self::string(line, s);
    }
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

    #[inline(always)]
    fn short_string(line: &mut LineWriter<'_>, s: &str) {
        line.put_short(s.as_bytes());
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

/// Writes a line into `line`, whose room is enough for its longest form: each part is copied straight into it (a
/// bounds check and a copy; no field has a capacity check, a call or a buffer of its own).
#[inline(always)]
fn write_words<W: LineWords>(
    line: &mut LineWriter<'_>,
    r: &AccessRecord<'_>,
    stamp: &[u8; STAMP_LEN],
    client: &ClientText,
) {
    line.put(W::START);
    line.put(stamp);
    line.put(W::ID);
    line.put_short(r.id.as_bytes());
    line.put(W::METHOD);
    W::short_string(line, r.method);
    line.put(W::PATH);
    W::string(line, r.path);
    line.put(W::QUERY);
    W::short_string(line, r.query);
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
    line.put_short(r.cache.as_bytes());
    line.put(W::END);
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

    /// Bytes that are mostly few (an id, a method, an empty query, `hit`): up to 8 of them go in as one move of
    /// their length, chosen by a jump, not a call to `memcpy` (about a third of the cost of a line's short parts).
    #[inline(always)]
    fn put_short(&mut self, bytes: &[u8]) {
        /// A move of `N` bytes, `N` known where it is inlined.
        #[inline(always)]
        fn fixed<const N: usize>(line: &mut LineWriter<'_>, bytes: &[u8]) {
            if let Some(bytes) = bytes.first_chunk::<N>() {
                line.put(bytes);
            }
        }
        match bytes.len() {
            0 => {}
            1 => fixed::<1>(self, bytes),
            2 => fixed::<2>(self, bytes),
            3 => fixed::<3>(self, bytes),
            4 => fixed::<4>(self, bytes),
            5 => fixed::<5>(self, bytes),
            6 => fixed::<6>(self, bytes),
            7 => fixed::<7>(self, bytes),
            8 => fixed::<8>(self, bytes),
            _ => self.put(bytes),
        }
    }

    /// A number in decimal.
    #[inline(always)]
    fn put_int(&mut self, n: impl itoa::Integer) {
        self.put_short(itoa::Buffer::new().format(n).as_bytes());
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
        let stamp = Clock::default().stamp(at());
        write_record(&mut out, r, &stamp, format, &client);
        String::from_utf8(out).unwrap()
    }

    /// Lines written round a small ring, read as the drain thread reads: every line whole, in order; a ring with
    /// no room for a line's longest form takes no more.
    #[test]
    fn lines_round_the_ring_are_whole_and_a_full_ring_drops() {
        let expected = line(&record(), LogFormat::Text);
        let (ring, mut reader) = rtrb::RingBuffer::new(4096);
        let mut lines = ThreadLines::new(ring);
        let mut out = Vec::new();
        for _ in 0..100 {
            for _ in 0..7 {
                assert_eq!(lines.write(&record(), LogFormat::Text), expected.len());
            }
            let chunk = reader.read_chunk(reader.slots()).unwrap();
            let (first, second) = chunk.as_slices();
            out.extend_from_slice(first);
            out.extend_from_slice(second);
            chunk.commit_all();
        }
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.lines().count(), 700);
        for written in out.lines() {
            // The timestamp is the clock's; the rest is the record's.
            assert_eq!(written[27..], expected[27..expected.len() - 1]);
        }
        let mut taken = 0;
        while lines.write(&record(), LogFormat::Text) > 0 {
            taken += 1;
        }
        let room = line_room(&record(), LogFormat::Text);
        assert_eq!(taken, (4096 - room) / expected.len() + 1);
        assert_eq!(reader.slots(), taken * expected.len());
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

    #[test]
    fn short_bytes_of_every_length_are_whole() {
        let text = b"0123456789abcdef";
        for len in 0..=text.len() {
            let written = written(|line| {
                line.put(b"<");
                line.put_short(&text[..len]);
                line.put(b">");
            });
            assert_eq!(written, [b"<", &text[..len], b">"].concat());
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
