//! `/healthz` and `/readyz`, for Kubernetes probes (outside `/v2`, not in the access log).
//!
//! - `/healthz`: the process is alive and its runtime answers: always 200 while it serves at all.
//! - `/readyz`: it can serve pulls: the index answers a read, the blob directory takes a write, the disk has
//!   room, and it is not shutting down (on SIGTERM readiness fails first). 503 with the failed checks
//!   otherwise. Cheap enough to probe every second: one read transaction, one small file create and remove,
//!   one `statvfs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Response, StatusCode};

use super::AppState;

/// Whether the server is shutting down (readiness fails first).
#[derive(Clone, Default)]
pub struct Lifecycle {
    stopping: Arc<AtomicBool>,
}

impl Lifecycle {
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

pub async fn healthz() -> Response<Body> {
    text(StatusCode::OK, "ok\n".into())
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response<Body> {
    let mut failed = Vec::new();
    if state.lifecycle.is_stopping() {
        failed.push("shutting down".to_owned());
    }
    let store = state.cache.store.clone();
    let min_free = state.cache.min_free_bytes();
    let checks = crate::blocking::spawn(move || {
        let mut failed = Vec::new();
        if let Err(err) = store.index_blocking(|index| index.probe_write()) {
            failed.push(format!("index: {err}"));
        }
        if let Err(err) = store.blobs.probe_writable() {
            failed.push(format!("blob directory not writable: {err}"));
        }
        match store.blobs.free_bytes() {
            Ok(free) if free < min_free => {
                failed.push(format!("disk nearly full: {free} bytes free"))
            }
            Ok(_) => {}
            Err(err) => failed.push(format!("disk space: {err}")),
        }
        failed
    })
    .await;
    match checks {
        Ok(more) => failed.extend(more),
        Err(err) => failed.push(format!("checks did not run: {err}")),
    }
    if failed.is_empty() {
        text(StatusCode::OK, "ready\n".into())
    } else {
        tracing::warn!(failed = ?failed, "not ready");
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failed.join("; ")),
        )
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
