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
