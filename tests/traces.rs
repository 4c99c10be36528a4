//! Traces over OTLP/HTTP (protobuf), received by a collector stand-in on a real socket that decodes what the
//! server posts: one span per API request carrying its request id (the `X-Request-Id` the client saw), upstream
//! spans as its children in the same trace (also for a blob fill, which runs in a task of its own), the last
//! spans flushed at SIGTERM, and no export at all when traces are off.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Everything posted to `/v1/traces`, decoded.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<usize>>,
}

impl Collector {
    async fn start() -> (Collector, String, tokio::task::JoinHandle<()>) {
        let collector = Collector::default();
        let state = collector.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    assert_eq!(
                        headers.get("content-type").unwrap(),
                        "application/x-protobuf"
                    );
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    *state.posts.lock().unwrap() += 1;
                    let mut spans = state.spans.lock().unwrap();
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.clone())
                            .and_then(|v| v.value);
                        assert_eq!(service, Some(Value::StringValue("ociregistry".into())));
                        for scope in resource.scope_spans {
                            spans.extend(scope.spans);
                        }
                    }
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (collector, url, task)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

/// Whether an attribute is the request id `id` (an integer, or a string where it does not fit an i64).
fn is_id(value: Option<Value>, id: u64) -> bool {
    match value {
        Some(Value::IntValue(v)) => v as u64 == id,
        Some(Value::StringValue(v)) => v == id.to_string(),
        _ => false,
    }
}

/// The request span whose `request_id` is `id`.
fn request_span(spans: &[Span], id: u64) -> Span {
    spans
        .iter()
        .find(|s| s.name.starts_with("GET ") && is_id(attribute(s, "request_id"), id))
        .unwrap_or_else(|| {
            let seen: Vec<_> = spans.iter().map(|s| (&s.name, &s.attributes)).collect();
            panic!("no request span with request_id {id} among {seen:#?}")
        })
        .clone()
}

fn upstream_children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| {
            s.trace_id == parent.trace_id
                && s.parent_span_id == parent.span_id
                && s.name.starts_with("upstream ")
        })
        .collect()
}

async fn get_with_id(client: &reqwest::Client, url: &str) -> (u16, u64) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-Request-Id");
    let _ = response.bytes().await.unwrap();
    (status, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_and_upstream_fetches_are_exported_as_one_trace() {
    bounded(async {
        let (collector, endpoint, _task) = Collector::start().await;
        let upstream = TestUpstream::start().await;
        let image = ImageBuilder::oci().seed(230).build();
        upstream.push_image(REPO, "v1", &image);
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            extra_yaml: format!("otlp_endpoint: {endpoint}\n"),
            ..ServerConfig::for_upstream(&upstream)
        };
        let mut server = Server::start(tmp.path(), &config).await;
        let client = client();
        let target = Target::in_path(&server, &upstream.host(), REPO);
        let child = &image.children[0];
        let (status, manifest_id) =
            get_with_id(&client, &target.manifest_url(&child.manifest.digest)).await;
        assert_eq!(status, 200);
        let blob = &child.layers[0];
        let (status, blob_id) = get_with_id(&client, &target.blob_url(&blob.digest)).await;
        assert_eq!(status, 200);
        // The client has the whole blob a moment before its fill commits it: wait until the cache has it.
        for _ in 0..100 {
            let head = client
                .head(target.blob_url(&blob.digest))
                .send()
                .await
                .unwrap();
            let id = head.headers()["x-request-id"].to_str().unwrap().to_owned();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if server
                .logs()
                .iter()
                .any(|l| l.contains(&format!("id={id} ")) && l.contains("cache=hit"))
            {
                break;
            }
        }
        let (status, warm_id) = get_with_id(&client, &target.blob_url(&blob.digest)).await;
        assert_eq!(status, 200);
        // SIGTERM: the batch is flushed on the way out.
        server.stop().await;

        let spans = collector.spans();
        let manifest = request_span(&spans, manifest_id);
        assert_eq!(
            manifest.parent_span_id,
            Vec::<u8>::new(),
            "a request span is a root"
        );
        assert_eq!(
            attribute(&manifest, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
        assert_eq!(
            attribute(&manifest, "cache"),
            Some(Value::StringValue("miss".into()))
        );
        assert!(
            !upstream_children(&spans, &manifest).is_empty(),
            "the cold manifest's upstream request is a child of its request span"
        );
        let cold_blob = request_span(&spans, blob_id);
        assert_ne!(
            cold_blob.trace_id, manifest.trace_id,
            "one trace per request"
        );
        let fetches = upstream_children(&spans, &cold_blob);
        assert!(
            fetches
                .iter()
                .any(|s| attribute(s, "upstream.kind") == Some(Value::StringValue("blob".into()))),
            "the blob fill's upstream GET traces under the request that started it"
        );
        assert!(fetches
            .iter()
            .all(|s| s.end_time_unix_nano >= s.start_time_unix_nano
                && s.start_time_unix_nano >= cold_blob.start_time_unix_nano));
        let warm = request_span(&spans, warm_id);
        assert_eq!(
            attribute(&warm, "cache"),
            Some(Value::StringValue("hit".into()))
        );
        assert!(
            upstream_children(&spans, &warm).is_empty(),
            "a cache hit asks no upstream"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_exported_when_traces_are_off() {
    bounded(async {
        let (collector, _endpoint, _task) = Collector::start().await;
        let upstream = TestUpstream::start().await;
        let image = ImageBuilder::oci().small().seed(231).build();
        upstream.push_image(REPO, "v1", &image);
        let tmp = tempfile::tempdir().unwrap();
        let mut server = Server::start(tmp.path(), &ServerConfig::for_upstream(&upstream)).await;
        pull_image(
            &client(),
            &Target::in_path(&server, &upstream.host(), REPO),
            "v1",
            &image,
        )
        .await;
        server.stop().await;
        assert_eq!(*collector.posts.lock().unwrap(), 0);
    })
    .await
}
