//! Manifest inspection (`ociregistry::manifest::inspect`) of untrusted upstream bytes.
//!
//! Input: first byte picks the `Content-Type` (none, each manifest type, with parameters, or junk); the
//! rest is the body.
//!
//! Invariants: inspection is deterministic; an accepted manifest is JSON; its media type is the declared
//! manifest `Content-Type` (without parameters) when there is one, else the body's non-empty `mediaType`,
//! else inferred OCI index/manifest; indexes and images list their references (config first, then layers),
//! every reference an `algorithm:encoded` digest string; other kinds list none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::manifest::{
    inspect, DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1, OCI_INDEX, OCI_MANIFEST,
};

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(OCI_INDEX),
    Some(OCI_MANIFEST),
    Some(DOCKER_LIST),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_SCHEMA1),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some(" application/vnd.oci.image.index.v1+json ;q=1"),
    Some("application/json"),
    Some("text/html"),
    Some(""),
];

fn is_known(media_type: &str) -> bool {
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_LIST,
        DOCKER_MANIFEST,
        DOCKER_SCHEMA1,
    ]
    .contains(&media_type)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let result = inspect(body, content_type);
    let again = inspect(body, content_type);
    assert_eq!(
        result.as_ref().ok(),
        again.as_ref().ok(),
        "inspect is not deterministic"
    );
    let Ok(info) = result else {
        return;
    };
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => {
            // serde_json skips fields that neither the probe nor oci-spec know without checking them as
            // strictly as it builds a `Value`: such a field may hold a number out of f64 range or a lone
            // surrogate `\u` escape (both allowed by the JSON grammar). Bytes that are not UTF-8 are refused
            // (a finding of this target, fixed). Any other non-JSON body must have been refused.
            let msg = e.to_string();
            let lenient = [
                "number out of range",
                "surrogate",
                "invalid unicode code point",
                "recursion limit",
            ];
            assert!(
                std::str::from_utf8(body).is_ok() && lenient.iter().any(|m| msg.contains(m)),
                "accepted manifest is not JSON: {msg}"
            );
            return;
        }
    };
    assert!(!info.media_type.is_empty());
    let declared = content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim())
        .filter(|ct| is_known(ct));
    match declared {
        Some(ct) => assert_eq!(info.media_type, ct, "declared Content-Type not used"),
        None => match json.get("mediaType").and_then(|m| m.as_str()) {
            Some(mt) if !mt.is_empty() => {
                assert_eq!(info.media_type, mt, "body mediaType not used")
            }
            _ => assert!(
                info.media_type == OCI_INDEX || info.media_type == OCI_MANIFEST,
                "inferred media type {:?}",
                info.media_type
            ),
        },
    }
    let is_index = info.media_type == OCI_INDEX || info.media_type == DOCKER_LIST;
    let is_image = info.media_type == OCI_MANIFEST || info.media_type == DOCKER_MANIFEST;
    if is_index {
        let listed = json["manifests"].as_array().map_or(0, Vec::len);
        assert_eq!(info.references.len(), listed, "index references");
    } else if is_image {
        let layers = json["layers"].as_array().map_or(0, Vec::len);
        assert_eq!(
            info.references.len(),
            1 + layers,
            "image references (config + layers)"
        );
        assert_eq!(
            Some(info.references[0].as_str()),
            json["config"]["digest"].as_str(),
            "first reference is not the config"
        );
    } else {
        assert!(
            info.references.is_empty(),
            "references of a {:?}",
            info.media_type
        );
    }
    for reference in &info.references {
        let (algorithm, encoded) = reference
            .split_once(':')
            .unwrap_or_else(|| panic!("reference {reference:?} is not algorithm:encoded"));
        assert!(
            !algorithm.is_empty() && !encoded.is_empty(),
            "reference {reference:?}"
        );
    }
});
