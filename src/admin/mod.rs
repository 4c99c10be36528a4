//! Operating the cache: `list`, `prune`, `load`, pins, invalidation, the orphan sweep and the disk ceiling.
//!
//! redb lets one process open the index, and only the server knows its hot cache and in-flight fills, so these
//! operations run inside the server ([`api`] serves them on a Unix socket) and the CLI is a thin client
//! ([`client`]). When no server holds the index, the CLI opens it itself and runs this same code.

pub mod api;
pub mod client;
pub mod load;
pub mod plan;
pub mod render;
mod telemetry;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::PullThrough;
use crate::config::Config;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::{
    config_platform, image_config_digest, index_children, is_index_type, Platform,
};
use crate::reference::Reference;
use crate::route::{normalize_host, Aliases, ImageRef};
use crate::store::{unix_now, PinRecord, Removal, Snapshot, Store, SCHEMA_VERSION};
use plan::{AgeBy, Catalog, Image, Selection};

/// Blob files younger than this are never swept as orphans: a fill may be between its rename and the index
/// write of a later pull.
const ORPHAN_GRACE_SECS: u64 = 600;

/// Unreferenced objects in the shared bucket younger than this are kept by a sweep unless told otherwise.
const DEFAULT_BUCKET_GRACE: Duration = Duration::from_secs(6 * 3600);

/// Why an operation failed, with the kind the admin API maps to a status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorKind {
    BadRequest,
    NotCached,
    Pinned,
    Upstream,
    Internal,
}

impl AdminError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AdminError {
        AdminError {
            kind,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> AdminError {
        AdminError::new(ErrorKind::BadRequest, message)
    }

    fn internal(message: impl std::fmt::Display) -> AdminError {
        AdminError::new(ErrorKind::Internal, message.to_string())
    }
}

impl From<RegistryError> for AdminError {
    fn from(err: RegistryError) -> AdminError {
        let kind = match &err {
            RegistryError::NameInvalid(_)
            | RegistryError::DigestInvalid(_)
            | RegistryError::ManifestInvalid(_)
            | RegistryError::Unsupported(_)
            | RegistryError::Denied(_) => ErrorKind::BadRequest,
            RegistryError::ManifestUnknown(_)
            | RegistryError::BlobUnknown(_)
            | RegistryError::NameUnknown(_) => ErrorKind::NotCached,
            RegistryError::Internal(_) => ErrorKind::Internal,
            _ => ErrorKind::Upstream,
        };
        // Operators see the whole message: the admin API is theirs, not a client's.
        AdminError::new(kind, err.message().to_owned())
    }
}

type AdminResult<T> = Result<T, AdminError>;

/// `GET /admin/v1/stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    pub version: String,
    pub schema_version: u64,
    pub db: String,
    pub blobs_dir: String,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub images: u64,
    pub pins: u64,
    pub max_cache_bytes: Option<u64>,
    pub free_bytes: u64,
}

/// `GET /admin/v1/images`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<Image>,
    pub total: Total,
}

/// Totals of a list: shared blobs counted once.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Total {
    pub images: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// `POST /admin/v1/prune`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// A duration such as `30d`; `None`: any age.
    #[serde(default)]
    pub older_than: Option<String>,
    #[serde(default)]
    pub by: AgeBy,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub keep_latest: Option<usize>,
    #[serde(default)]
    pub dry_run: bool,
    /// Remove every unpinned image: required when no other criterion is given, so that a bare prune
    /// cannot empty the cache by accident.
    #[serde(default)]
    pub all: bool,
    /// Sweep the shared bucket (scale-out mode) instead of pruning this replica's images.
    #[serde(default)]
    pub bucket: bool,
    /// Unreferenced bucket objects younger than this (`6h`) are kept; at least twice `s3.refs_interval`.
    #[serde(default)]
    pub bucket_grace: Option<String>,
}

/// What a prune removed (or, dry, would remove).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// The bucket sweep, for `bucket: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<crate::store::SweepReport>,
    pub images: Vec<Image>,
    pub manifests: u64,
    pub blobs: u64,
    pub bytes_freed: u64,
}

/// `POST /admin/v1/load`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    pub image: String,
    #[serde(default)]
    pub platforms: Vec<String>,
}

/// What loading one image did.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoadReport {
    /// The reference, canonical (`docker.io/library/alpine:3.20`).
    pub image: String,
    #[serde(flatten)]
    pub prefetch: crate::cache::PrefetchReport,
}

/// `pin`, `unpin`, `invalidate` bodies.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRequest {
    pub reference: String,
}

/// A pin as listed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pin {
    pub reference: String,
    pub digest: String,
    pub created: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PinList {
    pub pins: Vec<Pin>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Unpinned {
    pub reference: String,
    pub removed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Invalidated {
    pub reference: String,
    pub tags: Vec<String>,
    pub manifests: u64,
    pub blobs: u64,
    pub bytes_freed: u64,
}

/// What the orphan sweep did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SweepReport {
    /// Blob files no index entry knew (a crash between a removal's commit and its unlink), removed.
    pub files_removed: u64,
    pub bytes_freed: u64,
    /// Index entries whose file was gone, dropped (the next pull fetches the blob again).
    pub entries_dropped: u64,
}

/// The operations, over one store and cache.
pub struct Operations {
    store: Arc<Store>,
    cache: Arc<PullThrough>,
    default_registry: Arc<str>,
    aliases: Aliases,
    db: String,
    max_cache_bytes: Option<u64>,
    /// `metrics_max_series` when `metrics_repositories` is on.
    repository_series: Option<usize>,
    repository_series_refresh: Duration,
    /// Whether the store's running blob-byte count has been set from a snapshot yet.
    blob_bytes_counted: std::sync::atomic::AtomicBool,
    /// One removal at a time: two prunes planning from the same snapshot would double-count.
    removing: tokio::sync::Mutex<()>,
}

impl Operations {
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        cache: Arc<PullThrough>,
    ) -> anyhow::Result<Operations> {
        Ok(Operations {
            default_registry: normalize_host(&config.default_registry)
                .map_err(|e| anyhow::anyhow!("default_registry: {e}"))?,
            aliases: cache.upstreams().aliases().clone(),
            store,
            cache,
            db: config.db_path().display().to_string(),
            max_cache_bytes: config.max_cache_bytes.map(|b| b.as_u64()),
            repository_series: config
                .metrics_repositories
                .then_some(config.metrics_max_series),
            repository_series_refresh: config.metrics_refresh_interval,
            blob_bytes_counted: std::sync::atomic::AtomicBool::new(false),
            removing: tokio::sync::Mutex::new(()),
        })
    }

    fn parse_ref(&self, text: &str) -> AdminResult<ImageRef> {
        ImageRef::parse(text, &self.default_registry, &self.aliases)
            .map_err(|e| AdminError::bad(format!("{text:?}: {}", e.message())))
    }

    /// The index as of now: pending access times (batched by the server every 10 s) are written first, so
    /// that a pull of a moment ago counts.
    /// Publishes this replica's reference set to the shared bucket (scale-out mode): every manifest and blob
    /// digest its index holds. Returns how many, or `None` without a bucket.
    pub async fn publish_refs(&self) -> AdminResult<Option<usize>> {
        let Some(bucket) = self.cache.bucket() else {
            return Ok(None);
        };
        let snapshot = self.snapshot().await?;
        // Everything a manifest references counts too, whether or not this replica has a blob entry for it.
        let digests: Vec<String> = snapshot
            .manifests
            .keys()
            .chain(snapshot.blobs.keys())
            .chain(
                snapshot
                    .manifests
                    .values()
                    .flat_map(|m| m.references.iter()),
            )
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        bucket
            .put_refs(&digests)
            .await
            .map_err(|e| AdminError::new(ErrorKind::Upstream, e.to_string()))?;
        Ok(Some(digests.len()))
    }

    /// Sweeps the shared bucket: publishes this replica's reference set, then deletes what no replica's set
    /// names and is older than the grace.
    async fn sweep_bucket(&self, request: &PruneRequest) -> AdminResult<PruneReport> {
        let Some(bucket) = self.cache.bucket().cloned() else {
            return Err(AdminError::bad(
                "bucket: this cache has no shared bucket (s3: is not configured)",
            ));
        };
        if request.older_than.is_some()
            || request.pattern.is_some()
            || request.keep_latest.is_some()
            || request.all
        {
            return Err(AdminError::bad(
                "bucket: a bucket sweep takes no image criteria (older_than, pattern, keep_latest, all)",
            ));
        }
        let grace = match request.bucket_grace.as_deref() {
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                AdminError::bad(format!("bucket_grace {text:?}: {e} (e.g. 6h, 30m)"))
            })?,
            None => DEFAULT_BUCKET_GRACE,
        };
        let floor = bucket.refs_interval() * 2;
        if grace < floor {
            return Err(AdminError::bad(format!(
                "bucket_grace {}: must be at least twice s3.refs_interval ({}), or a replica's newest blobs could go before it names them",
                humantime::format_duration(grace),
                humantime::format_duration(floor)
            )));
        }
        let _one_at_a_time = self.removing.lock().await;
        self.publish_refs().await?;
        let sweep = bucket
            .sweep(grace, request.dry_run)
            .await
            .map_err(|e| AdminError::new(ErrorKind::Upstream, e.to_string()))?;
        tracing::info!(dry_run = request.dry_run, ?sweep, "bucket swept");
        Ok(PruneReport {
            dry_run: request.dry_run,
            manifests: sweep.manifests_deleted,
            blobs: sweep.blobs_deleted,
            bytes_freed: sweep.bytes_freed,
            bucket: Some(sweep),
            ..PruneReport::default()
        })
    }

    async fn snapshot(&self) -> AdminResult<Snapshot> {
        self.store.flush_access_times().await?;
        let snapshot = self.store.index(|index| index.snapshot()).await?;
        self.store
            .set_blob_bytes(snapshot.blobs.values().map(|b| b.size).sum());
        self.blob_bytes_counted
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(snapshot)
    }

    pub async fn stats(&self) -> AdminResult<Stats> {
        let snapshot = self.snapshot().await?;
        let catalog = Catalog::new(&snapshot);
        Ok(Stats {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version: SCHEMA_VERSION,
            db: self.db.clone(),
            blobs_dir: self.store.blobs.root().display().to_string(),
            manifests: snapshot.manifests.len() as u64,
            tags: snapshot.tags.keys().filter(|k| !k.contains('#')).count() as u64,
            blobs: snapshot.blobs.len() as u64,
            blob_bytes: snapshot.blobs.values().map(|b| b.size).sum(),
            images: catalog.roots.len() as u64,
            pins: snapshot.pins.len() as u64,
            max_cache_bytes: self.max_cache_bytes,
            free_bytes: self.store.blobs.free_bytes().unwrap_or(0),
        })
    }

    /// Cached images, sorted by reference; `pattern` filters on `registry/repository[:tag]`.
    pub async fn images(&self, pattern: Option<&str>) -> AdminResult<ImageList> {
        let matcher = pattern
            .map(plan::pattern)
            .transpose()
            .map_err(AdminError::bad)?;
        let snapshot = self.snapshot().await?;
        let catalog = Catalog::new(&snapshot);
        let mut images = Vec::new();
        let mut blobs = BTreeSet::new();
        let mut roots = BTreeSet::new();
        for root in catalog.roots.values() {
            let rows: Vec<Image> = catalog
                .images_of(root)
                .into_iter()
                .filter(|row| {
                    matcher.as_ref().is_none_or(|m| {
                        m.is_match(&row.reference)
                            || m.is_match(format!("{}/{}", row.registry, row.repository))
                    })
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let platforms = self.platforms_of(&snapshot, &root.digest).await;
            for mut row in rows {
                row.platforms = platforms.clone();
                images.push(row);
            }
            roots.insert(root.digest.clone());
            blobs.extend(root.blobs.iter().cloned());
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        let manifest_bytes: u64 = roots
            .iter()
            .flat_map(|r| catalog.roots[r].manifests.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|m| snapshot.manifests[m].size)
            .sum();
        let total = Total {
            images: images.len() as u64,
            blobs: blobs.len() as u64,
            bytes: manifest_bytes + blobs.iter().map(|b| snapshot.blobs[b].size).sum::<u64>(),
        };
        Ok(ImageList { images, total })
    }

    /// Platforms of a root: from an index's entries, or from an image's config blob.
    async fn platforms_of(&self, snapshot: &Snapshot, digest: &str) -> Vec<String> {
        let Some(meta) = snapshot.manifests.get(digest) else {
            return Vec::new();
        };
        let key = digest.to_owned();
        let Ok(Some(body)) = self
            .store
            .index(move |index| index.manifest_body(&key))
            .await
        else {
            return Vec::new();
        };
        if is_index_type(&meta.media_type) {
            let mut platforms: Vec<String> = index_children(&body)
                .unwrap_or_default()
                .into_iter()
                .filter(|(child, _)| snapshot.manifests.contains_key(child))
                .filter_map(|(_, p)| p.map(|p| p.to_string()))
                .collect();
            platforms.dedup();
            return platforms;
        }
        let config = image_config_digest(&body).and_then(|d| d.parse::<Digest>().ok());
        let platform = config
            .and_then(|d| std::fs::read(self.store.blobs.path(&d)).ok())
            .and_then(|bytes| config_platform(&bytes));
        platform.map(|p| vec![p.to_string()]).unwrap_or_default()
    }

    /// Removes what `doomed` selects (unless `dry_run`), unlinks freed blob files and drops hot-cache entries.
    async fn remove_roots(
        &self,
        snapshot: &Snapshot,
        selected: &plan::Selected,
        extra_blobs: BTreeSet<String>,
        planned_at: u64,
        dry_run: bool,
    ) -> AdminResult<PruneReport> {
        let catalog = Catalog::new(snapshot);
        let doomed = &selected.roots;
        let mut removal = catalog.removal(doomed, planned_at);
        removal.blobs.extend(extra_blobs);
        removal.tags.extend(selected.tags.iter().cloned());
        let mut images: Vec<Image> = Vec::new();
        for root in catalog.roots.values() {
            let whole = doomed.contains(&root.digest);
            let rows: Vec<Image> = catalog
                .images_of(root)
                .into_iter()
                .filter(|i| whole || selected.tags.contains(&i.reference))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let platforms = self.platforms_of(snapshot, &root.digest).await;
            for mut image in rows {
                image.platforms = platforms.clone();
                images.push(image);
            }
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        if dry_run {
            return Ok(PruneReport {
                dry_run: true,
                images,
                manifests: removal.manifests.len() as u64,
                blobs: removal.blobs.len() as u64,
                bytes_freed: catalog.bytes_of(&removal),
                bucket: None,
            });
        }
        let removed = self.apply(removal).await?;
        let gone: BTreeSet<&str> = removed.manifests.iter().map(|(d, _)| d.as_str()).collect();
        let tags_gone: BTreeSet<&str> = removed.tags.iter().map(String::as_str).collect();
        // A root pulled again while the plan was made stays, and is not reported.
        images.retain(|i| {
            gone.contains(i.digest.as_str()) || tags_gone.contains(i.reference.as_str())
        });
        let manifest_bytes: u64 = removed
            .manifests
            .iter()
            .filter_map(|(d, _)| snapshot.manifests.get(d))
            .map(|m| m.size)
            .sum();
        Ok(PruneReport {
            dry_run: false,
            images,
            manifests: removed.manifests.len() as u64,
            blobs: removed.blobs.len() as u64,
            bytes_freed: manifest_bytes + removed.blobs.iter().map(|(_, s)| s).sum::<u64>(),
            bucket: None,
        })
    }

    /// Commits a removal to the index, then unlinks blob files and forgets hot entries. A crash between the
    /// commit and the unlinks leaves files no entry knows, which the sweep removes.
    async fn apply(&self, removal: Removal) -> AdminResult<crate::store::Removed> {
        // Pulls since the plan was made reach the index first, so that the removal skips their images.
        self.store.flush_access_times().await?;
        let removed = self
            .store
            .index(move |index| index.remove(&removal))
            .await?;
        for (digest, _) in &removed.blobs {
            if let Ok(digest) = digest.parse::<Digest>() {
                if let Err(err) = self.store.blobs.remove(&digest) {
                    tracing::warn!(%digest, error = %err, "could not remove a pruned blob file");
                }
            }
        }
        self.cache.forget(&removed.manifests, &removed.tags).await;
        Ok(removed)
    }

    /// A prune asked for by an operator.
    pub async fn prune(&self, request: &PruneRequest) -> AdminResult<PruneReport> {
        self.prune_by(request, telemetry::Trigger::Manual).await
    }

    async fn prune_by(
        &self,
        request: &PruneRequest,
        trigger: telemetry::Trigger,
    ) -> AdminResult<PruneReport> {
        if request.bucket {
            return self.sweep_bucket(request).await;
        }
        let older_than = request
            .older_than
            .as_deref()
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    AdminError::bad(format!("older_than {text:?}: {e} (e.g. 30d, 12h, 90m)"))
                })
            })
            .transpose()?;
        let pattern = request
            .pattern
            .as_deref()
            .map(plan::pattern)
            .transpose()
            .map_err(AdminError::bad)?;
        if older_than.is_none()
            && request.pattern.is_none()
            && request.keep_latest.is_none()
            && !request.all
        {
            return Err(AdminError::bad(
                "say what to prune: older_than, pattern or keep_latest (all: true removes every unpinned image)",
            ));
        }
        let selection = Selection {
            older_than: older_than.map(|d| d.as_secs()),
            by: request.by,
            pattern,
            keep_latest: request.keep_latest,
        };
        let _one_at_a_time = self.removing.lock().await;
        let now = unix_now();
        let snapshot = self.snapshot().await?;
        let catalog = Catalog::new(&snapshot);
        let selected = selection.select(&catalog, now);
        // Chosen by age: an image pulled since the plan (or in its second) is no longer that old, and stays.
        // Chosen by name alone: it goes, as asked.
        let planned_at = if older_than.is_some() { now } else { u64::MAX };
        // Blobs nothing references go too once they are past the age limit (and the orphan grace).
        let extra = if request.pattern.is_none() && request.keep_latest.is_none() {
            let age = older_than
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .max(ORPHAN_GRACE_SECS);
            catalog.unreferenced_blobs(now.saturating_sub(age))
        } else {
            BTreeSet::new()
        };
        let report = self
            .remove_roots(&snapshot, &selected, extra, planned_at, request.dry_run)
            .await?;
        if !request.dry_run {
            let sweep = self.sweep_locked().await?;
            if sweep.files_removed + sweep.entries_dropped > 0 {
                tracing::info!(?sweep, "swept crash leftovers");
            }
            telemetry::pruned(trigger, &report);
            tracing::info!(
                images = report.images.len(),
                manifests = report.manifests,
                blobs = report.blobs,
                bytes_freed = report.bytes_freed,
                "pruned"
            );
        }
        Ok(report)
    }

    /// Evicts least recently pulled images while the blob bytes exceed the ceiling, down to 90% of it.
    pub async fn enforce_ceiling(&self) -> AdminResult<Option<PruneReport>> {
        let Some(ceiling) = self.max_cache_bytes else {
            return Ok(None);
        };
        // The running count (kept up to date as blobs land and go) spares a snapshot of the whole index on
        // every check while the cache is under the ceiling; the snapshot below has the last word.
        if self
            .blob_bytes_counted
            .load(std::sync::atomic::Ordering::Relaxed)
            && self.store.blob_bytes() <= ceiling
        {
            return Ok(None);
        }
        let _one_at_a_time = self.removing.lock().await;
        let now = unix_now();
        let snapshot = self.snapshot().await?;
        let total: u64 = snapshot.blobs.values().map(|b| b.size).sum();
        if total <= ceiling {
            return Ok(None);
        }
        let catalog = Catalog::new(&snapshot);
        let target = ceiling - ceiling / 10;
        let doomed = plan::Selected {
            roots: plan::eviction(&catalog, target),
            tags: BTreeSet::new(),
        };
        let extra = catalog.unreferenced_blobs(now.saturating_sub(ORPHAN_GRACE_SECS));
        let report = self
            .remove_roots(&snapshot, &doomed, extra, now, false)
            .await?;
        telemetry::pruned(telemetry::Trigger::Ceiling, &report);
        tracing::info!(
            ceiling,
            before = total,
            images = report.images.len(),
            bytes_freed = report.bytes_freed,
            "evicted least recently pulled images to stay under max_cache_bytes"
        );
        if total.saturating_sub(report.bytes_freed) > ceiling {
            tracing::warn!(
                ceiling,
                "max_cache_bytes: still above the ceiling after evicting every unpinned image"
            );
        }
        Ok(Some(report))
    }

    /// Removes blob files no index entry knows and drops index entries whose file is gone.
    pub async fn sweep(&self) -> AdminResult<SweepReport> {
        let _one_at_a_time = self.removing.lock().await;
        self.sweep_locked().await
    }

    async fn sweep_locked(&self) -> AdminResult<SweepReport> {
        let snapshot = self.snapshot().await?;
        let store = self.store.clone();
        let files = crate::blocking::spawn(move || store.blobs.files())
            .await
            .map_err(AdminError::internal)?
            .map_err(|e| AdminError::internal(format!("reading the blob directory: {e}")))?;
        let mut report = SweepReport::default();
        let on_disk: BTreeSet<&str> = files.iter().map(|f| f.digest.as_str()).collect();
        for file in &files {
            if snapshot.blobs.contains_key(&file.digest) || file.age_secs < ORPHAN_GRACE_SECS {
                continue;
            }
            let Ok(digest) = file.digest.parse::<Digest>() else {
                continue;
            };
            // Recheck at the last moment: a fill may have indexed it since the snapshot.
            let key = file.digest.clone();
            if self.store.index(move |i| i.blob(&key)).await?.is_some() {
                continue;
            }
            if self.store.blobs.remove(&digest).unwrap_or(false) {
                report.files_removed += 1;
                report.bytes_freed += file.size;
            }
        }
        // Without a local tier the shared bucket holds the blobs: no local file is expected.
        let bucket_holds_blobs = self.cache.bucket().is_some_and(|b| !b.local_tier());
        let missing: BTreeSet<String> = snapshot
            .blobs
            .keys()
            .filter(|_| !bucket_holds_blobs)
            // A fill indexes its blob just before renaming it into place.
            .filter(|d| !on_disk.contains(d.as_str()) && !self.cache.is_filling(d))
            .filter(|d| {
                d.parse::<Digest>()
                    .is_ok_and(|digest| !self.store.blobs.path(&digest).exists())
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            let removal = Removal {
                blobs: missing,
                planned_at: u64::MAX,
                ..Removal::default()
            };
            let dropped = self
                .store
                .index(move |index| index.drop_blob_entries(&removal.blobs))
                .await?;
            report.entries_dropped = dropped;
        }
        Ok(report)
    }

    /// Pre-loads one image.
    pub async fn load(&self, request: &LoadRequest) -> AdminResult<LoadReport> {
        let image = self.parse_ref(&request.image)?;
        let platforms = request
            .platforms
            .iter()
            .map(|p| Platform::parse(p).map_err(AdminError::bad))
            .collect::<AdminResult<Vec<_>>>()?;
        let prefetch = self
            .cache
            .prefetch(&image.target, &image.reference, &platforms)
            .await?;
        Ok(LoadReport {
            image: image.to_string(),
            prefetch,
        })
    }

    pub async fn pins(&self) -> AdminResult<PinList> {
        let snapshot = self.snapshot().await?;
        Ok(PinList {
            pins: snapshot
                .pins
                .into_iter()
                .map(|(reference, p)| Pin {
                    reference,
                    digest: p.digest,
                    created: p.created,
                })
                .collect(),
        })
    }

    /// Pins a cached image.
    pub async fn pin(&self, reference: &str) -> AdminResult<Pin> {
        let image = self.parse_ref(reference)?;
        let canonical = image.to_string();
        let snapshot = self.snapshot().await?;
        let digest = self.cached_digest(&snapshot, &image)?;
        let record = PinRecord {
            digest: digest.clone(),
            created: unix_now(),
        };
        let key = canonical.clone();
        let stored = record.clone();
        self.store
            .index(move |index| index.put_pin(&key, &stored))
            .await?;
        Ok(Pin {
            reference: canonical,
            digest,
            created: record.created,
        })
    }

    pub async fn unpin(&self, reference: &str) -> AdminResult<Unpinned> {
        let canonical = self.parse_ref(reference)?.to_string();
        let key = canonical.clone();
        let removed = self
            .store
            .index(move |index| index.remove_pin(&key))
            .await?;
        Ok(Unpinned {
            reference: canonical,
            removed,
        })
    }

    /// A tag: drops the mapping, so the next pull asks the upstream. A digest: removes the image (refused when
    /// pinned).
    pub async fn invalidate(&self, reference: &str) -> AdminResult<Invalidated> {
        let image = self.parse_ref(reference)?;
        let canonical = image.to_string();
        let _one_at_a_time = self.removing.lock().await;
        let snapshot = self.snapshot().await?;
        let digest = self.cached_digest(&snapshot, &image)?;
        match &image.reference {
            Reference::Tag(_) => {
                let removal = Removal {
                    tags: BTreeSet::from([canonical.clone()]),
                    planned_at: unix_now(),
                    ..Removal::default()
                };
                let removed = self.apply(removal).await?;
                Ok(Invalidated {
                    reference: canonical,
                    tags: removed.tags,
                    manifests: 0,
                    blobs: 0,
                    bytes_freed: 0,
                })
            }
            Reference::Digest(_) => {
                let catalog = Catalog::new(&snapshot);
                let Some(root) = catalog.roots.get(&digest) else {
                    return Err(AdminError::bad(format!(
                        "{canonical} is part of another image (a platform of an index); invalidate the index"
                    )));
                };
                if root.pinned {
                    return Err(AdminError::new(
                        ErrorKind::Pinned,
                        format!("{canonical} is pinned; unpin it first"),
                    ));
                }
                // Asked for explicitly: removed even if pulled a moment ago.
                let report = self
                    .remove_roots(
                        &snapshot,
                        &plan::Selected {
                            roots: BTreeSet::from([digest]),
                            tags: BTreeSet::new(),
                        },
                        BTreeSet::new(),
                        u64::MAX,
                        false,
                    )
                    .await?;
                Ok(Invalidated {
                    reference: canonical,
                    tags: report
                        .images
                        .iter()
                        .filter(|i| i.tag.is_some())
                        .map(|i| i.reference.clone())
                        .collect(),
                    manifests: report.manifests,
                    blobs: report.blobs,
                    bytes_freed: report.bytes_freed,
                })
            }
        }
    }

    /// The digest a reference names in the index, or `NotCached`.
    fn cached_digest(&self, snapshot: &Snapshot, image: &ImageRef) -> AdminResult<String> {
        let canonical = image.to_string();
        let digest = match &image.reference {
            Reference::Tag(_) => snapshot.tags.get(&canonical).map(|t| t.digest.clone()),
            Reference::Digest(d) => snapshot
                .manifests
                .get(d.as_str())
                .filter(|m| m.repositories.contains(&image.target.to_string()))
                .map(|_| d.to_string()),
        };
        digest.ok_or_else(|| {
            AdminError::new(
                ErrorKind::NotCached,
                format!("{canonical} is not cached (load it first: ociregistry load --image {canonical})"),
            )
        })
    }
}

/// Runs automatic pruning (`prune_older_than` every `prune_interval`) and the disk ceiling (every
/// `ceiling_check`, and after blobs land, at most once a second) until `stop`.
pub async fn maintain(
    ops: Arc<Operations>,
    prune_older_than: Option<Duration>,
    prune_interval: Duration,
    ceiling_check: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let blob_stored = ops.cache.blob_stored.clone();
    let has_ceiling = ops.max_cache_bytes.is_some();
    telemetry::observe_ceiling(ops.max_cache_bytes);
    let repository_series = ops.repository_series.filter(|_| crate::metrics::enabled());
    if repository_series.is_some() {
        telemetry::observe_repositories();
    }
    let mut series_tick = tokio::time::interval(ops.repository_series_refresh);
    series_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut series_warned = false;
    let mut prune_tick = tokio::time::interval(prune_interval);
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ceiling_tick = tokio::time::interval(ceiling_check);
    ceiling_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refs_interval = ops.cache.bucket().map(|b| b.refs_interval());
    let mut refs_tick = tokio::time::interval(refs_interval.unwrap_or(Duration::from_secs(3600)));
    refs_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = refs_tick.tick(), if refs_interval.is_some() => {
                match ops.publish_refs().await {
                    Ok(n) => tracing::debug!(digests = ?n, "reference set published to the shared bucket"),
                    Err(err) => tracing::warn!(error = %err, "could not publish the reference set to the shared bucket"),
                }
            }
            _ = prune_tick.tick(), if prune_older_than.is_some() => {
                let request = PruneRequest {
                    older_than: prune_older_than.map(|d| humantime::format_duration(d).to_string()),
                    ..PruneRequest::default()
                };
                if let Err(err) = ops.prune_by(&request, telemetry::Trigger::Automatic).await {
                    tracing::warn!(error = %err, "automatic prune failed");
                }
            }
            _ = ceiling_tick.tick(), if has_ceiling => {
                if let Err(err) = ops.enforce_ceiling().await {
                    tracing::warn!(error = %err, "enforcing max_cache_bytes failed");
                }
            }
            _ = series_tick.tick(), if repository_series.is_some() => {
                let max = repository_series.unwrap_or_default();
                match ops.snapshot().await {
                    Ok(snapshot) => {
                        let truncated = telemetry::refresh_repositories(&Catalog::new(&snapshot), max);
                        if truncated && !series_warned {
                            tracing::warn!(metrics_max_series = max, "more cached tags than metrics_max_series: per-repository series are cut off");
                            series_warned = true;
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "could not refresh per-repository metrics"),
                }
            }
            _ = blob_stored.notified(), if has_ceiling => {
                if let Err(err) = ops.enforce_ceiling().await {
                    tracing::warn!(error = %err, "enforcing max_cache_bytes failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
