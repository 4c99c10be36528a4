//! Manifest media types and inspection.
//!
//! Manifests are stored and served byte-for-byte (re-serialising would change their digest); they are only
//! parsed (with `oci-spec` types) to learn their media type and which blobs and child manifests they
//! reference, which `prune` needs.

use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::error::RegistryError;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header sent upstream: every manifest kind, so that one cached copy serves every client.
pub const ACCEPTED_MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Default of `max_manifest_bytes`, the largest manifest accepted from an upstream (the OCI spec suggests
/// registries accept at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// What the cache learns from a manifest's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    pub media_type: String,
    /// Child manifests (index) or config and layers (image), as digest strings.
    pub references: Vec<String>,
}

/// Just enough of any manifest to tell its kind.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

fn is_image(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Works out the media type (from `Content-Type`, else the body) and the references of a manifest.
/// Bytes that are not a manifest are rejected, so they are never cached.
pub fn inspect(body: &[u8], content_type: Option<&str>) -> Result<ManifestInfo, RegistryError> {
    let invalid = |why: String| {
        RegistryError::UpstreamInvalid(format!("upstream manifest is invalid: {why}"))
    };
    // serde_json does not check fields it skips as strictly as the rest: JSON is UTF-8, so say it first
    // (found by fuzzing: bytes that are not UTF-8 inside an unknown field were accepted).
    std::str::from_utf8(body).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    // A manifest is a JSON object. serde would also fill the probe from an array, field by field in order
    // (found by fuzzing: `["x", …]` was taken for a manifest of media type `x`).
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(invalid("not a JSON object".into()));
    }
    let probe: Probe = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let declared = content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim())
        .filter(|ct| is_index(ct) || is_image(ct) || *ct == DOCKER_SCHEMA1);
    let media_type = match (declared, probe.media_type.as_deref()) {
        (Some(ct), _) => ct.to_owned(),
        (None, Some(mt)) if !mt.is_empty() => mt.to_owned(),
        (None, _) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) if probe.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, _) => {
            return Err(invalid(
                "cannot tell its media type (no Content-Type, no mediaType)".into(),
            ))
        }
    };
    let references = if is_index(&media_type) {
        let index = ImageIndex::from_reader(body).map_err(|e| invalid(e.to_string()))?;
        index
            .manifests()
            .iter()
            .map(|d| d.digest().to_string())
            .collect()
    } else if is_image(&media_type) {
        let image = ImageManifest::from_reader(body).map_err(|e| invalid(e.to_string()))?;
        std::iter::once(image.config())
            .chain(image.layers())
            .map(|d| d.digest().to_string())
            .collect()
    } else {
        // Other kinds (artifacts, schema 1) pass through without reference tracking.
        Vec::new()
    };
    Ok(ManifestInfo {
        media_type,
        references,
    })
}

/// An OS/architecture(/variant) as image indexes and `--platform` name them: `linux/amd64`, `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// GOOS values images are built for.
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];
/// GOARCH values images are built for.
const KNOWN_ARCH: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64",
    "ppc64le", "riscv64", "s390x", "wasm",
];

impl Platform {
    /// Parses `os/arch[/variant]`, refusing an OS or architecture no image is built for (a typo would
    /// otherwise silently match nothing).
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] if !variant.is_empty() => (*os, *arch, Some(variant.to_string())),
            _ => {
                return Err(format!(
                    "platform {text:?} is not os/arch or os/arch/variant (e.g. linux/amd64)"
                ))
            }
        };
        if !KNOWN_OS.contains(&os) {
            return Err(format!(
                "platform {text:?}: unknown OS {os:?} (known: {})",
                KNOWN_OS.join(", ")
            ));
        }
        if !KNOWN_ARCH.contains(&architecture) {
            return Err(format!(
                "platform {text:?}: unknown architecture {architecture:?} (known: {})",
                KNOWN_ARCH.join(", ")
            ));
        }
        Ok(Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        })
    }

    /// Whether an image of platform `image` serves a request for `self` (a request without a variant takes
    /// any variant).
    pub fn matches(&self, image: &Platform) -> bool {
        self.os == image.os
            && self.architecture == image.architecture
            && (self.variant.is_none() || self.variant == image.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Whether a media type is an image index (OCI or Docker manifest list).
pub fn is_index_type(media_type: &str) -> bool {
    is_index(media_type)
}

/// The child manifests of an index and their platforms (`None` for entries without one, e.g. attestations).
pub fn index_children(body: &[u8]) -> Result<Vec<(String, Option<Platform>)>, RegistryError> {
    let index = ImageIndex::from_reader(body)
        .map_err(|e| RegistryError::UpstreamInvalid(format!("image index is invalid: {e}")))?;
    Ok(index
        .manifests()
        .iter()
        .map(|d| {
            let platform = d.platform().as_ref().map(|p| Platform {
                os: p.os().to_string(),
                architecture: p.architecture().to_string(),
                variant: p.variant().clone(),
            });
            (d.digest().to_string(), platform)
        })
        .collect())
}

/// The config blob digest of an image manifest.
pub fn image_config_digest(body: &[u8]) -> Option<String> {
    ImageManifest::from_reader(body)
        .ok()
        .map(|m| m.config().digest().to_string())
}

/// The platform an image config states.
pub fn config_platform(config: &[u8]) -> Option<Platform> {
    #[derive(Deserialize)]
    struct Config {
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    }
    let c: Config = serde_json::from_slice(config).ok()?;
    Some(Platform {
        os: c.os?,
        architecture: c.architecture?,
        variant: c.variant,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_that_are_not_utf8_are_not_a_manifest() {
        let mut body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[],"junk":""#.to_vec();
        body.extend([0xff, 0xfe]);
        body.extend(br#""}"#);
        assert!(inspect(&body, None).is_err());
    }

    #[test]
    fn a_json_array_is_not_a_manifest() {
        // Found by fuzzing: serde filled the probe from an array, its first element taken as the media type.
        for body in [
            r#"["meia","",",ai"]"#,
            r#" [ "application/vnd.oci.image.manifest.v1+json", null, {} ]"#,
            "\"application/vnd.oci.image.index.v1+json\"",
            "",
        ] {
            assert!(inspect(body.as_bytes(), None).is_err(), "{body:?}");
            assert!(
                inspect(body.as_bytes(), Some(OCI_MANIFEST)).is_err(),
                "{body:?}"
            );
        }
        // Whitespace before the object is JSON.
        let body = format!(" \n\t{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"x\",\"digest\":\"{D1}\",\"size\":1}},\"layers\":[]}}");
        assert_eq!(
            inspect(body.as_bytes(), None).unwrap().media_type,
            OCI_MANIFEST
        );
    }

    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifest_references() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":1}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":2}}]}}"#
        );
        let info = inspect(body.as_bytes(), None).unwrap();
        assert_eq!(info.media_type, DOCKER_MANIFEST);
        assert_eq!(info.references, vec![D1, D2]);
    }

    #[test]
    fn index_without_media_type_uses_content_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":3}}]}}"#
        );
        let info = inspect(
            body.as_bytes(),
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(info.media_type, OCI_INDEX);
        assert_eq!(info.references, vec![D1]);
        assert_eq!(
            inspect(body.as_bytes(), Some("text/plain"))
                .unwrap()
                .media_type,
            OCI_INDEX
        );
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(!Platform::parse("linux/arm64/v7")
            .unwrap()
            .matches(&Platform::parse("linux/arm64/v8").unwrap()));
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::parse("linux").unwrap_err().contains("os/arch"));
        assert!(Platform::parse("linux/amd46")
            .unwrap_err()
            .contains("unknown architecture"));
        assert!(Platform::parse("linx/amd64")
            .unwrap_err()
            .contains("unknown OS"));
    }

    #[test]
    fn rejects_non_manifests() {
        assert!(inspect(b"<html>", Some(OCI_MANIFEST)).is_err());
        assert!(inspect(b"{}", None).is_err());
        assert!(inspect(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
            None
        )
        .is_err());
    }
}
