//! A client's or an operator's registry credentials: a user name and a password kept as a secret, never
//! printed (`Debug` redacts it) and compared or keyed only through a one-way fingerprint.

use secrecy::{ExposeSecret, SecretString};
use sha2::Digest as _;

/// Credentials sent to an upstream: HTTP basic (directly, or at a token endpoint).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, [redacted])", self.username)
    }
}

impl Credentials {
    /// A short, non-reversible identity of these credentials, to key tokens and verdicts by.
    pub fn fingerprint(&self) -> String {
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.username.as_bytes());
        hasher.update([0]);
        hasher.update(self.password.expose_secret().as_bytes());
        hex::encode(&hasher.finalize()[..16])
    }

    /// Parses an `Authorization: Basic …` header value.
    pub fn from_basic_header(value: &str) -> Option<Credentials> {
        use base64::Engine;
        let (scheme, encoded) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        Some(Credentials {
            username: username.to_owned(),
            password: SecretString::from(password.to_owned()),
        })
    }
}
