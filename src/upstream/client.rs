//! A client for one upstream registry: the distribution API over its endpoints (tried in order), with HTTP
//! basic auth or the bearer-token flow, its own TLS settings, a redirect policy that never leaves what the
//! upstream policy allows, rate-limit back-off, and upstream statuses mapped to registry errors.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;

use super::auth::{
    is_basic_challenge, parse_bearer_challenge, Credentials, TokenCache, TokenResponse,
};
use super::policy::{refused_in, UpstreamPolicy};
use super::rate_limit::RateLimit;
use super::{BlobStream, FetchedManifest, ManifestHead, Pull, Upstream};
use crate::config::Scheme;
use crate::error::RegistryError;
use crate::manifest::ACCEPTED_MANIFEST_TYPES;

/// Largest token answer read from a realm.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// What kind of thing a request was for, to pick the right "unknown" error.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Manifest,
    Blob,
}

/// How this client authenticates.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    Anonymous,
    Basic(Credentials),
    /// Each request carries the client's own credentials (`Pull::credentials`).
    Passthrough,
}

/// One place a registry's content is fetched from: the registry itself, or a mirror of it.
#[derive(Clone)]
pub struct Endpoint {
    /// `scheme://host[:port]`.
    pub base: String,
    /// For a mirror: the registry it is asked for, sent as `?ns=` (containerd's convention).
    pub ns: Option<Arc<str>>,
    /// The HTTP client (TLS settings) of this endpoint.
    pub http: reqwest::Client,
}

impl Endpoint {
    /// The registry's own endpoint.
    pub fn direct(base: String, http: reqwest::Client) -> Endpoint {
        Endpoint {
            base,
            ns: None,
            http,
        }
    }

    /// A mirror asked for `registry`'s content.
    pub fn mirror(base: String, registry: Arc<str>, http: reqwest::Client) -> Endpoint {
        Endpoint {
            base,
            ns: Some(registry),
            http,
        }
    }
}

/// One upstream registry.
pub struct RegistryClient {
    /// The registry as clients name it (`docker.io`).
    name: Arc<str>,
    /// Where to fetch from, in order: mirrors first, then the registry's own endpoints.
    endpoints: Vec<Endpoint>,
    scheme: Scheme,
    http: reqwest::Client,
    auth: ClientAuth,
    tokens: TokenCache,
    timeout: Duration,
    policy: Arc<UpstreamPolicy>,
    rate_limit: RateLimit,
    /// `max_concurrent_fetches`, when bounded.
    permits: Option<Arc<Semaphore>>,
    /// Largest manifest (or referrers index) read from this upstream.
    max_manifest_bytes: usize,
}

/// What a request needs to be built for one endpoint.
struct Call<'a> {
    method: Method,
    path: String,
    accept: Option<&'a str>,
    /// Bound the whole exchange (small answers); blob bodies rely on the per-read timeout instead.
    total_timeout: bool,
    query: Option<(&'a str, &'a str)>,
}

impl RegistryClient {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        endpoints: Vec<Endpoint>,
        scheme: Scheme,
        http: reqwest::Client,
        auth: ClientAuth,
        timeout: Duration,
        policy: Arc<UpstreamPolicy>,
        max_concurrent_fetches: usize,
        max_manifest_bytes: usize,
    ) -> Self {
        RegistryClient {
            name,
            endpoints,
            scheme,
            http,
            auth,
            tokens: TokenCache::default(),
            timeout,
            policy,
            rate_limit: RateLimit::default(),
            permits: (max_concurrent_fetches > 0)
                .then(|| Arc::new(Semaphore::new(max_concurrent_fetches))),
            max_manifest_bytes,
        }
    }

    /// The rate-limit state of this registry.
    pub fn rate_limit(&self) -> &RateLimit {
        &self.rate_limit
    }

    /// The credentials a request uses toward the upstream.
    fn credentials<'a>(&'a self, pull: &'a Pull<'_>) -> Option<&'a Credentials> {
        match &self.auth {
            ClientAuth::Anonymous => None,
            ClientAuth::Basic(c) => Some(c),
            ClientAuth::Passthrough => pull.credentials,
        }
    }

    /// Sends a request to the first endpoint that answers (a connection error or a 5xx moves on to the next),
    /// doing basic auth or the token flow when challenged. Holds a `max_concurrent_fetches` permit while
    /// waiting for the answer; the caller keeps it for a streamed body.
    async fn send(
        &self,
        pull: &Pull<'_>,
        call: Call<'_>,
    ) -> Result<(Response, Option<tokio::sync::OwnedSemaphorePermit>), RegistryError> {
        let kind = super::telemetry::kind(&call.path);
        let started = std::time::Instant::now();
        // A child of the request's span when traces are exported (see `crate::traces`); free otherwise.
        let span = tracing::trace_span!(
            target: "ociregistry::trace",
            "upstream",
            otel.name = %format_args!("upstream {kind}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            upstream.namespace = %self.name,
            upstream.kind = kind,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = self
            .send_measured(pull, call)
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            match &result {
                Ok((response, _)) => {
                    span.record(
                        "http.response.status_code",
                        i64::from(response.status().as_u16()),
                    );
                    if !response.status().is_success() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                Err(err) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", err.code());
                }
            }
        }
        match &result {
            Ok((response, _)) => super::telemetry::answered(
                &self.name,
                kind,
                response.status().as_u16(),
                started.elapsed(),
            ),
            Err(err) => super::telemetry::failed(&self.name, kind, err),
        }
        result
    }

    async fn send_measured(
        &self,
        pull: &Pull<'_>,
        call: Call<'_>,
    ) -> Result<(Response, Option<tokio::sync::OwnedSemaphorePermit>), RegistryError> {
        if let Some(left) = self.rate_limit.backing_off() {
            return Err(RegistryError::too_many_requests(
                format!("upstream {} is rate limiting; backing off", self.name),
                Some(left.as_secs().max(1)),
            ));
        }
        let permit = match &self.permits {
            Some(permits) => Some(
                permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| RegistryError::UpstreamUnavailable("shutting down".into()))?,
            ),
            None => None,
        };
        let mut last_error = None;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let is_last = i + 1 == self.endpoints.len();
            match self.send_to(endpoint, pull, &call).await {
                Ok(response) if response.status().is_server_error() && !is_last => {
                    tracing::warn!(registry = %self.name, endpoint = %endpoint.base, status = %response.status(),
                        "upstream endpoint failed; trying the next");
                }
                Ok(response) => {
                    self.rate_limit.observe(&self.name, response.headers());
                    if response.status() == StatusCode::TOO_MANY_REQUESTS {
                        let wait = self.rate_limit.back_off(&self.name, response.headers());
                        return Err(RegistryError::too_many_requests(
                            format!("upstream {} answered 429", self.name),
                            Some(wait.as_secs().max(1)),
                        ));
                    }
                    return Ok((response, permit));
                }
                Err(err @ RegistryError::UpstreamUnavailable(_)) if !is_last => {
                    tracing::warn!(registry = %self.name, endpoint = %endpoint.base, error = %err,
                        "upstream endpoint failed; trying the next");
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RegistryError::UpstreamUnavailable(format!("upstream {} has no endpoint", self.name))
        }))
    }

    async fn send_to(
        &self,
        endpoint: &Endpoint,
        pull: &Pull<'_>,
        call: &Call<'_>,
    ) -> Result<Response, RegistryError> {
        let url = format!("{}/v2/{}/{}", endpoint.base, pull.repository, call.path);
        // A mirror is another party: the registry's own credentials are not its to see (it authenticates to the
        // registry itself); a passthrough client's credentials are, as the client would send them to it.
        let credentials = match (&endpoint.ns, &self.auth) {
            (Some(_), ClientAuth::Basic(_)) => None,
            _ => self.credentials(pull),
        };
        // Tokens are per scope and per identity: one client's passthrough token must not serve another.
        let identity = credentials.map_or_else(|| "-".to_owned(), Credentials::fingerprint);
        let scope = format!("repository:{}:pull", pull.repository);
        let token_key = format!("{identity} {} {scope}", endpoint.base);
        let build = |authorization: Option<String>| {
            let mut request = endpoint.http.request(call.method.clone(), &url);
            if let Some(ns) = &endpoint.ns {
                request = request.query(&[("ns", &**ns)]);
            }
            if let Some(query) = call.query {
                request = request.query(&[query]);
            }
            if let Some(accept) = call.accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if call.total_timeout {
                request = request.timeout(self.timeout);
            }
            request
        };
        let first_auth = self.tokens.get(&token_key).map(|t| format!("Bearer {t}"));
        let response = build(first_auth)
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
            .map(str::to_owned)
        else {
            return Ok(response);
        };
        let authorization = if let Some(bearer) = parse_bearer_challenge(&challenge) {
            let scope = bearer.scope.clone().unwrap_or(scope);
            let token = self
                .fetch_token(
                    &bearer.realm,
                    bearer.service.as_deref(),
                    &scope,
                    credentials,
                )
                .await?;
            self.tokens.put(&token_key, token.0.clone(), token.1);
            format!("Bearer {}", token.0)
        } else if is_basic_challenge(&challenge) {
            match credentials {
                Some(c) => basic_header(c),
                None => return Ok(response),
            }
        } else {
            return Ok(response);
        };
        build(Some(authorization))
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Fetches a token from a bearer realm, which must be https (or http for a registry configured http)
    /// and allowed by the upstream policy. Any failure is upstream trouble; its detail stays in the log.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(String, Duration), RegistryError> {
        let url = Url::parse(realm).map_err(|e| {
            RegistryError::UpstreamUnavailable(format!(
                "{}: bad token realm {realm:?}: {e}",
                self.name
            ))
        })?;
        let scheme_ok =
            url.scheme() == "https" || (url.scheme() == "http" && self.scheme == Scheme::Http);
        if !scheme_ok {
            return Err(RegistryError::UpstreamUnavailable(format!(
                "{}: token realm {realm} refused: not https",
                self.name
            )));
        }
        self.policy.check_url(&url).map_err(|e| {
            RegistryError::UpstreamUnavailable(format!("{}: token realm refused: {e}", self.name))
        })?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(url).query(&query).timeout(self.timeout);
        if let Some(c) = credentials {
            request = request.header(AUTHORIZATION, basic_header(c));
        }
        let started = std::time::Instant::now();
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let err = self.unreachable(e);
                super::telemetry::failed(&self.name, "token", &err);
                return Err(err);
            }
        };
        super::telemetry::answered(
            &self.name,
            "token",
            response.status().as_u16(),
            started.elapsed(),
        );
        let refused = matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        );
        if refused && matches!(self.auth, ClientAuth::Passthrough) {
            // The client's own credentials were refused: the client must know, to try others.
            return Err(RegistryError::Unauthorized(format!(
                "upstream {} did not accept the credentials",
                self.name
            )));
        }
        if !response.status().is_success() {
            return Err(RegistryError::UpstreamUnavailable(format!(
                "{}: token endpoint answered {}",
                self.name,
                response.status()
            )));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > MAX_TOKEN_BYTES {
                return Err(RegistryError::UpstreamUnavailable(format!(
                    "{}: token answer larger than {MAX_TOKEN_BYTES} bytes",
                    self.name
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::UpstreamUnavailable(format!("{}: bad token answer: {e}", self.name))
        })?;
        let token = parsed.into_token().ok_or_else(|| {
            RegistryError::UpstreamUnavailable(format!("{}: token answer has no token", self.name))
        })?;
        tracing::debug!(registry = %self.name, scope, "fetched upstream token");
        Ok(token)
    }

    fn unreachable(&self, err: reqwest::Error) -> RegistryError {
        if let Some(refused) = refused_in(&err) {
            return RegistryError::Denied(refused.to_string());
        }
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "unreachable"
        } else if err.is_redirect() {
            "redirect refused"
        } else {
            "failed"
        };
        // reqwest's Display hides the cause ("error sending request"); the log wants the whole chain.
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        RegistryError::UpstreamUnavailable(format!("upstream {} {what}: {detail}", self.name))
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
            StatusCode::UNAUTHORIZED if matches!(self.auth, ClientAuth::Passthrough) => {
                RegistryError::Unauthorized(format!(
                    "upstream {} did not accept the credentials for {what}",
                    self.name
                ))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                RegistryError::Denied(format!("upstream {} denied access to {what}", self.name))
            }
            _ => RegistryError::UpstreamUnavailable(format!(
                "upstream {} answered {status} for {what}",
                self.name
            )),
        }
    }

    fn too_large(&self, what: &str) -> RegistryError {
        RegistryError::UpstreamInvalid(format!(
            "manifest {what} from {} is larger than {} bytes (max_manifest_bytes)",
            self.name, self.max_manifest_bytes
        ))
    }

    /// GETs a small JSON document (a manifest, a referrers index), reading at most `max_manifest_bytes`.
    async fn get_document(
        &self,
        pull: &Pull<'_>,
        path: String,
        accept: &str,
        query: Option<(&str, &str)>,
        what: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let call = Call {
            method: Method::GET,
            path,
            accept: Some(accept),
            total_timeout: true,
            query,
        };
        let (mut response, _permit) = self.send(pull, call).await?;
        if !response.status().is_success() {
            return Err(self.status_error(response.status(), Kind::Manifest, what));
        }
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > self.max_manifest_bytes as u64)
        {
            return Err(self.too_large(what));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > self.max_manifest_bytes {
                return Err(self.too_large(what));
            }
            body.extend_from_slice(&chunk);
        }
        super::telemetry::fetched(&self.name, body.len() as u64);
        Ok(FetchedManifest {
            body: body.freeze(),
            content_type: header_string(&headers, CONTENT_TYPE.as_str()),
            digest_header: header_string(&headers, "docker-content-digest"),
        })
    }
}

#[async_trait]
impl Upstream for RegistryClient {
    fn name(&self) -> &str {
        &self.name
    }

    async fn manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("{}:{reference}", pull.repository);
        self.get_document(
            pull,
            format!("manifests/{reference}"),
            ACCEPTED_MANIFEST_TYPES,
            None,
            &what,
        )
        .await
    }

    async fn head_manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        let call = Call {
            method: Method::HEAD,
            path: format!("manifests/{reference}"),
            accept: Some(ACCEPTED_MANIFEST_TYPES),
            total_timeout: true,
            query: None,
        };
        let (response, _permit) = self.send(pull, call).await?;
        // A registry that does not answer HEAD is asked with a GET instead (no digest here makes the caller do
        // that), rather than treated as down.
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(ManifestHead {
                digest_header: None,
            });
        }
        if !response.status().is_success() {
            let what = format!("{}:{reference}", pull.repository);
            return Err(self.status_error(response.status(), Kind::Manifest, &what));
        }
        Ok(ManifestHead {
            digest_header: header_string(response.headers(), "docker-content-digest"),
        })
    }

    /// GETs a blob as a stream. Redirects (Docker Hub's CDN) are followed within the redirect policy; the
    /// HTTP client drops the Authorization header when the host changes.
    async fn blob(&self, pull: &Pull<'_>, digest: &str) -> Result<BlobStream, RegistryError> {
        let call = Call {
            method: Method::GET,
            path: format!("blobs/{digest}"),
            accept: None,
            total_timeout: false,
            query: None,
        };
        let (response, permit) = self.send(pull, call).await?;
        if !response.status().is_success() {
            return Err(self.status_error(response.status(), Kind::Blob, digest));
        }
        let size = response.content_length();
        let name = self.name.clone();
        let body = response
            .bytes_stream()
            .map(move |chunk| {
                // The permit lives as long as the body is being read.
                let _permit = &permit;
                if let Ok(bytes) = &chunk {
                    super::telemetry::fetched(&name, bytes.len() as u64);
                }
                chunk.map_err(|e| {
                    RegistryError::UpstreamUnavailable(format!("upstream {name} body failed: {e}"))
                })
            })
            .boxed();
        Ok(BlobStream { size, body })
    }

    async fn head_blob(&self, pull: &Pull<'_>, digest: &str) -> Result<Option<u64>, RegistryError> {
        let call = Call {
            method: Method::HEAD,
            path: format!("blobs/{digest}"),
            accept: None,
            total_timeout: true,
            query: None,
        };
        let (response, _permit) = self.send(pull, call).await?;
        if !response.status().is_success() {
            return Err(self.status_error(response.status(), Kind::Blob, digest));
        }
        Ok(header_string(response.headers(), "content-length").and_then(|v| v.parse().ok()))
    }

    async fn referrers(
        &self,
        pull: &Pull<'_>,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("referrers of {}@{digest}", pull.repository);
        self.get_document(
            pull,
            format!("referrers/{digest}"),
            "application/vnd.oci.image.index.v1+json",
            artifact_type.map(|t| ("artifactType", t)),
            &what,
        )
        .await
    }

    fn rate_limit(&self) -> Option<&RateLimit> {
        Some(&self.rate_limit)
    }
}

fn basic_header(c: &Credentials) -> String {
    use base64::Engine;
    let raw = format!("{}:{}", c.username, c.password.expose_secret());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
