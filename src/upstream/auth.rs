//! Upstream authentication: HTTP basic credentials (kept as secrets), parsing `WWW-Authenticate` challenges,
//! and caching the bearer tokens fetched from a realm until shortly before they expire.

use std::time::{Duration, Instant};

use serde::Deserialize;

pub use crate::credentials::Credentials;

/// A `Bearer` challenge from an upstream's 401 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"`. Returns `None` for other schemes.
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after_key) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after_key = after_key.trim_start();
        let (value, after_value) = if let Some(quoted) = after_key.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after_key.find(',').unwrap_or(after_key.len());
            (after_key[..end].trim(), &after_key[end..])
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            "scope" => scope = Some(value.to_owned()),
            _ => {}
        }
        rest = after_value
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
        scope,
    })
}

/// The token endpoint's answer (Docker uses `token`, OAuth2-style servers `access_token`).
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The longest a token is kept, whatever the token server says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl TokenResponse {
    /// The token and how long it may be used (bounded: an upstream's number is never trusted to be sane).
    pub fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        // The distribution token spec says 60 s when the server does not say.
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60)).min(MAX_TOKEN_LIFETIME);
        Some((token, lifetime))
    }
}

/// Whether a 401 challenge asks for HTTP basic auth.
pub fn is_basic_challenge(header: &str) -> bool {
    header
        .trim_start()
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("basic "))
        || header.trim().eq_ignore_ascii_case("basic")
}

/// Tokens by scope (and credential identity), each kept until a little before it expires. Bounded: an upstream
/// cannot make it grow without limit.
pub struct TokenCache {
    tokens: moka::sync::Cache<String, (String, Instant)>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            tokens: moka::sync::Cache::builder()
                .max_capacity(4096)
                .time_to_live(MAX_TOKEN_LIFETIME)
                .build(),
        }
    }
}

/// Tokens are dropped this long before their stated expiry, to allow for clock skew and latency.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

impl TokenCache {
    /// A token for `scope` that is still valid.
    pub fn get(&self, scope: &str) -> Option<String> {
        let (token, until) = self.tokens.get(scope)?;
        if until > Instant::now() {
            Some(token)
        } else {
            self.tokens.invalidate(scope);
            None
        }
    }

    /// Keeps `token` for `scope`.
    pub fn put(&self, scope: &str, token: String, lifetime: Duration) {
        let Some(until) = Instant::now().checked_add(lifetime.saturating_sub(EXPIRY_MARGIN)) else {
            return;
        };
        self.tokens.insert(scope.to_owned(), (token, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn parses_unquoted_and_scopes_with_commas() {
        let c = parse_bearer_challenge(
            r#"bearer realm=http://x/token, scope="repository:a:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "http://x/token");
        assert_eq!(c.scope.as_deref(), Some("repository:a:pull,push"));
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
        assert!(parse_bearer_challenge("Bearer service=x").is_none());
    }

    #[test]
    fn token_cache_expires() {
        let cache = TokenCache::default();
        cache.put("s", "t".into(), Duration::from_secs(300));
        assert_eq!(cache.get("s").as_deref(), Some("t"));
        cache.put("s", "t".into(), Duration::from_secs(5));
        assert_eq!(cache.get("s"), None);
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn huge_expiry_is_bounded_and_never_panics() {
        let parsed: TokenResponse =
            serde_json::from_str(r#"{"token":"t","expires_in":18446744073709551615}"#).unwrap();
        let (_, lifetime) = parsed.into_token().unwrap();
        assert_eq!(lifetime, MAX_TOKEN_LIFETIME);
        TokenCache::default().put("s", "t".into(), Duration::MAX);
    }

    #[test]
    fn basic_header_and_redaction() {
        let c = Credentials::from_basic_header("Basic dXNlcjpwYXNz").unwrap();
        assert_eq!(c.username, "user");
        assert_eq!(c.password.expose_secret(), "pass");
        assert!(!format!("{c:?}").contains("pass"));
        assert_ne!(
            c.fingerprint(),
            Credentials::from_basic_header("Basic dXNlcjpwYXNx")
                .unwrap()
                .fingerprint()
        );
        assert!(Credentials::from_basic_header("Bearer x").is_none());
        assert!(is_basic_challenge("Basic realm=\"x\""));
        assert!(!is_basic_challenge("Bearer realm=\"x\""));
    }
}
