//! The command line: `ociregistry serve`, the operations (`list`, `prune`, `load`, `pin`, `unpin`,
//! `invalidate`, `stats`, thin clients of the server's admin API) and `version`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::admin::client::{Admin, Locate};
use crate::admin::plan::AgeBy;
use crate::admin::render::{self, Output};
use crate::admin::PruneRequest;
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
    /// List cached images.
    List(ListArgs),
    /// Remove cached images (by age, pattern, keeping the newest per repository) and unreferenced blobs.
    Prune(PruneArgs),
    /// Pull images into the cache (e.g. before a site goes offline).
    Load(LoadArgs),
    /// Protect cached images from pruning and eviction.
    Pin(ReferencesArgs),
    /// Remove pins.
    Unpin(ReferencesArgs),
    /// Drop a tag mapping (the next pull asks the upstream), or, for a digest, the whole image.
    Invalidate(ReferencesArgs),
    /// What the cache holds.
    Stats(StatsArgs),
    /// Print the version.
    Version,
}

/// Where the index and blobs are: the same flags for `serve` and the operations.
#[derive(Args, Debug, Default, Clone)]
pub struct StoreArgs {
    /// Directory for the index and blobs (default ./ociregistry-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The redb index file (default <data-dir>/index.redb).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The blob directory (default <data-dir>/blobs).
    #[arg(long)]
    pub blobs: Option<PathBuf>,
}

impl StoreArgs {
    fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(db) = &self.db {
            config.db = Some(db.clone());
        }
        if let Some(blobs) = &self.blobs {
            config.blobs = Some(blobs.clone());
        }
    }
}

/// Where the operations find the cache: the running server's admin socket, else the index directly.
#[derive(Args, Debug, Default, Clone)]
pub struct AdminArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The server's admin socket (default: admin.sock beside the index).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// A server's TCP admin listener, e.g. http://10.0.0.5:9091 (needs --token-file).
    #[arg(long)]
    pub server: Option<String>,
    /// File holding the admin bearer token (for --server).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl AdminArgs {
    fn apply(&self, config: &mut Config) {
        self.store.apply(config);
        if let Some(socket) = &self.admin_socket {
            config.admin_socket = Some(socket.clone());
        }
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Only images whose registry/repository or registry/repository:tag matches this glob: `*` stays within a
    /// path component, `**/` spans components, e.g. 'docker.io/library/*' or 'docker.io/**/*:latest'.
    #[arg(long)]
    pub pattern: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Remove images not pulled (or, with --by created, cached) for this long: 30d, 12h, 90m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Which time --older-than compares.
    #[arg(long, value_enum, default_value_t)]
    pub by: AgeBy,
    /// Only names (registry/repository or registry/repository:tag) matching this glob; an image goes when all
    /// its names match, else only the matching tags go.
    #[arg(long)]
    pub pattern: Option<String>,
    /// Keep the N most recently cached images of each repository whatever else matches.
    #[arg(long)]
    pub keep_latest: Option<usize>,
    /// Print exactly what would be removed, and the bytes freed, without removing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every unpinned image (required when no --older-than, --pattern or --keep-latest is given).
    #[arg(long)]
    pub all: bool,
    /// Sweep the shared bucket (scale-out mode): delete blobs and manifests no replica references any more.
    #[arg(long)]
    pub bucket: bool,
    /// With --bucket: keep unreferenced objects younger than this (default 6h; at least twice s3.refs_interval).
    #[arg(long, value_parser = humantime::parse_duration, requires = "bucket")]
    pub bucket_grace: Option<std::time::Duration>,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// File of image references, one per line; `#` starts a comment.
    #[arg(long)]
    pub image_file: Vec<PathBuf>,
    /// An image reference (repeatable).
    #[arg(long)]
    pub image: Vec<String>,
    /// Only these platforms of multi-platform images (repeatable; default all): linux/amd64, linux/arm64/v8.
    #[arg(long)]
    pub platform: Vec<String>,
    /// Images loaded at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
}

#[derive(Args, Debug)]
pub struct ReferencesArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Image references: alpine, docker.io/library/alpine:3.20, registry.k8s.io/pause@sha256:…
    #[arg(required = true)]
    pub references: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; use 0.0.0.0:8080 to serve other hosts).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log filter, e.g. info or debug (RUST_LOG wins when set).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log lines as text (default) or JSON.
    #[arg(long, value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    /// Export traces over OTLP/HTTP to this collector base URL (e.g. http://127.0.0.1:4318); off by default.
    /// OTEL_EXPORTER_OTLP_ENDPOINT also turns it on.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
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
    /// The admin API's Unix socket (default <data-dir>/admin.sock).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Serve the admin API on TCP too (needs --admin-token-file).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// File holding the bearer token of --admin-listen.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve Prometheus metrics on /metrics: a port (on --listen's address) or an address, e.g. 2112.
    #[arg(long)]
    pub metrics: Option<crate::config::MetricsListen>,
}

impl ServeArgs {
    /// Applies the flags that were given on top of `config`.
    pub fn apply(self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        self.store.apply(config);
        if let Some(level) = self.log_level {
            config.log_level = level;
        }
        if let Some(endpoint) = self.otlp_endpoint {
            config.otlp_endpoint = Some(endpoint);
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if let Some(registry) = self.default_registry {
            config.default_registry = registry;
        }
        if self.air_gapped {
            config.air_gapped = true;
        }
        if let Some(socket) = self.admin_socket {
            config.admin_socket = Some(socket);
        }
        if let Some(addr) = self.admin_listen {
            config.admin_listen = Some(addr);
        }
        if let Some(file) = self.admin_token_file {
            config.admin_token_file = Some(file);
        }
        if let Some(metrics) = self.metrics {
            config.metrics = Some(metrics);
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
    let load_config = || -> anyhow::Result<Config> {
        match &cli.config_file {
            Some(path) => Config::from_file(path),
            None => Ok(Config::default()),
        }
    };
    match cli.command {
        Command::Version => {
            println!("ociregistry {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::List(args) => operate(load_config()?, &args.admin, |admin| async move {
            let list = admin.images(args.pattern.as_deref()).await?;
            if !render::structured(args.output, &list)? {
                print!("{}", render::image_list(&list));
            }
            Ok(true)
        }),
        Command::Prune(args) => operate(load_config()?, &args.admin, |admin| async move {
            let request = PruneRequest {
                older_than: args
                    .older_than
                    .map(|d| humantime::format_duration(d).to_string()),
                by: args.by,
                pattern: args.pattern.clone(),
                keep_latest: args.keep_latest,
                dry_run: args.dry_run,
                all: args.all,
                bucket: args.bucket,
                bucket_grace: args
                    .bucket_grace
                    .map(|d| humantime::format_duration(d).to_string()),
            };
            let report = admin.prune(&request).await?;
            if !render::structured(args.output, &report)? {
                print!("{}", render::prune_report(&report));
            }
            Ok(true)
        }),
        Command::Load(args) => {
            let mut images = Vec::new();
            for file in &args.image_file {
                images.extend(crate::admin::load::read_image_file(file)?);
            }
            images.extend(args.image.iter().map(|r| crate::admin::load::Wanted {
                reference: r.clone(),
                origin: "--image".into(),
            }));
            anyhow::ensure!(
                !images.is_empty(),
                "load: name images with --image or --image-file"
            );
            let platforms = crate::admin::load::parse_platforms(&args.platform)?;
            operate(load_config()?, &args.admin, |admin| async move {
                crate::admin::load::run(admin, images, platforms, args.parallel).await
            })
        }
        Command::Pin(args) => operate(load_config()?, &args.admin, |admin| async move {
            let mut ok = true;
            for reference in &args.references {
                match admin.pin(reference).await {
                    Ok(pin) => println!("pinned {} ({})", pin.reference, pin.digest),
                    Err(err) => {
                        eprintln!("ociregistry pin: {reference}: {err}");
                        ok = false;
                    }
                }
            }
            Ok(ok)
        }),
        Command::Unpin(args) => operate(load_config()?, &args.admin, |admin| async move {
            let mut ok = true;
            for reference in &args.references {
                match admin.unpin(reference).await {
                    Ok(u) if u.removed => println!("unpinned {}", u.reference),
                    Ok(u) => println!("{} was not pinned", u.reference),
                    Err(err) => {
                        eprintln!("ociregistry unpin: {reference}: {err}");
                        ok = false;
                    }
                }
            }
            Ok(ok)
        }),
        Command::Invalidate(args) => operate(load_config()?, &args.admin, |admin| async move {
            let mut ok = true;
            for reference in &args.references {
                match admin.invalidate(reference).await {
                    Ok(done) => println!(
                        "invalidated {}: {} tags, {} manifests, {} blobs, {} freed",
                        done.reference,
                        done.tags.len(),
                        done.manifests,
                        done.blobs,
                        render::size(done.bytes_freed)
                    ),
                    Err(err) => {
                        eprintln!("ociregistry invalidate: {reference}: {err}");
                        ok = false;
                    }
                }
            }
            Ok(ok)
        }),
        Command::Stats(args) => operate(load_config()?, &args.admin, |admin| async move {
            let stats = admin.stats().await?;
            if !render::structured(args.output, &stats)? {
                print!("{}", render::stats(&stats));
            }
            Ok(true)
        }),
        Command::Serve(args) => {
            let mut config = load_config()?;
            args.apply(&mut config);
            // Flags go through the same checks as the file.
            config.validate()?;
            let _log = crate::logging::init(
                &config.log_level,
                config.log_format,
                config.otlp_endpoint.as_deref(),
            )?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(config.blocking_threads)
                .build()?;
            runtime.block_on(crate::server::serve(config))
        }
    }
}

/// Runs an operation against the server (or the index directly); exits 1 when it reports a failure.
fn operate<F, Fut>(mut config: Config, args: &AdminArgs, op: F) -> anyhow::Result<()>
where
    F: FnOnce(std::sync::Arc<Admin>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    args.apply(&mut config);
    config.validate()?;
    // Direct mode logs what the library does (pulls, removals) like the server would; warnings only.
    let _log = crate::logging::init(
        &std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        crate::logging::LogFormat::Text,
        None,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ok = runtime.block_on(async {
        let admin = std::sync::Arc::new(
            Admin::locate(Locate {
                config: &config,
                server: args.server.clone(),
                token_file: args.token_file.clone(),
            })
            .await?,
        );
        let ok = op(admin.clone()).await?;
        admin.finish().await?;
        anyhow::Ok(ok)
    })?;
    // Flush buffered log lines: exit() skips destructors.
    drop(_log);
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
