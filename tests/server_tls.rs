//! TLS serving through the real binary: HTTPS with HTTP/2 and HTTP/1.1 (ALPN), mTLS (no certificate and a
//! certificate from another CA refused at the handshake, the right one served), and certificate reload
//! without dropping open connections. Certificates are made with the `openssl` command line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed (scripts/install-test-deps)");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Makes `NAME.crt`/`NAME.key` signed by CA `ca` (or a self-signed CA when `ca` is `None`).
fn make_cert(dir: &Path, name: &str, ca: Option<&str>, ext: &str) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let subject = format!("/CN={name}");
    match ca {
        None => openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &crt,
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ),
        Some(ca) => {
            let csr = format!("{name}.csr");
            let extfile = format!("{name}.ext");
            std::fs::write(dir.join(&extfile), ext).unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &subject,
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                ],
            );
        }
    }
}

const SERVER_EXT: &str = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXT: &str = "extendedKeyUsage=clientAuth\n";

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        make_cert(&dir, "ca", None, "");
        make_cert(&dir, "other-ca", None, "");
        make_cert(&dir, "server", Some("ca"), SERVER_EXT);
        make_cert(&dir, "client", Some("ca"), CLIENT_EXT);
        make_cert(&dir, "stranger", Some("other-ca"), CLIENT_EXT);
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }

    /// A client trusting `ca`, presenting `identity`'s certificate if given.
    fn client(&self, ca: &str, identity: Option<&str>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&self.read(&format!("{ca}.crt"))).unwrap(),
            )
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            let mut pem = self.read(&format!("{name}.crt"));
            pem.extend(self.read(&format!("{name}.key")));
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }
}

fn https(server: &Server, path: &str) -> String {
    format!("https://{}{path}", server.addr())
}

async fn start(tmp: &Path, pki: &Pki, client_auth: Option<&str>) -> Server {
    let mut yaml = format!(
        "server_tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
        pki.path("server.crt"),
        pki.path("server.key")
    );
    if let Some(mode) = client_auth {
        yaml.push_str(&format!(
            "  client_ca_file: \"{}\"\n  client_auth: {mode}\n",
            pki.path("ca.crt")
        ));
    }
    let config = ServerConfig {
        extra_yaml: yaml,
        ..ServerConfig::default()
    };
    Server::start(tmp, &config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_https_with_http2_and_http1() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp.path());
        let server = start(tmp.path(), &pki, None).await;
        assert!(server
            .logs()
            .iter()
            .any(|l| l.contains("listening on https://")));
        let resp = pki
            .client("ca", None)
            .get(https(&server, "/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.version(),
            reqwest::Version::HTTP_2,
            "ALPN should pick h2"
        );
        let h1 = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .add_root_certificate(reqwest::Certificate::from_pem(&pki.read("ca.crt")).unwrap())
            .build()
            .unwrap();
        let resp = h1.get(https(&server, "/v2/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        // A client that does not trust the CA is refused by its own check; plain HTTP is not answered.
        assert!(pki
            .client("other-ca", None)
            .get(https(&server, "/v2/"))
            .send()
            .await
            .is_err());
        let plain = client()
            .get(format!("http://{}/v2/", server.addr()))
            .send()
            .await;
        assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_requires_a_certificate_from_the_client_ca() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp.path());
        let server = start(tmp.path(), &pki, Some("require")).await;
        let url = https(&server, "/v2/");
        let none = pki.client("ca", None).get(&url).send().await;
        assert!(none.is_err(), "no client certificate: {none:?}");
        let stranger = pki.client("ca", Some("stranger")).get(&url).send().await;
        assert!(
            stranger.is_err(),
            "certificate from another CA: {stranger:?}"
        );
        let resp = pki
            .client("ca", Some("client"))
            .get(&url)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optional_client_auth_admits_clients_without_a_certificate_but_not_strangers() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp.path());
        let server = start(tmp.path(), &pki, Some("optional")).await;
        let url = https(&server, "/v2/");
        assert_eq!(
            pki.client("ca", None)
                .get(&url)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            pki.client("ca", Some("client"))
                .get(&url)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert!(pki
            .client("ca", Some("stranger"))
            .get(&url)
            .send()
            .await
            .is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_are_reloaded_without_dropping_connections() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp.path());
        let server = start(tmp.path(), &pki, None).await;
        let url = https(&server, "/v2/");
        let old_client = pki.client("ca", None);
        assert_eq!(old_client.get(&url).send().await.unwrap().status(), 200);
        // A new server certificate from another CA replaces the files.
        make_cert(&pki.dir, "next", Some("other-ca"), SERVER_EXT);
        std::fs::copy(pki.dir.join("next.key"), pki.dir.join("server.key")).unwrap();
        std::fs::copy(pki.dir.join("next.crt"), pki.dir.join("server.crt")).unwrap();
        let new_client = pki.client("other-ca", None);
        let mut reloaded = false;
        for _ in 0..60 {
            if new_client.get(&url).send().await.is_ok() {
                reloaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(reloaded, "the new certificate was never served");
        assert!(server
            .logs()
            .iter()
            .any(|l| l.contains("TLS certificate reloaded")));
        // The connection opened before the reload still works (HTTP/2: the same connection).
        assert_eq!(old_client.get(&url).send().await.unwrap().status(), 200);
        // New connections get the new certificate: a client trusting only the old CA is refused.
        assert!(pki.client("ca", None).get(&url).send().await.is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_upstream_with_a_private_ca_or_skip_verify() {
    bounded(async {
        // Upstream chain: cache B --https--> cache A (TLS, private CA) --http--> test upstream.
        let upstream = TestUpstream::start().await;
        let image = ImageBuilder::oci().small().seed(120).build();
        upstream.push_image("team/app", "v1", &image);
        let tmp_a = tempfile::tempdir().unwrap();
        let pki = Pki::new(tmp_a.path());
        let mut config_a = ServerConfig::for_upstream(&upstream).default_registry(&upstream.host());
        config_a.extra_yaml = format!(
            "server_tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
            pki.path("server.crt"),
            pki.path("server.key")
        );
        let a = Server::start(tmp_a.path(), &config_a).await;
        let a_host = a.addr().to_string();
        let through_b = |tls: &str| ServerConfig {
            extra_yaml: format!("registries:\n  - name: \"{a_host}\"\n    tls: {tls}\n"),
            ..ServerConfig::default()
        };
        // 1. Web-PKI roots only: A's certificate is not trusted; the client gets a generic 502.
        let tmp = tempfile::tempdir().unwrap();
        let b = Server::start(tmp.path(), &through_b("{}")).await;
        let target = Target::in_path(&b, &a_host, "team/app");
        let resp = get_manifest(&client(), &target.manifest_url("v1")).await;
        assert_error(&resp, 502, "UNAVAILABLE", "untrusted upstream certificate");
        drop(b);
        // 2. ca_file: trusted.
        let tmp = tempfile::tempdir().unwrap();
        let b = Server::start(
            tmp.path(),
            &through_b(&format!("{{ca_file: \"{}\"}}", pki.path("ca.crt"))),
        )
        .await;
        pull_image(
            &client(),
            &Target::in_path(&b, &a_host, "team/app"),
            "v1",
            &image,
        )
        .await;
        drop(b);
        // 3. insecure_skip_verify: accepted, and said loudly at start-up.
        let tmp = tempfile::tempdir().unwrap();
        let b = Server::start(tmp.path(), &through_b("{insecure_skip_verify: true}")).await;
        assert!(
            b.wait_for_log(|l| l.contains("insecure_skip_verify") && l.contains("WARN"))
                .await
        );
        pull_image(
            &client(),
            &Target::in_path(&b, &a_host, "team/app"),
            "v1",
            &image,
        )
        .await;
    })
    .await
}
