//! An upstream's rate limit as it states it (Docker Hub's `ratelimit-limit` / `ratelimit-remaining`), and the
//! back-off after a 429: until `Retry-After` has passed, requests to that registry fail fast without traffic,
//! so the cache serves what it has and does not deepen the hole.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// Back-off when a 429 carries no usable `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);
/// The longest back-off honoured, whatever the upstream says.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What an upstream last said about its rate limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Requests allowed per window (`ratelimit-limit: 100;w=21600` → 100).
    pub limit: Option<u64>,
    /// Requests left in the window.
    pub remaining: Option<u64>,
}

/// Per-registry rate-limit state.
#[derive(Default)]
pub struct RateLimit {
    status: Mutex<RateLimitStatus>,
    backoff_until: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// Records the rate-limit headers of an answer, if any.
    pub fn observe(&self, registry: &str, headers: &HeaderMap) {
        let limit = leading_number(headers, "ratelimit-limit");
        let remaining = leading_number(headers, "ratelimit-remaining");
        if limit.is_none() && remaining.is_none() {
            return;
        }
        tracing::debug!(registry, ?limit, ?remaining, "upstream rate limit");
        if let Some(remaining) = remaining {
            super::telemetry::rate_limit_remaining(registry, remaining);
        }
        let mut status = self.status.lock().expect("rate-limit lock");
        status.limit = limit.or(status.limit);
        status.remaining = remaining.or(status.remaining);
    }

    /// The last stated limit and remaining budget.
    pub fn status(&self) -> RateLimitStatus {
        self.status.lock().expect("rate-limit lock").clone()
    }

    /// Starts backing off after a 429; returns the back-off.
    pub fn back_off(&self, registry: &str, headers: &HeaderMap) -> Duration {
        let wait = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_BACKOFF)
            .min(MAX_BACKOFF);
        tracing::warn!(
            registry,
            retry_after_s = wait.as_secs(),
            "upstream is rate limiting (429); backing off"
        );
        *self.backoff_until.lock().expect("rate-limit lock") = Instant::now().checked_add(wait);
        wait
    }

    /// The time left of a back-off in force.
    pub fn backing_off(&self) -> Option<Duration> {
        let until = (*self.backoff_until.lock().expect("rate-limit lock"))?;
        until.checked_duration_since(Instant::now())
    }
}

/// The number at the start of a header value (`100;w=21600` → 100).
fn leading_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    let digits: String = value
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_hub_headers_and_backs_off() {
        let rl = RateLimit::default();
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", "100;w=21600".parse().unwrap());
        h.insert("ratelimit-remaining", "76;w=21600".parse().unwrap());
        rl.observe("docker.io", &h);
        assert_eq!(
            rl.status(),
            RateLimitStatus {
                limit: Some(100),
                remaining: Some(76)
            }
        );
        assert!(rl.backing_off().is_none());
        let mut h = HeaderMap::new();
        h.insert("retry-after", "30".parse().unwrap());
        assert_eq!(rl.back_off("docker.io", &h), Duration::from_secs(30));
        let left = rl.backing_off().unwrap();
        assert!(left > Duration::from_secs(28) && left <= Duration::from_secs(30));
        h.insert("retry-after", "999999999".parse().unwrap());
        assert_eq!(rl.back_off("docker.io", &h), MAX_BACKOFF);
    }
}
