//! `sightline-infra`: the server agent binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    agent_core::cli::main::<sightline_infra::InfraConfig>()
}
