//! The one error type of the request path, and its mapping to OCI error bodies and HTTP statuses.
//!
//! Every failure a client can see is a [`RegistryError`]; handlers return it as a value and
//! [`IntoResponse`] turns it into `{"errors":[{"code":…,"message":…}]}` with the matching status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// The upstream sent bytes that do not hash to the digest they were asked for.
    #[error("{0}")]
    UpstreamDigestMismatch(String),
    /// The upstream could not be reached, timed out, or answered with a server error.
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
            RegistryError::Denied(_) => "DENIED",
            RegistryError::TooManyRequests(_) => "TOOMANYREQUESTS",
            RegistryError::UpstreamUnavailable(_) => "UNAVAILABLE",
            RegistryError::Internal(_) => "UNKNOWN",
        }
    }

    /// The HTTP status that goes with the error.
    pub fn status(&self) -> StatusCode {
        match self {
            RegistryError::NameInvalid(_)
            | RegistryError::DigestInvalid(_)
            | RegistryError::ManifestInvalid(_) => StatusCode::BAD_REQUEST,
            RegistryError::NameUnknown(_)
            | RegistryError::EndpointUnknown(_)
            | RegistryError::ManifestUnknown(_)
            | RegistryError::BlobUnknown(_) => StatusCode::NOT_FOUND,
            RegistryError::RangeInvalid(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RegistryError::Denied(_) => StatusCode::FORBIDDEN,
            RegistryError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::UpstreamDigestMismatch(_)
            | RegistryError::UpstreamUnavailable(_)
            | RegistryError::UpstreamInvalid(_) => StatusCode::BAD_GATEWAY,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Wraps a local I/O or database failure.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        RegistryError::Internal(format!("{context}: {err}"))
    }

    /// The JSON body `{"errors":[…]}`.
    pub fn body(&self) -> String {
        let message = match self {
            // Local failure details stay in the log.
            RegistryError::Internal(_) => "internal error",
            other => other.message(),
        };
        serde_json::json!({ "errors": [{ "code": self.code(), "message": message }] }).to_string()
    }

    fn message(&self) -> &str {
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
            | RegistryError::Denied(m)
            | RegistryError::TooManyRequests(m)
            | RegistryError::UpstreamDigestMismatch(m)
            | RegistryError::UpstreamUnavailable(m)
            | RegistryError::UpstreamInvalid(m)
            | RegistryError::Internal(m) => m,
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let mut response = (status, self.body()).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_oci_error_json() {
        let err = RegistryError::BlobUnknown("blob unknown to registry".into());
        let v: serde_json::Value = serde_json::from_str(&err.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        let internal = RegistryError::internal("open", "secret path /x");
        assert!(!internal.body().contains("secret"));
    }
}
