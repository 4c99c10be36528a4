//! Which upstream registry and repository a request is for.
//!
//! In order: containerd's `?ns=<host>` query parameter, an in-path host (`/v2/registry.k8s.io/pause/…`: a first
//! component that is a configured alias, or has a dot, a colon, or is `localhost`), else the configured default
//! registry. Docker Hub's aliases
//! are folded into `docker.io` and its single-component names get `library/`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::credentials::Credentials;
use crate::error::RegistryError;
use crate::reference::validate_repository;

/// Docker Hub as clients name it.
pub const DOCKER_HUB: &str = "docker.io";

/// Port-less in-path names of configured registries (`internal` → `registry.internal:5443`).
pub type Aliases = HashMap<String, Arc<str>>;

/// An upstream registry and a repository in it: the namespace every cache entry belongs to, and the client's
/// credentials when the registry passes them through.
#[derive(Clone, Debug)]
pub struct Target {
    /// Registry host as clients name it (`docker.io`, `127.0.0.1:5000`).
    pub registry: Arc<str>,
    /// Repository within that registry (`library/nginx`).
    pub repository: String,
    /// The client's `Authorization: Basic` credentials, for `auth: passthrough` registries.
    pub credentials: Option<Credentials>,
}

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }
}

impl Eq for Target {}

impl Target {
    /// Resolves the target of a request for path name `name` with optional `ns` query parameter.
    pub fn resolve(
        name: &str,
        ns: Option<&str>,
        default_registry: &Arc<str>,
        aliases: &Aliases,
    ) -> Result<Target, RegistryError> {
        let (registry, repository) = match ns {
            Some(ns) => (normalize_host(ns)?, name),
            None => match name.split_once('/') {
                Some((first, rest)) if aliases.contains_key(first) => {
                    (aliases[first].clone(), rest)
                }
                Some((first, rest)) if looks_like_host(first) => (normalize_host(first)?, rest),
                _ => (default_registry.clone(), name),
            },
        };
        validate_repository(repository)?;
        let repository = if &*registry == DOCKER_HUB && !repository.contains('/') {
            // The prefix can take a name over the length limit: check the name that is used.
            let prefixed = format!("library/{repository}");
            validate_repository(&prefixed)?;
            prefixed
        } else {
            repository.to_owned()
        };
        Ok(Target {
            registry,
            repository,
            credentials: None,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// An image as operators write it on the command line: `alpine`, `docker.io/library/alpine:3.20`,
/// `registry.k8s.io/pause:3.10`, `127.0.0.2/team/app@sha256:…`. The first component is a registry host by the
/// same rule as in request paths; the tag defaults to `latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub target: Target,
    pub reference: crate::reference::Reference,
}

impl ImageRef {
    pub fn parse(
        text: &str,
        default_registry: &Arc<str>,
        aliases: &Aliases,
    ) -> Result<ImageRef, RegistryError> {
        use crate::reference::Reference;
        let text = text.trim();
        let (name, reference) = match text.split_once('@') {
            Some((name, digest)) => (name, Reference::Digest(digest.parse()?)),
            None => match text.rsplit_once(':') {
                // A colon after the last slash starts a tag; before it, it is a registry port.
                Some((name, tag)) if !tag.contains('/') => (name, Reference::parse(tag)?),
                _ => (text, Reference::Tag("latest".into())),
            },
        };
        // `name:tag@digest`: the digest decides, the tag is informative only.
        let name = match (&reference, name.rsplit_once(':')) {
            (Reference::Digest(_), Some((n, tag))) if !tag.contains('/') => n,
            _ => name,
        };
        if name.is_empty() {
            return Err(RegistryError::NameInvalid(format!(
                "{text:?} names no repository"
            )));
        }
        Ok(ImageRef {
            target: Target::resolve(name, None, default_registry, aliases)?,
            reference,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            crate::reference::Reference::Tag(tag) => write!(f, "{}:{tag}", self.target),
            crate::reference::Reference::Digest(d) => write!(f, "{}@{d}", self.target),
        }
    }
}

/// Whether a first path component names a registry host rather than a repository component.
fn looks_like_host(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

/// Validates `host[:port]`, lower-cases it and folds Docker Hub aliases.
pub fn normalize_host(host: &str) -> Result<Arc<str>, RegistryError> {
    let invalid = || RegistryError::NameInvalid(format!("invalid registry host {host:?}"));
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    // A port is written canonically (no leading zeros) and is not 0: `:00080` and `:0` are refused, so one
    // upstream has one spelling and no request can name port 0.
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && !p.starts_with('0')
            && p.len() <= 5
            && p.parse::<u16>().is_ok()
    });
    // A host made only of digits, dots and hex is either a dotted-quad IPv4 literal in canonical form or
    // nothing: `2130706433`, `0x7f.1`, `127.1` or `0177.0.0.1` all mean 127.0.0.1 to some resolver and would
    // slip past a name-based allow-list.
    let numeric_ok = !looks_numeric(name) || is_canonical_ipv4(name);
    if !name_ok || !port_ok || !numeric_ok {
        return Err(invalid());
    }
    let host = host.to_ascii_lowercase();
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => Arc::from(DOCKER_HUB),
        _ => Arc::from(host),
    })
}

/// Whether a host name could be read as a number by some address parser (all labels digits, or `0x` hex).
fn looks_numeric(name: &str) -> bool {
    name.split('.').all(|label| {
        label.bytes().all(|b| b.is_ascii_digit())
            || label
                .strip_prefix("0x")
                .or_else(|| label.strip_prefix("0X"))
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// `a.b.c.d` with four decimal octets without leading zeros.
fn is_canonical_ipv4(name: &str) -> bool {
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.to_string() == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_refs() {
        let d: std::sync::Arc<str> = "docker.io".into();
        let a = Aliases::new();
        let p = |t: &str| ImageRef::parse(t, &d, &a).map(|r| r.to_string());
        assert_eq!(p("alpine").unwrap(), "docker.io/library/alpine:latest");
        assert_eq!(
            p("docker.io/library/alpine:3.20").unwrap(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(
            p("127.0.0.1:5000/team/app").unwrap(),
            "127.0.0.1:5000/team/app:latest"
        );
        assert_eq!(
            p("registry.k8s.io/pause:3.10").unwrap(),
            "registry.k8s.io/pause:3.10"
        );
        let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        assert_eq!(
            p(&format!("a/b:v1@{digest}")).unwrap(),
            format!("docker.io/a/b@{digest}")
        );
        assert!(p("UPPER/case").is_err());
        assert!(p("alpine:bad tag").is_err());
        assert!(p("alpine@sha256:xyz").is_err());
        assert!(p("").is_err());
    }

    use super::*;

    fn resolve(name: &str, ns: Option<&str>) -> Result<(String, String), RegistryError> {
        let aliases =
            Aliases::from([("internal".to_string(), Arc::from("registry.internal:5443"))]);
        Target::resolve(name, ns, &Arc::from("docker.io"), &aliases)
            .map(|t| (t.registry.to_string(), t.repository))
    }

    #[test]
    fn routing_order() {
        let t = |a: &str, b: &str| Ok::<_, RegistryError>((a.to_string(), b.to_string()));
        assert_eq!(
            resolve("pause", Some("registry.k8s.io")).unwrap(),
            t("registry.k8s.io", "pause").unwrap()
        );
        assert_eq!(
            resolve("library/nginx", Some("docker.io")).unwrap(),
            t("docker.io", "library/nginx").unwrap()
        );
        assert_eq!(
            resolve("registry.k8s.io/pause", None).unwrap(),
            t("registry.k8s.io", "pause").unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1:5000/a/b/c", None).unwrap(),
            t("127.0.0.1:5000", "a/b/c").unwrap()
        );
        assert_eq!(
            resolve("localhost/app", None).unwrap(),
            t("localhost", "app").unwrap()
        );
        assert_eq!(
            resolve("nginx", None).unwrap(),
            t("docker.io", "library/nginx").unwrap()
        );
        assert_eq!(
            resolve("docker.io/nginx", None).unwrap(),
            t("docker.io", "library/nginx").unwrap()
        );
        assert_eq!(
            resolve("index.docker.io/x/y", None).unwrap(),
            t("docker.io", "x/y").unwrap()
        );
        assert_eq!(
            resolve("team/app", None).unwrap(),
            t("docker.io", "team/app").unwrap()
        );
    }

    #[test]
    fn rejects_bad_hosts_and_names() {
        assert!(resolve("x", Some("evil/host")).is_err());
        assert!(resolve("x", Some("host:99999")).is_err());
        assert!(resolve("x", Some("")).is_err());
        assert!(resolve("registry.k8s.io/../x", None).is_err());
        assert!(resolve("Upper", None).is_err());
        for trick in [
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "127.1",
            "0177.0.0.1",
            "127.000.000.001",
            "127.0.0.1:00000",
            "127.0.0.1:0",
            "127.0.0.1:05000",
            "127.0.0.1:+0",
            "127.0.0.1:+80",
        ] {
            assert!(resolve("x", Some(trick)).is_err(), "{trick}");
            if trick.contains(['.', ':']) {
                assert!(
                    resolve(&format!("{trick}/x"), None).is_err(),
                    "{trick} in path"
                );
            } else {
                // Not a host in the path at all: a Docker Hub repository component.
                assert_eq!(resolve(&format!("{trick}/x"), None).unwrap().0, "docker.io");
            }
        }
        assert!(resolve("x", Some("127.0.0.1:5000")).is_ok());
        assert!(resolve("x", Some("10.0.0.1")).is_ok());
    }

    #[test]
    fn docker_hub_names_stay_within_the_length_limit_after_the_prefix() {
        // Found by fuzzing: 250 characters are valid, `library/` + 250 are not.
        let long = "a".repeat(250);
        assert!(resolve(&long, None).is_err());
        assert!(resolve(&format!("team/{}", "a".repeat(240)), None).is_ok());
    }

    #[test]
    fn aliases_route_in_path() {
        assert_eq!(
            resolve("internal/team/app", None).unwrap(),
            ("registry.internal:5443".to_string(), "team/app".to_string())
        );
        // Only as the first component, and never with ns.
        assert_eq!(
            resolve("team/internal", None).unwrap(),
            ("docker.io".to_string(), "team/internal".to_string())
        );
        assert_eq!(
            resolve("internal/app", Some("quay.io")).unwrap(),
            ("quay.io".to_string(), "internal/app".to_string())
        );
    }
}
