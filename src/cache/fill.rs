//! One in-flight download of an uncached blob, shared by every client that asks for it meanwhile.
//!
//! A spawned task streams the upstream body through a writer thread (temp file + hash); readers follow the
//! file as it grows ("read-along"), so the first byte reaches clients as soon as it arrives, and N concurrent
//! readers cost one upstream GET. The task keeps going if its clients leave, so the cache still fills.
//!
//! Readers never send the blob's last byte before the whole blob was verified against its digest: if the
//! upstream's bytes are wrong, every reader's body is cut short and no client ever holds a complete bad blob.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::store::{BlobWriter, CommitError};
use crate::upstream::BlobStream;

/// Largest chunk a read-along reader sends at once.
const READ_CHUNK: u64 = 256 * 1024;
/// After its first chunk, a reader waits until this much is available (or the blob is complete): one read and
/// one socket write per network chunk (often 16 KiB) would cost more CPU than the bytes themselves.
const MIN_BATCH: u64 = 64 * 1024;
/// Chunks buffered between the network task and the writer thread (backpressure beyond that).
const WRITE_QUEUE: usize = 64;

/// Progress of a fill, as readers see it.
#[derive(Clone, Debug)]
pub enum FillState {
    /// Waiting for the upstream's answer.
    Connecting,
    /// Bytes `0..written` are in the temp file; `size` is the upstream's Content-Length, if stated.
    Streaming {
        size: Option<u64>,
        written: u64,
    },
    /// All bytes are written and match the digest (they may still be being fsynced and renamed).
    Verified {
        size: u64,
    },
    Failed(RegistryError),
}

/// An in-flight blob download.
pub struct BlobFill {
    pub digest: Digest,
    temp_path: PathBuf,
    final_path: PathBuf,
    state: watch::Sender<FillState>,
    /// How long a reader waits for the upstream's answer before giving up on this fill.
    start_deadline: Duration,
    /// Set when the fill gave up because the blob would not fit on disk: readers then fetch it uncached.
    no_space: std::sync::atomic::AtomicBool,
}

impl BlobFill {
    pub fn new(
        digest: Digest,
        writer: &BlobWriter,
        final_path: PathBuf,
        start_deadline: Duration,
    ) -> BlobFill {
        BlobFill {
            digest,
            temp_path: writer.temp_path().to_path_buf(),
            final_path,
            state: watch::Sender::new(FillState::Connecting),
            start_deadline,
            no_space: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<FillState> {
        self.state.subscribe()
    }

    pub fn set_state(&self, state: FillState) {
        self.state.send_replace(state);
    }

    /// Waits until the upstream has answered (at most the fill's start deadline); returns the blob size if
    /// known.
    pub async fn wait_started(&self) -> Result<Option<u64>, RegistryError> {
        let mut rx = self.subscribe();
        let wait = async {
            loop {
                match &*rx.borrow_and_update() {
                    FillState::Connecting => {}
                    FillState::Streaming { size, .. } => return Ok(*size),
                    FillState::Verified { size } => return Ok(Some(*size)),
                    FillState::Failed(err) => return Err(err.clone()),
                }
                if rx.changed().await.is_err() {
                    return Err(RegistryError::UpstreamUnavailable(
                        "blob download was abandoned".into(),
                    ));
                }
            }
        };
        tokio::time::timeout(self.start_deadline, wait)
            .await
            .unwrap_or_else(|_| {
                Err(RegistryError::UpstreamUnavailable(format!(
                    "the upstream did not start sending {} within {:?}",
                    self.digest, self.start_deadline
                )))
            })
    }

    /// Gives up on the fill because the blob does not fit on disk.
    pub fn fail_no_space(&self, why: String) {
        self.no_space
            .store(true, std::sync::atomic::Ordering::Release);
        self.set_state(FillState::Failed(RegistryError::internal("no space", why)));
    }

    /// Whether the fill gave up for lack of space.
    pub fn is_no_space(&self) -> bool {
        self.no_space.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The failure of this fill, if it has failed already.
    pub fn failure(&self) -> Option<RegistryError> {
        match &*self.state.borrow() {
            FillState::Failed(err) => Some(err.clone()),
            _ => None,
        }
    }

    /// Streams bytes `start..=end` (end `None`: to the end of the blob) as they become available.
    pub fn reader(
        self: Arc<Self>,
        start: u64,
        end: Option<u64>,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let reader = Reader {
            rx: self.subscribe(),
            fill: self,
            file: None,
            pos: start,
            end,
            started: false,
        };
        futures::stream::unfold(reader, |mut reader| async move {
            match reader.next_chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), reader)),
                Ok(None) => None,
                Err(err) => {
                    // Ending the stream with an error makes the server abort the response.
                    reader.pos = u64::MAX;
                    reader.end = Some(0);
                    Some((Err(err), reader))
                }
            }
        })
    }

    /// Streams the upstream body into `writer`, publishing progress, and verifies it. Returns the size after
    /// the blob was fsynced and renamed into place. The download must keep up an average of `min_rate` bytes
    /// per second after a grace of `grace` (so a blob of N bytes gets `grace + N / min_rate` in all): a
    /// trickling upstream cannot hold a fill, and every reader waiting on it, for ever.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        self: &Arc<Self>,
        upstream: BlobStream,
        writer: BlobWriter,
        writers: &FillWriters,
        grace: Duration,
        min_rate: u64,
        on_verified: impl FnOnce(u64) -> std::io::Result<()> + Send + 'static,
    ) -> Result<u64, RegistryError> {
        let BlobStream { size, mut body } = upstream;
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let fill = self.clone();
        let writer_task = writers
            .spawn(move || {
                let mut writer = writer;
                while let Some(chunk) = rx.blocking_recv() {
                    writer.write(&chunk)?;
                    let written = writer.written();
                    fill.state.send_modify(|state| {
                        if let FillState::Streaming { written: w, .. } = state {
                            *w = written;
                        }
                    });
                }
                let verified = writer.verify(size)?;
                let size = verified.size();
                fill.set_state(FillState::Verified { size });
                // Indexed before it becomes visible: a crash in between leaves an index record without a file
                // (harmless: the file is what is served, and a later fill rewrites both), never a file that nothing
                // indexes.
                on_verified(size)?;
                verified.persist()?;
                Ok::<u64, CommitError>(size)
            })
            .await?;
        self.set_state(FillState::Streaming { size, written: 0 });
        let started = tokio::time::Instant::now();
        let mut received: u64 = 0;
        let mut network_error = None;
        loop {
            let allowed = grace.saturating_add(Duration::from_secs(received / min_rate.max(1)));
            let next = match tokio::time::timeout_at(started + allowed, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    network_error = Some(RegistryError::UpstreamUnavailable(format!(
                        "blob {} arrives slower than {min_rate} bytes/s on average ({received} bytes in {:?})",
                        self.digest,
                        started.elapsed()
                    )));
                    break;
                }
            };
            match next {
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    if size.is_some_and(|size| received > size) {
                        network_error = Some(RegistryError::UpstreamDigestMismatch(format!(
                            "upstream sent more than the {} bytes it announced for {}",
                            size.unwrap_or_default(),
                            self.digest
                        )));
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                None => break,
                Some(Err(err)) => {
                    network_error = Some(err);
                    break;
                }
            }
        }
        // Closing the queue lets the writer thread verify what it has; after a network error that check fails
        // and removes the partial file. It is awaited either way, so nothing of this fill is still writing or
        // renaming once it has reported its outcome.
        drop(tx);
        if let Some(err) = network_error {
            let _ = writer_task.await;
            return Err(err);
        }
        let result = writer_task.await.map_err(|_| {
            RegistryError::internal("blob writer", "the writer thread ended without a result")
        })?;
        result.map_err(|err| match err {
            CommitError::DigestMismatch { .. } | CommitError::SizeMismatch { .. } => {
                RegistryError::UpstreamDigestMismatch(format!("upstream sent a bad blob: {err}"))
            }
            CommitError::Io(e) => RegistryError::internal("storing blob", e),
        })
    }
}

/// The threads fills write on: one per fill, bounded, and apart from the runtime's blocking pool, which the
/// index uses. A download holds its writer for as long as it lasts; sharing the pool would let a few hundred
/// slow downloads stall every index read.
pub struct FillWriters {
    slots: Arc<tokio::sync::Semaphore>,
}

impl FillWriters {
    /// At most `max` fills write at once; more wait for a slot (and their readers with them).
    pub fn new(max: usize) -> FillWriters {
        FillWriters {
            slots: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
        }
    }

    /// Runs `work` on a writer thread of its own once a slot is free; its result comes on the receiver.
    pub async fn spawn<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, RegistryError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| RegistryError::internal("blob writer slot", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ociregistry-fill".into())
            .spawn(move || {
                let out = work();
                drop(slot);
                let _ = tx.send(out);
            })
            .map_err(|e| RegistryError::internal("blob writer thread", e))?;
        Ok(rx)
    }
}

/// A read-along reader's position.
struct Reader {
    fill: Arc<BlobFill>,
    rx: watch::Receiver<FillState>,
    file: Option<std::fs::File>,
    pos: u64,
    /// Last byte wanted (inclusive); `None` until the size is known.
    end: Option<u64>,
    /// Whether a chunk was sent yet (the first goes out at once, for time-to-first-byte).
    started: bool,
}

impl Reader {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let (readable, complete_size) = match &*self.rx.borrow_and_update() {
                FillState::Connecting => (0, None),
                // Hold back the final byte until the blob is verified.
                // Without a stated size the last byte is unknown until the stream ends: hold back the last
                // byte written so far, which is the final one once the upstream is done.
                FillState::Streaming { size, written } => match size {
                    Some(size) => ((*written).min(size.saturating_sub(1)), None),
                    None => ((*written).saturating_sub(1), None),
                },
                FillState::Verified { size } => (*size, Some(*size)),
                FillState::Failed(err) => return Err(io::Error::other(err.to_string())),
            };
            if let Some(size) = complete_size {
                let last = size.checked_sub(1);
                self.end = Some(match (self.end, last) {
                    (Some(end), Some(last)) => end.min(last),
                    (_, Some(last)) => last,
                    (_, None) => return Ok(None),
                });
            }
            let limit = match self.end {
                Some(end) if self.pos > end => return Ok(None),
                Some(end) => readable.min(end + 1),
                None => readable,
            };
            let available = limit.saturating_sub(self.pos);
            let wanted_all = self.end.is_some_and(|end| limit > end);
            let worth_reading =
                !self.started || complete_size.is_some() || wanted_all || available >= MIN_BATCH;
            if available > 0 && worth_reading {
                self.started = true;
                let len = available.min(READ_CHUNK) as usize;
                let bytes = self.read(self.pos, len).await?;
                self.pos += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            if self.rx.changed().await.is_err() {
                // The fill task is gone without a verdict (e.g. shutdown).
                return Err(io::Error::other("blob download was abandoned"));
            }
        }
    }

    /// Reads from the file being filled. The bytes were written moments ago and are in the page cache, so the
    /// `pread` runs inline: a hop to the blocking pool per chunk would cost more than the read.
    async fn read(&mut self, offset: u64, len: usize) -> io::Result<Bytes> {
        if self.file.is_none() {
            // The temp file is renamed once verified; follow it to its final name.
            let file = std::fs::File::open(&self.fill.temp_path)
                .or_else(|_| std::fs::File::open(&self.fill.final_path))?;
            self.file = Some(file);
        }
        let file = self.file.as_ref().expect("opened above");
        let mut buf = BytesMut::zeroed(len);
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob file is shorter than announced",
            ));
        }
        buf.truncate(n);
        Ok(buf.freeze())
    }
}
