//! A client for one upstream registry: manifests and blobs over the distribution API, with the bearer-token
//! flow (401 → token from the realm → retry) and upstream statuses mapped to registry errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use super::auth::{parse_bearer_challenge, TokenCache, TokenResponse};
use crate::error::RegistryError;
use crate::manifest::{ACCEPTED_MANIFEST_TYPES, MAX_MANIFEST_BYTES};

/// What kind of thing a request was for, to pick the right "unknown" error.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Manifest,
    Blob,
}

/// A manifest exactly as the upstream sent it.
pub struct FetchedManifest {
    pub body: Bytes,
    /// `Content-Type` of the answer, if any.
    pub content_type: Option<String>,
    /// `Docker-Content-Digest` of the answer, if any.
    pub digest_header: Option<String>,
}

/// Headers of a manifest HEAD.
pub struct ManifestHead {
    pub digest_header: Option<String>,
}

/// One upstream registry.
pub struct RegistryClient {
    /// The registry as clients name it (`docker.io`).
    name: Arc<str>,
    /// `scheme://host[:port]` of its API.
    base: String,
    http: reqwest::Client,
    tokens: TokenCache,
    timeout: Duration,
}

impl RegistryClient {
    pub fn new(name: Arc<str>, base: String, http: reqwest::Client, timeout: Duration) -> Self {
        RegistryClient {
            name,
            base,
            http,
            tokens: TokenCache::default(),
            timeout,
        }
    }

    /// The registry's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a request, doing the token flow when challenged. `total_timeout` bounds the whole exchange for
    /// small answers; blob downloads rely on the client's per-read timeout instead.
    async fn send(
        &self,
        method: Method,
        repository: &str,
        path: &str,
        accept: Option<&str>,
        total_timeout: bool,
    ) -> Result<Response, RegistryError> {
        let url = format!("{}/v2/{repository}/{path}", self.base);
        let scope = format!("repository:{repository}:pull");
        let build = |token: Option<&str>| {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            if total_timeout {
                request = request.timeout(self.timeout);
            }
            request
        };
        let token = self.tokens.get(&scope);
        let response = build(token.as_deref())
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge)
        else {
            return Ok(response);
        };
        let scope = challenge.scope.clone().unwrap_or(scope);
        let token = self
            .fetch_token(&challenge.realm, challenge.service.as_deref(), &scope)
            .await?;
        build(Some(&token))
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let response = self
            .http
            .get(realm)
            .query(&query)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(RegistryError::Denied(format!(
                "{}: token endpoint answered {}",
                self.name,
                response.status()
            )));
        }
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::UpstreamUnavailable(format!("{}: bad token answer: {e}", self.name))
        })?;
        let (token, lifetime) = parsed.into_token().ok_or_else(|| {
            RegistryError::UpstreamUnavailable(format!("{}: token answer has no token", self.name))
        })?;
        self.tokens.put(scope, token.clone(), lifetime);
        tracing::debug!(registry = %self.name, scope, "fetched upstream token");
        Ok(token)
    }

    fn unreachable(&self, err: reqwest::Error) -> RegistryError {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "unreachable"
        } else {
            "failed"
        };
        RegistryError::UpstreamUnavailable(format!("upstream {} {what}: {err}", self.name))
    }

    /// Maps a non-success upstream status to the error the client should see.
    fn status_error(&self, status: StatusCode, kind: Kind, what: &str) -> RegistryError {
        match status {
            StatusCode::NOT_FOUND => match kind {
                Kind::Manifest => RegistryError::ManifestUnknown(format!(
                    "manifest {what} not found at {}",
                    self.name
                )),
                Kind::Blob => {
                    RegistryError::BlobUnknown(format!("blob {what} not found at {}", self.name))
                }
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied(format!(
                "upstream {} denied access to {what} ({status})",
                self.name
            )),
            StatusCode::TOO_MANY_REQUESTS => {
                RegistryError::TooManyRequests(format!("upstream {} is rate limiting", self.name))
            }
            _ => RegistryError::UpstreamUnavailable(format!(
                "upstream {} answered {status} for {what}",
                self.name
            )),
        }
    }

    /// GETs a manifest (by tag or digest), reading at most [`MAX_MANIFEST_BYTES`].
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("{repository}:{reference}");
        let mut response = self
            .send(
                Method::GET,
                repository,
                &format!("manifests/{reference}"),
                Some(ACCEPTED_MANIFEST_TYPES),
                true,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response.status(), Kind::Manifest, &what));
        }
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(self.too_large(&what));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(self.too_large(&what));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchedManifest {
            body: body.freeze(),
            content_type: header_string(&headers, CONTENT_TYPE.as_str()),
            digest_header: header_string(&headers, "docker-content-digest"),
        })
    }

    fn too_large(&self, what: &str) -> RegistryError {
        RegistryError::UpstreamInvalid(format!(
            "manifest {what} from {} is larger than {MAX_MANIFEST_BYTES} bytes",
            self.name
        ))
    }

    /// HEADs a manifest, to learn the digest a tag points at without a (rate-limited) GET.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        let response = self
            .send(
                Method::HEAD,
                repository,
                &format!("manifests/{reference}"),
                Some(ACCEPTED_MANIFEST_TYPES),
                true,
            )
            .await?;
        if !response.status().is_success() {
            let what = format!("{repository}:{reference}");
            return Err(self.status_error(response.status(), Kind::Manifest, &what));
        }
        Ok(ManifestHead {
            digest_header: header_string(response.headers(), "docker-content-digest"),
        })
    }

    /// GETs a blob; the answer's body is streamed by the caller. Redirects (Docker Hub's CDN) are followed
    /// by the HTTP client, which drops the Authorization header when the host changes.
    pub async fn blob(&self, repository: &str, digest: &str) -> Result<Response, RegistryError> {
        let response = self
            .send(
                Method::GET,
                repository,
                &format!("blobs/{digest}"),
                None,
                false,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response.status(), Kind::Blob, digest));
        }
        Ok(response)
    }

    /// HEADs a blob and returns its size, if the upstream states it.
    pub async fn head_blob(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<u64>, RegistryError> {
        let response = self
            .send(
                Method::HEAD,
                repository,
                &format!("blobs/{digest}"),
                None,
                true,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(response.status(), Kind::Blob, digest));
        }
        Ok(header_string(response.headers(), "content-length").and_then(|v| v.parse().ok()))
    }

    /// The error to report when a blob body breaks off.
    pub fn body_error(&self, err: reqwest::Error) -> RegistryError {
        self.unreachable(err)
    }
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
