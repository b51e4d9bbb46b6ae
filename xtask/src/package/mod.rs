//! `cargo xtask package`: one package per product, in the formats asked
//! for, from static Linux binaries (musl) and, for the products that run on
//! Windows, binaries cross-built with Debian's mingw-w64.
//!
//! - `deb` ([`deb`]) and `rpm` ([`rpm`]): a systemd unit per product, the
//!   config as a conffile, a `sightline` system user, state under
//!   `/var/lib/sightline/<product>`.
//! - `msi` ([`msi`]): written by msitools' `wixl` from a `.wxs` this task
//!   writes; a Windows service; license and server from MSI properties.
//! - `image` ([`image`]): one OCI image archive holding every Linux binary,
//!   written without a container daemon.
//!
//! Invariants: every format is built from the same binaries in one run;
//! every timestamp written into a package is `SOURCE_DATE_EPOCH` (else the
//! last commit's time), so building twice gives the same bytes where the
//! format allows; nothing is fetched from the network but what cargo and
//! apt fetch.

mod deb;
mod image;
mod linux_layout;
mod msi;
mod rpm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::apt::Package;
use crate::process::cargo;

/// The static Linux target every Linux package carries.
pub(crate) const LINUX_TARGET: &str = "x86_64-unknown-linux-musl";
/// The Windows target, linked by Debian's mingw-w64.
pub(crate) const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

/// One product Sightline ships.
#[derive(Debug)]
pub(crate) struct Product {
    /// The short name: config `/etc/sightline/<name>.conf`, state
    /// `/var/lib/sightline/<name>`.
    pub(crate) name: &'static str,
    /// The package's name, which is also the binary's and the unit's.
    pub(crate) package: &'static str,
    /// The cargo package that builds it.
    pub(crate) crate_name: &'static str,
    /// One line for the package managers.
    pub(crate) summary: &'static str,
    /// The cargo profile shipped builds use.
    pub(crate) profile: &'static str,
    /// Whether it also ships for Windows (an MSI).
    pub(crate) windows: bool,
}

impl Product {
    /// `deploy/config/<name>.conf`: the default config file.
    pub(crate) fn config_source(&self, root: &Path) -> PathBuf {
        root.join("deploy/config")
            .join(format!("{}.conf", self.name))
    }

    /// `deploy/systemd/<package>.service`: the systemd unit.
    pub(crate) fn unit_source(&self, root: &Path) -> PathBuf {
        root.join("deploy/systemd")
            .join(format!("{}.service", self.package))
    }
}

/// Every product, in the order the packages are built.
pub(crate) const PRODUCTS: &[Product] = &[
    Product {
        name: "infra",
        package: "sightline-infra",
        crate_name: "sightline-infra",
        summary: "Sightline server agent: CPU, memory, disks, network, processes",
        profile: "agent",
        windows: true,
    },
    Product {
        name: "db",
        package: "sightline-db",
        crate_name: "sightline-db",
        summary: "Sightline database agent: MySQL and MariaDB counters, sessions, locks",
        profile: "agent",
        windows: false,
    },
    Product {
        name: "log",
        package: "sightline-log",
        crate_name: "sightline-log",
        summary: "Sightline log agent: tails log files through rotation",
        profile: "agent",
        windows: false,
    },
    Product {
        name: "url",
        package: "sightline-url",
        crate_name: "sightline-url",
        summary: "Sightline URL agent: HTTP(S) checks with phase timings",
        profile: "agent",
        windows: false,
    },
    // The collector is built for speed (`release`), not size: it serves a
    // fleet, and its store's hot loops are arithmetic.
    Product {
        name: "collector",
        package: "sightline-collector",
        crate_name: "sightline-collector",
        summary: "Sightline collector: receives, stores and serves what the agents send",
        profile: "release",
        windows: false,
    },
];

/// What one `cargo xtask package` run builds.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) deb: bool,
    pub(crate) rpm: bool,
    pub(crate) msi: bool,
    pub(crate) image: bool,
    /// Where the packages go (default `target/packages`).
    pub(crate) out: PathBuf,
    /// The version written into the packages (default: the workspace's).
    pub(crate) version: String,
    /// A cargo profile for every binary instead of the shipped ones
    /// (`--profile dev`: the tests' quick build).
    pub(crate) profile: Option<String>,
}

/// What every format builder reads.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) root: PathBuf,
    pub(crate) out: PathBuf,
    /// The package version, e.g. `0.1.0`.
    pub(crate) version: String,
    /// Every timestamp written into a package (seconds since the epoch).
    pub(crate) source_date_epoch: u64,
}

/// A built binary and the product it belongs to.
#[derive(Debug)]
pub(crate) struct Binary {
    pub(crate) product: &'static Product,
    pub(crate) path: PathBuf,
}

pub(crate) const USAGE: &str = "usage: cargo xtask package [--deb] [--rpm] [--msi] [--image] [--out DIR] [--version V] [--profile P]
  with no format, every format is built";

impl Options {
    pub(crate) fn parse(root: &Path, args: &[String]) -> Result<Options> {
        let mut options = Options {
            deb: false,
            rpm: false,
            msi: false,
            image: false,
            out: root.join("target/packages"),
            version: workspace_version(root)?,
            profile: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--deb" => options.deb = true,
                "--rpm" => options.rpm = true,
                "--msi" => options.msi = true,
                "--image" => options.image = true,
                "--out" => options.out = PathBuf::from(value("--out")?),
                "--version" => options.version = value("--version")?,
                "--profile" => options.profile = Some(value("--profile")?),
                other => bail!("unknown argument '{other}'\n{USAGE}"),
            }
        }
        if !(options.deb || options.rpm || options.msi || options.image) {
            options.deb = true;
            options.rpm = true;
            options.msi = true;
            options.image = true;
        }
        Ok(options)
    }
}

/// Builds what `options` asks for and prints where each package went.
pub(crate) fn run(root: &Path, options: &Options) -> Result<Vec<PathBuf>> {
    crate::apt::ensure(TOOLS)?;
    let out = if options.out.is_absolute() {
        options.out.clone()
    } else {
        std::env::current_dir()?.join(&options.out)
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let ctx = Context {
        root: root.to_path_buf(),
        out,
        version: options.version.clone(),
        source_date_epoch: source_date_epoch(root)?,
    };
    let mut written = Vec::new();
    if options.deb || options.rpm || options.image {
        let linux = build(root, LINUX_TARGET, options.profile.as_deref(), |_| true)?;
        if options.deb {
            written.extend(deb::build(&ctx, &linux)?);
        }
        if options.rpm {
            written.extend(rpm::build(&ctx, &linux)?);
        }
        if options.image {
            written.push(image::build(&ctx, &linux)?);
        }
    }
    if options.msi {
        let windows = build(root, WINDOWS_TARGET, options.profile.as_deref(), |p| {
            p.windows
        })?;
        written.extend(msi::build(&ctx, &windows)?);
    }
    for path in &written {
        println!("{}", path.display());
    }
    Ok(written)
}

/// What packaging needs from the distribution (besides cargo and rustup).
const TOOLS: &[Package] = &[
    // C code (SQLite, ring) compiled for the static musl target.
    Package {
        name: "musl-tools",
        provides: "/usr/bin/musl-gcc",
    },
    Package {
        name: "gcc-mingw-w64-x86-64",
        provides: "/usr/bin/x86_64-w64-mingw32-gcc",
    },
    // msibuild (and msiinfo, msiextract for the tests).
    Package {
        name: "msitools",
        provides: "/usr/bin/msibuild",
    },
    // Debian ships wixl apart from the rest of msitools.
    Package {
        name: "wixl",
        provides: "/usr/bin/wixl",
    },
    Package {
        name: "rpm",
        provides: "/usr/bin/rpmbuild",
    },
];

/// Builds the binaries of the products `wanted` picks for `target`, each
/// with its shipped profile unless `profile` overrides every one.
fn build(
    root: &Path,
    target: &str,
    profile: Option<&str>,
    wanted: impl Fn(&Product) -> bool,
) -> Result<Vec<Binary>> {
    ensure_target(target)?;
    let products: Vec<&'static Product> = PRODUCTS.iter().filter(|p| wanted(p)).collect();
    let mut profiles: Vec<&str> = products
        .iter()
        .map(|p| profile.unwrap_or(p.profile))
        .collect();
    profiles.dedup();
    for cargo_profile in &profiles {
        let mut args = vec![
            "build",
            "--locked",
            "--target",
            target,
            "--profile",
            cargo_profile,
        ];
        for p in products
            .iter()
            .filter(|p| profile.unwrap_or(p.profile) == *cargo_profile)
        {
            args.extend(["-p", p.crate_name, "--bin", p.package]);
        }
        cargo(root, &args)?;
    }
    let exe = if target.contains("windows") {
        ".exe"
    } else {
        ""
    };
    products
        .into_iter()
        .map(|product| {
            let cargo_profile = profile.unwrap_or(product.profile);
            let dir = if cargo_profile == "dev" {
                "debug"
            } else {
                cargo_profile
            };
            let path = root
                .join("target")
                .join(target)
                .join(dir)
                .join(format!("{}{exe}", product.package));
            if !path.exists() {
                bail!("cargo built no {}", path.display());
            }
            Ok(Binary { product, path })
        })
        .collect()
}

/// Adds `target` with rustup when the toolchain lacks it.
fn ensure_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (packages need its musl and windows-gnu targets)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("$ rustup target add {target}");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()?;
    if !status.success() {
        bail!("rustup target add {target} failed");
    }
    Ok(())
}

/// `SOURCE_DATE_EPOCH` when set, else the last commit's time.
fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value} is not a number of seconds"));
    }
    let output = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .context("running git log for the packages' timestamp (or set SOURCE_DATE_EPOCH)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("git log gave no commit time ({text:?}); set SOURCE_DATE_EPOCH"))
}

/// The workspace's `version = "..."`.
fn workspace_version(root: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| {
            let rest = l
                .trim()
                .strip_prefix("version")?
                .trim_start()
                .strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
        .context("no version in [workspace.package] of Cargo.toml")
}
