//! The OCI image archive: one image holding every Linux binary, so the
//! server agent's DaemonSet, the log agent's DaemonSet and sidecar, and a
//! collector in a pod all run the same image and choose the command.
//!
//! `sightline-<version>-oci.tar` holds the OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) and, beside it, docker's `manifest.json`
//! naming the same blobs, so `skopeo`/`umoci` (`oci-archive:`), `podman
//! load` and `docker load` (old and new) all read it.
//!
//! The image has one gzip layer, written here: the static binaries at
//! `/usr/bin/<package>`, the user `sightline` (uid and gid [`USER_ID`],
//! distroless' "nonroot") in `/etc/passwd` and `/etc/group`, each product's
//! default config in `/etc/sightline/`, `/var/lib/sightline/<name>` owned
//! by that user, `/tmp`, and a CA bundle at Debian's path
//! (`/etc/ssl/certs/ca-certificates.crt`, where rustls-native-certs looks):
//! Mozilla's roots from the `webpki-root-certs` crate, so the bundle is
//! pinned by `Cargo.lock` and the same on every machine that builds the
//! image, instead of whatever the build host's `ca-certificates` holds.
//!
//! Never runs a container daemon or any external tool, never reads the
//! clock (every time is `SOURCE_DATE_EPOCH`), never writes an entry in an
//! order or with an owner, mode or time that depends on the build host:
//! building twice gives the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Binary, Context};

/// The image's user and group id: distroless' "nonroot", the same number
/// the Kubernetes manifests run as (`runAsUser`, `runAsGroup`).
pub(crate) const USER_ID: u64 = 65532;
/// That user's name.
const USER_NAME: &str = "sightline";
/// The CA bundle's path: Debian's, one of the places rustls-native-certs
/// (openssl-probe) looks on Linux.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// `org.opencontainers.image.source` when `[workspace.package]` names no
/// `repository`.
const SOURCE_URL: &str = "https://github.com/sightline/sightline";
/// The command when none is given: the server agent's help, which names
/// `run` and `test`. The DaemonSets and the sidecar name their agent.
const DEFAULT_CMD: [&str; 2] = ["/usr/bin/sightline-infra", "--help"];
/// `PATH` in the image: the binaries are all in `/usr/bin`.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// gzip level of the layer: zlib's default (docker's too).
const GZIP_LEVEL: u32 = 6;

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes one OCI image archive holding every binary to `ctx.out`; returns its path.
pub(crate) fn build(ctx: &Context, binaries: &[Binary]) -> Result<PathBuf> {
    if binaries.is_empty() {
        bail!("no binaries for the image");
    }
    let file_name = format!("sightline-{}-oci.tar", ctx.version);
    let path = ctx.out.join(&file_name);
    let layer_path = ctx.out.join(format!(".{file_name}.layer"));
    let partial = ctx.out.join(format!(".{file_name}.partial"));
    let _cleanup = RemoveOnDrop(vec![layer_path.clone(), partial.clone()]);

    let layer = write_layer(ctx, binaries, &layer_path)
        .with_context(|| format!("writing the image layer {}", layer_path.display()))?;
    let revision = git_revision(&ctx.root);
    let config = to_json(&image_config(ctx, binaries, &layer, revision.as_deref())?)?;
    let config_digest = sha256_hex(&config);
    let manifest = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": MEDIA_LAYER,
            "digest": format!("sha256:{}", layer.digest),
            "size": layer.size,
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                // What containerd (and docker's containerd store) names the
                // image it imports; podman load prefers it too.
                "io.containerd.image.name": format!("docker.io/library/sightline:{}", ctx.version),
                // The tag skopeo's `oci-archive:<file>:<tag>` selects.
                "org.opencontainers.image.ref.name": ctx.version,
            },
        }],
    }))?;
    // docker's own archive format (`docker save` before 25, and what
    // `docker load` of every version reads), pointing at the same blobs.
    let docker_manifest = to_json(&json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [format!("sightline:{}", ctx.version)],
        "Layers": [format!("blobs/sha256/{}", layer.digest)],
    }]))?;

    let mut outer = Archive::create(&partial, ctx.source_date_epoch)?;
    outer.dir("blobs")?;
    outer.dir("blobs/sha256")?;
    // Blobs in digest order, then the small files by name.
    let mut blobs: Vec<(&str, Blob<'_>)> = vec![
        (&config_digest, Blob::Bytes(&config)),
        (&manifest_digest, Blob::Bytes(&manifest)),
        (&layer.digest, Blob::File(&layer_path, layer.size)),
    ];
    blobs.sort_by(|a, b| a.0.cmp(b.0));
    for (digest, blob) in blobs {
        let name = format!("blobs/sha256/{digest}");
        match blob {
            Blob::Bytes(bytes) => outer.bytes(&name, 0o644, bytes)?,
            Blob::File(path, size) => {
                let file =
                    File::open(path).with_context(|| format!("reading {}", path.display()))?;
                outer.file(&name, 0o644, size, file)?;
            }
        }
    }
    outer.bytes("index.json", 0o644, &index)?;
    outer.bytes("manifest.json", 0o644, &docker_manifest)?;
    outer.bytes("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    outer.finish()?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    Ok(path)
}

/// Removes the build's temporary files when the build ends, done or not.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the manifest and the config say of the layer.
#[derive(Debug)]
struct Layer {
    /// sha256 of the gzip bytes (the blob's name), hex.
    digest: String,
    /// Their length.
    size: u64,
    /// sha256 of the uncompressed tar (`rootfs.diff_ids`), hex.
    diff_id: String,
}

/// A blob of the outer archive.
enum Blob<'a> {
    Bytes(&'a [u8]),
    File(&'a Path, u64),
}

/// What one entry of the layer is.
enum Content {
    Dir,
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// One entry of the layer: what, its mode and its owner.
struct Entry {
    content: Content,
    mode: u32,
    owner: u64,
}

/// The root filesystem, path (without a leading `/`) to entry. A
/// `BTreeMap` sorts it, and a folder sorts before what it holds.
fn rootfs(ctx: &Context, binaries: &[Binary]) -> Result<BTreeMap<String, Entry>> {
    let mut tree = BTreeMap::new();
    let dir = |mode, owner| Entry {
        content: Content::Dir,
        mode,
        owner,
    };
    let text = |text: String| Entry {
        content: Content::Bytes(text.into_bytes()),
        mode: 0o644,
        owner: 0,
    };
    for path in [
        "etc",
        "etc/sightline",
        "etc/ssl",
        "etc/ssl/certs",
        "usr",
        "usr/bin",
        "var",
        "var/lib",
        "var/lib/sightline",
    ] {
        tree.insert(path.to_string(), dir(0o755, 0));
    }
    tree.insert("tmp".into(), dir(0o1777, 0));
    tree.insert(
        "etc/passwd".into(),
        text(format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             {USER_NAME}:x:{USER_ID}:{USER_ID}:Sightline agents:/var/lib/sightline:/sbin/nologin\n"
        )),
    );
    tree.insert(
        "etc/group".into(),
        text(format!("root:x:0:\n{USER_NAME}:x:{USER_ID}:\n")),
    );
    tree.insert(CA_BUNDLE.into(), text(ca_bundle()));
    for binary in binaries {
        let product = binary.product;
        tree.insert(
            format!("usr/bin/{}", product.package),
            Entry {
                content: Content::File(binary.path.clone()),
                mode: 0o755,
                owner: 0,
            },
        );
        let config = product.config_source(&ctx.root);
        if config.exists() {
            let bytes =
                std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
            tree.insert(
                format!("etc/sightline/{}.conf", product.name),
                Entry {
                    content: Content::Bytes(bytes),
                    mode: 0o644,
                    owner: 0,
                },
            );
        } else {
            eprintln!(
                "note: no {}: the image has no /etc/sightline/{}.conf",
                config.display(),
                product.name
            );
        }
        // The state (spool, identity): the image's user owns it, so the
        // agent runs as that user with nothing mounted; a volume mounted
        // there in Kubernetes takes its place.
        tree.insert(
            format!("var/lib/sightline/{}", product.name),
            dir(0o750, USER_ID),
        );
    }
    Ok(tree)
}

/// Mozilla's root certificates (the `webpki-root-certs` crate, pinned by
/// `Cargo.lock`) as one PEM file.
fn ca_bundle() -> String {
    let mut pem = String::from(
        "# Mozilla's root certificates, from the webpki-root-certs crate\n\
         # (written by cargo xtask package --image).\n",
    );
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let base64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Writes the layer (tar, gzip) to `path`, hashing it as it goes.
fn write_layer(ctx: &Context, binaries: &[Binary], path: &Path) -> Result<Layer> {
    let tree = rootfs(ctx, binaries)?;
    let file = File::create(path)?;
    let compressed = Hashing::new(BufWriter::new(file));
    // No name and no time in the gzip header (flate2's builder writes
    // neither unless asked), so equal input gives equal bytes.
    let gzip = flate2::GzBuilder::new().write(compressed, flate2::Compression::new(GZIP_LEVEL));
    let mut tar = Archive::new(Hashing::new(gzip), ctx.source_date_epoch);
    for (name, entry) in &tree {
        let owned = (entry.mode, entry.owner);
        match &entry.content {
            Content::Dir => tar.entry(name, tar::EntryType::Directory, owned, 0, io::empty())?,
            Content::Bytes(bytes) => {
                tar.entry(name, tar::EntryType::Regular, owned, len(bytes), &bytes[..])?;
            }
            Content::File(source) => {
                let file =
                    File::open(source).with_context(|| format!("reading {}", source.display()))?;
                let size = file.metadata()?.len();
                tar.entry(name, tar::EntryType::Regular, owned, size, file)?;
            }
        }
    }
    let uncompressed = tar.into_inner()?;
    let diff_id = uncompressed.hex();
    let gzip = uncompressed.inner.finish()?;
    let size = gzip.written;
    let digest = gzip.hex();
    gzip.inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(Layer {
        digest,
        size,
        diff_id,
    })
}

/// The image's config: platform, user, environment, labels, the layer's
/// diff_id and one history entry, every time `SOURCE_DATE_EPOCH`.
fn image_config(
    ctx: &Context,
    binaries: &[Binary],
    layer: &Layer,
    revision: Option<&str>,
) -> Result<Value> {
    let created = rfc3339(ctx.source_date_epoch)?;
    let agents: Vec<&str> = binaries.iter().map(|b| b.product.package).collect();
    let mut labels = json!({
        "org.opencontainers.image.title": "sightline",
        "org.opencontainers.image.description": format!(
            "Sightline monitoring: {} in /usr/bin; the command names the one to run",
            agents.join(", ")
        ),
        "org.opencontainers.image.version": ctx.version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": workspace_key(&ctx.root, "repository")?
            .unwrap_or_else(|| SOURCE_URL.to_string()),
        "org.opencontainers.image.licenses": workspace_key(&ctx.root, "license")?
            .context("no license in [workspace.package] of Cargo.toml")?,
    });
    if let Some(revision) = revision {
        labels["org.opencontainers.image.revision"] = json!(revision);
    }
    Ok(json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Env": [PATH_ENV],
            "Cmd": DEFAULT_CMD,
            "WorkingDir": "/var/lib/sightline",
            "Labels": labels,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [format!("sha256:{}", layer.diff_id)],
        },
        "history": [{
            "created": created,
            "created_by": "cargo xtask package --image",
            "comment": format!("{} and their config, user {USER_NAME} ({USER_ID})", agents.join(", ")),
        }],
    }))
}

/// The last commit, for `org.opencontainers.image.revision`; none outside
/// a git checkout.
fn git_revision(root: &Path) -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let revision = text.trim();
    (output.status.success() && revision.len() == 40).then(|| revision.to_string())
}

/// `key = "..."` of the workspace's `[workspace.package]`, if there.
fn workspace_key(root: &Path, key: &str) -> Result<Option<String>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    Ok(manifest
        .lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_string())
        }))
}

/// `seconds` since the epoch as RFC 3339 in UTC.
fn rfc3339(seconds: u64) -> Result<String> {
    let seconds = i64::try_from(seconds).context("SOURCE_DATE_EPOCH out of range")?;
    let time = time::OffsetDateTime::from_unix_timestamp(seconds)
        .context("SOURCE_DATE_EPOCH out of range")?;
    Ok(time.format(&time::format_description::well_known::Rfc3339)?)
}

/// Compact JSON, keys sorted (serde_json's map is ordered).
fn to_json(value: &Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn len(bytes: &[u8]) -> u64 {
    // A usize always fits in a u64 on the targets xtask runs on.
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    fn hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += len(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar stream whose every entry has the same time, a numeric owner and
/// no user or group name (so no extractor maps names to the host's ids).
struct Archive<W: Write> {
    builder: tar::Builder<W>,
    mtime: u64,
}

impl Archive<BufWriter<File>> {
    fn create(path: &Path, mtime: u64) -> Result<Archive<BufWriter<File>>> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Archive::new(BufWriter::new(file), mtime))
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        self.entry(name, tar::EntryType::Directory, (0o755, 0), 0, io::empty())
    }

    fn bytes(&mut self, name: &str, mode: u32, bytes: &[u8]) -> Result<()> {
        self.file(name, mode, len(bytes), bytes)
    }

    fn file(&mut self, name: &str, mode: u32, size: u64, data: impl Read) -> Result<()> {
        self.entry(name, tar::EntryType::Regular, (mode, 0), size, data)
    }

    fn finish(self) -> Result<()> {
        let file = self.into_inner()?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }
}

impl<W: Write> Archive<W> {
    fn new(inner: W, mtime: u64) -> Archive<W> {
        Archive {
            builder: tar::Builder::new(inner),
            mtime,
        }
    }

    /// Appends one entry, `owner` both its uid and gid; a folder's name
    /// gets its trailing `/`.
    fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        (mode, owner): (u32, u64),
        size: u64,
        data: impl Read,
    ) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        let name = if kind == tar::EntryType::Directory {
            format!("{name}/")
        } else {
            name.to_string()
        };
        header
            .set_path(&name)
            .with_context(|| format!("tar name {name}"))?;
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_mtime(self.mtime);
        header.set_size(size);
        header.set_cksum();
        // Counts what was copied: a file that changed size since its
        // length was read would make a corrupt archive.
        let mut counted = CountingReader {
            inner: data,
            read: 0,
        };
        self.builder
            .append(&header, &mut counted)
            .with_context(|| format!("adding {name} to the archive"))?;
        if counted.read != size {
            bail!("{name} changed while it was archived ({size} bytes expected)");
        }
        Ok(())
    }

    fn into_inner(self) -> Result<W> {
        Ok(self.builder.into_inner()?)
    }
}

/// A reader that counts the bytes it gives.
struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += len(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
