//! The `WWW-Authenticate: Bearer …` parser (`ociregistry::upstream::parse_bearer_challenge`).
//!
//! Input: arbitrary header text; its parts (split at `\0`) are also used as realm, service and scope values
//! of a challenge built in the form registries send.
//!
//! Invariants: a parsed challenge came from a `Bearer` header (case-insensitive scheme); realm, service and
//! scope are substrings of the header; parsing is deterministic; and a challenge written as
//! `Bearer realm="…",service="…",scope="…"` (quoted values without `"`), in any key order and with optional
//! spaces after commas, parses back to exactly those values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::upstream::{parse_bearer_challenge, BearerChallenge};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(challenge) = parse_bearer_challenge(text) {
        let scheme = text.trim().split(' ').next().unwrap_or("");
        assert!(
            scheme.eq_ignore_ascii_case("bearer"),
            "scheme {scheme:?} accepted as Bearer"
        );
        assert!(
            text.contains(challenge.realm.as_str()),
            "realm not from the header"
        );
        for value in [&challenge.service, &challenge.scope].into_iter().flatten() {
            assert!(
                text.contains(value.as_str()),
                "value {value:?} not from the header"
            );
        }
        assert_eq!(parse_bearer_challenge(text), Some(challenge));
    }

    // Round trip of a well-formed challenge built from the input's parts.
    let mut parts = text.split('\0');
    let realm = parts.next().unwrap_or("");
    let service = parts.next();
    let scope = parts.next();
    if [Some(realm), service, scope]
        .into_iter()
        .flatten()
        .any(|v| v.contains('"'))
    {
        return;
    }
    let mut params = vec![format!("realm=\"{realm}\"")];
    if let Some(service) = service {
        params.push(format!("service=\"{service}\""));
    }
    if let Some(scope) = scope {
        params.push(format!("scope=\"{scope}\""));
    }
    let selector = data.last().copied().unwrap_or(0);
    if selector & 1 == 1 {
        params.reverse();
    }
    let separator = if selector & 2 == 2 { ", " } else { "," };
    let scheme = if selector & 4 == 4 {
        "bearer"
    } else {
        "Bearer"
    };
    let header = format!("{scheme} {}", params.join(separator));
    let expected = BearerChallenge {
        realm: realm.to_string(),
        service: service.map(str::to_string),
        scope: scope.map(str::to_string),
    };
    assert_eq!(
        parse_bearer_challenge(&header),
        Some(expected),
        "well-formed challenge {header:?} not parsed back"
    );
});
