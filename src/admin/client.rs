//! How the CLI reaches the operations: the running server's Unix socket, a remote admin listener (`--server`),
//! or, when no server holds the index, the index itself (the same library code, in this process).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    AdminError, ErrorKind, ImageList, Invalidated, LoadReport, LoadRequest, Operations, Pin,
    PinList, PruneReport, PruneRequest, ReferenceRequest, Stats, Unpinned,
};
use crate::cache::PullThrough;
use crate::config::Config;
use crate::store::{IndexError, Store};

/// Where operations run.
pub enum Admin {
    /// The running server, over its Unix socket.
    Socket(PathBuf),
    /// A server's TCP admin listener.
    Remote {
        url: String,
        token: String,
        http: reqwest::Client,
    },
    /// In this process, on the index opened directly (no server is running).
    Direct(Arc<Operations>),
}

/// How to find the operations.
pub struct Locate<'a> {
    pub config: &'a Config,
    /// `--server URL`.
    pub server: Option<String>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
}

impl Admin {
    /// The server's socket if one answers; else the index directly; a clear error when the index is held by
    /// a process whose socket is elsewhere.
    pub async fn locate(how: Locate<'_>) -> anyhow::Result<Admin> {
        if let Some(url) = how.server {
            let token_file = how
                .token_file
                .or_else(|| how.config.admin_token_file.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("--server needs --token-file (the admin API's bearer token)")
                })?;
            let token = super::api::read_token(&token_file)?;
            eprintln!("ociregistry: using the server at {url}");
            return Ok(Admin::Remote {
                url: url.trim_end_matches('/').to_owned(),
                token,
                http: reqwest::Client::builder().build()?,
            });
        }
        let socket = how.config.admin_socket_path();
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            eprintln!("ociregistry: using the server at {}", socket.display());
            return Ok(Admin::Socket(socket));
        }
        let db = how.config.db_path();
        match Store::open(&db, &how.config.blobs_path()) {
            Ok(store) => {
                eprintln!(
                    "ociregistry: no server is running; using {} directly",
                    db.display()
                );
                let store = Arc::new(store);
                let config = Arc::new(how.config.clone());
                let cache = Arc::new(PullThrough::new(config.clone(), store.clone())?);
                Ok(Admin::Direct(Arc::new(Operations::new(&config, store, cache)?)))
            }
            Err(err) => match err.downcast_ref::<IndexError>() {
                Some(IndexError::Locked(_)) => Err(anyhow::anyhow!(
                    "the index {} is in use by another process (a running server?), but no admin socket answers \
                     at {}; pass that server's --admin-socket (or admin_socket in --config-file), or --server URL",
                    db.display(),
                    socket.display()
                )),
                _ => Err(err),
            },
        }
    }

    /// Which mode, for messages.
    pub fn is_direct(&self) -> bool {
        matches!(self, Admin::Direct(_))
    }

    /// Writes pending access times when running directly (the server does it on its own).
    pub async fn finish(&self) -> anyhow::Result<()> {
        if let Admin::Direct(ops) = self {
            ops.store.persist_access_times().await?;
        }
        Ok(())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(AdminError::internal)?),
            None => None,
        };
        let (status, bytes) = match self {
            Admin::Socket(socket) => {
                unix_request(socket, method, path, body)
                    .await
                    .map_err(|e| {
                        AdminError::internal(format!("admin socket {}: {e}", socket.display()))
                    })?
            }
            Admin::Remote { url, token, http } => {
                let mut request = http
                    .request(method, format!("{url}{path}"))
                    .bearer_auth(token);
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| AdminError::internal(format!("{url}: {e}")))?;
                let status = response.status();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| AdminError::internal(format!("{url}: {e}")))?;
                (
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                    bytes,
                )
            }
            Admin::Direct(_) => unreachable!("direct calls do not go through HTTP"),
        };
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                AdminError::internal(format!("unexpected answer from the server: {e}"))
            });
        }
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: ErrorDetail,
        }
        #[derive(serde::Deserialize)]
        struct ErrorDetail {
            code: String,
            message: String,
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        let kind = match detail.as_ref().map(|d| d.error.code.as_str()) {
            Some("BAD_REQUEST") => ErrorKind::BadRequest,
            Some("NOT_CACHED") => ErrorKind::NotCached,
            Some("PINNED") => ErrorKind::Pinned,
            Some("UPSTREAM") => ErrorKind::Upstream,
            _ => ErrorKind::Internal,
        };
        let message = detail
            .map(|d| d.error.message)
            .unwrap_or_else(|| format!("the server answered {status}"));
        Err(AdminError::new(kind, message))
    }

    pub async fn stats(&self) -> Result<Stats, AdminError> {
        match self {
            Admin::Direct(ops) => ops.stats().await,
            _ => {
                self.call::<(), _>(Method::GET, "/admin/v1/stats", None)
                    .await
            }
        }
    }

    pub async fn images(&self, pattern: Option<&str>) -> Result<ImageList, AdminError> {
        match self {
            Admin::Direct(ops) => ops.images(pattern).await,
            _ => {
                let path = match pattern {
                    Some(p) => format!(
                        "/admin/v1/images?pattern={}",
                        percent_encoding::utf8_percent_encode(
                            p,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    ),
                    None => "/admin/v1/images".to_owned(),
                };
                self.call::<(), _>(Method::GET, &path, None).await
            }
        }
    }

    pub async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, AdminError> {
        match self {
            Admin::Direct(ops) => ops.prune(request).await,
            _ => {
                self.call(Method::POST, "/admin/v1/prune", Some(request))
                    .await
            }
        }
    }

    pub async fn load(&self, request: &LoadRequest) -> Result<LoadReport, AdminError> {
        match self {
            Admin::Direct(ops) => ops.load(request).await,
            _ => {
                self.call(Method::POST, "/admin/v1/load", Some(request))
                    .await
            }
        }
    }

    pub async fn pins(&self) -> Result<PinList, AdminError> {
        match self {
            Admin::Direct(ops) => ops.pins().await,
            _ => {
                self.call::<(), _>(Method::GET, "/admin/v1/pins", None)
                    .await
            }
        }
    }

    pub async fn pin(&self, reference: &str) -> Result<Pin, AdminError> {
        match self {
            Admin::Direct(ops) => ops.pin(reference).await,
            _ => {
                self.call(
                    Method::POST,
                    "/admin/v1/pin",
                    Some(&reference_body(reference)),
                )
                .await
            }
        }
    }

    pub async fn unpin(&self, reference: &str) -> Result<Unpinned, AdminError> {
        match self {
            Admin::Direct(ops) => ops.unpin(reference).await,
            _ => {
                self.call(
                    Method::POST,
                    "/admin/v1/unpin",
                    Some(&reference_body(reference)),
                )
                .await
            }
        }
    }

    pub async fn invalidate(&self, reference: &str) -> Result<Invalidated, AdminError> {
        match self {
            Admin::Direct(ops) => ops.invalidate(reference).await,
            _ => {
                self.call(
                    Method::POST,
                    "/admin/v1/invalidate",
                    Some(&reference_body(reference)),
                )
                .await
            }
        }
    }
}

fn reference_body(reference: &str) -> ReferenceRequest {
    ReferenceRequest {
        reference: reference.to_owned(),
    }
}

/// One HTTP/1.1 request over a Unix socket.
async fn unix_request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost");
    if body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = connection.await;
    Ok((status, bytes))
}
