//! The pull-through cache: what handlers call to get a manifest or a blob. It answers from the hot cache,
//! the index and the blob directory, and goes to the upstream only on a miss (or, in the background, to
//! revalidate an expired tag), with one upstream request per missing item however many clients ask at once.

mod blobs;
mod fill;
mod hot;
mod manifests;
mod passthrough;
mod prefetch;
mod referrers;
mod shared;
mod tags;
mod telemetry;
mod uncached;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

pub use blobs::BlobSource;
pub use fill::{BlobFill, FillState, FillWriters};
pub use hot::{CachedManifest, HotCache, TagEntry};
pub use passthrough::Asked;
pub use prefetch::PrefetchReport;
pub use referrers::Referrers;
pub use shared::shared_body;

use crate::config::Config;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::route::Target;
use crate::store::{Bucket, Store};
use crate::upstream::{Pull, Upstream, Upstreams};

/// Whether a request was answered from the cache or needed the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// An in-flight fill: one per registry and digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FillKey {
    registry: Arc<str>,
    digest: Digest,
}

impl FillKey {
    fn new(target: &Target, digest: &Digest) -> FillKey {
        FillKey {
            registry: target.registry.clone(),
            digest: digest.clone(),
        }
    }
}

/// How long tags of one registry stay fresh, and which never need revalidation.
struct TagPolicy {
    default_ttl: Duration,
    ttl: HashMap<String, Duration>,
    immutable: HashMap<String, globset::GlobSet>,
}

impl TagPolicy {
    fn new(config: &Config) -> anyhow::Result<TagPolicy> {
        let mut ttl = HashMap::new();
        let mut immutable = HashMap::new();
        for registry in &config.registries {
            if let Some(t) = registry.tag_ttl {
                ttl.insert(registry.name.clone(), t);
            }
            if !registry.immutable_tags.is_empty() {
                let mut set = globset::GlobSetBuilder::new();
                for pattern in &registry.immutable_tags {
                    set.add(globset::Glob::new(pattern)?);
                }
                immutable.insert(registry.name.clone(), set.build()?);
            }
        }
        Ok(TagPolicy {
            default_ttl: config.tag_ttl,
            ttl,
            immutable,
        })
    }

    fn ttl(&self, registry: &str) -> u64 {
        self.ttl
            .get(registry)
            .unwrap_or(&self.default_ttl)
            .as_secs()
    }

    fn is_immutable(&self, registry: &str, tag: &str) -> bool {
        self.immutable
            .get(registry)
            .is_some_and(|set| set.is_match(tag))
    }
}

/// The cache service shared by all requests.
pub struct PullThrough {
    pub store: Arc<Store>,
    upstreams: Upstreams,
    hot: HotCache,
    fills: Arc<DashMap<FillKey, Arc<BlobFill>>>,
    fill_writers: Arc<FillWriters>,
    tag_policy: TagPolicy,
    /// Tags an upstream recently answered 404 for (`registry/repository:tag`).
    unknown_tags: moka::sync::Cache<Box<str>, ()>,
    /// Tags being revalidated in the background (one at a time per tag).
    revalidating: DashMap<Box<str>, ()>,
    /// Passthrough credentials the upstream accepted, per repository (`fingerprint registry/repository`).
    accepted_credentials: moka::sync::Cache<String, ()>,
    air_gapped: bool,
    any_private_registry: bool,
    upstream_timeout: Duration,
    upstream_connect_timeout: Duration,
    fill_min_bytes_per_sec: u64,
    /// Notified whenever a blob lands in the store (the disk ceiling is checked then).
    pub blob_stored: Arc<tokio::sync::Notify>,
    /// Below this much free space, uncached blobs are streamed to clients without being stored.
    min_free_bytes: u64,
    /// Fills and revalidations running in the background: shutdown waits for them (see [`PullThrough::drain`]),
    /// so a blob a client already received is not left half-committed.
    background: tokio_util::task::TaskTracker,
    /// The bucket shared with other replicas (scale-out mode).
    bucket: Option<Arc<Bucket>>,
}

/// How many unknown tags are remembered at most.
const UNKNOWN_TAGS: u64 = 10_000;
/// How long an accepted passthrough credential is trusted for a repository without asking the upstream.
const CREDENTIAL_TTL: Duration = Duration::from_secs(60);

impl PullThrough {
    pub fn new(config: Arc<Config>, store: Arc<Store>) -> anyhow::Result<PullThrough> {
        let upstreams = Upstreams::new(config.clone())?;
        let any_private_registry = upstreams.any_private();
        let bucket = config
            .s3
            .as_ref()
            .map(Bucket::open)
            .transpose()?
            .map(Arc::new);
        let cache = PullThrough {
            bucket,
            store,
            hot: HotCache::new(config.hot_cache_bytes),
            tag_policy: TagPolicy::new(&config)?,
            unknown_tags: moka::sync::Cache::builder()
                .max_capacity(UNKNOWN_TAGS)
                .time_to_live(config.negative_ttl.max(Duration::from_millis(1)))
                .build(),
            revalidating: DashMap::new(),
            accepted_credentials: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CREDENTIAL_TTL)
                .build(),
            air_gapped: config.air_gapped,
            any_private_registry,
            upstream_timeout: config.upstream_timeout,
            upstream_connect_timeout: config.upstream_connect_timeout,
            fill_min_bytes_per_sec: config.fill_min_bytes_per_sec,
            upstreams,
            fills: Arc::new(DashMap::new()),
            fill_writers: Arc::new(FillWriters::new(config.max_concurrent_fills)),
            blob_stored: Arc::new(tokio::sync::Notify::new()),
            min_free_bytes: config.min_free_bytes.as_u64(),
            background: tokio_util::task::TaskTracker::new(),
        };
        telemetry::observe(&cache);
        Ok(cache)
    }

    /// Whether a blob is being downloaded from any registry (it may be indexed but not yet renamed into place).
    pub fn is_filling(&self, digest: &str) -> bool {
        self.fills.iter().any(|f| f.key().digest.as_str() == digest)
    }

    /// Waits up to `within` for background fills and revalidations to finish; new ones can still start
    /// meanwhile (a request finishing late). Returns how many were still running at the deadline.
    pub async fn drain(&self, within: Duration) -> usize {
        self.background.close();
        let _ = tokio::time::timeout(within, self.background.wait()).await;
        self.background.len()
    }

    /// The free-space floor of the blob filesystem (readiness reports below it).
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// The shared bucket, in scale-out mode.
    pub fn bucket(&self) -> Option<&Arc<Bucket>> {
        self.bucket.as_ref()
    }

    /// Where misses of `registry` are fetched from: the shared bucket first (scale-out mode, registries reached
    /// without credentials), then the registry. Checks the upstream policy first, before any traffic.
    fn upstream(&self, registry: &Arc<str>) -> Result<Arc<dyn Upstream>, RegistryError> {
        self.upstream_reading_blobs(registry, true)
    }

    /// As [`PullThrough::upstream`]; `read_blobs: false` when the bucket was just asked for the blob already.
    fn upstream_reading_blobs(
        &self,
        registry: &Arc<str>,
        read_blobs: bool,
    ) -> Result<Arc<dyn Upstream>, RegistryError> {
        let inner = self.upstreams.get(registry)?;
        match &self.bucket {
            Some(bucket) if !self.upstreams.is_private(registry) => {
                Ok(Arc::new(shared::BucketFirst {
                    bucket: bucket.clone(),
                    inner,
                    background: self.background.clone(),
                    read_blobs,
                }))
            }
            _ => Ok(inner),
        }
    }

    /// The upstreams, for routing (aliases) and auth decisions.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }
}

/// The upstream request context of a target.
fn pull(target: &Target) -> Pull<'_> {
    Pull {
        repository: &target.repository,
        credentials: target.credentials.as_ref(),
    }
}
