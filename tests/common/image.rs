//! Tiny deterministic image builder.
//!
//! Builds a multi-platform image: an OCI image index (or a Docker manifest list) pointing at one
//! image manifest per platform (linux/amd64 and linux/arm64 by default), each with a config blob and
//! layer blobs made of pseudo-random bytes. Every object carries its sha256 digest and exact bytes, so
//! tests can compare what the proxy serves byte-for-byte. The same seed always yields the same image.

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The Accept header a containerd-like client sends for manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

pub const MIB: usize = 1024 * 1024;

/// `sha256:<64 lowercase hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic pseudo-random bytes (splitmix64 stream) of length `len`.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Bytes {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A blob (config or layer) with its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub data: Bytes,
}

impl Blob {
    pub fn new(media_type: &str, data: Bytes) -> Blob {
        Blob {
            digest: sha256_digest(&data),
            media_type: media_type.to_string(),
            data,
        }
    }
}

/// A manifest (index, list or image manifest): exact bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub data: Bytes,
}

impl Manifest {
    pub fn new(media_type: &str, data: Vec<u8>) -> Manifest {
        Manifest {
            digest: sha256_digest(&data),
            media_type: media_type.to_string(),
            data: Bytes::from(data),
        }
    }
}

/// One platform's image: its manifest, config blob and layers.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub os: String,
    pub architecture: String,
    pub manifest: Manifest,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// A multi-platform image: the top-level index/list plus its children.
#[derive(Clone, Debug)]
pub struct Image {
    pub index: Manifest,
    pub children: Vec<PlatformImage>,
}

impl Image {
    /// All blobs (configs and layers) of all platforms.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut out = Vec::new();
        for child in &self.children {
            out.push(&child.config);
            out.extend(child.layers.iter());
        }
        out
    }

    /// The index followed by every child manifest.
    pub fn manifests(&self) -> Vec<&Manifest> {
        let mut out = vec![&self.index];
        out.extend(self.children.iter().map(|c| &c.manifest));
        out
    }

    /// The largest blob of the image (a layer with the biggest size).
    pub fn largest_blob(&self) -> &Blob {
        self.blobs()
            .into_iter()
            .max_by_key(|b| b.data.len())
            .expect("image has blobs")
    }

    /// Looks up a blob by digest.
    pub fn blob(&self, digest: &str) -> Option<&Blob> {
        self.blobs().into_iter().find(|b| b.digest == digest)
    }

    /// Looks up a manifest (index or child) by digest.
    pub fn manifest(&self, digest: &str) -> Option<&Manifest> {
        self.manifests().into_iter().find(|m| m.digest == digest)
    }
}

/// OCI or Docker v2 media types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
}

/// Builder for [`Image`].
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    flavor: Flavor,
    seed: u64,
    layer_sizes: Vec<usize>,
    platforms: Vec<(String, String)>,
}

impl ImageBuilder {
    /// OCI index with linux/amd64 + linux/arm64, layers of 3 MiB + 123 bytes and 70001 bytes.
    pub fn oci() -> ImageBuilder {
        ImageBuilder {
            flavor: Flavor::Oci,
            seed: 1,
            layer_sizes: vec![3 * MIB + 123, 70_001],
            platforms: vec![
                ("linux".into(), "amd64".into()),
                ("linux".into(), "arm64".into()),
            ],
        }
    }

    /// Same as [`ImageBuilder::oci`] but with Docker manifest list / v2 manifest media types.
    pub fn docker() -> ImageBuilder {
        ImageBuilder {
            flavor: Flavor::Docker,
            ..ImageBuilder::oci()
        }
    }

    /// Different seeds give images with entirely different blobs and digests.
    pub fn seed(mut self, seed: u64) -> ImageBuilder {
        self.seed = seed;
        self
    }

    /// Sizes of the layers of each platform image.
    pub fn layer_sizes(mut self, sizes: &[usize]) -> ImageBuilder {
        self.layer_sizes = sizes.to_vec();
        self
    }

    /// A small image (layers of 40000 and 1234 bytes) for tests that do not need big blobs.
    pub fn small(self) -> ImageBuilder {
        self.layer_sizes(&[40_000, 1_234])
    }

    pub fn build(&self) -> Image {
        let (index_type, manifest_type, config_type, layer_type) = match self.flavor {
            Flavor::Oci => (OCI_INDEX, OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
            Flavor::Docker => (DOCKER_LIST, DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
        };
        let mut children = Vec::new();
        for (p, (os, arch)) in self.platforms.iter().enumerate() {
            let layers: Vec<Blob> = self
                .layer_sizes
                .iter()
                .enumerate()
                .map(|(l, size)| {
                    let seed = self.seed.wrapping_mul(1_000_003) + (p as u64) * 100 + l as u64;
                    Blob::new(layer_type, pseudo_random_bytes(seed, *size))
                })
                .collect();
            let config_json = json!({
                "architecture": arch,
                "os": os,
                "created": "2024-01-01T00:00:00Z",
                "config": { "Env": [format!("SEED={}", self.seed)] },
                "rootfs": {
                    "type": "layers",
                    "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
                },
            });
            let config = Blob::new(
                config_type,
                Bytes::from(serde_json::to_vec(&config_json).unwrap()),
            );
            let manifest_json = json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": descriptor(&config.media_type, &config.digest, config.data.len()),
                "layers": layers
                    .iter()
                    .map(|l| descriptor(&l.media_type, &l.digest, l.data.len()))
                    .collect::<Vec<_>>(),
            });
            // Pretty-printed on purpose: a proxy that re-serializes would change the bytes.
            let manifest = Manifest::new(
                manifest_type,
                serde_json::to_vec_pretty(&manifest_json).unwrap(),
            );
            children.push(PlatformImage {
                os: os.clone(),
                architecture: arch.clone(),
                manifest,
                config,
                layers,
            });
        }
        let index_json = json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": children
                .iter()
                .map(|c| {
                    let mut d = descriptor(
                        &c.manifest.media_type,
                        &c.manifest.digest,
                        c.manifest.data.len(),
                    );
                    d["platform"] = json!({ "architecture": c.architecture, "os": c.os });
                    d
                })
                .collect::<Vec<_>>(),
        });
        let mut index_bytes = serde_json::to_vec_pretty(&index_json).unwrap();
        index_bytes.push(b'\n');
        Image {
            index: Manifest::new(index_type, index_bytes),
            children,
        }
    }
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}
