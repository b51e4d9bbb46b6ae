//! Developer tasks for the Sightline workspace: `cargo xtask <task>`.
//!
//! - `up`: build, start a collector and the agents that fit this machine,
//!   print where to look; Ctrl-C stops.
//! - `test`: install what the tests need, build, run every test and check.
//! - `bench infra`: the server agent beside node_exporter, as ratios.
//! - `bench collector`: the collector's ingest under a simulated fleet,
//!   beside VictoriaMetrics, as ratios.
//! - `bench log`: the log agent reading a large access log, beside `wc -l`
//!   and rsyslog's imfile.
//! - `bench log-framing`: the log agent's framer beside `wc -l`.
//! - `bench log-store`: the collector's log store: ingest, search, patterns.
//! - `package`: deb, rpm, msi and an OCI image from static builds.
//! - `codegen`: regenerate `proto/src/gen/` from the `.proto` files.

mod apt;
mod bench;
mod codegen;
mod package;
mod process;
mod test;
mod up;

use std::path::PathBuf;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  up [--data DIR] [--grpc ADDR] [--http ADDR] [--for SECONDS] [--no-build]
        start a collector and the agents that fit this machine
  test [--no-lint]
        install what the tests need, build, run every test, fmt and clippy
  bench infra [--cycles N] [--json]
        sightline-infra beside node_exporter on this machine: CPU per cycle, peak RSS, ratios
  bench collector [--quick] [--agents N] [--series N] [--interval S] [--steady S] [--burst S] [--no-vm] [--collector BIN] [--json]
        the collector's ingest under a simulated fleet beside VictoriaMetrics: points/s, ack latency, CPU, RSS, bytes/point
  bench log [--mb N] [--no-peer] [--json]
        the log agent reading an access log from its start, beside wc -l and rsyslog: MB/s, lines/s, CPU, RSS, LiveTail p99
  bench log-framing [--mb N] [--runs N] [--json]
        the log agent's framer on an in-memory nginx access log beside wc -l: MB/s, lines/s
  bench log-store [--lines N] [--json]
        the collector's log store: N nginx lines pushed over gRPC (MB/s, lines/s, bytes/line), search and patterns latency
  package [--deb] [--rpm] [--msi] [--image] [--out DIR] [--version V] [--profile P]
        one package per product from static musl (and mingw-w64) builds, into target/packages
  codegen
        regenerate proto/src/gen from proto/sightline/v1/*.proto";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let (task, rest) = args
        .split_first()
        .map_or(("", &[][..]), |(t, r)| (t.as_str(), r));
    match task {
        "up" => up::run(&root, up::UpOptions::parse(&root, rest)?),
        "test" => test::run(&root, rest),
        "codegen" => codegen::run(&root),
        "package" => package::run(&root, &package::Options::parse(&root, rest)?).map(|_| ()),
        "bench" => bench::run(&root, rest),
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task '{other}'\n\n{USAGE}"),
    }
}

/// The workspace root: xtask's manifest lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
