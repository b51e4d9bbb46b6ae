//! `sightline-db`: the database agent binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    agent_core::cli::main::<sightline_db::DbConfig>()
}
