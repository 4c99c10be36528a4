//! Integrity: bytes from the upstream that do not match the requested digest are never delivered as
//! a complete body and never cached. Blobs: the client gets either a 502 DIGEST_INVALID or a body
//! aborted before its last byte, and the next request asks the upstream again. Manifests by digest:
//! 502 DIGEST_INVALID, not cached.

mod common;

use common::*;

/// The client must not have received a complete, correct-length body for `blob`.
fn assert_not_delivered(r: &Streamed, blob: &Blob, what: &str) {
    if r.status == 0 {
        // Connection aborted before the response head: nothing delivered.
        assert!(r.error.is_some() && r.body.is_empty(), "{what}: {r:?}");
    } else if r.status == 200 {
        assert!(
            !(r.complete && r.body.len() == blob.data.len()),
            "{what}: digest mismatch, yet the client received a complete {}-byte body",
            r.body.len()
        );
        assert!(
            r.body.len() < blob.data.len(),
            "{what}: the body must be aborted before the last byte (got {} of {} bytes, complete={})",
            r.body.len(),
            blob.data.len(),
            r.complete
        );
        assert!(
            r.body[..] == blob.data[..r.body.len()],
            "{what}: received bytes are not a prefix of the blob"
        );
    } else {
        assert_error(&r.to_resp(), 502, "DIGEST_INVALID", what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_blob_is_not_delivered_and_not_cached() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(20).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.children[0].layers[0].clone();
        fx.upstream.set_blob_corrupt(&blob.digest, true);
        let target = fx.in_path(REPO);
        let url = target.blob_url(&blob.digest);
        let data = fx.server.data_dir();

        let r1 = get_streamed(&fx.client, &url).await;
        assert_not_delivered(&r1, &blob, "first GET of corrupt blob");
        let c1 = fx.upstream.blob_gets(REPO, &blob.digest);
        assert!(c1 >= 1, "upstream was not asked");

        let r2 = get_streamed(&fx.client, &url).await;
        assert_not_delivered(&r2, &blob, "second GET of corrupt blob");
        let c2 = fx.upstream.blob_gets(REPO, &blob.digest);
        assert!(
            c2 > c1,
            "second GET must ask upstream again (nothing cached): {c1} -> {c2}"
        );
        assert!(
            !blob_path(&data, &blob.digest).exists(),
            "corrupt blob was stored"
        );

        // Upstream heals: the right bytes are served and cached.
        fx.upstream.set_blob_corrupt(&blob.digest, false);
        check_blob(&fx.client, &target, &blob).await;
        let c3 = fx.upstream.blob_gets(REPO, &blob.digest);
        assert!(c3 > c2);
        check_blob(&fx.client, &target, &blob).await;
        assert_eq!(fx.upstream.blob_gets(REPO, &blob.digest), c3, "not cached");
        verify_blob_store(&data);
    })
    .await
}

/// A slowly streamed corrupt blob (the mismatch is only known at the very end) read by 5 clients at
/// once: none gets a complete body; nothing is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowly_streamed_corrupt_blob_is_aborted_for_all_readers() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci()
            .layer_sizes(&[MIB + 17, 999])
            .seed(21)
            .build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.children[1].layers[0].clone();
        fx.upstream.set_blob_corrupt(&blob.digest, true);
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(64 * 1024, 30)));
        let url = fx.in_path(REPO).blob_url(&blob.digest);

        let readers: Vec<_> = (0..5)
            .map(|_| {
                let client = fx.client.clone();
                let url = url.clone();
                tokio::spawn(async move { get_streamed(&client, &url).await })
            })
            .collect();
        for (i, r) in readers.into_iter().enumerate() {
            let r = r.await.unwrap();
            assert_not_delivered(&r, &blob, &format!("concurrent reader {i}"));
        }
        let c1 = fx.upstream.blob_gets(REPO, &blob.digest);
        assert!(c1 >= 1);

        let r = get_streamed(&fx.client, &url).await;
        assert_not_delivered(&r, &blob, "GET after the failed download");
        let c2 = fx.upstream.blob_gets(REPO, &blob.digest);
        assert!(c2 > c1, "upstream must be asked again: {c1} -> {c2}");
        assert!(!blob_path(&fx.server.data_dir(), &blob.digest).exists());

        fx.upstream.set_blob_corrupt(&blob.digest, false);
        check_blob(&fx.client, &fx.in_path(REPO), &blob).await;
        verify_blob_store(&fx.server.data_dir());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_by_digest_with_wrong_bytes_is_502_digest_invalid_and_not_cached() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(22).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let child = image.children[0].manifest.clone();
        fx.upstream.set_manifest_corrupt(&child.digest, true);
        let target = fx.in_path(REPO);
        let url = target.manifest_url(&child.digest);

        let r1 = get_manifest(&fx.client, &url).await;
        assert_error(&r1, 502, "DIGEST_INVALID", "GET corrupt manifest by digest");
        let c1 = fx.upstream.manifest_gets(REPO, &child.digest);
        assert!(c1 >= 1, "upstream was not asked");

        let r2 = get_manifest(&fx.client, &url).await;
        assert_error(&r2, 502, "DIGEST_INVALID", "second GET corrupt manifest");
        let c2 = fx.upstream.manifest_gets(REPO, &child.digest);
        assert!(c2 > c1, "second GET must ask upstream again: {c1} -> {c2}");

        fx.upstream.set_manifest_corrupt(&child.digest, false);
        check_manifest(&fx.client, &target, &child.digest, &child).await;
        let c3 = fx.upstream.manifest_gets(REPO, &child.digest);
        assert!(c3 > c2);
        check_manifest(&fx.client, &target, &child.digest, &child).await;
        assert_eq!(
            fx.upstream.manifest_gets(REPO, &child.digest),
            c3,
            "not cached"
        );
    })
    .await
}

/// The upstream connection drops halfway through a cold blob: the client does not get a complete
/// body, nothing is cached, and the next request fetches the blob again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_connection_cut_midway_is_not_delivered_and_not_cached() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci()
            .layer_sizes(&[MIB + 3, 500])
            .seed(23)
            .build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.children[0].layers[0].clone();
        fx.upstream.set_blob_truncated(&blob.digest, true);
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(64 * 1024, 10)));
        let target = fx.in_path(REPO);
        let url = target.blob_url(&blob.digest);

        let r = get_streamed(&fx.client, &url).await;
        if r.status == 200 {
            assert!(
                !r.complete && r.body.len() < blob.data.len(),
                "cut upstream, yet the client body ended cleanly ({} of {} bytes)",
                r.body.len(),
                blob.data.len()
            );
            assert!(r.body[..] == blob.data[..r.body.len()]);
        } else {
            assert!(
                r.status == 502,
                "cut upstream: expected 200 (aborted) or 502, got {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            let resp = r.to_resp();
            let code = resp.json()["errors"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_error(&resp, 502, &code, "cut upstream");
        }
        let c1 = fx.upstream.blob_gets(REPO, &blob.digest);
        assert!(c1 >= 1);
        assert!(!blob_path(&fx.server.data_dir(), &blob.digest).exists());

        fx.upstream.set_blob_truncated(&blob.digest, false);
        check_blob(&fx.client, &target, &blob).await;
        assert!(fx.upstream.blob_gets(REPO, &blob.digest) > c1);
        verify_blob_store(&fx.server.data_dir());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_chunked_blob_without_length_is_never_delivered_whole() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci()
            .layer_sizes(&[300 * 1024, 512])
            .seed(27)
            .build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.largest_blob().clone();
        // No Content-Length: the server cannot know which byte is the last until the stream ends.
        fx.upstream.set_blob_chunked(&blob.digest, true);
        fx.upstream.set_blob_corrupt(&blob.digest, true);
        // In steps large enough that a read-along reader sends each one as it arrives, the last included.
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(100 * 1024, 50)));
        let url = fx.in_path(REPO).blob_url(&blob.digest);
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let client = fx.client.clone();
                let url = url.clone();
                tokio::spawn(async move { get_streamed(&client, &url).await })
            })
            .collect();
        for (i, reader) in readers.into_iter().enumerate() {
            let r = reader.await.unwrap();
            assert_not_delivered(&r, &blob, &format!("chunked corrupt blob, reader {i}"));
        }
        assert!(!blob_path(&fx.server.data_dir(), &blob.digest).exists());
        // A good chunked blob is delivered whole and cached.
        fx.upstream.set_blob_corrupt(&blob.digest, false);
        let r = get_streamed(&fx.client, &url).await;
        assert_eq!(r.status, 200);
        assert!(
            r.complete && r.body == blob.data,
            "good chunked blob not delivered whole"
        );
        // The rename follows the last byte by a moment (fsync).
        let path = blob_path(&fx.server.data_dir(), &blob.digest);
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(path.exists(), "good chunked blob not cached");
    })
    .await
}
