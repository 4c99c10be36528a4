//! Which upstream hosts and addresses the cache may reach: the guard that keeps it from being an open proxy.
//!
//! Decided before any traffic, from the config alone: hosts listed in `registries:` (their names and endpoint
//! hosts) and `default_registry` are trusted, whatever they resolve to. Any other host is allowed only when
//! `unlisted_upstreams: public` (or an `allowed_upstreams` glob) admits it, and then only if every address it
//! resolves to is public. The address check runs on the resolved addresses at connect time, inside the HTTP
//! client's DNS resolver ([`GuardedResolver`]), so DNS rebinding cannot slip a private address in after the
//! check; IP-literal hosts (which skip the resolver) are checked on the URL before the request and on every
//! redirect.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::{Config, UnlistedUpstreams};
use crate::error::RegistryError;

/// The upstream policy, built once from the config.
pub struct UpstreamPolicy {
    /// `host[:port]` of every listed registry name and endpoint: always allowed.
    listed: HashSet<String>,
    /// Host names (without port) of listed registries and endpoints: their addresses are not checked.
    trusted_names: Arc<HashSet<String>>,
    unlisted: UnlistedUpstreams,
    patterns: Vec<globset::GlobMatcher>,
}

impl UpstreamPolicy {
    pub fn new(config: &Config) -> anyhow::Result<UpstreamPolicy> {
        let mut listed = HashSet::new();
        let mut trusted_names = HashSet::new();
        let mut add = |host_port: &str| {
            listed.insert(host_port.to_owned());
            trusted_names.insert(host_of(host_port).to_owned());
        };
        add(&config.default_registry);
        if config.default_registry == crate::route::DOCKER_HUB {
            add(crate::config::api_host(crate::route::DOCKER_HUB));
        }
        for registry in &config.registries {
            add(&registry.name);
            add(crate::config::api_host(&registry.name));
            for endpoint in registry.endpoint_urls() {
                let url = reqwest::Url::parse(&endpoint)?;
                if let Some(authority) = authority(&url) {
                    add(&authority);
                }
            }
        }
        // Mirrors are the operator's own choice, like registry endpoints.
        let mirrors = config.mirrors.iter().chain(
            config
                .registries
                .iter()
                .flat_map(|r| r.mirrors.iter().flatten()),
        );
        for mirror in mirrors {
            let url = reqwest::Url::parse(mirror)?;
            if let Some(authority) = authority(&url) {
                add(&authority);
            }
        }
        let patterns = config
            .allowed_upstreams
            .iter()
            .map(|p| crate::config::host_pattern(p))
            .collect::<anyhow::Result<_>>()?;
        Ok(UpstreamPolicy {
            listed,
            trusted_names: Arc::new(trusted_names),
            unlisted: config.unlisted_upstreams,
            patterns,
        })
    }

    /// Whether `host` (`name[:port]`, as a client named it, already normalised) is listed in the config.
    pub fn is_listed(&self, host: &str) -> bool {
        self.listed.contains(host)
    }

    /// Checks a registry a client named, before any traffic. Listed registries pass; unlisted ones need the
    /// policy's consent and, when they are IP literals, a public address (names are checked at connect time).
    pub fn check_registry(&self, host: &str) -> Result<(), RegistryError> {
        if self.is_listed(host) {
            return Ok(());
        }
        let admitted = match self.unlisted {
            UnlistedUpstreams::Public => true,
            UnlistedUpstreams::Deny => self.patterns.iter().any(|p| p.is_match(host)),
        };
        if !admitted {
            return Err(RegistryError::Denied(format!(
                "upstream {host} is not allowed: list it under registries: or match it with allowed_upstreams: \
                 (unlisted_upstreams is deny)"
            )));
        }
        if let Some(ip) = ip_literal(host_of(host)) {
            if !is_public(ip) {
                return Err(refused_address(host));
            }
        }
        Ok(())
    }

    /// Checks a URL the server is about to fetch that did not come from the config (a redirect target, a
    /// token realm): its host must be listed, or be an IP literal with a public address, or a name (checked
    /// at connect time by the resolver).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), RegistryError> {
        let Some(authority) = authority(url) else {
            return Err(RegistryError::Denied(
                "upstream URL without a host refused".into(),
            ));
        };
        if url.port() == Some(0) {
            return Err(refused_address(&authority));
        }
        if self.is_listed(&authority) {
            return Ok(());
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => {
                Err(refused_address(&authority))
            }
            Some(url::Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => {
                Err(refused_address(&authority))
            }
            _ => Ok(()),
        }
    }

    /// The DNS resolver every upstream HTTP client uses.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            trusted_names: self.trusted_names.clone(),
        })
    }
}

fn refused_address(host: &str) -> RegistryError {
    RegistryError::Denied(format!(
        "upstream {host} is not allowed: it is not a public address; list it under registries: to allow it"
    ))
}

/// `host[:port]` of a URL, with the port only when it is not the scheme's default.
pub fn authority(url: &reqwest::Url) -> Option<String> {
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => format!("[{ip}]"),
    };
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// The host part of `host[:port]` (IPv6 literals keep their brackets).
fn host_of(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return host_port
            .split_once(']')
            .map_or(host_port, |(h, _)| &host_port[..h.len() + 1]);
    }
    host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
}

/// The address of an IP-literal host (`127.0.0.1`, `[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether an address may be reached for an unlisted host: a globally routable unicast address. Loopback,
/// private (RFC 1918, ULA), link-local (incl. the cloud metadata address 169.254.169.254), CGNAT, multicast,
/// broadcast, unspecified, documentation, benchmarking and reserved ranges are not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b // NAT64 (embeds IPv4 of any kind)
        || first == 0x2002 // 6to4 (embeds IPv4 of any kind)
        || ip.to_ipv4().is_some()) // IPv4-compatible ::a.b.c.d
}

/// A DNS resolver that refuses non-public addresses for hosts the config does not list.
pub struct GuardedResolver {
    trusted_names: Arc<HashSet<String>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let trusted = self.trusted_names.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !trusted {
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    return Err(Box::new(RefusedAddress {
                        host,
                        addr: bad.ip(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The resolver's refusal: an unlisted host resolved to a non-public address.
#[derive(Debug)]
pub struct RefusedAddress {
    pub host: String,
    pub addr: IpAddr,
}

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "upstream {} resolves to non-public address {}: list it under registries: to allow it",
            self.host, self.addr
        )
    }
}

impl std::error::Error for RefusedAddress {}

/// Finds a [`RefusedAddress`] in an error's source chain (reqwest wraps the resolver's error).
pub fn refused_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedAddress> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_addresses() {
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(ip(public)), "{public}");
        }
        for private in [
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip(private)), "{private}");
        }
    }

    fn policy(yaml: &str) -> UpstreamPolicy {
        UpstreamPolicy::new(&Config::from_yaml(yaml).unwrap()).unwrap()
    }

    #[test]
    fn listed_hosts_pass_unlisted_need_public_addresses() {
        let p = policy("registries: [{name: \"127.0.0.1:5000\", scheme: http}]");
        assert!(p.check_registry("127.0.0.1:5000").is_ok());
        assert!(p.check_registry("docker.io").is_ok());
        assert!(p.check_registry("ghcr.io").is_ok());
        assert!(p.check_registry("127.0.0.1:5001").is_err());
        assert!(p.check_registry("10.1.2.3").is_err());
        assert!(p.check_registry("169.254.169.254").is_err());
        assert!(p.check_registry("1.1.1.1:443").is_ok());
        let denied = p.check_registry("192.168.0.1:80").unwrap_err().to_string();
        assert!(denied.contains("192.168.0.1:80") && denied.contains("registries:"));
    }

    #[test]
    fn deny_mode_and_patterns() {
        let p = policy("unlisted_upstreams: deny\nallowed_upstreams: [\"*.example.com\"]");
        assert!(p.check_registry("docker.io").is_ok());
        assert!(p.check_registry("ghcr.io").is_err());
        assert!(p.check_registry("a.example.com").is_ok());
        assert!(p.check_registry("example.com.evil").is_err());
        let msg = p.check_registry("ghcr.io").unwrap_err().to_string();
        assert!(msg.contains("ghcr.io") && msg.contains("allowed_upstreams"));
    }

    #[test]
    fn urls_from_upstreams_are_checked() {
        let p = policy("registries: [{name: \"127.0.0.1:5000\", scheme: http}]");
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(p.check_url(&url("http://127.0.0.1:5000/v2/")).is_ok());
        assert!(p.check_url(&url("http://127.0.0.2:5000/v2/")).is_err());
        assert!(p
            .check_url(&url("http://169.254.169.254/latest/meta-data/"))
            .is_err());
        assert!(p.check_url(&url("http://[::1]:80/")).is_err());
        assert!(p.check_url(&url("https://cdn.example.com/blob")).is_ok());
        assert!(p.check_url(&url("https://1.1.1.1:0/x")).is_err());
        // The URL parser folds numeric tricks into the address they mean; the check sees that address.
        assert!(p.check_url(&url("http://2130706433/")).is_err());
        assert!(p.check_url(&url("http://0x7f.1/")).is_err());
    }

    #[tokio::test]
    async fn resolver_refuses_private_addresses_of_untrusted_names() {
        let p = policy("registries: [{name: \"localhost:5000\", scheme: http}]");
        let resolver = p.resolver();
        let trusted = resolver.resolve("localhost".parse::<Name>().unwrap()).await;
        assert!(trusted.is_ok());
        let p = policy("");
        let err = match p
            .resolver()
            .resolve("localhost".parse::<Name>().unwrap())
            .await
        {
            Ok(_) => panic!("localhost resolved for an unlisted host"),
            Err(e) => e,
        };
        assert!(refused_in(&*err).is_some(), "{err}");
    }
}
