//! The one error type of the request path: what went wrong, as an OCI error code and a message.
//!
//! Every failure a client can see is a [`RegistryError`], passed around as a value. How it becomes an HTTP
//! answer (status, headers, JSON body, what detail is hidden) is the server's business: `server::errors`.

/// A failure with an OCI error code. Cloneable so one upstream failure can be handed to every waiting reader.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("{0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    BlobUnknown(String),
    #[error("{0}")]
    RangeInvalid(String),
    #[error("{0}")]
    Unsupported(String),
    /// A path that is not an endpoint of this registry.
    #[error("{0}")]
    EndpointUnknown(String),
    /// The client must authenticate (a `passthrough` registry without, or with refused, credentials).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Denied(String),
    /// The upstream is rate limiting; `retry_after` in seconds when known.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: Option<u64>,
    },
    /// The upstream sent bytes that do not hash to the digest they were asked for.
    #[error("{0}")]
    UpstreamDigestMismatch(String),
    /// The upstream could not be reached, timed out, or answered with a server error. The text is for the
    /// log: clients see a generic message (it could otherwise probe the network behind the cache).
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// The upstream's answer was malformed (e.g. not a manifest, or too large).
    #[error("{0}")]
    UpstreamInvalid(String),
    /// A local failure (disk, index); details go to the log, not to the client.
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// The OCI error code (`MANIFEST_UNKNOWN`, …).
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NameInvalid(_) => "NAME_INVALID",
            RegistryError::NameUnknown(_) => "NAME_UNKNOWN",
            RegistryError::DigestInvalid(_) | RegistryError::UpstreamDigestMismatch(_) => {
                "DIGEST_INVALID"
            }
            RegistryError::ManifestInvalid(_) | RegistryError::UpstreamInvalid(_) => {
                "MANIFEST_INVALID"
            }
            RegistryError::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            RegistryError::BlobUnknown(_) => "BLOB_UNKNOWN",
            RegistryError::RangeInvalid(_) => "RANGE_INVALID",
            RegistryError::Unsupported(_) | RegistryError::EndpointUnknown(_) => "UNSUPPORTED",
            RegistryError::Unauthorized(_) => "UNAUTHORIZED",
            RegistryError::Denied(_) => "DENIED",
            RegistryError::TooManyRequests { .. } => "TOOMANYREQUESTS",
            RegistryError::UpstreamUnavailable(_) => "UNAVAILABLE",
            RegistryError::Internal(_) => "UNKNOWN",
        }
    }

    /// Wraps a local I/O or database failure.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        RegistryError::Internal(format!("{context}: {err}"))
    }

    /// A rate-limit error.
    pub fn too_many_requests(message: String, retry_after: Option<u64>) -> Self {
        RegistryError::TooManyRequests {
            message,
            retry_after,
        }
    }

    /// Whether this is trouble with the upstream (unreachable, slow, 5xx, rate limiting, nonsense answers)
    /// rather than an answer about the thing asked for: cached content is served instead (stale-if-error).
    pub fn is_upstream_trouble(&self) -> bool {
        matches!(
            self,
            RegistryError::UpstreamUnavailable(_)
                | RegistryError::TooManyRequests { .. }
                | RegistryError::UpstreamInvalid(_)
                | RegistryError::UpstreamDigestMismatch(_)
        )
    }

    /// The full message, including detail that clients do not see.
    pub fn message(&self) -> &str {
        match self {
            RegistryError::NameInvalid(m)
            | RegistryError::NameUnknown(m)
            | RegistryError::DigestInvalid(m)
            | RegistryError::ManifestInvalid(m)
            | RegistryError::ManifestUnknown(m)
            | RegistryError::BlobUnknown(m)
            | RegistryError::RangeInvalid(m)
            | RegistryError::Unsupported(m)
            | RegistryError::EndpointUnknown(m)
            | RegistryError::Unauthorized(m)
            | RegistryError::Denied(m)
            | RegistryError::TooManyRequests { message: m, .. }
            | RegistryError::UpstreamDigestMismatch(m)
            | RegistryError::UpstreamUnavailable(m)
            | RegistryError::UpstreamInvalid(m)
            | RegistryError::Internal(m) => m,
        }
    }
}
