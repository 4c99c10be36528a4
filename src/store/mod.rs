//! Persistent storage: the redb [`Index`] of manifests, tags and metadata, the content-addressed
//! [`BlobStore`], the batched [`AccessRecorder`] of last-pulled times, and the shared [`Bucket`] of scale-out
//! mode.
//!
//! redb gives up on a database after an I/O error (a full disk during a commit): every later operation fails
//! until it is reopened. [`Store`] runs index operations through a handle that notices that state, reopens
//! the file (redb repairs it to its last commit) and runs the operation again, so one failed write does not
//! break the cache until a restart.

mod access;
mod blobs;
mod bucket;
mod index;
mod records;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use access::{Access, AccessBatch, AccessRecorder};
pub use blobs::{BlobFile, BlobStore, BlobWriter, CommitError};
pub use bucket::{Bucket, BucketBlob, BucketError, BucketManifest, SweepReport};
pub use index::{
    Index, IndexCounts, IndexError, IndexResult, ManifestWrite, Removal, Removed, Snapshot,
    StoredManifest, SCHEMA_VERSION,
};
pub use records::{unix_now, BlobMeta, ManifestMeta, PinRecord, TagRecord};

use crate::error::RegistryError;

/// How often batched last-pulled times are written to the index.
pub const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How often batched access times are made durable (fsynced) besides at shutdown.
pub const ACCESS_PERSIST_INTERVAL: Duration = Duration::from_secs(60);

/// After a failed reopen, the next attempt waits this long (a full disk would otherwise make every request
/// reopen the file).
const REOPEN_BACKOFF: Duration = Duration::from_millis(250);

/// The open index, replaced by a fresh open when redb has given up on it.
pub struct IndexHandle {
    path: PathBuf,
    /// The open index and how many times it was reopened.
    current: RwLock<(Option<Index>, u64)>,
    last_failed_reopen: Mutex<Option<Instant>>,
}

impl IndexHandle {
    fn new(path: &Path, index: Index) -> IndexHandle {
        IndexHandle {
            path: path.to_path_buf(),
            current: RwLock::new((Some(index), 0)),
            last_failed_reopen: Mutex::new(None),
        }
    }

    /// Runs `op`; after an error that leaves redb in its failed state, reopens the file and runs it once more.
    pub fn run<T>(&self, op: impl Fn(&Index) -> IndexResult<T>) -> IndexResult<T> {
        let (first, generation) = self.attempt(&op);
        match first {
            Err(err) if err.is_failed_state() => {
                if self.reopen(generation) {
                    self.attempt(&op).0
                } else {
                    Err(err)
                }
            }
            other => other,
        }
    }

    fn attempt<T>(&self, op: &impl Fn(&Index) -> IndexResult<T>) -> (IndexResult<T>, u64) {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        let result = match guard.0.as_ref() {
            Some(index) => op(index),
            None => Err(IndexError::Unavailable),
        };
        (result, guard.1)
    }

    /// Drops the failed database (releasing its lock) and opens the file again; whether there is a fresh one
    /// to retry with.
    fn reopen(&self, failed_generation: u64) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.1 != failed_generation {
            return current.0.is_some(); // another thread reopened it meanwhile
        }
        let mut last_failed = self
            .last_failed_reopen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last_failed.is_some_and(|at| at.elapsed() < REOPEN_BACKOFF) {
            return false;
        }
        drop(current.0.take());
        match Index::open(&self.path) {
            Ok(index) => {
                current.0 = Some(index);
                current.1 += 1;
                *last_failed = None;
                tracing::warn!(db = %self.path.display(), "the index failed after an I/O error and was reopened");
                true
            }
            Err(err) => {
                *last_failed = Some(Instant::now());
                tracing::error!(db = %self.path.display(), error = %err, "the index failed and cannot be reopened yet");
                false
            }
        }
    }
}

/// The index, the blob directory and pending access times.
pub struct Store {
    index: Arc<IndexHandle>,
    pub blobs: BlobStore,
    pub access: AccessRecorder,
    /// Bytes of the indexed blobs: counted once from an index snapshot (the start-up sweep), then kept up to
    /// date as blobs are added and removed, so a metrics scrape reads a number, not the index.
    blob_bytes: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens the index file and the blob directory.
    pub fn open(db: &Path, blobs: &Path) -> anyhow::Result<Store> {
        let index = IndexHandle::new(db, Index::open(db)?);
        let blobs = BlobStore::open(blobs)
            .map_err(|e| anyhow::anyhow!("opening blob directory {}: {e}", blobs.display()))?;
        Ok(Store {
            index: Arc::new(index),
            blobs,
            access: AccessRecorder::default(),
            blob_bytes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Runs an index operation on this thread (code that already runs on a blocking thread).
    pub fn index_blocking<T>(&self, op: impl Fn(&Index) -> IndexResult<T>) -> IndexResult<T> {
        self.index.run(op)
    }

    /// Runs a blocking index operation off the async runtime.
    pub async fn index<T, F>(&self, op: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: Fn(&Index) -> IndexResult<T> + Send + 'static,
    {
        let index = self.index.clone();
        crate::blocking::spawn(move || index.run(op))
            .await
            .map_err(|e| RegistryError::internal("index task", e))?
            .map_err(|e| RegistryError::internal("index", e))
    }

    /// Bytes of the indexed blobs, as last counted and kept up to date.
    pub fn blob_bytes(&self) -> u64 {
        self.blob_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the blob bytes from a count over a snapshot.
    pub fn set_blob_bytes(&self, bytes: u64) {
        self.blob_bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Notes a blob added to (positive) or removed from the index.
    pub fn note_blob_bytes(&self, added: u64, removed: u64) {
        use std::sync::atomic::Ordering;
        self.blob_bytes.fetch_add(added, Ordering::Relaxed);
        let _ = self
            .blob_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(removed))
            });
    }

    /// Writes pending last-pulled times to the index, without waiting for the disk.
    pub async fn flush_access_times(&self) -> Result<(), RegistryError> {
        let batch = self.access.drain();
        if batch.is_empty() {
            return Ok(());
        }
        self.index(move |index| index.touch(&batch.manifests, &batch.blobs, false))
            .await
    }

    /// Writes pending last-pulled times and makes them (and every earlier flush) durable: periodically, and
    /// before the process exits (non-durable commits are lost when the process ends without a durable one).
    pub async fn persist_access_times(&self) -> Result<(), RegistryError> {
        let batch = self.access.drain();
        self.index(move |index| index.touch(&batch.manifests, &batch.blobs, true))
            .await
    }
}
