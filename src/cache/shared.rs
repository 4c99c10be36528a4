//! Scale-out: the shared bucket in front of an upstream. To the cache, [`BucketFirst`] is just another
//! [`Upstream`]: what the bucket holds (blobs, manifests by digest) is read from it before the registry is
//! asked, and what the registry answers is published to it for the other replicas. The cache verifies what it
//! reads from the bucket exactly as it verifies an upstream's bytes, so a damaged object is never served.
//!
//! Registries reached with credentials are never routed through the bucket (see `PullThrough::upstream`):
//! their content must not become readable to clients of other repositories on another replica.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use crate::digest::Digest;
use crate::error::RegistryError;
use crate::store::Bucket;
use crate::upstream::{BlobStream, FetchedManifest, ManifestHead, Pull, RateLimit, Upstream};

/// The bucket, then the upstream.
pub struct BucketFirst {
    pub bucket: Arc<Bucket>,
    pub inner: Arc<dyn Upstream>,
    /// Publishing to the bucket runs here, so that shutdown waits for it.
    pub background: tokio_util::task::TaskTracker,
    /// Whether blobs are looked up in the bucket (not when the caller just did).
    pub read_blobs: bool,
}

#[async_trait]
impl Upstream for BucketFirst {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let by_digest = reference.parse::<Digest>().ok();
        if let Some(digest) = &by_digest {
            if let Some(found) = self.bucket_manifest(digest).await {
                return Ok(found);
            }
        }
        match self.inner.manifest(pull, reference).await {
            Ok(fetched) => {
                self.publish_manifest(pull, reference, by_digest.as_ref(), &fetched);
                Ok(fetched)
            }
            // A tag this replica never saw, while the registry cannot be reached: the digest another replica
            // last saw, if it is in the bucket.
            Err(err) if by_digest.is_none() && err.is_upstream_trouble() => {
                let tag = self
                    .bucket
                    .tag(self.inner.name(), pull.repository, reference)
                    .await;
                let Ok(Some(digest)) = tag else {
                    return Err(err);
                };
                match self.bucket_manifest(&digest).await {
                    Some(found) => {
                        tracing::warn!(registry = self.inner.name(), repository = pull.repository,
                            tag = reference, %digest, upstream_error = %err,
                            "upstream unavailable: tag resolved from the shared bucket");
                        Ok(found)
                    }
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn head_manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        self.inner.head_manifest(pull, reference).await
    }

    async fn blob(&self, pull: &Pull<'_>, digest: &str) -> Result<BlobStream, RegistryError> {
        if let Some(parsed) = digest.parse::<Digest>().ok().filter(|_| self.read_blobs) {
            match self.bucket.blob(&parsed, None).await {
                Ok(Some(found)) => {
                    tracing::debug!(%digest, size = found.size, "blob read from the shared bucket");
                    let body = found
                        .body
                        .map_err(|e| RegistryError::UpstreamUnavailable(e.to_string()))
                        .boxed();
                    return Ok(BlobStream {
                        size: Some(found.size),
                        body,
                    });
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%digest, error = %err, "shared bucket unavailable; asking the upstream")
                }
            }
        }
        self.inner.blob(pull, digest).await
    }

    async fn head_blob(&self, pull: &Pull<'_>, digest: &str) -> Result<Option<u64>, RegistryError> {
        if let Ok(parsed) = digest.parse::<Digest>() {
            if let Ok(Some(size)) = self.bucket.blob_size(&parsed).await {
                return Ok(Some(size));
            }
        }
        self.inner.head_blob(pull, digest).await
    }

    async fn referrers(
        &self,
        pull: &Pull<'_>,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<FetchedManifest, RegistryError> {
        self.inner.referrers(pull, digest, artifact_type).await
    }

    fn rate_limit(&self) -> Option<&RateLimit> {
        self.inner.rate_limit()
    }
}

/// The body of a blob served straight from the bucket (`s3.local_tier: false`): the whole blob verified on the
/// way (the last chunk waits for the digest), or the bytes of one range as the bucket has them (a range cannot
/// be hashed; the bucket only ever receives verified blobs).
pub async fn shared_body(
    bucket: &Bucket,
    digest: &Digest,
    range: Option<std::ops::RangeInclusive<u64>>,
) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, RegistryError>>, RegistryError>
{
    let unavailable = |e: crate::store::BucketError| {
        RegistryError::UpstreamUnavailable(format!("shared bucket: {e}"))
    };
    let wanted = range.as_ref().map(|r| *r.start()..r.end() + 1);
    let found = bucket
        .blob(digest, wanted)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            RegistryError::BlobUnknown(format!("blob {digest} left the shared bucket"))
        })?;
    let body = found.body.map_err(unavailable).boxed();
    Ok(match range {
        Some(_) => body,
        None => super::uncached::verified(
            digest.clone(),
            BlobStream {
                size: Some(found.size),
                body,
            },
        ),
    })
}

impl BucketFirst {
    /// A manifest from the bucket whose bytes hash to its key; `None` when absent, unreachable or damaged.
    async fn bucket_manifest(&self, digest: &Digest) -> Option<FetchedManifest> {
        match self.bucket.manifest(digest).await {
            Ok(Some(found)) if Digest::of(digest.algorithm(), &found.body) == *digest => {
                Some(FetchedManifest {
                    body: found.body,
                    content_type: found.media_type,
                    digest_header: Some(digest.to_string()),
                })
            }
            Ok(Some(_)) => {
                tracing::error!(%digest, bucket = self.bucket.label(),
                    "manifest in the shared bucket does not match its digest; ignored");
                None
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(%digest, error = %err, "shared bucket unavailable; asking the upstream");
                None
            }
        }
    }

    /// Publishes a manifest the registry sent (and, fetched by tag, where the tag points), in the background.
    /// Only bytes that hash to the key are published: for a tag, to the digest the registry stated, if any.
    fn publish_manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
        by_digest: Option<&Digest>,
        fetched: &FetchedManifest,
    ) {
        let digest = match by_digest {
            Some(digest) => digest.clone(),
            None => match super::manifests::claimed_and_actual(fetched) {
                (Some(claimed), actual) if claimed != actual => return,
                (_, actual) => actual,
            },
        };
        if Digest::of(digest.algorithm(), &fetched.body) != digest {
            return;
        }
        let bucket = self.bucket.clone();
        let body = fetched.body.clone();
        let media_type = fetched.content_type.clone();
        let tag = by_digest.is_none().then(|| {
            (
                self.inner.name().to_owned(),
                pull.repository.to_owned(),
                reference.to_owned(),
            )
        });
        self.background.spawn(async move {
            if let Err(err) = bucket
                .put_manifest(&digest, body, media_type.as_deref())
                .await
            {
                tracing::warn!(%digest, error = %err, "could not publish manifest to the shared bucket");
                return;
            }
            if let Some((registry, repository, tag)) = tag {
                if let Err(err) = bucket.put_tag(&registry, &repository, &tag, &digest).await {
                    tracing::warn!(%digest, error = %err, "could not publish tag to the shared bucket");
                }
            }
        });
    }
}
