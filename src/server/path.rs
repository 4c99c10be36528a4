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
        ApiPath::split(rest).ok_or_else(|| {
            RegistryError::EndpointUnknown(format!(
                "/v2/{rest} is not an endpoint of this pull-only registry"
            ))
        })
    }

    /// [`ApiPath::parse`] without building the error: also what the request metrics label a path by, so a label
    /// names the endpoint the router took.
    pub fn split(rest: &'a str) -> Option<ApiPath<'a>> {
        // From the end (the name may hold slashes), by a vectorised search: the last segment is mostly a 71-byte
        // digest, and the metrics ask for every request. The segment before it is one of three words, compared
        // in place rather than searched for.
        let last_slash = memchr::memrchr(b'/', rest.as_bytes())?;
        let (head, last) = (&rest[..last_slash], &rest[last_slash + 1..]);
        let name_of = |kind: &str| {
            let name = head.strip_suffix(kind)?.strip_suffix('/')?;
            (!name.is_empty()).then_some(name)
        };
        if let Some(name) = name_of("manifests") {
            Some(ApiPath::Manifest {
                name,
                reference: last,
            })
        } else if let Some(name) = name_of("blobs") {
            Some(ApiPath::Blob { name, digest: last })
        } else {
            name_of("referrers").map(|name| ApiPath::Referrers { name, digest: last })
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
        assert!(ApiPath::parse("/manifests/latest").is_err());
        assert!(ApiPath::parse("a/xmanifests/latest").is_err());
        assert!(ApiPath::parse("a/manifests/").is_ok());
        assert_eq!(
            ApiPath::parse("a/blobs/referrers/sha256:00").unwrap(),
            ApiPath::Referrers {
                name: "a/blobs",
                digest: "sha256:00"
            }
        );
        assert!(ApiPath::parse("a/tags/list").is_err());
        assert!(ApiPath::parse("_catalog").is_err());
    }
}
