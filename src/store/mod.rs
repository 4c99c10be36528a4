//! Persistent storage: the redb [`Index`] of manifests, tags and metadata, the content-addressed
//! [`BlobStore`], and the batched [`AccessRecorder`] of last-pulled times.

mod access;
mod blobs;
mod index;
mod records;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use access::{Access, AccessBatch, AccessRecorder};
pub use blobs::{BlobFile, BlobStore, BlobWriter, CommitError};
pub use index::{
    Index, IndexCounts, IndexError, IndexResult, ManifestWrite, Removal, Removed, Snapshot,
    StoredManifest, SCHEMA_VERSION,
};
pub use records::{unix_now, BlobMeta, ManifestMeta, PinRecord, TagRecord};

use crate::error::RegistryError;

/// How often batched last-pulled times are written to the index.
pub const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The index, the blob directory and pending access times.
pub struct Store {
    index: Arc<Index>,
    pub blobs: BlobStore,
    pub access: AccessRecorder,
}

impl Store {
    /// Opens the index file and the blob directory.
    pub fn open(db: &Path, blobs: &Path) -> anyhow::Result<Store> {
        let index = Index::open(db)?;
        let blobs = BlobStore::open(blobs)
            .map_err(|e| anyhow::anyhow!("opening blob directory {}: {e}", blobs.display()))?;
        Ok(Store {
            index: Arc::new(index),
            blobs,
            access: AccessRecorder::default(),
        })
    }

    /// The index, for code that already runs on a blocking thread (a fill's writer).
    pub fn index_blocking(&self) -> &Index {
        &self.index
    }

    /// Runs a blocking index operation off the async runtime.
    pub async fn index<T, F>(&self, op: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&Index) -> IndexResult<T> + Send + 'static,
    {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || op(&index))
            .await
            .map_err(|e| RegistryError::internal("index task", e))?
            .map_err(|e| RegistryError::internal("index", e))
    }

    /// Writes pending last-pulled times to the index.
    pub async fn flush_access_times(&self) -> Result<(), RegistryError> {
        let batch = self.access.drain();
        if batch.is_empty() {
            return Ok(());
        }
        self.index(move |index| index.touch(&batch.manifests, &batch.blobs))
            .await
    }
}
