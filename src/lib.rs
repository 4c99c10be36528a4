//! ociregistry: a pull-only, pull-through caching OCI Distribution server.
//!
//! Request flow: [`server`] parses the request and resolves its upstream ([`route`]); [`cache`] answers from
//! the hot cache and the [`store`], or fetches through [`upstream`] once, verifies and stores. [`error`] maps
//! every failure to an OCI error body. [`admin`] operates the cache (list, prune, load, pins, the disk ceiling)
//! for the CLI, through the server's admin socket or on the index directly.

pub mod admin;
pub mod blocking;
pub mod cache;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod digest;
pub mod error;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod reference;
pub mod route;
pub mod server;
pub mod store;
pub mod tls;
pub mod traces;
pub mod upstream;
