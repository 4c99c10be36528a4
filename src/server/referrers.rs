//! `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: the OCI referrers index of a manifest.

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Response};

use super::headers::{API_VERSION, API_VERSION_VALUE};
use super::AppState;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::OCI_INDEX;
use crate::route::Target;

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

pub async fn serve(
    state: &AppState,
    method: &Method,
    target: Target,
    digest: &str,
    artifact_type: Option<&str>,
) -> Result<Response<Body>, RegistryError> {
    let subject: Digest = digest.parse()?;
    let referrers = state
        .cache
        .referrers(&target, &subject, artifact_type)
        .await?;
    let length = referrers.body.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(referrers.body)
    };
    let mut response = super::headers::content_answer(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    headers.insert(header::CONTENT_LENGTH, length.into());
    headers.insert(API_VERSION, API_VERSION_VALUE);
    if referrers.filtered {
        headers.insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}
