//! Serving safely under upstream faults: an upstream that accepts connections and never answers must not
//! wedge a digest, and answers come within the configured timeouts.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A listener that accepts connections and never writes a byte (until dropped).
struct Stalled {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Stalled {
    async fn start() -> Stalled {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Stalled { addr, task }
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_upstream_fails_fast_and_does_not_wedge_the_digest() {
    bounded(async {
        let stalled = Stalled::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::for_hosts(&[stalled.addr.to_string()]);
        config.extra_yaml = "upstream_connect_timeout: 1s\nupstream_timeout: 1s\n".into();
        let server = Server::start(tmp.path(), &config).await;
        let client = client();
        let digest = format!("sha256:{}", "cd".repeat(32));
        let url = format!(
            "{}/v2/{}/team/app/blobs/{digest}",
            server.base_url(),
            stalled.addr
        );
        // Several clients at once and one after the other: each gets an answer within the timeouts.
        for round in 0..2 {
            let started = Instant::now();
            let answers: Vec<_> = (0..3)
                .map(|_| {
                    let client = client.clone();
                    let url = url.clone();
                    tokio::spawn(async move { get(&client, &url).await })
                })
                .collect();
            for answer in answers {
                let resp = answer.await.unwrap();
                assert_error(&resp, 502, "UNAVAILABLE", &format!("round {round}"));
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "round {round} took {:?}",
                started.elapsed()
            );
        }
        let manifest = format!(
            "{}/v2/{}/team/app/manifests/v1",
            server.base_url(),
            stalled.addr
        );
        let started = Instant::now();
        let resp = get_manifest(&client, &manifest).await;
        assert_error(
            &resp,
            502,
            "UNAVAILABLE",
            "manifest from a stalled upstream",
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    })
    .await
}

fn raw_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// Sends `request` on a new connection and reads the whole answer.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_report_health_and_readiness_and_recover_without_restart() {
    bounded(async {
        let fx = Fixture::new().await;
        let healthz = raw(fx.server.addr(), &raw_request("/healthz")).await;
        assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
        let ready = raw(fx.server.addr(), &raw_request("/readyz")).await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(ready
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"));
        // The blob directory stops taking writes: not ready, saying why.
        let tmp = fx.server.data_dir().join("blobs/tmp");
        std::fs::remove_dir_all(&tmp).unwrap();
        std::fs::write(&tmp, b"not a directory").unwrap();
        let not_ready = raw(fx.server.addr(), &raw_request("/readyz")).await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("blob directory"), "{not_ready}");
        // Fixed: ready again, no restart.
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        let ready = raw(fx.server.addr(), &raw_request("/readyz")).await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        // Probes are not API traffic: not in the access log. Lines are written in order a moment after the
        // answer, so once a later API request's line is there, a probe's line would be too.
        let marker = raw(fx.server.addr(), &raw_request("/v2/")).await;
        assert!(marker.starts_with("HTTP/1.1 200"), "{marker}");
        assert!(
            fx.server
                .wait_for_log(|l| l.contains("access") && l.contains("path=/v2/ "))
                .await,
            "the access-log line of GET /v2/ never came"
        );
        assert!(
            !fx.server
                .logs()
                .iter()
                .any(|l| l.contains("access") && l.contains("/readyz")),
            "probes were access-logged"
        );
        // Every answer says nosniff, API errors included.
        let error = raw(fx.server.addr(), &raw_request("/v2/x/manifests/%zz")).await;
        assert!(
            error
                .to_ascii_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{error}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_headers_and_idle_connections_are_closed_and_the_connection_cap_holds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(async {
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.extra_yaml = "max_connections: 4\nheader_read_timeout: 1s\n".into();
            c
        })
        .await;
        let addr = fx.server.addr();
        // A slowloris client: part of a request line, then nothing. The server closes it after the timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was never cut off");
        assert!(
            started.elapsed() >= Duration::from_millis(800) && started.elapsed() < Duration::from_secs(4),
            "cut off after {:?}",
            started.elapsed()
        );
        // Four connections that sent nothing take every slot: a fifth client is served at once, and the oldest
        // of them is closed to make room (a slowloris cannot keep real clients out).
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let answer = raw(addr, &raw_request("/v2/")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(500),
            "the fifth connection waited {waited:?}: the oldest unproven connection was not shed"
        );
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_millis(200), idle[0].read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the oldest connection was closed: {closed:?}");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Four keep-alive connections that have each completed a request are never shed: a fifth client
        // waits until they idle out (the cap holds), then is served.
        let mut kept = Vec::new();
        for _ in 0..4 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
            kept.push(stream);
        }
        let started = Instant::now();
        let answer = raw(addr, &raw_request("/v2/")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(700) && waited < Duration::from_secs(5),
            "the fifth connection waited {waited:?} (the cap of 4 did not hold, or slots were not freed)"
        );
        drop(kept);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_does_not_wait_for_connections_that_sent_nothing() {
    bounded(async {
        let mut fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.extra_yaml = "header_read_timeout: 30s\n".into();
            c
        })
        .await;
        let _silent = tokio::net::TcpStream::connect(fx.server.addr())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        // stop() asserts a clean exit within its own 10 s bound.
        fx.server.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_downloads_do_not_starve_the_index() {
    bounded(async {
        // A tiny blocking pool, as a few hundred slow downloads would leave of the default one.
        let fx = Fixture::with(UpstreamOptions::default(), |mut c| {
            c.extra_yaml = "blocking_threads: 4\nupstream_timeout: 20s\n".into();
            c
        })
        .await;
        let image = ImageBuilder::oci().small().seed(130).build();
        fx.upstream.push_image(REPO, "v1", &image);
        // Six slow blobs (64 KiB at 1 KiB per 200 ms: about 13 s each), downloading at once.
        let mut slow = Vec::new();
        for seed in 0..6u64 {
            let filler = ImageBuilder::oci()
                .layer_sizes(&[64 * 1024, 16])
                .seed(140 + seed)
                .build();
            fx.upstream
                .push_image(REPO, &format!("filler{seed}"), &filler);
            let blob = filler.largest_blob().clone();
            fx.upstream
                .set_blob_slow(&blob.digest, Some(Slow::new(1024, 200)));
            let client = fx.client.clone();
            let url = fx.in_path(REPO).blob_url(&blob.digest);
            slow.push(tokio::spawn(
                async move { get_streamed(&client, &url).await },
            ));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Meanwhile a cold manifest (an index read and write) is answered at once.
        let started = Instant::now();
        check_manifest(&fx.client, &fx.in_path(REPO), "v1", &image.index).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "an index operation waited {took:?} behind slow downloads"
        );
        for task in slow {
            task.abort();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_clear_4xx_and_write_nothing() {
    bounded(async {
        let fx = Fixture::new().await;
        let addr = fx.server.addr();
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases: Vec<(String, &str)> = vec![
            // traversal, literal and percent-encoded
            (raw_request("/v2/../../etc/passwd/manifests/latest"), "HTTP/1.1 4"),
            (raw_request("/v2/%2e%2e/%2e%2e/etc/manifests/latest"), "HTTP/1.1 400"),
            (raw_request("/v2/a/..%2f..%2fetc/blobs/sha256:00"), "HTTP/1.1 400"),
            // bad digests and references
            (raw_request("/v2/team/app/blobs/sha256:xyz"), "HTTP/1.1 400"),
            (raw_request("/v2/team/app/blobs/md5:abcd"), "HTTP/1.1 400"),
            (raw_request("/v2/team/app/manifests/-bad-tag"), "HTTP/1.1 400"),
            (raw_request(&format!("/v2/team/app/blobs/{digest}x")), "HTTP/1.1 400"),
            // an unknown method
            (
                "QUERY /v2/team/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
                "HTTP/1.1 405",
            ),
            // a huge header
            (
                format!(
                    "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
                    "a".repeat(100 * 1024)
                ),
                "HTTP/1.1 431",
            ),
            // a broken Range on a blob that is not cached: answered like any miss, not a crash
            (
                format!(
                    "GET /v2/{}/team/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=9-1,zz\r\nConnection: close\r\n\r\n",
                    fx.upstream.host()
                ),
                "HTTP/1.1 404",
            ),
        ];
        for (request, expected) in &cases {
            let answer = raw(addr, request).await;
            let line = answer.lines().next().unwrap_or_default().to_owned();
            assert!(
                answer.starts_with(expected),
                "{:?}… answered {line:?}, expected {expected}",
                &request[..request.len().min(60)]
            );
        }
        // Still serving, and nothing was written outside the blob store's own layout.
        let image = ImageBuilder::oci().small().seed(150).build();
        fx.upstream.push_image(REPO, "v1", &image);
        pull_image(&fx.client, &fx.in_path(REPO), "v1", &image).await;
        // Every stored blob hashes to its name (asserted inside), and no file lies outside the store's layout.
        verify_blob_store(&fx.server.data_dir());
        let data = fx.server.data_dir();
        for path in files_under(&data) {
            let relative = path.strip_prefix(&data).unwrap().to_string_lossy().into_owned();
            assert!(
                relative == "index.redb"
                    || relative == "admin.sock"
                    || relative.starts_with("blobs/sha256/")
                    || relative.starts_with("blobs/tmp/"),
                "unexpected file {relative}"
            );
        }
        assert!(!fx.tmp.path().join("etc").exists());
    })
    .await
}
