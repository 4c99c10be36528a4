//! A number for every request, given by the access log: error bodies name it, the log line
//! with the detail carries it, and the answer's `X-Request-Id` says it, so an operator can match a client's
//! report with the cause. A counter that starts at the start-up time shifted left by 24 bits: unique within
//! a run and, in practice, across restarts; cheap enough for the hot path (no allocation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static NEXT: OnceLock<AtomicU64> = OnceLock::new();

/// A new id.
pub fn next() -> u64 {
    NEXT.get_or_init(|| AtomicU64::new(crate::store::unix_now() << 24))
        .fetch_add(1, Ordering::Relaxed)
}
