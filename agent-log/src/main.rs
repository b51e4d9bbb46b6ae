//! `sightline-log`: the log agent binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    agent_core::cli::main::<sightline_log::LogConfig>()
}
