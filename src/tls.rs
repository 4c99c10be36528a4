//! TLS of the server itself (rustls): certificate and key from PEM files, optional client certificates
//! (mTLS: `none`, `optional` or `require`, checked against a CA file), ALPN for HTTP/2 and HTTP/1.1, and
//! hot reload: the files are checked every few seconds and, when one changed, a new configuration is built
//! and used for new connections; open connections keep theirs. A broken new file is logged and the old
//! configuration kept.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuthMode, ServerTlsConfig};

/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The server's TLS configuration, swapped when its files change.
pub struct ReloadingTls {
    settings: ServerTlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    stamps: RwLock<Vec<Option<SystemTime>>>,
}

impl ReloadingTls {
    /// Loads the files; fails (at start-up) when they are unusable.
    pub fn load(settings: &ServerTlsConfig) -> anyhow::Result<Arc<ReloadingTls>> {
        let config = build(settings)?;
        Ok(Arc::new(ReloadingTls {
            stamps: RwLock::new(stamps(settings)),
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// The configuration for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock").clone())
    }

    /// Re-reads the files if any changed; returns whether a new configuration is in use.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.settings);
        if *self.stamps.read().expect("tls lock") == now {
            return false;
        }
        *self.stamps.write().expect("tls lock") = now;
        match build(&self.settings) {
            Ok(config) => {
                *self.current.write().expect("tls lock") = Arc::new(config);
                tracing::info!(cert = %self.settings.cert_file.display(), "TLS certificate reloaded");
                true
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "TLS files changed but cannot be used; keeping the previous ones"
                );
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_INTERVAL`] until the returned task is dropped or aborted.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let tls = tls.clone();
                let _ = crate::blocking::spawn(move || tls.reload_if_changed()).await;
            }
        })
    }
}

fn files(settings: &ServerTlsConfig) -> Vec<&PathBuf> {
    let mut files = vec![&settings.cert_file, &settings.key_file];
    files.extend(settings.client_ca_file.as_ref());
    files
}

/// Modification times (and so, for Kubernetes secret volumes, the symlink swaps) of the files.
fn stamps(settings: &ServerTlsConfig) -> Vec<Option<SystemTime>> {
    files(settings)
        .into_iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

fn build(settings: &ServerTlsConfig) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_file)
        .with_context(|| format!("server_tls.cert_file {}", settings.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "server_tls.cert_file {}: not PEM certificates",
                settings.cert_file.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "server_tls.cert_file {}: no certificate in it",
        settings.cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).with_context(|| {
        format!(
            "server_tls.key_file {}: no PEM private key",
            settings.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (settings.client_auth(), &settings.client_ca_file) {
        (ClientAuthMode::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("server_tls.client_ca_file {}", ca.display()))?
            {
                let cert = cert.with_context(|| {
                    format!("server_tls.client_ca_file {}: not PEM", ca.display())
                })?;
                roots.add(cert).with_context(|| {
                    format!(
                        "server_tls.client_ca_file {}: bad CA certificate",
                        ca.display()
                    )
                })?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "server_tls.client_ca_file {}: no certificate in it",
                ca.display()
            );
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientAuthMode::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("server_tls: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
