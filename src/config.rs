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

use crate::route::normalize_host;
use crate::server::BlobIo;

/// The whole configuration of `ociregistry serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds to.
    pub listen: SocketAddr,
    /// Directory holding the index and the blobs unless `db`/`blobs` say otherwise.
    #[serde(deserialize_with = "yaml_string::path")]
    pub data_dir: PathBuf,
    /// The redb index file; defaults to `<data_dir>/index.redb`.
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub db: Option<PathBuf>,
    /// The content-addressed blob directory; defaults to `<data_dir>/blobs`.
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub blobs: Option<PathBuf>,
    /// `tracing` filter (`info`, `debug`, `ociregistry=debug,warn`, …); `RUST_LOG` wins when set.
    #[serde(deserialize_with = "yaml_string::string")]
    pub log_level: String,
    /// Upstream used when a request names none (no `ns`, no host in the path).
    #[serde(deserialize_with = "yaml_string::string")]
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
    /// Per-upstream settings; hosts not listed are reached over https with anonymous/bearer auth. An empty
    /// `registries:` (YAML null, e.g. after commenting out every entry) means none.
    #[serde(deserialize_with = "null_as_empty")]
    pub registries: Vec<RegistryConfig>,
}

/// Settings for one upstream registry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The host (and port) as clients name it: `docker.io`, `registry.k8s.io`, `127.0.0.1:5000`.
    #[serde(deserialize_with = "yaml_string::string")]
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
            hot_cache_bytes: 16 * 1024 * 1024,
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

    /// Checks what the types alone do not. Every message starts with the offending key, like serde's own
    /// (`registries[1].name: ...`); schema/config.schema.json states the same rules.
    fn validate(&self) -> anyhow::Result<()> {
        ensure_path_not_empty("data_dir", &self.data_dir)?;
        for (key, path) in [("db", &self.db), ("blobs", &self.blobs)] {
            if let Some(path) = path {
                ensure_path_not_empty(key, path)?;
            }
        }
        anyhow::ensure!(
            !self.log_level.trim().is_empty(),
            "log_level: must not be empty (e.g. info, debug, ociregistry=debug,warn)"
        );
        if normalize_host(&self.default_registry).is_err() {
            anyhow::bail!(
                "default_registry: {:?} is not a registry host[:port] (e.g. docker.io, 127.0.0.1:5000)",
                self.default_registry
            );
        }
        anyhow::ensure!(
            self.hot_cache_bytes > 0,
            "hot_cache_bytes: must be at least 1"
        );
        for (key, timeout) in [
            ("upstream_connect_timeout", self.upstream_connect_timeout),
            ("upstream_timeout", self.upstream_timeout),
        ] {
            anyhow::ensure!(!timeout.is_zero(), "{key}: must be longer than 0s");
        }
        for (i, registry) in self.registries.iter().enumerate() {
            let name = &registry.name;
            let Ok(canonical) = normalize_host(name) else {
                anyhow::bail!(
                    "registries[{i}].name: {name:?} is not a registry host[:port] (e.g. quay.io, 127.0.0.1:5000)"
                );
            };
            // Requests are matched against the canonical form (lower case, Docker Hub aliases folded), so any
            // other spelling would silently never apply.
            anyhow::ensure!(
                *canonical == **name,
                "registries[{i}].name: write {name:?} as {canonical:?}, the form requests are matched against"
            );
            anyhow::ensure!(
                !self.registries[..i].iter().any(|r| r.name == *name),
                "registries[{i}].name: {name:?} is listed twice"
            );
        }
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

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn ensure_path_not_empty(key: &str, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.as_os_str().is_empty(),
        "{key}: must not be empty (omit the key for the default)"
    );
    Ok(())
}

/// Deserializers that accept only YAML strings. serde_yaml_ng hands any plain scalar to a `String` field, so
/// `log_level: ~` would become the text "~" and `data_dir: ~` a directory named `~`; these reject nulls,
/// numbers and booleans, reading YAML the way schema/config.schema.json does.
mod yaml_string {
    use std::fmt;
    use std::path::PathBuf;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    struct StrictString;

    impl Visitor<'_> for StrictString {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string (quote values YAML reads as null, a number or a boolean)")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(StrictString)
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        string(d).map(PathBuf::from)
    }

    /// `null` (or `~`) means "not set".
    pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        struct StrictPath(PathBuf);
        impl<'de> Deserialize<'de> for StrictPath {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                path(d).map(StrictPath)
            }
        }
        Ok(Option::<StrictPath>::deserialize(d)?.map(|p| p.0))
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
