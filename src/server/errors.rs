//! How a [`RegistryError`] becomes an HTTP answer: status, OCI JSON body `{"errors":[{code, message}]}`, and
//! the headers that go with some codes. Detail of local failures and of upstream trouble stays in the log,
//! tagged with the request id that the client's message names: the error travels in the response's
//! extensions to the access-log layer, which knows the id ([`with_request_id`]); no task-local on the hot
//! path.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

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
pub fn client_message(err: &RegistryError, request_id: Option<u64>) -> String {
    let generic = match err {
        RegistryError::Internal(_) => "internal error",
        RegistryError::UpstreamUnavailable(_) => "upstream unavailable",
        RegistryError::TooManyRequests { .. } => "upstream is rate limiting; retry later",
        _ => return err.message().to_owned(),
    };
    match request_id {
        Some(id) => format!("{generic} (request id {id})"),
        None => generic.to_owned(),
    }
}

/// Whether the client's message hides detail that goes to the log instead.
fn hides_detail(err: &RegistryError) -> bool {
    matches!(
        err,
        RegistryError::Internal(_)
            | RegistryError::UpstreamUnavailable(_)
            | RegistryError::TooManyRequests { .. }
    )
}

/// The JSON body `{"errors":[…]}`.
pub fn body(err: &RegistryError, request_id: Option<u64>) -> String {
    serde_json::json!({ "errors": [{ "code": err.code(), "message": client_message(err, request_id) }] })
        .to_string()
}

/// The error behind an error response, for the access-log layer.
#[derive(Clone)]
pub struct ErrorDetail(pub std::sync::Arc<RegistryError>);

/// Completes an error answer once its request id is known: logs the detail with the id and, where the
/// client's message is generic, names the id in the body.
pub fn with_request_id(response: &mut Response, id: u64) {
    let Some(ErrorDetail(err)) = response.extensions_mut().remove::<ErrorDetail>() else {
        return;
    };
    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        tracing::warn!(request_id = id, code = err.code(), error = %err, "request failed");
    }
    if hides_detail(&err) {
        let text = body(&err, Some(id));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        *response.body_mut() = axum::body::Body::from(text);
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = status(&self);
        let mut response = (status, body(&self, None)).into_response();
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
            .extensions_mut()
            .insert(ErrorDetail(std::sync::Arc::new(self)));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_oci_error_json_without_hidden_detail() {
        let err = RegistryError::BlobUnknown("blob unknown to registry".into());
        let v: serde_json::Value = serde_json::from_str(&body(&err, None)).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(status(&err), StatusCode::NOT_FOUND);
        let internal = RegistryError::internal("open", "secret path /x");
        assert!(!body(&internal, Some(7)).contains("secret"));
        let upstream = RegistryError::UpstreamUnavailable(
            "upstream 10.0.0.1:22 unreachable: connection refused".into(),
        );
        let text = body(&upstream, Some(7));
        assert!(
            !text.contains("refused") && !text.contains("10.0.0.1"),
            "{text}"
        );
        assert!(text.contains("UNAVAILABLE") && text.contains("request id 7"));
    }

    #[test]
    fn rate_limit_carries_retry_after() {
        let response = RegistryError::too_many_requests("x".into(), Some(30)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }
}
