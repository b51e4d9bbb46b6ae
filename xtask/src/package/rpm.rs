//! The rpm packages: one per product, built by `rpmbuild` (Debian's `rpm`
//! package) from a spec written here around a staged tree
//! ([`super::linux_layout`]), with the scriptlets `%pre`, `%post`,
//! `%preun` and `%postun` from `deploy/packaging/`.
//!
//! Reproducible: the spec fixes the build host, takes the build time from
//! `SOURCE_DATE_EPOCH` and clamps every file's time to it, and the
//! compressor runs on one thread. Never strips or post-processes the binary (no debuginfo
//! split, no build-id links): what cargo built is what is installed.
//! Never touches the host's rpm database.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::linux_layout::{self, Compression, Kind};
use super::{Binary, Context};

/// Where the unit goes on RHEL, Fedora, SUSE and friends.
const UNIT_DIR: &str = "/usr/lib/systemd/system";

/// The scriptlets, each from `deploy/packaging/rpm/<name>.sh`.
const SCRIPTLETS: &[&str] = &["pre", "post", "preun", "postun"];

/// The release every package carries (the `-1` in the file name).
const RELEASE: &str = "1";

/// Writes one rpm per product in `binaries` to `ctx.out`; returns their paths.
pub(crate) fn build(ctx: &Context, binaries: &[Binary]) -> Result<Vec<PathBuf>> {
    let compression = Compression::for_binaries(binaries);
    binaries
        .iter()
        .map(|b| build_one(ctx, b, compression))
        .collect()
}

fn build_one(ctx: &Context, binary: &Binary, compression: Compression) -> Result<PathBuf> {
    let product = binary.product;
    let work = linux_layout::fresh_dir(ctx, &format!("rpm-{}", product.package))?;
    let tree = work.join("tree");
    let entries = linux_layout::entries(ctx, binary, UNIT_DIR);
    linux_layout::stage(&tree, &entries)?;
    // The state folder is in the package (owned by sightline, see the spec).
    fs::create_dir_all(tree.join(linux_layout::state_dir(product).trim_start_matches('/')))?;
    linux_layout::clamp_times(&tree, ctx.source_date_epoch)?;

    let spec = spec(ctx, product, &entries, &tree, compression)?;
    let spec_path = work.join(format!("{}.spec", product.package));
    fs::write(&spec_path, spec)?;
    let top = work.join("top");
    linux_layout::run(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--quiet")
            .args(["--target", "x86_64-linux"])
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--define")
            .arg(format!("_tmppath {}", work.join("tmp").display()))
            .arg("--dbpath")
            .arg(work.join("db"))
            .arg(&spec_path)
            .env("SOURCE_DATE_EPOCH", ctx.source_date_epoch.to_string())
            .env("TZ", "UTC")
            .env("LC_ALL", "C"),
        &format!("rpmbuild for {}", product.package),
    )?;
    let name = format!(
        "{}-{}-{RELEASE}.x86_64.rpm",
        product.package,
        rpm_version(&ctx.version)
    );
    let built = top.join("RPMS/x86_64").join(&name);
    if !built.exists() {
        bail!("rpmbuild wrote no {}", built.display());
    }
    let file = ctx.out.join(&name);
    fs::rename(&built, &file)
        .with_context(|| format!("moving {} to {}", built.display(), file.display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(file)
}

/// rpm's Version may not hold `-`: a pre-release's `-` becomes `~`, which
/// rpm sorts before the release as Debian does.
fn rpm_version(version: &str) -> String {
    version.replace('-', "~")
}

fn spec(
    ctx: &Context,
    product: &super::Product,
    entries: &[linux_layout::Entry],
    tree: &Path,
    compression: Compression,
) -> Result<String> {
    // rpm's io names: `w<level>.<io>`; one thread unless a `T` is given.
    let payload = match compression {
        Compression::Xz => "w6.xzdio",
        Compression::Zstd => "w3.zstdio",
    };
    let mut spec = String::new();
    let description = linux_layout::description(product);
    // Reproducibility and no post-processing, then the package.
    let _ = write!(
        spec,
        "\
%global _buildhost sightline.invalid
%global source_date_epoch_from_changelog 0
%global clamp_mtime_to_source_date_epoch 1
%global use_source_date_epoch_as_buildtime 1
%global _binary_payload {payload}
%global _binary_filedigest_algorithm 8
%global _build_id_links none
%global debug_package %{{nil}}
%global __os_install_post %{{nil}}
%global __brp_strip %{{nil}}
%global _source_payload {payload}

Name: {package}
Version: {version}
Release: {RELEASE}
Summary: {summary}
License: {license}
URL: {homepage}
Packager: {maintainer}
Vendor: Sightline
Group: System Environment/Daemons
# A static binary: no library to require. The scriptlets need the user tools.
AutoReqProv: no
Requires(pre): /usr/sbin/useradd, /usr/sbin/groupadd, /usr/bin/getent

%description
{description}

%prep

%build

%install
mkdir -p %{{buildroot}}
cp -a {tree}/. %{{buildroot}}/

%files
%dir %attr(0755,root,root) /etc/sightline
%dir %attr(0755,root,root) /var/lib/sightline
%dir %attr(0750,sightline,sightline) {state}
%dir %attr(0755,root,root) /usr/share/doc/{package}
",
        package = product.package,
        version = rpm_version(&ctx.version),
        summary = product.summary,
        license = linux_layout::LICENSE,
        homepage = linux_layout::HOMEPAGE,
        maintainer = linux_layout::MAINTAINER,
        tree = tree.display(),
        state = linux_layout::state_dir(product),
    );
    for entry in entries {
        let line = match entry.kind {
            Kind::Config => format!(
                "%config(noreplace) %attr({:04o},root,sightline) {}\n",
                entry.mode, entry.path
            ),
            Kind::Binary | Kind::Unit | Kind::Doc => {
                format!("%attr({:04o},root,root) {}\n", entry.mode, entry.path)
            }
        };
        spec.push_str(&line);
    }
    for name in SCRIPTLETS {
        let body = linux_layout::script(ctx, product, &format!("rpm/{name}"))?;
        // `%` starts a macro in a spec, also inside a scriptlet.
        let _ = write!(spec, "\n%{name}\n{}", body.replace('%', "%%"));
    }
    Ok(spec)
}
