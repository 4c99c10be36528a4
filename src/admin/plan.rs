//! Images as operators see them, worked out from an index [`Snapshot`]: which manifests are roots (pulled by
//! tag or digest, not children of an index), what each root holds, and which of them a prune or the disk
//! ceiling removes. Pure functions over the snapshot: nothing here touches the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::store::{Removal, Snapshot};

/// One row of `list`: a tag (or, for an image pulled only by digest, the digest) of a cached image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// `registry/repository:tag` or `registry/repository@digest`.
    pub reference: String,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub media_type: String,
    /// `os/arch[/variant]` of the cached platform images.
    pub platforms: Vec<String>,
    /// Bytes of the image's cached manifests and blobs.
    pub size: u64,
    /// Unix seconds.
    pub created: u64,
    pub last_pulled: u64,
    pub pull_count: u64,
    pub pinned: bool,
}

/// A root manifest and everything it holds.
#[derive(Debug)]
pub struct Root {
    pub digest: String,
    /// The root and its child manifests that are cached.
    pub manifests: BTreeSet<String>,
    /// Blobs those manifests reference that are cached.
    pub blobs: BTreeSet<String>,
    pub size: u64,
    pub created: u64,
    /// The latest pull of any of its manifests.
    pub last_pulled: u64,
    pub pull_count: u64,
    pub pinned: bool,
    /// (repository, tag) pairs; a `None` tag for a repository that has it only by digest.
    pub names: Vec<(String, Option<String>)>,
}

/// What the snapshot holds, organised by root.
pub struct Catalog<'a> {
    pub snapshot: &'a Snapshot,
    pub roots: BTreeMap<String, Root>,
}

/// Splits `registry/repository` into its two parts.
fn split_repository(repository: &str) -> (&str, &str) {
    repository.split_once('/').unwrap_or((repository, ""))
}

impl<'a> Catalog<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Catalog<'a> {
        let children: BTreeSet<&str> = snapshot
            .manifests
            .values()
            .flat_map(|m| m.references.iter().map(String::as_str))
            .filter(|d| snapshot.manifests.contains_key(*d))
            .collect();
        // Referrers indexes hang off their subject; they are not images of their own.
        let referrers: BTreeSet<&str> = snapshot
            .tags
            .iter()
            .filter(|(k, _)| k.ends_with("#referrers"))
            .map(|(_, r)| r.digest.as_str())
            .collect();
        let pinned: BTreeSet<&str> = snapshot
            .pins
            .values()
            .map(|p| p.digest.as_str())
            .chain(
                // A pinned tag protects what it points at now, too.
                snapshot
                    .pins
                    .keys()
                    .filter_map(|k| snapshot.tags.get(k))
                    .map(|t| t.digest.as_str()),
            )
            .collect();
        let mut tags_by_digest: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
        for key in snapshot.tags.keys() {
            if key.contains('#') {
                continue;
            }
            if let Some((repository, tag)) = key.rsplit_once(':') {
                if !tag.contains('/') {
                    tags_by_digest
                        .entry(snapshot.tags[key].digest.as_str())
                        .or_default()
                        .push((repository, tag));
                }
            }
        }
        let mut roots = BTreeMap::new();
        for (digest, meta) in &snapshot.manifests {
            if children.contains(digest.as_str()) || referrers.contains(digest.as_str()) {
                continue;
            }
            let mut manifests = BTreeSet::from([digest.clone()]);
            let mut blobs = BTreeSet::new();
            let mut last_pulled = meta.last_pulled;
            let mut size = meta.size;
            for reference in &meta.references {
                if let Some(child) = snapshot.manifests.get(reference) {
                    if manifests.insert(reference.clone()) {
                        size += child.size;
                        last_pulled = last_pulled.max(child.last_pulled);
                        blobs.extend(
                            child
                                .references
                                .iter()
                                .filter(|b| snapshot.blobs.contains_key(*b))
                                .cloned(),
                        );
                    }
                } else if snapshot.blobs.contains_key(reference) {
                    blobs.insert(reference.clone());
                }
            }
            size += blobs.iter().map(|b| snapshot.blobs[b].size).sum::<u64>();
            let mut names = Vec::new();
            let tagged = tags_by_digest.get(digest.as_str());
            for repository in &meta.repositories {
                let mut any = false;
                for (repo, tag) in tagged.into_iter().flatten() {
                    if repo == repository {
                        names.push((repository.clone(), Some(tag.to_string())));
                        any = true;
                    }
                }
                if !any {
                    names.push((repository.clone(), None));
                }
            }
            roots.insert(
                digest.clone(),
                Root {
                    digest: digest.clone(),
                    manifests,
                    blobs,
                    size,
                    created: meta.created,
                    last_pulled,
                    pull_count: meta.pull_count,
                    pinned: pinned.contains(digest.as_str()),
                    names,
                },
            );
        }
        Catalog { snapshot, roots }
    }

    /// The rows of a root; `platforms` is filled in by the caller (it needs manifest bodies).
    pub fn images_of(&self, root: &Root) -> Vec<Image> {
        let meta = &self.snapshot.manifests[&root.digest];
        root.names
            .iter()
            .map(|(repository, tag)| {
                let (registry, repo) = split_repository(repository);
                Image {
                    reference: match tag {
                        Some(tag) => format!("{repository}:{tag}"),
                        None => format!("{repository}@{}", root.digest),
                    },
                    registry: registry.to_owned(),
                    repository: repo.to_owned(),
                    tag: tag.clone(),
                    digest: root.digest.clone(),
                    media_type: meta.media_type.clone(),
                    platforms: Vec::new(),
                    size: root.size,
                    created: root.created,
                    last_pulled: root.last_pulled,
                    pull_count: root.pull_count,
                    pinned: root.pinned,
                }
            })
            .collect()
    }

    /// Manifests and blobs that removing `doomed` roots frees: those no other root holds.
    pub fn removal(&self, doomed: &BTreeSet<String>, planned_at: u64) -> Removal {
        let mut kept_manifests = BTreeSet::new();
        let mut kept_blobs = BTreeSet::new();
        for (digest, root) in &self.roots {
            if !doomed.contains(digest) {
                kept_manifests.extend(root.manifests.iter().cloned());
                kept_blobs.extend(root.blobs.iter().cloned());
            }
        }
        // Manifests that are in no root at all (referrers indexes) keep what they reference as well.
        for (digest, meta) in &self.snapshot.manifests {
            if !self.roots.values().any(|r| r.manifests.contains(digest)) {
                kept_blobs.extend(meta.references.iter().cloned());
            }
        }
        let mut removal = Removal {
            planned_at,
            ..Removal::default()
        };
        for digest in doomed {
            if let Some(root) = self.roots.get(digest) {
                removal.manifests.extend(
                    root.manifests
                        .iter()
                        .filter(|m| !kept_manifests.contains(*m))
                        .cloned(),
                );
                removal.blobs.extend(
                    root.blobs
                        .iter()
                        .filter(|b| !kept_blobs.contains(*b))
                        .cloned(),
                );
            }
        }
        removal
    }

    /// Bytes a removal frees (manifest bytes in the index, blob files).
    pub fn bytes_of(&self, removal: &Removal) -> u64 {
        let manifests: u64 = removal
            .manifests
            .iter()
            .filter_map(|d| self.snapshot.manifests.get(d))
            .map(|m| m.size)
            .sum();
        let blobs: u64 = removal
            .blobs
            .iter()
            .filter_map(|d| self.snapshot.blobs.get(d))
            .map(|b| b.size)
            .sum();
        manifests + blobs
    }

    /// Blobs no manifest references, last pulled before `cutoff`: left by a crash or a pull of a blob alone.
    pub fn unreferenced_blobs(&self, cutoff: u64) -> BTreeSet<String> {
        let referenced: BTreeSet<&str> = self
            .snapshot
            .manifests
            .values()
            .flat_map(|m| m.references.iter().map(String::as_str))
            .collect();
        self.snapshot
            .blobs
            .iter()
            .filter(|(d, b)| !referenced.contains(d.as_str()) && b.last_pulled < cutoff)
            .map(|(d, _)| d.clone())
            .collect()
    }
}

/// Which time `--older-than` compares.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AgeBy {
    #[default]
    LastPulled,
    Created,
}

/// What a prune selects.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Roots whose age (by `by`) is at least this many seconds; `None`: any age.
    pub older_than: Option<u64>,
    pub by: AgeBy,
    pub pattern: Option<globset::GlobMatcher>,
    /// Per repository, keep this many newest (by creation) roots whatever else matches.
    pub keep_latest: Option<usize>,
}

/// A glob over `registry/repository[:tag]`: `*` stays within a path component, `**` crosses them.
pub fn pattern(text: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(text)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("pattern {text:?}: {e}"))
}

/// What a prune removes: whole images (roots), and tags of images that other names still keep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selected {
    pub roots: BTreeSet<String>,
    /// `registry/repository:tag` keys whose image stays (it has names that were not selected).
    pub tags: BTreeSet<String>,
}

impl Selection {
    /// Selects by name (`registry/repository:tag`): an image goes when every one of its names is selected,
    /// otherwise only the selected tags go. Never a pinned image.
    pub fn select(&self, catalog: &Catalog<'_>, now: u64) -> Selected {
        // Per repository, the `keep_latest` newest images (by creation) keep their names in that repository.
        let mut kept_names: BTreeSet<(&str, &str)> = BTreeSet::new();
        if let Some(keep) = self.keep_latest {
            let mut by_repository: BTreeMap<&str, Vec<&Root>> = BTreeMap::new();
            for root in catalog.roots.values() {
                for (repository, _) in &root.names {
                    by_repository.entry(repository).or_default().push(root);
                }
            }
            for (repository, roots) in by_repository.iter_mut() {
                roots.sort_by(|a, b| b.created.cmp(&a.created).then(a.digest.cmp(&b.digest)));
                roots.dedup_by(|a, b| a.digest == b.digest);
                kept_names.extend(
                    roots
                        .iter()
                        .take(keep)
                        .map(|r| (*repository, r.digest.as_str())),
                );
            }
        }
        let mut selected = Selected::default();
        for root in catalog.roots.values() {
            if root.pinned {
                continue;
            }
            let old_enough = self.older_than.is_none_or(|age| {
                let at = match self.by {
                    AgeBy::LastPulled => root.last_pulled,
                    AgeBy::Created => root.created,
                };
                now.saturating_sub(at) >= age
            });
            if !old_enough {
                continue;
            }
            let chosen: Vec<&(String, Option<String>)> = root
                .names
                .iter()
                .filter(|(repository, _)| {
                    !kept_names.contains(&(repository.as_str(), root.digest.as_str()))
                })
                .filter(|name| self.pattern.as_ref().is_none_or(|p| name_matches(name, p)))
                .collect();
            if chosen.len() == root.names.len() {
                selected.roots.insert(root.digest.clone());
            } else {
                selected
                    .tags
                    .extend(chosen.iter().filter_map(|(repository, tag)| {
                        tag.as_ref().map(|t| format!("{repository}:{t}"))
                    }));
            }
        }
        selected
    }
}

/// Whether a name (`registry/repository` and its tag, if any) matches `pattern`.
fn name_matches(
    (repository, tag): &(String, Option<String>),
    pattern: &globset::GlobMatcher,
) -> bool {
    pattern.is_match(repository)
        || tag
            .as_ref()
            .is_some_and(|t| pattern.is_match(format!("{repository}:{t}")))
}

/// The roots to evict so that blob bytes fall to `target`: least recently pulled first, never pinned; a
/// root's blobs count as freed only when no kept root holds them.
pub fn eviction(catalog: &Catalog<'_>, target: u64) -> BTreeSet<String> {
    let mut total: u64 = catalog.snapshot.blobs.values().map(|b| b.size).sum();
    let mut holders: HashMap<&str, usize> = HashMap::new();
    for root in catalog.roots.values() {
        for blob in &root.blobs {
            *holders.entry(blob.as_str()).or_default() += 1;
        }
    }
    let mut order: Vec<&Root> = catalog.roots.values().filter(|r| !r.pinned).collect();
    order.sort_by(|a, b| {
        a.last_pulled
            .cmp(&b.last_pulled)
            .then(a.digest.cmp(&b.digest))
    });
    let mut doomed = BTreeSet::new();
    for root in order {
        if total <= target {
            break;
        }
        for blob in &root.blobs {
            let count = holders.get_mut(blob.as_str()).expect("counted above");
            *count -= 1;
            if *count == 0 {
                total = total.saturating_sub(catalog.snapshot.blobs[blob].size);
            }
        }
        doomed.insert(root.digest.clone());
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobMeta, ManifestMeta, PinRecord, TagRecord};

    fn manifest(refs: &[&str], created: u64, pulled: u64, repo: &str) -> ManifestMeta {
        ManifestMeta {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 100,
            created,
            last_pulled: pulled,
            repositories: vec![repo.into()],
            references: refs.iter().map(|s| s.to_string()).collect(),
            pull_count: 1,
        }
    }

    fn blob(size: u64) -> BlobMeta {
        BlobMeta {
            size,
            created: 1,
            last_pulled: 1,
            repositories: vec![],
            pull_count: 0,
        }
    }

    fn tag(digest: &str) -> TagRecord {
        TagRecord {
            digest: digest.into(),
            fetched_at: 1,
            created: 1,
        }
    }

    /// Two images sharing blob `b-shared`; `old` is an index with one child.
    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.manifests.insert("old".into(), {
            let mut m = manifest(&["old-child"], 10, 10, "r.io/app");
            m.media_type = "application/vnd.oci.image.index.v1+json".into();
            m
        });
        s.manifests.insert(
            "old-child".into(),
            manifest(&["b-shared", "b-old"], 10, 10, "r.io/app"),
        );
        s.manifests.insert(
            "new".into(),
            manifest(&["b-shared", "b-new"], 20, 90, "r.io/app"),
        );
        s.manifests
            .insert("other".into(), manifest(&["b-other"], 5, 5, "r.io/other"));
        for (d, size) in [
            ("b-shared", 1000),
            ("b-old", 10),
            ("b-new", 20),
            ("b-other", 30),
        ] {
            s.blobs.insert(d.into(), blob(size));
        }
        s.tags.insert("r.io/app:v1".into(), tag("old"));
        s.tags.insert("r.io/app:v2".into(), tag("new"));
        s.tags.insert("r.io/other:latest".into(), tag("other"));
        s
    }

    #[test]
    fn roots_children_and_names() {
        let s = snapshot();
        let c = Catalog::new(&s);
        assert_eq!(c.roots.len(), 3);
        let old = &c.roots["old"];
        assert_eq!(old.manifests.len(), 2);
        assert_eq!(old.blobs.len(), 2);
        assert_eq!(old.size, 100 + 100 + 1000 + 10);
        let rows = c.images_of(old);
        assert_eq!(rows[0].reference, "r.io/app:v1");
        assert_eq!(rows[0].registry, "r.io");
    }

    #[test]
    fn prune_keeps_shared_blobs_and_pins() {
        let mut s = snapshot();
        let c = Catalog::new(&s);
        let sel = Selection {
            older_than: Some(50),
            ..Selection::default()
        };
        let doomed = sel.select(&c, 100).roots;
        assert_eq!(
            doomed,
            BTreeSet::from(["old".to_string(), "other".to_string()])
        );
        let removal = c.removal(&doomed, 100);
        assert!(removal.manifests.contains("old-child"));
        assert!(
            !removal.blobs.contains("b-shared"),
            "held by the kept image"
        );
        assert!(removal.blobs.contains("b-old"));

        s.pins.insert(
            "r.io/other:latest".into(),
            PinRecord {
                digest: "other".into(),
                created: 1,
            },
        );
        let c = Catalog::new(&s);
        assert_eq!(
            sel.select(&c, 100).roots,
            BTreeSet::from(["old".to_string()])
        );
        let sel = Selection {
            pattern: Some(pattern("r.io/*").unwrap()),
            keep_latest: Some(1),
            ..Selection::default()
        };
        assert_eq!(
            sel.select(&c, 100).roots,
            BTreeSet::from(["old".to_string()])
        );
        assert!(pattern("r.io/*").unwrap().is_match("r.io/app"));
        assert!(!pattern("r.io/*").unwrap().is_match("r.io/a/b"));
        assert!(pattern("r.io/**").unwrap().is_match("r.io/a/b"));
    }

    #[test]
    fn a_pattern_removes_only_the_names_it_matches() {
        let mut s = snapshot();
        // `new` is also cached as r.io/mirror:v1.
        s.manifests
            .get_mut("new")
            .unwrap()
            .repositories
            .push("r.io/mirror".into());
        s.tags.insert("r.io/mirror:v1".into(), tag("new"));
        let c = Catalog::new(&s);
        let sel = Selection {
            pattern: Some(pattern("r.io/mirror").unwrap()),
            ..Selection::default()
        };
        let selected = sel.select(&c, 100);
        assert!(selected.roots.is_empty(), "r.io/app:v2 still names it");
        assert_eq!(
            selected.tags,
            BTreeSet::from(["r.io/mirror:v1".to_string()])
        );
        // keep_latest counts per repository: the newest of r.io/mirror does not protect r.io/app's old one.
        let sel = Selection {
            keep_latest: Some(1),
            ..Selection::default()
        };
        let selected = sel.select(&c, 100);
        assert_eq!(selected.roots, BTreeSet::from(["old".to_string()]));
        assert!(selected.tags.is_empty());
    }

    #[test]
    fn eviction_is_lru_and_counts_shared_blobs_once() {
        let s = snapshot();
        let c = Catalog::new(&s);
        // 1060 bytes of blobs. Evicting `other` (30) then `old` (10: b-shared is still held by `new`).
        assert_eq!(eviction(&c, 1050), BTreeSet::from(["other".to_string()]));
        assert_eq!(
            eviction(&c, 1020),
            BTreeSet::from(["other".to_string(), "old".to_string()])
        );
        assert_eq!(eviction(&c, 0).len(), 3);
    }
}
