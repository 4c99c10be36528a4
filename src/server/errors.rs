//! How a [`RegistryError`] becomes an HTTP answer: status, OCI JSON body `{"errors":[{code, message}]}`, and
//! the headers that go with some codes. Detail of local failures and of upstream trouble stays in the log,
//! tagged with the request id that the client's message names.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::request_id;
use crate::error::RegistryError;

/// The HTTP status that goes with an error.
pub fn status(err: &RegistryError) -> StatusCode {
    match err {
        RegistryError::NameInvalid(_)
        | RegistryError::DigestInvalid(_)
        | RegistryError::ManifestInvalid(_) => StatusCode::BAD_REQUEST,
        RegistryError::NameUnknown(_)
        | RegistryError::EndpointUnknown(_)
        | RegistryError::ManifestUnknown(_)
        | RegistryError::BlobUnknown(_) => StatusCode::NOT_FOUND,
        RegistryError::RangeInvalid(_) => StatusCode::RANGE_NOT_SATISFIABLE,
        RegistryError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
        RegistryError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        RegistryError::Denied(_) => StatusCode::FORBIDDEN,
        RegistryError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        RegistryError::UpstreamDigestMismatch(_)
        | RegistryError::UpstreamUnavailable(_)
        | RegistryError::UpstreamInvalid(_) => StatusCode::BAD_GATEWAY,
        RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The message a client sees. Upstream trouble and local failures get a generic text naming the request id:
/// the detail (connection refused, TLS, DNS, a token server's answer) would let a client probe the network.
pub fn client_message(err: &RegistryError) -> String {
    let generic = match err {
        RegistryError::Internal(_) => "internal error",
        RegistryError::UpstreamUnavailable(_) => "upstream unavailable",
        RegistryError::TooManyRequests { .. } => "upstream is rate limiting; retry later",
        _ => return err.message().to_owned(),
    };
    match request_id::current() {
        Some(id) => format!("{generic} (request id {id})"),
        None => generic.to_owned(),
    }
}

/// The JSON body `{"errors":[…]}`.
pub fn body(err: &RegistryError) -> String {
    serde_json::json!({ "errors": [{ "code": err.code(), "message": client_message(err) }] })
        .to_string()
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = status(&self);
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(
                request_id = request_id::current().unwrap_or_default(),
                code = self.code(),
                error = %self,
                "request failed"
            );
        }
        let mut response = (status, body(&self)).into_response();
        let headers = response.headers_mut();
        match &self {
            RegistryError::Unsupported(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            RegistryError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"ociregistry\""),
                );
            }
            RegistryError::TooManyRequests {
                retry_after: Some(seconds),
                ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            _ => {}
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
    fn body_is_oci_error_json_without_hidden_detail() {
        let err = RegistryError::BlobUnknown("blob unknown to registry".into());
        let v: serde_json::Value = serde_json::from_str(&body(&err)).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(status(&err), StatusCode::NOT_FOUND);
        let internal = RegistryError::internal("open", "secret path /x");
        assert!(!body(&internal).contains("secret"));
        let upstream = RegistryError::UpstreamUnavailable(
            "upstream 10.0.0.1:22 unreachable: connection refused".into(),
        );
        let text = body(&upstream);
        assert!(
            !text.contains("refused") && !text.contains("10.0.0.1"),
            "{text}"
        );
        assert!(text.contains("UNAVAILABLE"));
    }

    #[test]
    fn rate_limit_carries_retry_after() {
        let response = RegistryError::too_many_requests("x".into(), Some(30)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }
}
