//! The YAML config loader (`ociregistry::config::Config::from_yaml`): never panics, whatever the text.
//!
//! Invariants of an accepted config: it passes `validate()` again; the default registry and every
//! `registries[].name` are canonical hosts (normalising gives the name itself); names are unique, so
//! `registry(name)` finds that very entry; limits are non-zero; the derived paths and endpoint URLs can be
//! computed. An empty or blank document is the default config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ociregistry::config::Config;
use ociregistry::route::normalize_host;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_yaml(text) else {
        return;
    };
    if let Err(e) = config.validate() {
        panic!("accepted config fails validate(): {e:#}");
    }
    assert!(
        normalize_host(&config.default_registry).is_ok(),
        "default_registry"
    );
    assert!(
        config.hot_cache_bytes > 0
            && config.max_connections > 0
            && config.fill_min_bytes_per_sec > 0
    );
    assert!(!config.upstream_timeout.is_zero() && !config.upstream_connect_timeout.is_zero());
    assert!(!config.header_read_timeout.is_zero());
    assert!(!config.log_level.trim().is_empty());
    for (i, registry) in config.registries.iter().enumerate() {
        assert_eq!(
            normalize_host(&registry.name).as_deref().ok(),
            Some(registry.name.as_str()),
            "registries[{i}].name is not canonical"
        );
        assert!(
            std::ptr::eq(
                config
                    .registry(&registry.name)
                    .expect("listed registry not found"),
                registry
            ),
            "registries[{i}].name {:?} is listed twice",
            registry.name
        );
        let _ = registry.endpoint_urls();
    }
    let _ = (config.db_path(), config.blobs_path());
    // Loading is deterministic.
    let again = Config::from_yaml(text).expect("second load of an accepted config failed");
    assert_eq!(format!("{config:?}"), format!("{again:?}"));
});
