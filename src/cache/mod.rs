//! The pull-through cache: what handlers call to get a manifest or a blob. It answers from the hot cache,
//! the index and the blob directory, and goes to the upstream only on a miss (or an expired tag), with one
//! upstream request per missing item however many clients ask at once.

mod blobs;
mod fill;
mod hot;
mod manifests;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

pub use blobs::BlobSource;
pub use fill::{BlobFill, FillState};
pub use hot::{CachedManifest, HotCache, TagEntry};

use crate::config::Config;
use crate::digest::Digest;
use crate::store::Store;
use crate::upstream::Upstreams;

/// Whether a request was answered from the cache or needed the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

impl CacheStatus {
    /// `Miss` if either is.
    pub fn and(self, other: CacheStatus) -> CacheStatus {
        if self == CacheStatus::Miss || other == CacheStatus::Miss {
            CacheStatus::Miss
        } else {
            CacheStatus::Hit
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

/// The cache service shared by all requests.
pub struct PullThrough {
    pub store: Arc<Store>,
    upstreams: Upstreams,
    hot: HotCache,
    fills: Arc<DashMap<Digest, Arc<BlobFill>>>,
    tag_ttl: Duration,
}

impl PullThrough {
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> anyhow::Result<PullThrough> {
        Ok(PullThrough {
            store,
            hot: HotCache::new(config.hot_cache_bytes),
            tag_ttl: config.tag_ttl,
            upstreams: Upstreams::new(config)?,
            fills: Arc::new(DashMap::new()),
        })
    }
}
