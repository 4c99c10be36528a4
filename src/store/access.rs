//! Batched last-pulled times and pull counts.
//!
//! Serving a cached manifest or blob must not cost a write transaction, so each access only updates an entry in
//! a sharded concurrent map; a background task writes the whole batch to the index every few seconds (and once
//! more at shutdown).

use dashmap::DashMap;

use super::records::unix_now;

/// Pending accesses, keyed by digest.
#[derive(Default)]
pub struct AccessRecorder {
    manifests: Pending,
    blobs: Pending,
}

/// Hashed with foldhash (seeded per map): every cached GET records its digest here, and std's SipHash of a 71-byte
/// digest, twice (shard, then slot), cost about 300 instructions of a warm manifest GET.
type Pending = DashMap<Box<str>, Access, foldhash::fast::RandomState>;

/// The accesses of one digest since the last flush.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Unix seconds of the latest.
    pub at: u64,
    pub count: u64,
    /// `registry/repository`s it was served through (blobs only; a few at most per flush).
    pub repositories: Vec<Box<str>>,
}

/// Repositories remembered per blob and flush; more are rare (a blob shared by many images pulled within
/// seconds) and are recorded at a later flush.
const MAX_REPOSITORIES: usize = 8;

impl Access {
    fn hit(&mut self, now: u64, repository: Option<&str>) {
        self.at = now;
        self.count += 1;
        if let Some(r) = repository {
            if self.repositories.len() < MAX_REPOSITORIES
                && !self.repositories.iter().any(|x| &**x == r)
            {
                self.repositories.push(r.into());
            }
        }
    }
}

/// One drained batch.
#[derive(Debug, Default)]
pub struct AccessBatch {
    pub manifests: Vec<(String, Access)>,
    pub blobs: Vec<(String, Access)>,
}

impl AccessBatch {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.blobs.is_empty()
    }
}

fn record(map: &Pending, digest: &str, repository: Option<&str>) {
    let now = unix_now();
    // Updating in place avoids allocating a key for digests already pending.
    if let Some(mut access) = map.get_mut(digest) {
        access.hit(now, repository);
        return;
    }
    map.entry(digest.into()).or_default().hit(now, repository);
}

fn drain(map: &Pending) -> Vec<(String, Access)> {
    let keys: Vec<Box<str>> = map.iter().map(|e| e.key().clone()).collect();
    // Removing returns exactly what was counted; an access after the removal starts a new entry.
    keys.into_iter()
        .filter_map(|k| map.remove(&k))
        .map(|(k, access)| (k.into_string(), access))
        .collect()
}

impl AccessRecorder {
    /// Notes that a manifest was served now.
    pub fn manifest(&self, digest: &str) {
        record(&self.manifests, digest, None);
    }

    /// Notes that a blob was served now through `repository` (`registry/repository`).
    pub fn blob(&self, digest: &str, repository: &str) {
        record(&self.blobs, digest, Some(repository));
    }

    /// Takes everything pending.
    pub fn drain(&self) -> AccessBatch {
        AccessBatch {
            manifests: drain(&self.manifests),
            blobs: drain(&self.blobs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_drains_once() {
        let rec = AccessRecorder::default();
        rec.manifest("sha256:a");
        rec.manifest("sha256:a");
        rec.blob("sha256:b", "r.io/a");
        rec.blob("sha256:b", "r.io/b");
        rec.blob("sha256:b", "r.io/a");
        let batch = rec.drain();
        assert_eq!(batch.manifests.len(), 1);
        assert_eq!(batch.manifests[0].1.count, 2);
        assert_eq!(batch.blobs.len(), 1);
        assert_eq!(
            batch.blobs[0].1.repositories,
            vec!["r.io/a".into(), "r.io/b".into()]
        );
        assert!(rec.drain().is_empty());
    }
}
