//! Repository names and manifest references as they arrive in request paths
//! (`ociregistry::reference::{validate_repository, Reference::parse}`).
//!
//! Invariants: an accepted repository name is 1..=255 bytes of `[a-z0-9._/-]`, has no empty component, no
//! `..`, starts and ends with `[a-z0-9]` in every component (so it is safe inside a store key or path); a
//! parsed reference is exactly its input, a tag is a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, no
//! `:`), a digest is canonical, and parsing again gives the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::digest::Digest;
use ociregistry::reference::{is_valid_tag, validate_repository, Reference};

fn check_repository(name: &str) {
    if validate_repository(name).is_err() {
        return;
    }
    assert!(!name.is_empty() && name.len() <= 255, "length of {name:?}");
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b)),
        "character outside [a-z0-9._/-] in {name:?}"
    );
    assert!(!name.contains(".."), "`..` in {name:?}");
    for component in name.split('/') {
        let first = component.as_bytes().first().copied();
        let last = component.as_bytes().last().copied();
        let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        assert!(
            alnum(first) && alnum(last),
            "component {component:?} of {name:?} is empty or starts/ends with a separator"
        );
        assert!(!component.contains("___"), "`___` in {name:?}");
        assert!(
            !component.contains(".-") && !component.contains("-.") && !component.contains("._"),
            "mixed separators in {name:?}"
        );
    }
    // Every suffix after a `/` is itself a valid name (the router strips a host component this way).
    if let Some((_, rest)) = name.split_once('/') {
        assert!(
            validate_repository(rest).is_ok(),
            "suffix {rest:?} of {name:?}"
        );
    }
}

fn check_reference(text: &str) {
    let Ok(reference) = Reference::parse(text) else {
        // A rejected reference is neither a tag nor a digest.
        assert!(!is_valid_tag(text), "valid tag {text:?} rejected");
        assert!(
            text.parse::<Digest>().is_err(),
            "valid digest {text:?} rejected"
        );
        return;
    };
    assert_eq!(reference.as_str(), text);
    assert_eq!(reference.to_string(), text);
    match &reference {
        Reference::Tag(tag) => {
            assert!(is_valid_tag(tag), "tag {tag:?} accepted but not valid");
            assert!(!tag.contains(':') && !tag.contains('/'), "tag {tag:?}");
            assert!(!tag.is_empty() && tag.len() <= 128, "tag length {tag:?}");
            let first = tag.as_bytes()[0];
            assert!(
                first.is_ascii_alphanumeric() || first == b'_',
                "tag start {tag:?}"
            );
        }
        Reference::Digest(digest) => {
            assert_eq!(digest.as_str(), text);
            assert_eq!(text.parse::<Digest>().as_ref().ok(), Some(digest));
        }
    }
    assert_eq!(
        Reference::parse(reference.as_str()).ok().as_ref(),
        Some(&reference),
        "re-parsing {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_repository(text);
    check_reference(text);
    // `name/manifests/reference`, as in a request path.
    if let Some((name, reference)) = text.rsplit_once('/') {
        check_repository(name);
        check_reference(reference);
    }
});
