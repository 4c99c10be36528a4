//! The records the index keeps: what serving needs, and what `list` and `prune` will need
//! (creation and last-pulled times, and which manifests and repositories reference what).

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Metadata of a cached manifest; its bytes are stored beside it, untouched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestMeta {
    pub media_type: String,
    pub size: u64,
    pub created: u64,
    pub last_pulled: u64,
    /// Every `registry/repository` this manifest was pulled through.
    pub repositories: Vec<String>,
    /// Digests this manifest references: child manifests of an index, or config and layers of an image.
    pub references: Vec<String>,
    /// How many times it was served (batched, like `last_pulled`).
    #[serde(default)]
    pub pull_count: u64,
}

/// A tag→digest mapping.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TagRecord {
    pub digest: String,
    /// When the mapping was last confirmed by the upstream (drives the tag TTL).
    pub fetched_at: u64,
    pub created: u64,
}

/// Metadata of a blob file in the content-addressed directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlobMeta {
    pub size: u64,
    pub created: u64,
    pub last_pulled: u64,
    /// Every `registry/repository` this blob was pulled through.
    pub repositories: Vec<String>,
    #[serde(default)]
    pub pull_count: u64,
}

/// A pinned image: never pruned nor evicted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PinRecord {
    /// The root manifest the reference resolved to when it was pinned.
    pub digest: String,
    pub created: u64,
}

/// Adds `item` to `list` unless present; returns whether it was added.
pub fn add_unique(list: &mut Vec<String>, item: &str) -> bool {
    if list.iter().any(|x| x == item) {
        return false;
    }
    list.push(item.to_owned());
    true
}
