//! Tag caching and upstream auth: within `tag_ttl` a tag is answered from cache without asking the
//! upstream; after it the upstream is asked again (a moved tag is followed) and, when the upstream
//! is down, the cached mapping is served (stale-if-error). Bearer tokens are fetched once per
//! repository scope and reused, not fetched per request.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_is_answered_from_cache_within_ttl() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(50).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let in_path = fx.in_path(REPO);
        let ns = fx.target(REPO, Form::Ns);

        check_manifest(&fx.client, &in_path, "v1", &image.index).await;
        for _ in 0..5 {
            let h = head_manifest(&fx.client, &in_path.manifest_url("v1")).await;
            assert_manifest_response(&h, &image.index, true, "HEAD v1");
        }
        for _ in 0..3 {
            check_manifest(&fx.client, &in_path, "v1", &image.index).await;
            check_manifest(&fx.client, &ns, "v1", &image.index).await;
        }
        assert_eq!(
            fx.upstream.manifest_gets(REPO, "v1"),
            1,
            "tag must be answered from cache within tag_ttl; upstream log: {:#?}",
            fx.upstream.request_log()
        );
        assert_eq!(fx.upstream.manifest_heads(REPO, "v1"), 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_is_revalidated_after_ttl_and_served_stale_when_upstream_is_down() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |c| c.tag_ttl("1s")).await;
        let old = ImageBuilder::oci().small().seed(51).build();
        let new = ImageBuilder::oci().small().seed(52).build();
        fx.upstream.push_image(REPO, "v1", &new);
        fx.upstream.push_image(REPO, "v1", &old);
        let target = fx.in_path(REPO);

        check_manifest(&fx.client, &target, "v1", &old.index).await;
        assert_eq!(fx.upstream.manifest_gets(REPO, "v1"), 1);

        // Moved upstream, but still within the TTL: the cached mapping is served.
        fx.upstream.set_tag(REPO, "v1", &new.index.digest);
        check_manifest(&fx.client, &target, "v1", &old.index).await;
        assert_eq!(fx.upstream.manifest_gets(REPO, "v1"), 1);

        // After the TTL the cached mapping is still answered at once (stale-while-revalidate) while the
        // upstream is asked in the background; the new mapping is served as soon as that finished.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let resp = get_manifest(&fx.client, &target.manifest_url("v1")).await;
        assert_eq!(
            resp.header("docker-content-digest").as_deref(),
            Some(old.index.digest.as_str())
        );
        let moved = wait_for_manifest_digest(&fx.client, &target, "v1", &new.index.digest).await;
        assert!(
            moved,
            "the background revalidation never brought the new digest"
        );
        check_manifest(&fx.client, &target, "v1", &new.index).await;
        // One HEAD to find the digest moved, one GET for the new manifest.
        assert_eq!(fx.upstream.manifest_gets(REPO, "v1"), 2);

        // Expired again with the upstream gone: stale-if-error.
        fx.upstream.stop().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        check_manifest(&fx.client, &target, "v1", &new.index).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_token_is_fetched_once_and_reused() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(53).build();
        fx.upstream.push_image(REPO, "v1", &image);
        fx.upstream.push_image(REPO, "v2", &image);
        fx.upstream.push_image("team/other", "v1", &image);

        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        // index + 2 child manifests + 2 configs + 4 layers went upstream with one token.
        assert!(fx.upstream.total_requests() >= 9);
        assert_eq!(
            fx.upstream.token_fetches(),
            1,
            "one token for all requests of one repository; upstream log: {:#?}",
            fx.upstream.request_log()
        );
        assert!(
            fx.upstream.unauthorized() <= 2,
            "{} requests were answered 401: the token is not reused",
            fx.upstream.unauthorized()
        );

        // Another repository needs a token with another scope.
        check_manifest(&fx.client, &fx.in_path("team/other"), "v1", &image.index).await;
        assert_eq!(fx.upstream.token_fetches(), 2);

        // Back to the first repository: its token is still valid and cached.
        check_manifest(&fx.client, &fx.in_path(REPO), "v2", &image.index).await;
        assert_eq!(fx.upstream.manifest_gets(REPO, "v2"), 1);
        assert_eq!(
            fx.upstream.token_fetches(),
            2,
            "the first repository's token (expires_in 300) must still be cached; log: {:#?}",
            fx.upstream.request_log()
        );
        assert!(fx.upstream.unauthorized() <= 4);
    })
    .await
}

/// A HEAD of a tag that is not cached yet returns the manifest's headers; the upstream is asked
/// once, with GET, and the following GET is answered from cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_head_of_tag_fetches_once_with_get() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(55).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);

        let h = head_manifest(&fx.client, &target.manifest_url("v1")).await;
        assert_manifest_response(&h, &image.index, true, "cold HEAD v1");
        check_manifest(&fx.client, &target, "v1", &image.index).await;
        assert_eq!(
            (
                fx.upstream.manifest_gets(REPO, "v1"),
                fx.upstream.manifest_heads(REPO, "v1")
            ),
            (1, 0),
            "(GETs, HEADs) of the tag upstream; log: {:#?}",
            fx.upstream.request_log()
        );
    })
    .await
}

/// Tokens that expired (the upstream answers 401 again) are replaced by fresh ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_token_is_replaced() {
    bounded(async {
        let opts = UpstreamOptions {
            token_expires_in: 1,
            ..UpstreamOptions::default()
        };
        let fx = Fixture::with(opts, |c| c).await;
        let image = ImageBuilder::oci().small().seed(54).build();
        fx.upstream.push_image(REPO, "v1", &image);
        fx.upstream.push_image(REPO, "v2", &image);
        let target = fx.in_path(REPO);

        check_manifest(&fx.client, &target, "v1", &image.index).await;
        let fetched = fx.upstream.token_fetches();
        assert!(fetched >= 1);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        check_manifest(&fx.client, &target, "v2", &image.index).await;
        assert!(
            fx.upstream.token_fetches() > fetched,
            "no new token after expiry; log: {:#?}",
            fx.upstream.request_log()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_tags_survive_a_captive_portal_and_a_failing_token_endpoint() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |c| c.tag_ttl("1s")).await;
        let image = ImageBuilder::oci().small().seed(57).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        pull_image(&fx.client, &target, "v1", &image).await;

        // A captive portal answers everything with 200 HTML: the cached tag is served, a new one fails cleanly.
        fx.upstream.set_captive_portal(true);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        for _ in 0..3 {
            check_manifest(&fx.client, &target, "v1", &image.index).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let resp = get_manifest(&fx.client, &target.manifest_url("new-tag")).await;
        assert_error(
            &resp,
            502,
            "MANIFEST_INVALID",
            "a captive portal's HTML is not a manifest",
        );
        fx.upstream.set_captive_portal(false);

        // A registry answering 500, then a token endpoint that fails: upstream trouble too, stale served.
        fx.upstream.set_forced_status("v1", Some(500));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        for _ in 0..3 {
            check_manifest(&fx.client, &target, "v1", &image.index).await;
        }
        fx.upstream.set_forced_status("v1", None);
        fx.upstream.set_token_status(Some(503));
        // A fresh repository scope needs a new token, which the failing endpoint cannot give.
        let other = fx.in_path("team/other");
        let resp = get_manifest(&fx.client, &other.manifest_url("v1")).await;
        assert_error(
            &resp,
            502,
            "UNAVAILABLE",
            "token endpoint down, nothing cached",
        );
        assert!(fx
            .upstream
            .request_log()
            .iter()
            .any(|l| l.contains("/token -> 503")));
        assert!(
            fx.server
                .wait_for_log(|l| l.contains("tag revalidation failed"))
                .await,
            "the failed revalidations must be logged"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_without_manifest_head_is_revalidated_with_get() {
    bounded(async {
        let opts = UpstreamOptions {
            no_manifest_head: true,
            ..UpstreamOptions::default()
        };
        let fx = Fixture::with(opts, |c| c.tag_ttl("1s")).await;
        let old = ImageBuilder::oci().small().seed(58).build();
        let new = ImageBuilder::oci().small().seed(59).build();
        fx.upstream.push_image(REPO, "v1", &new);
        fx.upstream.push_image(REPO, "v1", &old);
        let target = fx.in_path(REPO);
        check_manifest(&fx.client, &target, "v1", &old.index).await;
        fx.upstream.set_tag(REPO, "v1", &new.index.digest);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // A HEAD answered 405 is not "upstream down": the tag is fetched with a GET and moves.
        let moved = wait_for_manifest_digest(&fx.client, &target, "v1", &new.index.digest).await;
        assert!(
            moved,
            "the tag never moved: HEAD 405 was taken as an outage"
        );
    })
    .await
}
