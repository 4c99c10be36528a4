//! Parsing `/v2/<name>/manifests/<reference>`, `/v2/<name>/blobs/<digest>` and `/v2/<name>/referrers/<digest>`,
//! where `<name>` may itself
//! contain slashes (`a/b/c`, or an in-path registry host).

use crate::error::RegistryError;

/// What an API path under `/v2/` asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiPath<'a> {
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> ApiPath<'a> {
    /// Parses the part of the path after `/v2/`.
    pub fn parse(rest: &'a str) -> Result<ApiPath<'a>, RegistryError> {
        let mut parts = rest.rsplitn(3, '/');
        let (last, kind, name) = (parts.next(), parts.next(), parts.next());
        match (name, kind, last) {
            (Some(name), Some("manifests"), Some(reference)) if !name.is_empty() => {
                Ok(ApiPath::Manifest { name, reference })
            }
            (Some(name), Some("blobs"), Some(digest)) if !name.is_empty() => {
                Ok(ApiPath::Blob { name, digest })
            }
            (Some(name), Some("referrers"), Some(digest)) if !name.is_empty() => {
                Ok(ApiPath::Referrers { name, digest })
            }
            _ => Err(RegistryError::EndpointUnknown(format!(
                "/v2/{rest} is not an endpoint of this pull-only registry"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_names() {
        assert_eq!(
            ApiPath::parse("a/b/c/manifests/latest").unwrap(),
            ApiPath::Manifest {
                name: "a/b/c",
                reference: "latest"
            }
        );
        assert_eq!(
            ApiPath::parse("registry.k8s.io/pause/blobs/sha256:00").unwrap(),
            ApiPath::Blob {
                name: "registry.k8s.io/pause",
                digest: "sha256:00"
            }
        );
        assert!(ApiPath::parse("manifests/latest").is_err());
        assert!(ApiPath::parse("a/tags/list").is_err());
        assert!(ApiPath::parse("_catalog").is_err());
    }
}
