//! Tag resolution: which digest a tag points at, asking the upstream as little as possible.
//!
//! - Within the tag's TTL (per registry, `tag_ttl`), or for an `immutable_tags` match, or when air-gapped, the
//!   cached mapping is served without asking anyone.
//! - After the TTL, the cached mapping is still served at once (stale-while-revalidate) and one background task
//!   per tag asks the upstream: a HEAD (Docker Hub does not count it as a pull), and a GET only when the digest
//!   moved. If that fails for any reason (unreachable, timeout, 5xx, 429 and its back-off, a broken token
//!   endpoint, an HTML page, a bad digest), the mapping keeps being served and is retried a little later
//!   (stale-if-error).
//! - A tag never seen costs one GET; an upstream 404 for it is remembered for `negative_ttl`, so random names
//!   cannot burn the upstream's quota.

use std::sync::Arc;

use super::hot::{HotCache, TagEntry};
use super::manifests::{digest_for_tag, unwrap_shared, verified_manifest};
use super::{pull, CacheStatus, PullThrough};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::route::Target;
use crate::store::{unix_now, TagRecord};

/// After a failed revalidation, a stale tag is served for this long before the upstream is asked again.
const STALE_RETRY_SECS: u64 = 30;

impl PullThrough {
    /// The digest `tag` points at.
    pub(super) async fn resolve_tag(
        self: &Arc<Self>,
        target: &Target,
        tag: &str,
    ) -> Result<(Digest, CacheStatus), RegistryError> {
        let key = HotCache::tag_key(target, tag);
        if let Some(entry) = self.hot.tags.get(&key).await {
            super::telemetry::hot(true);
            if !self.is_fresh(target, tag, entry.fresh_until) {
                super::telemetry::stale_tag(&target.registry, "revalidating");
                self.revalidate_in_background(target, tag, &key);
            }
            return Ok((entry.digest, CacheStatus::Hit));
        }
        super::telemetry::hot(false);
        let mut status = CacheStatus::Hit;
        let entry = self
            .hot
            .tags
            .try_get_with(
                key.clone(),
                self.load_tag(target, tag, key.clone(), &mut status),
            )
            .await
            .map_err(unwrap_shared)?;
        if !self.is_fresh(target, tag, entry.fresh_until) {
            super::telemetry::stale_tag(&target.registry, "revalidating");
            self.revalidate_in_background(target, tag, &key);
        }
        Ok((entry.digest, status))
    }

    fn is_fresh(&self, target: &Target, tag: &str, fresh_until: u64) -> bool {
        self.air_gapped
            || fresh_until > unix_now()
            || self.tag_policy.is_immutable(&target.registry, tag)
    }

    /// A tag missing from the hot cache: from redb (whatever its age: staleness is handled by the caller),
    /// else from the upstream.
    async fn load_tag(
        &self,
        target: &Target,
        tag: &str,
        key: Box<str>,
        status: &mut CacheStatus,
    ) -> Result<TagEntry, RegistryError> {
        let ttl = self.tag_policy.ttl(&target.registry);
        let lookup = key.clone();
        if let Some(record) = self.store.index(move |index| index.tag(&lookup)).await? {
            let digest: Digest = record
                .digest
                .parse()
                .map_err(|e| RegistryError::internal("stored tag", e))?;
            return Ok(TagEntry {
                digest,
                fresh_until: record.fetched_at.saturating_add(ttl),
            });
        }
        if self.unknown_tags.contains_key(&key) {
            return Err(RegistryError::ManifestUnknown(format!(
                "manifest {target}:{tag} not found upstream (remembered for negative_ttl)"
            )));
        }
        *status = CacheStatus::Miss;
        match self.fetch_tag(target, tag, &key, None).await {
            Ok(digest) => Ok(TagEntry {
                digest,
                fresh_until: unix_now().saturating_add(ttl),
            }),
            Err(err @ RegistryError::ManifestUnknown(_)) => {
                if !self.air_gapped {
                    self.unknown_tags.insert(key, ());
                }
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Starts a revalidation of `tag` unless one is running.
    fn revalidate_in_background(self: &Arc<Self>, target: &Target, tag: &str, key: &str) {
        if self.air_gapped || self.revalidating.insert(key.into(), ()).is_some() {
            return;
        }
        let cache = self.clone();
        let target = target.clone();
        let tag = tag.to_owned();
        let key: Box<str> = key.into();
        self.background.spawn(async move {
            let _running = RevalidationGuard {
                cache: &cache,
                key: &key,
            };
            let ttl = cache.tag_policy.ttl(&target.registry);
            let lookup = key.clone();
            let stored = match cache.store.index(move |index| index.tag(&lookup)).await {
                Ok(stored) => stored,
                Err(err) => {
                    tracing::warn!(%target, tag, error = %err, "could not read tag for revalidation");
                    return;
                }
            };
            let now = unix_now();
            let result = cache.revalidate(&target, &tag, &key, stored.as_ref()).await;
            let fresh_until = match &result {
                Ok(_) => now.saturating_add(ttl),
                Err(err) => {
                    super::telemetry::revalidation(&target.registry, "failed");
                    tracing::warn!(%target, tag, error = %err, "tag revalidation failed; serving the cached digest");
                    // Served on for a while although stale: count it as such.
                    super::telemetry::stale_tag(&target.registry, "upstream_error");
                    now.saturating_add(STALE_RETRY_SECS.min(ttl.max(1)))
                }
            };
            let digest = match result {
                Ok(digest) => Some(digest),
                Err(_) => stored.and_then(|r| r.digest.parse().ok()),
            };
            if let Some(digest) = digest {
                cache
                    .hot
                    .tags
                    .insert(
                        key.clone(),
                        TagEntry {
                            digest,
                            fresh_until,
                        },
                    )
                    .await;
            }
        });
    }

    /// Asks the upstream where `tag` points now: a HEAD, and a GET only if the digest moved.
    async fn revalidate(
        &self,
        target: &Target,
        tag: &str,
        key: &str,
        stored: Option<&TagRecord>,
    ) -> Result<Digest, RegistryError> {
        let Some(record) = stored else {
            return self.fetch_tag(target, tag, key, None).await;
        };
        let upstream = self.upstreams.get(&target.registry)?;
        let head = upstream.head_manifest(&pull(target), tag).await?;
        if head.digest_header.as_deref() == Some(record.digest.as_str()) {
            let record = TagRecord {
                fetched_at: unix_now(),
                ..record.clone()
            };
            let key = key.to_owned();
            let digest = record
                .digest
                .parse()
                .map_err(|e| RegistryError::internal("stored tag", e))?;
            self.store
                .index(move |index| index.put_tag(&key, &record))
                .await?;
            tracing::debug!(%target, tag, "tag unchanged upstream");
            super::telemetry::revalidation(&target.registry, "unchanged");
            return Ok(digest);
        }
        let digest = self.fetch_tag(target, tag, key, Some(record)).await?;
        tracing::info!(%target, tag, from = %record.digest, to = %digest, "tag moved upstream");
        super::telemetry::revalidation(
            &target.registry,
            if digest.as_str() == record.digest {
                "unchanged"
            } else {
                "moved"
            },
        );
        Ok(digest)
    }

    /// GETs the manifest `tag` points at, stores it with the tag, and puts it in the hot cache.
    async fn fetch_tag(
        &self,
        target: &Target,
        tag: &str,
        key: &str,
        previous: Option<&TagRecord>,
    ) -> Result<Digest, RegistryError> {
        let upstream = self.upstream(&target.registry)?;
        let fetched = upstream.manifest(&pull(target), tag).await?;
        let digest = digest_for_tag(target, &fetched)?;
        let (manifest, info) = verified_manifest(digest.clone(), &fetched)?;
        self.record_tagged(target, key, &manifest, info, previous)
            .await?;
        self.hot
            .manifests
            .insert(HotCache::manifest_key(target, &digest), Arc::new(manifest))
            .await;
        Ok(digest)
    }
}

/// Clears a tag's "revalidating" mark however the task ends.
struct RevalidationGuard<'a> {
    cache: &'a PullThrough,
    key: &'a str,
}

impl Drop for RevalidationGuard<'_> {
    fn drop(&mut self) {
        self.cache.revalidating.remove(self.key);
    }
}
