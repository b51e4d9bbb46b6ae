//! The rpm packages `cargo xtask package` wrote into `target/packages/`
//! (and the 99.0.0 ones in `target/packages-next/`), inspected with
//! Debian's `rpm` (`-qpi`, `-qpl`, `--scripts`, `--configfiles`, the file
//! modes and owners), installed into a scratch root without scriptlets
//! (modes and owners as they land; `%config(noreplace)` through an upgrade
//! and an erase), and the scriptlets' shell checked by `sh -n`. Also: two
//! builds of every deb and rpm give the same bytes.
//!
//! Never touches this machine's rpm database or its root: every install
//! goes into a scratch folder with its own database. The scriptlets' logic
//! is shared with the debs' maintainer scripts (`deploy/packaging/common.sh`),
//! which `package_deb.rs` runs for real.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sightline_e2e::Scratch;
use sightline_e2e::packages::{
    PRODUCTS, TEST_NEXT_VERSION, TEST_PACKAGES, TEST_PACKAGES_NEXT, VERSION, rpm, workspace,
};

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// Runs `command`; its stdout after asserting success.
fn ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `rpm -qp --qf FORMAT FILE`.
fn query(file: &Path, format: &str) -> String {
    ok(Command::new("rpm").args(["-qp", "--qf", format]).arg(file))
}

#[test]
fn each_rpm_says_what_it_is_and_holds_its_files_with_their_modes() {
    for (name, package) in PRODUCTS {
        let file = rpm(TEST_PACKAGES, package, VERSION);
        let info = ok(Command::new("rpm").arg("-qpi").arg(&file));
        let field = |key: &str| -> String {
            info.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == key).then(|| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("{package}: no {key} in:\n{info}"))
        };
        assert_eq!(field("Name"), *package);
        assert_eq!(field("Version"), VERSION);
        assert_eq!(field("Release"), "1");
        assert_eq!(field("Architecture"), "x86_64");
        assert_eq!(field("License"), "Apache-2.0");
        assert_eq!(
            field("Build Host"),
            "sightline.invalid",
            "fixed: reproducible"
        );

        // Every file, with its mode, owner, group and flags (c: config,
        // n: noreplace, d: doc).
        let listed = query(
            &file,
            "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
        );
        let expected = [
            "drwxr-xr-x root:root  /etc/sightline".to_string(),
            format!("-rw-r----- root:sightline cn /etc/sightline/{name}.conf"),
            format!("-rwxr-xr-x root:root  /usr/bin/{package}"),
            format!("-rw-r--r-- root:root  /usr/lib/systemd/system/{package}.service"),
            format!("drwxr-xr-x root:root  /usr/share/doc/{package}"),
            format!("-rw-r--r-- root:root d /usr/share/doc/{package}/copyright"),
            "drwxr-xr-x root:root  /var/lib/sightline".to_string(),
            format!("drwxr-x--- sightline:sightline  /var/lib/sightline/{name}"),
        ];
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines, expected, "{package}");
        let plain = ok(Command::new("rpm").arg("-qpl").arg(&file));
        assert_eq!(plain.lines().count(), expected.len(), "{plain}");
        let config = ok(Command::new("rpm")
            .args(["-qp", "--configfiles"])
            .arg(&file));
        assert_eq!(config, format!("/etc/sightline/{name}.conf\n"));

        // A static binary requires no library; the scriptlets need the
        // user tools and a shell.
        let requires = ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&file));
        for line in requires.lines() {
            assert!(
                matches!(
                    line,
                    "/bin/sh" | "/usr/sbin/useradd" | "/usr/sbin/groupadd" | "/usr/bin/getent"
                ) || line.starts_with("rpmlib("),
                "{package} requires {line}"
            );
        }
        assert!(requires.contains("/usr/sbin/useradd"), "{requires}");

        // The four scriptlets, each through `sh -n`.
        let scripts = ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(&file));
        let scratch = Scratch::new(&format!("rpm-inspect-{name}"));
        for (tag, title) in [
            ("PREIN", "preinstall"),
            ("POSTIN", "postinstall"),
            ("PREUN", "preuninstall"),
            ("POSTUN", "postuninstall"),
        ] {
            assert!(
                scripts.contains(&format!("{title} scriptlet (using /bin/sh)")),
                "{package}: no {title} in:\n{scripts}"
            );
            let body = query(&file, &format!("%{{{tag}}}"));
            assert!(body.contains(&format!("PACKAGE={package}\n")), "{body}");
            let path = scratch.join(tag);
            fs::write(&path, &body).expect("scriptlet");
            ok(Command::new("sh").arg("-n").arg(&path));
        }
        let post = query(&file, "%{POSTIN}");
        assert!(post.contains("start_after_install"), "{post}");
        let postun = query(&file, "%{POSTUN}");
        assert!(postun.contains("restart_after_upgrade"), "{postun}");
    }
}

/// (mode & 07777, uid, gid) of `path`.
fn stat(path: &Path) -> (u32, u32, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// `rpm --root ROOT --dbpath /var/lib/rpm ARGS`, never running a
/// scriptlet and never asking for dependencies the scratch root lacks.
fn rpm_in(root: &Path, args: &[&str]) -> String {
    ok(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm"])
        .args(args))
}

#[test]
fn files_land_with_their_owners_and_an_edited_config_survives_upgrade_and_erase() {
    let scratch = Scratch::new("rpm-root");
    let root = scratch.join("root");
    // The user and group %pre would make, with numbers this host does not
    // use for them, so the owners are seen to come from the root's files.
    fs::create_dir_all(root.join("etc")).expect("etc");
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsightline:x:4242:4243:Sightline agents:/var/lib/sightline:/usr/sbin/nologin\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nsightline:x:4243:\n").expect("group");
    rpm_in(&root, &["--initdb"]);
    let file = rpm(TEST_PACKAGES, "sightline-infra", VERSION);
    let path = |p: &str| root.join(p.trim_start_matches('/'));
    rpm_in(
        &root,
        &[
            "-i",
            "--nodeps",
            "--noscripts",
            file.to_str().expect("path"),
        ],
    );
    assert_eq!(stat(&path("/usr/bin/sightline-infra")), (0o755, 0, 0));
    assert_eq!(
        stat(&path("/usr/lib/systemd/system/sightline-infra.service")),
        (0o644, 0, 0)
    );
    assert_eq!(stat(&path("/etc/sightline/infra.conf")), (0o640, 0, 4243));
    assert_eq!(stat(&path("/var/lib/sightline/infra")), (0o750, 4242, 4243));
    assert_eq!(
        fs::read(path("/etc/sightline/infra.conf")).expect("conf"),
        fs::read(workspace().join("deploy/config/infra.conf")).expect("source"),
    );

    // Upgrade over an edited config: noreplace keeps it, and as the
    // packaged one did not change there is no .rpmnew either.
    let conf = path("/etc/sightline/infra.conf");
    let edited = "# edited\nlicense=sl1-edited\n";
    fs::write(&conf, edited).expect("edit");
    fs::write(path("/var/lib/sightline/infra/instance"), "state").expect("state");
    let next = rpm(TEST_PACKAGES_NEXT, "sightline-infra", TEST_NEXT_VERSION);
    rpm_in(
        &root,
        &[
            "-U",
            "--nodeps",
            "--noscripts",
            next.to_str().expect("path"),
        ],
    );
    assert_eq!(
        rpm_in(&root, &["-q", "--qf", "%{VERSION}", "sightline-infra"]),
        TEST_NEXT_VERSION
    );
    assert_eq!(fs::read_to_string(&conf).expect("conf"), edited);
    assert!(!path("/etc/sightline/infra.conf.rpmnew").exists());

    // Erase: the edited config is kept as .rpmsave, the state folder (not
    // empty) stays; the binary and the unit go.
    rpm_in(&root, &["-e", "--nodeps", "--noscripts", "sightline-infra"]);
    assert!(!path("/usr/bin/sightline-infra").exists());
    assert!(!path("/usr/lib/systemd/system/sightline-infra.service").exists());
    assert!(!conf.exists());
    assert_eq!(
        fs::read_to_string(path("/etc/sightline/infra.conf.rpmsave")).expect("rpmsave"),
        edited
    );
    assert!(path("/var/lib/sightline/infra/instance").exists());
}

/// sha256 of every file in `dir`, by name.
fn digests(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let sum = ok(Command::new("sha256sum").arg(&p));
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (
                name,
                sum.split_whitespace().next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The epoch `cargo xtask package` stamps: `SOURCE_DATE_EPOCH` when set,
/// else the last commit's time.
fn source_date_epoch() -> String {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return epoch.trim().to_string();
    }
    ok(Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(workspace()))
    .trim()
    .to_string()
}

/// Two builds into two folders give the same bytes for every deb and rpm
/// (cheap: the binaries are built, only the packaging runs), and every
/// time inside is the one epoch. The test leaves `SOURCE_DATE_EPOCH` as
/// it found it: the `cc` crate's build scripts track that variable, so a
/// new value would make cargo rebuild every C dependency (ring, SQLite,
/// zstd) of the musl binaries, twice over.
#[test]
fn building_twice_gives_identical_debs_and_rpms() {
    let scratch = Scratch::new("package-twice");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let epoch = source_date_epoch();
    let mut builds = Vec::new();
    for name in ["first", "second"] {
        let out = scratch.join(name);
        ok(Command::new(&cargo)
            .args([
                "run", "-q", "-p", "xtask", "--", "package", "--deb", "--rpm",
            ])
            .args(["--profile", "dev", "--out"])
            .arg(&out)
            .current_dir(workspace()));
        builds.push(digests(&out));
    }
    assert_eq!(builds[0].len(), 2 * PRODUCTS.len(), "{:?}", builds[0]);
    assert_eq!(builds[0], builds[1]);

    let deb = scratch
        .path()
        .join(format!("first/sightline-infra_{VERSION}_amd64.deb"));
    let contents = scratch.join("contents");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&contents));
    let binary = contents.join("usr/bin/sightline-infra");
    let mtime = fs::metadata(&binary).expect("binary").mtime();
    assert_eq!(mtime.to_string(), epoch, "the deb's file times");
    let rpm = scratch
        .path()
        .join(format!("first/sightline-infra-{VERSION}-1.x86_64.rpm"));
    assert_eq!(query(&rpm, "%{BUILDTIME}"), epoch);
    let times = query(&rpm, "[%{FILEMTIMES}\n]");
    assert!(times.lines().all(|t| t == epoch), "{times}");
}
