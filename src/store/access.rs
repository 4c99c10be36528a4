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
    manifests: DashMap<Box<str>, Access>,
    blobs: DashMap<Box<str>, Access>,
}

/// The accesses of one digest since the last flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Unix seconds of the latest.
    pub at: u64,
    pub count: u64,
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

fn record(map: &DashMap<Box<str>, Access>, digest: &str) {
    let now = unix_now();
    // Updating in place avoids allocating a key for digests already pending.
    if let Some(mut access) = map.get_mut(digest) {
        access.at = now;
        access.count += 1;
        return;
    }
    map.entry(digest.into())
        .and_modify(|a| {
            a.at = now;
            a.count += 1;
        })
        .or_insert(Access { at: now, count: 1 });
}

fn drain(map: &DashMap<Box<str>, Access>) -> Vec<(String, Access)> {
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
        record(&self.manifests, digest);
    }

    /// Notes that a blob was served now.
    pub fn blob(&self, digest: &str) {
        record(&self.blobs, digest);
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
        rec.blob("sha256:b");
        let batch = rec.drain();
        assert_eq!(batch.manifests.len(), 1);
        assert_eq!(batch.manifests[0].1.count, 2);
        assert_eq!(batch.blobs.len(), 1);
        assert!(rec.drain().is_empty());
    }
}
