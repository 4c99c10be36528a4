//! The bounded in-memory hot cache (moka) of manifests and tag resolutions in front of redb.
//!
//! Entries hold ready-made header values and the manifest bytes as [`Bytes`], so a hit is served with
//! reference-count bumps only. moka's `try_get_with` also gives single-flight loading: concurrent misses for
//! one key run one loader and share its result.

use std::sync::Arc;

use axum::http::HeaderValue;
use bytes::Bytes;
use moka::future::Cache;

use crate::digest::Digest;
use crate::route::Target;

/// A manifest ready to serve.
pub struct CachedManifest {
    pub digest: Digest,
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub digest_header: HeaderValue,
    pub etag: HeaderValue,
}

impl CachedManifest {
    pub fn new(digest: Digest, media_type: &str, body: Bytes) -> CachedManifest {
        let value = |s: &str| {
            HeaderValue::from_str(s)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
        };
        CachedManifest {
            digest_header: value(digest.as_str()),
            etag: value(&format!("\"{digest}\"")),
            content_type: value(media_type),
            digest,
            body,
        }
    }
}

/// A tag resolution and until when (Unix seconds) it may be served without asking the upstream.
#[derive(Clone, Debug)]
pub struct TagEntry {
    pub digest: Digest,
    pub fresh_until: u64,
}

/// Per-entry bookkeeping overhead counted against the byte budget besides keys and bodies.
const ENTRY_OVERHEAD: u32 = 256;

/// The two moka caches, sharing one byte budget (manifests get 7/8 of it).
pub struct HotCache {
    pub manifests: Cache<Box<str>, Arc<CachedManifest>, KeyHasher>,
    pub tags: Cache<Box<str>, TagEntry, KeyHasher>,
}

/// foldhash's seeded hasher of good quality instead of std's SipHash, which cost about 300 instructions of a warm
/// manifest GET for a key of ~100 bytes. Keys come from client paths but enter the cache only for manifests the
/// upstream served, and the seed is random per cache.
type KeyHasher = foldhash::quality::RandomState;

impl HotCache {
    #[allow(clippy::borrowed_box)] // moka's weigher receives `&K`
    pub fn new(budget_bytes: u64) -> HotCache {
        let manifests = Cache::builder()
            .max_capacity(budget_bytes - budget_bytes / 8)
            .weigher(|key: &Box<str>, value: &Arc<CachedManifest>| -> u32 {
                let size = key.len() + value.body.len();
                u32::try_from(size)
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .build_with_hasher(KeyHasher::default());
        let tags = Cache::builder()
            .max_capacity((budget_bytes / 8).max(1))
            .weigher(|key: &Box<str>, _: &TagEntry| -> u32 {
                u32::try_from(key.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .build_with_hasher(KeyHasher::default());
        HotCache { manifests, tags }
    }

    /// Key of a manifest by digest within a repository: `registry/repository@digest`.
    pub fn manifest_key(target: &Target, digest: &Digest) -> Box<str> {
        key(target, '@', digest.as_str())
    }

    /// Key of a tag: `registry/repository:tag`.
    pub fn tag_key(target: &Target, tag: &str) -> Box<str> {
        key(target, ':', tag)
    }
}

/// `registry/repository` then `separator` and `last`, in one allocation of the exact size. Every warm manifest GET
/// builds one: `format!` through `Target`'s `Display` cost about 1,500 instructions, a twentieth of the request.
fn key(target: &Target, separator: char, last: &str) -> Box<str> {
    let mut key = String::with_capacity(
        target.registry.len() + 1 + target.repository.len() + separator.len_utf8() + last.len(),
    );
    key.push_str(&target.registry);
    key.push('/');
    key.push_str(&target.repository);
    key.push(separator);
    key.push_str(last);
    key.into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_repository_and_the_reference() {
        let target = Target {
            registry: Arc::from("registry.k8s.io"),
            repository: "sig/pause".to_owned(),
            credentials: None,
        };
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(
            &*HotCache::manifest_key(&target, &digest),
            format!("registry.k8s.io/sig/pause@{digest}")
        );
        assert_eq!(
            &*HotCache::tag_key(&target, "3.10"),
            "registry.k8s.io/sig/pause:3.10"
        );
    }
}
