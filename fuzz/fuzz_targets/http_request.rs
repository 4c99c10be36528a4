//! The request path's own parsers: the API path router (`server::path::ApiPath::parse`) and blob `Range`
//! headers (`server::range::resolve`).
//!
//! Input: `path\0range\0size` (UTF-8; a missing part is empty / 0).
//!
//! Invariants of the router: a parsed path gives back its parts (`name/kind/last` is the input), the name is
//! never empty, and nothing else is an endpoint. Invariants of `resolve`: a range it answers lies inside the
//! blob (`start <= end < size`); no header means the whole blob; a refusal happens only for a header that
//! parses as a byte range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::server::path::ApiPath;
use ociregistry::server::range::resolve;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let path = parts.next().unwrap_or("");
    let range = parts.next();
    let size: u64 = parts.next().and_then(|s| s.trim().parse().ok()).unwrap_or(0);

    match ApiPath::parse(path) {
        Ok(parsed) => {
            let (name, kind, last) = match parsed {
                ApiPath::Manifest { name, reference } => (name, "manifests", reference),
                ApiPath::Blob { name, digest } => (name, "blobs", digest),
                ApiPath::Referrers { name, digest } => (name, "referrers", digest),
            };
            assert!(!name.is_empty(), "an empty name was accepted: {path:?}");
            assert_eq!(format!("{name}/{kind}/{last}"), path, "parts do not give back the path");
        }
        Err(err) => assert_eq!(err.code(), "UNSUPPORTED", "{path:?}: {err}"),
    }

    match resolve(range, size) {
        Ok(Some(r)) => {
            assert!(r.start() <= r.end(), "{range:?} of {size}: empty range {r:?}");
            assert!(*r.end() < size, "{range:?} of {size}: {r:?} ends past the blob");
        }
        Ok(None) => {}
        Err(_) => {
            let header = range.expect("no header is never refused");
            assert!(
                header.trim_start().starts_with("bytes="),
                "{header:?} was refused but is not a byte range"
            );
        }
    }
});
