//! Reaching upstream registries: one [`RegistryClient`] per registry, created on first use and sharing one
//! HTTP connection pool (reqwest + rustls).

mod auth;
mod client;

use std::sync::Arc;

use dashmap::DashMap;

pub use auth::{parse_bearer_challenge, BearerChallenge};
pub use client::{FetchedManifest, Kind, ManifestHead, RegistryClient};

use crate::config::{Config, Scheme};
use crate::route::DOCKER_HUB;

/// Where Docker Hub's registry API really lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// All upstream registries.
pub struct Upstreams {
    http: reqwest::Client,
    config: Arc<Config>,
    clients: DashMap<Arc<str>, Arc<RegistryClient>>,
}

impl Upstreams {
    pub fn new(config: Arc<Config>) -> anyhow::Result<Upstreams> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("ociregistry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.upstream_connect_timeout)
            .read_timeout(config.upstream_timeout)
            .build()?;
        Ok(Upstreams {
            http,
            config,
            clients: DashMap::new(),
        })
    }

    /// The client for `registry` (as clients name it).
    pub fn client(&self, registry: &Arc<str>) -> Arc<RegistryClient> {
        if let Some(client) = self.clients.get(registry) {
            return client.clone();
        }
        let scheme = self
            .config
            .registry(registry)
            .map(|r| r.scheme)
            .unwrap_or(Scheme::Https);
        let host = if &**registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let client = Arc::new(RegistryClient::new(
            registry.clone(),
            format!("{}://{host}", scheme.as_str()),
            self.http.clone(),
            self.config.upstream_timeout,
        ));
        self.clients
            .entry(registry.clone())
            .or_insert(client)
            .clone()
    }
}
