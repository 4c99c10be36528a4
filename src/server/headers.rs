//! Header names and values the API sends, built once.

use axum::http::{HeaderName, HeaderValue};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static("registry/2.0");
pub const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub const BYTES: HeaderValue = HeaderValue::from_static("bytes");
