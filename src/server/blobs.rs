//! `HEAD`/`GET /v2/<name>/blobs/<digest>`: cached blobs streamed from disk, uncached ones read along their
//! download; single `Range`s answered with 206.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::response::IntoResponse;

use super::headers::{API_VERSION, API_VERSION_VALUE, BYTES, DOCKER_CONTENT_DIGEST, OCTET_STREAM};
use super::telemetry::{Endpoint, Served};
use super::{file_body, range, AppState};
use crate::cache::{BlobSource, CacheStatus};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::route::Target;

pub async fn serve(
    state: &AppState,
    method: &Method,
    target: Target,
    digest: &str,
    request_headers: &HeaderMap,
) -> Result<Response<Body>, RegistryError> {
    let digest: Digest = digest.parse()?;
    if method == Method::HEAD {
        let (size, status) = state.cache.blob_size(&target, &digest).await?;
        return Ok(respond(&digest, Body::empty(), size, None, status));
    }
    let range_header = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (source, status) = state.cache.blob(&target, &digest).await?;
    match source {
        BlobSource::Cached { file, size } => {
            let range = match range::resolve(range_header, size) {
                Ok(range) => range,
                Err(err) => return Ok(unsatisfiable(err, size)),
            };
            let (start, len) = span(range.as_ref(), size);
            let body = file_body::body(file, start, len, state.blob_io)
                .map_err(|e| RegistryError::internal("read blob", e))?;
            Ok(respond(&digest, body, size, range, status))
        }
        BlobSource::Shared { bucket, size } => {
            let range = match range::resolve(range_header, size) {
                Ok(range) => range,
                Err(err) => return Ok(unsatisfiable(err, size)),
            };
            let body = crate::cache::shared_body(&bucket, &digest, range.clone()).await?;
            Ok(respond(
                &digest,
                Body::from_stream(body),
                size,
                range,
                status,
            ))
        }
        // Not stored (the disk is full): the whole blob, whatever the Range asked (a server may ignore Range).
        BlobSource::Uncached { body, size } => {
            let body = Body::from_stream(body);
            Ok(match size {
                Some(size) => respond(&digest, body, size, None, status),
                None => respond_unsized(&digest, body, status),
            })
        }
        BlobSource::Filling { fill, size } => {
            // A fill that failed already gets a proper error answer rather than an aborted body.
            if let Some(err) = fill.failure() {
                return Err(err);
            }
            // Without a stated size a range cannot be answered before the end; send the whole blob.
            let range = match size {
                Some(size) => match range::resolve(range_header, size) {
                    Ok(range) => range,
                    Err(err) => return Ok(unsatisfiable(err, size)),
                },
                None => None,
            };
            let (start, end) = match &range {
                Some(r) => (*r.start(), Some(*r.end())),
                None => (0, None),
            };
            let body = Body::from_stream(fill.reader(start, end));
            Ok(match size {
                Some(size) => respond(&digest, body, size, range, status),
                None => respond_unsized(&digest, body, status),
            })
        }
    }
}

/// A 416 answer, with `Content-Range: bytes */SIZE` as RFC 9110 asks.
fn unsatisfiable(err: RegistryError, size: u64) -> Response<Body> {
    let mut response = err.into_response();
    let value = HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii");
    response.headers_mut().insert(header::CONTENT_RANGE, value);
    response
}

/// Offset and length of what to send.
fn span(range: Option<&std::ops::RangeInclusive<u64>>, size: u64) -> (u64, u64) {
    match range {
        Some(r) => (*r.start(), r.end() - r.start() + 1),
        None => (0, size),
    }
}

fn respond(
    digest: &Digest,
    body: Body,
    size: u64,
    range: Option<std::ops::RangeInclusive<u64>>,
    status: CacheStatus,
) -> Response<Body> {
    let mut response = respond_unsized(digest, body, status);
    let (_, len) = span(range.as_ref(), size);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, len.into());
    if let Some(r) = range {
        let value = format!("bytes {}-{}/{size}", r.start(), r.end());
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("ascii"),
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

fn respond_unsized(digest: &Digest, body: Body, status: CacheStatus) -> Response<Body> {
    let mut response = super::headers::content_answer(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, OCTET_STREAM);
    headers.insert(header::ACCEPT_RANGES, BYTES);
    let digest_value = HeaderValue::from_str(digest.as_str()).expect("digest is ascii");
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("digest is ascii"),
    );
    headers.insert(DOCKER_CONTENT_DIGEST, digest_value);
    headers.insert(API_VERSION, API_VERSION_VALUE);
    response.extensions_mut().insert(Served {
        endpoint: Endpoint::Blob,
        cache: status,
    });
    response
}
