//! Batched last-pulled times.
//!
//! Serving a cached manifest or blob must not cost a write transaction, so each access only updates an entry in
//! a sharded concurrent map; a background task writes the whole batch to the index every few seconds (and once
//! more at shutdown).

use dashmap::DashMap;

use super::records::unix_now;

/// Pending last-pulled times, keyed by digest.
#[derive(Default)]
pub struct AccessRecorder {
    manifests: DashMap<Box<str>, u64>,
    blobs: DashMap<Box<str>, u64>,
}

/// One drained batch.
#[derive(Debug, Default)]
pub struct AccessBatch {
    pub manifests: Vec<(String, u64)>,
    pub blobs: Vec<(String, u64)>,
}

impl AccessBatch {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.blobs.is_empty()
    }
}

fn record(map: &DashMap<Box<str>, u64>, digest: &str) {
    let now = unix_now();
    // Updating in place avoids allocating a key for digests already pending.
    if let Some(mut at) = map.get_mut(digest) {
        *at = now;
        return;
    }
    map.insert(digest.into(), now);
}

fn drain(map: &DashMap<Box<str>, u64>) -> Vec<(String, u64)> {
    let items: Vec<(String, u64)> = map
        .iter()
        .map(|e| (e.key().to_string(), *e.value()))
        .collect();
    for (digest, at) in &items {
        map.remove_if(digest.as_str(), |_, current| current == at);
    }
    items
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
        assert_eq!(batch.blobs.len(), 1);
        assert!(rec.drain().is_empty());
    }
}
