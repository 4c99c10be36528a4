//! The config loader and schema/config.schema.json agree.
//!
//! * Every file in tests/contract/config-cases/invalid/ is rejected by `Config::from_yaml` with a message that
//!   names the offending key (the file's first line says which: `# error: registries[1].name`), and every file
//!   in valid/ is accepted. tests/contract/check_config_schema.py gives the schema's verdict on the same files.
//! * The schema lists exactly the keys and enum values the loader knows (read from serde's own "expected one
//!   of" messages, so a field added to `Config` without a schema entry fails here), with the same defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ociregistry::config::Config;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = repo().join("tests/contract/config-cases").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "too few cases in {}", dir.display());
    files
}

fn schema() -> Value {
    let path = repo().join("schema/config.schema.json");
    let text = std::fs::read_to_string(&path).expect("reading schema/config.schema.json");
    serde_json::from_str(&text).expect("schema/config.schema.json is JSON")
}

#[test]
fn invalid_cases_are_rejected_naming_the_key() {
    let mut problems = Vec::new();
    for file in cases("invalid") {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let Some(key) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error: "))
            .map(str::trim)
        else {
            problems.push(format!("{name}: first line must be `# error: KEY`"));
            continue;
        };
        match Config::from_yaml(&text) {
            Ok(_) => problems.push(format!("{name}: accepted, expected an error about {key}")),
            Err(err) => {
                let message = format!("{err:#}");
                eprintln!("{name}: {message}");
                if !message.contains(key) {
                    problems.push(format!("{name}: error does not name {key}: {message}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn valid_cases_are_accepted() {
    let mut problems = Vec::new();
    for file in cases("valid") {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(err) = Config::from_yaml(&text) {
            problems.push(format!("{}: {err:#}", file.display()));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The back-quoted names after "expected" in a serde error (`unknown field `x`, expected one of `a`, `b``).
fn expected_names(yaml: &str) -> BTreeSet<String> {
    let message = format!("{:#}", Config::from_yaml(yaml).expect_err(yaml));
    let after = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("no 'expected' in {message}"))
        .1;
    after
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

fn strings(array: &Value) -> BTreeSet<String> {
    array
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn schema_lists_exactly_the_loaders_keys_and_values() {
    let schema = schema();
    let properties = &schema["properties"];
    assert_eq!(
        keys(properties),
        expected_names("zz_not_a_key: 1"),
        "top-level keys of schema/config.schema.json vs the loader's"
    );
    let registry = &schema["$defs"]["registry"]["properties"];
    assert_eq!(
        keys(registry),
        expected_names("registries: [{name: a, zz_not_a_key: 1}]"),
        "registries[] keys"
    );
    assert_eq!(
        strings(&registry["scheme"]["enum"]),
        expected_names("registries: [{name: a, scheme: zz}]"),
        "registries[].scheme values"
    );
    assert_eq!(
        strings(&properties["blob_io"]["enum"]),
        expected_names("blob_io: zz"),
        "blob_io values"
    );
    assert_eq!(
        strings(&properties["unlisted_upstreams"]["enum"]),
        expected_names("unlisted_upstreams: zz"),
        "unlisted_upstreams values"
    );
    assert_eq!(
        keys(&schema["$defs"]["tls"]["properties"]),
        expected_names("registries: [{name: a, tls: {zz_not_a_key: 1}}]"),
        "registries[].tls keys"
    );
    assert_eq!(
        keys(&schema["$defs"]["s3"]["properties"]),
        expected_names("s3: {endpoint: http://a, bucket: abc, zz_not_a_key: 1}"),
        "s3 keys"
    );
    for object in [
        &schema,
        &schema["$defs"]["s3"],
        &schema["$defs"]["registry"],
        &schema["$defs"]["tls"],
        &schema["$defs"]["basicAuth"],
    ] {
        assert_eq!(object["additionalProperties"], Value::Bool(false));
    }
}

#[test]
fn schema_defaults_are_the_loaders_defaults() {
    let schema = schema();
    let properties = schema["properties"].as_object().unwrap();
    let defaults = Config::default();
    let mut yaml = String::new();
    for (key, property) in properties {
        let default = &property["default"];
        match default {
            Value::Null => assert!(
                matches!(
                    key.as_str(),
                    "db" | "blobs"
                        | "server_tls"
                        | "admin_socket"
                        | "admin_listen"
                        | "admin_token_file"
                        | "prune_older_than"
                        | "max_cache_bytes"
                        | "metrics"
                        | "metrics_client_networks"
                        | "otlp_endpoint"
                        | "s3"
                ),
                "{key} has no default in the schema"
            ),
            Value::String(s) => yaml.push_str(&format!("{key}: \"{s}\"\n")),
            other => yaml.push_str(&format!("{key}: {other}\n")),
        }
    }
    // Every default written out as a config file must give exactly Config::default().
    let from_schema = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
    assert_eq!(
        format!("{from_schema:?}"),
        format!("{defaults:?}"),
        "defaults in schema/config.schema.json:\n{yaml}"
    );
}

#[test]
fn s3_defaults_are_the_loaders_defaults() {
    let schema = schema();
    let s3 = &schema["$defs"]["s3"];
    let required = strings(&s3["required"]);
    let mut yaml = String::from("s3:\n  endpoint: http://a\n  bucket: abc\n");
    for (key, property) in s3["properties"].as_object().unwrap() {
        if required.contains(key) {
            continue;
        }
        match &property["default"] {
            Value::Null => assert!(
                property.as_object().unwrap().contains_key("default"),
                "s3.{key} has no default in the schema"
            ),
            Value::String(s) => yaml.push_str(&format!("  {key}: \"{s}\"\n")),
            other => yaml.push_str(&format!("  {key}: {other}\n")),
        }
    }
    let minimal = Config::from_yaml("s3: {endpoint: http://a, bucket: abc}").unwrap();
    let from_schema = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
    assert_eq!(
        format!("{:?}", from_schema.s3),
        format!("{:?}", minimal.s3),
        "defaults of s3 in schema/config.schema.json:\n{yaml}"
    );
}
