//! The shared bucket of scale-out mode: an S3-compatible object store that every replica reads and writes.
//!
//! Only immutable, content-addressed things live there, so replicas need no coordination:
//! - `<prefix>blobs/<algorithm>/<hex>`: a blob, uploaded from a local file that was already verified against
//!   its digest. A multipart upload becomes visible only when it is completed (S3's completion is atomic), and it
//!   is completed only after every part was sent, so a reader never sees a partial object; readers verify the
//!   digest again anyway.
//! - `<prefix>manifests/<algorithm>/<hex>`: a manifest whose bytes hash to the key, with its media type as the
//!   object's `Content-Type`.
//! - `<prefix>tags/<registry>/<repository>/_tags/<tag>`: the digest a tag pointed at when some replica last
//!   fetched it: a fallback for a replica that never saw the tag while the upstream is unreachable (`_tags`
//!   cannot be a repository component, so keys never collide).
//! - `<prefix>replicas/<replica>.refs`: the digests a replica's index references (for the bucket sweep).

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::config::S3Config;
use crate::digest::Digest;

/// Blobs up to this size are uploaded with one PUT; larger ones as a multipart upload of parts this size.
const PART_BYTES: usize = 16 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// An error talking to the bucket.
#[derive(Debug, thiserror::Error)]
#[error("bucket: {0}")]
pub struct BucketError(#[from] object_store::Error);

/// A blob body read from the bucket.
pub struct BucketBlob {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, BucketError>>,
}

/// A manifest read from the bucket.
pub struct BucketManifest {
    pub body: Bytes,
    pub media_type: Option<String>,
}

/// The shared bucket.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// This replica's name (its reference set's key).
    replica: String,
    /// `endpoint/bucket/prefix`, for messages.
    label: String,
    /// How often this replica publishes its reference set.
    refs_interval: Duration,
    /// Whether blobs are also kept on local disk.
    local_tier: bool,
}

impl Bucket {
    /// Connects to the bucket the config names (no request is made yet).
    pub fn open(config: &S3Config) -> anyhow::Result<Bucket> {
        let access_key = secret(
            config.access_key_id_file.as_deref(),
            &config.access_key_id_env,
        )
        .context("s3 access key id")?;
        let secret_key = secret(
            config.secret_access_key_file.as_deref(),
            &config.secret_access_key_env,
        )
        .context("s3 secret access key")?;
        let mut client = ClientOptions::new()
            .with_allow_http(
                reqwest::Url::parse(&config.endpoint).is_ok_and(|u| u.scheme() == "http"),
            )
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(config.timeout)
            .with_user_agent(
                concat!("ociregistry/", env!("CARGO_PKG_VERSION"))
                    .parse()
                    .expect("a valid header value"),
            );
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("s3.ca_file {}", ca.display()))?;
            let certs = object_store::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("s3.ca_file {}: not PEM certificates", ca.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "s3.ca_file {}: no certificate in it",
                ca.display()
            );
            for cert in certs {
                client = client.with_root_certificate(cert);
            }
        }
        // A few quick retries: a node of a replicated engine going away fails a request or two.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            backoff: Default::default(),
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(config.endpoint.trim_end_matches('/'))
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .context("s3")?;
        let replica = match &config.replica_id {
            Some(id) => id.clone(),
            None => host_name(),
        };
        let prefix = match config.prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(Bucket {
            store: Arc::new(store),
            label: format!(
                "{}/{}/{}",
                config.endpoint.trim_end_matches('/'),
                config.bucket,
                prefix
            ),
            prefix,
            replica,
            refs_interval: config.refs_interval,
            local_tier: config.local_tier,
        })
    }

    /// `endpoint/bucket/prefix`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether blobs are also kept on this replica's disk (`s3.local_tier`).
    pub fn local_tier(&self) -> bool {
        self.local_tier
    }

    /// How often this replica publishes its reference set.
    pub fn refs_interval(&self) -> Duration {
        self.refs_interval
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        self.key(&format!(
            "blobs/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    fn manifest_key(&self, digest: &Digest) -> Path {
        self.key(&format!(
            "manifests/{}/{}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    fn tag_key(&self, registry: &str, repository: &str, tag: &str) -> Path {
        self.key(&format!("tags/{registry}/{repository}/_tags/{tag}"))
    }

    /// Checks that the bucket answers (a list of at most one key); at start-up.
    pub async fn probe(&self) -> Result<(), BucketError> {
        let prefix = self.key("blobs");
        let mut list = self.store.list(Some(&prefix));
        match list.next().await {
            Some(Err(err)) => Err(err.into()),
            _ => Ok(()),
        }
    }

    /// The size of a blob in the bucket, if it is there.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, BucketError> {
        let result = match self.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        };
        counted("blob_head", result)
    }

    /// A blob's bytes (all of them, or `range`), streamed, if it is there.
    pub async fn blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<BucketBlob>, BucketError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = match self.store.get_opts(&self.blob_key(digest), options).await {
            Ok(result) => {
                let size = result.meta.size;
                let body = result.into_stream().map_err(BucketError::from).boxed();
                Ok(Some(BucketBlob { size, body }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        };
        counted("blob_get", result)
    }

    /// Uploads a verified blob file unless the bucket has it already; whether it uploaded. One PUT for a small
    /// blob, else a multipart upload that is completed only after its last part, or aborted on any error.
    pub async fn put_blob_file(
        &self,
        digest: &Digest,
        file: &FsPath,
        size: u64,
    ) -> Result<bool, BucketError> {
        if self.blob_size(digest).await? == Some(size) {
            return Ok(false);
        }
        let result = self.upload_blob_file(digest, file, size).await;
        counted_write("blob_put", result).map(|()| true)
    }

    async fn upload_blob_file(
        &self,
        digest: &Digest,
        file: &FsPath,
        size: u64,
    ) -> Result<(), BucketError> {
        let key = self.blob_key(digest);
        let io = |e: std::io::Error| {
            BucketError(object_store::Error::Generic {
                store: "local file",
                source: Box::new(e),
            })
        };
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        if size <= PART_BYTES as u64 {
            let mut body = Vec::with_capacity(size as usize);
            reader.read_to_end(&mut body).await.map_err(io)?;
            self.store
                .put(&key, PutPayload::from(Bytes::from(body)))
                .await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if n == 0 {
                break;
            }
            sent += n as u64;
            writer.write(&buf[..n]);
            if let Err(err) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(err.into()); // a failed part aborts the upload when the writer is dropped
            }
        }
        if sent != size {
            let _ = writer.abort().await;
            return Err(io(std::io::Error::other(format!(
                "{} changed while uploading: {sent} bytes, expected {size}",
                file.display()
            ))));
        }
        writer.finish().await?;
        Ok(())
    }

    /// A manifest by digest, if the bucket has it.
    pub async fn manifest(&self, digest: &Digest) -> Result<Option<BucketManifest>, BucketError> {
        counted("manifest_get", self.get_manifest(digest).await)
    }

    async fn get_manifest(&self, digest: &Digest) -> Result<Option<BucketManifest>, BucketError> {
        match self.store.get(&self.manifest_key(digest)).await {
            Ok(result) => {
                let media_type = result
                    .attributes
                    .get(&Attribute::ContentType)
                    .map(|v| v.to_string());
                let body = result.bytes().await?;
                Ok(Some(BucketManifest { body, media_type }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Stores a manifest whose bytes hash to `digest`.
    pub async fn put_manifest(
        &self,
        digest: &Digest,
        body: Bytes,
        media_type: Option<&str>,
    ) -> Result<(), BucketError> {
        let mut attributes = Attributes::new();
        if let Some(media_type) = media_type {
            attributes.insert(Attribute::ContentType, media_type.to_owned().into());
        }
        let options = PutOptions {
            attributes,
            ..Default::default()
        };
        let result = self
            .store
            .put_opts(&self.manifest_key(digest), PutPayload::from(body), options)
            .await;
        counted_write("manifest_put", result)?;
        Ok(())
    }

    /// The digest a tag pointed at when a replica last fetched it.
    pub async fn tag(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
    ) -> Result<Option<Digest>, BucketError> {
        let key = self.tag_key(registry, repository, tag);
        let result = match self.store.get(&key).await {
            Ok(result) => match result.bytes().await {
                Ok(body) => Ok(std::str::from_utf8(&body)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())),
                Err(err) => Err(err.into()),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        };
        counted("tag_get", result)
    }

    /// Records where a tag points now.
    pub async fn put_tag(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<(), BucketError> {
        let result = self
            .store
            .put(
                &self.tag_key(registry, repository, tag),
                PutPayload::from(Bytes::from(digest.to_string())),
            )
            .await;
        counted_write("tag_put", result)?;
        Ok(())
    }
}

/// What a bucket sweep found and removed (or, dry, would remove).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    /// Replicas whose reference sets were read.
    pub replicas: Vec<String>,
    /// Replicas whose sets were older than the grace: gone; their sets are deleted (kept on a dry run).
    #[serde(default)]
    pub stale_replicas: Vec<String>,
    /// Distinct digests they reference.
    pub referenced: u64,
    pub blobs_deleted: u64,
    pub manifests_deleted: u64,
    pub tags_deleted: u64,
    pub bytes_freed: u64,
    /// Unreferenced objects kept because they are younger than the grace.
    pub young_kept: u64,
}

impl Bucket {
    fn refs_key(&self, replica: &str) -> Path {
        self.key(&format!("replicas/{replica}.refs"))
    }

    /// Publishes this replica's reference set: every digest its index holds, one per line.
    pub async fn put_refs(&self, digests: &[String]) -> Result<(), BucketError> {
        let mut body = String::with_capacity(digests.len() * 72 + 64);
        body.push_str("# ociregistry reference set v1\n");
        for digest in digests {
            body.push_str(digest);
            body.push('\n');
        }
        let result = self
            .store
            .put(
                &self.refs_key(&self.replica),
                PutPayload::from(Bytes::from(body)),
            )
            .await;
        counted_write("refs_put", result)?;
        Ok(())
    }

    /// Mark and sweep: deletes blobs, manifests and tag records that no replica's published reference set
    /// names and that are older than `grace`; reference sets older than `grace` are of replicas that are gone,
    /// and are deleted first. Safe as long as every live replica publishes its set more often
    /// than `grace` (a blob uploaded since a replica's last publication is younger than the grace, so it is
    /// kept until that replica has published a set that names it, or has stopped naming it). A reader racing
    /// a deletion gets a miss, never a wrong byte: it then fetches from the upstream.
    pub async fn sweep(&self, grace: Duration, dry_run: bool) -> Result<SweepReport, BucketError> {
        let mut report = SweepReport::default();
        let mut referenced = std::collections::HashSet::new();
        let replicas: Vec<_> = self
            .store
            .list(Some(&self.key("replicas")))
            .try_collect()
            .await?;
        let cutoff = chrono_cutoff(grace);
        for meta in replicas {
            let Some(name) = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".refs"))
                .map(str::to_owned)
            else {
                continue;
            };
            // Not refreshed for longer than the grace (live replicas publish at least twice within it): a
            // replica that is gone, such as a pod replaced by a rollout. Its set no longer protects anything.
            if meta.last_modified <= cutoff {
                if !dry_run {
                    self.delete(&meta.location).await?;
                }
                report.stale_replicas.push(name);
                continue;
            }
            let body = self.store.get(&meta.location).await?.bytes().await?;
            let text = String::from_utf8_lossy(&body);
            referenced.extend(
                text.lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .map(str::to_owned),
            );
            report.replicas.push(name);
        }
        report.replicas.sort();
        report.stale_replicas.sort();
        report.referenced = referenced.len() as u64;
        for kind in ["blobs", "manifests"] {
            let objects: Vec<_> = self.store.list(Some(&self.key(kind))).try_collect().await?;
            for meta in objects {
                let parts: Vec<_> = meta.location.parts().collect();
                let n = parts.len();
                if n < 2 {
                    continue;
                }
                let digest = format!("{}:{}", parts[n - 2].as_ref(), parts[n - 1].as_ref());
                if referenced.contains(&digest) {
                    continue;
                }
                if meta.last_modified > cutoff {
                    report.young_kept += 1;
                    continue;
                }
                if !dry_run {
                    self.delete(&meta.location).await?;
                }
                report.bytes_freed += meta.size;
                if kind == "blobs" {
                    report.blobs_deleted += 1;
                } else {
                    report.manifests_deleted += 1;
                }
            }
        }
        let tags: Vec<_> = self
            .store
            .list(Some(&self.key("tags")))
            .try_collect()
            .await?;
        for meta in tags {
            if meta.last_modified > cutoff {
                continue;
            }
            let body = match self.store.get(&meta.location).await {
                Ok(result) => result.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(err) => return Err(err.into()),
            };
            let digest = String::from_utf8_lossy(&body).trim().to_owned();
            if referenced.contains(&digest) {
                continue;
            }
            if !dry_run {
                self.delete(&meta.location).await?;
            }
            report.tags_deleted += 1;
        }
        Ok(report)
    }

    async fn delete(&self, key: &Path) -> Result<(), BucketError> {
        let result = match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        };
        counted_write("sweep_delete", result)
    }
}

/// Objects modified after this instant are younger than `grace`.
fn chrono_cutoff(grace: Duration) -> chrono::DateTime<chrono::Utc> {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_sub_signed(grace)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Counts a lookup: found (`hit`), absent (`miss`) or failed.
fn counted<T, E>(operation: &'static str, result: Result<Option<T>, E>) -> Result<Option<T>, E> {
    let outcome = match &result {
        Ok(Some(_)) => "hit",
        Ok(None) => "miss",
        Err(_) => "error",
    };
    super::telemetry::bucket(operation, outcome);
    result
}

/// Counts a write or a deletion.
fn counted_write<T, E>(operation: &'static str, result: Result<T, E>) -> Result<T, E> {
    super::telemetry::bucket(operation, if result.is_ok() { "ok" } else { "error" });
    result
}

/// A credential from a file (trailing newline dropped) or an environment variable.
fn secret(file: Option<&FsPath>, env: &str) -> anyhow::Result<String> {
    if let Some(file) = file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let value = text.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(!value.is_empty(), "{} is empty", file.display());
        return Ok(value);
    }
    let value = std::env::var(env).with_context(|| format!("${env} is not set"))?;
    anyhow::ensure!(!value.is_empty(), "${env} is empty");
    Ok(value)
}

/// The host name, as this replica's default name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    if clean.is_empty() {
        "replica".into()
    } else {
        clean
    }
}
