//! The command line every agent shares:
//! `<agent> [run|test] [--conf FILE] [--server HOST[:PORT]] [--license KEY]`,
//! and `--version`. Exit status: 0 done, 1 failed while running (or `test`
//! found a problem), 2 refused to start (bad config or license).
//!
//! Invariant: [`Cli`]'s `Debug` never shows `--license` whole, nor anything
//! shaped like a secret in the other flags.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::agent;
use crate::config::{Config, FileSource, FlagValue, KeySpec, ProcessEnv};
use crate::diagnose::{self, Product};
use crate::license::{mask, redact};
use crate::logging;
use crate::settings::{COMMON_KEYS, CommonSettings, server_flag};
use crate::source::SourceConfig;

/// The shared flags. `Debug` masks the license and redacts the rest.
#[derive(Parser)]
#[command(version, about = "A Sightline monitoring agent.")]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (default /etc/sightline/<product>.conf).
    #[arg(long, global = true, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Collector address, over server.host and server.port.
    #[arg(long, global = true, value_name = "HOST[:PORT]")]
    pub server: Option<String>,
    /// License key, over `license` (prefer SIGHTLINE_LICENSE: flags show in `ps`).
    #[arg(long, global = true, value_name = "KEY")]
    pub license: Option<String>,
}

/// Sub-commands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Collect and report until stopped (the default).
    Run,
    /// Check config, license, network path and collector; one line per check.
    Test,
    /// Run as a Windows service (the command line the MSI registers): as
    /// `run`, stopped by the service control manager, logging to
    /// `<data.dir>\<binary>.log`.
    #[cfg(windows)]
    Service,
}

impl fmt::Debug for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cli")
            .field("command", &self.command)
            .field(
                "conf",
                &self.conf.as_ref().map(|p| redact(&p.display().to_string())),
            )
            .field("server", &self.server.as_deref().map(redact))
            .field("license", &self.license.as_deref().map(mask))
            .finish()
    }
}

impl Cli {
    /// The config file: `--conf`, else `/etc/sightline/<product>.conf`
    /// (on Windows `C:\ProgramData\Sightline\<product>.conf`).
    pub fn file<C: SourceConfig>(&self) -> FileSource {
        match &self.conf {
            Some(path) => FileSource::Explicit(path.clone()),
            None => FileSource::Default(default_config::<C>()),
        }
    }

    /// `--server` and `--license` as config values over the file's.
    pub fn flags(&self) -> Vec<FlagValue> {
        let mut flags = Vec::new();
        if let Some(server) = &self.server {
            flags.extend(server_flag(server));
        }
        if let Some(license) = &self.license {
            flags.push(FlagValue {
                key: "license",
                value: license.clone(),
                flag: "--license",
            });
        }
        flags
    }
}

/// `/etc/sightline/<product>.conf`.
#[cfg(not(windows))]
fn default_config<C: SourceConfig>() -> PathBuf {
    PathBuf::from(format!("/etc/sightline/{}.conf", C::PRODUCT))
}

/// `C:\ProgramData\Sightline\<product>.conf`: machine-wide, outside the
/// program's folder, so upgrading or removing the MSI never touches it.
#[cfg(windows)]
fn default_config<C: SourceConfig>() -> PathBuf {
    crate::windows::program_data().join(format!("{}.conf", C::PRODUCT))
}

/// The values the MSI wrote into `HKLM\SOFTWARE\Sightline\<Product>`, as
/// the config layer under the file.
#[cfg(windows)]
fn installer_layer<C: SourceConfig>() {
    let key = crate::windows::installer_key(C::PRODUCT);
    let values = crate::windows::registry_values(&key)
        .into_iter()
        .map(|(name, text)| crate::config::InstallerValue {
            place: format!("registry HKLM\\{key}\\{name}"),
            key: name,
            text,
        })
        .collect();
    crate::config::set_installer_layer(values);
}

/// Every key of product `C`: the common ones, then its own.
pub fn all_keys<C: SourceConfig>() -> &'static [KeySpec] {
    let keys: Vec<KeySpec> = COMMON_KEYS.iter().chain(C::KEYS).copied().collect();
    Box::leak(keys.into_boxed_slice())
}

/// The whole `main` of an agent binary.
pub fn main<C: SourceConfig>() -> ExitCode {
    let matches = Cli::command()
        .name(C::BINARY)
        .bin_name(C::BINARY)
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    #[cfg(windows)]
    installer_layer::<C>();
    let file = cli.file::<C>();
    let flags = cli.flags();
    let keys = all_keys::<C>();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Collectors and spool IO run here; a stuck collector holds one
        // thread, so leave room for every collector to be stuck at once.
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", C::BINARY);
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Test => {
            let product = Product {
                name: C::PRODUCT,
                binary: C::BINARY,
                keys,
            };
            let report = runtime.block_on(async {
                let mut report = diagnose::run(product, &file, &ProcessEnv, &flags).await;
                // The product's own checks, when its settings resolve (a
                // bad config is already a failed line above).
                let own = Config::load(&file, &ProcessEnv, &flags, keys)
                    .and_then(|config| C::from_config(&config));
                if let Ok(own) = own {
                    report.checks.extend(own.checks().await);
                }
                report
            });
            print!("{report}");
            runtime.shutdown_timeout(Duration::from_millis(100));
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Run => {
            let shutdown = CancellationToken::new();
            let on_signal = cancel_on_signal(shutdown.clone());
            ExitCode::from(run_agent::<C>(
                runtime, &file, &flags, shutdown, on_signal, None,
            ))
        }
        #[cfg(windows)]
        Command::Service => {
            let body: crate::service::Body = Box::new(move |shutdown| {
                let log =
                    |common: &CommonSettings| common.data_dir.join(format!("{}.log", C::BINARY));
                u32::from(run_agent::<C>(
                    runtime,
                    &file,
                    &flags,
                    shutdown,
                    std::future::pending(),
                    Some(&log),
                ))
            });
            match crate::service::run(C::BINARY, body) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "{}: service: {e} (`service` is the command line of the Windows service; run the agent with `run`)",
                        C::BINARY
                    );
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Where the log goes: stderr, or (a service) the file this names.
type LogFile<'a> = Option<&'a dyn Fn(&CommonSettings) -> PathBuf>;

/// Loads the config and runs the agent until `shutdown` fires (or
/// `stopper` finishes, which then fires it); answers the exit status.
fn run_agent<C: SourceConfig>(
    runtime: tokio::runtime::Runtime,
    file: &crate::config::FileSource,
    flags: &[crate::config::FlagValue],
    shutdown: CancellationToken,
    stopper: impl std::future::Future<Output = ()> + Send + 'static,
    log_file: LogFile<'_>,
) -> u8 {
    let keys = all_keys::<C>();
    // Before the config: a bad first start is restarted as a crash is.
    #[cfg(windows)]
    if log_file.is_some() {
        crate::service::restart_on_failure(C::BINARY);
    }
    let prepared = Config::load(file, &ProcessEnv, flags, keys).and_then(|config| {
        let common = CommonSettings::from_config(&config, C::PRODUCT)?;
        let product = C::from_config(&config)?;
        Ok((config, common, product))
    });
    let (config, common, product) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", C::BINARY);
            #[cfg(windows)]
            if log_file.is_some() {
                let path = crate::settings::default_data_dir(C::PRODUCT)
                    .join(format!("{}.log", C::BINARY));
                logging::append_line(&path, &format!("{}: {e}", C::BINARY));
            }
            return 2;
        }
    };
    #[cfg(windows)]
    if let Some(path) = log_file
        && let Some(why) = insecure_path(file, &common.data_dir)
    {
        let line = format!(
            "{}: refusing to run as a service: {why}; only SYSTEM and Administrators may write there (the MSI sets that ACL on C:\\ProgramData\\Sightline)",
            C::BINARY
        );
        eprintln!("{line}");
        logging::append_line(&path(&common), &line);
        return 3;
    }
    match log_file {
        Some(path) => logging::init_file(&common.log_level, &path(&common)),
        None => logging::init(&common.log_level),
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let result = runtime.block_on(async {
        tokio::spawn(stopper);
        agent::run(common, product, config.path().map(PathBuf::from), shutdown).await
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "Agent failed.");
            1
        }
    }
}

/// The first of the config file, its folder and the data folder (or, not
/// created yet, the folder it will be created in) that a user other than
/// SYSTEM and the Administrators may write, and why; `None` when none is.
/// A service running as SYSTEM must not take settings (the collector the
/// license goes to) or paths to write from a user.
#[cfg(windows)]
fn insecure_path(file: &crate::config::FileSource, data_dir: &std::path::Path) -> Option<String> {
    let (crate::config::FileSource::Explicit(conf) | crate::config::FileSource::Default(conf)) =
        file;
    let data = if data_dir.exists() {
        Some(data_dir)
    } else {
        data_dir.parent()
    };
    let paths = [Some(conf.as_path()), conf.parent(), data];
    let me = crate::windows::process_user();
    paths.into_iter().flatten().find_map(|path| {
        if !path.exists() {
            return None;
        }
        let why = match crate::windows::file_security(path) {
            Some((owner, dacl)) => crate::acl::open_to_non_admins(&owner, dacl.as_deref(), &me)?,
            None => "its ACL cannot be read".to_string(),
        };
        Some(format!("{} is {why}", path.display()))
    })
}

/// Cancels `token` on SIGTERM or SIGINT (on Windows: Ctrl-C, Ctrl-Break,
/// the console closing, the system shutting down).
pub async fn cancel_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        // Ctrl-C, Ctrl-Break (what `taskkill` without /F and a console
        // host send), the console closing, the system shutting down.
        match (ctrl_break(), ctrl_close(), ctrl_shutdown()) {
            (Ok(mut brk), Ok(mut close), Ok(mut down)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = brk.recv() => {}
                    _ = close.recv() => {}
                    _ = down.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_the_license_flag() {
        let key = "sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM";
        let cli = Cli::try_parse_from([
            "sightline-infra",
            "test",
            "--license",
            key,
            "--server",
            "collector.lan:6600",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        assert!(!shown.contains("7K3M9QW2XH8D4R6TBN1PZC5VFA"), "{shown}");
        assert!(!shown.contains(&key[8..16]), "{shown}");
        assert!(shown.contains("sl1-…K2PM"), "{shown}");
        assert!(shown.contains("collector.lan:6600"), "{shown}");
        assert!(shown.contains("Test"), "{shown}");
    }
}
