//! Cold blob downloads: concurrent readers of one cold blob share a single upstream GET
//! (read-along), and a cold blob is streamed to the client while it is still downloading.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_cold_gets_share_one_upstream_fetch() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(30).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.largest_blob().clone();
        // ~48 chunks of 64 KiB, 20 ms apart: the download lasts about 1 s, so all readers overlap.
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(64 * 1024, 20)));
        let url = fx.in_path(REPO).blob_url(&blob.digest);

        let barrier = Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let client = fx.client.clone();
                let url = url.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    get(&client, &url).await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let resp = t.await.unwrap();
            assert_blob_response(&resp, &blob, false, &format!("concurrent reader {i}"));
        }
        assert_eq!(
            fx.upstream.blob_gets(REPO, &blob.digest),
            1,
            "20 concurrent cold GETs must cause exactly one upstream GET; upstream log: {:#?}",
            fx.upstream.request_log()
        );

        check_blob(&fx.client, &fx.in_path(REPO), &blob).await;
        assert_eq!(fx.upstream.blob_gets(REPO, &blob.digest), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cold_blob_is_streamed_while_downloading() {
    bounded(async {
        let fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(31).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let blob = image.largest_blob().clone();
        // ~48 chunks of 64 KiB, 50 ms apart: the upstream needs about 2.4 s.
        fx.upstream
            .set_blob_slow(&blob.digest, Some(Slow::new(64 * 1024, 50)));
        let url = fx.in_path(REPO).blob_url(&blob.digest);

        let start = Instant::now();
        let mut resp = fx.client.get(&url).send().await.expect("GET");
        assert_eq!(resp.status().as_u16(), 200);
        let mut body = Vec::new();
        let mut first_byte = None;
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("body stalled")
            .expect("body failed")
        {
            if first_byte.is_none() && !chunk.is_empty() {
                first_byte = Some(start.elapsed());
            }
            body.extend_from_slice(&chunk);
        }
        let total = start.elapsed();
        let first_byte = first_byte.expect("no body");
        eprintln!("first byte after {first_byte:?}, whole body after {total:?}");
        assert!(body == blob.data, "body differs");
        assert!(
            first_byte < Duration::from_millis(1200),
            "first byte only after {first_byte:?} (whole body {total:?}): not streamed while downloading"
        );
        assert_eq!(fx.upstream.blob_gets(REPO, &blob.digest), 1);
    })
    .await
}
