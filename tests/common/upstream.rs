//! [`TestUpstream`]: an in-process upstream registry (axum, real socket on 127.0.0.1:0).
//!
//! It speaks the pull side of the distribution API (GET /v2/, HEAD/GET manifests by tag or digest,
//! HEAD/GET blobs) behind the Docker bearer-token flow: every /v2 request without a valid
//! `Authorization: Bearer <token>` (unexpired) gets 401 with
//! `WWW-Authenticate: Bearer realm="http://127.0.0.1:PORT/token",service="test-upstream",scope="repository:<repo>:pull"`,
//! and `GET /token?service=..&scope=..` returns `{"token":"...","expires_in":300}`. Tokens are only
//! valid for the repositories named in the scope they were issued for.
//!
//! It counts authorized requests per (method, path), 401 answers and token fetches, so tests can
//! assert exact upstream GET counts. Per-object behaviour can be changed at run time: serve a blob
//! with wrong bytes, cut a blob's connection halfway, serve a manifest whose bytes do not match the
//! requested digest, stream a blob slowly, or answer a fixed error status. Unknown things get 404
//! with the usual error codes.
//! [`TestUpstream::stop`] really closes the listener and every open connection.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::image::{Blob, Image, Manifest};
use super::killable::KillableListener;

/// The `service` the upstream announces in its bearer challenge.
pub const UPSTREAM_SERVICE: &str = "test-upstream";

/// Start-up options of a [`TestUpstream`].
#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// Require Docker bearer-token auth (default true); false = anonymous access.
    pub auth: bool,
    /// `expires_in` of issued tokens, seconds; tokens are rejected (401) once that has passed.
    pub token_expires_in: u64,
    /// The realm announced in the bearer challenge (default: this upstream's own `/token`).
    pub realm: Option<String>,
    /// When set, `/token` issues tokens only to requests with HTTP basic auth of this user and password.
    pub token_credentials: Option<(String, String)>,
    /// Answer HEAD of manifests with 405, as some registries do.
    pub no_manifest_head: bool,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            auth: true,
            token_expires_in: 300,
            realm: None,
            token_credentials: None,
            no_manifest_head: false,
        }
    }
}

/// Slow streaming of a blob: `chunk_size` bytes, then `delay`, and so on.
#[derive(Clone, Copy, Debug)]
pub struct Slow {
    pub chunk_size: usize,
    pub delay: Duration,
}

impl Slow {
    pub fn new(chunk_size: usize, delay_ms: u64) -> Slow {
        Slow {
            chunk_size,
            delay: Duration::from_millis(delay_ms),
        }
    }
}

#[derive(Default)]
struct RepoContent {
    tags: HashMap<String, String>,
    manifests: HashMap<String, Manifest>,
    blobs: HashMap<String, Blob>,
}

#[derive(Default, Clone, Copy)]
struct BlobBehaviour {
    corrupt: bool,
    slow: Option<Slow>,
    truncate: bool,
    chunked: bool,
}

struct UpstreamState {
    realm: String,
    opts: UpstreamOptions,
    repos: Mutex<HashMap<String, RepoContent>>,
    blob_behaviour: Mutex<HashMap<String, BlobBehaviour>>,
    corrupt_manifests: Mutex<HashSet<String>>,
    forced_status: Mutex<HashMap<String, u16>>,
    redirects: Mutex<HashMap<String, String>>,
    /// Answer every request with a 200 HTML page, as a captive portal does.
    captive_portal: std::sync::atomic::AtomicBool,
    /// Answer `/token` with this status instead of a token (0: normally).
    token_status: AtomicUsize,
    /// (repo, subject digest) -> referrers index JSON
    referrers: Mutex<HashMap<(String, String), Bytes>>,
    counts: Mutex<HashMap<(String, String), usize>>,
    unauthorized: AtomicUsize,
    token_fetches: AtomicUsize,
    token_seq: AtomicUsize,
    /// token -> (scope, issue time)
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    log: Mutex<Vec<String>>,
}

/// The in-process upstream registry. See the module documentation.
pub struct TestUpstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TestUpstream {
    /// Starts an upstream with bearer-token auth.
    pub async fn start() -> TestUpstream {
        TestUpstream::start_with(UpstreamOptions::default()).await
    }

    pub async fn start_with(opts: UpstreamOptions) -> TestUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState {
            realm: opts
                .realm
                .clone()
                .unwrap_or_else(|| format!("http://{addr}/token")),
            opts,
            repos: Mutex::default(),
            blob_behaviour: Mutex::default(),
            corrupt_manifests: Mutex::default(),
            forced_status: Mutex::default(),
            redirects: Mutex::default(),
            captive_portal: Default::default(),
            token_status: AtomicUsize::new(0),
            referrers: Mutex::default(),
            counts: Mutex::default(),
            unauthorized: AtomicUsize::new(0),
            token_fetches: AtomicUsize::new(0),
            token_seq: AtomicUsize::new(0),
            tokens: Mutex::default(),
            log: Mutex::default(),
        });
        let app = Router::new()
            .route("/token", get(token_handler))
            .fallback(registry_handler)
            .with_state(state.clone());
        let cancel = CancellationToken::new();
        let listener = KillableListener::new(listener, cancel.clone());
        let shutdown = cancel.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("[upstream] serve error: {err}");
            }
        });
        eprintln!("[upstream] listening on http://{addr}");
        TestUpstream {
            addr,
            state,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry host name clients use for this upstream.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops serving: closes the listener and every open connection, then checks that new
    /// connections are refused.
    pub async fn stop(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap().take();
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                eprintln!("[upstream] stopped ({})", self.addr);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "test upstream {} still accepts connections after stop",
            self.addr
        );
    }

    // ----- content -----

    /// Publishes every manifest and blob of `image` in `repo` and points `tag` at its index.
    pub fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        for m in image.manifests() {
            self.put_manifest(repo, m);
        }
        for b in image.blobs() {
            self.put_blob(repo, b);
        }
        self.set_tag(repo, tag, &image.index.digest);
    }

    pub fn put_manifest(&self, repo: &str, manifest: &Manifest) {
        let mut repos = self.state.repos.lock().unwrap();
        let content = repos.entry(repo.to_string()).or_default();
        content
            .manifests
            .insert(manifest.digest.clone(), manifest.clone());
    }

    pub fn put_blob(&self, repo: &str, blob: &Blob) {
        let mut repos = self.state.repos.lock().unwrap();
        let content = repos.entry(repo.to_string()).or_default();
        content.blobs.insert(blob.digest.clone(), blob.clone());
    }

    /// Points `tag` at manifest `digest` (which should have been put before).
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &str) {
        let mut repos = self.state.repos.lock().unwrap();
        let content = repos.entry(repo.to_string()).or_default();
        content.tags.insert(tag.to_string(), digest.to_string());
    }

    pub fn remove_tag(&self, repo: &str, tag: &str) {
        let mut repos = self.state.repos.lock().unwrap();
        if let Some(content) = repos.get_mut(repo) {
            content.tags.remove(tag);
        }
    }

    // ----- behaviour -----

    /// Serve the blob with its last byte flipped (same length, wrong digest).
    pub fn set_blob_corrupt(&self, digest: &str, corrupt: bool) {
        let mut map = self.state.blob_behaviour.lock().unwrap();
        map.entry(digest.to_string()).or_default().corrupt = corrupt;
    }

    /// Stream the blob slowly (or normally again with `None`).
    pub fn set_blob_slow(&self, digest: &str, slow: Option<Slow>) {
        let mut map = self.state.blob_behaviour.lock().unwrap();
        map.entry(digest.to_string()).or_default().slow = slow;
    }

    /// Send the blob with chunked transfer encoding, without `Content-Length`.
    pub fn set_blob_chunked(&self, digest: &str, chunked: bool) {
        let mut map = self.state.blob_behaviour.lock().unwrap();
        map.entry(digest.to_string()).or_default().chunked = chunked;
    }

    /// Send only the first half of the blob, then cut the connection (Content-Length not reached).
    pub fn set_blob_truncated(&self, digest: &str, truncate: bool) {
        let mut map = self.state.blob_behaviour.lock().unwrap();
        map.entry(digest.to_string()).or_default().truncate = truncate;
    }

    /// When the manifest is requested by this digest, serve bytes that do not hash to it
    /// (a trailing newline is appended), still claiming `Docker-Content-Digest: <digest>`.
    pub fn set_manifest_corrupt(&self, digest: &str, corrupt: bool) {
        let mut set = self.state.corrupt_manifests.lock().unwrap();
        if corrupt {
            set.insert(digest.to_string());
        } else {
            set.remove(digest);
        }
    }

    /// Answer every (authorized) request for this reference (tag or digest) with `status`.
    pub fn set_forced_status(&self, reference: &str, status: Option<u16>) {
        let mut map = self.state.forced_status.lock().unwrap();
        match status {
            Some(s) => map.insert(reference.to_string(), s),
            None => map.remove(reference),
        };
    }

    /// Answer every (authorized) request for this reference with `307 Location: url` (or stop, with `None`).
    pub fn set_redirect(&self, reference: &str, url: Option<&str>) {
        let mut map = self.state.redirects.lock().unwrap();
        match url {
            Some(u) => map.insert(reference.to_string(), u.to_string()),
            None => map.remove(reference),
        };
    }

    /// Answers every request (token endpoint included) with `200 text/html`, like a captive portal.
    pub fn set_captive_portal(&self, on: bool) {
        self.state.captive_portal.store(on, Ordering::SeqCst);
    }

    /// Makes `/token` answer `status` (an error) instead of issuing tokens; `None` for normal service.
    pub fn set_token_status(&self, status: Option<u16>) {
        self.state
            .token_status
            .store(status.map_or(0, usize::from), Ordering::SeqCst);
    }

    /// Serves `index` (an OCI image index JSON) at `GET /v2/<repo>/referrers/<subject>`.
    pub fn set_referrers(&self, repo: &str, subject: &str, index: &[u8]) {
        self.state.referrers.lock().unwrap().insert(
            (repo.to_string(), subject.to_string()),
            Bytes::copy_from_slice(index),
        );
    }

    // ----- counters -----

    /// Authorized requests seen for (method, path), e.g. ("GET", "/v2/team/app/blobs/sha256:..").
    pub fn count(&self, method: &str, path: &str) -> usize {
        let counts = self.state.counts.lock().unwrap();
        counts
            .get(&(method.to_string(), path.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn blob_gets(&self, repo: &str, digest: &str) -> usize {
        self.count("GET", &format!("/v2/{repo}/blobs/{digest}"))
    }

    pub fn blob_heads(&self, repo: &str, digest: &str) -> usize {
        self.count("HEAD", &format!("/v2/{repo}/blobs/{digest}"))
    }

    pub fn manifest_gets(&self, repo: &str, reference: &str) -> usize {
        self.count("GET", &format!("/v2/{repo}/manifests/{reference}"))
    }

    pub fn manifest_heads(&self, repo: &str, reference: &str) -> usize {
        self.count("HEAD", &format!("/v2/{repo}/manifests/{reference}"))
    }

    /// Authorized GET + HEAD requests for a manifest reference.
    pub fn manifest_requests(&self, repo: &str, reference: &str) -> usize {
        self.manifest_gets(repo, reference) + self.manifest_heads(repo, reference)
    }

    /// Total authorized /v2 requests.
    pub fn total_requests(&self) -> usize {
        self.state.counts.lock().unwrap().values().sum()
    }

    /// How many GET /token requests were made.
    pub fn token_fetches(&self) -> usize {
        self.state.token_fetches.load(Ordering::SeqCst)
    }

    /// How many /v2 requests were answered 401.
    pub fn unauthorized(&self) -> usize {
        self.state.unauthorized.load(Ordering::SeqCst)
    }

    /// Every request seen so far, as "METHOD path -> status" lines.
    pub fn request_log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// ----- handlers -----

fn error_response(status: u16, code: &str, message: &str) -> Response {
    let body =
        serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn json_response(value: serde_json::Value) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(&value).unwrap()))
        .unwrap()
}

async fn token_handler(
    State(st): State<Arc<UpstreamState>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    st.token_fetches.fetch_add(1, Ordering::SeqCst);
    let forced = st.token_status.load(Ordering::SeqCst);
    if forced != 0 {
        st.log
            .lock()
            .unwrap()
            .push(format!("GET /token -> {forced} (forced)"));
        return error_response(forced as u16, "UNAVAILABLE", "token service down");
    }
    if let Some((user, pass)) = &st.opts.token_credentials {
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let msg = format!(
                "GET /token without valid credentials ({}) -> 401",
                given.is_some()
            );
            eprintln!("[upstream] {msg}");
            st.log.lock().unwrap().push(msg);
            return error_response(401, "UNAUTHORIZED", "bad credentials");
        }
    }
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.as_str());
    let scope = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if service != Some(UPSTREAM_SERVICE) {
        let msg = format!("[upstream] GET /token with bad service {service:?} -> 400");
        eprintln!("{msg}");
        st.log.lock().unwrap().push(msg);
        return error_response(400, "DENIED", "unknown service");
    }
    let n = st.token_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("test-token-{n}");
    st.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), (scope.clone(), Instant::now()));
    let msg = format!("GET /token scope={scope:?} -> 200 ({token})");
    eprintln!("[upstream] {msg}");
    st.log.lock().unwrap().push(msg);
    json_response(serde_json::json!({ "token": token, "expires_in": st.opts.token_expires_in }))
}

async fn registry_handler(
    State(st): State<Arc<UpstreamState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    let resp = if st.captive_portal.load(Ordering::SeqCst) {
        Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><body>Please log in to the guest network</body></html>",
            ))
            .unwrap()
    } else {
        route(&st, &method, &path, &headers)
    };
    let msg = format!("{method} {path} -> {}", resp.status().as_u16());
    eprintln!("[upstream] {msg}");
    st.log.lock().unwrap().push(msg);
    resp
}

enum Kind {
    Manifest,
    Blob,
    Referrers,
}

/// Is the request authorized for `repo` (or, with `None`, carrying any valid token)?
fn authorized(st: &UpstreamState, headers: &HeaderMap, repo: Option<&str>) -> bool {
    if !st.opts.auth {
        return true;
    }
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let tokens = st.tokens.lock().unwrap();
    let Some((scope, issued)) = tokens.get(token.trim()) else {
        return false;
    };
    if issued.elapsed() >= Duration::from_secs(st.opts.token_expires_in) {
        return false;
    }
    match repo {
        None => true,
        Some(repo) => {
            let prefix = format!("repository:{repo}:");
            scope.split(' ').any(|s| {
                s.strip_prefix(&prefix)
                    .is_some_and(|actions| actions.split(',').any(|a| a == "pull" || a == "*"))
            })
        }
    }
}

fn unauthorized(st: &UpstreamState, repo: Option<&str>) -> Response {
    st.unauthorized.fetch_add(1, Ordering::SeqCst);
    let mut challenge = format!(
        r#"Bearer realm="{}",service="{}""#,
        st.realm, UPSTREAM_SERVICE
    );
    if let Some(repo) = repo {
        challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
    }
    let mut resp = error_response(401, "UNAUTHORIZED", "authentication required");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).unwrap(),
    );
    resp
}

fn count(st: &UpstreamState, method: &Method, path: &str) {
    let mut counts = st.counts.lock().unwrap();
    *counts
        .entry((method.as_str().to_string(), path.to_string()))
        .or_insert(0) += 1;
}

fn forced_error(status: u16) -> Response {
    let code = match status {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NAME_UNKNOWN",
        429 => "TOOMANYREQUESTS",
        _ => "UNAVAILABLE",
    };
    // No Retry-After on 429: a server honouring it would stall the test.
    error_response(status, code, "forced by test")
}

fn route(st: &UpstreamState, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    let Some(rest) = path
        .strip_prefix("/v2/")
        .or_else(|| if path == "/v2" { Some("") } else { None })
    else {
        return error_response(404, "NOT_FOUND", "not found");
    };
    if rest.is_empty() {
        if !authorized(st, headers, None) {
            return unauthorized(st, None);
        }
        count(st, method, path);
        return json_response(serde_json::json!({}));
    }
    let (repo, kind, reference) = if let Some(i) = rest.rfind("/manifests/") {
        (&rest[..i], Kind::Manifest, &rest[i + "/manifests/".len()..])
    } else if let Some(i) = rest.rfind("/blobs/") {
        (&rest[..i], Kind::Blob, &rest[i + "/blobs/".len()..])
    } else if let Some(i) = rest.rfind("/referrers/") {
        (
            &rest[..i],
            Kind::Referrers,
            &rest[i + "/referrers/".len()..],
        )
    } else {
        return error_response(404, "NAME_UNKNOWN", "unsupported path");
    };
    if !authorized(st, headers, Some(repo)) {
        return unauthorized(st, Some(repo));
    }
    count(st, method, path);
    if let Some(status) = st.forced_status.lock().unwrap().get(reference).copied() {
        return forced_error(status);
    }
    if let Some(url) = st.redirects.lock().unwrap().get(reference) {
        return Response::builder()
            .status(307)
            .header(header::LOCATION, url.as_str())
            .body(Body::empty())
            .unwrap();
    }
    if method != Method::GET && method != Method::HEAD {
        return error_response(405, "UNSUPPORTED", "pull only");
    }
    let head = method == Method::HEAD;
    if head && st.opts.no_manifest_head && matches!(kind, Kind::Manifest) {
        return error_response(405, "UNSUPPORTED", "HEAD not supported here");
    }
    match kind {
        Kind::Manifest => manifest(st, repo, reference, head),
        Kind::Blob => blob(st, repo, reference, head),
        Kind::Referrers => match st
            .referrers
            .lock()
            .unwrap()
            .get(&(repo.to_string(), reference.to_string()))
        {
            Some(index) => Response::builder()
                .status(200)
                .header(
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.index.v1+json",
                )
                .body(Body::from(index.clone()))
                .unwrap(),
            None => error_response(404, "NAME_UNKNOWN", "no referrers API here"),
        },
    }
}

fn manifest(st: &UpstreamState, repo: &str, reference: &str, head: bool) -> Response {
    let repos = st.repos.lock().unwrap();
    let Some(content) = repos.get(repo) else {
        return error_response(404, "NAME_UNKNOWN", "repository name not known to registry");
    };
    let by_digest = reference.contains(':');
    let digest = if by_digest {
        reference.to_string()
    } else {
        match content.tags.get(reference) {
            Some(d) => d.clone(),
            None => {
                return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown");
            }
        }
    };
    let Some(m) = content.manifests.get(&digest) else {
        return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown");
    };
    let mut data = m.data.clone();
    if by_digest && st.corrupt_manifests.lock().unwrap().contains(&digest) {
        let mut v = data.to_vec();
        v.push(b'\n');
        data = Bytes::from(v);
    }
    let builder = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, m.media_type.as_str())
        .header(header::CONTENT_LENGTH, data.len())
        .header("Docker-Content-Digest", m.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", m.digest));
    if head {
        builder.body(Body::empty()).unwrap()
    } else {
        builder.body(Body::from(data)).unwrap()
    }
}

fn blob(st: &UpstreamState, repo: &str, digest: &str, head: bool) -> Response {
    let blob = {
        let repos = st.repos.lock().unwrap();
        let Some(content) = repos.get(repo) else {
            return error_response(404, "NAME_UNKNOWN", "repository name not known to registry");
        };
        match content.blobs.get(digest) {
            Some(b) => b.clone(),
            None => return error_response(404, "BLOB_UNKNOWN", "blob unknown to registry"),
        }
    };
    let behaviour = st
        .blob_behaviour
        .lock()
        .unwrap()
        .get(digest)
        .copied()
        .unwrap_or_default();
    let mut data = blob.data.clone();
    if behaviour.corrupt {
        let mut v = data.to_vec();
        if let Some(last) = v.last_mut() {
            *last ^= 0xff;
        }
        data = Bytes::from(v);
    }
    let mut builder = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", blob.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", blob.digest));
    if !behaviour.chunked {
        builder = builder.header(header::CONTENT_LENGTH, data.len());
    }
    if head {
        return builder.body(Body::empty()).unwrap();
    }
    if behaviour.slow.is_none() && !behaviour.truncate && !behaviour.chunked {
        return builder.body(Body::from(data)).unwrap();
    }
    let slow = behaviour.slow.unwrap_or(Slow {
        chunk_size: 64 * 1024,
        delay: Duration::ZERO,
    });
    // A truncated blob sends only its first half, then the connection is cut (the advertised
    // Content-Length is never reached).
    let served = if behaviour.truncate {
        data.slice(..data.len() / 2)
    } else {
        data.clone()
    };
    let chunk = slow.chunk_size.max(1);
    let mut items: Vec<Result<Bytes, std::io::Error>> = (0..served.len())
        .step_by(chunk)
        .map(|start| Ok(served.slice(start..(start + chunk).min(served.len()))))
        .collect();
    if behaviour.truncate {
        items.push(Err(std::io::Error::other(
            "blob truncated by test upstream",
        )));
    }
    let delay = slow.delay;
    let stream =
        futures::stream::iter(items.into_iter().enumerate()).then(move |(i, item)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            item
        });
    builder.body(Body::from_stream(stream)).unwrap()
}
