//! A short id for every request, set by the access log around the handler: error bodies name it, and the log
//! line with the detail carries it, so an operator can match a client's report with the cause.

use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static REQUEST_ID: String;
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A new id: the process start second and a counter, unique within a run and across restarts.
pub fn next() -> String {
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(crate::store::unix_now);
    format!("{epoch:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The id of the request being handled, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}
