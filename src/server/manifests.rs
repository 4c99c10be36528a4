//! `HEAD`/`GET /v2/<name>/manifests/<reference>`: the manifest's bytes exactly as the upstream sent them.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Response, StatusCode};

use super::headers::{API_VERSION, API_VERSION_VALUE, DOCKER_CONTENT_DIGEST};
use super::telemetry::{Endpoint, Served};
use super::AppState;
use crate::cache::{CacheStatus, CachedManifest};
use crate::error::RegistryError;
use crate::reference::Reference;
use crate::route::Target;

pub async fn serve(
    state: &AppState,
    method: &Method,
    target: Target,
    reference: Reference,
    request_headers: &HeaderMap,
) -> Result<Response<Body>, RegistryError> {
    let (manifest, status) = state.cache.manifest(&target, &reference).await?;
    Ok(respond(
        &manifest,
        method == Method::HEAD,
        request_headers,
        status,
    ))
}

fn respond(
    manifest: &CachedManifest,
    head: bool,
    request_headers: &HeaderMap,
    status: CacheStatus,
) -> Response<Body> {
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == manifest.etag.as_bytes());
    let body = if head || not_modified {
        Body::empty()
    } else {
        Body::from(manifest.body.clone())
    };
    let mut response = super::headers::content_answer(body);
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, manifest.content_type.clone());
    if !not_modified {
        headers.insert(header::CONTENT_LENGTH, manifest.body.len().into());
    }
    headers.insert(DOCKER_CONTENT_DIGEST, manifest.digest_header.clone());
    headers.insert(header::ETAG, manifest.etag.clone());
    headers.insert(API_VERSION, API_VERSION_VALUE);
    response.extensions_mut().insert(Served {
        endpoint: Endpoint::Manifest,
        cache: status,
    });
    response
}
