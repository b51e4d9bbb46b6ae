//! The deb packages: one per product, built by Debian's own
//! `dpkg-deb --build --root-owner-group` from a staged tree
//! ([`super::linux_layout`]) and a control folder written here (control,
//! conffiles, md5sums, postinst, prerm, postrm from `deploy/packaging/`).
//!
//! Reproducible: every staged timestamp is `SOURCE_DATE_EPOCH`, which
//! dpkg-deb also uses for the ar members; owners are root; the compressor
//! runs on one thread (xz's multi-threaded output differs); dpkg-deb sorts
//! the members.
//! Never runs a maintainer script and never touches the host's dpkg
//! database: building needs no root.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::linux_layout::{self, Compression, Kind};
use super::{Binary, Context};

/// Where the unit goes: Debian's systemd reads `/lib/systemd/system`
/// (also on merged-/usr systems, and on releases before the merge).
const UNIT_DIR: &str = "/lib/systemd/system";

/// The maintainer scripts, each from `deploy/packaging/deb/<name>.sh`.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Writes one deb per product in `binaries` to `ctx.out`; returns their paths.
pub(crate) fn build(ctx: &Context, binaries: &[Binary]) -> Result<Vec<PathBuf>> {
    let compression = Compression::for_binaries(binaries);
    binaries
        .iter()
        .map(|b| build_one(ctx, b, compression))
        .collect()
}

fn build_one(ctx: &Context, binary: &Binary, compression: Compression) -> Result<PathBuf> {
    let product = binary.product;
    let stage = linux_layout::fresh_dir(ctx, &format!("deb-{}", product.package))?;
    let entries = linux_layout::entries(ctx, binary, UNIT_DIR);
    linux_layout::stage(&stage, &entries)?;

    let control_dir = stage.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    fs::set_permissions(&control_dir, fs::Permissions::from_mode(0o755))?;
    let installed_kib: u64 = entries
        .iter()
        .map(|e| {
            let size = fs::metadata(stage.join(e.path.trim_start_matches('/')))
                .map(|m| m.len())
                .unwrap_or(0);
            size.div_ceil(1024)
        })
        .sum();
    let description = linux_layout::description(product);
    let mut control = format!(
        "Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: {maintainer}\nInstalled-Size: {installed_kib}\nDepends: passwd\nSection: admin\nPriority: optional\nHomepage: {homepage}\nDescription: ",
        package = product.package,
        version = ctx.version,
        maintainer = linux_layout::MAINTAINER,
        homepage = linux_layout::HOMEPAGE,
    );
    // The first line is the synopsis; the rest is indented by one space.
    for (i, line) in description.lines().enumerate() {
        if i > 0 {
            control.push(' ');
        }
        control.push_str(if line.is_empty() { "." } else { line });
        control.push('\n');
    }
    write_control(&control_dir, "control", &control, 0o644)?;

    let conffiles: String = entries
        .iter()
        .filter(|e| e.kind == Kind::Config)
        .map(|e| format!("{}\n", e.path))
        .collect();
    write_control(&control_dir, "conffiles", &conffiles, 0o644)?;

    let mut md5sums = String::new();
    let mut paths: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind != Kind::Config)
        .map(|e| e.path.trim_start_matches('/'))
        .collect();
    paths.sort_unstable();
    let output = Command::new("md5sum")
        .args(&paths)
        .current_dir(&stage)
        .output()
        .context("running md5sum")?;
    if !output.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    md5sums.push_str(&String::from_utf8_lossy(&output.stdout));
    write_control(&control_dir, "md5sums", &md5sums, 0o644)?;

    for name in SCRIPTS {
        let body = linux_layout::script(ctx, product, &format!("deb/{name}"))?;
        let mut text = String::from("#!/bin/sh\n");
        let _ = write!(text, "{body}");
        write_control(&control_dir, name, &text, 0o755)?;
    }

    linux_layout::clamp_times(&stage, ctx.source_date_epoch)?;
    let file = ctx
        .out
        .join(format!("{}_{}_amd64.deb", product.package, ctx.version));
    linux_layout::run(
        Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .args(match compression {
                Compression::Xz => ["-Zxz", "-z6"],
                Compression::Zstd => ["-Zzstd", "-z3"],
            })
            .arg("--threads-max=1")
            .arg("--build")
            .arg(&stage)
            .arg(&file)
            .env("SOURCE_DATE_EPOCH", ctx.source_date_epoch.to_string()),
        &format!("dpkg-deb --build for {}", product.package),
    )?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(file)
}

fn write_control(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> Result<()> {
    let path = dir.join(name);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}
