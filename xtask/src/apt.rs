//! Installing what a task needs from Debian's packages: a package is
//! named with a file that shows it is there, and only the missing ones are
//! installed (with apt-get, as root; CI runs as root). Never installs
//! anything by other means.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A Debian package a task needs, and a file that shows it is installed.
pub(crate) struct Package {
    pub(crate) name: &'static str,
    pub(crate) provides: &'static str,
}

/// Installs those of `packages` that are missing with apt-get (as root; CI
/// runs as root).
pub(crate) fn ensure(packages: &[Package]) -> Result<()> {
    let missing: Vec<&Package> = packages
        .iter()
        .filter(|p| !Path::new(p.provides).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root {
        bail!(
            "this needs {}: run `sudo apt-get install {}` or run this as root",
            names.join(", "),
            names.join(" ")
        );
    }
    eprintln!("$ apt-get update");
    let update = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    eprintln!("$ apt-get install {}", names.join(" "));
    let install = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !install.success() {
        bail!("apt-get install {} failed", names.join(" "));
    }
    Ok(())
}
