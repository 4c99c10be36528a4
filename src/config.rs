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
    /// `text` (default) or `json` log lines.
    pub log_format: crate::logging::LogFormat,
    /// Export traces over OTLP/HTTP to this collector base URL (`/v1/traces` is appended). Off by default.
    pub otlp_endpoint: Option<String>,
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
    /// Per-upstream settings; hosts not listed are reached over https with anonymous/bearer auth, and only
    /// if `unlisted_upstreams` allows them. An empty `registries:` (YAML null) means none.
    #[serde(deserialize_with = "null_as_empty")]
    pub registries: Vec<RegistryConfig>,
    /// Whether hosts that are neither in `registries:` nor `default_registry` may be reached: `public` (only
    /// when every address they resolve to is public) or `deny`.
    pub unlisted_upstreams: UnlistedUpstreams,
    /// Glob patterns (`*.example.com`) of unlisted hosts allowed even when `unlisted_upstreams: deny`; their
    /// addresses must still be public.
    #[serde(deserialize_with = "yaml_string::list")]
    pub allowed_upstreams: Vec<String>,
    /// Other caches every registry is fetched through (another ociregistry, or any mirror that understands
    /// containerd's `?ns=`): base URLs tried in order before a registry's own endpoints, each request naming
    /// the registry in `?ns=`, so one site cache serves every registry to every node. A registry's own
    /// `mirrors` replaces this list. Empty by default.
    #[serde(deserialize_with = "yaml_string::list")]
    pub mirrors: Vec<String>,
    /// When every mirror of a registry failed (a connection error or a 5xx), fetch from the registry itself.
    /// Off: a node only ever reaches its site cache.
    pub mirror_fallback: bool,
    /// TLS toward the mirrors (a CA of their own, a client certificate).
    pub mirror_tls: TlsConfig,
    /// Scale-out: an S3-compatible bucket shared by every replica, holding blobs and manifests by digest (and
    /// the last known digest of each tag). Off by default.
    pub s3: Option<S3Config>,
    /// Never contact an upstream: serve what is cached regardless of TTL, answer misses with 404 at once.
    pub air_gapped: bool,
    /// How long an upstream's 404 for a tag is remembered, so unknown names cannot burn the upstream quota.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Serve HTTPS (and optionally require client certificates) instead of plain HTTP.
    pub server_tls: Option<ServerTlsConfig>,
    /// Largest manifest (or referrers index) accepted from an upstream, in bytes; a larger one is refused
    /// (502 `MANIFEST_INVALID`) and never cached.
    pub max_manifest_bytes: usize,
    /// Most blob downloads writing at once (each on a thread of its own); more wait for a slot.
    pub max_concurrent_fills: usize,
    /// Threads of the runtime's blocking pool (index work, buffered blob reads): tokio's default, 512.
    pub blocking_threads: usize,
    /// Most open client connections; beyond it new connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an idle keep-alive connection is kept.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Slowest average download a blob fill may keep up, in bytes per second: a fill of N bytes gets
    /// `upstream_timeout + N / fill_min_bytes_per_sec` in all before it is abandoned.
    pub fill_min_bytes_per_sec: u64,
    /// Unix socket of the admin API that `list`, `prune`, `load`, `pin` and `invalidate` talk to; defaults to
    /// `<data_dir>/admin.sock` (mode 0600).
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub admin_socket: Option<PathBuf>,
    /// The admin API on TCP as well (e.g. for a CronJob in another pod), behind `admin_token_file`. Off by
    /// default.
    pub admin_listen: Option<SocketAddr>,
    /// File holding the bearer token the TCP admin API requires.
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub admin_token_file: Option<PathBuf>,
    /// Automatic pruning: images not pulled for this long are removed every `prune_interval`. Off by default.
    #[serde(with = "humantime_serde")]
    pub prune_older_than: Option<Duration>,
    /// How often automatic pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
    /// Ceiling of the blob directory: least recently pulled unpinned images are evicted down to 90% of it.
    /// An integer (bytes) or a size such as `50GiB` or `500MB`. Off by default.
    pub max_cache_bytes: Option<bytesize::ByteSize>,
    /// Free space the blob filesystem keeps: below it `/readyz` fails and uncached blobs are streamed to
    /// clients without being stored (pulls keep working on a full disk). An integer or a size (`64MiB`).
    pub min_free_bytes: bytesize::ByteSize,
    /// Serve Prometheus metrics on `/metrics` of this port (on `listen`'s address) or address. Off by default.
    pub metrics: Option<MetricsListen>,
    /// Export docker-registry-exporter's per-repository gauges (`repository_tags_total`, …), recomputed every
    /// minute. Off by default: one series per cached tag.
    pub metrics_repositories: bool,
    /// Most tags the per-repository gauges cover.
    pub metrics_max_series: usize,
    /// How often the per-repository gauges are recomputed from the index.
    #[serde(with = "humantime_serde")]
    pub metrics_refresh_interval: Duration,
    /// Blob downloads of at least 1 MiB served slower than this (bytes per second) count as slow downloads.
    pub metrics_slow_download_bytes_per_sec: bytesize::ByteSize,
    /// Count requests by client network: `prefix` (the client's /24, or /48 for IPv6) or site name → CIDRs.
    /// Off by default.
    pub metrics_client_networks: Option<ClientNetworks>,
}

/// How requests are grouped by client network for `ociregistry_client_requests_total{network}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientNetworks {
    /// The client's /24 (IPv4) or /48 (IPv6) network, up to `metrics_max_series` of them.
    Prefix,
    /// Named sites; a client in none of them is `other`. The most specific network matching wins.
    Sites(Vec<(String, Vec<ipnet::IpNet>)>),
}

impl<'de> Deserialize<'de> for ClientNetworks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ClientNetworks, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Mode(String),
            Sites(std::collections::BTreeMap<String, Vec<String>>),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            D::Error::custom(
                "metrics_client_networks: expected `prefix` or a map of site name to a list of CIDRs",
            )
        })?;
        match raw {
            Raw::Mode(mode) if mode == "prefix" => Ok(ClientNetworks::Prefix),
            Raw::Mode(other) => Err(D::Error::custom(format!(
                "metrics_client_networks: {other:?} is neither `prefix` nor a map of sites"
            ))),
            Raw::Sites(sites) => {
                if sites.is_empty() {
                    return Err(D::Error::custom("metrics_client_networks: no sites"));
                }
                let mut parsed = Vec::new();
                for (name, cidrs) in sites {
                    let label_safe = !name.is_empty()
                        && name.len() <= 64
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    if !label_safe || name == "other" {
                        return Err(D::Error::custom(format!(
                            "metrics_client_networks: site name {name:?} must be 1-64 of A-Z a-z 0-9 - _ . and not `other`"
                        )));
                    }
                    if cidrs.is_empty() {
                        return Err(D::Error::custom(format!(
                            "metrics_client_networks: site {name:?} has no networks"
                        )));
                    }
                    let nets = cidrs
                        .iter()
                        .map(|c| {
                            c.parse::<ipnet::IpNet>().map(|n| n.trunc()).map_err(|_| {
                                D::Error::custom(format!(
                                    "metrics_client_networks: site {name:?}: {c:?} is not a CIDR such as 10.1.0.0/16"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    parsed.push((name, nets));
                }
                Ok(ClientNetworks::Sites(parsed))
            }
        }
    }
}

/// Where the metrics listener binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// A port on the IP of `listen`.
    Port(u16),
    Address(SocketAddr),
}

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<MetricsListen, String> {
        if let Ok(port) = text.parse::<u16>() {
            if port == 0 {
                return Err("metrics: port 0 is not a port to scrape".into());
            }
            return Ok(MetricsListen::Port(port));
        }
        text.parse::<SocketAddr>()
            .map(MetricsListen::Address)
            .map_err(|_| {
                format!("metrics: {text:?} is neither a port (2112) nor an address (0.0.0.0:2112)")
            })
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MetricsListen, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Port(port) => u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .map(MetricsListen::Port)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("metrics: port {port} is not 1-65535"))
                }),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// TLS of the server itself. The files are re-read when they change, without dropping connections.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain of the server.
    #[serde(deserialize_with = "yaml_string::path")]
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    #[serde(deserialize_with = "yaml_string::path")]
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to (mTLS).
    #[serde(default, deserialize_with = "yaml_string::optional_path")]
    pub client_ca_file: Option<PathBuf>,
    /// `none`, `optional` or `require`; default `require` when `client_ca_file` is set, else `none`.
    #[serde(default)]
    pub client_auth: Option<ClientAuthMode>,
}

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    None,
    Optional,
    Require,
}

impl ServerTlsConfig {
    /// The client-auth mode in force.
    pub fn client_auth(&self) -> ClientAuthMode {
        self.client_auth
            .unwrap_or(if self.client_ca_file.is_some() {
                ClientAuthMode::Require
            } else {
                ClientAuthMode::None
            })
    }
}

/// Whether upstream hosts not listed in the config may be reached.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnlistedUpstreams {
    /// Allowed when every address the host resolves to is public (not loopback, private, link-local…).
    #[default]
    Public,
    /// Refused, unless they match `allowed_upstreams`.
    Deny,
}

/// How cached blob bodies are read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobIo {
    #[default]
    Mmap,
    Buffered,
}

impl S3Config {
    fn validate(&self) -> anyhow::Result<()> {
        check_base_url("s3.endpoint", &self.endpoint)?;
        for (key, path) in [
            ("s3.access_key_id_file", &self.access_key_id_file),
            ("s3.secret_access_key_file", &self.secret_access_key_file),
            ("s3.ca_file", &self.ca_file),
        ] {
            if let Some(path) = path {
                ensure_path_not_empty(key, path)?;
            }
        }
        for (key, var) in [
            ("s3.access_key_id_env", &self.access_key_id_env),
            ("s3.secret_access_key_env", &self.secret_access_key_env),
        ] {
            anyhow::ensure!(!var.is_empty(), "{key}: must not be empty");
        }
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        anyhow::ensure!(
            bucket_ok,
            "s3.bucket: {:?} must be 3-63 of a-z 0-9 - .",
            self.bucket
        );
        anyhow::ensure!(
            !self.prefix.starts_with('/') && !self.prefix.contains("//"),
            "s3.prefix: {:?} must not start with / nor contain //",
            self.prefix
        );
        anyhow::ensure!(!self.region.is_empty(), "s3.region: must not be empty");
        if let Some(id) = &self.replica_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            anyhow::ensure!(
                ok,
                "s3.replica_id: {id:?} must be 1-64 of A-Z a-z 0-9 - _ ."
            );
        }
        anyhow::ensure!(
            !self.timeout.is_zero(),
            "s3.timeout: must be longer than 0s"
        );
        anyhow::ensure!(
            !self.refs_interval.is_zero(),
            "s3.refs_interval: must be longer than 0s"
        );
        Ok(())
    }
}

/// The shared bucket of scale-out mode (`s3:`). Credentials come from files or environment variables, never
/// from the config file itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Base URL of the S3 API (`http://garage.storage:3900`, `https://s3.eu-west-1.amazonaws.com`).
    #[serde(deserialize_with = "yaml_string::string")]
    pub endpoint: String,
    /// The bucket.
    #[serde(deserialize_with = "yaml_string::string")]
    pub bucket: String,
    /// Key prefix inside the bucket (`site-a/`), so that several caches can share one bucket.
    #[serde(default, deserialize_with = "yaml_string::string")]
    pub prefix: String,
    /// Region the requests are signed for (`garage` for Garage, `us-east-1` for MinIO by default).
    #[serde(
        default = "default_s3_region",
        deserialize_with = "yaml_string::string"
    )]
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`, what most self-hosted engines need) rather than
    /// virtual-hosted style (`bucket.endpoint/key`).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// File holding the access key id; else the variable `access_key_id_env` names.
    #[serde(default, deserialize_with = "yaml_string::optional_path")]
    pub access_key_id_file: Option<PathBuf>,
    /// Environment variable holding the access key id.
    #[serde(
        default = "default_access_key_env",
        deserialize_with = "yaml_string::string"
    )]
    pub access_key_id_env: String,
    /// File holding the secret access key; else the variable `secret_access_key_env` names.
    #[serde(default, deserialize_with = "yaml_string::optional_path")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Environment variable holding the secret access key.
    #[serde(
        default = "default_secret_key_env",
        deserialize_with = "yaml_string::string"
    )]
    pub secret_access_key_env: String,
    /// PEM CA certificates trusted for the endpoint, in addition to the web PKI roots.
    #[serde(default, deserialize_with = "yaml_string::optional_path")]
    pub ca_file: Option<PathBuf>,
    /// This replica's name in the bucket (its published reference set); default: the host name.
    #[serde(default, deserialize_with = "yaml_string::optional_string")]
    pub replica_id: Option<String>,
    /// Time allowed for one request to the bucket (a blob body: between two chunks).
    #[serde(default = "default_s3_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often this replica publishes its reference set (every digest its index holds) for the bucket sweep;
    /// a sweep's grace must be at least twice as long.
    #[serde(default = "default_refs_interval", with = "humantime_serde")]
    pub refs_interval: Duration,
    /// Keep blobs on this replica's disk as well (served zero-copy, bounded by `max_cache_bytes`). Off: a
    /// blob's bytes are streamed from the bucket on every request (ranged GETs for `Range`), and the local
    /// disk only stages downloads until they are published.
    #[serde(default = "default_true")]
    pub local_tier: bool,
}

fn default_refs_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_s3_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_access_key_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_key_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}
fn default_s3_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Checks an endpoint or mirror URL: `http(s)://host[:port]`, nothing more.
fn check_base_url(key: &str, endpoint: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| anyhow::anyhow!("{key}: {endpoint:?} is not a URL: {e}"))?;
    anyhow::ensure!(
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.path().trim_end_matches('/').is_empty()
            && url.query().is_none()
            && url.username().is_empty()
            && url.password().is_none(),
        "{key}: {endpoint:?} must be http(s)://host[:port], without path, query or credentials"
    );
    anyhow::ensure!(url.port() != Some(0), "{key}: {endpoint:?} has port 0");
    Ok(())
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
    /// Where to fetch from, in order (`https://10.0.0.5:5443`); default: `scheme://name`. On a connection
    /// error or a 5xx the next endpoint is tried.
    #[serde(default, deserialize_with = "yaml_string::list")]
    pub endpoints: Vec<String>,
    /// Port-less names clients may use for this registry as the first path component (`internal/app:1`).
    #[serde(default, deserialize_with = "yaml_string::list")]
    pub aliases: Vec<String>,
    /// Credentials toward this registry.
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS toward this registry (custom CA, client certificate).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Overrides the global `tag_ttl` for this registry.
    #[serde(default, with = "humantime_serde")]
    pub tag_ttl: Option<Duration>,
    /// Glob patterns of tags that are never revalidated once cached (`v*.*.*`).
    #[serde(default, deserialize_with = "yaml_string::list")]
    pub immutable_tags: Vec<String>,
    /// Upper bound of concurrent requests to this registry (0: no bound).
    #[serde(default)]
    pub max_concurrent_fetches: usize,
    /// Mirrors of this registry (see the top-level `mirrors`), replacing the top-level list; `[]`: none.
    #[serde(default, deserialize_with = "yaml_string::optional_list")]
    pub mirrors: Option<Vec<String>>,
}

/// Credentials toward one registry: `none`, `passthrough` (the client's own `Authorization`), or a user name
/// with exactly one of `password`, `password_file`, `password_env`. Used for HTTP basic auth and at the
/// token endpoint of the bearer-token flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AuthConfig {
    #[default]
    Anonymous,
    Mode(AuthMode),
    Basic(BasicAuthConfig),
}

/// A string (`none`, `passthrough`) or a mapping (user name and password source). Written out rather than
/// `#[serde(untagged)]`, whose one error ("did not match any variant") names neither the key nor the problem.
impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AuthVisitor;
        impl<'de> serde::de::Visitor<'de> for AuthVisitor {
            type Value = AuthConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "`none`, `passthrough`, or {username, password | password_file | password_env}",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AuthConfig, E> {
                match v {
                    "none" => Ok(AuthConfig::Mode(AuthMode::None)),
                    "passthrough" => Ok(AuthConfig::Mode(AuthMode::Passthrough)),
                    other => Err(E::unknown_variant(other, &["none", "passthrough"])),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<AuthConfig, A::Error> {
                BasicAuthConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(AuthConfig::Basic)
            }
        }
        d.deserialize_any(AuthVisitor)
    }
}

/// `auth: none` or `auth: passthrough`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Passthrough,
}

/// A user name and where its password comes from. The password is never printed (`Debug` redacts it).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    #[serde(deserialize_with = "yaml_string::string")]
    pub username: String,
    #[serde(default, deserialize_with = "yaml_string::optional_string")]
    pub password: Option<String>,
    #[serde(default, deserialize_with = "yaml_string::optional_path")]
    pub password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "yaml_string::optional_string")]
    pub password_env: Option<String>,
}

impl std::fmt::Debug for BasicAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuthConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .finish()
    }
}

/// TLS settings toward one registry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted for this registry, in addition to the web PKI roots.
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mTLS; needs `key_file`.
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(deserialize_with = "yaml_string::optional_path")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Logged loudly at start-up; for tests only.
    pub insecure_skip_verify: bool,
}

impl RegistryConfig {
    /// A registry entry with only a name and a scheme (everything else default).
    pub fn new(name: &str, scheme: Scheme) -> RegistryConfig {
        RegistryConfig {
            name: name.to_owned(),
            scheme,
            endpoints: Vec::new(),
            aliases: Vec::new(),
            auth: AuthConfig::Anonymous,
            tls: TlsConfig::default(),
            tag_ttl: None,
            immutable_tags: Vec::new(),
            max_concurrent_fetches: 0,
            mirrors: None,
        }
    }

    /// The endpoints to fetch from, in order: the configured ones, else `scheme://name`.
    pub fn endpoint_urls(&self) -> Vec<String> {
        if self.endpoints.is_empty() {
            vec![format!(
                "{}://{}",
                self.scheme.as_str(),
                api_host(&self.name)
            )]
        } else {
            self.endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect()
        }
    }
}

/// Where a registry's API lives when no endpoint is configured (Docker Hub's is not at `docker.io`).
pub fn api_host(name: &str) -> &str {
    if name == crate::route::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        name
    }
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
            log_format: crate::logging::LogFormat::Text,
            otlp_endpoint: None,
            default_registry: "docker.io".into(),
            hot_cache_bytes: 16 * 1024 * 1024,
            tag_ttl: Duration::from_secs(600),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            blob_io: BlobIo::default(),
            registries: Vec::new(),
            unlisted_upstreams: UnlistedUpstreams::default(),
            allowed_upstreams: Vec::new(),
            mirrors: Vec::new(),
            mirror_fallback: true,
            mirror_tls: TlsConfig::default(),
            s3: None,
            air_gapped: false,
            negative_ttl: Duration::from_secs(30),
            fill_min_bytes_per_sec: 64 * 1024,
            server_tls: None,
            max_manifest_bytes: crate::manifest::MAX_MANIFEST_BYTES,
            max_concurrent_fills: 1024,
            blocking_threads: 512,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            admin_socket: None,
            admin_listen: None,
            admin_token_file: None,
            prune_older_than: None,
            prune_interval: Duration::from_secs(3600),
            max_cache_bytes: None,
            min_free_bytes: bytesize::ByteSize::mib(64),
            metrics: None,
            metrics_repositories: false,
            metrics_max_series: 1000,
            metrics_refresh_interval: Duration::from_secs(60),
            metrics_slow_download_bytes_per_sec: bytesize::ByteSize::mib(1),
            metrics_client_networks: None,
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
    pub fn validate(&self) -> anyhow::Result<()> {
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
            anyhow::ensure!(
                !self.registries[..i]
                    .iter()
                    .any(|r| r.aliases.contains(name)),
                "registries[{i}].name: {name:?} is already an alias of another registry"
            );
            registry.validate(i, &self.registries[..i])?;
        }
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        for (i, mirror) in self.mirrors.iter().enumerate() {
            check_base_url(&format!("mirrors[{i}]"), mirror)?;
        }
        anyhow::ensure!(
            self.mirror_tls.cert_file.is_some() == self.mirror_tls.key_file.is_some(),
            "mirror_tls: cert_file and key_file go together"
        );
        for (i, pattern) in self.allowed_upstreams.iter().enumerate() {
            host_pattern(pattern).map_err(|e| anyhow::anyhow!("allowed_upstreams[{i}]: {e}"))?;
        }
        anyhow::ensure!(
            self.fill_min_bytes_per_sec > 0,
            "fill_min_bytes_per_sec: must be at least 1"
        );
        if let Some(tls) = &self.server_tls {
            ensure_path_not_empty("server_tls.cert_file", &tls.cert_file)?;
            ensure_path_not_empty("server_tls.key_file", &tls.key_file)?;
            anyhow::ensure!(
                tls.client_auth() == ClientAuthMode::None || tls.client_ca_file.is_some(),
                "server_tls.client_auth: {:?} needs server_tls.client_ca_file",
                tls.client_auth()
            );
            anyhow::ensure!(
                tls.client_auth() != ClientAuthMode::None || tls.client_ca_file.is_none(),
                "server_tls.client_ca_file: given, but client_auth is none"
            );
        }
        anyhow::ensure!(
            self.max_manifest_bytes >= 1024,
            "max_manifest_bytes: must be at least 1024"
        );
        anyhow::ensure!(
            self.max_concurrent_fills > 0,
            "max_concurrent_fills: must be at least 1"
        );
        anyhow::ensure!(
            self.blocking_threads > 0,
            "blocking_threads: must be at least 1"
        );
        anyhow::ensure!(
            self.max_connections > 0,
            "max_connections: must be at least 1"
        );
        anyhow::ensure!(
            !self.header_read_timeout.is_zero(),
            "header_read_timeout: must be longer than 0s"
        );
        anyhow::ensure!(
            !self.prune_interval.is_zero(),
            "prune_interval: must be longer than 0s"
        );
        anyhow::ensure!(
            !self.metrics_refresh_interval.is_zero(),
            "metrics_refresh_interval: must be longer than 0s"
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| anyhow::anyhow!("otlp_endpoint: {endpoint:?} is not a URL: {e}"))?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https") && url.host().is_some(),
                "otlp_endpoint: {endpoint:?} must be an http:// or https:// URL with a host"
            );
        }
        anyhow::ensure!(
            self.metrics_slow_download_bytes_per_sec.as_u64() > 0,
            "metrics_slow_download_bytes_per_sec: must be at least 1"
        );
        anyhow::ensure!(
            self.prune_older_than.is_none_or(|d| !d.is_zero()),
            "prune_older_than: must be longer than 0s (0s would remove every unpinned image at each run)"
        );
        anyhow::ensure!(
            self.max_cache_bytes.is_none_or(|b| b.as_u64() > 0),
            "max_cache_bytes: must be at least 1 byte"
        );
        anyhow::ensure!(
            self.admin_listen.is_none() || self.admin_token_file.is_some(),
            "admin_listen: needs admin_token_file (the TCP admin API is never open without a token)"
        );
        if let Some(path) = &self.admin_socket {
            ensure_path_not_empty("admin_socket", path)?;
        }
        Ok(())
    }

    /// The redb index file.
    pub fn db_path(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("index.redb"))
    }

    /// The admin API's Unix socket: beside the index (`<data_dir>/admin.sock`, or the directory of `db` when
    /// that is given), so that a CLI given the same `--db` finds it.
    pub fn admin_socket_path(&self) -> PathBuf {
        if let Some(socket) = &self.admin_socket {
            return socket.clone();
        }
        match &self.db {
            Some(db) => db
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| p.join("admin.sock"))
                .unwrap_or_else(|| PathBuf::from("admin.sock")),
            None => self.data_dir.join("admin.sock"),
        }
    }

    /// The blob directory.
    pub fn blobs_path(&self) -> PathBuf {
        self.blobs
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    /// The mirrors of a registry (its own list, else the top-level one), without a trailing `/`.
    pub fn mirror_urls(&self, registry: Option<&RegistryConfig>) -> Vec<String> {
        registry
            .and_then(|r| r.mirrors.as_ref())
            .unwrap_or(&self.mirrors)
            .iter()
            .map(|m| m.trim_end_matches('/').to_owned())
            .collect()
    }

    /// Settings of the upstream named `name`, if listed.
    pub fn registry(&self, name: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.name == name)
    }
}

impl RegistryConfig {
    /// Checks one `registries[i]` entry; `earlier` are the entries before it (for duplicate aliases).
    fn validate(&self, i: usize, earlier: &[RegistryConfig]) -> anyhow::Result<()> {
        for (j, endpoint) in self.endpoints.iter().enumerate() {
            check_base_url(&format!("registries[{i}].endpoints[{j}]"), endpoint)?;
        }
        for (j, mirror) in self.mirrors.iter().flatten().enumerate() {
            check_base_url(&format!("registries[{i}].mirrors[{j}]"), mirror)?;
        }
        for (j, alias) in self.aliases.iter().enumerate() {
            let key = format!("registries[{i}].aliases[{j}]");
            let valid = !alias.is_empty()
                && alias.len() <= 64
                && alias
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && alias.as_bytes()[0].is_ascii_alphanumeric();
            anyhow::ensure!(
                valid,
                "{key}: {alias:?} must be a port-less name of lower-case letters, digits, '.', '_' or '-'"
            );
            let taken = earlier
                .iter()
                .chain(std::iter::once(self))
                .any(|r| r.name == *alias)
                || earlier.iter().any(|r| r.aliases.contains(alias))
                || self.aliases[..j].contains(alias);
            anyhow::ensure!(
                !taken,
                "{key}: {alias:?} is already a registry name or alias"
            );
        }
        if let AuthConfig::Basic(basic) = &self.auth {
            let key = format!("registries[{i}].auth");
            anyhow::ensure!(
                !basic.username.is_empty(),
                "{key}.username: must not be empty"
            );
            let sources = [
                basic.password.is_some(),
                basic.password_file.is_some(),
                basic.password_env.is_some(),
            ];
            anyhow::ensure!(
                sources.iter().filter(|s| **s).count() == 1,
                "{key}: give exactly one of password, password_file, password_env"
            );
        }
        anyhow::ensure!(
            self.tls.cert_file.is_some() == self.tls.key_file.is_some(),
            "registries[{i}].tls: cert_file and key_file go together"
        );
        for (j, pattern) in self.immutable_tags.iter().enumerate() {
            globset::Glob::new(pattern).map_err(|e| {
                anyhow::anyhow!("registries[{i}].immutable_tags[{j}]: {pattern:?}: {e}")
            })?;
        }
        Ok(())
    }
}

/// Compiles an `allowed_upstreams` pattern: a host glob such as `*.example.com` or `ghcr.io`.
pub fn host_pattern(pattern: &str) -> anyhow::Result<globset::GlobMatcher> {
    anyhow::ensure!(
        !pattern.is_empty()
            && pattern
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:*?".contains(&b)),
        "{pattern:?} must be a lower-case host[:port] glob such as *.example.com"
    );
    Ok(globset::Glob::new(pattern)?.compile_matcher())
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
    pub fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        struct Strict(String);
        impl<'de> Deserialize<'de> for Strict {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                string(d).map(Strict)
            }
        }
        Ok(Option::<Strict>::deserialize(d)?.map(|s| s.0))
    }

    /// A list of strings; `null` means empty.
    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct Strict(String);
        impl<'de> Deserialize<'de> for Strict {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                string(d).map(Strict)
            }
        }
        Ok(Option::<Vec<Strict>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.0)
            .collect())
    }

    /// A list of strings; `null` (or absent) means "not set", unlike `[]`.
    pub fn optional_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        struct Strict(String);
        impl<'de> Deserialize<'de> for Strict {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                string(d).map(Strict)
            }
        }
        Ok(Option::<Vec<Strict>>::deserialize(d)?
            .map(|list| list.into_iter().map(|s| s.0).collect()))
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
