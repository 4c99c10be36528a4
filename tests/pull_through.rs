//! Pull-through basics: a multi-platform image pulled through ociregistry in every addressing form
//! (in-path upstream, `?ns=` containerd mirror form, default registry), OCI and Docker media types,
//! anonymous and bearer-token upstreams, and serving from cache once the upstream is gone.

mod common;

use common::*;

/// The upstream saw exactly one GET for the tag, each child manifest and each blob.
fn assert_each_fetched_once(upstream: &TestUpstream, repo: &str, tag: &str, image: &Image) {
    assert_eq!(
        upstream.manifest_gets(repo, tag),
        1,
        "upstream GETs of tag {tag}; log: {:#?}",
        upstream.request_log()
    );
    for child in &image.children {
        assert_eq!(
            upstream.manifest_gets(repo, &child.manifest.digest),
            1,
            "upstream GETs of manifest {}",
            child.manifest.digest
        );
    }
    for blob in image.blobs() {
        assert_eq!(
            upstream.blob_gets(repo, &blob.digest),
            1,
            "upstream GETs of blob {}",
            blob.digest
        );
    }
}

/// After a graceful stop every pulled blob is in the content-addressed store at the contract path.
fn assert_blobs_stored(data_dir: &std::path::Path, image: &Image) {
    let stored = verify_blob_store(data_dir);
    for blob in image.blobs() {
        assert!(
            stored.contains(&blob.digest),
            "blob {} not in store (expected at {})",
            blob.digest,
            blob_path(data_dir, &blob.digest).display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_oci_index_via_in_path_form() {
    bounded(async {
        let mut fx = Fixture::new().await;
        let image = ImageBuilder::oci().build();
        fx.upstream.push_image(REPO, "v1", &image);

        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        assert_each_fetched_once(&fx.upstream, REPO, "v1", &image);

        fx.server.stop().await;
        assert_blobs_stored(&fx.server.data_dir(), &image);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_oci_index_via_ns_query_form() {
    bounded(async {
        let mut fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(2).build();
        fx.upstream.push_image(REPO, "v1", &image);

        pull_image(&fx.client, &fx.target(REPO, Form::Ns), "v1", &image).await;
        assert_each_fetched_once(&fx.upstream, REPO, "v1", &image);

        fx.server.stop().await;
        assert_blobs_stored(&fx.server.data_dir(), &image);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_docker_manifest_list_and_v2_manifests() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::docker().seed(3).build();
        assert_eq!(image.index.media_type, DOCKER_LIST);
        assert_eq!(image.children[0].manifest.media_type, DOCKER_MANIFEST);
        fx.upstream.push_image(REPO, "latest", &image);

        pull_image(&fx.client, &fx.in_path(REPO), "latest", &image).await;
        assert_each_fetched_once(&fx.upstream, REPO, "latest", &image);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_from_anonymous_upstream_without_tokens() {
    bounded(async {
        let opts = UpstreamOptions {
            auth: false,
            ..UpstreamOptions::default()
        };
        let fx = Fixture::with(opts, |c| c).await;
        let image = ImageBuilder::oci().small().seed(4).build();
        fx.upstream.push_image(REPO, "v1", &image);

        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        assert_each_fetched_once(&fx.upstream, REPO, "v1", &image);
        assert_eq!(fx.upstream.token_fetches(), 0);
    })
    .await
}

/// `default_registry` is an http upstream: `/v2/<repo>/...` goes there, and single-component names
/// are NOT prefixed with `library/` (that is only for docker.io).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_via_default_registry() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let upstream = TestUpstream::start().await;
        let host = upstream.host();
        let config = ServerConfig::for_upstream(&upstream).default_registry(&host);
        let server = Server::start(tmp.path(), &config).await;
        let client = client();
        let image = ImageBuilder::oci().small().seed(5).build();
        upstream.push_image("app", "v1", &image);
        upstream.push_image(REPO, "v1", &image);

        pull_image(
            &client,
            &Target::default_registry(&server, "app"),
            "v1",
            &image,
        )
        .await;
        assert_eq!(upstream.manifest_gets("app", "v1"), 1);
        assert_eq!(upstream.manifest_gets("library/app", "v1"), 0);

        pull_image(
            &client,
            &Target::default_registry(&server, REPO),
            "v1",
            &image,
        )
        .await;
        assert_eq!(upstream.manifest_gets(REPO, "v1"), 1);
        drop(server);
    })
    .await
}

/// Once everything was pulled, the upstream is stopped and the same image is pulled again in the
/// in-path and in the `?ns=` form: identical bytes and headers, all from cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_everything_from_cache_after_upstream_stops() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(6).build();
        fx.upstream.push_image(REPO, "v1", &image);

        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        let seen = fx.upstream.total_requests();

        fx.upstream.stop().await;
        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        // The ns= form names the same upstream and repository, so it is the same cache.
        pull_image(&fx.client, &fx.target(REPO, Form::Ns), "v1", &image).await;
        assert_eq!(fx.upstream.total_requests(), seen);
    })
    .await
}

/// HEAD requests for things not cached yet (child manifest by digest, blob) already carry the full
/// set of headers; the following GETs serve the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_head_requests_return_full_headers() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(7).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        let child = &image.children[1];

        let url = target.manifest_url(&child.manifest.digest);
        let h = head_manifest(&fx.client, &url).await;
        assert_manifest_response(&h, &child.manifest, true, &format!("cold HEAD {url}"));
        for blob in [&child.config, &child.layers[0]] {
            let url = target.blob_url(&blob.digest);
            let h = head(&fx.client, &url).await;
            assert_blob_response(&h, blob, true, &format!("cold HEAD {url}"));
        }
        pull_image(&fx.client, &target, "v1", &image).await;
    })
    .await
}

/// One access-log line per request on stderr, with method, path, status and `cache=miss|hit`.
/// (A GET right after the first one may still read along the in-flight fill and be logged as a
/// miss, so only the first and the last of several spaced GETs are pinned down.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_log_has_a_line_per_request_with_cache_status() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(8).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = &image.children[0].layers[0];
        let target = fx.in_path(REPO);
        let url = target.blob_url(&blob.digest);
        const GETS: usize = 6;
        for i in 0..GETS {
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let resp = get(&fx.client, &url).await;
            assert_blob_response(&resp, blob, false, &format!("GET #{i}"));
        }
        assert_eq!(fx.upstream.blob_gets(REPO, &blob.digest), 1);

        let path = format!("/v2/{}/{REPO}/blobs/{}", fx.upstream.host(), blob.digest);
        let get_lines = || -> Vec<String> {
            fx.server
                .logs()
                .into_iter()
                .filter(|l| l.contains("GET") && l.contains(&path))
                .collect()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while get_lines().len() < GETS && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let lines = get_lines();
        assert_eq!(lines.len(), GETS, "one access-log line per GET: {lines:#?}");
        for line in &lines {
            assert!(line.contains("200"), "status missing: {line}");
        }
        assert!(lines[0].contains("cache=miss"), "cold GET: {}", lines[0]);
        assert!(
            lines[GETS - 1].contains("cache=hit"),
            "GET long after caching: {}",
            lines[GETS - 1]
        );
    })
    .await
}

/// Percent-encoded paths (what OpenAPI-generated clients send) mean the same as literal ones: an encoded
/// digest, in-path host and name separator all reach the cached content.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn percent_encoded_paths_are_decoded() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        pull_image(&fx.client, &target, "v1", &image).await;

        let index = &image.index;
        let blob = &image.children[0].layers[0];
        let base = fx.server.base_url();
        let host = target.host.replace(':', "%3A");
        let repo = REPO.replace('/', "%2F");
        let manifest_url = format!(
            "{base}/v2/{host}/{repo}/manifests/{}",
            index.digest.replace(':', "%3A")
        );
        let resp = get(&fx.client, &manifest_url).await;
        assert_eq!(resp.status, 200, "{manifest_url}");
        assert_eq!(resp.body, index.data);
        let blob_url = format!(
            "{base}/v2/{host}/{repo}/blobs/{}",
            blob.digest.replace(':', "%3A")
        );
        let resp = get(&fx.client, &blob_url).await;
        assert_eq!(resp.status, 200, "{blob_url}");
        assert_eq!(resp.body, blob.data);
        // Decoding happens before validation: an encoded traversal is still rejected.
        let bad = format!("{base}/v2/{host}/%2E%2E%2Fetc/manifests/v1");
        assert_error(&get(&fx.client, &bad).await, 400, "NAME_INVALID", &bad);
    })
    .await
}
