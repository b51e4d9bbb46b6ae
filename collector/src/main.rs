//! `sightline-collector`: `serve`, and `project create|list`. Parses flags,
//! loads `collector.conf`, opens the store the `store` key names, and runs;
//! nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_core::config::{Config, FileSource, FlagValue, ProcessEnv};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sightline_collector::auth;
use sightline_collector::server::Collector;
use sightline_collector::settings::{COLLECTOR_KEYS, ServeSettings, store_url};
use sightline_collector::store::sqlite::SqliteStore;
use sightline_collector::store::{Store, StoreUrl};
use tokio_util::sync::CancellationToken;

/// Static (musl) builds: musl's malloc serialises the ingest's allocations
/// and took 3.1x the CPU per point of glibc's in `bench collector`.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sightline-collector",
    version,
    about = "The Sightline collector."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive agents' data and serve the API.
    Serve(ServeArgs),
    /// Manage projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (`key=value`), under the flags.
    #[arg(long, value_name = "FILE")]
    conf: Option<PathBuf>,
    /// Address for agents [default: 127.0.0.1:6600].
    #[arg(long, value_name = "ADDR")]
    grpc: Option<String>,
    /// Address for the JSON API [default: 127.0.0.1:6680].
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Store folder [default: ./sightline-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Store: sqlite:DIR [default: sqlite: in --data].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// How long data is kept [default: 7d].
    #[arg(long, value_name = "DURATION")]
    retention: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// Create a project; prints its license (for agents) and API token.
    Create {
        /// The project's name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List projects.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store `project` uses: the same keys and flags as `serve`.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// Config file (`key=value`), under the flags.
    #[arg(long, value_name = "FILE")]
    conf: Option<PathBuf>,
    /// Store folder [default: ./sightline-data].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Store: sqlite:DIR [default: sqlite: in --data].
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sightline-collector: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Serve(args) => match serve_settings(args) {
            Ok(settings) => runtime.block_on(serve(settings)),
            Err(e) => {
                eprintln!("sightline-collector: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Project { command } => {
            let (store, run) = match command {
                ProjectCommand::Create { name, store } => (store, ProjectRun::Create(name)),
                ProjectCommand::List { store } => (store, ProjectRun::List),
            };
            match project_store(store) {
                Ok(url) => runtime.block_on(project(url, run)),
                Err(e) => {
                    eprintln!("sightline-collector: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sightline-collector: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve_settings(args: ServeArgs) -> Result<ServeSettings, agent_core::ConfigError> {
    let mut flags = Vec::new();
    let mut flag = |key: &'static str, flag: &'static str, value: Option<String>| {
        if let Some(value) = value {
            flags.push(FlagValue { key, value, flag });
        }
    };
    flag("grpc.listen", "--grpc", args.grpc);
    flag("http.listen", "--http", args.http);
    flag(
        "data.dir",
        "--data",
        args.data.map(|p| p.display().to_string()),
    );
    flag("store", "--store", args.store);
    flag("retention", "--retention", args.retention);
    flag(
        "tls.cert",
        "--tls-cert",
        args.tls_cert.map(|p| p.display().to_string()),
    );
    flag(
        "tls.key",
        "--tls-key",
        args.tls_key.map(|p| p.display().to_string()),
    );
    ServeSettings::from_config(&load_config(args.conf, &flags)?)
}

fn load_config(
    conf: Option<PathBuf>,
    flags: &[FlagValue],
) -> Result<Config, agent_core::ConfigError> {
    let file = match conf {
        Some(path) => FileSource::Explicit(path),
        None => FileSource::Default(PathBuf::from("/etc/sightline/collector.conf")),
    };
    let config = Config::load(&file, &ProcessEnv, flags, COLLECTOR_KEYS)?;
    for warning in config.warnings() {
        eprintln!("sightline-collector: warning: {warning}");
    }
    Ok(config)
}

/// The store `project` works on, chosen as `serve` chooses it.
fn project_store(args: StoreArgs) -> Result<StoreUrl, agent_core::ConfigError> {
    let mut flags = Vec::new();
    if let Some(data) = args.data {
        flags.push(FlagValue {
            key: "data.dir",
            value: data.display().to_string(),
            flag: "--data",
        });
    }
    if let Some(store) = args.store {
        flags.push(FlagValue {
            key: "store",
            value: store,
            flag: "--store",
        });
    }
    store_url(&load_config(args.conf, &flags)?)
}

async fn serve(settings: ServeSettings) -> Result<()> {
    agent_core::logging::init(&settings.log_level);
    // One arm per backend; everything after is generic over the store.
    match &settings.store {
        StoreUrl::Sqlite(dir) => {
            let store = SqliteStore::open_with(dir, settings.store_limits)
                .await
                .with_context(|| format!("opening the store {}", settings.store))?;
            serve_with(settings, store).await
        }
    }
}

async fn serve_with<S: Store>(settings: ServeSettings, store: S) -> Result<()> {
    let collector = Collector::bind(settings.clone(), store).await?;
    let grpc = collector.grpc_addr()?;
    let http = collector.http_addr()?;
    tracing::info!(
        grpc = %grpc,
        http = %http,
        store = %settings.store,
        tls = settings.tls.is_some(),
        "Collector listening."
    );
    // One machine-readable line on stdout, for scripts and tests.
    println!("listening grpc={grpc} http={http}");
    let shutdown = CancellationToken::new();
    tokio::spawn(agent_core::cli::cancel_on_signal(shutdown.clone()));
    collector.run(shutdown).await?;
    tracing::info!("Collector stopped.");
    Ok(())
}

/// What `project` does, once its store is chosen.
enum ProjectRun {
    Create(String),
    List,
}

async fn project(url: StoreUrl, run: ProjectRun) -> Result<()> {
    match &url {
        StoreUrl::Sqlite(dir) => {
            let store = SqliteStore::open(dir)
                .await
                .with_context(|| format!("opening the store {url}"))?;
            let result = project_with(&store, run).await;
            Store::close(&store).await;
            result
        }
    }
}

async fn project_with<S: Store>(store: &S, run: ProjectRun) -> Result<()> {
    match run {
        ProjectRun::Create(name) => {
            let created = auth::create_project(store, &name).await?;
            println!("license={}", created.license.expose());
            println!("token={}", created.token);
        }
        ProjectRun::List => {
            for project in store.projects().await? {
                println!("{}\t{}", project.id, project.name);
            }
        }
    }
    Ok(())
}
