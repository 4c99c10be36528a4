//! The error contract: every error is JSON `{"errors":[{"code","message",..}]}` with
//! `Content-Type: application/json` and the documented status/code: 405 UNSUPPORTED for write
//! methods, 400 NAME_INVALID / DIGEST_INVALID / MANIFEST_INVALID for malformed requests (answered
//! without contacting the upstream), 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN for things the upstream does
//! not have, 502 UNAVAILABLE when the upstream is down or failing, 429 / 403 passed on. Plus
//! `GET /v2/` -> 200 with the API version header.

mod common;

use common::*;

const ZERO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_version_endpoint() {
    bounded(async {
        let fx = Fixture::new().await;
        let resp = get(&fx.client, &format!("{}/v2/", fx.server.base_url())).await;
        assert_eq!(resp.status, 200, "GET /v2/: {:?}", resp.text());
        assert_eq!(
            resp.header("docker-distribution-api-version").as_deref(),
            Some("registry/2.0")
        );
        assert_eq!(resp.json(), serde_json::json!({}));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_methods_are_405_unsupported() {
    bounded(async {
        let fx = Fixture::new().await;
        let host = fx.upstream.host();
        let base = fx.server.base_url();
        let paths = [
            "/v2/".to_string(),
            format!("/v2/{host}/team/app/manifests/v1"),
            format!("/v2/{host}/team/app/manifests/{ZERO_DIGEST}"),
            format!("/v2/{host}/team/app/blobs/uploads/"),
            format!("/v2/{host}/team/app/blobs/uploads/some-uuid"),
            format!("/v2/{host}/team/app/blobs/{ZERO_DIGEST}"),
            format!("/v2/team/app/manifests/v1?ns={host}"),
            // Not an endpoint at all: still 405 for a method this registry never accepts, not 404.
            "/".to_string(),
            "/no/such/endpoint".to_string(),
        ];
        for path in &paths {
            for method in ["POST", "PUT", "PATCH", "DELETE", "QUERY"] {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let url = format!("{base}{path}");
                let resp = send(
                    fx.client.request(m, &url).body("x"),
                    &format!("{method} {path}"),
                )
                .await;
                assert_error(&resp, 405, "UNSUPPORTED", &format!("{method} {path}"));
            }
        }
        assert_eq!(fx.upstream.total_requests(), 0, "upstream contacted");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_repository_names_are_400_name_invalid() {
    bounded(async {
        let fx = Fixture::new().await;
        let host = fx.upstream.host();
        let base = fx.server.base_url();
        // Through reqwest (these paths survive URL normalization).
        let paths = [
            "/v2/UPPER/manifests/x".to_string(),
            "/v2/UPPER/blobs/".to_string() + ZERO_DIGEST,
            format!("/v2/{host}/Team/App/manifests/v1"),
            format!("/v2/{host}/team//app/manifests/v1"),
            format!("/v2/{host}/team/app-/manifests/v1"),
            format!("/v2/{host}/team/_app/blobs/{ZERO_DIGEST}"),
            format!("/v2/Bad/manifests/v1?ns={host}"),
        ];
        for path in &paths {
            let resp = get_manifest(&fx.client, &format!("{base}{path}")).await;
            assert_error(&resp, 400, "NAME_INVALID", &format!("GET {path}"));
        }
        // Raw: dot segments and traversal, sent exactly as written.
        let raw_paths = [
            format!("/v2/{host}/../etc/manifests/v1"),
            format!("/v2/{host}/team/../../../etc/passwd/manifests/v1"),
            format!("/v2/{host}/team/./app/manifests/v1"),
            format!("/v2/{host}/team/../app/blobs/{ZERO_DIGEST}"),
            format!("/v2/../../etc/manifests/v1?ns={host}"),
        ];
        for path in &raw_paths {
            let resp = raw_request(fx.server.addr(), "GET", path, &[]).await;
            assert_error(&resp, 400, "NAME_INVALID", &format!("raw GET {path}"));
        }
        assert_eq!(fx.upstream.total_requests(), 0, "upstream contacted");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_digests_are_400_digest_invalid() {
    bounded(async {
        let fx = Fixture::new().await;
        let host = fx.upstream.host();
        let base = fx.server.base_url();
        let upper = format!("sha256:{}", "AB".repeat(32));
        let short = "sha256:abc".to_string();
        let non_hex = format!("sha256:{}g", "0".repeat(63));
        let too_long = format!("sha256:{}", "0".repeat(65));
        let paths = [
            format!("/v2/{host}/team/app/blobs/{short}"),
            format!("/v2/{host}/team/app/blobs/{upper}"),
            format!("/v2/{host}/team/app/blobs/{non_hex}"),
            format!("/v2/{host}/team/app/blobs/{too_long}"),
            format!("/v2/{host}/team/app/blobs/notadigest"),
            format!("/v2/{host}/team/app/blobs/sha256:"),
            format!("/v2/{host}/team/app/manifests/{short}"),
            format!("/v2/{host}/team/app/manifests/{non_hex}"),
            format!("/v2/team/app/blobs/{short}?ns={host}"),
        ];
        for path in &paths {
            let resp = get(&fx.client, &format!("{base}{path}")).await;
            assert_error(&resp, 400, "DIGEST_INVALID", &format!("GET {path}"));
        }
        // Traversal inside the digest, sent raw. This matches no API route (a digest has no '/'),
        // and the contract does not say which 4xx an unmatched route gets: only require a JSON
        // client error (never 200, never an upstream request).
        let path = format!("/v2/{host}/team/app/blobs/sha256:../../../../etc/passwd");
        let resp = raw_request(fx.server.addr(), "GET", &path, &[]).await;
        assert!(
            resp.status == 400 || resp.status == 404,
            "raw GET {path}: status {}",
            resp.status
        );
        let code = resp.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_error(&resp, resp.status, &code, &format!("raw GET {path}"));
        assert_eq!(fx.upstream.total_requests(), 0, "upstream contacted");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_tags_are_400_manifest_invalid() {
    bounded(async {
        let fx = Fixture::new().await;
        let host = fx.upstream.host();
        let base = fx.server.base_url();
        let long = "a".repeat(129);
        for tag in ["-bad", ".bad", "bad!tag", long.as_str()] {
            let path = format!("/v2/{host}/team/app/manifests/{tag}");
            let resp = get_manifest(&fx.client, &format!("{base}{path}")).await;
            assert_error(&resp, 400, "MANIFEST_INVALID", &format!("GET {path}"));
        }
        // 128 characters is still a valid tag: it goes upstream and is simply unknown there.
        let ok = "a".repeat(128);
        fx.upstream
            .push_image(REPO, "v1", &ImageBuilder::oci().small().build());
        let resp = get_manifest(&fx.client, &fx.in_path(REPO).manifest_url(&ok)).await;
        assert_error(&resp, 404, "MANIFEST_UNKNOWN", "GET 128-char tag");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_manifests_are_404_manifest_unknown() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(60).build();
        fx.upstream.push_image(REPO, "v1", &image);
        for target in [fx.in_path(REPO), fx.target(REPO, Form::Ns)] {
            for reference in ["nosuchtag", ZERO_DIGEST] {
                let url = target.manifest_url(reference);
                let resp = get_manifest(&fx.client, &url).await;
                assert_error(&resp, 404, "MANIFEST_UNKNOWN", &format!("GET {url}"));
                let h = head_manifest(&fx.client, &url).await;
                assert_head_error(&h, 404, &format!("HEAD {url}"));
            }
        }
        // Unknown repository: 404 (NAME_UNKNOWN, or MANIFEST_UNKNOWN).
        let url = fx.in_path("team/nosuchrepo").manifest_url("v1");
        let resp = get_manifest(&fx.client, &url).await;
        let code = resp.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code == "NAME_UNKNOWN" || code == "MANIFEST_UNKNOWN",
            "GET {url}: code {code}"
        );
        assert_error(&resp, 404, &code, &format!("GET {url}"));
        // The real tag still works.
        check_manifest(&fx.client, &fx.in_path(REPO), "v1", &image.index).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_blob_is_404_blob_unknown() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(61).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let missing = sha256_digest(b"not uploaded anywhere");
        for target in [fx.in_path(REPO), fx.target(REPO, Form::Ns)] {
            let url = target.blob_url(&missing);
            let resp = get(&fx.client, &url).await;
            assert_error(&resp, 404, "BLOB_UNKNOWN", &format!("GET {url}"));
            let h = head(&fx.client, &url).await;
            assert_head_error(&h, 404, &format!("HEAD {url}"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_upstream_is_502_unavailable() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(62).build();
        fx.upstream.push_image(REPO, "v1", &image);
        fx.upstream.stop().await;
        let target = fx.in_path(REPO);
        let child = &image.children[0];
        for url in [
            target.manifest_url("v1"),
            target.manifest_url(&child.manifest.digest),
            target.blob_url(&child.layers[0].digest),
        ] {
            let resp = get_manifest(&fx.client, &url).await;
            assert_error(&resp, 502, "UNAVAILABLE", &format!("GET {url}"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_error_statuses_are_mapped() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(63).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        let cases = [
            ("t500", 500, 502, "UNAVAILABLE"),
            ("t503", 503, 502, "UNAVAILABLE"),
            ("t403", 403, 403, "DENIED"),
        ];
        for (tag, upstream_status, status, code) in cases {
            fx.upstream.set_tag(REPO, tag, &image.index.digest);
            fx.upstream.set_forced_status(tag, Some(upstream_status));
            let url = target.manifest_url(tag);
            let resp = get_manifest(&fx.client, &url).await;
            assert_error(
                &resp,
                status,
                code,
                &format!("GET {url} (upstream answers {upstream_status})"),
            );
            // What went wrong upstream stays in the server's log; the client is told only that it did.
            assert!(
                !resp.text().contains("answered"),
                "upstream detail leaked to the client: {}",
                resp.text()
            );
        }
        let blob = &image.children[0].layers[1];
        fx.upstream.set_forced_status(&blob.digest, Some(503));
        let url = target.blob_url(&blob.digest);
        let resp = get(&fx.client, &url).await;
        assert_error(
            &resp,
            502,
            "UNAVAILABLE",
            &format!("GET {url} (upstream 503)"),
        );
        // Nothing of that was cached: once the upstream recovers the blob is served.
        fx.upstream.set_forced_status(&blob.digest, None);
        check_blob(&fx.client, &target, blob).await;

        // A 429 is passed on with Retry-After, and the registry is then left alone for the back-off: the next
        // miss fails fast with 429 without reaching the upstream.
        fx.upstream.set_tag(REPO, "t429", &image.index.digest);
        fx.upstream.set_forced_status("t429", Some(429));
        let resp = get_manifest(&fx.client, &target.manifest_url("t429")).await;
        assert_error(&resp, 429, "TOOMANYREQUESTS", "GET t429 (upstream 429)");
        assert!(
            resp.header("retry-after").is_some(),
            "429 without Retry-After"
        );
        let before = fx.upstream.total_requests();
        fx.upstream.set_tag(REPO, "other", &image.index.digest);
        let resp = get_manifest(&fx.client, &target.manifest_url("other")).await;
        assert_error(&resp, 429, "TOOMANYREQUESTS", "GET other (backing off)");
        let retry_after: u64 = resp.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(
            fx.upstream.total_requests(),
            before,
            "the upstream was asked while backing off"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_over_max_manifest_bytes_are_refused_and_not_cached() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.extra_yaml = "max_manifest_bytes: 1024\n".into();
            c
        })
        .await;
        let image = ImageBuilder::oci().small().seed(64).build();
        assert!(
            image.index.data.len() < 1024,
            "the small image's index fits"
        );
        fx.upstream.push_image(REPO, "small", &image);
        check_manifest(&fx.client, &fx.in_path(REPO), "small", &image.index).await;
        // The same index padded with whitespace (still valid JSON) past the limit.
        let mut padded = image.index.data.to_vec();
        padded.extend(std::iter::repeat_n(b' ', 2048));
        let big = Manifest::new(&image.index.media_type, padded);
        fx.upstream.put_manifest(REPO, &big);
        fx.upstream.set_tag(REPO, "big", &big.digest);
        for _ in 0..2 {
            let resp = get_manifest(&fx.client, &fx.in_path(REPO).manifest_url("big")).await;
            assert_error(
                &resp,
                502,
                "MANIFEST_INVALID",
                "a manifest over max_manifest_bytes",
            );
        }
        assert_eq!(
            fx.upstream.manifest_gets(REPO, "big"),
            2,
            "nothing cached: asked again"
        );
    })
    .await
}
