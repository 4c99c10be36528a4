//! The OCI referrers API (`GET /v2/<name>/referrers/<digest>`), passed through and cached like a tag, so that
//! `cosign verify` and notation work through the mirror, also when the upstream is unreachable.
//!
//! The upstream's (unfiltered) referrers index of a subject is stored as a manifest of the repository under its
//! own digest, and a tag-like record `registry/repository@subject#referrers` points at it with the tag TTL.
//! Within the TTL it is served from the index; after it the upstream is asked again, and on upstream trouble
//! the stored one is served (stale-if-error). `artifactType` filtering is applied here, on the cached index.

use std::sync::Arc;

use bytes::Bytes;

use super::manifests::verified_manifest;
use super::{pull, PullThrough};
use crate::digest::{Algorithm, Digest};
use crate::error::RegistryError;
use crate::manifest::OCI_INDEX;
use crate::route::Target;
use crate::store::{unix_now, TagRecord};

/// A referrers answer ready to serve.
pub struct Referrers {
    pub body: Bytes,
    /// Whether an `artifactType` filter was applied (`OCI-Filters-Applied: artifactType`).
    pub filtered: bool,
}

impl PullThrough {
    /// The referrers of `subject` in `target`, optionally only those of `artifact_type`.
    pub async fn referrers(
        self: &Arc<Self>,
        target: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, RegistryError> {
        let key = format!("{target}@{subject}#referrers");
        let lookup = key.clone();
        let stored = self.store.index(move |index| index.tag(&lookup)).await?;
        let ttl = self.tag_policy.ttl(&target.registry);
        let fresh = stored
            .as_ref()
            .is_some_and(|r| self.air_gapped || r.fetched_at.saturating_add(ttl) > unix_now());
        let index_digest = match (&stored, fresh) {
            (Some(record), true) => record.digest.clone(),
            _ => match self
                .fetch_referrers(target, subject, &key, stored.as_ref())
                .await
            {
                Ok(digest) => digest,
                Err(err) if err.is_upstream_trouble() => match &stored {
                    Some(record) => {
                        tracing::warn!(%target, %subject, error = %err, "upstream unavailable; serving cached referrers");
                        record.digest.clone()
                    }
                    None => return Err(err),
                },
                Err(err) => return Err(err),
            },
        };
        let lookup = index_digest.clone();
        let stored_index = self
            .store
            .index(move |index| index.manifest(&lookup))
            .await?
            .ok_or_else(|| {
                RegistryError::internal("referrers", "index record without its manifest")
            })?;
        let body = Bytes::from(stored_index.body);
        match artifact_type {
            None => Ok(Referrers {
                body,
                filtered: false,
            }),
            Some(wanted) => Ok(Referrers {
                body: filter(&body, wanted)?,
                filtered: true,
            }),
        }
    }

    async fn fetch_referrers(
        &self,
        target: &Target,
        subject: &Digest,
        key: &str,
        previous: Option<&TagRecord>,
    ) -> Result<String, RegistryError> {
        let upstream = self.upstreams.get(&target.registry)?;
        let mut fetched = upstream
            .referrers(&pull(target), subject.as_str(), None)
            .await?;
        // Whatever the upstream calls it, a referrers answer is an image index.
        fetched.content_type = Some(OCI_INDEX.to_owned());
        let digest = Digest::of(Algorithm::Sha256, &fetched.body);
        let (manifest, info) = verified_manifest(digest.clone(), &fetched)?;
        self.record_tagged(target, key, &manifest, info, previous)
            .await?;
        Ok(digest.to_string())
    }
}

/// The index with only the descriptors of `artifact_type`.
fn filter(body: &[u8], artifact_type: &str) -> Result<Bytes, RegistryError> {
    let mut index: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::internal("stored referrers index", e))?;
    if let Some(manifests) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        manifests.retain(|d| d.get("artifactType").and_then(|t| t.as_str()) == Some(artifact_type));
    }
    let encoded =
        serde_json::to_vec(&index).map_err(|e| RegistryError::internal("referrers", e))?;
    Ok(Bytes::from(encoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_artifact_type() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"artifactType":"application/spdx+json"}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&filter(body, "application/spdx+json").unwrap()).unwrap();
        let manifests = out["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        assert_eq!(manifests[0]["digest"], "sha256:bb");
    }
}
