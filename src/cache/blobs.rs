//! Serving blobs: a cached file if the content-addressed directory has it, else a (shared) fill from upstream.

use std::fs::File;
use std::io;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;

use super::fill::BlobFill;
use super::{CacheStatus, PullThrough};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::route::Target;
use crate::store::unix_now;

/// Where a blob's bytes come from.
pub enum BlobSource {
    /// A whole, verified file in the blob directory.
    Cached { file: File, size: u64 },
    /// A download in progress; `size` is known when the upstream stated it.
    Filling {
        fill: Arc<BlobFill>,
        size: Option<u64>,
    },
}

impl PullThrough {
    /// The blob `digest`, cached or being fetched from `target`'s upstream.
    pub async fn blob(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(BlobSource, CacheStatus), RegistryError> {
        if let Some((file, size)) = self.open_cached_blob(digest)? {
            self.store.access.blob(digest.as_str());
            return Ok((BlobSource::Cached { file, size }, CacheStatus::Hit));
        }
        let fill = match self.start_or_join_fill(target, digest)? {
            Ok(fill) => fill,
            Err((file, size)) => {
                self.store.access.blob(digest.as_str());
                return Ok((BlobSource::Cached { file, size }, CacheStatus::Hit));
            }
        };
        let size = fill.wait_started().await?;
        Ok((BlobSource::Filling { fill, size }, CacheStatus::Miss))
    }

    /// The size of blob `digest`, without reading or fetching its body.
    pub async fn blob_size(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(u64, CacheStatus), RegistryError> {
        if let Some((_, size)) = self.open_cached_blob(digest)? {
            return Ok((size, CacheStatus::Hit));
        }
        let in_flight = self.fills.get(digest).map(|f| f.clone());
        if let Some(fill) = in_flight {
            if let Ok(Some(size)) = fill.wait_started().await {
                return Ok((size, CacheStatus::Miss));
            }
        }
        let client = self.upstreams.client(&target.registry);
        match client
            .head_blob(&target.repository, digest.as_str())
            .await?
        {
            Some(size) => Ok((size, CacheStatus::Miss)),
            None => Err(RegistryError::UpstreamUnavailable(format!(
                "upstream {} did not state the size of {digest}",
                target.registry
            ))),
        }
    }

    /// Opens a cached blob. Runs on the async thread: an `open` and `fstat` of a local file cost microseconds,
    /// less than handing them to the blocking pool.
    fn open_cached_blob(&self, digest: &Digest) -> Result<Option<(File, u64)>, RegistryError> {
        match File::open(self.store.blobs.path(digest)) {
            Ok(file) => {
                let size = file
                    .metadata()
                    .map_err(|e| RegistryError::internal("stat blob", e))?
                    .len();
                Ok(Some((file, size)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::internal("open blob", e)),
        }
    }

    /// Joins the fill of `digest` in progress, or starts one. `Err` carries the cached file when the blob
    /// landed between the first look and now.
    #[allow(clippy::type_complexity)]
    fn start_or_join_fill(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<Result<Arc<BlobFill>, (File, u64)>, RegistryError> {
        let entry = match self.fills.entry(digest.clone()) {
            Entry::Occupied(fill) => return Ok(Ok(fill.get().clone())),
            Entry::Vacant(entry) => entry,
        };
        // A fill may have finished (and left the map) since the first look.
        if let Some(cached) = self.open_cached_blob(digest)? {
            return Ok(Err(cached));
        }
        let writer = self
            .store
            .blobs
            .create(digest)
            .map_err(|e| RegistryError::internal("create temp blob", e))?;
        let fill = Arc::new(BlobFill::new(
            digest.clone(),
            &writer,
            self.store.blobs.path(digest),
        ));
        entry.insert(fill.clone());

        let client = self.upstreams.client(&target.registry);
        let fills = self.fills.clone();
        let store = self.store.clone();
        let repository = target.to_string();
        let task_fill = fill.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let fill = task_fill;
            let digest = fill.digest.clone();
            let result = match client.blob(&target.repository, digest.as_str()).await {
                Ok(response) => fill.run(response, writer, |e| client.body_error(e)).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(size) => {
                    fills.remove(&digest);
                    tracing::info!(%digest, size, repository, "blob cached");
                    let key = digest.to_string();
                    if let Err(err) = store
                        .index(move |index| index.put_blob(&key, size, &repository, unix_now()))
                        .await
                    {
                        tracing::warn!(%digest, error = %err, "blob stored but not indexed");
                    }
                }
                Err(err) => {
                    tracing::warn!(%digest, repository, error = %err, "blob fill failed; nothing cached");
                    fill.set_state(super::fill::FillState::Failed(err));
                    fills.remove(&digest);
                }
            }
        });
        Ok(Ok(fill))
    }
}
