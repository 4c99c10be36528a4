//! Which upstream registry and repository a request is for.
//!
//! In order: containerd's `?ns=<host>` query parameter, an in-path host (`/v2/registry.k8s.io/pause/…`: a first
//! component with a dot, a colon, or `localhost`), else the configured default registry. Docker Hub's aliases
//! are folded into `docker.io` and its single-component names get `library/`.

use std::fmt;
use std::sync::Arc;

use crate::error::RegistryError;
use crate::reference::validate_repository;

/// Docker Hub as clients name it.
pub const DOCKER_HUB: &str = "docker.io";

/// An upstream registry and a repository in it: the namespace every cache entry belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Registry host as clients name it (`docker.io`, `127.0.0.1:5000`).
    pub registry: Arc<str>,
    /// Repository within that registry (`library/nginx`).
    pub repository: String,
}

impl Target {
    /// Resolves the target of a request for path name `name` with optional `ns` query parameter.
    pub fn resolve(
        name: &str,
        ns: Option<&str>,
        default_registry: &Arc<str>,
    ) -> Result<Target, RegistryError> {
        let (registry, repository) = match ns {
            Some(ns) => (normalize_host(ns)?, name),
            None => match name.split_once('/') {
                Some((first, rest)) if looks_like_host(first) => (normalize_host(first)?, rest),
                _ => (default_registry.clone(), name),
            },
        };
        validate_repository(repository)?;
        let repository = if &*registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        Ok(Target {
            registry,
            repository,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
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
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    if !name_ok || !port_ok {
        return Err(invalid());
    }
    let host = host.to_ascii_lowercase();
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => Arc::from(DOCKER_HUB),
        _ => Arc::from(host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(name: &str, ns: Option<&str>) -> Result<(String, String), RegistryError> {
        Target::resolve(name, ns, &Arc::from("docker.io"))
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
    }
}
