//! Header names and values the API sends, built once.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response};

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static("registry/2.0");
pub const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
pub const BYTES: HeaderValue = HeaderValue::from_static("bytes");

/// Headers a content answer carries at most: content type, length and range, `Accept-Ranges`, digest, ETag, API
/// version, and the request id and `nosniff` every answer gets last.
const CONTENT_HEADERS: usize = 9;

/// A new answer whose header map has room for [`CONTENT_HEADERS`]: a map that starts empty has room for six, and
/// growing it on a later insert (a new table, every header hashed again) costs more than all the inserts together.
pub fn content_answer(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.headers_mut() = HeaderMap::with_capacity(CONTENT_HEADERS);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_answer_takes_its_headers_without_growing() {
        let mut response = content_answer(Body::empty());
        let room = response.headers().capacity();
        assert!(room >= CONTENT_HEADERS);
        for n in 0..CONTENT_HEADERS {
            response.headers_mut().insert(
                HeaderName::try_from(format!("x-header-{n}")).unwrap(),
                HeaderValue::from(n),
            );
        }
        assert_eq!(response.headers().capacity(), room);
        // What a map that starts empty has room for after its first insert: fewer, so it would grow.
        let mut plain = HeaderMap::new();
        plain.insert(API_VERSION, API_VERSION_VALUE);
        assert!(plain.capacity() < CONTENT_HEADERS, "{}", plain.capacity());
    }
}
