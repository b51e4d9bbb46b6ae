//! `sightline-url`: the URL agent binary. `run` is agent-core's; `test`
//! checks every target once and prints a table, then runs the checks every
//! agent's `test` runs (config, license, collector).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use agent_core::SourceConfig;
use agent_core::cli::{Cli, Command, all_keys};
use agent_core::config::{Config, ProcessEnv};
use agent_core::diagnose::{self, Product};
use clap::{CommandFactory, FromArgMatches};
use sightline_url::settings::{UrlSettings, read_targets_file};
use sightline_url::{UrlConfig, report};

fn main() -> ExitCode {
    let matches = Cli::command()
        .name(UrlConfig::BINARY)
        .bin_name(UrlConfig::BINARY)
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Some(Command::Test) => test(&cli),
        _ => agent_core::cli::main::<UrlConfig>(),
    }
}

fn test(cli: &Cli) -> ExitCode {
    let file = cli.file::<UrlConfig>();
    let flags = cli.flags();
    let keys = all_keys::<UrlConfig>();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sightline-url: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let loaded = Config::load(&file, &ProcessEnv, &flags, keys)
        .and_then(|config| UrlSettings::from_config(&config, &ProcessEnv));
    let settings = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sightline-url: {e}");
            return ExitCode::from(2);
        }
    };
    let mut targets = settings.targets.clone();
    if let Some(path) = &settings.targets_file {
        match read_targets_file(path, &ProcessEnv) {
            Ok(from_file) => {
                for (name, target) in from_file {
                    targets.entry(name).or_insert(target);
                }
            }
            Err(e) => {
                eprintln!("sightline-url: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let results = runtime.block_on(report::check_all(&targets, settings.concurrency));
    let all_passed = results.iter().all(|r| r.failure.is_none());
    // A closed stdout (`| head`) ends the output, not the process.
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "Targets ({}):\n{}\n",
        results.len(),
        report::table(&results)
    );
    let _ = out.flush();
    drop(out);
    let product = Product {
        name: UrlConfig::PRODUCT,
        binary: UrlConfig::BINARY,
        keys,
    };
    let diagnosis = runtime.block_on(diagnose::run(product, &file, &ProcessEnv, &flags));
    let _ = write!(std::io::stdout().lock(), "{diagnosis}");
    runtime.shutdown_timeout(Duration::from_millis(100));
    if all_passed && diagnosis.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
