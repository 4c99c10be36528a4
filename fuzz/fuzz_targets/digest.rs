//! Digest parsing (`"…".parse::<ociregistry::digest::Digest>()`) and `Digest::of` / `Hasher`.
//!
//! Invariants: an accepted digest is `sha256:` + 64 or `sha512:` + 128 lowercase hex characters, kept exactly
//! as written (`as_str`, `Display`, `algorithm`, `hex` agree with the input), and re-parses to an equal value;
//! it is safe as a file name (no `/`, no `..`). `Digest::of` always yields a digest that parses back to
//! itself, and hashing the same bytes in two chunks gives the same digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::digest::{Algorithm, Digest, Hasher};

fn check_canonical(digest: &Digest) {
    let text = digest.as_str();
    let (alg, hex) = text.split_once(':').expect("digest without ':'");
    assert_eq!(alg, digest.algorithm().name());
    assert_eq!(hex, digest.hex());
    let expected_len = match digest.algorithm() {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    };
    assert_eq!(hex.len(), expected_len, "hex length of {text}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "non-lowercase-hex in {text}"
    );
    assert!(
        !text.contains('/') && !text.contains(".."),
        "unsafe as a file name: {text}"
    );
    assert_eq!(digest.to_string(), text);
    assert_eq!(format!("{digest:?}"), text);
    assert_eq!(
        text.parse::<Digest>().as_ref().ok(),
        Some(digest),
        "re-parse of {text}"
    );
    assert!(Digest::looks_like_digest(text));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match text.parse::<Digest>() {
            Ok(digest) => {
                assert_eq!(digest.as_str(), text, "digest not kept as written");
                check_canonical(&digest);
            }
            Err(_) => {
                // Only the two algorithms with exact-length lowercase hex are accepted.
                let well_formed = |prefix: &str, len: usize| {
                    text.strip_prefix(prefix).is_some_and(|hex| {
                        hex.len() == len
                            && hex
                                .bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    })
                };
                assert!(
                    !well_formed("sha256:", 64) && !well_formed("sha512:", 128),
                    "well-formed digest {text:?} rejected"
                );
            }
        }
    }

    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let whole = Digest::of(algorithm, data);
        assert_eq!(whole.algorithm(), algorithm);
        check_canonical(&whole);
        let mut hasher = Hasher::new(algorithm);
        hasher.update(&data[..split]);
        hasher.update(&data[split..]);
        assert_eq!(hasher.finish(), whole, "chunked hashing differs");
        assert_eq!(whole.hasher().finish(), Digest::of(algorithm, b""));
    }
});
