//! Shared harness for the `ociregistry` integration tests.
//!
//! One concept per file:
//! - [`image`]: a tiny deterministic OCI / Docker image builder (manifests, configs, layers, digests).
//! - [`killable`]: a listener whose connections can be forcibly closed (used to really stop the upstream).
//! - [`upstream`]: [`TestUpstream`], an in-process registry behind Docker bearer-token auth that counts requests.
//! - [`server`]: [`Server`], which runs the real `ociregistry` binary as a child process.
//! - [`http`]: HTTP client helpers, error-body assertions and a raw HTTP/1.1 client for unnormalized paths.
//! - [`pull`]: a minimal pull client that walks index -> manifests -> blobs and checks every header.
//! - [`fixture`]: [`Fixture`], temp dir + upstream + server + client for one test.
//! - [`store`]: checks of the on-disk content-addressed blob store.
//!
//! Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod fixture;
pub mod http;
pub mod image;
pub mod killable;
pub mod pull;
pub mod server;
pub mod store;
pub mod upstream;

pub use self::fixture::*;
pub use self::http::*;
pub use self::image::*;
pub use self::pull::*;
pub use self::server::*;
pub use self::store::*;
pub use self::upstream::*;

use std::future::Future;
use std::time::Duration;

/// Upper bound for a whole test body; individual requests have their own, shorter timeouts.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(45);

/// Runs `fut` with [`TEST_TIMEOUT`], panicking (instead of hanging) if it does not finish.
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}
