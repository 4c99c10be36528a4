//! Serving manifests: hot cache → redb → upstream. Tags are resolved in `tags`.
//!
//! A manifest fetched from an upstream is checked against the digest it was asked for (or the digest the
//! upstream claims for a tag) before anything is stored; a mismatch is an error and is never cached.

use std::sync::Arc;

use bytes::Bytes;

use super::hot::{CachedManifest, HotCache};
use super::{pull, CacheStatus, PullThrough};
use crate::digest::{Algorithm, Digest};
use crate::error::RegistryError;
use crate::manifest::{inspect, ManifestInfo};
use crate::reference::Reference;
use crate::route::Target;
use crate::store::{unix_now, ManifestWrite, StoredManifest, TagRecord};
use crate::upstream::FetchedManifest;

pub(super) fn unwrap_shared(err: Arc<RegistryError>) -> RegistryError {
    Arc::try_unwrap(err).unwrap_or_else(|shared| (*shared).clone())
}

impl PullThrough {
    /// The manifest `reference` names in `target`, and whether it was served from the cache.
    pub async fn manifest(
        self: &Arc<Self>,
        target: &Target,
        reference: &Reference,
    ) -> Result<(Arc<CachedManifest>, CacheStatus), RegistryError> {
        let (manifest, status) = match reference {
            Reference::Digest(digest) => self.manifest_by_digest(target, digest).await?,
            Reference::Tag(tag) => {
                let (digest, tag_status) = self.resolve_tag(target, tag).await?;
                let (manifest, status) = self.manifest_by_digest(target, &digest).await?;
                (manifest, tag_status.and(status))
            }
        };
        super::telemetry::manifest_pull(&target.registry, status);
        Ok((manifest, status))
    }

    pub(super) async fn manifest_by_digest(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(Arc<CachedManifest>, CacheStatus), RegistryError> {
        let key = HotCache::manifest_key(target, digest);
        if let Some(manifest) = self.hot.manifests.get(&key).await {
            super::telemetry::hot(true);
            self.store.access.manifest(digest.as_str());
            return Ok((manifest, CacheStatus::Hit));
        }
        super::telemetry::hot(false);
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
            *status = CacheStatus::Miss;
            self.confirm_shared_manifest(target, digest, &stored.meta.repositories)
                .await?;
            let info = ManifestInfo {
                media_type: stored.meta.media_type.clone(),
                references: stored.meta.references.clone(),
            };
            let manifest = cached_from_store(digest, stored);
            self.record_manifest(target, &manifest, info, None).await?;
            return Ok(Arc::new(manifest));
        }
        *status = CacheStatus::Miss;
        let upstream = self.upstream(&target.registry)?;
        let fetched = upstream.manifest(&pull(target), digest.as_str()).await?;
        let actual = Digest::of(digest.algorithm(), &fetched.body);
        if actual != *digest {
            crate::upstream::telemetry::error(&target.registry, "manifest", "digest_mismatch");
            return Err(RegistryError::UpstreamDigestMismatch(format!(
                "upstream {} sent manifest {actual} when asked for {digest} ({})",
                target.registry, target.repository
            )));
        }
        let (manifest, info) = verified_manifest(digest.clone(), &fetched)?;
        self.record_manifest(target, &manifest, info, None).await?;
        Ok(Arc::new(manifest))
    }

    /// A manifest known, but pulled through other repositories: this repository's upstream is asked whether it
    /// has it before it is served here. When that upstream cannot answer, the bytes (which match the digest)
    /// are served anyway if a public registry had them — that keeps a disconnected site running — but never
    /// when only private registries did.
    async fn confirm_shared_manifest(
        &self,
        target: &Target,
        digest: &Digest,
        repositories: &[String],
    ) -> Result<(), RegistryError> {
        let public_somewhere = repositories.iter().any(|r| {
            r.split_once('/')
                .is_some_and(|(registry, _)| !self.upstreams.is_private(registry))
        });
        if self.air_gapped {
            return if public_somewhere {
                Ok(())
            } else {
                Err(RegistryError::ManifestUnknown(format!(
                    "manifest {digest} is not cached for {target} (air-gapped)"
                )))
            };
        }
        let upstream = self.upstreams.get(&target.registry)?;
        match upstream.head_manifest(&pull(target), digest.as_str()).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_upstream_trouble() && public_somewhere => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Writes a manifest fetched by a tag-like key (a tag, or a subject's referrers) with a record pointing the
    /// key at it, confirmed now; `previous` keeps the key's creation time.
    pub(super) async fn record_tagged(
        &self,
        target: &Target,
        key: &str,
        manifest: &CachedManifest,
        info: ManifestInfo,
        previous: Option<&TagRecord>,
    ) -> Result<(), RegistryError> {
        let now = unix_now();
        let record = TagRecord {
            digest: manifest.digest.to_string(),
            fetched_at: now,
            created: previous.map(|r| r.created).unwrap_or(now),
        };
        self.record_manifest(target, manifest, info, Some((key.into(), record)))
            .await
    }

    /// Writes a manifest (and optionally a tag) to the index.
    pub(super) async fn record_manifest(
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
}

/// The digest of a manifest fetched by tag: computed from its bytes, and checked against the digest the
/// upstream states, if any.
pub(super) fn digest_for_tag(
    target: &Target,
    fetched: &FetchedManifest,
) -> Result<Digest, RegistryError> {
    let (claimed, actual) = claimed_and_actual(fetched);
    match claimed {
        Some(claimed) if claimed != actual => {
            crate::upstream::telemetry::error(&target.registry, "manifest", "digest_mismatch");
            Err(RegistryError::UpstreamDigestMismatch(format!(
                "upstream {} says {} is {claimed} but its bytes hash to {actual}",
                target.registry, target.repository
            )))
        }
        _ => Ok(actual),
    }
}

/// The digest an upstream states for a manifest (if it parses), and the digest of its bytes, in the stated
/// digest's algorithm (sha256 when none is stated).
pub(super) fn claimed_and_actual(fetched: &FetchedManifest) -> (Option<Digest>, Digest) {
    let claimed = fetched
        .digest_header
        .as_deref()
        .and_then(|d| d.parse::<Digest>().ok());
    let algorithm = claimed
        .as_ref()
        .map(Digest::algorithm)
        .unwrap_or(Algorithm::Sha256);
    let actual = Digest::of(algorithm, &fetched.body);
    (claimed, actual)
}

/// Builds a servable manifest from upstream bytes whose digest has been checked, and what it references.
pub(super) fn verified_manifest(
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
