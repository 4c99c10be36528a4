//! The access log's drain thread on a real server: it sleeps while no requests come (an idle cache at the edge
//! should not wake a hundred times a second), the next request's line still reaches the log at once, and with
//! the access log off the thread does not run at all.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Context switches so far of the server's thread named `name` (`None`: no such thread).
fn switches(pid: u32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?.path();
        if std::fs::read_to_string(task.join("comm")).ok()?.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).ok()?;
        return Some(
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum(),
        );
    }
    None
}

/// Waits (at most 5 s) for the access-log line of `GET /v2/?n=N`.
async fn line_comes(server: &Server, n: u32) -> bool {
    let query = format!("query=n={n} ");
    server
        .wait_for_log(|l| l.contains("access") && l.contains(&query))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_sleeps_while_idle_and_wakes_for_the_next_line() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path(), &ServerConfig::for_hosts(&[])).await;
        let pid = server.pid().unwrap();
        let client = client();
        let get = |n: u32| {
            let url = format!("{}/v2/?n={n}", server.base_url());
            let client = client.clone();
            async move { client.get(url).send().await.unwrap().status() }
        };
        assert_eq!(get(1).await, 200);
        assert!(
            line_comes(&server, 1).await,
            "the first access-log line never came"
        );
        // Idle: after one empty interval the thread sleeps until woken, looking once a second (a line written
        // just as it went idle is found then). Polling every 10 ms would switch about a hundred times in the
        // second measured here.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = switches(pid, "ociregistry-acc").expect("no access-log thread");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = switches(pid, "ociregistry-acc").unwrap();
        assert!(
            after - before <= 3,
            "the idle access-log thread switched {} times in a second",
            after - before
        );
        // The next request wakes it: its line comes within a few intervals, not after a long sleep.
        let asked = Instant::now();
        assert_eq!(get(2).await, 200);
        assert!(
            line_comes(&server, 2).await,
            "the line of the request after the idle time never came"
        );
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "the line after the idle time took {:?}",
            asked.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_the_access_log_hands_lines_over_in_batches_not_on_a_fast_timer() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path(), &ServerConfig::for_hosts(&[])).await;
        let pid = server.pid().unwrap();
        let client = client();
        let url = format!("{}/v2/", server.base_url());
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = switches(pid, "ociregistry-acc").expect("no access-log thread");
        // A second of requests from 8 connections: lines come all the time, so the thread never idles. Taking
        // the buffers every 10 ms would switch at least a hundred times; at most every 100 ms (or when a buffer
        // fills, which this load does not reach) about ten, plus a few more when the pipe to this test is full.
        let until = Instant::now() + Duration::from_secs(1);
        let mut loaders = Vec::new();
        for _ in 0..8 {
            let (client, url) = (client.clone(), url.clone());
            loaders.push(tokio::spawn(async move {
                let mut n = 0u32;
                while Instant::now() < until {
                    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
                    n += 1;
                }
                n
            }));
        }
        let mut sent = 0;
        for loader in loaders {
            sent += loader.await.unwrap();
        }
        let after = switches(pid, "ociregistry-acc").unwrap();
        assert!(
            after - before <= 60,
            "the access-log thread switched {} times in a second of load ({sent} requests)",
            after - before
        );
        // And every line still comes: the load's, the first request's and the next one's. (Another thread's
        // lines of the same round may be written just after the next one's, so wait for the count.)
        let marker = format!("{}/v2/?n=99", server.base_url());
        assert_eq!(client.get(marker).send().await.unwrap().status(), 200);
        assert!(
            line_comes(&server, 99).await,
            "the line after the load never came"
        );
        let count = |logs: &[String]| {
            logs.iter()
                .filter(|l| l.contains(" access: ") && l.contains("path=/v2/ "))
                .count()
        };
        let expected = sent as usize + 2;
        server.wait_for_logs(|logs| count(logs) >= expected).await;
        assert_eq!(
            count(&server.logs()),
            expected,
            "access-log lines for the load"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_access_log_off_no_line_is_written_and_no_thread_runs() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            log_level: Some("info,access=off".into()),
            ..ServerConfig::for_hosts(&[])
        };
        let server = Server::start(tmp.path(), &config).await;
        let pid = server.pid().unwrap();
        let url = format!("{}/v2/?n=1", server.base_url());
        assert_eq!(client().get(url).send().await.unwrap().status(), 200);
        // The server's own lines still come (the filter is not simply off): stopping it logs one. Before that,
        // the thread list is read while the server runs.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            switches(pid, "ociregistry-acc"),
            None,
            "an access-log thread runs with the access log off"
        );
        let mut server = server;
        server.stop().await;
        let logs = server.logs();
        assert!(
            logs.iter().any(|l| l.contains("stopped")),
            "the server's other lines are missing: {logs:?}"
        );
        assert!(
            !logs
                .iter()
                .any(|l| l.contains("access") && l.contains("query=n=1")),
            "an access-log line was written with the access log off"
        );
    })
    .await;
}
