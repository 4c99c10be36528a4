//! Persistence of the cache across restarts: a graceful restart (SIGTERM, start again on the same
//! data dir) serves everything with the upstream gone, and a kill -9 in the middle of a cold blob
//! download leaves nothing wrong behind (no partial blob served, temp files cleaned at startup,
//! every stored blob hashes to its name).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_sigterm_serves_everything_without_upstream() {
    bounded(async {
        let mut fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(10).build();
        fx.upstream.push_image(REPO, "v1", &image);
        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;

        fx.server.stop().await;
        fx.upstream.stop().await;
        fx.server.restart().await;

        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        pull_image(&fx.client, &fx.target(REPO, Form::Ns), "v1", &image).await;

        fx.server.stop().await;
        let stored = verify_blob_store(&fx.server.data_dir());
        for blob in image.blobs() {
            assert!(stored.contains(&blob.digest), "{} not stored", blob.digest);
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_cold_blob_download_then_restart_serves_correct_content() {
    bounded(async {
        let mut fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(11).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let big = image.children[0].layers[0].clone();
        assert!(big.data.len() > 2 * MIB);
        // ~48 chunks of 64 KiB, 40 ms apart: about 2 s for the whole blob.
        fx.upstream
            .set_blob_slow(&big.digest, Some(Slow::new(64 * 1024, 40)));

        // Cache everything except the big layer.
        let target = fx.in_path(REPO);
        check_manifest(&fx.client, &target, "v1", &image.index).await;
        for child in &image.children {
            check_manifest(&fx.client, &target, &child.manifest.digest, &child.manifest).await;
        }
        for blob in image.blobs() {
            if blob.digest != big.digest {
                check_blob(&fx.client, &target, blob).await;
            }
        }

        // Start the cold download of the big layer and kill -9 the server midway.
        let url = target.blob_url(&big.digest);
        let mut resp = fx.client.get(&url).send().await.expect("cold GET");
        assert_eq!(resp.status().as_u16(), 200, "cold GET {url}");
        let mut received = 0usize;
        while received < 256 * 1024 {
            match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
                Ok(Ok(Some(chunk))) => received += chunk.len(),
                other => panic!("cold GET ended early after {received} bytes: {other:?}"),
            }
        }
        fx.server.kill9().await;
        let mut complete = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
                Ok(Ok(Some(chunk))) => received += chunk.len(),
                Ok(Ok(None)) => {
                    complete = true;
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => panic!("client body neither ended nor failed after kill -9"),
            }
        }
        assert!(
            !(complete && received == big.data.len()),
            "client received the complete body although the server was killed midway"
        );
        let gets_before_restart = fx.upstream.blob_gets(REPO, &big.digest);
        assert!(gets_before_restart >= 1);

        // Restart on the same data dir with a healthy, fast upstream.
        fx.upstream.set_blob_slow(&big.digest, None);
        fx.server.restart().await;
        let data = fx.server.data_dir();
        let leftovers = tmp_files(&data);
        assert!(
            leftovers.is_empty(),
            "temp files not cleaned at startup: {leftovers:?}"
        );
        verify_blob_store(&data);

        let target = fx.in_path(REPO);
        pull_image(&fx.client, &target, "v1", &image).await;
        assert!(
            fx.upstream.blob_gets(REPO, &big.digest) > gets_before_restart,
            "the interrupted blob must be fetched from upstream again"
        );

        fx.server.stop().await;
        let stored = verify_blob_store(&data);
        assert!(
            stored.contains(&big.digest),
            "big layer not stored after refetch"
        );
    })
    .await
}

/// SIGTERM while a cold blob is still streaming: the server exits 0 in time, a client body that
/// ended cleanly is correct and the blob is kept (shutdown waits for the fill to commit), and after a
/// restart the store is consistent and the blob is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_cold_download_exits_cleanly() {
    bounded(async {
        let mut fx = Fixture::new().await;
        let image = ImageBuilder::oci().seed(12).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let big = image.largest_blob().clone();
        fx.upstream
            .set_blob_slow(&big.digest, Some(Slow::new(64 * 1024, 40)));
        let url = fx.in_path(REPO).blob_url(&big.digest);

        let reader = {
            let client = fx.client.clone();
            let url = url.clone();
            tokio::spawn(async move { get_streamed(&client, &url).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fx.upstream.blob_gets(REPO, &big.digest) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "download never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        fx.server.stop().await;

        let r = reader.await.unwrap();
        if r.status == 200 && r.complete {
            assert!(
                r.body == big.data,
                "a cleanly ended body must be the whole blob (got {} of {} bytes)",
                r.body.len(),
                big.data.len()
            );
        }

        fx.upstream.set_blob_slow(&big.digest, None);
        let gets_before_restart = fx.upstream.blob_gets(REPO, &big.digest);
        fx.server.restart().await;
        let data = fx.server.data_dir();
        let leftovers = tmp_files(&data);
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        let stored = verify_blob_store(&data);
        if r.status == 200 && r.complete {
            // Shutdown waits for the fill to commit: what a client fully received is kept.
            assert!(
                stored.contains(&big.digest),
                "the client got the whole blob but it was not kept across the restart"
            );
        }
        check_blob(&fx.client, &fx.in_path(REPO), &big).await;
        if r.status == 200 && r.complete {
            assert_eq!(
                fx.upstream.blob_gets(REPO, &big.digest),
                gets_before_restart,
                "a kept blob must be served without asking the upstream again"
            );
        }
    })
    .await
}

/// Pull counts and last-pulled times are batched in memory and written without an fsync; the shutdown flush
/// must make them durable. With metrics on, the index is still referenced when the process exits (a gauge
/// callback holds the store), so nothing but that durable flush saves them: the case that once lost them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_counts_survive_a_graceful_restart_with_metrics_on() {
    bounded(async {
        let mut fx = Fixture::with(UpstreamOptions::default(), |c| ServerConfig {
            extra_yaml: "metrics: \"127.0.0.1:0\"\n".into(),
            ..c
        })
        .await;
        let image = ImageBuilder::oci().small().seed(13).build();
        fx.upstream.push_image(REPO, "v1", &image);
        let target = fx.in_path(REPO);
        pull_image(&fx.client, &target, "v1", &image).await;
        pull_image(&fx.client, &target, "v1", &image).await;
        fx.server.stop().await;

        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .args(["list", "--output", "json", "--data-dir"])
            .arg(fx.server.data_dir())
            .output()
            .expect("run ociregistry list");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let text = listed.to_string();
        let counts: Vec<u64> = listed
            .as_array()
            .or_else(|| listed["images"].as_array())
            .unwrap_or_else(|| panic!("unexpected list output: {text}"))
            .iter()
            .filter_map(|i| i["pull_count"].as_u64())
            .collect();
        assert!(!counts.is_empty(), "no pull counts in {text}");
        assert!(
            counts.iter().all(|&c| c >= 2),
            "pulls made before SIGTERM were lost: {text}"
        );
    })
    .await
}
