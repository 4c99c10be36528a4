//! The admin API: JSON over HTTP on a Unix socket in the data directory (mode 0600, so only the server's user
//! and root reach it), and optionally on TCP behind a bearer token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{AdminError, ErrorKind, LoadRequest, Operations, PruneRequest, ReferenceRequest};

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match self.kind {
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            ErrorKind::NotCached => (StatusCode::NOT_FOUND, "NOT_CACHED"),
            ErrorKind::Pinned => (StatusCode::CONFLICT, "PINNED"),
            ErrorKind::Upstream => (StatusCode::BAD_GATEWAY, "UPSTREAM"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        error_response(status, code, &self.message)
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

type Ops = State<Arc<Operations>>;

/// The routes, without authentication.
pub fn router(ops: Arc<Operations>) -> Router {
    Router::new()
        .route("/admin/v1/stats", get(stats))
        .route("/admin/v1/images", get(images))
        .route("/admin/v1/prune", post(prune))
        .route("/admin/v1/load", post(load))
        .route("/admin/v1/pins", get(pins))
        .route("/admin/v1/pin", post(pin))
        .route("/admin/v1/unpin", post(unpin))
        .route("/admin/v1/invalidate", post(invalidate))
        .fallback(|| async {
            error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such admin endpoint")
        })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this admin endpoint",
            )
        })
        .with_state(ops)
}

/// A JSON body, with a JSON error when it is not one.
struct Body<T>(T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &rejection.body_text(),
            )),
        }
    }
}

async fn stats(State(ops): Ops) -> Result<Response, AdminError> {
    Ok(Json(ops.stats().await?).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    pattern: Option<String>,
}

async fn images(
    State(ops): Ops,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(query) = query.map_err(|e| AdminError::bad(e.body_text()))?;
    Ok(Json(ops.images(query.pattern.as_deref()).await?).into_response())
}

async fn prune(State(ops): Ops, Body(request): Body<PruneRequest>) -> Result<Response, AdminError> {
    Ok(Json(ops.prune(&request).await?).into_response())
}

async fn load(State(ops): Ops, Body(request): Body<LoadRequest>) -> Result<Response, AdminError> {
    Ok(Json(ops.load(&request).await?).into_response())
}

async fn pins(State(ops): Ops) -> Result<Response, AdminError> {
    Ok(Json(ops.pins().await?).into_response())
}

async fn pin(State(ops): Ops, Body(r): Body<ReferenceRequest>) -> Result<Response, AdminError> {
    Ok(Json(ops.pin(&r.reference).await?).into_response())
}

async fn unpin(State(ops): Ops, Body(r): Body<ReferenceRequest>) -> Result<Response, AdminError> {
    Ok(Json(ops.unpin(&r.reference).await?).into_response())
}

async fn invalidate(
    State(ops): Ops,
    Body(r): Body<ReferenceRequest>,
) -> Result<Response, AdminError> {
    Ok(Json(ops.invalidate(&r.reference).await?).into_response())
}

/// Binds the Unix socket: a socket file left by a crashed server is replaced (this process holds the index
/// lock, so no other server can be using it), and the socket is made 0600 before it accepts anything.
pub fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("admin_socket {}: {e}", path.display())),
    }
    // The umask applies while binding: nobody else can connect in the window before the chmod.
    let old = unsafe { libc::umask(0o177) };
    let listener = tokio::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = listener.map_err(|e| anyhow::anyhow!("admin_socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the socket file when the server stops.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The router behind `Authorization: Bearer <token>` (compared in constant time).
pub fn with_token(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(axum::middleware::from_fn(
        move |headers: HeaderMap, request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let given = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    // The scheme is case-insensitive (RFC 9110 11.1).
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim())
                    .unwrap_or_default();
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    let mut response = error_response(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "the admin API needs Authorization: Bearer <admin token>",
                    );
                    response.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static("Bearer realm=\"ociregistry-admin\""),
                    );
                    return response;
                }
                next.run(request).await
            }
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the admin token file: trimmed, at least 16 characters.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("admin_token_file {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    anyhow::ensure!(
        token.len() >= 16,
        "admin_token_file {}: the token must be at least 16 characters",
        path.display()
    );
    Ok(token)
}
