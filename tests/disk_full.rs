//! A full disk, for real: the data directory is a 16 MiB tmpfs. Blobs that do not fit are streamed to clients
//! uncached (and still verified), cached images keep being served, `/readyz` says the disk is full, a failed
//! index write does not break the index, and everything recovers once space is freed, without a restart.
//! Needs root (to mount the tmpfs); the suite runs as root (scripts/test).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Unmounts the tmpfs when the test ends (after the server, declared later, was killed).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (scripts/test runs as root)"
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Fills the filesystem of `dir` with `name` until only about `leave` bytes are free (0: completely).
fn fill_to(dir: &Path, name: &str, leave: u64) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let n = ((free - leave) as usize).min(chunk.len());
        if file.write_all(&chunk[..n]).is_err() {
            break;
        }
        let _ = file.flush();
    }
}

async fn readyz(client: &reqwest::Client, server: &Server) -> (u16, String) {
    let res = client
        .get(format!("{}/readyz", server.base_url()))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// GETs a blob until its bytes are right (at most 3 tries): a fill cut short by the full disk fails its
/// request, and the retry is served uncached.
async fn get_blob(client: &reqwest::Client, target: &Target, blob: &Blob) {
    for attempt in 1..=3 {
        let res = client.get(target.blob_url(&blob.digest)).send().await;
        if let Ok(res) = res {
            if res.status().is_success() {
                if let Ok(body) = res.bytes().await {
                    if body == blob.data {
                        return;
                    }
                    assert_ne!(body.len(), blob.data.len(), "a complete-looking wrong body");
                }
            }
        }
        eprintln!("[test] blob {} attempt {attempt} failed", blob.digest);
    }
    panic!("blob {} could not be pulled on a full disk", blob.digest);
}

async fn get_image(client: &reqwest::Client, target: &Target, tag: &str, image: &Image) {
    check_manifest(client, target, tag, &image.index).await;
    for child in &image.children {
        check_manifest(client, target, &child.manifest.digest, &child.manifest).await;
    }
    for blob in image.blobs() {
        get_blob(client, target, blob).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_degrades_to_uncached_serving_and_recovers_without_a_restart() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let _mount = Mount::tmpfs(&data, "16m");
        let upstream = TestUpstream::start().await;
        let config = ServerConfig {
            extra_yaml: "min_free_bytes: 2MiB\n".into(),
            ..ServerConfig::for_upstream(&upstream)
        };
        let server = Server::start(tmp.path(), &config).await;
        let client = client();
        let target = Target::in_path(&server, &upstream.host(), REPO);

        let small = ImageBuilder::oci().small().seed(90).build();
        upstream.push_image(REPO, "small", &small);
        pull_image(&client, &target, "small", &small).await;

        // Room for one 3 MiB layer, not two: the second is streamed uncached.
        fill_to(&data, "filler-1", 6 * MIB as u64);
        let big = ImageBuilder::oci().seed(91).build();
        upstream.push_image(REPO, "big", &big);
        get_image(&client, &target, "big", &big).await;
        assert!(
            server
                .wait_for_log(|l| l.contains("disk full: serving the blob without caching it"))
                .await
        );
        let stored = verify_blob_store(&data);
        let big_layers: Vec<&str> = big
            .children
            .iter()
            .map(|c| c.layers[0].digest.as_str())
            .collect();
        assert_eq!(
            big_layers
                .iter()
                .filter(|d| stored.iter().any(|s| s == *d))
                .count(),
            1,
            "one big layer fitted, the other was served uncached"
        );
        assert_eq!(
            std::fs::read_dir(data.join("blobs/tmp")).unwrap().count(),
            0,
            "no partial file left"
        );

        // Another process fills the disk: not ready, but what is cached is still served.
        fill_to(&data, "filler-2", 0);
        let (status, body) = readyz(&client, &server).await;
        assert_eq!(status, 503);
        assert!(body.contains("disk"), "{body}");
        let gets_before = upstream.total_requests();
        pull_image(&client, &target, "small", &small).await;
        assert_eq!(
            upstream.total_requests(),
            gets_before,
            "served from the cache"
        );

        // A new image on a completely full disk: its manifests cannot be indexed (redb fails on the write and
        // is reopened); blobs come uncached.
        let late = ImageBuilder::oci().small().seed(92).build();
        upstream.push_image(REPO, "late", &late);
        let _ = client.get(target.manifest_url("late")).send().await;
        for blob in late.blobs() {
            get_blob(&client, &target, blob).await;
        }

        // Space comes back: ready again, and new content is cached, with no restart.
        std::fs::remove_file(data.join("filler-2")).unwrap();
        std::fs::remove_file(data.join("filler-1")).unwrap();
        let mut ready = false;
        for _ in 0..50 {
            if readyz(&client, &server).await.0 == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "ready again once space is freed");
        pull_image(&client, &target, "late", &late).await;
        assert!(
            server
                .logs()
                .iter()
                .any(|l| l.contains("the index failed after an I/O error and was reopened")),
            "the failed index write was recovered by reopening the index"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stored = verify_blob_store(&data);
        for blob in late.blobs() {
            assert!(
                stored.contains(&blob.digest),
                "{} is cached after recovery",
                blob.digest
            );
        }
        let listed = Command::new(env!("CARGO_BIN_EXE_ociregistry"))
            .args(["list", "--output", "json", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let refs: Vec<String> = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["tag"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            refs.contains(&"small".to_string()) && refs.contains(&"late".to_string()),
            "{refs:?}"
        );
        drop(server);
    })
    .await
}
