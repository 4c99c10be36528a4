//! Route resolution (`ociregistry::route::Target::resolve`: `?ns=`, in-path host, alias, default registry)
//! and `normalize_host`.
//!
//! Input: `name` or `name\0ns` (UTF-8).
//!
//! Invariants of `normalize_host`: an accepted host is lower-case ASCII `[a-z0-9.-]` with an optional
//! canonical port (1..=65535, no leading zero), has no empty or `-`-edged label, is never a Docker Hub
//! alias spelling, normalising it again gives itself, and a host that any resolver could read as a number
//! (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`) is accepted only as a canonical dotted quad.
//! Invariants of `resolve`: the registry is a normalised host (or the alias/default it was given), the
//! repository is a valid name, Docker Hub repositories always have a namespace (`library/…`), `?ns=` wins
//! over the path, and an alias or host component is stripped from the repository.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ociregistry::reference::validate_repository;
use ociregistry::route::{normalize_host, Aliases, Target, DOCKER_HUB};

/// Same meaning as the server's private `looks_numeric`, written independently.
fn could_be_number(name: &str) -> bool {
    name.split('.').all(|label| {
        let hex = label
            .strip_prefix("0x")
            .or_else(|| label.strip_prefix("0X"));
        match hex {
            Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
            None => label.bytes().all(|b| b.is_ascii_digit()),
        }
    })
}

fn check_host(input: &str) {
    let Ok(host) = normalize_host(input) else {
        return;
    };
    let host: &str = &host;
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        let value: u16 = port
            .parse()
            .unwrap_or_else(|_| panic!("{input:?} normalised to {host:?}: port not a u16"));
        assert!(
            value != 0 && value.to_string() == port,
            "{input:?} normalised to {host:?}: port {port:?} is 0 or not canonical"
        );
    }
    assert!(
        host.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b)),
        "{input:?} normalised to {host:?}: not lower-case [a-z0-9.-:]"
    );
    assert_eq!(
        normalize_host(host).as_deref().ok(),
        Some(host),
        "normalising {host:?} (from {input:?}) again changes it"
    );
    assert!(
        host != "index.docker.io" && host != "registry-1.docker.io",
        "Docker Hub alias not folded: {host:?}"
    );
    assert!(
        host == DOCKER_HUB || host == input.to_ascii_lowercase(),
        "{input:?} normalised to {host:?}"
    );
    assert!(!name.contains(':'), "{host:?}: more than one ':'");
    assert!(
        !name.is_empty() && name.len() <= 253,
        "{host:?}: name length"
    );
    for label in name.split('.') {
        assert!(
            !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'),
            "{host:?}: bad label {label:?}"
        );
    }
    if could_be_number(name) {
        let ip: std::net::Ipv4Addr = name.parse().unwrap_or_else(|_| {
            panic!("numeric host {host:?} (from {input:?}) is not an IPv4 address")
        });
        assert_eq!(
            ip.to_string(),
            name,
            "numeric host {host:?} is not a canonical dotted quad"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, ns) = match text.split_once('\0') {
        Some((name, ns)) => (name, Some(ns)),
        None => (text, None),
    };
    check_host(name);
    if let Some(ns) = ns {
        check_host(ns);
    }
    if let Some((first, _)) = name.split_once('/') {
        check_host(first);
    }

    let default_registry: Arc<str> = Arc::from(DOCKER_HUB);
    let alias_target: Arc<str> = Arc::from("registry.internal:5443");
    let aliases = Aliases::from([
        ("internal".to_string(), alias_target.clone()),
        ("mirror".to_string(), Arc::from("127.0.0.1:5000")),
    ]);
    let Ok(target) = Target::resolve(name, ns, &default_registry, &aliases) else {
        return;
    };
    let registry: &str = &target.registry;
    assert!(
        validate_repository(&target.repository).is_ok(),
        "resolved repository {:?} is invalid",
        target.repository
    );
    assert_eq!(
        normalize_host(registry).as_deref().ok(),
        Some(registry),
        "resolved registry {registry:?} is not a normalised host"
    );
    if registry == DOCKER_HUB {
        assert!(
            target.repository.contains('/'),
            "Docker Hub repository without namespace: {target}"
        );
    }
    assert!(target.credentials.is_none());
    assert_eq!(
        target.to_string(),
        format!("{}/{}", target.registry, target.repository)
    );
    // Where the repository came from: the whole name, or the name minus its first component.
    let stripped = name.split_once('/').map(|(_, rest)| rest);
    let from_name = |repo: &str| {
        repo == name
            || Some(repo) == stripped
            || (registry == DOCKER_HUB
                && (repo == format!("library/{name}")
                    || stripped.is_some_and(|s| repo == format!("library/{s}"))))
    };
    assert!(
        from_name(&target.repository),
        "repository {:?} not derived from {name:?}",
        target.repository
    );
    match ns {
        Some(ns) => {
            assert_eq!(
                normalize_host(ns).as_deref().ok(),
                Some(registry),
                "`ns` {ns:?} not used"
            );
            let expected = if registry == DOCKER_HUB && !name.contains('/') {
                format!("library/{name}")
            } else {
                name.to_string()
            };
            assert_eq!(
                target.repository, expected,
                "with `ns` the path is the whole repository"
            );
        }
        None => {
            if let Some((first, rest)) = name.split_once('/') {
                if let Some(alias) = aliases.get(first) {
                    assert_eq!(registry, &**alias, "alias {first:?} not used");
                    assert_eq!(target.repository, rest);
                }
            } else {
                assert_eq!(
                    registry, DOCKER_HUB,
                    "single-component name {name:?} not on the default"
                );
            }
        }
    }
});
