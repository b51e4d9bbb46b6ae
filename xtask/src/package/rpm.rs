//! The rpm packages. (To be written: see mod.rs for the contract.)

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{Binary, Context};

/// Writes one rpm per product in `binaries` to `ctx.out`; returns their paths.
pub(crate) fn build(_ctx: &Context, _binaries: &[Binary]) -> Result<Vec<PathBuf>> {
    bail!("rpm packages are not written yet")
}
