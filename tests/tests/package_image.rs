//! The OCI image `cargo xtask package --image` writes, read by the tools a
//! user reads it with: skopeo as an OCI archive and as a docker archive,
//! `podman load`, umoci unpacking it to a root filesystem owned as designed, the agents
//! run from that root (chrooted as the image's user, reporting to a
//! collector on loopback), and a second build giving the same bytes.
//!
//! Reads `target/packages/sightline-<version>-oci.tar`, which `cargo xtask
//! test` builds first (`cargo xtask package --image --profile dev` by
//! hand). Runs as root, as CI does: umoci keeps the layer's owners only
//! for root, and `chroot`/`unshare` need it. Never changes the machine
//! outside its scratch folders: the `/proc` and `/sys` the chrooted agent
//! sees are mounted in a mount namespace of its own.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sightline_e2e::packages::{PRODUCTS, VERSION, image, workspace};
use sightline_e2e::{Collector, Scratch, create_project, terminate, tls_files, wait_exit};

/// The image's user and group (xtask/src/package/image.rs).
const USER_ID: u32 = 65532;

/// Runs `program args`, asserting success; its stdout.
fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn run_json(program: &str, args: &[&str]) -> Value {
    serde_json::from_slice(&run(program, args)).expect("JSON")
}

/// `podman load` reads the archive without a daemon (storage in a scratch
/// folder, the vfs driver) and names the image `sightline:<version>` with
/// the image's user.
#[test]
fn podman_loads_the_archive() {
    assert!(
        Path::new("/usr/bin/podman").exists(),
        "podman is missing: `apt-get install --no-install-recommends podman` (cargo xtask test installs it)"
    );
    let scratch = Scratch::new("image-podman");
    // Its storage, run and temporary folders in the scratch folder, not
    // the machine's /var/lib/containers and /run/libpod.
    let dirs: Vec<String> = ["storage", "run", "tmp", "networks"]
        .iter()
        .map(|d| scratch.join(d).to_str().expect("utf-8 path").to_string())
        .collect();
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            &dirs[0],
            "--runroot",
            &dirs[1],
            "--tmpdir",
            &dirs[2],
            "--network-config-dir",
            &dirs[3],
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        run("podman", &all)
    };
    let loaded = podman(&[
        "load",
        "--quiet",
        "--input",
        image().to_str().expect("utf-8 path"),
    ]);
    let name = format!("docker.io/library/sightline:{VERSION}");
    assert!(
        String::from_utf8_lossy(&loaded).contains(&name),
        "podman load names the image {name}: {}",
        String::from_utf8_lossy(&loaded)
    );
    let inspect: Value =
        serde_json::from_slice(&podman(&["image", "inspect", &name])).expect("JSON");
    let image = &inspect[0];
    assert_eq!(image["Config"]["User"], format!("{USER_ID}:{USER_ID}"));
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Architecture"], "amd64");
    assert_eq!(image["Labels"]["org.opencontainers.image.version"], VERSION);
}

/// sha256 of a file, hex (coreutils' `sha256sum`).
fn sha256_file(path: &Path) -> String {
    let out = run("sha256sum", &[path.to_str().expect("utf-8 path")]);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// One member of the archive, extracted into `dir`.
fn extract(archive: &Path, member: &str, dir: &Path) -> PathBuf {
    run(
        "tar",
        &[
            "-xf",
            archive.to_str().expect("utf-8 path"),
            "-C",
            dir.to_str().expect("utf-8 path"),
            member,
        ],
    );
    dir.join(member)
}

/// A member's bytes, read from the archive.
fn member(archive: &Path, name: &str) -> Vec<u8> {
    run(
        "tar",
        &["-xOf", archive.to_str().expect("utf-8 path"), name],
    )
}

/// skopeo reads the archive as an OCI archive (selecting the image by its
/// tag) and as a docker archive (by its `RepoTags`), and both name the same
/// config: labels, the non-root user, linux/amd64, and one gzip layer
/// whose digest, size and uncompressed digest match the blob.
#[test]
fn skopeo_reads_the_archive_as_oci_and_as_docker() {
    let archive = image();
    let scratch = Scratch::new("image-skopeo");
    let oci = format!("oci-archive:{}", archive.display());
    let manifest = run_json("skopeo", &["inspect", "--raw", &oci]);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let digest = layers[0]["digest"].as_str().expect("layer digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let blob = extract(&archive, &format!("blobs/sha256/{hex}"), scratch.path());
    assert_eq!(
        sha256_file(&blob),
        hex,
        "the layer blob is what its name says"
    );
    assert_eq!(
        Some(fs::metadata(&blob).expect("blob").len()),
        layers[0]["size"].as_u64()
    );
    // The index names the manifest skopeo read, by digest and tag.
    let index: Value = serde_json::from_slice(&member(&archive, "index.json")).expect("index.json");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        VERSION
    );
    let raw = run("skopeo", &["inspect", "--raw", &format!("{oci}:{VERSION}")]);
    assert_eq!(
        entry["digest"].as_str().expect("manifest digest"),
        format!("sha256:{}", sha256_bytes(&raw, scratch.path()))
    );

    let config = run_json("skopeo", &["inspect", "--config", &oci]);
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], format!("{USER_ID}:{USER_ID}"));
    assert_eq!(config["config"]["WorkingDir"], "/var/lib/sightline");
    assert!(config["config"]["Entrypoint"].is_null(), "no entrypoint");
    assert!(
        config["config"]["Env"]
            .as_array()
            .expect("Env")
            .iter()
            .any(|e| e.as_str().is_some_and(
                |e| e.starts_with("PATH=") && e.split(':').any(|d| d.ends_with("/usr/bin"))
            )),
        "PATH holds /usr/bin: {}",
        config["config"]["Env"]
    );
    let labels = &config["config"]["Labels"];
    let label = |key: &str| {
        labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_else(|| panic!("label {key}: {labels}"))
            .to_string()
    };
    assert_eq!(label("title"), "sightline");
    assert_eq!(label("version"), VERSION);
    assert_eq!(label("licenses"), "Apache-2.0");
    assert!(label("source").starts_with("https://"));
    assert!(label("description").contains("sightline-infra"));
    let revision = label("revision");
    assert!(
        revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "revision is a commit: {revision}"
    );
    assert_eq!(
        label("created"),
        config["created"].as_str().expect("created")
    );
    assert_eq!(config["history"][0]["created"], config["created"]);
    // diff_ids name the uncompressed layer.
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert_eq!(diff_ids.len(), 1);
    let tar = scratch.join("layer.tar");
    let unzipped = Command::new("gzip")
        .args(["-dc"])
        .arg(&blob)
        .stdout(fs::File::create(&tar).expect("layer.tar"))
        .status()
        .expect("gzip runs");
    assert!(unzipped.success(), "the layer is gzip");
    assert_eq!(diff_ids[0], format!("sha256:{}", sha256_file(&tar)));

    // The same archive as docker's format, the image picked by RepoTags.
    let docker = format!("docker-archive:{}:sightline:{VERSION}", archive.display());
    let docker_config = run_json("skopeo", &["inspect", "--config", &docker]);
    assert_eq!(docker_config, config, "one config, read either way");
    let docker_manifest: Value =
        serde_json::from_slice(&member(&archive, "manifest.json")).expect("manifest.json");
    assert_eq!(
        docker_manifest[0]["Layers"][0],
        format!("blobs/sha256/{hex}")
    );
}

fn sha256_bytes(bytes: &[u8], dir: &Path) -> String {
    let path = dir.join("bytes");
    fs::write(&path, bytes).expect("write");
    sha256_file(&path)
}

/// The image unpacked by umoci, as root so owners are kept: the bundle's
/// folder (`config.json`, `rootfs/`).
fn unpack(scratch: &Scratch) -> PathBuf {
    let layout = scratch.join("layout");
    let bundle = scratch.join("bundle");
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci-archive:{}", image().display()),
            &format!("oci:{}:{VERSION}", layout.display()),
        ],
    );
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{VERSION}", layout.display()),
            bundle.to_str().expect("utf-8 path"),
        ],
    );
    bundle
}

/// The unpacked root holds exactly what was designed: every agent at
/// `/usr/bin/<package>` (root's, 0755), the defaults in `/etc/sightline`,
/// each product's state folder owned by the image's user, that user in
/// `/etc/passwd` and `/etc/group`, `/tmp` sticky and a CA bundle; and the
/// runtime config umoci derives runs as that user.
#[test]
fn the_unpacked_root_holds_every_agent_owned_as_designed() {
    let scratch = Scratch::new("image-unpack");
    let bundle = unpack(&scratch);
    let rootfs = bundle.join("rootfs");
    let meta = |path: &str| {
        fs::symlink_metadata(rootfs.join(path)).unwrap_or_else(|e| panic!("/{path}: {e}"))
    };
    let mut expected: BTreeSet<String> = [
        "etc",
        "etc/group",
        "etc/passwd",
        "etc/sightline",
        "etc/ssl",
        "etc/ssl/certs",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
        "usr",
        "usr/bin",
        "var",
        "var/lib",
        "var/lib/sightline",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for (name, _) in PRODUCTS {
        let binary = format!("usr/bin/sightline-{name}");
        let m = meta(&binary);
        assert!(m.is_file(), "/{binary} is a file");
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o755, 0, 0),
            "/{binary}"
        );
        let state = format!("var/lib/sightline/{name}");
        let m = meta(&state);
        assert!(m.is_dir(), "/{state} is a folder");
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o750, USER_ID, USER_ID),
            "/{state} belongs to the image's user"
        );
        expected.extend([binary, state]);
        let source = workspace().join(format!("deploy/config/{name}.conf"));
        if source.exists() {
            let conf = format!("etc/sightline/{name}.conf");
            assert_eq!(
                fs::read(rootfs.join(&conf)).expect("config"),
                fs::read(&source).expect("source config"),
                "/{conf} is deploy/config/{name}.conf"
            );
            assert_eq!((meta(&conf).mode() & 0o7777, meta(&conf).uid()), (0o644, 0));
            expected.insert(conf);
        }
    }
    let found = walk(&rootfs);
    assert_eq!(found, expected, "the image's files, no more and no fewer");

    let tmp = meta("tmp");
    assert_eq!((tmp.mode() & 0o7777, tmp.uid()), (0o1777, 0), "/tmp");
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("sightline:x:{USER_ID}:{USER_ID}:"))),
        "{passwd}"
    );
    let group = fs::read_to_string(rootfs.join("etc/group")).expect("group");
    assert!(
        group
            .lines()
            .any(|l| l == format!("sightline:x:{USER_ID}:"))
    );
    let bundle_text =
        fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).expect("CA bundle");
    let roots = bundle_text.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(roots > 100, "Mozilla's roots: {roots} certificates");

    // What a runtime would run: umoci's runtime config from the image's.
    let runtime: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("JSON");
    let process = &runtime["process"];
    assert_eq!(process["user"]["uid"], USER_ID);
    assert_eq!(process["user"]["gid"], USER_ID);
    assert_eq!(process["cwd"], "/var/lib/sightline");
}

/// Every path under `root`, relative, folders included.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
            found.insert(relative);
        }
    }
    found
}

/// An agent process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agents run from the unpacked root with nothing from the host: each
/// prints its version chrooted there; the server agent, started from the
/// root as a plain binary and chrooted as the image's user (its default
/// config and state folder from the image, `/proc` and `/sys` mounted as a
/// runtime would, TLS trusting the image's CA bundle), reports the host's
/// memory to a collector on loopback.
#[test]
fn the_agents_run_from_the_unpacked_root() {
    let scratch = Scratch::new("image-run");
    let bundle = unpack(&scratch);
    let rootfs = bundle.join("rootfs");
    let root = rootfs.to_str().expect("utf-8 path");
    for (name, _) in PRODUCTS {
        let binary = format!("/usr/bin/sightline-{name}");
        let out = run("chroot", &[root, &binary, "--version"]);
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            format!("sightline-{name} {VERSION}"),
            "{binary} --version chrooted"
        );
    }

    // A collector serving TLS with a certificate from a CA of the test's.
    let data = scratch.join("collector");
    let creds = create_project(&data, "image");
    let pki = tls_files(&scratch.join("pki"), "image");
    let collector = Collector::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--tls-cert",
            pki.cert.to_str().expect("utf-8 path"),
            "--tls-key",
            pki.key.to_str().expect("utf-8 path"),
        ],
    );
    let api = collector.api(&creds.token);
    let server = collector.grpc.to_string();

    // The binary from the unpacked root, run as it is.
    let state = scratch.join("plain-state");
    let plain = Running(
        Command::new(rootfs.join("usr/bin/sightline-infra"))
            .args(["run", "--conf", "/dev/null", "--server", &server])
            .env("SIGHTLINE_LICENSE", &creds.license)
            .env("SIGHTLINE_ONAME", "image-plain")
            .env("SIGHTLINE_INTERVAL", "1s")
            .env("SIGHTLINE_DATA_DIR", &state)
            .env("SIGHTLINE_SERVER_TLS", "true")
            .env("SIGHTLINE_SERVER_CA", &pki.ca)
            .stdout(Stdio::null())
            .stderr(fs::File::create(scratch.join("plain.log")).expect("log"))
            .spawn()
            .expect("starts the unpacked agent"),
    );

    // Chrooted as the image's user, with the image's environment and its
    // own config file and state folder; `/proc` and `/sys` mounted in a
    // private mount namespace, as a runtime (or the DaemonSet) would. TLS
    // with no `server.ca`: the agent trusts the image's CA bundle, to which
    // the test's CA is added here as a user's own CA would be.
    let bundle_path = rootfs.join("etc/ssl/certs/ca-certificates.crt");
    let mut bundle_text = fs::read_to_string(&bundle_path).expect("CA bundle");
    bundle_text.push_str(&fs::read_to_string(&pki.ca).expect("test CA"));
    fs::write(&bundle_path, bundle_text).expect("CA bundle");
    for dir in ["proc", "sys"] {
        fs::create_dir_all(rootfs.join(dir)).expect("mount point");
    }
    let script = format!(
        "mount -t proc proc {root}/proc && mount --rbind /sys {root}/sys && \
         exec chroot --userspec={USER_ID}:{USER_ID} {root} /usr/bin/sightline-infra run --server {server}"
    );
    let log = scratch.join("chroot.log");
    let chrooted = Running(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SIGHTLINE_LICENSE", &creds.license)
            .env("SIGHTLINE_ONAME", "image-chroot")
            .env("SIGHTLINE_SERVER_TLS", "true")
            .env("SIGHTLINE_INTERVAL", "1s")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("starts unshare"),
    );

    let mem_total = host_mem_total_bytes();
    for oname in ["image-plain", "image-chroot"] {
        let oid = wait_logged(&scratch, &format!("{oname} to register"), || {
            api.agents()
                .into_iter()
                .find(|a| a["oname"] == oname)
                .and_then(|a| a["oid"].as_i64())
        });
        let (_, reported) = wait_logged(&scratch, &format!("{oname}'s mem.total_bytes"), || {
            api.points(oid, "mem.total_bytes").pop()
        });
        assert!(
            (reported - mem_total).abs() < 1.0,
            "{oname} reports the host's memory: {reported} (MemTotal {mem_total})"
        );
    }
    // The chrooted agent wrote its state where the image put it, as its user.
    let identity = rootfs.join("var/lib/sightline/infra");
    let written: Vec<_> = fs::read_dir(&identity)
        .expect("state folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(!written.is_empty(), "state in {}", identity.display());
    for path in &written {
        assert_eq!(
            fs::symlink_metadata(path).expect("meta").uid(),
            USER_ID,
            "{} written by the image's user",
            path.display()
        );
    }
    for (mut agent, name) in [(plain, "plain"), (chrooted, "chrooted")] {
        terminate(&agent.0);
        let status = wait_exit(&mut agent.0, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("the {name} agent stops on SIGTERM"));
        assert!(status.success(), "the {name} agent exits cleanly: {status}");
    }
}

/// Polls `probe` for 20 s; on timeout, fails with the agents' last lines.
fn wait_logged<T>(scratch: &Scratch, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; {}",
            agent_logs(scratch)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_logs(scratch: &Scratch) -> String {
    ["plain.log", "chroot.log"]
        .iter()
        .map(|f| {
            let text = fs::read_to_string(scratch.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            format!(
                "{f}: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// MemTotal of `/proc/meminfo`, in bytes.
fn host_mem_total_bytes() -> f64 {
    let text = fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    kib * 1024.0
}

/// Two builds from the same tree give the same bytes, in folders of
/// different names, and the image's times are `SOURCE_DATE_EPOCH` (else
/// the last commit's time), not the clock's.
///
/// The environment is left as it is: the C code the binaries link (ring,
/// SQLite, zstd) is rebuilt by cc when `SOURCE_DATE_EPOCH` changes, so
/// setting one here would rebuild them twice per run.
#[test]
fn two_builds_give_the_same_bytes() {
    let scratch = Scratch::new("image-twice");
    let build = |dir: &str| {
        let out = scratch.join(dir);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["run", "--quiet", "--locked", "-p", "xtask", "--"])
            .args(["package", "--image", "--profile", "dev", "--out"])
            .arg(&out)
            .current_dir(workspace())
            .stdout(Stdio::null())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo xtask package --image: {status}");
        out.join(format!("sightline-{VERSION}-oci.tar"))
    };
    let first = build("first");
    let second = build("second-build");
    assert_eq!(
        sha256_file(&first),
        sha256_file(&second),
        "two builds, two different archives"
    );

    let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(workspace())
            .output()
            .expect("git runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let created = run(
        "date",
        &["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%dT%H:%M:%SZ"],
    );
    let created = String::from_utf8_lossy(&created).trim().to_string();
    let config = run_json(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", first.display()),
        ],
    );
    assert_eq!(config["created"], created.as_str());
    let layer = scratch.join("layer");
    fs::create_dir_all(&layer).expect("layer dir");
    let manifest = run_json(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", first.display()),
        ],
    );
    let digest = manifest["layers"][0]["digest"].as_str().expect("digest");
    let blob = extract(
        &first,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
        &layer,
    );
    // Every entry of the layer carries that time (GNU tar's listing).
    let listing = run(
        "tar",
        &[
            "--list",
            "--verbose",
            "--full-time",
            "--utc",
            "-zf",
            blob.to_str().expect("utf-8 path"),
        ],
    );
    let stamp = created.replace('T', " ").trim_end_matches('Z').to_string();
    let listing = String::from_utf8_lossy(&listing);
    for line in listing.lines() {
        assert!(line.contains(&stamp), "{line}: not {stamp}");
    }
}
