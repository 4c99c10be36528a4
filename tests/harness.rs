//! Self-tests of the test harness (no ociregistry involved): the [`TestUpstream`] bearer-token
//! challenge and counters, its fault injection, that stopping it really closes keep-alive
//! connections, and the `listening on` line parser of the [`Server`] harness.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn token(client: &reqwest::Client, upstream: &TestUpstream, repo: &str) -> String {
    let url = format!(
        "http://{}/token?service={UPSTREAM_SERVICE}&scope=repository:{repo}:pull",
        upstream.host()
    );
    let resp = get(client, &url).await;
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["expires_in"], 300);
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_challenges_issues_tokens_and_counts() {
    bounded(async {
        let upstream = TestUpstream::start().await;
        let image = ImageBuilder::oci().small().build();
        upstream.push_image(REPO, "v1", &image);
        let client = client();
        let url = format!("http://{}/v2/{REPO}/manifests/v1", upstream.host());

        let resp = get(&client, &url).await;
        assert_error(&resp, 401, "UNAUTHORIZED", "anonymous GET");
        assert_eq!(
            resp.header("www-authenticate"),
            Some(format!(
                "Bearer realm=\"http://{}/token\",service=\"test-upstream\",scope=\"repository:{REPO}:pull\"",
                upstream.host()
            ))
        );

        let tok = token(&client, &upstream, REPO).await;
        let resp = send(client.get(&url).bearer_auth(&tok), "GET with token").await;
        assert_manifest_response(&resp, &image.index, false, "GET with token");

        // A token for another repository does not open this one.
        let other = token(&client, &upstream, "team/other").await;
        let resp = send(client.get(&url).bearer_auth(&other), "GET wrong scope").await;
        assert_eq!(resp.status, 401);

        assert_eq!(upstream.manifest_gets(REPO, "v1"), 1);
        assert_eq!(upstream.unauthorized(), 2);
        assert_eq!(upstream.token_fetches(), 2);

        let blob_url = format!("http://{}/v2/{REPO}/blobs/", upstream.host());
        let missing = sha256_digest(b"missing");
        let resp = send(
            client.get(format!("{blob_url}{missing}")).bearer_auth(&tok),
            "GET missing blob",
        )
        .await;
        assert_error(&resp, 404, "BLOB_UNKNOWN", "missing blob");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_fault_injection() {
    bounded(async {
        let upstream = TestUpstream::start().await;
        let image = ImageBuilder::oci().small().build();
        upstream.push_image(REPO, "v1", &image);
        let client = client();
        let tok = token(&client, &upstream, REPO).await;
        let blob = &image.children[0].layers[0];
        let blob_url = format!("http://{}/v2/{REPO}/blobs/{}", upstream.host(), blob.digest);

        upstream.set_blob_corrupt(&blob.digest, true);
        let resp = send(client.get(&blob_url).bearer_auth(&tok), "corrupt").await;
        assert_eq!(resp.body.len(), blob.data.len());
        assert_ne!(resp.body, blob.data);
        assert_ne!(sha256_digest(&resp.body), blob.digest);
        upstream.set_blob_corrupt(&blob.digest, false);

        upstream.set_blob_slow(&blob.digest, Some(Slow::new(10_000, 100)));
        let start = Instant::now();
        let resp = send(client.get(&blob_url).bearer_auth(&tok), "slow").await;
        assert_eq!(resp.body, blob.data);
        assert!(start.elapsed() >= Duration::from_millis(300), "not slow");

        let child = &image.children[0].manifest;
        upstream.set_manifest_corrupt(&child.digest, true);
        let url = format!(
            "http://{}/v2/{REPO}/manifests/{}",
            upstream.host(),
            child.digest
        );
        let resp = send(client.get(&url).bearer_auth(&tok), "corrupt manifest").await;
        assert_ne!(sha256_digest(&resp.body), child.digest);
        assert_eq!(upstream.blob_gets(REPO, &blob.digest), 2);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_stop_closes_listener_and_keepalive_connections() {
    bounded(async {
        let upstream = TestUpstream::start().await;
        let client = client();
        let tok = token(&client, &upstream, REPO).await;
        let url = format!("http://{}/v2/", upstream.host());
        let resp = send(client.get(&url).bearer_auth(&tok), "GET /v2/").await;
        assert_eq!(resp.status, 200);

        upstream.stop().await;
        // The same client (with a pooled keep-alive connection) cannot reach it any more.
        let err = client.get(&url).bearer_auth(&tok).send().await;
        assert!(err.is_err(), "stopped upstream still answered: {err:?}");
        assert!(tokio::net::TcpStream::connect(upstream.addr())
            .await
            .is_err());
    })
    .await
}

#[test]
fn listening_line_parser() {
    let line =
        "2026-01-01T00:00:00Z  INFO ociregistry::server: listening on http://127.0.0.1:39971";
    assert_eq!(
        parse_listening(line),
        Some("127.0.0.1:39971".parse().unwrap())
    );
    let colored = "\u{1b}[32m INFO\u{1b}[0m listening on http://127.0.0.1:8080 addr=x";
    assert_eq!(
        parse_listening(&strip_ansi(colored)),
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(parse_listening("starting"), None);
    let yaml = ServerConfig::for_hosts(&["127.0.0.1:5000".to_string()])
        .tag_ttl("1s")
        .to_yaml();
    assert!(yaml.contains("tag_ttl: 1s\n"));
    assert!(yaml.contains("  - name: \"127.0.0.1:5000\"\n    scheme: http\n"));
}
