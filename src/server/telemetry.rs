//! Request metrics: requests by endpoint kind, method and status; latency to the response head; API errors by
//! OCI code; bytes served from the cache and from upstream fills; slow blob downloads; requests by client
//! network (when configured). Labels are bounded: never a repository or a digest, and client networks only as
//! configured sites or at most `metrics_max_series` prefixes.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;

use super::path::ApiPath;
use crate::cache::CacheStatus;
use crate::config::{ClientNetworks, Config};
use crate::metrics::histogram::{Exported, TimeHistograms};
use crate::metrics::tally::{Counters, Tally};

/// Blob bodies smaller than this never count as slow downloads: their time is mostly latency, not throughput.
pub const SLOW_DOWNLOAD_MIN_BYTES: u64 = 1024 * 1024;

struct Instruments {
    /// `ociregistry_http_requests` by endpoint kind, method and status (an observable counter over this).
    requests: Arc<Requests>,
    /// `ociregistry_http_request_duration_seconds`, a series per endpoint kind and method, found by index.
    duration: Arc<TimeHistograms>,
    errors: Counter<u64>,
    /// `ociregistry_served_bytes` by cache hit or miss (an observable counter over this).
    served: Arc<Counters<2>>,
    slow_downloads: Counter<u64>,
    client_requests: Counter<u64>,
}

/// What the configuration says about request metrics.
struct Settings {
    slow_bytes_per_sec: u64,
    networks: Option<Networks>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Takes the request-metric settings from the configuration (once, at start-up).
pub fn configure(config: &Config) {
    let _ = SETTINGS.set(Settings {
        slow_bytes_per_sec: config.metrics_slow_download_bytes_per_sec.as_u64(),
        networks: config
            .metrics_client_networks
            .clone()
            .map(|grouping| Networks {
                grouping,
                seen: Mutex::new(HashSet::new()),
                cap: config.metrics_max_series,
            }),
    });
}

/// Client networks as labels.
struct Networks {
    grouping: ClientNetworks,
    /// Prefixes already given a series (prefix mode), at most `cap`.
    seen: Mutex<HashSet<ipnet::IpNet>>,
    cap: usize,
}

impl Networks {
    fn label(&self, ip: IpAddr) -> String {
        let ip = ip.to_canonical();
        match &self.grouping {
            ClientNetworks::Prefix => {
                let len = if ip.is_ipv4() { 24 } else { 48 };
                let Ok(net) = ipnet::IpNet::new(ip, len).map(|n| n.trunc()) else {
                    return "other".into();
                };
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.contains(&net) || (seen.len() < self.cap && seen.insert(net)) {
                    net.to_string()
                } else {
                    "other".into()
                }
            }
            ClientNetworks::Sites(sites) => sites
                .iter()
                .flat_map(|(name, nets)| nets.iter().map(move |n| (name, n)))
                .filter(|(_, net)| net.contains(&ip))
                .max_by_key(|(_, net)| net.prefix_len())
                .map_or_else(|| "other".into(), |(name, _)| name.clone()),
        }
    }
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = crate::metrics::meter();
    Instruments {
        requests: {
            let requests = Arc::new(Requests::default());
            let observed = requests.clone();
            meter
                .u64_observable_counter("ociregistry_http_requests")
                .with_description("Requests to the registry API, by endpoint kind, method and status")
                .with_callback(move |o| {
                    observed.each(|(endpoint, method, status), n| {
                        o.observe(
                            n,
                            &[
                                KeyValue::new("endpoint", endpoint.as_str()),
                                KeyValue::new("method", method.as_str()),
                                KeyValue::new("status", i64::from(status)),
                            ],
                        )
                    })
                })
                .build();
            requests
        },
        duration: {
            let series = Endpoint::ALL
                .iter()
                .flat_map(|endpoint| {
                    Method::ALL
                        .iter()
                        .map(|method| vec![endpoint.as_str(), method.as_str()])
                })
                .collect();
            let histograms = Arc::new(
                TimeHistograms::new(
                    "ociregistry_http_request_duration_seconds",
                    "Time to the response head, by endpoint kind and method",
                    crate::metrics::LATENCY_BUCKETS,
                    &["endpoint", "method"],
                    series,
                )
                .expect("valid metric and label names"),
            );
            crate::metrics::register(Box::new(Exported(histograms.clone())));
            histograms
        },
        errors: meter
            .u64_counter("ociregistry_http_errors")
            .with_description("API error answers, by OCI error code")
            .build(),
        // Counted at index `cache as usize`.
        served: Counters::exported(
            meter
                .u64_observable_counter("ociregistry_served")
                .with_unit("By")
                .with_description("Bytes of manifest and blob bodies answered, by cache hit or miss"),
            "cache",
            [CacheStatus::Hit.as_str(), CacheStatus::Miss.as_str()],
        ),
        slow_downloads: meter
            .u64_counter("ociregistry_slow_downloads")
            .with_description(
                "Blob downloads of at least 1 MiB sent slower than metrics_slow_download_bytes_per_sec, by cache hit or miss",
            )
            .build(),
        client_requests: meter
            .u64_counter("ociregistry_client_requests")
            .with_description(
                "Requests by client network (metrics_client_networks) and cache hit, miss or none",
            )
            .build(),
    }
});

/// The index of an (endpoint kind, method) pair, in the order of `Endpoint::ALL` then `Method::ALL`: the order of
/// the latency histogram's series, and of the request counters' blocks of statuses.
fn series(endpoint: Endpoint, method: Method) -> usize {
    endpoint as usize * Method::ALL.len() + method as usize
}

/// Statuses the API answers with, counted in fixed cells; any other is counted in a [`Tally`].
const STATUSES: [u16; 17] = [
    200, 206, 304, 307, 400, 401, 403, 404, 405, 406, 413, 416, 429, 500, 502, 503, 504,
];
const REQUEST_CELLS: usize = Endpoint::ALL.len() * Method::ALL.len() * STATUSES.len();

/// Requests by endpoint kind, method and status.
#[derive(Default)]
struct Requests {
    common: Counters<REQUEST_CELLS>,
    other: Tally<(Endpoint, Method, u16)>,
}

impl Requests {
    fn add(&self, endpoint: Endpoint, method: Method, status: u16) {
        match STATUSES.iter().position(|&s| s == status) {
            Some(slot) => self.common.add(Self::cell(endpoint, method, slot), 1),
            None => self.other.add((endpoint, method, status), 1),
        }
    }

    fn cell(endpoint: Endpoint, method: Method, slot: usize) -> usize {
        series(endpoint, method) * STATUSES.len() + slot
    }

    /// Calls `f` with every (endpoint, method, status) counted and its count (at scrape time).
    fn each(&self, mut f: impl FnMut((Endpoint, Method, u16), u64)) {
        for endpoint in Endpoint::ALL {
            for method in Method::ALL {
                for (slot, &status) in STATUSES.iter().enumerate() {
                    let n = self.common.sum(Self::cell(endpoint, method, slot));
                    if n > 0 {
                        f((endpoint, method, status), n);
                    }
                }
            }
        }
        self.other.each(|&key, n| f(key, n));
    }
}

/// What a content answer (a manifest or a blob) says about itself, as a response extension: the endpoint kind
/// the router took, so the request metrics need not parse the path again, and whether the cache had it. Answers
/// without it (errors, the base endpoint) are labelled by [`Endpoint::of`] their path.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    pub endpoint: Endpoint,
    pub cache: CacheStatus,
}

/// The kind of endpoint a request is for, as the `endpoint` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Base,
    Manifest,
    Blob,
    Referrers,
    Other,
}

impl Endpoint {
    const ALL: [Endpoint; 5] = [
        Endpoint::Base,
        Endpoint::Manifest,
        Endpoint::Blob,
        Endpoint::Referrers,
        Endpoint::Other,
    ];

    /// The kind of endpoint `path` is, by the router's parser ([`ApiPath`]) on the path as sent: the router decodes
    /// it first, which changes the kind only for a percent-encoded `/` around `manifests`, `blobs` or `referrers`.
    pub fn of(path: &str) -> Endpoint {
        if path == "/v2" || path == "/v2/" {
            return Endpoint::Base;
        }
        match path.strip_prefix("/v2/").and_then(ApiPath::split) {
            Some(ApiPath::Manifest { .. }) => Endpoint::Manifest,
            Some(ApiPath::Blob { .. }) => Endpoint::Blob,
            Some(ApiPath::Referrers { .. }) => Endpoint::Referrers,
            None => Endpoint::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Manifest => "manifest",
            Endpoint::Blob => "blob",
            Endpoint::Referrers => "referrers",
            Endpoint::Other => "other",
        }
    }
}

/// A request's method as the `method` label says it: the API is read-only, so anything else is `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Method {
    Get,
    Head,
    Other,
}

impl Method {
    const ALL: [Method; 3] = [Method::Get, Method::Head, Method::Other];

    fn of(method: &axum::http::Method) -> Method {
        match *method {
            axum::http::Method::GET => Method::Get,
            axum::http::Method::HEAD => Method::Head,
            _ => Method::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other => "other",
        }
    }
}

/// Counts the body bytes handed to the connection (a client that leaves early is not counted for the rest of
/// the body, but may be for what the kernel's socket buffers still held),
/// and records them as served when the body is dropped; a blob body sent slower than the configured rate counts
/// as a slow download. A manifest body is a few KiB held in memory and goes out in the response's first write,
/// so it is counted whole at once, without wrapping the body.
/// `size` is the body's exact size when it says one (the caller has asked already).
pub fn count_served(
    response: &mut axum::response::Response,
    size: Option<u64>,
    cache: CacheStatus,
    endpoint: Endpoint,
) {
    use http_body_util::BodyExt;
    if endpoint == Endpoint::Manifest {
        if let Some(bytes) = size {
            if bytes > 0 {
                INSTRUMENTS.served.add(cache as usize, bytes);
            }
            return;
        }
    }
    struct ServedBytes {
        bytes: u64,
        cache: CacheStatus,
        blob: bool,
        started: Instant,
    }
    impl Drop for ServedBytes {
        fn drop(&mut self) {
            if self.bytes == 0 {
                return;
            }
            INSTRUMENTS.served.add(self.cache as usize, self.bytes);
            let cache = [KeyValue::new("cache", self.cache.as_str())];
            if self.blob && self.bytes >= SLOW_DOWNLOAD_MIN_BYTES {
                let floor = SETTINGS.get().map_or(1024 * 1024, |s| s.slow_bytes_per_sec);
                let seconds = self.started.elapsed().as_secs_f64();
                if (self.bytes as f64) < floor as f64 * seconds {
                    INSTRUMENTS.slow_downloads.add(1, &cache);
                }
            }
        }
    }
    // The body is taken out and put back wrapped: the response itself is not moved (it is large).
    let body = std::mem::take(response.body_mut());
    let mut served = ServedBytes {
        bytes: 0,
        cache,
        blob: endpoint == Endpoint::Blob,
        started: Instant::now(),
    };
    let body = body.map_frame(move |frame| {
        // Borrowing the whole struct makes the closure own it, so its Drop runs with the body.
        let served = &mut served;
        if let Some(data) = frame.data_ref() {
            served.bytes += bytes::Buf::remaining(data) as u64;
        }
        frame
    });
    *response.body_mut() = axum::body::Body::new(body);
}

/// The client networks requests are counted by, when `metrics_client_networks` is set.
#[inline]
fn networks() -> Option<&'static Networks> {
    SETTINGS.get().and_then(|s| s.networks.as_ref())
}

/// Whether requests are counted by client network (`metrics_client_networks` is set).
#[inline]
pub fn counts_clients() -> bool {
    networks().is_some()
}

/// Counts a request under its client's network, when `metrics_client_networks` is set (inlined: off, this is a
/// load and a branch on every request).
#[inline]
pub fn count_client(client: Option<IpAddr>, cache: Option<CacheStatus>) {
    if let (Some(networks), Some(ip)) = (networks(), client) {
        count_client_in(networks, ip, cache);
    }
}

fn count_client_in(networks: &Networks, ip: IpAddr, cache: Option<CacheStatus>) {
    INSTRUMENTS.client_requests.add(
        1,
        &[
            KeyValue::new("network", networks.label(ip)),
            KeyValue::new("cache", cache.map_or("none", |c| c.as_str())),
        ],
    );
}

/// Records one answered request.
pub fn record(
    endpoint: Endpoint,
    method: &axum::http::Method,
    status: u16,
    elapsed: Duration,
    error_code: Option<&'static str>,
) {
    let i = &*INSTRUMENTS;
    let method = Method::of(method);
    i.requests.add(endpoint, method, status);
    i.duration.record(series(endpoint, method), elapsed);
    if let Some(code) = error_code {
        i.errors.add(1, &[KeyValue::new("code", code)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(grouping: ClientNetworks, cap: usize) -> Networks {
        Networks {
            grouping,
            seen: Mutex::new(HashSet::new()),
            cap,
        }
    }

    #[test]
    fn requests_count_common_and_other_statuses() {
        let requests = Requests::default();
        requests.add(Endpoint::Manifest, Method::Get, 200);
        requests.add(Endpoint::Manifest, Method::Get, 200);
        requests.add(Endpoint::Blob, Method::Head, 504);
        requests.add(Endpoint::Other, Method::Other, 418);
        let mut seen = Vec::new();
        requests.each(|key, n| seen.push((key, n)));
        assert_eq!(
            seen,
            vec![
                ((Endpoint::Manifest, Method::Get, 200), 2),
                ((Endpoint::Blob, Method::Head, 504), 1),
                ((Endpoint::Other, Method::Other, 418), 1),
            ]
        );
    }

    #[test]
    fn endpoint_kinds() {
        for (path, kind) in [
            ("/v2/", Endpoint::Base),
            ("/v2", Endpoint::Base),
            ("/v2/library/alpine/manifests/3.20", Endpoint::Manifest),
            (
                "/v2/docker.io/library/alpine/manifests/sha256:ab",
                Endpoint::Manifest,
            ),
            ("/v2/a/blobs/sha256:ab", Endpoint::Blob),
            ("/v2/a/b/referrers/sha256:ab", Endpoint::Referrers),
            ("/v2/manifests/blobs/x", Endpoint::Blob),
            ("/v2/a/tags/list", Endpoint::Other),
            ("/v2/_catalog", Endpoint::Other),
            ("/v2/a/manifests/", Endpoint::Manifest),
            // No name: the router answers 404, and so it is no manifest request.
            ("/v2/manifests/x", Endpoint::Other),
            ("/v2/xmanifests/x", Endpoint::Other),
            ("/healthz", Endpoint::Other),
        ] {
            assert_eq!(Endpoint::of(path), kind, "{path}");
        }
    }

    #[test]
    fn prefix_mode_labels_by_slash_24_and_48_up_to_the_cap() {
        let n = networks(ClientNetworks::Prefix, 2);
        assert_eq!(n.label("10.1.2.3".parse().unwrap()), "10.1.2.0/24");
        assert_eq!(n.label("::ffff:10.1.2.9".parse().unwrap()), "10.1.2.0/24");
        assert_eq!(n.label("fd00:1:2:3::1".parse().unwrap()), "fd00:1:2::/48");
        assert_eq!(
            n.label("10.9.9.9".parse().unwrap()),
            "other",
            "beyond the cap"
        );
        assert_eq!(n.label("10.1.2.200".parse().unwrap()), "10.1.2.0/24");
    }

    #[test]
    fn sites_mode_takes_the_most_specific_site() {
        let sites = vec![
            ("plant".to_string(), vec!["10.0.0.0/8".parse().unwrap()]),
            ("line-3".to_string(), vec!["10.3.0.0/16".parse().unwrap()]),
        ];
        let n = networks(ClientNetworks::Sites(sites), 10);
        assert_eq!(n.label("10.3.4.5".parse().unwrap()), "line-3");
        assert_eq!(n.label("10.4.4.5".parse().unwrap()), "plant");
        assert_eq!(n.label("192.168.1.1".parse().unwrap()), "other");
    }
}
