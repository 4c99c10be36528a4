//! Reaching upstream registries, behind the small [`Upstream`] trait the cache uses: manifests and blobs of a
//! repository, as bytes and byte streams. [`Upstreams`] picks the implementation for a registry: a
//! [`RegistryClient`] built at start-up for each configured registry (its own TLS and credentials), a bounded
//! set of clients for unlisted public registries, or [`Offline`] when air-gapped. Every client goes through
//! the [`UpstreamPolicy`], so no request can make the cache reach what the operator did not allow.

mod auth;
mod client;
mod policy;
mod rate_limit;
pub mod telemetry;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use secrecy::SecretString;

pub use auth::{parse_bearer_challenge, BearerChallenge, Credentials};
pub use client::{ClientAuth, Endpoint, RegistryClient, MAX_REDIRECTS};
pub use policy::{is_public, UpstreamPolicy};
pub use rate_limit::{RateLimit, RateLimitStatus};

use crate::config::{
    AuthConfig, AuthMode, BasicAuthConfig, Config, RegistryConfig, Scheme, TlsConfig,
};
use crate::error::RegistryError;

/// A manifest (or another small JSON document) exactly as the upstream sent it.
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

/// A blob body on its way from the upstream; the cache verifies it against the digest as it stores it.
pub struct BlobStream {
    /// `Content-Length`, when the upstream states it.
    pub size: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, RegistryError>>,
}

/// What one upstream request is about: the repository, and the client's own credentials for a
/// `passthrough` registry.
#[derive(Clone, Copy)]
pub struct Pull<'a> {
    pub repository: &'a str,
    pub credentials: Option<&'a Credentials>,
}

/// An upstream registry as the cache sees it.
#[async_trait]
pub trait Upstream: Send + Sync {
    /// The registry as clients name it.
    fn name(&self) -> &str;
    /// GET a manifest by tag or digest.
    async fn manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError>;
    /// HEAD a manifest: where a tag points, without a (rate-limited) GET.
    async fn head_manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError>;
    /// GET a blob as a stream.
    async fn blob(&self, pull: &Pull<'_>, digest: &str) -> Result<BlobStream, RegistryError>;
    /// HEAD a blob: its size, if stated.
    async fn head_blob(&self, pull: &Pull<'_>, digest: &str) -> Result<Option<u64>, RegistryError>;
    /// GET the referrers index of a manifest (OCI 1.1), optionally filtered by artifact type.
    async fn referrers(
        &self,
        pull: &Pull<'_>,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<FetchedManifest, RegistryError>;
    /// The registry's rate-limit state, if it is a real remote.
    fn rate_limit(&self) -> Option<&RateLimit> {
        None
    }
}

/// The upstream of an air-gapped cache: never contacted, everything it is asked for is unknown.
pub struct Offline {
    name: Arc<str>,
}

#[async_trait]
impl Upstream for Offline {
    fn name(&self) -> &str {
        &self.name
    }

    async fn manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        Err(RegistryError::ManifestUnknown(format!(
            "manifest {}:{reference} is not cached (air-gapped)",
            pull.repository
        )))
    }

    async fn head_manifest(
        &self,
        pull: &Pull<'_>,
        reference: &str,
    ) -> Result<ManifestHead, RegistryError> {
        self.manifest(pull, reference).await.map(|_| unreachable!())
    }

    async fn blob(&self, _: &Pull<'_>, digest: &str) -> Result<BlobStream, RegistryError> {
        Err(RegistryError::BlobUnknown(format!(
            "blob {digest} is not cached (air-gapped)"
        )))
    }

    async fn head_blob(&self, pull: &Pull<'_>, digest: &str) -> Result<Option<u64>, RegistryError> {
        self.blob(pull, digest).await.map(|_| unreachable!())
    }

    async fn referrers(
        &self,
        pull: &Pull<'_>,
        digest: &str,
        _: Option<&str>,
    ) -> Result<FetchedManifest, RegistryError> {
        self.manifest(pull, digest).await
    }
}

/// How many clients for unlisted registries are kept (each holds a token cache).
const UNLISTED_CLIENTS: u64 = 256;

/// All upstream registries.
pub struct Upstreams {
    config: Arc<Config>,
    policy: Arc<UpstreamPolicy>,
    /// Clients of configured registries (and the default registry), built at start-up.
    configured: HashMap<Arc<str>, Arc<RegistryClient>>,
    /// Clients of unlisted registries, created on first use, bounded.
    unlisted: moka::sync::Cache<Arc<str>, Arc<RegistryClient>>,
    /// The HTTP client unlisted registries share.
    public_http: reqwest::Client,
    /// The HTTP client of the mirrors (`mirror_tls`).
    mirror_http: reqwest::Client,
    /// Port-less in-path names → registry names.
    aliases: HashMap<String, Arc<str>>,
    /// Registries reached with credentials (`auth:` or `passthrough`): their content is not public.
    private: HashSet<String>,
    /// Registries that pass the client's credentials through.
    passthrough: HashSet<String>,
}

impl Upstreams {
    pub fn new(config: Arc<Config>) -> anyhow::Result<Upstreams> {
        let policy = Arc::new(UpstreamPolicy::new(&config)?);
        let public_http = http_client(&config, &policy, false, None, "")?;
        let any_http_mirror = config
            .mirrors
            .iter()
            .chain(
                config
                    .registries
                    .iter()
                    .flat_map(|r| r.mirrors.iter().flatten()),
            )
            .any(|m| m.starts_with("http:"));
        let mirror_http = http_client(
            &config,
            &policy,
            any_http_mirror,
            Some(&config.mirror_tls),
            "mirrors",
        )
        .context("mirror_tls")?;
        let mut configured = HashMap::new();
        let mut aliases = HashMap::new();
        for registry in &config.registries {
            let name: Arc<str> = Arc::from(registry.name.as_str());
            let client = registry_client(&config, &policy, &mirror_http, registry)
                .with_context(|| format!("registries: {}", registry.name))?;
            configured.insert(name.clone(), Arc::new(client));
            for alias in &registry.aliases {
                aliases.insert(alias.clone(), name.clone());
            }
        }
        if !configured.contains_key(config.default_registry.as_str()) {
            let default = RegistryConfig::new(&config.default_registry, Scheme::Https);
            let client = registry_client(&config, &policy, &mirror_http, &default)?;
            configured.insert(
                Arc::from(config.default_registry.as_str()),
                Arc::new(client),
            );
        }
        if config.air_gapped {
            tracing::warn!("air-gapped: no upstream will be contacted; cached tags are served whatever their age");
        }
        let with_auth = |pred: fn(&AuthConfig) -> bool| -> HashSet<String> {
            config
                .registries
                .iter()
                .filter(|r| pred(&r.auth))
                .map(|r| r.name.clone())
                .collect()
        };
        let private = with_auth(|a| {
            matches!(
                a,
                AuthConfig::Basic(_) | AuthConfig::Mode(AuthMode::Passthrough)
            )
        });
        let passthrough = with_auth(|a| *a == AuthConfig::Mode(AuthMode::Passthrough));
        Ok(Upstreams {
            private,
            passthrough,
            config,
            policy,
            configured,
            unlisted: moka::sync::Cache::new(UNLISTED_CLIENTS),
            public_http,
            mirror_http,
            aliases,
        })
    }

    /// The registry a port-less in-path alias names.
    pub fn alias(&self, name: &str) -> Option<&Arc<str>> {
        self.aliases.get(name)
    }

    /// The registry names of every alias.
    pub fn aliases(&self) -> &HashMap<String, Arc<str>> {
        &self.aliases
    }

    /// Whether `registry` passes the client's own credentials through. On every request: a set lookup, and
    /// none at all when no registry does.
    pub fn is_passthrough(&self, registry: &str) -> bool {
        !self.passthrough.is_empty() && self.passthrough.contains(registry)
    }

    /// Whether `registry` is reached with credentials (its content is not public).
    pub fn is_private(&self, registry: &str) -> bool {
        self.private.contains(registry)
    }

    /// Whether any registry is private.
    pub fn any_private(&self) -> bool {
        !self.private.is_empty()
    }

    /// The upstream for `registry` (as clients name it), if the policy allows it. Checked before any traffic.
    pub fn get(&self, registry: &Arc<str>) -> Result<Arc<dyn Upstream>, RegistryError> {
        if self.config.air_gapped {
            return Ok(Arc::new(Offline {
                name: registry.clone(),
            }));
        }
        if let Some(client) = self.configured.get(registry) {
            return Ok(client.clone());
        }
        self.policy.check_registry(registry)?;
        let client = self.unlisted.get_with(registry.clone(), || {
            let direct = Endpoint::direct(
                format!("https://{}", crate::config::api_host(registry)),
                self.public_http.clone(),
            );
            Arc::new(RegistryClient::new(
                registry.clone(),
                endpoints(&self.config, None, registry, &self.mirror_http, [direct]),
                Scheme::Https,
                self.public_http.clone(),
                ClientAuth::Anonymous,
                self.config.upstream_timeout,
                self.policy.clone(),
                0,
                self.config.max_manifest_bytes,
            ))
        });
        Ok(client)
    }
}

/// Where a registry is fetched from, in order: its mirrors (asked with `?ns=<registry>`), then, unless
/// `mirror_fallback` is off and there are mirrors, the registry's own endpoints.
fn endpoints(
    config: &Config,
    registry: Option<&RegistryConfig>,
    name: &Arc<str>,
    mirror_http: &reqwest::Client,
    direct: impl IntoIterator<Item = Endpoint>,
) -> Vec<Endpoint> {
    let mirrors: Vec<Endpoint> = config
        .mirror_urls(registry)
        .into_iter()
        .map(|base| Endpoint::mirror(base, name.clone(), mirror_http.clone()))
        .collect();
    let with_direct = mirrors.is_empty() || config.mirror_fallback;
    let mut all = mirrors;
    if with_direct {
        all.extend(direct);
    }
    all
}

/// Builds the client of one configured registry: its HTTP client (TLS), credentials and endpoints.
fn registry_client(
    config: &Config,
    policy: &Arc<UpstreamPolicy>,
    mirror_http: &reqwest::Client,
    registry: &RegistryConfig,
) -> anyhow::Result<RegistryClient> {
    let http = http_client(
        config,
        policy,
        registry.scheme == Scheme::Http,
        Some(&registry.tls),
        &registry.name,
    )?;
    let name: Arc<str> = Arc::from(registry.name.as_str());
    let direct = registry
        .endpoint_urls()
        .into_iter()
        .map(|base| Endpoint::direct(base, http.clone()));
    let endpoints = endpoints(config, Some(registry), &name, mirror_http, direct);
    let auth = match &registry.auth {
        AuthConfig::Anonymous | AuthConfig::Mode(AuthMode::None) => ClientAuth::Anonymous,
        AuthConfig::Mode(AuthMode::Passthrough) => ClientAuth::Passthrough,
        AuthConfig::Basic(basic) => ClientAuth::Basic(load_credentials(basic)?),
    };
    Ok(RegistryClient::new(
        name,
        endpoints,
        registry.scheme,
        http,
        auth,
        config.upstream_timeout,
        policy.clone(),
        registry.max_concurrent_fetches,
        config.max_manifest_bytes,
    ))
}

/// Reads a password from where the config says, once, at start-up.
fn load_credentials(basic: &BasicAuthConfig) -> anyhow::Result<Credentials> {
    let password = if let Some(p) = &basic.password {
        p.clone()
    } else if let Some(file) = &basic.password_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("auth.password_file {}", file.display()))?;
        text.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(var) = &basic.password_env {
        std::env::var(var).with_context(|| format!("auth.password_env: ${var} is not set"))?
    } else {
        anyhow::bail!("auth: no password source");
    };
    Ok(Credentials {
        username: basic.username.clone(),
        password: SecretString::from(password),
    })
}

/// An HTTP client that resolves through the policy's guarded resolver and follows redirects only where the
/// policy allows: https (or http when `allow_http`: a registry or mirror configured http), at most
/// [`MAX_REDIRECTS`] hops, never to a refused address. `tls` and `label` (what it is for, in messages) are
/// those of a configured registry or of the mirrors.
fn http_client(
    config: &Config,
    policy: &Arc<UpstreamPolicy>,
    allow_http: bool,
    tls: Option<&TlsConfig>,
    label: &str,
) -> anyhow::Result<reqwest::Client> {
    let redirect_policy = policy.clone();
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let scheme_ok = match attempt.url().scheme() {
            "https" => true,
            "http" => allow_http,
            _ => false,
        };
        if !scheme_ok {
            let url = attempt.url().to_string();
            return attempt.error(format!("redirect to {url} refused: not https"));
        }
        if let Err(err) = redirect_policy.check_url(attempt.url()) {
            return attempt.error(err);
        }
        attempt.follow()
    });
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("ociregistry/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.upstream_connect_timeout)
        .read_timeout(config.upstream_timeout)
        .dns_resolver(policy.resolver())
        .redirect(redirect);
    if let Some(tls) = tls {
        if let Some(ca) = &tls.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("tls.ca_file {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("tls.ca_file {}: not PEM certificates", ca.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "tls.ca_file {}: no certificate in it",
                ca.display()
            );
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let mut pem =
                std::fs::read(cert).with_context(|| format!("tls.cert_file {}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key).with_context(|| format!("tls.key_file {}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!("tls.cert_file/key_file of {label}: not a PEM certificate and key")
            })?;
            builder = builder.identity(identity);
        }
        if tls.insecure_skip_verify {
            tracing::warn!(
                upstream = %label,
                "tls.insecure_skip_verify: the certificate of this upstream is NOT checked; anyone on the path can \
                 impersonate it (digests are still verified)"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
    }
    Ok(builder.build()?)
}
