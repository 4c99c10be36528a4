//! The redb index: manifests (metadata and bytes), tag mappings, blob metadata, blob→manifest references and
//! pins, plus the schema version of the file.
//!
//! Nothing here is loaded at start-up; every lookup is a read transaction on demand, so start-up time does not
//! grow with the number of cached images. All methods block: call them from `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle,
};

use super::access::Access;
use super::records::{add_unique, BlobMeta, ManifestMeta, PinRecord, TagRecord};

/// digest → JSON [`ManifestMeta`].
const MANIFEST_META: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_meta");
/// digest → the manifest's bytes, exactly as the upstream sent them.
const MANIFEST_BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_body");
/// `registry/repository:tag` (or `registry/repository@subject#referrers`) → JSON [`TagRecord`].
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
/// blob digest → JSON [`BlobMeta`].
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// blob or child-manifest digest → digests of the manifests that reference it.
const REFERENCED_BY: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("referenced_by");
/// `registry/repository:tag` or `registry/repository@digest` → JSON [`PinRecord`].
const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("pins");
/// Facts about the file itself: `schema_version`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout of the tables above. Bump it (and add a migration, or a refusal) whenever it changes.
pub const SCHEMA_VERSION: u64 = 1;

/// redb's own page cache. Hot manifests and tags are served from the moka cache in front of the index, so
/// redb needs little; its default (1 GiB) would let resident memory grow with the index size.
const INDEX_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// What went wrong in the index, typed so that callers can tell a held lock or a foreign file from an I/O
/// failure.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process (a running server) has the file open.
    #[error("the index {0} is in use by another process")]
    Locked(String),
    /// The file was written by another schema or file-format version; it was not modified.
    #[error("{0}")]
    Incompatible(String),
    #[error("index: {0}")]
    Storage(#[source] redb::Error),
    #[error("index: undecodable record: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("index: {0}")]
    Io(#[from] std::io::Error),
    /// The index failed and could not be reopened yet.
    #[error("index unavailable: it failed after an I/O error and could not be reopened yet")]
    Unavailable,
}

impl IndexError {
    /// Whether redb has given up on the file after an I/O error (every later operation fails until reopened).
    pub fn is_failed_state(&self) -> bool {
        matches!(
            self,
            IndexError::Storage(redb::Error::PreviousIo | redb::Error::Io(_))
                | IndexError::Unavailable
        )
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> IndexError {
                IndexError::Storage(e.into())
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Results of index operations.
pub type IndexResult<T> = Result<T, IndexError>;

/// A manifest as stored: metadata and bytes.
pub struct StoredManifest {
    pub meta: ManifestMeta,
    pub body: Vec<u8>,
}

/// What to record when a manifest is cached.
pub struct ManifestWrite<'a> {
    pub digest: &'a str,
    pub media_type: &'a str,
    pub body: &'a [u8],
    pub repository: &'a str,
    pub references: &'a [String],
    /// `registry/repository:tag` and its record, when the manifest was fetched by tag.
    pub tag: Option<(&'a str, TagRecord)>,
    pub now: u64,
}

/// Counts of what the index holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndexCounts {
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
}

/// Every record but manifest bodies, read in one transaction: what `list`, `prune` and eviction plan from.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub manifests: BTreeMap<String, ManifestMeta>,
    pub tags: BTreeMap<String, TagRecord>,
    pub blobs: BTreeMap<String, BlobMeta>,
    pub pins: BTreeMap<String, PinRecord>,
}

/// What a removal may delete. Each manifest and blob is removed only if it was not pulled at or after
/// `planned_at` (a pull racing the plan keeps its image); tags go with their manifest.
#[derive(Debug, Default)]
pub struct Removal {
    pub manifests: BTreeSet<String>,
    pub blobs: BTreeSet<String>,
    /// Tag keys to remove whatever they point at (invalidation).
    pub tags: BTreeSet<String>,
    pub planned_at: u64,
}

/// What a removal did delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Digest and the repositories it was cached for.
    pub manifests: Vec<(String, Vec<String>)>,
    pub tags: Vec<String>,
    /// Digest and size.
    pub blobs: Vec<(String, u64)>,
}

fn open_error(path: &Path, e: redb::DatabaseError) -> IndexError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => IndexError::Locked(path.display().to_string()),
        redb::DatabaseError::UpgradeRequired(format) => IndexError::Incompatible(format!(
            "the index {} is in redb file format {format}, written by an older ociregistry (before 0.2, \
             which moved to redb 4); this build cannot read it and left it untouched. Move it and the blob \
             directory away and start again (the cache starts empty)",
            path.display()
        )),
        other => other.into(),
    }
}

/// The schema version recorded in a database, and whether it has any table at all.
fn recorded_schema(db: &impl ReadableDatabase) -> IndexResult<(Option<u64>, bool)> {
    let txn = db.begin_read()?;
    let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_owned()).collect();
    let recorded = if tables.iter().any(|t| t == META.name()) {
        txn.open_table(META)?
            .get("schema_version")?
            .map(|v| v.value())
    } else {
        None
    };
    Ok((recorded, !tables.is_empty()))
}

/// Whether a file with this schema may be used: `Ok(true)` when it is new and needs its tables.
fn verdict(path: &Path, recorded: Option<u64>, has_tables: bool) -> IndexResult<bool> {
    let version = env!("CARGO_PKG_VERSION");
    match recorded {
        Some(SCHEMA_VERSION) => Ok(false),
        Some(newer) if newer > SCHEMA_VERSION => Err(IndexError::Incompatible(format!(
            "the index {} has schema version {newer}, written by a newer ociregistry; this build ({version}) \
             understands version {SCHEMA_VERSION} and left the file untouched. Run the newer version, or move \
             the file away to start an empty cache",
            path.display()
        ))),
        Some(older) => Err(IndexError::Incompatible(format!(
            "the index {} has schema version {older}, which this build ({version}, schema {SCHEMA_VERSION}) \
             does not migrate; the file was left untouched. Move it away to start an empty cache",
            path.display()
        ))),
        None if has_tables => Err(IndexError::Incompatible(format!(
            "the index {} has tables but no schema version (written before versions were recorded); the file \
             was left untouched. Move it away to start an empty cache",
            path.display()
        ))),
        None => Ok(true),
    }
}

/// The redb database.
pub struct Index {
    db: Database,
}

impl Index {
    /// Opens (or creates) the index file. A file written by another schema version, or by a redb file format
    /// this build does not read, is refused with a message saying so, and left untouched: it is checked
    /// through a read-only open first (a read-write open already writes to the file's header).
    pub fn open(path: &Path) -> IndexResult<Index> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if exists {
            match Database::builder().open_read_only(path) {
                Ok(db) => {
                    let (recorded, has_tables) = recorded_schema(&db)?;
                    drop(db);
                    verdict(path, recorded, has_tables)?;
                }
                Err(
                    e @ (redb::DatabaseError::DatabaseAlreadyOpen
                    | redb::DatabaseError::UpgradeRequired(_)),
                ) => return Err(open_error(path, e)),
                // A file that needs recovery after a crash: the read-write open below repairs it.
                Err(_) => {}
            }
        }
        let db = Database::builder()
            .set_cache_size(INDEX_CACHE_BYTES)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        let index = Index { db };
        let (recorded, has_tables) = recorded_schema(&index.db)?;
        if verdict(path, recorded, has_tables)? {
            index.create_tables()?;
        }
        Ok(index)
    }

    fn create_tables(&self) -> IndexResult<()> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(MANIFEST_META)?;
            txn.open_table(MANIFEST_BODY)?;
            txn.open_table(TAGS)?;
            txn.open_table(BLOBS)?;
            txn.open_table(PINS)?;
            txn.open_multimap_table(REFERENCED_BY)?;
            txn.open_table(META)?
                .insert("schema_version", SCHEMA_VERSION)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A manifest by digest.
    pub fn manifest(&self, digest: &str) -> IndexResult<Option<StoredManifest>> {
        let txn = self.db.begin_read()?;
        let metas = txn.open_table(MANIFEST_META)?;
        let Some(meta) = metas.get(digest)? else {
            return Ok(None);
        };
        let meta: ManifestMeta = serde_json::from_slice(meta.value())?;
        let bodies = txn.open_table(MANIFEST_BODY)?;
        let Some(body) = bodies.get(digest)? else {
            return Ok(None);
        };
        Ok(Some(StoredManifest {
            meta,
            body: body.value().to_vec(),
        }))
    }

    /// A tag mapping by `registry/repository:tag`.
    pub fn tag(&self, key: &str) -> IndexResult<Option<TagRecord>> {
        let txn = self.db.begin_read()?;
        let tags = txn.open_table(TAGS)?;
        match tags.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Blob metadata by digest.
    pub fn blob(&self, digest: &str) -> IndexResult<Option<BlobMeta>> {
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        match blobs.get(digest)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Digests of the manifests that reference `digest`.
    pub fn referenced_by(&self, digest: &str) -> IndexResult<Vec<String>> {
        let txn = self.db.begin_read()?;
        let refs = txn.open_multimap_table(REFERENCED_BY)?;
        let mut out = Vec::new();
        for v in refs.get(digest)? {
            out.push(v?.value().to_owned());
        }
        Ok(out)
    }

    /// Stores a manifest (merging its repository into an existing record), its references and its tag, in one
    /// transaction: a crash leaves either all of it or none.
    pub fn put_manifest(&self, w: ManifestWrite<'_>) -> IndexResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut metas = txn.open_table(MANIFEST_META)?;
            let existing: Option<ManifestMeta> = match metas.get(w.digest)? {
                Some(v) => serde_json::from_slice(v.value()).ok(),
                None => None,
            };
            let meta = match existing {
                Some(mut meta) => {
                    add_unique(&mut meta.repositories, w.repository);
                    meta.last_pulled = w.now;
                    meta
                }
                None => ManifestMeta {
                    media_type: w.media_type.to_owned(),
                    size: w.body.len() as u64,
                    created: w.now,
                    last_pulled: w.now,
                    repositories: vec![w.repository.to_owned()],
                    references: w.references.to_vec(),
                    pull_count: 0,
                },
            };
            let encoded = serde_json::to_vec(&meta)?;
            metas.insert(w.digest, encoded.as_slice())?;
            let mut bodies = txn.open_table(MANIFEST_BODY)?;
            bodies.insert(w.digest, w.body)?;
            let mut refs = txn.open_multimap_table(REFERENCED_BY)?;
            for referenced in w.references {
                refs.insert(referenced.as_str(), w.digest)?;
            }
            if let Some((key, record)) = &w.tag {
                let mut tags = txn.open_table(TAGS)?;
                let encoded = serde_json::to_vec(record)?;
                tags.insert(*key, encoded.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Stores or refreshes a tag mapping.
    pub fn put_tag(&self, key: &str, record: &TagRecord) -> IndexResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut tags = txn.open_table(TAGS)?;
            let encoded = serde_json::to_vec(record)?;
            tags.insert(key, encoded.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records a blob that has just been stored (or pulled through another repository); whether it is new.
    pub fn put_blob(
        &self,
        digest: &str,
        size: u64,
        repository: &str,
        now: u64,
    ) -> IndexResult<bool> {
        let txn = self.db.begin_write()?;
        let is_new;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            let existing: Option<BlobMeta> = match blobs.get(digest)? {
                Some(v) => serde_json::from_slice(v.value()).ok(),
                None => None,
            };
            is_new = existing.is_none();
            let meta = match existing {
                Some(mut meta) => {
                    add_unique(&mut meta.repositories, repository);
                    meta.last_pulled = now;
                    meta
                }
                None => BlobMeta {
                    size,
                    created: now,
                    last_pulled: now,
                    repositories: vec![repository.to_owned()],
                    pull_count: 0,
                },
            };
            let encoded = serde_json::to_vec(&meta)?;
            blobs.insert(digest, encoded.as_slice())?;
        }
        txn.commit()?;
        Ok(is_new)
    }

    /// Applies a batch of accesses (last-pulled times and counts) in one transaction. Digests not in the
    /// index are skipped. A durable touch also persists every earlier non-durable one (even with no batch).
    pub fn touch(
        &self,
        manifests: &[(String, Access)],
        blobs: &[(String, Access)],
        durable: bool,
    ) -> IndexResult<()> {
        let mut txn = self.db.begin_write()?;
        if !durable {
            // Access times are advisory: losing the last few seconds in a crash is acceptable, so skip the
            // fsync; the next durable commit (a stored blob, the periodic or the shutdown flush) persists them.
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut metas = txn.open_table(MANIFEST_META)?;
            for (digest, access) in manifests {
                let updated = match metas.get(digest.as_str())? {
                    Some(v) => {
                        serde_json::from_slice::<ManifestMeta>(v.value())
                            .ok()
                            .map(|mut m| {
                                m.last_pulled = m.last_pulled.max(access.at);
                                m.pull_count = m.pull_count.saturating_add(access.count);
                                m
                            })
                    }
                    None => None,
                };
                if let Some(meta) = updated {
                    metas.insert(digest.as_str(), serde_json::to_vec(&meta)?.as_slice())?;
                }
            }
            let mut table = txn.open_table(BLOBS)?;
            for (digest, access) in blobs {
                let updated = match table.get(digest.as_str())? {
                    Some(v) => serde_json::from_slice::<BlobMeta>(v.value())
                        .ok()
                        .map(|mut m| {
                            m.last_pulled = m.last_pulled.max(access.at);
                            m.pull_count = m.pull_count.saturating_add(access.count);
                            for repository in &access.repositories {
                                add_unique(&mut m.repositories, repository);
                            }
                            m
                        }),
                    None => None,
                };
                if let Some(meta) = updated {
                    table.insert(digest.as_str(), serde_json::to_vec(&meta)?.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether a write transaction can commit (redb refuses after an I/O error until reopened). Commits nothing
    /// and skips the fsync.
    pub fn probe_write(&self) -> IndexResult<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// How many manifests, tags and blobs the index holds.
    pub fn counts(&self) -> IndexResult<IndexCounts> {
        let txn = self.db.begin_read()?;
        Ok(IndexCounts {
            manifests: txn.open_table(MANIFEST_META)?.len()?,
            tags: txn.open_table(TAGS)?.len()?,
            blobs: txn.open_table(BLOBS)?.len()?,
        })
    }

    /// Every record but manifest bodies, consistent as of one moment.
    pub fn snapshot(&self) -> IndexResult<Snapshot> {
        let txn = self.db.begin_read()?;
        let mut snapshot = Snapshot::default();
        for entry in txn.open_table(MANIFEST_META)?.iter()? {
            let (k, v) = entry?;
            snapshot
                .manifests
                .insert(k.value().to_owned(), serde_json::from_slice(v.value())?);
        }
        for entry in txn.open_table(TAGS)?.iter()? {
            let (k, v) = entry?;
            snapshot
                .tags
                .insert(k.value().to_owned(), serde_json::from_slice(v.value())?);
        }
        for entry in txn.open_table(BLOBS)?.iter()? {
            let (k, v) = entry?;
            snapshot
                .blobs
                .insert(k.value().to_owned(), serde_json::from_slice(v.value())?);
        }
        for entry in txn.open_table(PINS)?.iter()? {
            let (k, v) = entry?;
            snapshot
                .pins
                .insert(k.value().to_owned(), serde_json::from_slice(v.value())?);
        }
        Ok(snapshot)
    }

    /// The stored bytes of a manifest.
    pub fn manifest_body(&self, digest: &str) -> IndexResult<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let bodies = txn.open_table(MANIFEST_BODY)?;
        Ok(bodies.get(digest)?.map(|v| v.value().to_vec()))
    }

    /// Pins `reference` to the root manifest `digest`.
    pub fn put_pin(&self, reference: &str, record: &PinRecord) -> IndexResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(PINS)?
            .insert(reference, serde_json::to_vec(record)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes a pin; whether there was one.
    pub fn remove_pin(&self, reference: &str) -> IndexResult<bool> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(PINS)?.remove(reference)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Drops blob entries (whose files are gone); how many there were.
    pub fn drop_blob_entries(&self, digests: &BTreeSet<String>) -> IndexResult<u64> {
        let txn = self.db.begin_write()?;
        let mut dropped = 0;
        {
            let mut blobs = txn.open_table(BLOBS)?;
            for digest in digests {
                if blobs.remove(digest.as_str())?.is_some() {
                    dropped += 1;
                }
            }
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// Deletes what `removal` names in one transaction, skipping manifests and blobs pulled after it was
    /// planned. Blob files are the caller's to unlink, after this commits (so the index never names a blob
    /// whose file it already deleted as present... and a crash in between leaves only a file the start-up
    /// sweep removes).
    pub fn remove(&self, removal: &Removal) -> IndexResult<Removed> {
        let txn = self.db.begin_write()?;
        let mut removed = Removed::default();
        {
            let mut metas = txn.open_table(MANIFEST_META)?;
            let mut bodies = txn.open_table(MANIFEST_BODY)?;
            let mut refs = txn.open_multimap_table(REFERENCED_BY)?;
            let mut tags = txn.open_table(TAGS)?;
            let mut blobs = txn.open_table(BLOBS)?;
            let mut gone = BTreeSet::new();
            // What the removed manifests referenced.
            let mut of_removed: BTreeSet<String> = BTreeSet::new();
            for digest in &removal.manifests {
                let meta: Option<ManifestMeta> = match metas.get(digest.as_str())? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                let Some(meta) = meta else { continue };
                if meta.last_pulled >= removal.planned_at {
                    continue;
                }
                metas.remove(digest.as_str())?;
                bodies.remove(digest.as_str())?;
                for referenced in &meta.references {
                    refs.remove(referenced.as_str(), digest.as_str())?;
                    of_removed.insert(referenced.clone());
                }
                gone.insert(digest.clone());
                removed.manifests.push((digest.clone(), meta.repositories));
            }
            // Tags of removed manifests go with them, as do explicitly invalidated ones.
            let mut doomed_tags = Vec::new();
            for entry in tags.iter()? {
                let (k, v) = entry?;
                let record: TagRecord = serde_json::from_slice(v.value())?;
                let key = k.value();
                let subject_gone = key
                    .split_once('@')
                    .and_then(|(_, rest)| rest.strip_suffix("#referrers"))
                    .is_some_and(|subject| gone.contains(subject));
                if gone.contains(&record.digest) || subject_gone || removal.tags.contains(key) {
                    doomed_tags.push(key.to_owned());
                }
            }
            for key in doomed_tags {
                tags.remove(key.as_str())?;
                removed.tags.push(key);
            }
            // Blobs of removed manifests go with them (unless another manifest references them); only blobs that
            // no removed manifest referenced (unreferenced ones) are judged by their own last pull.
            for digest in &removal.blobs {
                // A blob another manifest references (one cached after the plan) stays.
                if refs.get(digest.as_str())?.next().is_some() {
                    continue;
                }
                let meta: Option<BlobMeta> = match blobs.get(digest.as_str())? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                match meta {
                    Some(meta)
                        if !of_removed.contains(digest)
                            && meta.last_pulled >= removal.planned_at =>
                    {
                        continue
                    }
                    Some(meta) => {
                        blobs.remove(digest.as_str())?;
                        removed.blobs.push((digest.clone(), meta.size));
                    }
                    // Known only as a file (a crash leftover): the caller unlinks it.
                    None => removed.blobs.push((digest.clone(), 0)),
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at: u64, count: u64) -> Access {
        Access {
            at,
            count,
            repositories: Vec::new(),
        }
    }

    #[test]
    fn manifest_tag_blob_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let refs = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        {
            let index = Index::open(&path).unwrap();
            index
                .put_manifest(ManifestWrite {
                    digest: "sha256:m1",
                    media_type: "application/vnd.oci.image.manifest.v1+json",
                    body: b"{}",
                    repository: "docker.io/library/x",
                    references: &refs,
                    tag: Some((
                        "docker.io/library/x:latest",
                        TagRecord {
                            digest: "sha256:m1".into(),
                            fetched_at: 5,
                            created: 5,
                        },
                    )),
                    now: 5,
                })
                .unwrap();
            index
                .put_blob("sha256:aa", 10, "docker.io/library/x", 5)
                .unwrap();
            index
                .touch(
                    &[("sha256:m1".into(), at(9, 3))],
                    &[(
                        "sha256:aa".into(),
                        Access {
                            repositories: vec!["docker.io/library/y".into()],
                            ..at(8, 1)
                        },
                    )],
                    false,
                )
                .unwrap();
        }
        let index = Index::open(&path).unwrap();
        let m = index.manifest("sha256:m1").unwrap().unwrap();
        assert_eq!(m.body, b"{}");
        assert_eq!(m.meta.last_pulled, 9);
        assert_eq!(m.meta.pull_count, 3);
        assert_eq!(m.meta.created, 5);
        assert_eq!(
            index
                .tag("docker.io/library/x:latest")
                .unwrap()
                .unwrap()
                .digest,
            "sha256:m1"
        );
        let blob = index.blob("sha256:aa").unwrap().unwrap();
        assert_eq!(blob.last_pulled, 8);
        assert_eq!(
            blob.repositories,
            vec!["docker.io/library/x", "docker.io/library/y"]
        );
        assert_eq!(index.referenced_by("sha256:bb").unwrap(), vec!["sha256:m1"]);
        assert_eq!(
            index.counts().unwrap(),
            IndexCounts {
                manifests: 1,
                tags: 1,
                blobs: 1
            }
        );

        // Removal planned before (or in the second of) a pull keeps what was pulled.
        let removal = Removal {
            manifests: ["sha256:m1".to_string()].into(),
            blobs: ["sha256:aa".to_string()].into(),
            tags: BTreeSet::new(),
            planned_at: 9,
        };
        assert_eq!(index.remove(&removal).unwrap(), Removed::default());
        let removal = Removal {
            planned_at: 10,
            ..removal
        };
        let removed = index.remove(&removal).unwrap();
        assert_eq!(removed.manifests.len(), 1);
        assert_eq!(removed.tags, vec!["docker.io/library/x:latest"]);
        assert_eq!(removed.blobs, vec![("sha256:aa".to_string(), 10)]);
        assert_eq!(index.counts().unwrap(), IndexCounts::default());
        assert!(index.referenced_by("sha256:bb").unwrap().is_empty());
    }

    #[test]
    fn a_second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let _first = Index::open(&path).unwrap();
        assert!(matches!(Index::open(&path), Err(IndexError::Locked(_))));
    }

    #[test]
    fn newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = Index::open(&path).err().unwrap();
        assert!(err.to_string().contains("newer ociregistry"), "{err}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the file was modified"
        );
    }
}
