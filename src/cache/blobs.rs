//! Serving blobs: a cached file if the content-addressed directory has it, else a (shared) fill from upstream.
//!
//! Fills are keyed by registry and digest: a client of one registry never waits on, or inherits the failure
//! of, another registry's download of the same digest (two registries filling the same digest at once both
//! rename identical, verified bytes into the same place, which is harmless).

use std::fs::File;
use std::io;
use std::sync::Arc;
use tracing::Instrument;

use dashmap::mapref::entry::Entry;

use super::fill::{BlobFill, FillState};
use super::{CacheStatus, FillKey, PullThrough};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::route::Target;
use crate::store::{unix_now, Bucket};

/// Where a blob's bytes come from.
pub enum BlobSource {
    /// A whole, verified file in the blob directory.
    Cached { file: File, size: u64 },
    /// A download in progress; `size` is known when the upstream stated it.
    Filling {
        fill: Arc<BlobFill>,
        size: Option<u64>,
    },
    /// In the shared bucket, which is the only copy (`s3.local_tier: false`): the server streams what the
    /// request asks for from it.
    Shared { bucket: Arc<Bucket>, size: u64 },
    /// Straight from the upstream, not stored: the disk is (nearly) full. Verified on the way (the last chunk
    /// is held back until the digest matched).
    Uncached {
        body: futures::stream::BoxStream<'static, Result<bytes::Bytes, RegistryError>>,
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
            self.confirm_shared_blob(target, digest).await?;
            self.store.access.blob(digest.as_str(), &target.to_string());
            super::telemetry::blob_pull(&target.registry, CacheStatus::Hit);
            return Ok((BlobSource::Cached { file, size }, CacheStatus::Hit));
        }
        if let Some((bucket, size)) = self.bucket_only_blob(target, digest).await {
            self.store.access.blob(digest.as_str(), &target.to_string());
            super::telemetry::blob_pull(&target.registry, CacheStatus::Hit);
            return Ok((BlobSource::Shared { bucket, size }, CacheStatus::Hit));
        }
        let fill = match self.start_or_join_fill(target, digest)? {
            Fill::Started(fill) => fill,
            Fill::Landed(file, size) => {
                self.store.access.blob(digest.as_str(), &target.to_string());
                super::telemetry::blob_pull(&target.registry, CacheStatus::Hit);
                return Ok((BlobSource::Cached { file, size }, CacheStatus::Hit));
            }
            Fill::NoSpace(why) => return self.uncached_blob(target, digest, &why).await,
        };
        match fill.wait_started().await {
            Ok(size) => {
                super::telemetry::blob_pull(&target.registry, CacheStatus::Miss);
                Ok((BlobSource::Filling { fill, size }, CacheStatus::Miss))
            }
            Err(err) if fill.is_no_space() => {
                self.uncached_blob(target, digest, err.message()).await
            }
            Err(err) => Err(err),
        }
    }

    /// The blob straight from the upstream, verified on the way, not stored: there is no room for it.
    async fn uncached_blob(
        &self,
        target: &Target,
        digest: &Digest,
        why: &str,
    ) -> Result<(BlobSource, CacheStatus), RegistryError> {
        tracing::warn!(%digest, %target, reason = %why, "disk full: serving the blob without caching it");
        super::telemetry::uncached_blob();
        super::telemetry::blob_pull(&target.registry, CacheStatus::Miss);
        let upstream = self.upstream(&target.registry)?;
        let stream = upstream.blob(&super::pull(target), digest.as_str()).await?;
        let size = stream.size;
        let body = super::uncached::verified(digest.clone(), stream);
        Ok((BlobSource::Uncached { body, size }, CacheStatus::Miss))
    }

    /// Without a local tier: the bucket and the blob's size, if the bucket holds it (and `target`'s registry
    /// reads through the bucket at all).
    async fn bucket_only_blob(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Option<(Arc<Bucket>, u64)> {
        let bucket = self.bucket.as_ref().filter(|b| !b.local_tier())?;
        if self.upstreams.is_private(&target.registry) {
            return None;
        }
        match bucket.blob_size(digest).await {
            Ok(Some(size)) => Some((bucket.clone(), size)),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(%digest, error = %err, "shared bucket unavailable; asking the upstream");
                None
            }
        }
    }

    /// The size of blob `digest`, without reading or fetching its body.
    pub async fn blob_size(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(u64, CacheStatus), RegistryError> {
        if let Some((_, size)) = self.open_cached_blob(digest)? {
            self.confirm_shared_blob(target, digest).await?;
            return Ok((size, CacheStatus::Hit));
        }
        let key = FillKey::new(target, digest);
        let in_flight = self.fills.get(&key).map(|f| f.clone());
        if let Some(fill) = in_flight {
            if let Ok(Some(size)) = fill.wait_started().await {
                return Ok((size, CacheStatus::Miss));
            }
        }
        let upstream = self.upstream(&target.registry)?;
        match upstream
            .head_blob(&super::pull(target), digest.as_str())
            .await?
        {
            Some(size) => Ok((size, CacheStatus::Miss)),
            None => Err(RegistryError::UpstreamUnavailable(format!(
                "upstream {} did not state the size of {digest}",
                target.registry
            ))),
        }
    }

    /// A blob known only from private repositories (of registries reached with credentials) is served to a
    /// client of another repository only after that repository's upstream confirms the digest (a HEAD, with the
    /// client's credentials for passthrough), as manifests are: otherwise knowing a digest would be enough to
    /// read a private layer. Blobs pulled through any public registry are shared freely; the check costs
    /// nothing unless some registry is private. An upstream that cannot answer means no.
    async fn confirm_shared_blob(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        if !self.any_private_registry {
            return Ok(());
        }
        let key = digest.to_string();
        let Some(meta) = self.store.index(move |index| index.blob(&key)).await? else {
            return Ok(());
        };
        let repository = target.to_string();
        let own = meta.repositories.contains(&repository);
        let public_somewhere = meta.repositories.iter().any(|r| {
            r.split_once('/')
                .is_some_and(|(registry, _)| !self.upstreams.is_private(registry))
        });
        if own || public_somewhere {
            return Ok(());
        }
        let upstream = self.upstreams.get(&target.registry)?;
        upstream
            .head_blob(&super::pull(target), digest.as_str())
            .await
            .map_err(|err| match err {
                RegistryError::UpstreamUnavailable(_) | RegistryError::TooManyRequests { .. } => {
                    RegistryError::BlobUnknown(format!(
                        "blob {digest} is cached from another registry and {} cannot confirm it now",
                        target.registry
                    ))
                }
                other => other,
            })?;
        let key = digest.to_string();
        let size = meta.size;
        self.store
            .index(move |index| index.put_blob(&key, size, &repository, unix_now()))
            .await?;
        Ok(())
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

    /// Joins the fill of `digest` from `target`'s registry in progress, or starts one; or says the blob landed
    /// between the first look and now, or that there is no room to store it.
    fn start_or_join_fill(&self, target: &Target, digest: &Digest) -> Result<Fill, RegistryError> {
        let key = FillKey::new(target, digest);
        let entry = match self.fills.entry(key.clone()) {
            Entry::Occupied(fill) => {
                super::telemetry::fill_join();
                return Ok(Fill::Started(fill.get().clone()));
            }
            Entry::Vacant(entry) => entry,
        };
        // A fill may have finished (and left the map) since the first look.
        if let Some((file, size)) = self.open_cached_blob(digest)? {
            return Ok(Fill::Landed(file, size));
        }
        // Refused before any traffic and before anything is created. Without a local tier, `blob` has just
        // asked the bucket for it.
        let bucket_asked = self.bucket.as_ref().is_some_and(|b| !b.local_tier());
        let upstream = self.upstream_reading_blobs(&target.registry, !bucket_asked)?;
        match self.store.blobs.free_bytes() {
            Ok(free) if free < self.min_free_bytes => {
                return Ok(Fill::NoSpace(format!(
                    "{free} bytes free, below min_free_bytes ({})",
                    self.min_free_bytes
                )))
            }
            _ => {}
        }
        let writer = match self.store.blobs.create(digest) {
            Ok(writer) => writer,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Ok(Fill::NoSpace(format!("creating a temp file: {e}")))
            }
            Err(e) => return Err(RegistryError::internal("create temp blob", e)),
        };
        let fill = Arc::new(BlobFill::new(
            digest.clone(),
            &writer,
            self.store.blobs.path(digest),
            self.upstream_connect_timeout + self.upstream_timeout,
        ));
        entry.insert(fill.clone());

        let guard = FillGuard {
            fills: self.fills.clone(),
            key,
            fill: fill.clone(),
            done: false,
        };
        let index_store = self.store.clone();
        let repository = target.to_string();
        let target = target.clone();
        let grace = self.upstream_timeout;
        let min_rate = self.fill_min_bytes_per_sec;
        let writers = self.fill_writers.clone();
        let stored = self.blob_stored.clone();
        let blob_root = self.store.clone();
        let min_free = self.min_free_bytes;
        // Scale-out: a blob stored here is published for the other replicas (not one of a private registry).
        let publish = self
            .bucket
            .clone()
            .filter(|_| !self.upstreams.is_private(&target.registry));
        let final_path = self.store.blobs.path(digest);
        // The fill traces under the request that started it (when traces are exported).
        self.background.spawn(async move {
            let mut guard = guard;
            let fill = guard.fill.clone();
            let digest = fill.digest.clone();
            let index_key = digest.to_string();
            let index_repository = repository.clone();
            let record = move |size: u64| {
                index_store
                    .index_blocking(|index| {
                        index.put_blob(&index_key, size, &index_repository, unix_now())
                    })
                    .map(|is_new| {
                        if is_new {
                            index_store.note_blob_bytes(size, 0);
                        }
                    })
                    .map_err(std::io::Error::other)
            };
            let result = match upstream.blob(&super::pull(&target), digest.as_str()).await {
                Ok(stream) => match no_room(&blob_root, stream.size, min_free) {
                    Some(why) => {
                        // Readers fetch it uncached; the temp file goes with the writer.
                        fill.fail_no_space(why);
                        guard.finish(None);
                        return;
                    }
                    None => {
                        fill.run(stream, writer, &writers, grace, min_rate, record)
                            .await
                    }
                },
                Err(err) => Err(err),
            };
            match result {
                Ok(size) => {
                    guard.finish(None);
                    stored.notify_one();
                    tracing::info!(%digest, size, repository, "blob cached");
                    if let Some(bucket) = publish {
                        let published = match bucket.put_blob_file(&digest, &final_path, size).await {
                            Ok(true) => {
                                tracing::info!(%digest, size, "blob published to the shared bucket");
                                true
                            }
                            Ok(false) => true,
                            Err(err) => {
                                tracing::warn!(%digest, error = %err,
                                    "could not publish blob to the shared bucket; other replicas will fetch it themselves");
                                false
                            }
                        };
                        // Without a local tier the bucket is the copy; the local file only staged the download.
                        // Readers that opened it keep reading it (an unlinked file lives while open).
                        if published && !bucket.local_tier() {
                            let _ = blob_root.blobs.remove(&digest);
                        }
                    }
                }
                Err(err) => {
                    if matches!(err, RegistryError::UpstreamDigestMismatch(_)) {
                        crate::upstream::telemetry::error(
                            &target.registry,
                            "blob",
                            "digest_mismatch",
                        );
                    }
                    tracing::warn!(%digest, repository, error = %err, "blob fill failed; nothing cached");
                    guard.finish(Some(err));
                }
            }
        }.instrument(tracing::Span::current()));
        Ok(Fill::Started(fill))
    }
}

/// Why a blob of `size` bytes does not fit on the blob filesystem (keeping `min_free` free), if it does not.
fn no_room(store: &crate::store::Store, size: Option<u64>, min_free: u64) -> Option<String> {
    let size = size?;
    let free = store.blobs.free_bytes().ok()?;
    (size.saturating_add(min_free) > free).then(|| {
        format!("{size} bytes do not fit in {free} bytes free (keeping min_free_bytes {min_free})")
    })
}

/// What `start_or_join_fill` found.
enum Fill {
    Started(Arc<BlobFill>),
    Landed(File, u64),
    NoSpace(String),
}

/// Removes a fill from the in-flight map however its task ends. If the task ends without a verdict (a panic,
/// a runtime shutting down), the fill is marked failed so that no reader waits on it for ever.
struct FillGuard {
    fills: Arc<dashmap::DashMap<FillKey, Arc<BlobFill>>>,
    key: FillKey,
    fill: Arc<BlobFill>,
    done: bool,
}

impl FillGuard {
    fn finish(&mut self, failure: Option<RegistryError>) {
        if let Some(err) = failure {
            self.fill.set_state(FillState::Failed(err));
        }
        self.fills.remove(&self.key);
        self.done = true;
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if !self.done {
            self.fill
                .set_state(FillState::Failed(RegistryError::UpstreamUnavailable(
                    "blob download was abandoned".into(),
                )));
            self.fills.remove(&self.key);
        }
    }
}
