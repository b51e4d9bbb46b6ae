//! The OCI image archive. (To be written: see mod.rs for the contract.)

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{Binary, Context};

/// Writes one OCI image archive holding every binary to `ctx.out`; returns its path.
pub(crate) fn build(_ctx: &Context, _binaries: &[Binary]) -> Result<PathBuf> {
    bail!("the image is not written yet")
}
