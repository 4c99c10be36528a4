//! The HTTP front end: an axum router over the pull side of the OCI distribution API, the access log, and
//! `serve`, which opens the store, binds, prints the banner and runs until SIGTERM/SIGINT.

mod access_log;
mod blobs;
mod errors;
mod file_body;
mod headers;
mod manifests;
mod path;
mod range;
mod referrers;
mod request_id;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::sync::watch;

use crate::cache::{Asked, PullThrough};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::error::RegistryError;
use crate::route::{normalize_host, Aliases, Target};
use crate::store::{Store, ACCESS_FLUSH_INTERVAL};
use headers::{API_VERSION, API_VERSION_VALUE};
use path::ApiPath;

pub use crate::config::BlobIo;

/// How long open connections may finish after a shutdown signal before they are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What every handler shares.
pub struct AppState {
    pub cache: Arc<PullThrough>,
    pub default_registry: Arc<str>,
    pub aliases: Aliases,
    pub blob_io: BlobIo,
}

/// The API router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .route("/v2/{*rest}", any(api))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(access_log::log_request))
        .with_state(state)
}

fn check_read_method(method: &Method) -> Result<(), RegistryError> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(RegistryError::Unsupported(format!(
            "{method} is not supported: this registry is a pull-only cache"
        )))
    }
}

/// `GET /v2/`: the API version check every client starts with.
async fn base(method: Method) -> Response<Body> {
    if let Err(err) = check_read_method(&method) {
        return err.into_response();
    }
    let body = if method == Method::HEAD { "" } else { "{}" };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(API_VERSION, API_VERSION_VALUE);
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    headers.insert(axum::http::header::CONTENT_LENGTH, 2.into());
    response
}

async fn not_found(uri: Uri) -> Response<Body> {
    RegistryError::EndpointUnknown(format!(
        "{} is not an endpoint of this registry",
        uri.path()
    ))
    .into_response()
}

/// Everything under `/v2/`: manifests and blobs, any nesting of repository names.
async fn api(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    match handle_api(&state, &method, &uri, &headers).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn handle_api(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response<Body>, RegistryError> {
    check_read_method(method)?;
    // Clients generated from OpenAPI send `:` and `/` percent-encoded; registry clients send them literally.
    // Both mean the same; validation of names, tags and digests comes after decoding.
    let path = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8()
        .map_err(|_| RegistryError::NameInvalid("request path is not valid UTF-8".into()))?;
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    let api_path = ApiPath::parse(rest)?;
    let ns = query_value(uri, "ns");
    let ns = match ns.as_deref() {
        Some(ns) => Some(normalize_host(ns)?),
        None => None,
    };
    let resolve = |name: &str| -> Result<Target, RegistryError> {
        let mut target =
            Target::resolve(name, ns.as_deref(), &state.default_registry, &state.aliases)?;
        target.credentials = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(Credentials::from_basic_header);
        Ok(target)
    };
    match api_path {
        ApiPath::Manifest { name, reference } => {
            let target = resolve(name)?;
            state
                .cache
                .authorize(&target, Asked::Manifest(reference))
                .await?;
            manifests::serve(state, method, target, reference, headers).await
        }
        ApiPath::Blob { name, digest } => {
            let target = resolve(name)?;
            state.cache.authorize(&target, Asked::Blob(digest)).await?;
            blobs::serve(state, method, target, digest, headers).await
        }
        ApiPath::Referrers { name, digest } => {
            let target = resolve(name)?;
            state
                .cache
                .authorize(&target, Asked::Manifest(digest))
                .await?;
            let artifact_type = query_value(uri, "artifactType");
            referrers::serve(state, method, target, digest, artifact_type.as_deref()).await
        }
    }
}

/// The first value of query parameter `key`.
fn query_value(uri: &Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let db = config.db_path();
    let blobs = config.blobs_path();
    let store = Arc::new(Store::open(&db, &blobs)?);
    let cache = Arc::new(PullThrough::new(config.clone(), store.clone())?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %addr,
        db = %db.display(),
        blobs = %blobs.display(),
        default_registry = %config.default_registry,
        unlisted_upstreams = ?config.unlisted_upstreams,
        air_gapped = config.air_gapped,
        tls = "off",
        pid = std::process::id(),
        uid = unsafe { libc::getuid() },
        "ociregistry: pull-only, pull-through caching OCI Distribution server"
    );
    let state = Arc::new(AppState {
        aliases: cache.upstreams().aliases().clone(),
        cache,
        default_registry: normalize_host(&config.default_registry)
            .map_err(|e| anyhow::anyhow!("default_registry: {e}"))?,
        blob_io: config.blob_io,
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();

    let (stopping_tx, stopping) = watch::channel(false);
    let flusher = tokio::spawn(flush_access_times(store.clone(), stopping.clone()));
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Installed before "listening on" is logged: a SIGTERM that arrives right after start-up (a supervisor
    // changing its mind, a test) must shut down gracefully, not kill the process.
    let signals = ShutdownSignals::install()?;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        signals.wait().await;
        tracing::info!("shutting down: finishing open requests");
        let _ = stopping_tx.send(true);
    });
    tracing::info!("listening on http://{addr}");
    let mut grace = stopping.clone();
    tokio::select! {
        result = server.into_future() => result.context("serving")?,
        _ = async {
            let _ = grace.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("grace period over; closing remaining connections"),
    }
    let _ = flusher.await;
    store.flush_access_times().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Writes batched last-pulled times every few seconds until shutdown.
async fn flush_access_times(store: Arc<Store>, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(err) = store.flush_access_times().await {
                    tracing::warn!(error = %err, "could not record access times");
                }
            }
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    return;
                }
            }
        }
    }
}

/// SIGTERM and SIGINT handlers.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
