//! The command line: `ociregistry serve` and `ociregistry version`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "ociregistry",
    version,
    about = "Pull-only, pull-through caching OCI Distribution server"
)]
pub struct Cli {
    /// YAML config file; command-line flags override its values.
    #[arg(long, global = true, env = "OCIREGISTRY_CONFIG")]
    pub config_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Run the registry server.
    Serve(ServeArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; use 0.0.0.0:8080 to serve other hosts).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for the index and blobs (default ./ociregistry-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The redb index file (default <data-dir>/index.redb).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The blob directory (default <data-dir>/blobs).
    #[arg(long)]
    pub blobs: Option<PathBuf>,
    /// Log filter, e.g. info or debug (RUST_LOG wins when set).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Upstream used when a request names none (default docker.io).
    #[arg(long)]
    pub default_registry: Option<String>,
    /// Never contact an upstream: serve what is cached regardless of TTL; a miss is an immediate 404.
    #[arg(long)]
    pub air_gapped: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates must chain to (mTLS).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// none, optional or require (default: require with --tls-client-ca, else none).
    #[arg(long, requires = "tls_cert", value_parser = ["none", "optional", "require"])]
    pub tls_client_auth: Option<String>,
}

impl ServeArgs {
    /// Applies the flags that were given on top of `config`.
    pub fn apply(self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(db) = self.db {
            config.db = Some(db);
        }
        if let Some(blobs) = self.blobs {
            config.blobs = Some(blobs);
        }
        if let Some(level) = self.log_level {
            config.log_level = level;
        }
        if let Some(registry) = self.default_registry {
            config.default_registry = registry;
        }
        if self.air_gapped {
            config.air_gapped = true;
        }
        if let (Some(cert_file), Some(key_file)) = (self.tls_cert, self.tls_key) {
            config.server_tls = Some(crate::config::ServerTlsConfig {
                cert_file,
                key_file,
                client_ca_file: self.tls_client_ca,
                client_auth: self.tls_client_auth.map(|mode| match mode.as_str() {
                    "optional" => crate::config::ClientAuthMode::Optional,
                    "require" => crate::config::ClientAuthMode::Require,
                    _ => crate::config::ClientAuthMode::None,
                }),
            });
        }
    }
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("ociregistry {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve(args) => {
            let mut config = match &cli.config_file {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            args.apply(&mut config);
            // Flags go through the same checks as the file.
            config.validate()?;
            crate::logging::init(&config.log_level)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(config.blocking_threads)
                .build()?;
            runtime.block_on(crate::server::serve(config))
        }
    }
}
