//! A minimal pull client against ociregistry.
//!
//! [`Target`] builds URLs for one repository of one upstream in each addressing form ociregistry
//! supports (in-path `/v2/<host>/<repo>/...`, containerd mirror `?ns=<host>`, or default registry).
//! [`pull_image`] walks index (by tag) -> child manifests (by digest) -> config and layer blobs, and
//! checks every body byte-for-byte and every header (Content-Type, Content-Length,
//! Docker-Content-Digest, ETag, Accept-Ranges for blobs), then repeats each request with HEAD and
//! checks the same headers with an empty body.

use super::http::{get, get_manifest, head, head_manifest, Resp};
use super::image::{Blob, Image, Manifest};
use super::server::Server;

/// How the upstream registry is named in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `/v2/<host>/<repo>/...`
    InPath,
    /// `/v2/<repo>/...?ns=<host>`
    Ns,
    /// `/v2/<repo>/...` (the server's `default_registry`)
    Default,
}

/// One repository of one upstream, as seen through one ociregistry instance.
#[derive(Clone, Debug)]
pub struct Target {
    pub base: String,
    pub host: String,
    pub repo: String,
    pub form: Form,
}

impl Target {
    pub fn new(server: &Server, host: &str, repo: &str, form: Form) -> Target {
        Target {
            base: server.base_url(),
            host: host.to_string(),
            repo: repo.to_string(),
            form,
        }
    }

    pub fn in_path(server: &Server, host: &str, repo: &str) -> Target {
        Target::new(server, host, repo, Form::InPath)
    }

    pub fn ns(server: &Server, host: &str, repo: &str) -> Target {
        Target::new(server, host, repo, Form::Ns)
    }

    pub fn default_registry(server: &Server, repo: &str) -> Target {
        Target::new(server, "", repo, Form::Default)
    }

    /// The same target through a (restarted) server with a new address.
    pub fn via(&self, server: &Server) -> Target {
        Target {
            base: server.base_url(),
            ..self.clone()
        }
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        let (base, host, repo) = (&self.base, &self.host, &self.repo);
        match self.form {
            Form::InPath => format!("{base}/v2/{host}/{repo}/{kind}/{reference}"),
            Form::Ns => format!("{base}/v2/{repo}/{kind}/{reference}?ns={host}"),
            Form::Default => format!("{base}/v2/{repo}/{kind}/{reference}"),
        }
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        self.url("manifests", reference)
    }

    pub fn blob_url(&self, digest: &str) -> String {
        self.url("blobs", digest)
    }
}

fn assert_common_headers(resp: &Resp, content_type: &str, len: usize, digest: &str, what: &str) {
    assert_eq!(
        resp.status,
        200,
        "{what}: expected 200, got {} body {:?}",
        resp.status,
        resp.text()
    );
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some(content_type),
        "{what}: Content-Type"
    );
    assert_eq!(
        resp.header("content-length"),
        Some(len.to_string()),
        "{what}: Content-Length"
    );
    assert_eq!(
        resp.header("docker-content-digest").as_deref(),
        Some(digest),
        "{what}: Docker-Content-Digest"
    );
    assert_eq!(
        resp.header("etag"),
        Some(format!("\"{digest}\"")),
        "{what}: ETag"
    );
}

/// Checks a GET (`head == false`) or HEAD response for manifest `m`.
pub fn assert_manifest_response(resp: &Resp, m: &Manifest, head: bool, what: &str) {
    assert_common_headers(resp, &m.media_type, m.data.len(), &m.digest, what);
    if head {
        assert!(resp.body.is_empty(), "{what}: HEAD must not have a body");
    } else {
        assert!(
            resp.body == m.data,
            "{what}: manifest body differs from upstream bytes (got {} bytes, want {})",
            resp.body.len(),
            m.data.len()
        );
    }
}

/// Checks a GET (`head == false`) or HEAD response for blob `b`.
pub fn assert_blob_response(resp: &Resp, b: &Blob, head: bool, what: &str) {
    assert_common_headers(
        resp,
        "application/octet-stream",
        b.data.len(),
        &b.digest,
        what,
    );
    assert_eq!(
        resp.header("accept-ranges").as_deref(),
        Some("bytes"),
        "{what}: Accept-Ranges"
    );
    if head {
        assert!(resp.body.is_empty(), "{what}: HEAD must not have a body");
    } else {
        assert_eq!(
            resp.body.len(),
            b.data.len(),
            "{what}: blob body length differs"
        );
        assert!(resp.body == b.data, "{what}: blob body bytes differ");
    }
}

/// GET then HEAD of manifest `reference`, both checked against `m`.
pub async fn check_manifest(
    client: &reqwest::Client,
    target: &Target,
    reference: &str,
    m: &Manifest,
) -> Resp {
    let url = target.manifest_url(reference);
    let resp = get_manifest(client, &url).await;
    assert_manifest_response(&resp, m, false, &format!("GET {url}"));
    let h = head_manifest(client, &url).await;
    assert_manifest_response(&h, m, true, &format!("HEAD {url}"));
    resp
}

/// Polls GET of manifest `reference` (every 20 ms, at most 2 s) until it answers with `digest`: for changes made
/// by background work (tag revalidation).
pub async fn wait_for_manifest_digest(
    client: &reqwest::Client,
    target: &Target,
    reference: &str,
    digest: &str,
) -> bool {
    for _ in 0..100 {
        let resp = get_manifest(client, &target.manifest_url(reference)).await;
        if resp.header("docker-content-digest").as_deref() == Some(digest) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// GET then HEAD of blob `b`, both checked.
pub async fn check_blob(client: &reqwest::Client, target: &Target, b: &Blob) {
    let url = target.blob_url(&b.digest);
    let resp = get(client, &url).await;
    assert_blob_response(&resp, b, false, &format!("GET {url}"));
    let h = head(client, &url).await;
    assert_blob_response(&h, b, true, &format!("HEAD {url}"));
}

/// Pulls `image` by `tag` like a client would: index by tag, each child manifest by the digest
/// found in the served index, each config/layer by the digests found in the served manifests.
pub async fn pull_image(client: &reqwest::Client, target: &Target, tag: &str, image: &Image) {
    let index_resp = check_manifest(client, target, tag, &image.index).await;
    let index: serde_json::Value = index_resp.json();
    let children = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(children.len(), image.children.len());
    for desc in children {
        let digest = desc["digest"].as_str().expect("descriptor digest");
        let child = image
            .children
            .iter()
            .find(|c| c.manifest.digest == digest)
            .unwrap_or_else(|| panic!("served index references unknown manifest {digest}"));
        let resp = check_manifest(client, target, digest, &child.manifest).await;
        let manifest = resp.json();
        let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
        for layer in manifest["layers"].as_array().unwrap() {
            digests.push(layer["digest"].as_str().unwrap().to_string());
        }
        for d in digests {
            let blob = image
                .blob(&d)
                .unwrap_or_else(|| panic!("served manifest references unknown blob {d}"));
            check_blob(client, target, blob).await;
        }
    }
}
