//! Metrics against a real server and two upstreams: a scripted pull sequence (cold then warm, two namespaces,
//! one unknown tag, one digest mismatch) moves each counter by exactly the expected amount, and the scrape is
//! Prometheus text the way the docs say.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;

/// Metric samples by `name{label="value",...}` (labels sorted), histogram buckets left out.
type Scrape = HashMap<String, f64>;

fn parse(text: &str) -> Scrape {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() || line.contains("_bucket{") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let labels: BTreeMap<&str, &str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k, v.trim_matches('"')))
                    .collect();
                let labels: Vec<String> =
                    labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_string(),
        };
        out.insert(key, value.parse().expect("sample value"));
    }
    out
}

async fn scrape(client: &reqwest::Client, url: &str) -> (String, Scrape) {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    let parsed = parse(&text);
    (text, parsed)
}

fn get(s: &Scrape, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

/// `after - before` for each key.
fn delta(before: &Scrape, after: &Scrape, key: &str) -> f64 {
    get(after, key) - get(before, key)
}

/// The `/metrics` URL of a server started with `metrics: "127.0.0.1:0"`, from its start-up banner.
fn metrics_url(server: &Server) -> String {
    let addr = server
        .logs()
        .iter()
        .find_map(|l| {
            l.split("metrics=Some(")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .map(str::to_owned)
        })
        .expect("the banner names the metrics address");
    format!("http://{addr}/metrics")
}

fn image_bytes(image: &Image) -> f64 {
    let manifests: usize = image.manifests().iter().map(|m| m.data.len()).sum();
    let blobs: usize = image.blobs().iter().map(|b| b.data.len()).sum();
    (manifests + blobs) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scripted_pull_sequence_moves_each_counter_by_the_expected_amount() {
    bounded(async {
        let a = TestUpstream::start().await;
        let b = TestUpstream::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            extra_yaml: "metrics: \"127.0.0.1:0\"\n".into(),
            ..ServerConfig::for_hosts(&[a.host(), b.host()])
        };
        let server = Server::start(tmp.path(), &config).await;
        let url = metrics_url(&server);
        let client = client();
        let (ns_a, ns_b) = (a.host(), b.host());
        let image_a = ImageBuilder::oci().small().seed(200).build();
        let image_b = ImageBuilder::docker().small().seed(201).build();
        a.push_image(REPO, "v1", &image_a);
        b.push_image(REPO, "v1", &image_b);
        let target_a = Target::in_path(&server, &ns_a, REPO);
        let target_b = Target::in_path(&server, &ns_b, REPO);
        let manifests = |image: &Image| image.manifests().len() as f64;
        let blobs = |image: &Image| image.blobs().len() as f64;

        // Cold pull from A: each manifest GET goes upstream once, its HEAD is then answered from the cache;
        // each blob GET is a fill.
        let (_, s0) = scrape(&client, &url).await;
        pull_image(&client, &target_a, "v1", &image_a).await;
        let (_, s1) = scrape(&client, &url).await;
        let pulls = |source: &str, ns: &str| format!("ociregistry_manifest_pulls_total{{namespace=\"{ns}\",source=\"{source}\"}}");
        let blob_pulls = |source: &str, ns: &str| format!("ociregistry_blob_pulls_total{{namespace=\"{ns}\",source=\"{source}\"}}");
        assert_eq!(delta(&s0, &s1, &pulls("upstream", &ns_a)), manifests(&image_a));
        assert_eq!(delta(&s0, &s1, &pulls("cache", &ns_a)), manifests(&image_a));
        assert_eq!(delta(&s0, &s1, &blob_pulls("upstream", &ns_a)), blobs(&image_a));
        assert_eq!(delta(&s0, &s1, &blob_pulls("cache", &ns_a)), 0.0);
        assert_eq!(
            delta(&s0, &s1, "ociregistry_served_bytes_total{cache=\"miss\"}"),
            image_bytes(&image_a),
            "every GET body of the cold pull was a miss"
        );
        assert!(delta(&s0, &s1, &format!("ociregistry_upstream_fetched_bytes_total{{namespace=\"{ns_a}\"}}")) >= image_bytes(&image_a));

        // Warm pull from A: all from the cache, nothing upstream.
        pull_image(&client, &target_a, "v1", &image_a).await;
        let (_, s2) = scrape(&client, &url).await;
        assert_eq!(delta(&s1, &s2, &pulls("upstream", &ns_a)), 0.0);
        assert_eq!(delta(&s1, &s2, &pulls("cache", &ns_a)), 2.0 * manifests(&image_a));
        assert_eq!(delta(&s1, &s2, &blob_pulls("cache", &ns_a)), blobs(&image_a));
        assert_eq!(delta(&s1, &s2, &blob_pulls("upstream", &ns_a)), 0.0);
        assert_eq!(
            delta(&s1, &s2, "ociregistry_served_bytes_total{cache=\"hit\"}"),
            image_bytes(&image_a)
        );
        let requests = |endpoint: &str, method: &str, status: u16| {
            format!("ociregistry_http_requests_total{{endpoint=\"{endpoint}\",method=\"{method}\",status=\"{status}\"}}")
        };
        assert_eq!(delta(&s1, &s2, &requests("manifest", "GET", 200)), manifests(&image_a));
        assert_eq!(delta(&s1, &s2, &requests("manifest", "HEAD", 200)), manifests(&image_a));
        assert_eq!(delta(&s1, &s2, &requests("blob", "GET", 200)), blobs(&image_a));
        assert_eq!(
            delta(&s1, &s2, "ociregistry_http_request_duration_seconds_count{endpoint=\"blob\",method=\"GET\"}"),
            blobs(&image_a)
        );

        // The second namespace, cold; namespaces stay apart.
        pull_image(&client, &target_b, "v1", &image_b).await;
        let (_, s3) = scrape(&client, &url).await;
        assert_eq!(delta(&s2, &s3, &pulls("upstream", &ns_b)), manifests(&image_b));
        assert_eq!(delta(&s2, &s3, &blob_pulls("upstream", &ns_b)), blobs(&image_b));
        assert_eq!(delta(&s2, &s3, &pulls("upstream", &ns_a)), 0.0);

        // One unknown tag: a 404 MANIFEST_UNKNOWN, no upstream error (it is an answer, not trouble).
        let res = client.get(target_a.manifest_url("nope")).send().await.unwrap();
        assert_eq!(res.status(), 404);
        // One digest mismatch: B serves corrupted bytes for a manifest not yet cached.
        let other = ImageBuilder::oci().small().seed(202).build();
        b.push_image(REPO, "v2", &other);
        b.set_manifest_corrupt(&other.children[0].manifest.digest, true);
        let res = client
            .get(target_b.manifest_url(&other.children[0].manifest.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 502);
        let (text, s4) = scrape(&client, &url).await;
        assert_eq!(delta(&s3, &s4, "ociregistry_http_errors_total{code=\"MANIFEST_UNKNOWN\"}"), 1.0);
        assert_eq!(delta(&s3, &s4, "ociregistry_http_errors_total{code=\"DIGEST_INVALID\"}"), 1.0);
        assert_eq!(
            delta(
                &s3,
                &s4,
                &format!("ociregistry_upstream_errors_total{{kind=\"manifest\",namespace=\"{ns_b}\",reason=\"digest_mismatch\"}}")
            ),
            1.0
        );
        assert_eq!(
            delta(&s3, &s4, &format!("ociregistry_upstream_errors_total{{kind=\"manifest\",namespace=\"{ns_a}\",reason=\"4xx\"}}")),
            0.0
        );
        assert_eq!(delta(&s3, &s4, &requests("manifest", "GET", 404)), 1.0);

        // Gauges: the index and the disk as they are.
        assert_eq!(
            get(&s4, "ociregistry_cached_manifests"),
            manifests(&image_a) + manifests(&image_b)
        );
        assert!(get(&s4, "ociregistry_disk_free_bytes") > 0.0);
        assert!(get(&s4, "ociregistry_hot_cache_entries{kind=\"manifest\"}") >= 1.0);
        assert!(get(&s4, "process_resident_memory_bytes") > 1e6);
        assert!(get(&s4, "process_open_fds") > 3.0);
        // Fills end just after their last reader got its bytes (fsync, rename): give them a moment.
        let mut in_flight = get(&s4, "ociregistry_fills_in_flight");
        for _ in 0..50 {
            if in_flight == 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            in_flight = get(&scrape(&client, &url).await.1, "ociregistry_fills_in_flight");
        }
        assert_eq!(in_flight, 0.0);
        // Every fill has committed now (the gauge counts committed blobs only).
        let blob_bytes: usize = image_a.blobs().iter().chain(image_b.blobs().iter()).map(|b| b.data.len()).sum();
        assert_eq!(get(&scrape(&client, &url).await.1, "ociregistry_disk_blob_bytes"), blob_bytes as f64);
        // Bounded labels: no repository or digest anywhere.
        assert!(!text.contains(REPO), "a repository leaked into a label");
        assert!(!text.contains("sha256:"), "a digest leaked into a label");
        check_documented(&text);
    })
    .await
}

/// docs/observability.md's table and the scrape agree: every exported family is documented, and every family
/// documented as appearing "at start" or "after a pull" is exported (the scripted sequence above did pulls).
fn check_documented(scrape_text: &str) {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/observability.md"
    ))
    .unwrap();
    let mut documented = std::collections::BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let appears = cells[cells.len() - 2].to_string();
        documented.insert(name, appears);
    }
    assert!(documented.len() > 20, "the metric table was not found");
    let exported: std::collections::BTreeSet<String> = scrape_text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for family in &exported {
        assert!(
            documented.contains_key(family),
            "{family} is exported but not in docs/observability.md"
        );
    }
    for (name, appears) in &documented {
        if appears == "at start" || appears == "after a pull" {
            assert!(
                exported.contains(name),
                "{name} is documented ({appears}) but was not exported"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_repository_gauges_follow_the_index() {
    bounded(async {
        let upstream = TestUpstream::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            extra_yaml: "metrics: \"127.0.0.1:0\"\nmetrics_repositories: true\nmetrics_refresh_interval: 200ms\n"
                .into(),
            ..ServerConfig::for_upstream(&upstream)
        };
        let server = Server::start(tmp.path(), &config).await;
        let url = metrics_url(&server);
        let client = client();
        let image = ImageBuilder::oci().small().seed(210).build();
        upstream.push_image(REPO, "v1", &image);
        upstream.push_image(REPO, "v2", &image);
        let target = Target::in_path(&server, &upstream.host(), REPO);
        pull_image(&client, &target, "v1", &image).await;
        pull_image(&client, &target, "v2", &image).await;
        let repository = format!("{}/{REPO}", upstream.host());
        let tags_key = format!("repository_tags_total{{repository=\"{repository}\"}}");
        let mut scraped = Scrape::new();
        for _ in 0..50 {
            scraped = scrape(&client, &url).await.1;
            if get(&scraped, &tags_key) == 2.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(get(&scraped, &tags_key), 2.0);
        let layers: usize = image.children.iter().map(|c| c.layers.len()).sum();
        assert_eq!(
            get(&scraped, &format!("repository_tag_layers_total{{repository=\"{repository}\",tag=\"v1\"}}")),
            layers as f64
        );
        assert_eq!(
            get(&scraped, &format!("repository_tag_size_bytes{{repository=\"{repository}\",tag=\"v2\"}}")),
            image_bytes(&image)
        );
    })
    .await
}

/// Slow downloads and requests by client network: a throttled upstream makes the cold blob GETs slower than the
/// configured rate (counted, as misses); the same blobs from the cache are fast (not counted); every request is
/// counted under the configured site of its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_downloads_and_client_networks() {
    bounded(async {
        let upstream = TestUpstream::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            extra_yaml: "metrics: \"127.0.0.1:0\"\nmetrics_slow_download_bytes_per_sec: 8MiB\nmetrics_client_networks:\n  loopback: [127.0.0.0/8]\n  elsewhere: [10.0.0.0/8]\n".into(),
            ..ServerConfig::for_upstream(&upstream)
        };
        let server = Server::start(tmp.path(), &config).await;
        let url = metrics_url(&server);
        let client = client();
        let image = ImageBuilder::oci().seed(220).build();
        upstream.push_image(REPO, "v1", &image);
        let big: Vec<&Blob> = image.blobs().into_iter().filter(|b| b.data.len() >= 1024 * 1024).collect();
        assert!(!big.is_empty(), "the image has blobs of at least 1 MiB");
        // 64 KiB every 20 ms: about 3 MiB/s, well under the 8 MiB/s of the configuration.
        for blob in &big {
            upstream.set_blob_slow(&blob.digest, Some(Slow::new(64 * 1024, 20)));
        }
        let target = Target::in_path(&server, &upstream.host(), REPO);
        let (_, s0) = scrape(&client, &url).await;
        pull_image(&client, &target, "v1", &image).await;
        let (_, s1) = scrape(&client, &url).await;
        assert_eq!(
            delta(&s0, &s1, "ociregistry_slow_downloads_total{cache=\"miss\"}"),
            big.len() as f64,
            "each throttled cold blob of at least 1 MiB is a slow download"
        );
        // A client has its bytes just before the fill commits them (fsync, rename): let the fills end, so the
        // warm pull below is all hits.
        for _ in 0..100 {
            if get(&scrape(&client, &url).await.1, "ociregistry_fills_in_flight") == 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (_, s1) = scrape(&client, &url).await;
        pull_image(&client, &target, "v1", &image).await;
        let (text, s2) = scrape(&client, &url).await;
        assert_eq!(
            delta(&s1, &s2, "ociregistry_slow_downloads_total{cache=\"hit\"}"),
            0.0,
            "blobs from the cache over loopback are not slow"
        );
        // pull_image asks GET and HEAD of every manifest and blob.
        let requests = 2 * (image.manifests().len() + image.blobs().len());
        assert_eq!(
            delta(&s1, &s2, "ociregistry_client_requests_total{cache=\"hit\",network=\"loopback\"}"),
            requests as f64,
            "the warm pull's requests, all hits, all from the loopback site"
        );
        // The cold pull: every GET is a local miss of the site; a HEAD right after a GET may still see the fill
        // committing (a miss too), the others are hits.
        let cold_misses = delta(&s0, &s1, "ociregistry_client_requests_total{cache=\"miss\",network=\"loopback\"}");
        let cold_hits = delta(&s0, &s1, "ociregistry_client_requests_total{cache=\"hit\",network=\"loopback\"}");
        assert!(cold_misses >= (image.manifests().len() + image.blobs().len()) as f64, "{cold_misses}");
        assert_eq!(cold_misses + cold_hits, requests as f64);
        assert!(!text.contains("network=\"elsewhere\""), "no request came from the other site");
        assert!(!text.contains("network=\"other\""), "every client is in a configured site");
        assert!(text.contains("ociregistry_blocking_queue_depth "), "{text}");
        assert!(text.contains("ociregistry_blocking_jobs_running "));
    })
    .await
}
