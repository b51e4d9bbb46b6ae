//! What a deb and an rpm of one product hold, said once for both formats:
//! the files (binary, unit, config, copyright) with their modes, the
//! staging of them into a folder with every timestamp set to
//! `SOURCE_DATE_EPOCH`, and the maintainer scripts assembled from
//! `deploy/packaging/`.
//!
//! Never decides anything format-specific (where the unit goes is the
//! caller's `unit_dir`; owners are the formats' business: dpkg-deb writes
//! root for every file and the scripts hand the config's group over, rpm
//! says owners in the spec) and never writes outside the staging folder it
//! is given.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};

use super::{Binary, Context, Product};

/// Where the URL in the packages' metadata points.
pub(crate) const HOMEPAGE: &str = "https://github.com/sightline/sightline";
/// The packages' maintainer (the `.invalid` domain: there is no list yet).
pub(crate) const MAINTAINER: &str = "Sightline maintainers <packages@sightline.invalid>";
/// The license, as the workspace's `Cargo.toml` says it (SPDX).
pub(crate) const LICENSE: &str = "Apache-2.0";

/// What one file in a package is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Binary,
    Unit,
    /// The config file: a deb conffile, an rpm `%config(noreplace)`; group
    /// `sightline`, since it holds the license.
    Config,
    Doc,
}

/// One file of a package.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The installed path, absolute.
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) kind: Kind,
    source: PathBuf,
}

/// The files of `binary`'s package; the unit goes into `unit_dir`
/// (`/lib/systemd/system` for deb, `/usr/lib/systemd/system` for rpm).
pub(crate) fn entries(ctx: &Context, binary: &Binary, unit_dir: &str) -> Vec<Entry> {
    let product = binary.product;
    let package = product.package;
    vec![
        Entry {
            path: format!("/usr/bin/{package}"),
            mode: 0o755,
            kind: Kind::Binary,
            source: binary.path.clone(),
        },
        Entry {
            path: format!("{unit_dir}/{package}.service"),
            mode: 0o644,
            kind: Kind::Unit,
            source: product.unit_source(&ctx.root),
        },
        Entry {
            path: config_path(product),
            mode: 0o640,
            kind: Kind::Config,
            source: product.config_source(&ctx.root),
        },
        Entry {
            path: format!("/usr/share/doc/{package}/copyright"),
            mode: 0o644,
            kind: Kind::Doc,
            source: ctx.root.join("deploy/packaging/copyright"),
        },
    ]
}

/// `/etc/sightline/<name>.conf`.
pub(crate) fn config_path(product: &Product) -> String {
    format!("/etc/sightline/{}.conf", product.name)
}

/// `/var/lib/sightline/<name>`: the product's state, owned by `sightline`.
pub(crate) fn state_dir(product: &Product) -> String {
    format!("/var/lib/sightline/{}", product.name)
}

/// Whether the product refuses to start without a license (every agent;
/// not the collector), so its scripts do not start it until one is written.
pub(crate) fn needs_license(product: &Product) -> bool {
    product.crate_name != "sightline-collector"
}

/// The long description both formats carry.
pub(crate) fn description(product: &Product) -> String {
    format!(
        "{}.\nA static (musl) build: one package runs on old and new distributions\nalike. Runs as the system user sightline; the config in\n{} holds the license.",
        product.summary,
        config_path(product)
    )
}

/// A fresh, empty staging folder `ctx.out/.stage-<name>`.
pub(crate) fn fresh_dir(ctx: &Context, name: &str) -> Result<PathBuf> {
    let dir = ctx.out.join(format!(".stage-{name}"));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Copies `entries` under `root` (as their installed paths) with their
/// modes; folders on the way get 0755.
pub(crate) fn stage(root: &Path, entries: &[Entry]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in entries {
        let target = root.join(entry.path.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&entry.source, &target).with_context(|| {
            format!("copying {} to {}", entry.source.display(), target.display())
        })?;
        fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode))?;
    }
    let mut dirs = Vec::new();
    collect_dirs(root, &mut dirs)?;
    for dir in dirs {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_dirs(&entry.path(), out)?;
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Sets the modification time of everything under `root` (and `root`) to
/// `epoch`: the archive then says the same whenever it is built.
pub(crate) fn clamp_times(root: &Path, epoch: u64) -> Result<()> {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    let mut paths = Vec::new();
    collect_all(root, &mut paths)?;
    paths.push(root.to_path_buf());
    for path in paths {
        let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))
            .with_context(|| format!("setting the time of {}", path.display()))?;
    }
    Ok(())
}

fn collect_all(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_all(&entry.path(), out)?;
        }
        out.push(entry.path());
    }
    Ok(())
}

/// One maintainer script (`deb/postinst`, `rpm/pre`, ...): `set -e`, the
/// product's variables, `deploy/packaging/common.sh`, then
/// `deploy/packaging/<part>.sh`. No interpreter line: the caller adds one
/// where the format wants it.
pub(crate) fn script(ctx: &Context, product: &Product, part: &str) -> Result<String> {
    let dir = ctx.root.join("deploy/packaging");
    let read = |path: PathBuf| {
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let common = read(dir.join("common.sh"))?;
    let body = read(dir.join(format!("{part}.sh")))?;
    for (what, text) in [("common.sh", &common), (part, &body)] {
        if text.contains('\r') {
            bail!("deploy/packaging/{what} has a carriage return");
        }
    }
    Ok(format!(
        "# {part} of {package}: written by `cargo xtask package` from deploy/packaging/.\nset -e\nPACKAGE={package}\nNAME={name}\nAGENT={agent}\n\n{common}\n{body}",
        package = product.package,
        name = product.name,
        agent = u8::from(needs_license(product)),
    ))
}

/// How a package's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// xz at its default level, on one thread: what ships, since every
    /// dpkg and rpm (CentOS 6's 4.8 too) reads it.
    Xz,
    /// zstd level 3, on one thread: the dev builds the tests install
    /// (`target/<triple>/debug/`, 30 to 60 MB each with debug info), where
    /// xz would cost CI minutes. Only newer dpkg (1.21.18) and rpm (4.14)
    /// read it, which is fine for packages that never leave CI.
    Zstd,
}

impl Compression {
    /// The compression for `binaries`: zstd when any is a dev build.
    pub(crate) fn for_binaries(binaries: &[Binary]) -> Compression {
        let dev = binaries.iter().any(|b| {
            b.path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "debug")
        });
        if dev {
            Compression::Zstd
        } else {
            Compression::Xz
        }
    }
}

/// Runs `command`, failing with its output when it fails.
pub(crate) fn run(command: &mut std::process::Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
