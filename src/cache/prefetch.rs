//! Pre-loading an image (what `ociregistry load` does): its manifests and every blob of the wanted platforms,
//! through the same paths a pull takes, so that the site can serve the image when the upstream is gone.
//! Already-cached blobs cost an `open`; a cached tag costs what a pull of it costs (its TTL rules apply).

use std::sync::Arc;
use std::time::Duration;

use super::blobs::BlobSource;
use super::fill::FillState;
use super::{CacheStatus, PullThrough};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::{index_children, is_index_type, Platform};
use crate::reference::Reference;
use crate::route::Target;

/// What pre-loading one image did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PrefetchReport {
    /// The digest the reference resolved to.
    pub digest: String,
    /// Manifests (the root and the children of the wanted platforms).
    pub manifests: u64,
    /// Blobs of those manifests, and how many of them had to be fetched.
    pub blobs: u64,
    pub blobs_fetched: u64,
    /// Bytes of the fetched blobs.
    pub bytes_fetched: u64,
    /// Bytes of all the image's blobs (of the wanted platforms).
    pub bytes: u64,
    /// Platforms loaded (empty for a single-platform image without a platform in its index).
    pub platforms: Vec<String>,
}

/// How long a blob that was verified may take to appear under its content address (fsync and rename).
const LAND_TIMEOUT: Duration = Duration::from_secs(60);

impl PullThrough {
    /// Caches the image `reference` names in `target`: the manifest, the children matching `platforms` (all
    /// when empty) and all their blobs. Fails on the first part that cannot be cached.
    pub async fn prefetch(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
        platforms: &[Platform],
    ) -> Result<PrefetchReport, RegistryError> {
        let (root, _) = self.manifest(target, reference).await?;
        let mut report = PrefetchReport {
            digest: root.digest.to_string(),
            manifests: 1,
            ..PrefetchReport::default()
        };
        let media_type = root.content_type.to_str().unwrap_or_default().to_owned();
        let images = if is_index_type(&media_type) {
            let mut wanted = Vec::new();
            for (digest, platform) in index_children(&root.body)? {
                let take = match &platform {
                    Some(p) => platforms.is_empty() || platforms.iter().any(|want| want.matches(p)),
                    // Attestations and other platform-less entries come with "all platforms" only.
                    None => platforms.is_empty(),
                };
                if take {
                    if let Some(p) = &platform {
                        report.platforms.push(p.to_string());
                    }
                    wanted.push(digest);
                }
            }
            if wanted.is_empty() {
                return Err(RegistryError::ManifestUnknown(format!(
                    "{target}:{reference} has no image for {}",
                    platforms
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let mut images = Vec::new();
            for digest in wanted {
                let digest: Digest = digest.parse()?;
                let (child, _) = self.manifest_by_digest(target, &digest).await?;
                report.manifests += 1;
                images.push(child);
            }
            images
        } else {
            vec![root]
        };
        let single = images.len() == 1 && report.platforms.is_empty();
        for image in images {
            if single {
                // A single-platform image states its platform in its config.
                if let Some(config) = crate::manifest::image_config_digest(&image.body)
                    .and_then(|d| d.parse::<Digest>().ok())
                {
                    self.prefetch_blob(target, &config).await?;
                    if let Some(p) = std::fs::read(self.store.blobs.path(&config))
                        .ok()
                        .and_then(|bytes| crate::manifest::config_platform(&bytes))
                    {
                        report.platforms.push(p.to_string());
                    }
                }
            }
            let info = crate::manifest::inspect(
                &image.body,
                Some(image.content_type.to_str().unwrap_or_default()),
            )?;
            for blob in info.references {
                let digest: Digest = blob.parse()?;
                let (size, fetched) = self.prefetch_blob(target, &digest).await?;
                report.blobs += 1;
                report.bytes += size;
                if fetched {
                    report.blobs_fetched += 1;
                    report.bytes_fetched += size;
                }
            }
        }
        Ok(report)
    }

    /// Caches one blob; its size and whether it had to be fetched.
    async fn prefetch_blob(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(u64, bool), RegistryError> {
        match self.blob(target, digest).await? {
            (BlobSource::Cached { size, .. }, CacheStatus::Hit) => Ok((size, false)),
            (BlobSource::Cached { size, .. }, CacheStatus::Miss) => Ok((size, true)),
            (BlobSource::Shared { size, .. }, _) => Ok((size, false)),
            (BlobSource::Uncached { .. }, _) => Err(RegistryError::internal(
                "load",
                format!("no room to store {digest}: the blob filesystem is below min_free_bytes"),
            )),
            (BlobSource::Filling { fill, .. }, _) => {
                let mut rx = fill.subscribe();
                let size = loop {
                    let state = rx.borrow_and_update().clone();
                    match state {
                        FillState::Verified { size } => break size,
                        FillState::Failed(err) => return Err(err),
                        FillState::Connecting | FillState::Streaming { .. } => {}
                    }
                    if rx.changed().await.is_err() {
                        return Err(RegistryError::UpstreamUnavailable(format!(
                            "the download of {digest} was abandoned"
                        )));
                    }
                };
                // Verified bytes are fsynced and renamed into place next; wait until they are there (or, without
                // a local tier, until the fill is over: the file then goes once it is in the bucket).
                let path = self.store.blobs.path(digest);
                let deadline = tokio::time::Instant::now() + LAND_TIMEOUT;
                while !path.exists() && self.is_filling(digest.as_str()) {
                    if let Some(err) = fill.failure() {
                        return Err(err);
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(RegistryError::internal(
                            "prefetch",
                            format!("{digest} was verified but did not land in the store"),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if let Some(err) = fill.failure() {
                    return Err(err);
                }
                Ok((size, true))
            }
        }
    }

    /// Drops hot-cache entries of manifests and tags that were removed from the index, so that they are not
    /// served from memory after a prune or an invalidation.
    pub async fn forget(&self, manifests: &[(String, Vec<String>)], tags: &[String]) {
        for (digest, repositories) in manifests {
            for repository in repositories {
                let key = format!("{repository}@{digest}");
                self.hot.manifests.invalidate(key.as_str()).await;
            }
        }
        for tag in tags {
            self.hot.tags.invalidate(tag.as_str()).await;
            self.unknown_tags.invalidate(tag.as_str());
        }
    }
}
