//! Repository names and manifest references (tag or digest) as they appear in request paths.
//!
//! Validation follows the OCI distribution spec grammar. Because names become parts of store keys, a valid
//! name can never contain `..`, empty components or characters outside `[a-z0-9._/-]`.

use std::fmt;

use crate::digest::Digest;
use crate::error::RegistryError;

/// The longest repository name accepted (as Distribution does).
const MAX_NAME_LEN: usize = 255;
/// The longest tag accepted (OCI spec: 128 characters).
const MAX_TAG_LEN: usize = 128;

/// Checks one path component of a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'; it must be followed by an alphanumeric.
        let run_end = match b {
            b'.' => i + 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i + 2,
            b'_' => i + 1,
            b'-' => {
                let mut j = i;
                while bytes.get(j) == Some(&b'-') {
                    j += 1;
                }
                j
            }
            _ => return false,
        };
        if !bytes.get(run_end).is_some_and(|&n| alnum(n)) {
            return false;
        }
        i = run_end;
    }
    true
}

/// Validates a repository name (`library/nginx`, `a/b/c`).
pub fn validate_repository(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.split('/').all(is_valid_component) {
        return Err(RegistryError::NameInvalid(format!(
            "invalid repository name {name:?}"
        )));
    }
    Ok(())
}

/// Validates a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// Parses the last path component of a manifest URL.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if Digest::looks_like_digest(text) {
            return Ok(Reference::Digest(text.parse()?));
        }
        if is_valid_tag(text) {
            Ok(Reference::Tag(text.to_owned()))
        } else {
            Err(RegistryError::ManifestInvalid(format!(
                "{text:?} is neither a valid tag nor a digest"
            )))
        }
    }
}

impl Reference {
    /// The tag or digest as written.
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(tag) => tag,
            Reference::Digest(digest) => digest.as_str(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag),
            Reference::Digest(digest) => f.write_str(digest.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "nginx",
            "library/nginx",
            "a/b/c",
            "my-app",
            "a__b",
            "a.b_c--d",
            "0",
        ] {
            assert!(validate_repository(ok).is_ok(), "{ok} rejected");
        }
        for bad in [
            "", "Nginx", "a//b", "/a", "a/", "..", "a/../b", "a/./b", "-a", "a-", "a___b", "a b",
            "a%2fb", "a..b",
        ] {
            assert!(validate_repository(bad).is_err(), "{bad} accepted");
        }
        assert!(validate_repository(&"a".repeat(256)).is_err());
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("v1.2_3-x").unwrap(),
            Reference::Tag("v1.2_3-x".into())
        );
        assert!(matches!(
            Reference::parse("sha256:0"),
            Err(RegistryError::DigestInvalid(_))
        ));
        assert!(matches!(
            Reference::parse(".hidden"),
            Err(RegistryError::ManifestInvalid(_))
        ));
        assert!(Reference::parse(&"t".repeat(129)).is_err());
    }
}
