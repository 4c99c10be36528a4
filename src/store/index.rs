//! The redb index: manifests (metadata and bytes), tag mappings, blob metadata and blob→manifest references.
//!
//! Nothing here is loaded at start-up; every lookup is a read transaction on demand, so start-up time does not
//! grow with the number of cached images. All methods block: call them from `spawn_blocking`.

use std::path::Path;

use redb::{
    Database, MultimapTableDefinition, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::records::{add_unique, BlobMeta, ManifestMeta, TagRecord};

/// digest → JSON [`ManifestMeta`].
const MANIFEST_META: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_meta");
/// digest → the manifest's bytes, exactly as the upstream sent them.
const MANIFEST_BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("manifest_body");
/// `registry/repository:tag` → JSON [`TagRecord`].
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
/// blob digest → JSON [`BlobMeta`].
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// blob or child-manifest digest → digests of the manifests that reference it.
const REFERENCED_BY: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("referenced_by");

/// redb's own page cache. Hot manifests and tags are served from the moka cache in front of the index, so
/// redb needs little; its default (1 GiB) would let resident memory grow with the index size.
const INDEX_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Errors from the index, as text: callers map them to an internal registry error.
pub type IndexResult<T> = Result<T, String>;

fn err(context: &'static str) -> impl Fn(&dyn std::fmt::Display) -> String {
    move |e| format!("index {context}: {e}")
}

macro_rules! try_index {
    ($expr:expr, $ctx:literal) => {
        $expr.map_err(|e| err($ctx)(&e))?
    };
}

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

/// The redb database.
pub struct Index {
    db: Database,
}

impl Index {
    /// Opens (or creates) the index file and its tables.
    pub fn open(path: &Path) -> IndexResult<Index> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("create dir")(&e))?;
        }
        let db = try_index!(
            Database::builder()
                .set_cache_size(INDEX_CACHE_BYTES)
                .create(path),
            "open"
        );
        let txn = try_index!(db.begin_write(), "begin");
        {
            try_index!(txn.open_table(MANIFEST_META), "open table");
            try_index!(txn.open_table(MANIFEST_BODY), "open table");
            try_index!(txn.open_table(TAGS), "open table");
            try_index!(txn.open_table(BLOBS), "open table");
            try_index!(txn.open_multimap_table(REFERENCED_BY), "open table");
        }
        try_index!(txn.commit(), "commit");
        Ok(Index { db })
    }

    /// A manifest by digest.
    pub fn manifest(&self, digest: &str) -> IndexResult<Option<StoredManifest>> {
        let txn = try_index!(self.db.begin_read(), "begin read");
        let metas = try_index!(txn.open_table(MANIFEST_META), "open manifests");
        let Some(meta) = try_index!(metas.get(digest), "read manifest") else {
            return Ok(None);
        };
        let meta: ManifestMeta =
            try_index!(serde_json::from_slice(meta.value()), "decode manifest");
        let bodies = try_index!(txn.open_table(MANIFEST_BODY), "open bodies");
        let Some(body) = try_index!(bodies.get(digest), "read body") else {
            return Ok(None);
        };
        Ok(Some(StoredManifest {
            meta,
            body: body.value().to_vec(),
        }))
    }

    /// A tag mapping by `registry/repository:tag`.
    pub fn tag(&self, key: &str) -> IndexResult<Option<TagRecord>> {
        let txn = try_index!(self.db.begin_read(), "begin read");
        let tags = try_index!(txn.open_table(TAGS), "open tags");
        match try_index!(tags.get(key), "read tag") {
            Some(v) => Ok(Some(try_index!(
                serde_json::from_slice(v.value()),
                "decode tag"
            ))),
            None => Ok(None),
        }
    }

    /// Blob metadata by digest.
    pub fn blob(&self, digest: &str) -> IndexResult<Option<BlobMeta>> {
        let txn = try_index!(self.db.begin_read(), "begin read");
        let blobs = try_index!(txn.open_table(BLOBS), "open blobs");
        match try_index!(blobs.get(digest), "read blob") {
            Some(v) => Ok(Some(try_index!(
                serde_json::from_slice(v.value()),
                "decode blob"
            ))),
            None => Ok(None),
        }
    }

    /// Digests of the manifests that reference `digest`.
    pub fn referenced_by(&self, digest: &str) -> IndexResult<Vec<String>> {
        let txn = try_index!(self.db.begin_read(), "begin read");
        let refs = try_index!(txn.open_multimap_table(REFERENCED_BY), "open refs");
        let mut out = Vec::new();
        for v in try_index!(refs.get(digest), "read refs") {
            out.push(try_index!(v, "read ref").value().to_owned());
        }
        Ok(out)
    }

    /// Stores a manifest (merging its repository into an existing record), its references and its tag, in one
    /// transaction: a crash leaves either all of it or none.
    pub fn put_manifest(&self, w: ManifestWrite<'_>) -> IndexResult<()> {
        let txn = try_index!(self.db.begin_write(), "begin write");
        {
            let mut metas = try_index!(txn.open_table(MANIFEST_META), "open manifests");
            let existing: Option<ManifestMeta> = match try_index!(metas.get(w.digest), "read") {
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
                },
            };
            let encoded = serde_json::to_vec(&meta).map_err(|e| err("encode")(&e))?;
            try_index!(metas.insert(w.digest, encoded.as_slice()), "write manifest");
            let mut bodies = try_index!(txn.open_table(MANIFEST_BODY), "open bodies");
            try_index!(bodies.insert(w.digest, w.body), "write body");
            let mut refs = try_index!(txn.open_multimap_table(REFERENCED_BY), "open refs");
            for referenced in w.references {
                try_index!(refs.insert(referenced.as_str(), w.digest), "write ref");
            }
            if let Some((key, record)) = &w.tag {
                let mut tags = try_index!(txn.open_table(TAGS), "open tags");
                let encoded = serde_json::to_vec(record).map_err(|e| err("encode")(&e))?;
                try_index!(tags.insert(*key, encoded.as_slice()), "write tag");
            }
        }
        try_index!(txn.commit(), "commit");
        Ok(())
    }

    /// Stores or refreshes a tag mapping.
    pub fn put_tag(&self, key: &str, record: &TagRecord) -> IndexResult<()> {
        let txn = try_index!(self.db.begin_write(), "begin write");
        {
            let mut tags = try_index!(txn.open_table(TAGS), "open tags");
            let encoded = serde_json::to_vec(record).map_err(|e| err("encode")(&e))?;
            try_index!(tags.insert(key, encoded.as_slice()), "write tag");
        }
        try_index!(txn.commit(), "commit");
        Ok(())
    }

    /// Records a blob that has just been stored (or pulled through another repository).
    pub fn put_blob(&self, digest: &str, size: u64, repository: &str, now: u64) -> IndexResult<()> {
        let txn = try_index!(self.db.begin_write(), "begin write");
        {
            let mut blobs = try_index!(txn.open_table(BLOBS), "open blobs");
            let existing: Option<BlobMeta> = match try_index!(blobs.get(digest), "read") {
                Some(v) => serde_json::from_slice(v.value()).ok(),
                None => None,
            };
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
                },
            };
            let encoded = serde_json::to_vec(&meta).map_err(|e| err("encode")(&e))?;
            try_index!(blobs.insert(digest, encoded.as_slice()), "write blob");
        }
        try_index!(txn.commit(), "commit");
        Ok(())
    }

    /// Applies a batch of last-pulled times in one transaction. Digests not in the index are skipped.
    pub fn touch(&self, manifests: &[(String, u64)], blobs: &[(String, u64)]) -> IndexResult<()> {
        let mut txn = try_index!(self.db.begin_write(), "begin write");
        // Access times are advisory: losing the last batch in a crash is acceptable, so skip the fsync.
        txn.set_durability(redb::Durability::Eventual);
        {
            let mut metas = try_index!(txn.open_table(MANIFEST_META), "open manifests");
            for (digest, at) in manifests {
                let updated = match try_index!(metas.get(digest.as_str()), "read") {
                    Some(v) => serde_json::from_slice::<ManifestMeta>(v.value())
                        .ok()
                        .filter(|m| m.last_pulled < *at)
                        .map(|mut m| {
                            m.last_pulled = *at;
                            m
                        }),
                    None => None,
                };
                if let Some(meta) = updated {
                    let encoded = serde_json::to_vec(&meta).map_err(|e| err("encode")(&e))?;
                    try_index!(metas.insert(digest.as_str(), encoded.as_slice()), "write");
                }
            }
            let mut table = try_index!(txn.open_table(BLOBS), "open blobs");
            for (digest, at) in blobs {
                let updated = match try_index!(table.get(digest.as_str()), "read") {
                    Some(v) => serde_json::from_slice::<BlobMeta>(v.value())
                        .ok()
                        .filter(|m| m.last_pulled < *at)
                        .map(|mut m| {
                            m.last_pulled = *at;
                            m
                        }),
                    None => None,
                };
                if let Some(meta) = updated {
                    let encoded = serde_json::to_vec(&meta).map_err(|e| err("encode")(&e))?;
                    try_index!(table.insert(digest.as_str(), encoded.as_slice()), "write");
                }
            }
        }
        try_index!(txn.commit(), "commit");
        Ok(())
    }

    /// How many manifests, tags and blobs the index holds.
    pub fn counts(&self) -> IndexResult<IndexCounts> {
        let txn = try_index!(self.db.begin_read(), "begin read");
        Ok(IndexCounts {
            manifests: try_index!(
                try_index!(txn.open_table(MANIFEST_META), "open").len(),
                "len"
            ),
            tags: try_index!(try_index!(txn.open_table(TAGS), "open").len(), "len"),
            blobs: try_index!(try_index!(txn.open_table(BLOBS), "open").len(), "len"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                .touch(&[("sha256:m1".into(), 9)], &[("sha256:aa".into(), 8)])
                .unwrap();
        }
        let index = Index::open(&path).unwrap();
        let m = index.manifest("sha256:m1").unwrap().unwrap();
        assert_eq!(m.body, b"{}");
        assert_eq!(m.meta.last_pulled, 9);
        assert_eq!(m.meta.created, 5);
        assert_eq!(
            index
                .tag("docker.io/library/x:latest")
                .unwrap()
                .unwrap()
                .digest,
            "sha256:m1"
        );
        assert_eq!(index.blob("sha256:aa").unwrap().unwrap().last_pulled, 8);
        assert_eq!(index.referenced_by("sha256:bb").unwrap(), vec!["sha256:m1"]);
        assert_eq!(
            index.counts().unwrap(),
            IndexCounts {
                manifests: 1,
                tags: 1,
                blobs: 1
            }
        );
    }
}
