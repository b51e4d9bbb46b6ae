//! The packages `cargo xtask test` builds for the package tests
//! (`tests/tests/package_*.rs`): where they are, what they are named, and
//! the products they cover. Mirrors `xtask/src/test.rs` (folders, the
//! upgrade version) and `xtask/src/package/mod.rs` (products, file names).
//! A missing file fails with the command that makes it; nothing here builds.

use std::path::{Path, PathBuf};

/// This version's packages: every format.
pub const TEST_PACKAGES: &str = "target/packages";
/// The next version's deb, rpm and msi, for the upgrade tests.
pub const TEST_PACKAGES_NEXT: &str = "target/packages-next";
/// That next version.
pub const TEST_NEXT_VERSION: &str = "99.0.0";
/// The version the packages in [`TEST_PACKAGES`] carry: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// (name, package) of every product.
pub const PRODUCTS: &[(&str, &str)] = &[
    ("infra", "sightline-infra"),
    ("db", "sightline-db"),
    ("log", "sightline-log"),
    ("url", "sightline-url"),
    ("collector", "sightline-collector"),
];

/// The workspace root (tests/ is one level below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// `<workspace>/<relative>`, which `cargo xtask package --<format>` made.
pub fn built(relative: &str, format: &str) -> PathBuf {
    let path = workspace().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask package --{format} --profile dev` (and `cargo xtask package --{format} --profile dev --version {TEST_NEXT_VERSION} --out {TEST_PACKAGES_NEXT}`), or `cargo xtask test`",
        path.display()
    );
    path
}

/// `<dir>/<package>_<version>_amd64.deb`.
pub fn deb(dir: &str, package: &str, version: &str) -> PathBuf {
    built(&format!("{dir}/{package}_{version}_amd64.deb"), "deb")
}

/// `<dir>/<package>-<version>-1.x86_64.rpm`.
pub fn rpm(dir: &str, package: &str, version: &str) -> PathBuf {
    built(&format!("{dir}/{package}-{version}-1.x86_64.rpm"), "rpm")
}

/// `<dir>/sightline-infra-<version>-x64.msi`.
pub fn msi(dir: &str, version: &str) -> PathBuf {
    built(&format!("{dir}/sightline-infra-{version}-x64.msi"), "msi")
}

/// This version's image archive, `sightline-<version>-oci.tar`.
pub fn image() -> PathBuf {
    built(
        &format!("{TEST_PACKAGES}/sightline-{VERSION}-oci.tar"),
        "image",
    )
}
