//! `cargo xtask test`: installs what the tests need where it is missing,
//! builds the binaries the end-to-end tests drive, and runs every test,
//! then the format and lint checks. `.ci/run` calls exactly this.

use std::path::Path;

use anyhow::Result;

use crate::apt::{Package, ensure};
use crate::package;
use crate::process::{cargo, cargo_build_bins};

/// What the test suite needs from the distribution.
const PACKAGES: &[Package] = &[
    // The server agent's agreement tests and `xtask bench infra` run it
    // beside sightline-infra.
    Package {
        name: "prometheus-node-exporter",
        provides: "/usr/bin/prometheus-node-exporter",
    },
    // The log agent's rotation tests drive a real nginx
    // (tests/tests/log_rotation.rs) and Debian's logrotate.
    Package {
        name: "nginx-light",
        provides: "/usr/sbin/nginx",
    },
    Package {
        name: "logrotate",
        provides: "/usr/sbin/logrotate",
    },
    // The database agent's tests start private MariaDB servers
    // (tests/src/mariadb.rs); sysbench loads them (tests/tests/db_sysbench.rs)
    // and `xtask bench db` runs mysqld_exporter beside sightline-db.
    Package {
        name: "mariadb-server",
        provides: "/usr/sbin/mariadbd",
    },
    Package {
        name: "sysbench",
        provides: "/usr/bin/sysbench",
    },
    Package {
        name: "prometheus-mysqld-exporter",
        provides: "/usr/bin/prometheus-mysqld-exporter",
    },
    // The URL agent's probe tests compare its timings with curl's
    // (agent-url/tests/probe.rs).
    Package {
        name: "curl",
        provides: "/usr/bin/curl",
    },
    // `xtask bench url` probes its targets with blackbox_exporter beside
    // sightline-url.
    Package {
        name: "prometheus-blackbox-exporter",
        provides: "/usr/bin/prometheus-blackbox-exporter",
    },
    // A private Prometheus scrapes the collector's /metrics and is read
    // back through its query API (tests/tests/prometheus.rs).
    Package {
        name: "prometheus",
        provides: "/usr/bin/prometheus",
    },
    // The console's end-to-end tests drive a headless chromium over the
    // DevTools protocol (tests/src/browser.rs, tests/tests/console.rs).
    Package {
        name: "chromium",
        provides: "/usr/bin/chromium",
    },
    // The package tests inspect what `cargo xtask package` wrote: rpm's
    // queries, the image's manifest (skopeo) and root (umoci), and the
    // Windows agent and its MSI under wine (tests/tests/package_*.rs).
    Package {
        name: "skopeo",
        provides: "/usr/bin/skopeo",
    },
    Package {
        name: "umoci",
        provides: "/usr/bin/umoci",
    },
    // The deb test shows the packaged binaries static (no interpreter, no
    // shared library) with file and readelf.
    Package {
        name: "file",
        provides: "/usr/bin/file",
    },
    Package {
        name: "binutils",
        provides: "/usr/bin/readelf",
    },
    // `podman load` reads the image archive with no daemon running
    // (tests/tests/package_image.rs).
    Package {
        name: "podman",
        provides: "/usr/bin/podman",
    },
    Package {
        name: "wine",
        provides: "/usr/bin/wine",
    },
    Package {
        name: "wine64",
        provides: "/usr/lib/wine/wine64",
    },
];

/// Installs what the test suite needs where it is missing.
pub(crate) fn ensure_packages() -> Result<()> {
    ensure(PACKAGES)
}

/// Where the package tests find what they inspect and install: every
/// format of this version, and a later version's deb, rpm and msi for the
/// upgrade tests. Built from the dev profile: the shipped profiles' link-time
/// optimisation would take most of CI's time, and packaging does not depend
/// on how the binaries were optimised.
pub(crate) const TEST_PACKAGES: &str = "target/packages";
pub(crate) const TEST_PACKAGES_NEXT: &str = "target/packages-next";
/// The version the upgrade tests install over the workspace's own.
pub(crate) const TEST_NEXT_VERSION: &str = "99.0.0";

fn build_test_packages(root: &Path) -> Result<()> {
    let mut options = package::Options::parse(root, &[])?;
    options.out = root.join(TEST_PACKAGES);
    options.profile = Some("dev".into());
    package::run(root, &options)?;
    options.out = root.join(TEST_PACKAGES_NEXT);
    options.version = TEST_NEXT_VERSION.into();
    options.image = false;
    package::run(root, &options)?;
    Ok(())
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    ensure_packages()?;
    cargo_build_bins(root, false)?;
    build_test_packages(root)?;
    if lint {
        cargo(root, &["fmt", "--all", "--check"])?;
    }
    cargo(root, &["test", "--workspace", "--locked", "--no-fail-fast"])?;
    if lint {
        cargo(
            root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    println!("all tests passed");
    Ok(())
}
