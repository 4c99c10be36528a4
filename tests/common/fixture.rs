//! [`Fixture`]: the usual test setup -- a temp dir, a [`TestUpstream`], an ociregistry [`Server`]
//! configured to reach that upstream over http, and a client. Fields drop in declaration order, so
//! the server is killed before the upstream stops and before the temp dir is removed.

use tempfile::TempDir;

use super::http::client;
use super::pull::{Form, Target};
use super::server::{Server, ServerConfig};
use super::upstream::{TestUpstream, UpstreamOptions};

/// The repository most tests use on the upstream.
pub const REPO: &str = "team/app";

pub struct Fixture {
    pub server: Server,
    pub upstream: TestUpstream,
    pub client: reqwest::Client,
    pub tmp: TempDir,
}

impl Fixture {
    /// Upstream with bearer auth, server with `tag_ttl: 10m`.
    pub async fn new() -> Fixture {
        Fixture::with(UpstreamOptions::default(), |c| c).await
    }

    /// Custom upstream options; `cfg` may adjust the server config derived from the upstream.
    pub async fn with(
        opts: UpstreamOptions,
        cfg: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let upstream = TestUpstream::start_with(opts).await;
        let config = cfg(ServerConfig::for_upstream(&upstream));
        let server = Server::start(tmp.path(), &config).await;
        Fixture {
            server,
            upstream,
            client: client(),
            tmp,
        }
    }

    /// `repo` on the upstream, addressed with `form` through the current server.
    pub fn target(&self, repo: &str, form: Form) -> Target {
        Target::new(&self.server, &self.upstream.host(), repo, form)
    }

    /// `/v2/127.0.0.1:PORT/<repo>/...`
    pub fn in_path(&self, repo: &str) -> Target {
        self.target(repo, Form::InPath)
    }
}
