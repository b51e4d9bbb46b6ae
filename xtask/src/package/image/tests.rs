//! The image archive built from two small stand-in binaries: the same
//! bytes twice, the entries and owners designed, no time but
//! `SOURCE_DATE_EPOCH` anywhere. No cargo, no external tool.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::super::{Binary, Context, PRODUCTS};
use super::{USER_ID, build, ca_bundle, rfc3339};

const EPOCH: u64 = 1_700_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace")
        .to_path_buf()
}

/// A fresh folder under the system's temporary folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sightline-xtask-image-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// Builds the image of two stand-in binaries (infra and url) into `out`.
fn build_into(out: &Path, binaries_dir: &Path) -> Vec<u8> {
    let binaries: Vec<Binary> = PRODUCTS
        .iter()
        .filter(|p| p.name == "infra" || p.name == "url")
        .map(|product| {
            let path = binaries_dir.join(product.package);
            std::fs::write(&path, format!("#!stand-in for {}\n", product.package))
                .expect("stand-in");
            Binary { product, path }
        })
        .collect();
    let ctx = Context {
        root: workspace(),
        out: out.to_path_buf(),
        version: "1.2.3".into(),
        source_date_epoch: EPOCH,
    };
    let path = build(&ctx, &binaries).expect("builds");
    assert_eq!(path, out.join("sightline-1.2.3-oci.tar"));
    let names: Vec<_> = std::fs::read_dir(out)
        .expect("out")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 1, "nothing left beside the archive: {names:?}");
    std::fs::read(path).expect("archive")
}

/// (name, uid, gid, mode, mtime, bytes) of every entry of a tar stream.
fn entries(tar: impl std::io::Read) -> Vec<(String, u64, u64, u32, u64, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let h = e.header().clone();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).expect("read");
            (
                String::from_utf8_lossy(&h.path_bytes()).into_owned(),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                h.mode().expect("mode"),
                h.mtime().expect("mtime"),
                bytes,
            )
        })
        .collect()
}

#[test]
fn two_builds_in_different_folders_give_the_same_bytes() {
    let dir = scratch("twice");
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins).expect("bin");
    let (a, b) = (dir.join("a"), dir.join("another-folder"));
    std::fs::create_dir_all(&a).expect("a");
    std::fs::create_dir_all(&b).expect("b");
    let first = build_into(&a, &bins);
    let second = build_into(&b, &bins);
    assert!(first == second, "the same tree gave different archives");

    let outer = entries(&first[..]);
    let names: Vec<&str> = outer.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[..2], ["blobs/", "blobs/sha256/"]);
    assert_eq!(names[5..], ["index.json", "manifest.json", "oci-layout"]);
    let mut blobs = names[2..5].to_vec();
    blobs.sort_unstable();
    assert_eq!(blobs, names[2..5], "blobs in digest order");
    assert!(outer.iter().all(|e| e.4 == EPOCH && e.1 == 0 && e.2 == 0));

    // The layer: the one blob that is gzip.
    let layer = outer
        .iter()
        .find(|e| e.5.starts_with(&[0x1f, 0x8b]))
        .map(|e| e.5.clone())
        .expect("a gzip layer");
    assert_eq!(&layer[4..8], &[0, 0, 0, 0], "no time in the gzip header");
    assert_eq!(layer[3] & 0x08, 0, "no file name in the gzip header");
    let files = entries(flate2::read::GzDecoder::new(&layer[..]));
    let names: Vec<&str> = files.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted entries");
    assert!(
        files.iter().all(|e| e.4 == EPOCH),
        "every mtime is the epoch"
    );
    let find = |name: &str| {
        files
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("{name} in {names:?}"))
    };
    let infra = find("usr/bin/sightline-infra");
    assert_eq!((infra.1, infra.3), (0, 0o755));
    assert_eq!(infra.5, b"#!stand-in for sightline-infra\n");
    let state = find("var/lib/sightline/url/");
    assert_eq!((state.1, state.2, state.3), (USER_ID, USER_ID, 0o750));
    assert_eq!(find("tmp/").3, 0o1777);
    assert_eq!(
        find("etc/sightline/infra.conf").5,
        std::fs::read(workspace().join("deploy/config/infra.conf")).expect("infra.conf")
    );
    assert!(
        !names.iter().any(|n| n.contains("sightline-db")),
        "only the binaries given"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_ca_bundle_holds_every_root_as_pem() {
    let pem = ca_bundle();
    assert_eq!(
        pem.matches("-----BEGIN CERTIFICATE-----").count(),
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
    );
    assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with('#')));
}

#[test]
fn times_are_rfc3339_in_utc() {
    assert_eq!(rfc3339(EPOCH).expect("time"), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(0).expect("time"), "1970-01-01T00:00:00Z");
}
