//! Serving manifests: hot cache → redb → upstream, with tag resolution under a TTL and stale-if-error.
//!
//! A manifest fetched from an upstream is checked against the digest it was asked for (or the digest the
//! upstream claims for a tag) before anything is stored; a mismatch is an error and is never cached.

use std::sync::Arc;

use bytes::Bytes;

use super::hot::{CachedManifest, HotCache, TagEntry};
use super::{CacheStatus, PullThrough};
use crate::digest::{Algorithm, Digest};
use crate::error::RegistryError;
use crate::manifest::{inspect, ManifestInfo};
use crate::reference::Reference;
use crate::route::Target;
use crate::store::{unix_now, ManifestWrite, StoredManifest, TagRecord};
use crate::upstream::FetchedManifest;

/// After an upstream failure, a stale tag is served for this long before the upstream is asked again.
const STALE_RETRY_SECS: u64 = 30;

fn unwrap_shared(err: Arc<RegistryError>) -> RegistryError {
    Arc::try_unwrap(err).unwrap_or_else(|shared| (*shared).clone())
}

impl PullThrough {
    /// The manifest `reference` names in `target`, and whether it was served from the cache.
    pub async fn manifest(
        &self,
        target: &Target,
        reference: &Reference,
    ) -> Result<(Arc<CachedManifest>, CacheStatus), RegistryError> {
        match reference {
            Reference::Digest(digest) => self.manifest_by_digest(target, digest).await,
            Reference::Tag(tag) => {
                let (digest, tag_status) = self.resolve_tag(target, tag).await?;
                let (manifest, status) = self.manifest_by_digest(target, &digest).await?;
                Ok((manifest, tag_status.and(status)))
            }
        }
    }

    async fn manifest_by_digest(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(Arc<CachedManifest>, CacheStatus), RegistryError> {
        let key = HotCache::manifest_key(target, digest);
        if let Some(manifest) = self.hot.manifests.get(&key).await {
            self.store.access.manifest(digest.as_str());
            return Ok((manifest, CacheStatus::Hit));
        }
        let mut status = CacheStatus::Hit;
        let manifest = self
            .hot
            .manifests
            .try_get_with(key, self.load_manifest(target, digest, &mut status))
            .await
            .map_err(unwrap_shared)?;
        self.store.access.manifest(digest.as_str());
        Ok((manifest, status))
    }

    /// Loads a manifest missing from the hot cache: from redb if this repository has it, else from upstream.
    async fn load_manifest(
        &self,
        target: &Target,
        digest: &Digest,
        status: &mut CacheStatus,
    ) -> Result<Arc<CachedManifest>, RegistryError> {
        let key = digest.to_string();
        let stored = self.store.index(move |index| index.manifest(&key)).await?;
        let repository = target.to_string();
        if let Some(stored) = stored {
            if stored.meta.repositories.contains(&repository) {
                return Ok(Arc::new(cached_from_store(digest, stored)));
            }
            // Known, but pulled through another repository: ask this repository's upstream whether it has it
            // before serving it here. When the upstream cannot be reached, the bytes (which match the digest)
            // are served anyway: that is what keeps a disconnected site running.
            *status = CacheStatus::Miss;
            let client = self.upstreams.client(&target.registry);
            match client
                .head_manifest(&target.repository, digest.as_str())
                .await
            {
                Ok(_) | Err(RegistryError::UpstreamUnavailable(_)) => {}
                Err(e) => return Err(e),
            }
            let info = ManifestInfo {
                media_type: stored.meta.media_type.clone(),
                references: stored.meta.references.clone(),
            };
            let manifest = cached_from_store(digest, stored);
            self.record_manifest(target, &manifest, info, None).await?;
            return Ok(Arc::new(manifest));
        }
        *status = CacheStatus::Miss;
        let client = self.upstreams.client(&target.registry);
        let fetched = client.manifest(&target.repository, digest.as_str()).await?;
        let actual = Digest::of(digest.algorithm(), &fetched.body);
        if actual != *digest {
            return Err(RegistryError::UpstreamDigestMismatch(format!(
                "upstream {} sent manifest {actual} when asked for {digest} ({})",
                target.registry, target.repository
            )));
        }
        let (manifest, info) = verified_manifest(digest.clone(), &fetched)?;
        self.record_manifest(target, &manifest, info, None).await?;
        Ok(Arc::new(manifest))
    }

    /// Writes a manifest (and optionally a tag) to the index.
    async fn record_manifest(
        &self,
        target: &Target,
        manifest: &CachedManifest,
        info: ManifestInfo,
        tag: Option<(Box<str>, TagRecord)>,
    ) -> Result<(), RegistryError> {
        let digest = manifest.digest.to_string();
        let body = manifest.body.clone();
        let repository = target.to_string();
        self.store
            .index(move |index| {
                index.put_manifest(ManifestWrite {
                    digest: &digest,
                    media_type: &info.media_type,
                    body: &body,
                    repository: &repository,
                    references: &info.references,
                    tag: tag.as_ref().map(|(k, r)| (&**k, r.clone())),
                    now: unix_now(),
                })
            })
            .await
    }

    /// The digest `tag` points at, asking the upstream only when the mapping is older than the tag TTL.
    async fn resolve_tag(
        &self,
        target: &Target,
        tag: &str,
    ) -> Result<(Digest, CacheStatus), RegistryError> {
        let key = HotCache::tag_key(target, tag);
        if let Some(entry) = self.hot.tags.get(&key).await {
            if entry.fresh_until > unix_now() {
                return Ok((entry.digest, CacheStatus::Hit));
            }
            self.hot.tags.invalidate(&key).await;
        }
        let mut status = CacheStatus::Hit;
        let entry = self
            .hot
            .tags
            .try_get_with(key.clone(), self.load_tag(target, tag, key, &mut status))
            .await
            .map_err(unwrap_shared)?;
        Ok((entry.digest, status))
    }

    async fn load_tag(
        &self,
        target: &Target,
        tag: &str,
        key: Box<str>,
        status: &mut CacheStatus,
    ) -> Result<TagEntry, RegistryError> {
        let ttl = self.tag_ttl.as_secs();
        let lookup = key.clone();
        let stored = self.store.index(move |index| index.tag(&lookup)).await?;
        let now = unix_now();
        let stored = match stored {
            Some(record) => {
                let digest: Digest = record
                    .digest
                    .parse()
                    .map_err(|e| RegistryError::internal("stored tag", e))?;
                if record.fetched_at + ttl > now {
                    return Ok(TagEntry {
                        digest,
                        fresh_until: record.fetched_at + ttl,
                    });
                }
                Some((digest, record))
            }
            None => None,
        };
        *status = CacheStatus::Miss;
        match self.refresh_tag(target, tag, &key, stored.as_ref()).await {
            Ok(digest) => Ok(TagEntry {
                digest,
                fresh_until: now + ttl,
            }),
            Err(
                err @ (RegistryError::UpstreamUnavailable(_) | RegistryError::TooManyRequests(_)),
            ) => {
                match stored {
                    // Stale-if-error: an unreachable or rate-limiting upstream must not break cached images.
                    Some((digest, _)) => {
                        tracing::warn!(%target, tag, error = %err, "upstream unavailable; serving cached tag");
                        *status = CacheStatus::Hit;
                        Ok(TagEntry {
                            digest,
                            fresh_until: now + STALE_RETRY_SECS.min(ttl.max(1)),
                        })
                    }
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Asks the upstream where `tag` points now. An unchanged digest costs one HEAD (which Docker Hub does not
    /// count against the rate limit); a new or unknown tag costs one GET, whose manifest is stored with the tag.
    async fn refresh_tag(
        &self,
        target: &Target,
        tag: &str,
        key: &str,
        stored: Option<&(Digest, TagRecord)>,
    ) -> Result<Digest, RegistryError> {
        let client = self.upstreams.client(&target.registry);
        let now = unix_now();
        if let Some((digest, record)) = stored {
            let head = client.head_manifest(&target.repository, tag).await?;
            if head.digest_header.as_deref() == Some(digest.as_str()) {
                let record = TagRecord {
                    fetched_at: now,
                    ..record.clone()
                };
                let key = key.to_owned();
                self.store
                    .index(move |index| index.put_tag(&key, &record))
                    .await?;
                return Ok(digest.clone());
            }
        }
        let fetched = client.manifest(&target.repository, tag).await?;
        let digest = digest_for_tag(target, &fetched)?;
        let (manifest, info) = verified_manifest(digest.clone(), &fetched)?;
        let record = TagRecord {
            digest: digest.to_string(),
            fetched_at: now,
            created: stored.map(|(_, r)| r.created).unwrap_or(now),
        };
        self.record_manifest(target, &manifest, info, Some((key.into(), record)))
            .await?;
        self.hot
            .manifests
            .insert(HotCache::manifest_key(target, &digest), Arc::new(manifest))
            .await;
        Ok(digest)
    }
}

/// The digest of a manifest fetched by tag: computed from its bytes, and checked against the digest the
/// upstream states, if any.
fn digest_for_tag(target: &Target, fetched: &FetchedManifest) -> Result<Digest, RegistryError> {
    let claimed = fetched
        .digest_header
        .as_deref()
        .and_then(|d| d.parse::<Digest>().ok());
    let algorithm = claimed
        .as_ref()
        .map(Digest::algorithm)
        .unwrap_or(Algorithm::Sha256);
    let actual = Digest::of(algorithm, &fetched.body);
    match claimed {
        Some(claimed) if claimed != actual => Err(RegistryError::UpstreamDigestMismatch(format!(
            "upstream {} says {} is {claimed} but its bytes hash to {actual}",
            target.registry, target.repository
        ))),
        _ => Ok(actual),
    }
}

/// Builds a servable manifest from upstream bytes whose digest has been checked, and what it references.
fn verified_manifest(
    digest: Digest,
    fetched: &FetchedManifest,
) -> Result<(CachedManifest, ManifestInfo), RegistryError> {
    let info = inspect(&fetched.body, fetched.content_type.as_deref())?;
    let manifest = CachedManifest::new(digest, &info.media_type, fetched.body.clone());
    Ok((manifest, info))
}

fn cached_from_store(digest: &Digest, stored: StoredManifest) -> CachedManifest {
    CachedManifest::new(
        digest.clone(),
        &stored.meta.media_type,
        Bytes::from(stored.body),
    )
}
