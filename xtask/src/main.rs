//! Developer tasks for the Sightline workspace: `cargo xtask <task>`.

mod codegen;

use std::path::PathBuf;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let root = workspace_root();
    match task.as_str() {
        "codegen" => codegen::run(&root),
        _ => bail!("usage: cargo xtask <codegen>"),
    }
}

/// The workspace root: xtask's manifest lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
