//! Server configuration: the YAML config file, its defaults, and the per-upstream `registries:` list.
//!
//! YAML is read with `serde_yaml_ng`, the maintained fork of the deprecated `serde_yaml` (same serde data
//! model, still receiving fixes). Unknown keys are rejected so that a typo never silently falls back to a
//! default. Command-line flags are applied on top of the file by the CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::server::BlobIo;

/// The whole configuration of `ociregistry serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds to.
    pub listen: SocketAddr,
    /// Directory holding the index and the blobs unless `db`/`blobs` say otherwise.
    pub data_dir: PathBuf,
    /// The redb index file; defaults to `<data_dir>/index.redb`.
    pub db: Option<PathBuf>,
    /// The content-addressed blob directory; defaults to `<data_dir>/blobs`.
    pub blobs: Option<PathBuf>,
    /// `tracing` filter (`info`, `debug`, `ociregistry=debug,warn`, …); `RUST_LOG` wins when set.
    pub log_level: String,
    /// Upstream used when a request names none (no `ns`, no host in the path).
    pub default_registry: String,
    /// Upper bound, in bytes, of the in-memory hot cache of manifests and tags.
    pub hot_cache_bytes: u64,
    /// How long a tag→digest mapping is served without asking the upstream again.
    #[serde(with = "humantime_serde")]
    pub tag_ttl: Duration,
    /// Time allowed to connect to an upstream.
    #[serde(with = "humantime_serde")]
    pub upstream_connect_timeout: Duration,
    /// Time allowed for an upstream to answer a request (headers), and between two chunks of a body.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// How cached blob bodies are read: `mmap` (default, no user-space copy) or `buffered` (plain reads, for
    /// network filesystems).
    pub blob_io: BlobIo,
    /// Per-upstream settings; hosts not listed are reached over https with anonymous/bearer auth.
    pub registries: Vec<RegistryConfig>,
}

/// Settings for one upstream registry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The host (and port) as clients name it: `docker.io`, `registry.k8s.io`, `127.0.0.1:5000`.
    pub name: String,
    /// `https` (default) or `http`.
    #[serde(default)]
    pub scheme: Scheme,
}

/// How to reach an upstream.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Https,
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("ociregistry-data"),
            db: None,
            blobs: None,
            log_level: "info".into(),
            default_registry: "docker.io".into(),
            hot_cache_bytes: 32 * 1024 * 1024,
            tag_ttl: Duration::from_secs(600),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            blob_io: BlobIo::default(),
            registries: Vec::new(),
        }
    }
}

impl Config {
    /// Reads a YAML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Config::from_yaml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses YAML text; an empty document gives the defaults.
    pub fn from_yaml(text: &str) -> anyhow::Result<Config> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (i, registry) in self.registries.iter().enumerate() {
            anyhow::ensure!(
                !registry.name.is_empty() && !registry.name.contains(['/', ' ']),
                "registries[{i}].name {:?} must be a host or host:port",
                registry.name
            );
            anyhow::ensure!(
                !self.registries[..i].iter().any(|r| r.name == registry.name),
                "registries[{i}].name {:?} is listed twice",
                registry.name
            );
        }
        anyhow::ensure!(self.hot_cache_bytes > 0, "hot_cache_bytes must be positive");
        Ok(())
    }

    /// The redb index file.
    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("index.redb"))
    }

    /// The blob directory.
    pub fn blobs_path(&self) -> PathBuf {
        self.blobs
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    /// Settings of the upstream named `name`, if listed.
    pub fn registry(&self, name: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registries_and_durations() {
        let config = Config::from_yaml(
            "listen: 127.0.0.1:9000\ntag_ttl: 90s\nregistries:\n  - {name: 127.0.0.1:5000, scheme: http}\n  - name: quay.io\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.tag_ttl, Duration::from_secs(90));
        assert_eq!(
            config.registry("127.0.0.1:5000").unwrap().scheme,
            Scheme::Http
        );
        assert_eq!(config.registry("quay.io").unwrap().scheme, Scheme::Https);
        assert_eq!(
            config.db_path(),
            PathBuf::from("ociregistry-data/index.redb")
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(Config::from_yaml("lisen: 1.2.3.4:5").is_err());
        assert!(Config::from_yaml("registries: [{name: a, scheme: ftp}]").is_err());
        assert!(Config::from_yaml("registries: [{name: a}, {name: a}]").is_err());
        assert!(Config::from_yaml("tag_ttl: soon").is_err());
    }
}
