//! Operating the cache against a real server and upstream: `prune` while clients pull, shared blobs kept,
//! `list` the same through the admin socket and directly on the index, crash leftovers swept, the disk
//! ceiling with a pinned image, and index files of other versions refused untouched.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Runs the CLI with the fixture's config file.
fn cli(fx: &Fixture, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
        .args(args)
        .arg("--data-dir")
        .arg(fx.server.data_dir())
        .arg("--config-file")
        .arg(fx.tmp.path().join("config.yaml"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run ociregistry");
    eprintln!(
        "[cli] {args:?} -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "command failed");
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn blob_dir_bytes(data: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let meta = e.metadata().unwrap();
                        if meta.is_dir() {
                            walk(&e.path())
                        } else {
                            meta.len()
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&data.join("blobs").join("sha256"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_while_serving_keeps_shared_blobs_and_other_images() {
    bounded(async {
        let mut fx = Fixture::new().await;
        // Same layers and config, different manifests: two images sharing every blob.
        let a = ImageBuilder::oci().small().seed(30).build();
        let b = ImageBuilder::docker().small().seed(30).build();
        fx.upstream.push_image(REPO, "a", &a);
        fx.upstream.push_image(REPO, "b", &b);
        let others: Vec<(String, Image)> = (0..5)
            .map(|i| {
                (
                    format!("other/app{i}"),
                    ImageBuilder::oci().small().seed(40 + i).build(),
                )
            })
            .collect();
        for (repo, image) in &others {
            fx.upstream.push_image(repo, "v1", image);
        }
        pull_image(&fx.client, &fx.in_path(REPO), "a", &a).await;
        pull_image(&fx.client, &fx.in_path(REPO), "b", &b).await;
        for (repo, image) in &others {
            pull_image(&fx.client, &fx.in_path(repo), "v1", image).await;
        }
        let host = fx.upstream.host();

        // 20 clients pull the other images over and over while `team/app:a` is pruned.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pullers = Vec::new();
        for i in 0..20 {
            let (repo, image) = others[i % others.len()].clone();
            let target = fx.in_path(&repo);
            let client = fx.client.clone();
            let stop = stop.clone();
            pullers.push(tokio::spawn(async move {
                let mut pulls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || pulls == 0 {
                    pull_image(&client, &target, "v1", &image).await;
                    pulls += 1;
                }
                pulls
            }));
        }
        let pattern = format!("{host}/{REPO}:a");
        let dry = json(&cli(
            &fx,
            &[
                "prune",
                "--pattern",
                &pattern,
                "--dry-run",
                "--output",
                "json",
            ],
        ));
        assert_eq!(dry["dry_run"], true);
        assert_eq!(dry["images"].as_array().unwrap().len(), 1);
        assert_eq!(dry["blobs"], 0, "every blob of a is shared with b");
        let report = json(&cli(
            &fx,
            &["prune", "--pattern", &pattern, "--output", "json"],
        ));
        assert_eq!(report["images"][0]["reference"], format!("{host}/{REPO}:a"));
        assert_eq!(
            report["manifests"], 3,
            "the index and its two platform manifests"
        );
        assert_eq!(report["blobs"], 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        for puller in pullers {
            // pull_image panics on any failure: a join error is a failed pull.
            total += puller.await.expect("a pull failed during the prune");
        }
        assert!(total >= 20);

        // With the upstream gone, the image sharing the blobs and the others still pull completely; the pruned
        // one is gone (its manifests are no longer cached).
        fx.upstream.stop().await;
        pull_image(&fx.client, &fx.in_path(REPO), "b", &b).await;
        for (repo, image) in &others {
            pull_image(&fx.client, &fx.in_path(repo), "v1", image).await;
        }
        let listed = json(&cli(&fx, &["list", "--output", "json"]));
        let refs: Vec<&str> = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["reference"].as_str().unwrap())
            .collect();
        assert!(!refs.contains(&format!("{host}/{REPO}:a").as_str()));
        assert!(refs.contains(&format!("{host}/{REPO}:b").as_str()));
        let res = fx
            .client
            .get(fx.in_path(REPO).manifest_url("a"))
            .send()
            .await
            .unwrap();
        assert!(
            !res.status().is_success(),
            "a pruned tag is not served from memory"
        );
        fx.server.stop().await;
        verify_blob_store(&fx.server.data_dir());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_is_the_same_through_the_server_and_directly() {
    bounded(async {
        let mut fx = Fixture::new().await;
        for i in 0..3 {
            let image = ImageBuilder::oci().small().seed(50 + i).build();
            fx.upstream.push_image(REPO, &format!("v{i}"), &image);
            pull_image(&fx.client, &fx.in_path(REPO), &format!("v{i}"), &image).await;
        }
        // A pull's last blob is indexed just after the client has its bytes: wait for all 18 (3 images of 2
        // platforms with a config and 2 layers each).
        let mut through_server = serde_json::Value::Null;
        for _ in 0..50 {
            let out = cli(&fx, &["list", "--output", "json"]);
            assert!(stderr(&out).contains("using the server at"));
            through_server = json(&out);
            if through_server["total"]["blobs"] == 18 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(through_server["total"]["blobs"], 18);
        fx.server.stop().await;
        let direct = cli(&fx, &["list", "--output", "json"]);
        assert!(stderr(&direct).contains("no server is running; using"));
        let mut direct = json(&direct);
        // Access times and counts are flushed at shutdown: compare the rest.
        for list in [&mut through_server, &mut direct] {
            for image in list["images"].as_array_mut().unwrap() {
                let image = image.as_object_mut().unwrap();
                image.remove("last_pulled");
                image.remove("pull_count");
            }
        }
        assert_eq!(through_server, direct);
        assert_eq!(direct["images"].as_array().unwrap().len(), 3);
        assert_eq!(
            direct["images"][0]["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        let table = cli(&fx, &["list"]);
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(
            text.contains("KiB") && text.contains("total: 3 images"),
            "{text}"
        );
        let bad = cli(&fx, &["list", "--pattern", "a[b"]);
        assert!(!bad.status.success());
        assert!(stderr(&bad).contains("pattern"), "a bad glob is named");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_leftovers_are_swept() {
    bounded(async {
        let mut fx = Fixture::new().await;
        let image = ImageBuilder::oci().small().seed(60).build();
        fx.upstream.push_image(REPO, "v1", &image);
        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        fx.server.stop().await;
        let data = fx.server.data_dir();

        // A whole blob no index entry knows (a crash between a removal's commit and its unlink), old enough to
        // be outside the grace period, and an indexed blob whose file is gone.
        let stray = pseudo_random_bytes(61, 5000);
        let stray_digest = sha256_digest(&stray);
        let hex = stray_digest.strip_prefix("sha256:").unwrap();
        let stray_path = data.join("blobs/sha256").join(&hex[..2]).join(hex);
        std::fs::create_dir_all(stray_path.parent().unwrap()).unwrap();
        std::fs::write(&stray_path, &stray).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&stray_path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let lost = &image.children[0].layers[1];
        let lost_hex = lost.digest.strip_prefix("sha256:").unwrap();
        let lost_path = data
            .join("blobs/sha256")
            .join(&lost_hex[..2])
            .join(lost_hex);
        std::fs::remove_file(&lost_path).unwrap();
        let before = json(&cli(&fx, &["stats", "--output", "json"]));

        fx.server.restart().await;
        assert!(
            fx.server
                .wait_for_log(|l| l.contains("swept leftovers of an earlier run"))
                .await
        );
        assert!(!stray_path.exists(), "the stray blob file was removed");
        let after = json(&cli(&fx, &["stats", "--output", "json"]));
        assert_eq!(
            after["blobs"].as_u64().unwrap(),
            before["blobs"].as_u64().unwrap() - 1,
            "the entry of the lost file was dropped"
        );
        // The lost blob is fetched again.
        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        assert!(lost_path.exists());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_ceiling_evicts_least_recently_pulled_and_keeps_pins() {
    bounded(async {
        let ceiling: u64 = 250_000;
        let fx = Fixture::with(UpstreamOptions::default(), |c| ServerConfig {
            extra_yaml: format!("max_cache_bytes: {ceiling}\n"),
            ..c
        })
        .await;
        let host = fx.upstream.host();
        let images: Vec<Image> = (0..8)
            .map(|i| ImageBuilder::oci().small().seed(70 + i).build())
            .collect();
        let size_of = |image: &Image| {
            image
                .blobs()
                .iter()
                .map(|b| b.data.len() as u64)
                .sum::<u64>()
        };
        assert!(size_of(&images[0]) * 8 > ceiling * 2);
        for (i, image) in images.iter().enumerate() {
            fx.upstream.push_image(REPO, &format!("v{i}"), image);
        }
        pull_image(&fx.client, &fx.in_path(REPO), "v0", &images[0]).await;
        let pin = cli(&fx, &["pin", &format!("{host}/{REPO}:v0")]);
        assert!(pin.status.success());
        let mut peak = 0;
        for (i, image) in images.iter().enumerate().skip(1) {
            pull_image(&fx.client, &fx.in_path(REPO), &format!("v{i}"), image).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            peak = peak.max(blob_dir_bytes(&fx.server.data_dir()));
        }
        // Between checks the directory may exceed the ceiling by the image being pulled, no more.
        assert!(
            peak <= ceiling + size_of(&images[1]),
            "blob directory peaked at {peak} bytes, ceiling {ceiling}"
        );
        assert!(blob_dir_bytes(&fx.server.data_dir()) <= ceiling);
        assert!(
            fx.server
                .wait_for_log(|l| l.contains("evicted least recently pulled"))
                .await
        );
        // The pinned image survived: it pulls completely with the upstream gone.
        fx.upstream.stop().await;
        pull_image(&fx.client, &fx.in_path(REPO), "v0", &images[0]).await;
        let listed = json(&cli(&fx, &["list", "--output", "json"]));
        let pinned: Vec<&serde_json::Value> = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["pinned"] == true)
            .collect();
        assert_eq!(pinned.len(), 1);
        assert!(listed["images"].as_array().unwrap().len() < images.len());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_of_another_version_is_refused_untouched() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/index-redb2.redb.gz");
        let unpacked = Command::new("gzip")
            .arg("-dc")
            .arg(&fixture)
            .output()
            .expect("gzip");
        assert!(unpacked.status.success());
        let db = data.join("index.redb");
        std::fs::write(&db, &unpacked.stdout).unwrap();
        let before = sha256_digest(&std::fs::read(&db).unwrap());
        for args in [
            vec!["serve", "--listen", "127.0.0.1:0"],
            vec!["list"],
            vec!["prune", "--older-than", "1d"],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
                .args(&args)
                .arg("--data-dir")
                .arg(&data)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} must refuse the file");
            assert!(
                err.contains("redb file format 2") && err.contains("older ociregistry"),
                "{args:?}: {err}"
            );
        }
        assert_eq!(
            sha256_digest(&std::fs::read(&db).unwrap()),
            before,
            "the file was modified"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn automatic_pruning_removes_images_not_pulled_for_a_while() {
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |c| ServerConfig {
            extra_yaml: "prune_older_than: 2s\nprune_interval: 1s\n".into(),
            ..c
        })
        .await;
        let old = ImageBuilder::oci().small().seed(80).build();
        fx.upstream.push_image(REPO, "old", &old);
        pull_image(&fx.client, &fx.in_path(REPO), "old", &old).await;
        assert!(
            fx.server
                .wait_for_log(|l| l.contains("pruned") && l.contains("images=1"))
                .await
        );
        let listed = json(&cli(&fx, &["list", "--output", "json"]));
        assert_eq!(listed["images"].as_array().unwrap().len(), 0);
        assert_eq!(
            blob_dir_bytes(&fx.server.data_dir()),
            0,
            "its blobs went with it"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_index_without_a_socket_is_a_clear_error() {
    bounded(async {
        let socket =
            std::env::temp_dir().join(format!("ociregistry-test-{}.sock", std::process::id()));
        let fx = Fixture::with(UpstreamOptions::default(), |c| ServerConfig {
            extra_yaml: format!("admin_socket: \"{}\"\n", socket.display()),
            ..c
        })
        .await;
        // Without the config file that names the socket.
        let out = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .args(["list", "--data-dir"])
            .arg(fx.server.data_dir())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("in use by another process") && err.contains("--admin-socket"),
            "{err}"
        );
        // Pointed at the right socket, it works.
        let ok = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .args(["list", "--admin-socket"])
            .arg(&socket)
            .arg("--data-dir")
            .arg(fx.server.data_dir())
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    })
    .await
}
