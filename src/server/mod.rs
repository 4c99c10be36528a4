//! The HTTP front end: an axum router over the pull side of the OCI distribution API, the access log, and
//! `serve`, which opens the store, binds, prints the banner and runs until SIGTERM/SIGINT.

mod access_log;
mod blobs;
mod errors;
mod file_body;
mod headers;
mod health;
mod listener;
mod manifests;
pub mod path;
pub mod range;
mod referrers;
mod request_id;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use tokio::sync::watch;

use crate::cache::{Asked, PullThrough};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::reference::Reference;
use crate::route::{normalize_host, Aliases, Target};
use crate::store::{Store, ACCESS_FLUSH_INTERVAL, ACCESS_PERSIST_INTERVAL};
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
    pub lifecycle: health::Lifecycle,
}

/// The API router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v2", any(base))
        .route("/v2/", any(base))
        .fallback(api_or_not_found)
        .layer(axum::middleware::from_fn(access_log::log_request));
    // Probes are not API traffic: outside the access log.
    Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .merge(api)
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

async fn not_found(method: Method, uri: Uri) -> Response<Body> {
    // A pull-only registry has no endpoint for other methods anywhere: 405 (with `Allow`), not 404.
    if let Err(err) = check_read_method(&method) {
        return err.into_response();
    }
    RegistryError::EndpointUnknown(format!(
        "{} is not an endpoint of this registry",
        uri.path()
    ))
    .into_response()
}

/// Everything under `/v2/` is the API: manifests and blobs, any nesting of repository names; anything else is
/// not found. A fallback rather than a `/v2/{*rest}` route: axum would percent-decode the capture on every
/// request (about 2,000 instructions, 5% of a warm manifest GET) only for [`handle_api`] to decode the path again.
async fn api_or_not_found(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if !uri.path().starts_with("/v2/") {
        return not_found(method, uri).await;
    }
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
    // Most paths have nothing to decode: a vectorised look for `%` spares the byte-by-byte decoder (and the UTF-8
    // check of its result) on every request.
    let path = if memchr::memchr(b'%', uri.path().as_bytes()).is_none() {
        std::borrow::Cow::Borrowed(uri.path())
    } else {
        percent_encoding::percent_decode_str(uri.path())
            .decode_utf8()
            .map_err(|_| RegistryError::NameInvalid("request path is not valid UTF-8".into()))?
    };
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
        // References and digests are validated before anything (a passthrough check included) reaches an
        // upstream.
        ApiPath::Manifest { name, reference } => {
            let target = resolve(name)?;
            let reference = Reference::parse(reference)?;
            state
                .cache
                .authorize(&target, Asked::Manifest(reference.as_str()))
                .await?;
            manifests::serve(state, method, target, reference, headers).await
        }
        ApiPath::Blob { name, digest } => {
            let target = resolve(name)?;
            digest.parse::<Digest>()?;
            state.cache.authorize(&target, Asked::Blob(digest)).await?;
            blobs::serve(state, method, target, digest, headers).await
        }
        ApiPath::Referrers { name, digest } => {
            let target = resolve(name)?;
            digest.parse::<Digest>()?;
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
    // Before anything creates an instrument: they bind to the provider present when first used.
    let metrics = match config.metrics {
        Some(metrics) => {
            let addr = crate::metrics::address(&metrics, config.listen);
            let exporter = crate::metrics::install()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            Some((listener, exporter))
        }
        None => None,
    };
    let db = config.db_path();
    let blobs = config.blobs_path();
    let store = Arc::new(Store::open(&db, &blobs)?);
    telemetry::configure(&config);
    access_log::start_clock();
    crate::store::telemetry::observe(&store);
    let cache = Arc::new(PullThrough::new(config.clone(), store.clone())?);
    if let Some(bucket) = cache.bucket() {
        // Not fatal: a replica whose object store is down still serves what its local tier holds.
        match tokio::time::timeout(std::time::Duration::from_secs(10), bucket.probe()).await {
            Ok(Ok(())) => {
                tracing::info!(
                    bucket = bucket.label(),
                    replica = bucket.replica(),
                    "shared bucket reachable"
                )
            }
            Ok(Err(err)) => {
                tracing::error!(bucket = bucket.label(), error = %err, "shared bucket unavailable at start-up; serving the local tier")
            }
            Err(_) => {
                tracing::error!(
                    bucket = bucket.label(),
                    "shared bucket did not answer within 10s at start-up; serving the local tier"
                )
            }
        }
    }
    let ops = Arc::new(crate::admin::Operations::new(
        &config,
        store.clone(),
        cache.clone(),
    )?);
    let admin_socket = config.admin_socket_path();
    let admin_unix = crate::admin::api::bind_socket(&admin_socket)?;
    let _socket_file = crate::admin::api::SocketFile(admin_socket.clone());
    let admin_tcp = match (config.admin_listen, &config.admin_token_file) {
        (Some(addr), Some(token_file)) => {
            let token = crate::admin::api::read_token(token_file)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding admin_listen {addr}"))?;
            Some((listener, token))
        }
        _ => None,
    };
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
        tls = match &config.server_tls {
            None => "off",
            Some(t) => match t.client_auth() {
                crate::config::ClientAuthMode::None => "on",
                crate::config::ClientAuthMode::Optional => "on, client certificates optional",
                crate::config::ClientAuthMode::Require => "on, client certificates required",
            },
        },
        admin_socket = %admin_socket.display(),
        metrics = ?metrics.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        admin_listen = ?admin_tcp.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        max_cache_bytes = ?config.max_cache_bytes.map(|b| b.as_u64()),
        prune_older_than = ?config.prune_older_than,
        pid = std::process::id(),
        uid = unsafe { libc::getuid() },
        "ociregistry: pull-only, pull-through caching OCI Distribution server"
    );
    let lifecycle = health::Lifecycle::default();
    let state = Arc::new(AppState {
        aliases: cache.upstreams().aliases().clone(),
        cache: cache.clone(),
        default_registry: normalize_host(&config.default_registry)
            .map_err(|e| anyhow::anyhow!("default_registry: {e}"))?,
        blob_io: config.blob_io,
        lifecycle: lifecycle.clone(),
    });
    let app = router(state);

    let (stopping_tx, stopping) = watch::channel(false);
    let flusher = tokio::spawn(flush_access_times(store.clone(), stopping));
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let _metrics_task = metrics.map(|(listener, exporter)| {
        AbortOnDrop(tokio::spawn(crate::metrics::serve(
            listener,
            exporter,
            admin_stop.clone(),
        )))
    });
    let _admin_tasks = spawn_admin(&config, ops, admin_unix, admin_tcp, admin_stop.clone());
    // Installed before "listening on" is logged: a SIGTERM that arrives right after start-up (a supervisor
    // changing its mind, a test) must shut down gracefully, not kill the process.
    let signals = ShutdownSignals::install()?;
    let shutdown = async move {
        signals.wait().await;
        // Readiness fails first; then the listener stops accepting and open requests finish.
        lifecycle.stop();
        admin_stop.cancel();
        let _ = stopping_tx.send(true);
    };
    raise_open_files_limit(config.max_connections);
    let tls = match &config.server_tls {
        Some(settings) => Some(crate::tls::ReloadingTls::load(settings)?),
        None => None,
    };
    let _reloader = tls.as_ref().map(|t| AbortOnDrop(t.spawn_reloader()));
    let limits = listener::ServeLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr}");
    listener::serve(listener, app, limits, tls, shutdown, SHUTDOWN_GRACE).await;
    // A client may have its whole blob while the fill still fsyncs, renames and indexes it.
    let unfinished = cache.drain(SHUTDOWN_GRACE).await;
    if unfinished > 0 {
        tracing::warn!(unfinished, "background fills still running at shutdown were abandoned; their temp files are swept at the next start");
    }
    let _ = flusher.await;
    store.persist_access_times().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the admin API (Unix socket, optional TCP), the start-up sweep of crash leftovers, and the maintenance
/// loop (automatic pruning, the disk ceiling). All stop with `stop` (and are aborted when the guards drop).
fn spawn_admin(
    config: &Config,
    ops: Arc<crate::admin::Operations>,
    unix: tokio::net::UnixListener,
    tcp: Option<(tokio::net::TcpListener, String)>,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<AbortOnDrop> {
    let mut tasks = Vec::new();
    let router = crate::admin::api::router(ops.clone());
    let until = stop.clone();
    let unix_router = router.clone();
    tasks.push(AbortOnDrop(tokio::spawn(async move {
        let serve = axum::serve(unix, unix_router).with_graceful_shutdown(until.cancelled_owned());
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "admin socket failed");
        }
    })));
    if let Some((listener, token)) = tcp {
        let until = stop.clone();
        let router = crate::admin::api::with_token(router, token);
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(until.cancelled_owned());
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "admin listener failed");
            }
        })));
    }
    let sweeper = ops.clone();
    tasks.push(AbortOnDrop(tokio::spawn(async move {
        match sweeper.sweep().await {
            Ok(report) if report.files_removed + report.entries_dropped > 0 => {
                tracing::info!(?report, "swept leftovers of an earlier run")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "start-up sweep failed"),
        }
    })));
    tasks.push(AbortOnDrop(tokio::spawn(crate::admin::maintain(
        ops,
        config.prune_older_than,
        config.prune_interval,
        CEILING_CHECK,
        stop,
    ))));
    tasks
}

/// How often the disk ceiling is checked besides after each stored blob.
const CEILING_CHECK: Duration = Duration::from_secs(10);

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Raises the soft open-files limit to the hard one (as servers usually do), and warns when even that is
/// too low for `max_connections` plus files being served and filled.
fn raise_open_files_limit(max_connections: usize) {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let wanted = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    if limit.rlim_cur < wanted {
        tracing::warn!(
            open_files_limit = limit.rlim_cur,
            max_connections,
            "the open-files limit is low for max_connections (each connection may also hold a blob file open)"
        );
    }
}

/// Writes batched last-pulled times every few seconds until shutdown, durably once a minute (so a crash loses
/// at most about a minute of them even when nothing else commits durably).
async fn flush_access_times(store: Arc<Store>, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
    let mut last_durable = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let result = if last_durable.elapsed() >= ACCESS_PERSIST_INTERVAL {
                    last_durable = tokio::time::Instant::now();
                    store.persist_access_times().await
                } else {
                    store.flush_access_times().await
                };
                if let Err(err) = result {
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
