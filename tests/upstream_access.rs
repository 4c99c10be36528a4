//! Upstream access and trust, through the real binary over sockets: the upstream policy (no open proxy:
//! unlisted loopback hosts, redirects and token realms that point at refused addresses), endpoint mirrors,
//! air-gapped mode, negative caching of unknown tags, immutable tags, per-registry fills and the fill deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A second upstream that must never be reached: it counts whatever arrives.
async fn bystander() -> TestUpstream {
    TestUpstream::start_with(UpstreamOptions {
        auth: false,
        ..UpstreamOptions::default()
    })
    .await
}

fn error_message(resp: &Resp) -> String {
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlisted_loopback_upstream_is_refused_before_any_traffic() {
    bounded(async {
        // The upstream runs on 127.0.0.1 but is not listed: with the default policy only public addresses
        // may be reached for unlisted hosts.
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.http_registries.clear();
            c
        })
        .await;
        let image = ImageBuilder::oci().small().seed(101).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let host = fx.upstream.host();
        let blob = &image.children[0].layers[0];
        for url in [
            format!("{}/v2/{host}/{REPO}/manifests/v1", fx.server.base_url()),
            format!("{}/v2/{REPO}/manifests/v1?ns={host}", fx.server.base_url()),
            format!(
                "{}/v2/{host}/{REPO}/blobs/{}",
                fx.server.base_url(),
                blob.digest
            ),
        ] {
            let resp = get(&fx.client, &url).await;
            assert_error(&resp, 403, "DENIED", &url);
            let message = error_message(&resp);
            assert!(
                message.contains(&host) && message.contains("registries:"),
                "the refusal must name the host and the key that allows it: {message}"
            );
        }
        // Numeric spellings of loopback and port 0 are not even routed.
        for ns in [
            "2130706433",
            "0x7f.1",
            "127.1",
            "127.0.0.1:00000",
            "127.0.0.1:0",
        ] {
            let url = format!("{}/v2/{REPO}/manifests/v1?ns={ns}", fx.server.base_url());
            let resp = get(&fx.client, &url).await;
            assert_error(&resp, 400, "NAME_INVALID", &url);
        }
        assert_eq!(
            fx.upstream.request_log(),
            Vec::<String>::new(),
            "a refused upstream was contacted"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_to_refused_addresses_are_not_followed() {
    bounded(async {
        let fx = Fixture::new().await;
        let other = bystander().await;
        let image = ImageBuilder::oci().small().seed(102).build();
        fx.upstream.push_image(REPO, "v1", &image);
        other.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        let layers = &image.children[0].layers;
        let cases = [
            // Another loopback port that is not listed.
            format!(
                "http://{}/v2/{REPO}/blobs/{}",
                other.host(),
                layers[0].digest
            ),
            // The cloud metadata service.
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_string(),
        ];
        for (blob, location) in layers.iter().zip(cases) {
            fx.upstream.set_redirect(&blob.digest, Some(&location));
            let started = Instant::now();
            let resp = get(&fx.client, &target.blob_url(&blob.digest)).await;
            assert_error(
                &resp,
                502,
                "UNAVAILABLE",
                &format!("redirect to {location}"),
            );
            assert!(
                !resp.text().contains("169.254") && !resp.text().contains(&other.host()),
                "redirect detail leaked: {}",
                resp.text()
            );
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "refusal took {:?}",
                started.elapsed()
            );
            assert!(
                fx.server
                    .wait_for_log(|l| l.contains("redirect") && l.contains("refused"))
                    .await,
                "the log must say why"
            );
        }
        assert_eq!(
            other.request_log(),
            Vec::<String>::new(),
            "the redirect target was contacted"
        );
        // Nothing was cached: once the upstream stops redirecting, the real blob is served.
        fx.upstream.set_redirect(&layers[0].digest, None);
        check_blob(&fx.client, &target, &layers[0]).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_realm_on_an_unlisted_host_is_refused() {
    bounded(async {
        let realm_host = bystander().await;
        let opts = UpstreamOptions {
            realm: Some(format!("http://{}/token", realm_host.host())),
            ..UpstreamOptions::default()
        };
        let fx = Fixture::with(opts, |c| c).await;
        let image = ImageBuilder::oci().small().seed(103).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let resp = get_manifest(&fx.client, &fx.in_path(REPO).manifest_url("v1")).await;
        assert_error(&resp, 502, "UNAVAILABLE", "realm on an unlisted host");
        let message = error_message(&resp);
        assert!(
            message.contains("request id")
                && !message.contains("token")
                && !message.contains(&realm_host.host()),
            "{message}"
        );
        assert_eq!(
            realm_host.request_log(),
            Vec::<String>::new(),
            "the realm was contacted"
        );
        assert_eq!(realm_host.token_fetches(), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deny_mode_refuses_every_unlisted_host() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.extra_yaml =
                "unlisted_upstreams: deny\nallowed_upstreams: [\"*.example.com\"]\n".into();
            c
        })
        .await;
        let image = ImageBuilder::oci().small().seed(104).build();
        fx.upstream.push_image(REPO, "v1", &image);
        // The listed upstream still works.
        check_manifest(&fx.client, &fx.in_path(REPO), "v1", &image.index).await;
        let url = format!("{}/v2/ghcr.io/x/y/manifests/v1", fx.server.base_url());
        let resp = get(&fx.client, &url).await;
        assert_error(&resp, 403, "DENIED", &url);
        assert!(error_message(&resp).contains("allowed_upstreams"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_mirrors_fail_over_in_order() {
    bounded(async {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let fx = Fixture::new().await;
        // A logical registry `mirror.test` fetched from a dead endpoint first, then the real upstream.
        let yaml = format!(
            "registries:\n  - name: mirror.test\n    scheme: http\n    endpoints: [\"http://{dead}\", \"http://{}\"]\n",
            fx.upstream.host()
        );
        std::fs::write(fx.tmp.path().join("config.yaml"), &yaml).unwrap();
        let mut server = fx.server;
        server.stop().await;
        server.restart().await;
        let image = ImageBuilder::oci().small().seed(105).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = Target::ns(&server, "mirror.test", REPO);
        pull_image(&fx.client, &target, "v1", &image).await;
        assert!(
            server.wait_for_log(|l| l.contains("trying the next")).await,
            "the dead endpoint was not tried first"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn air_gapped_serves_the_cache_and_answers_misses_at_once() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |c| c.tag_ttl("1s")).await;
        let image = ImageBuilder::oci().small().seed(106).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        pull_image(&fx.client, &target, "v1", &image).await;
        fx.upstream.stop().await;
        let mut server = fx.server;
        server.stop().await;
        let config = std::fs::read_to_string(fx.tmp.path().join("config.yaml")).unwrap();
        std::fs::write(
            fx.tmp.path().join("config.yaml"),
            format!("{config}air_gapped: true\n"),
        )
        .unwrap();
        server.restart().await;
        assert!(server.wait_for_log(|l| l.contains("air-gapped")).await);
        // Past the tag TTL: still served, nobody asked.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        pull_image(&fx.client, &target.via(&server), "v1", &image).await;
        let started = Instant::now();
        let resp = get_manifest(
            &fx.client,
            &target.via(&server).manifest_url("never-cached"),
        )
        .await;
        assert_error(&resp, 404, "MANIFEST_UNKNOWN", "air-gapped miss");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let resp = get(&fx.client, &target.via(&server).blob_url(&digest)).await;
        assert_error(&resp, 404, "BLOB_UNKNOWN", "air-gapped blob miss");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "misses took {:?}",
            started.elapsed()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_tags_are_remembered_for_negative_ttl() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(107).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let url = fx.in_path(REPO).manifest_url("nope");
        for _ in 0..3 {
            let resp = get_manifest(&fx.client, &url).await;
            assert_error(&resp, 404, "MANIFEST_UNKNOWN", "unknown tag");
        }
        assert_eq!(
            fx.upstream.manifest_gets(REPO, "nope"),
            1,
            "404s must be remembered"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immutable_tags_are_never_revalidated() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.http_registries.clear();
            c.tag_ttl = Some("1s".into());
            c
        })
        .await;
        let yaml = format!(
            "tag_ttl: 1s\nregistries:\n  - name: \"{}\"\n    scheme: http\n    immutable_tags: [\"v*.*.*\"]\n",
            fx.upstream.host()
        );
        std::fs::write(fx.tmp.path().join("config.yaml"), &yaml).unwrap();
        let mut server = fx.server;
        server.stop().await;
        server.restart().await;
        let image = ImageBuilder::oci().small().seed(108).build();
        fx.upstream.push_image(REPO, "v1.2.3", &image);
        fx.upstream.push_image(REPO, "latest", &image);
        let target = Target::in_path(&server, &fx.upstream.host(), REPO);
        check_manifest(&fx.client, &target, "v1.2.3", &image.index).await;
        check_manifest(&fx.client, &target, "latest", &image.index).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        check_manifest(&fx.client, &target, "v1.2.3", &image.index).await;
        check_manifest(&fx.client, &target, "latest", &image.index).await;
        // `latest` is revalidated (one HEAD, in the background); `v1.2.3` never.
        let mut revalidated = false;
        for _ in 0..100 {
            if fx.upstream.manifest_heads(REPO, "latest") >= 1 {
                revalidated = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(revalidated, "latest was not revalidated");
        assert_eq!(fx.upstream.manifest_requests(REPO, "v1.2.3"), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_registry_does_not_hold_another_registrys_fill() {
    bounded(async {
        let fast = TestUpstream::start().await;
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.http_registries.push(fast.host());
            c
        })
        .await;
        let image = ImageBuilder::oci().small().seed(109).build();
        fx.upstream.push_image(REPO, "v1", &image);
        fast.push_image(REPO, "v1", &image);
        let blob = &image.children[0].layers[1];
        // The first registry trickles the blob out; a client of the second must not wait for it.
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(64, 200)));
        let slow_url = fx.in_path(REPO).blob_url(&blob.digest);
        let client = fx.client.clone();
        let slow = tokio::spawn(async move { get(&client, &slow_url).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let fast_target = Target::in_path(&fx.server, &fast.host(), REPO);
        let resp = get(&fx.client, &fast_target.blob_url(&blob.digest)).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, blob.data);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(fast.blob_gets(REPO, &blob.digest), 1);
        slow.abort();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickling_fill_is_abandoned_and_nothing_is_cached() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.extra_yaml = "upstream_timeout: 1s\nfill_min_bytes_per_sec: 1000000\n".into();
            c
        })
        .await;
        let image = ImageBuilder::oci()
            .layer_sizes(&[1024, 64 * 1024])
            .seed(110)
            .build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.largest_blob();
        // 256 bytes every 100 ms (under the 1 s per-read timeout, far under the minimum throughput).
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(256, 100)));
        let target = fx.in_path(REPO);
        let started = Instant::now();
        let streamed = get_streamed(&fx.client, &target.blob_url(&blob.digest)).await;
        assert!(
            !streamed.complete || streamed.status != 200 || streamed.body != blob.data,
            "a trickling blob must not be delivered whole"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(fx.server.wait_for_log(|l| l.contains("slower than")).await);
        assert!(
            !blob_path(&fx.server.data_dir(), &blob.digest).exists(),
            "an abandoned fill was stored"
        );
    })
    .await
}

fn credentialed_upstream() -> UpstreamOptions {
    UpstreamOptions {
        token_credentials: Some(("alice".into(), "s3cret-pw".into())),
        ..UpstreamOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_credentials_are_used_at_the_token_endpoint_and_never_logged() {
    bounded(async {
        let fx = Fixture::with(credentialed_upstream(), |mut c| {
            c.http_registries.clear();
            c
        })
        .await;
        let password_file = fx.tmp.path().join("password");
        std::fs::write(&password_file, "s3cret-pw\n").unwrap();
        let registry = |auth: &str| {
            format!(
                "registries:\n  - name: \"{}\"\n    scheme: http\n    auth: {auth}\n",
                fx.upstream.host()
            )
        };
        let image = ImageBuilder::oci().small().seed(111).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let mut server = fx.server;
        // Wrong password: the token endpoint refuses, the client sees a generic error.
        std::fs::write(
            fx.tmp.path().join("config.yaml"),
            registry("{username: alice, password: wrong}"),
        )
        .unwrap();
        server.stop().await;
        server.restart().await;
        let target = Target::in_path(&server, &fx.upstream.host(), REPO);
        let resp = get_manifest(&fx.client, &target.manifest_url("v1")).await;
        assert_error(&resp, 502, "UNAVAILABLE", "wrong upstream password");
        // Right password from a file.
        std::fs::write(
            fx.tmp.path().join("config.yaml"),
            registry(&format!(
                "{{username: alice, password_file: \"{}\"}}",
                password_file.display()
            )),
        )
        .unwrap();
        server.stop().await;
        server.restart().await;
        let target = target.via(&server);
        pull_image(&fx.client, &target, "v1", &image).await;
        assert!(
            server
                .logs()
                .iter()
                .all(|l| !l.contains("s3cret") && !l.contains("wrong")),
            "a password reached the log"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passthrough_serves_cached_content_only_to_accepted_credentials() {
    bounded(async {
        let fx = Fixture::with(credentialed_upstream(), |mut c| {
            c.http_registries.clear();
            c
        })
        .await;
        std::fs::write(
            fx.tmp.path().join("config.yaml"),
            format!(
                "registries:\n  - name: \"{}\"\n    scheme: http\n    auth: passthrough\n",
                fx.upstream.host()
            ),
        )
        .unwrap();
        let mut server = fx.server;
        server.stop().await;
        server.restart().await;
        let image = ImageBuilder::oci().small().seed(112).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = Target::in_path(&server, &fx.upstream.host(), REPO);
        let url = target.manifest_url("v1");
        let accept = "application/vnd.oci.image.index.v1+json";
        let as_user = |user: &str, pass: &str| {
            fx.client
                .get(&url)
                .header("accept", accept)
                .basic_auth(user, Some(pass))
        };
        // No credentials: a challenge the client can answer.
        let resp = fx
            .client
            .get(&url)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        // A malformed reference or digest is refused before any upstream request, credential check included.
        for bad in ["manifests/bad%3Fq=1", "blobs/nope%3Fz=2", "referrers/x%23y"] {
            let bad_url = format!(
                "{}/v2/{}/{REPO}/{bad}",
                server.base_url(),
                fx.upstream.host()
            );
            let resp = fx
                .client
                .get(&bad_url)
                .basic_auth("alice", Some("s3cret-pw"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{bad_url}");
        }
        assert!(
            fx.upstream.request_log().is_empty(),
            "malformed requests reached the upstream: {:?}",
            fx.upstream.request_log()
        );
        // The right ones pull (and fill the cache).
        let resp = as_user("alice", "s3cret-pw").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["docker-content-digest"].to_str().unwrap(),
            image.index.digest
        );
        let gets = fx.upstream.manifest_gets(REPO, "v1");
        // Wrong ones are refused although the manifest is cached.
        let resp = as_user("alice", "guess").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let resp = as_user("mallory", "s3cret-pw").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        // The right ones again: served from the cache.
        let resp = as_user("alice", "s3cret-pw").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            fx.upstream.manifest_gets(REPO, "v1"),
            gets,
            "served from the cache"
        );
        // A blob of it, likewise.
        let blob = &image.children[0].layers[0];
        let blob_url = target.blob_url(&blob.digest);
        let resp = fx
            .client
            .get(&blob_url)
            .basic_auth("alice", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let resp = fx
            .client
            .get(&blob_url)
            .basic_auth("alice", Some("s3cret-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), blob.data);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_are_passed_through_filtered_and_served_when_the_upstream_is_gone() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(113).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let subject = &image.index.digest;
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":10,"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{b}","size":20,"artifactType":"application/spdx+json"}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64)
        );
        fx.upstream.set_referrers(REPO, subject, index.as_bytes());
        let url = format!("{}/v2/{}/{REPO}/referrers/{subject}", fx.server.base_url(), fx.upstream.host());
        let resp = get(&fx.client, &url).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("content-type").as_deref(), Some("application/vnd.oci.image.index.v1+json"));
        assert_eq!(resp.body, index.as_bytes());
        let filtered_url = format!("{url}?artifactType=application/spdx%2Bjson");
        let resp = get(&fx.client, &filtered_url).await;
        assert_eq!(resp.header("oci-filters-applied").as_deref(), Some("artifactType"));
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(v["manifests"][0]["artifactType"], "application/spdx+json");
        // Cached: the upstream was asked once; and still served with the upstream gone.
        assert_eq!(fx.upstream.count("GET", &format!("/v2/{REPO}/referrers/{subject}")), 1);
        fx.upstream.stop().await;
        let resp = get(&fx.client, &url).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, index.as_bytes());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cosign_tag_schema_fallback_works_as_tags() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(114).build();
        let signature = ImageBuilder::oci().small().seed(115).build();
        fx.upstream.push_image(REPO, "v1", &image);
        // cosign stores a signature of image digest sha256:<hex> under the tag `sha256-<hex>.sig`.
        let tag = format!("{}.sig", image.index.digest.replace(':', "-"));
        fx.upstream.push_image(REPO, &tag, &signature);
        let target = fx.in_path(REPO);
        pull_image(&fx.client, &target, &tag, &signature).await;
        fx.upstream.stop().await;
        check_manifest(&fx.client, &target, &tag, &signature.index).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrent_fetches_bounds_requests_to_one_registry() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.http_registries.clear();
            c
        })
        .await;
        let yaml = format!(
            "registries:\n  - name: \"{}\"\n    scheme: http\n    max_concurrent_fetches: 1\n",
            fx.upstream.host()
        );
        std::fs::write(fx.tmp.path().join("config.yaml"), &yaml).unwrap();
        let mut server = fx.server;
        server.stop().await;
        server.restart().await;
        let image = ImageBuilder::oci()
            .layer_sizes(&[16 * 1024, 512])
            .seed(116)
            .build();
        fx.upstream.push_image(REPO, "v1", &image);
        let layers = &image.children[0].layers;
        let (slow, quick) = if layers[0].data.len() > layers[1].data.len() {
            (&layers[0], &layers[1])
        } else {
            (&layers[1], &layers[0])
        };
        // 16 KiB in 1 KiB steps 100 ms apart: the single slot is taken for about 1.5 s.
        fx.upstream
            .set_blob_slow(&slow.digest, Some(Slow::new(1024, 100)));
        let target = Target::in_path(&server, &fx.upstream.host(), REPO);
        let client = fx.client.clone();
        let slow_url = target.blob_url(&slow.digest);
        let first = tokio::spawn(async move { get(&client, &slow_url).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let resp = get(&fx.client, &target.blob_url(&quick.digest)).await;
        let waited = started.elapsed();
        assert_eq!(resp.body, quick.data);
        let first = first.await.unwrap();
        assert_eq!(first.body, slow.data);
        assert!(
            waited > Duration::from_millis(900),
            "the second fetch did not wait for the only slot ({waited:?})"
        );
    })
    .await
}
