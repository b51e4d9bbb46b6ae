//! The deb packages `cargo xtask package` wrote into `target/packages/`
//! (and the 99.0.0 ones in `target/packages-next/`), inspected with
//! `dpkg-deb` and installed on this machine with `dpkg` (as root, as CI
//! runs): files, modes, owners, the `sightline` user and its groups, the
//! units (`systemd-analyze verify`), the postinst's word when there is no
//! license, an upgrade over an edited conffile, the installed agents run as
//! their units run them reporting to a local collector, remove and purge.
//!
//! The only test that installs debs on this machine. It purges every
//! Sightline package before it starts and when it ends (also on failure).
//! No systemd runs here (nor on CI): the scripts' systemd branches are
//! driven with a stand-in `systemctl` in a private mount namespace whose
//! `/run` is a fresh tmpfs holding `/run/systemd/system`, so nothing
//! outside that namespace believes systemd runs.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sightline_e2e::packages::{
    PRODUCTS, TEST_NEXT_VERSION, TEST_PACKAGES, TEST_PACKAGES_NEXT, VERSION, deb, workspace,
};
use sightline_e2e::{Collector, Scratch, create_project, terminate, wait_exit, wait_for};

/// Runs `command`; its stdout and stderr together, after asserting success.
fn ok(command: &mut Command) -> String {
    let output = run(command);
    let text = text(&output);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{text}",
        output.status
    );
    text
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every file `dpkg-deb -c` lists: path → (mode string, owner/group).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "dpkg-deb -c line: {line}");
            let path = fields[5].trim_start_matches('.').to_string();
            (path, (fields[0].to_string(), fields[1].to_string()))
        })
        .collect()
}

#[test]
fn each_deb_says_what_it_is_and_holds_its_files_with_their_modes() {
    for (name, package) in PRODUCTS {
        let file = deb(TEST_PACKAGES, package, VERSION);
        let field = |f: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&file).arg(f));
        assert_eq!(field("Package").trim(), *package);
        assert_eq!(field("Version").trim(), VERSION);
        assert_eq!(field("Architecture").trim(), "amd64");
        // A static binary needs no library; the scripts need useradd.
        assert_eq!(field("Depends").trim(), "passwd", "{package}");
        let info = ok(Command::new("dpkg-deb").arg("-I").arg(&file));
        for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
            assert!(info.contains(script), "{package} has no {script}:\n{info}");
        }

        let scratch = Scratch::new(&format!("deb-inspect-{name}"));
        ok(Command::new("dpkg-deb")
            .arg("-e")
            .arg(&file)
            .arg(scratch.join("DEBIAN")));
        let conffiles = fs::read_to_string(scratch.join("DEBIAN/conffiles")).expect("conffiles");
        assert_eq!(conffiles, format!("/etc/sightline/{name}.conf\n"));
        for script in ["postinst", "prerm", "postrm"] {
            let path = scratch.join("DEBIAN").join(script);
            let body = fs::read_to_string(&path).expect("script");
            assert!(body.starts_with("#!/bin/sh\n"), "{package} {script}");
            ok(Command::new("sh").arg("-n").arg(&path));
            let mode = fs::metadata(&path).expect("script").mode() & 0o777;
            assert_eq!(mode, 0o755, "{package} {script}");
        }

        let listed = contents(&file);
        let files: BTreeMap<&str, (&str, &str)> = listed
            .iter()
            .filter(|(_, (mode, _))| !mode.starts_with('d'))
            .map(|(p, (m, o))| (p.as_str(), (m.as_str(), o.as_str())))
            .collect();
        let expected: BTreeMap<String, (&str, &str)> = [
            (format!("/usr/bin/{package}"), ("-rwxr-xr-x", "root/root")),
            (
                format!("/lib/systemd/system/{package}.service"),
                ("-rw-r--r--", "root/root"),
            ),
            // root:root in the archive; postinst gives it group sightline.
            (
                format!("/etc/sightline/{name}.conf"),
                ("-rw-r-----", "root/root"),
            ),
            (
                format!("/usr/share/doc/{package}/copyright"),
                ("-rw-r--r--", "root/root"),
            ),
        ]
        .into_iter()
        .collect();
        let expected: BTreeMap<&str, (&str, &str)> =
            expected.iter().map(|(p, v)| (p.as_str(), *v)).collect();
        assert_eq!(files, expected, "{package}: {listed:?}");
        for (path, (mode, owner)) in &listed {
            if mode.starts_with('d') {
                assert_eq!(
                    (mode.as_str(), owner.as_str()),
                    ("drwxr-xr-x", "root/root"),
                    "{package} {path}"
                );
            }
        }
        // The state folder is made by postinst (owned by sightline), so a
        // `dpkg --remove` never touches it.
        assert!(
            !listed.keys().any(|p| p.starts_with("/var/")),
            "{package}: {listed:?}"
        );
    }
}

/// The binaries are static: no program interpreter, and each runs in a
/// root holding nothing but itself (no libc, no /etc, no /proc).
#[test]
fn each_binary_is_static_and_runs_in_an_empty_root() {
    for (name, package) in PRODUCTS {
        let file = deb(TEST_PACKAGES, package, VERSION);
        let scratch = Scratch::new(&format!("deb-static-{name}"));
        let tree = scratch.join("tree");
        ok(Command::new("dpkg-deb").arg("-x").arg(&file).arg(&tree));
        let binary = tree.join("usr/bin").join(package);
        let kind = ok(Command::new("file").arg("-b").arg(&binary));
        assert!(
            kind.contains("statically linked") || kind.contains("static-pie linked"),
            "{package}: {kind}"
        );
        let headers = ok(Command::new("readelf").arg("-lW").arg(&binary));
        assert!(!headers.contains("INTERP"), "{package}: {headers}");
        let dynamic = ok(Command::new("readelf").arg("-dW").arg(&binary));
        assert!(!dynamic.contains("(NEEDED)"), "{package}: {dynamic}");

        let root = scratch.join("empty-root");
        fs::create_dir_all(&root).expect("root");
        // Copied by cp, not by this process: a file this process wrote
        // could still be open in a child another test thread forks
        // (ETXTBSY on exec).
        ok(Command::new("cp").arg(&binary).arg(root.join(package)));
        let out = ok(Command::new("chroot")
            .arg(&root)
            .arg(format!("/{package}"))
            .arg("--version"));
        assert_eq!(out.trim(), format!("{package} {VERSION}"));
        assert_eq!(
            fs::read_dir(&root).expect("root").count(),
            1,
            "the empty root holds only the binary"
        );
    }
}

/// Purges every Sightline package (and the test's log files) when created
/// and when dropped, so a failed run leaves this machine as it found it.
struct Purge {
    log_files: Vec<PathBuf>,
}

impl Purge {
    fn new() -> Purge {
        purge_all();
        Purge {
            log_files: Vec::new(),
        }
    }
}

impl Drop for Purge {
    fn drop(&mut self) {
        purge_all();
        for file in &self.log_files {
            let _ = fs::remove_file(file);
        }
    }
}

fn purge_all() {
    let _ = run(Command::new("dpkg")
        .arg("--purge")
        .args(PRODUCTS.iter().map(|(_, p)| *p)));
}

/// `dpkg-query`'s status of `package` (`install ok installed`,
/// `deinstall ok config-files`), or `None` when dpkg does not know it.
fn status(package: &str) -> Option<String> {
    let output = run(Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}"])
        .arg(package));
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|s| !s.starts_with("unknown") && !s.contains("not-installed"))
}

fn user_exists(name: &str) -> bool {
    run(Command::new("getent").arg("passwd").arg(name))
        .status
        .success()
}

fn id_of(kind: &str, name: &str) -> u32 {
    let line = ok(Command::new("getent").arg(kind).arg(name));
    line.split(':')
        .nth(2)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("getent {kind} {name}: {line}"))
}

/// (mode & 07777, uid, gid) of `path`.
fn stat(path: &str) -> (u32, u32, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// `[Service]` settings of an installed unit: key → values in order.
fn unit_settings(package: &str) -> BTreeMap<String, Vec<String>> {
    let path = format!("/lib/systemd/system/{package}.service");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            settings
                .entry(key.trim().to_string())
                .or_default()
                .push(value.trim().to_string());
        }
    }
    settings
}

/// Starts the installed `package` as its unit would: its `ExecStart` as
/// its `User=` and `Group=` with only its `SupplementaryGroups=`, its
/// `UMask=`, no new privileges and no capability (the units grant none).
fn start_as_unit(package: &str, stderr: &Path) -> Child {
    let unit = unit_settings(package);
    let one = |key: &str| -> String {
        let values = unit
            .get(key)
            .unwrap_or_else(|| panic!("{package}: no {key}="));
        assert_eq!(values.len(), 1, "{package}: {key}= {values:?}");
        values[0].clone()
    };
    assert_eq!(
        one("CapabilityBoundingSet"),
        "",
        "{package} grants no capability"
    );
    assert_eq!(
        one("AmbientCapabilities"),
        "",
        "{package} grants no capability"
    );
    assert_eq!(one("NoNewPrivileges"), "yes");
    let groups = unit
        .get("SupplementaryGroups")
        .map(|g| g.join(" ").split_whitespace().collect::<Vec<_>>().join(","));
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask \"$0\" && exec \"$@\""])
        .arg(one("UMask"))
        .arg("setpriv")
        .arg(format!("--reuid={}", one("User")))
        .arg(format!("--regid={}", one("Group")));
    match groups {
        Some(groups) => command.arg(format!("--groups={groups}")),
        None => command.arg("--clear-groups"),
    };
    command
        .args([
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .args(one("ExecStart").split_whitespace());
    let log = fs::File::create(stderr).expect("agent log");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {package}: {e}"))
}

/// `dpkg ARGS` with a stand-in `systemctl` (it logs its arguments to
/// `systemctl.log`, keeps the enabled units in `enabled` and reports, for
/// `--version`, the version in `systemd-version`, else 252) and a running
/// systemd's mark, both only inside a private mount namespace whose `/run`
/// is a fresh tmpfs.
fn dpkg_with_systemd(scratch: &Scratch, args: &[&str]) -> String {
    let bin = scratch.join("fake-bin");
    fs::create_dir_all(&bin).expect("bin");
    let log = scratch.join("systemctl.log");
    let enabled = scratch.join("enabled");
    let version = scratch.join("systemd-version");
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = --version ]; then
    echo "systemd $(cat '{version}' 2>/dev/null || echo 252) (stand-in)"
    exit 0
fi
echo "$*" >> '{log}'
for unit; do :; done
case "$1" in
is-enabled) grep -qx "$unit" '{enabled}' 2>/dev/null ;;
is-active) grep -qx "$unit" '{active}' 2>/dev/null ;;
enable) echo "$unit" >> '{enabled}' ;;
disable) touch '{enabled}'; grep -vx "$unit" '{enabled}' > '{enabled}.new' || true; mv '{enabled}.new' '{enabled}' ;;
*) exit 0 ;;
esac
"#,
        log = log.display(),
        enabled = enabled.display(),
        active = scratch.join("active").display(),
        version = version.display()
    );
    let systemctl = bin.join("systemctl");
    fs::write(&systemctl, script).expect("systemctl");
    ok(Command::new("chmod").arg("755").arg(&systemctl));
    ok(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs sightline-e2e /run && mkdir -p /run/systemd/system && exec \"$@\"")
        .arg("sh")
        .arg("env")
        .arg(format!(
            "PATH={}:/usr/sbin:/usr/bin:/sbin:/bin",
            bin.display()
        ))
        .arg("dpkg")
        .args(args))
}

fn systemctl_calls(scratch: &Scratch) -> String {
    fs::read_to_string(scratch.join("systemctl.log")).unwrap_or_default()
}

#[test]
fn install_upgrade_over_an_edited_config_report_remove_and_purge() {
    let mut guard = Purge::new();
    assert!(
        !user_exists("sightline"),
        "a user sightline exists with no Sightline package installed: remove it (userdel sightline) before this test"
    );
    assert!(!Path::new("/etc/sightline").exists() && !Path::new("/var/lib/sightline").exists());
    let scratch = Scratch::new("deb-install");

    // Install all five: four agents with no license yet, and the collector.
    let infra = deb(TEST_PACKAGES, "sightline-infra", VERSION);
    let collector_deb = deb(TEST_PACKAGES, "sightline-collector", VERSION);
    let said = ok(Command::new("dpkg")
        .arg("-i")
        .args(PRODUCTS.iter().map(|(_, p)| deb(TEST_PACKAGES, p, VERSION))));
    for (name, package) in PRODUCTS.iter().filter(|(n, _)| *n != "collector") {
        let line = format!(
            "{package}: installed but not started: no license in /etc/sightline/{name}.conf; add license=<key> there, then run: systemctl enable --now {package}"
        );
        assert!(said.lines().any(|l| l == line), "no '{line}' in:\n{said}");
    }
    assert!(
        said.lines()
            .any(|l| l == "sightline-collector: enabled; not started: systemd is not running here"),
        "{said}"
    );
    let wants =
        Path::new("/etc/systemd/system/multi-user.target.wants/sightline-collector.service");
    assert!(wants.is_symlink(), "the collector is enabled (offline)");

    // Files, owners, modes, the user.
    let uid = id_of("passwd", "sightline");
    let gid = id_of("group", "sightline");
    let passwd = ok(Command::new("getent").args(["passwd", "sightline"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/sightline", "home: {passwd}");
    assert!(fields[6].ends_with("nologin"), "no login shell: {passwd}");
    assert!(uid < 1000, "a system user: {passwd}");
    assert_eq!(
        ok(Command::new("id").args(["-nG", "sightline"])).trim(),
        "sightline",
        "the user itself has no other group; a unit that needs one names it"
    );
    for (name, package) in PRODUCTS {
        assert_eq!(stat(&format!("/usr/bin/{package}")), (0o755, 0, 0));
        assert_eq!(
            stat(&format!("/lib/systemd/system/{package}.service")),
            (0o644, 0, 0)
        );
        assert_eq!(
            stat(&format!("/etc/sightline/{name}.conf")),
            (0o640, 0, gid)
        );
        assert_eq!(
            stat(&format!("/var/lib/sightline/{name}")),
            (0o750, uid, gid)
        );
        assert!(Path::new(&format!("/usr/share/doc/{package}/copyright")).exists());
        let verify = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("/lib/systemd/system/{package}.service")));
        assert!(
            verify.status.success() && text(&verify).trim().is_empty(),
            "systemd-analyze verify {package}:\n{}",
            text(&verify)
        );
        let unit = unit_settings(package);
        assert_eq!(unit["User"], ["sightline"]);
        assert_eq!(unit["Restart"], ["on-failure"]);
        assert_eq!(unit["ProtectSystem"], ["strict"]);
        assert_eq!(unit["StateDirectory"], [format!("sightline/{name}")]);
        let groups = unit.get("SupplementaryGroups").cloned().unwrap_or_default();
        let want: &[&str] = if *name == "log" { &["adm"] } else { &[] };
        assert_eq!(groups, want, "{package}'s groups");
    }

    // A collector for the agents, on loopback.
    let data = scratch.join("collector");
    let creds = create_project(&data, "packages");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);

    // Edit the conffile (the license, the collector), then upgrade over it.
    let edited = format!(
        "# edited by the package test\nlicense={}\nserver.host={}\nserver.port={}\ninterval=1s\n",
        creds.license,
        collector.grpc.ip(),
        collector.grpc.port()
    );
    fs::write("/etc/sightline/infra.conf", &edited).expect("edit infra.conf");
    let next = deb(TEST_PACKAGES_NEXT, "sightline-infra", TEST_NEXT_VERSION);
    // No --force-confold: the packaged conffile did not change between the
    // versions, so dpkg keeps the edit without asking (with stdin closed a
    // question would fail the install).
    let said = ok(Command::new("dpkg").arg("-i").arg(&next));
    assert!(!said.contains("Configuration file"), "dpkg asked:\n{said}");
    assert_eq!(
        status("sightline-infra").as_deref(),
        Some(format!("install ok installed {TEST_NEXT_VERSION}").as_str())
    );
    assert_eq!(
        fs::read_to_string("/etc/sightline/infra.conf").expect("infra.conf"),
        edited,
        "the upgrade kept the edit"
    );
    assert_eq!(stat("/etc/sightline/infra.conf"), (0o640, 0, gid));
    // Licensed now, but never enabled: it says how to start it.
    assert!(
        said.lines().any(|l| l
            == "sightline-infra: not enabled, so not started; run: systemctl enable --now sightline-infra"),
        "{said}"
    );

    // The installed server agent, run as its unit runs it, reports.
    let mut agent = start_as_unit("sightline-infra", &scratch.join("infra.log"));
    let agent_log = || fs::read_to_string(scratch.join("infra.log")).unwrap_or_default();
    let oid = wait_for(
        "the packaged agent to register",
        Duration::from_secs(20),
        || {
            api.agents()
                .into_iter()
                .find(|a| a["product"] == "infra")
                .and_then(|a| a["oid"].as_i64())
        },
    );
    // It sees other users' processes (root's), command lines included.
    let root_process = wait_for("a process snapshot", Duration::from_secs(20), || {
        let body = api.ok(&format!("/api/v1/agents/{oid}/processes"));
        body["snapshot"]["processes"]
            .as_array()?
            .iter()
            .find(|p| p["user"] == "root" && p["cmdline"].as_str().is_some_and(|c| !c.is_empty()))
            .cloned()
    });
    assert!(root_process["pid"].as_i64().is_some(), "{root_process}");
    wait_for("CPU and memory points", Duration::from_secs(20), || {
        let fleet = api.ok("/api/v1/fleet");
        let row = fleet["servers"].as_array()?.first()?.clone();
        (row["cpu_pct"].is_number() && row["mem_pct"].is_number()).then_some(())
    });
    terminate(&agent);
    let exit = wait_exit(&mut agent, Duration::from_secs(3));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the agent stops cleanly on SIGTERM: {exit:?}\n{}",
        agent_log()
    );
    let spool = Path::new("/var/lib/sightline/infra/spool");
    assert_eq!(
        stat("/var/lib/sightline/infra/spool").1,
        uid,
        "state written as sightline"
    );
    assert!(spool.is_dir());

    // The log agent reads a root:adm 0640 log through its unit's group adm,
    // and not a root-only one.
    let readable = PathBuf::from(format!(
        "/var/log/sightline-e2e-{}-adm.log",
        std::process::id()
    ));
    let private = PathBuf::from(format!(
        "/var/log/sightline-e2e-{}-root.log",
        std::process::id()
    ));
    guard.log_files.push(readable.clone());
    guard.log_files.push(private.clone());
    fs::write(&readable, "a line for group adm\n").expect("adm log");
    ok(Command::new("chown").arg("root:adm").arg(&readable));
    ok(Command::new("chmod").arg("0640").arg(&readable));
    fs::write(&private, "a line for root only\n").expect("root log");
    ok(Command::new("chmod").arg("0600").arg(&private));
    fs::write(
        "/etc/sightline/log.conf",
        format!(
            "license={}\nserver.host={}\nserver.port={}\ninterval=1s\nfile.t.path={}, {}\nfile.t.start=beginning\n",
            creds.license,
            collector.grpc.ip(),
            collector.grpc.port(),
            readable.display(),
            private.display()
        ),
    )
    .expect("log.conf");
    let mut log_agent = start_as_unit("sightline-log", &scratch.join("log.log"));
    let records = wait_for("the adm log's line", Duration::from_secs(20), || {
        let records = sightline_e2e::logs::all_records(&api, "t");
        records
            .iter()
            .any(|r| r.text == "a line for group adm")
            .then_some(records)
    });
    assert!(
        records.iter().all(|r| r.text != "a line for root only"),
        "the log agent holds no capability: {records:?}"
    );
    terminate(&log_agent);
    assert!(
        wait_exit(&mut log_agent, Duration::from_secs(3)).is_some_and(|s| s.success()),
        "{}",
        fs::read_to_string(scratch.join("log.log")).unwrap_or_default()
    );

    // remove keeps the config and the state.
    ok(Command::new("dpkg").args(["--remove", "sightline-infra"]));
    assert_eq!(
        status("sightline-infra").as_deref(),
        Some(format!("deinstall ok config-files {TEST_NEXT_VERSION}").as_str())
    );
    assert!(!Path::new("/usr/bin/sightline-infra").exists());
    assert_eq!(
        fs::read_to_string("/etc/sightline/infra.conf").expect("kept"),
        edited
    );
    assert!(spool.is_dir(), "remove keeps the state");

    // purge removes both; the user stays while other packages need it.
    ok(Command::new("dpkg").args(["--purge", "sightline-infra"]));
    assert_eq!(status("sightline-infra"), None);
    assert!(!Path::new("/etc/sightline/infra.conf").exists());
    assert!(!Path::new("/var/lib/sightline/infra").exists());
    assert!(user_exists("sightline"), "the other packages still use it");
    ok(Command::new("dpkg").args([
        "--purge",
        "sightline-db",
        "sightline-log",
        "sightline-url",
        "sightline-collector",
    ]));
    assert!(!user_exists("sightline"), "the last purge removes the user");
    assert!(
        run(Command::new("getent").args(["group", "sightline"]))
            .status
            .code()
            == Some(2),
        "and the group"
    );
    assert!(!Path::new("/etc/sightline").exists());
    assert!(!Path::new("/var/lib/sightline").exists());
    assert!(!wants.is_symlink(), "purge disabled the collector");

    // With systemd running (a stand-in, see dpkg_with_systemd): an agent
    // with no license is neither enabled nor started; once licensed and
    // enabled, an upgrade restarts it; the collector is enabled and
    // started on install; removal stops and disables.
    // On systemd 219 (RHEL 7), which has no @system-service, the filter
    // is reset by a drop-in; on 252 there is none.
    let infra_dropin =
        Path::new("/etc/systemd/system/sightline-infra.service.d/00-sightline-old-systemd.conf");
    fs::write(scratch.join("systemd-version"), "219").expect("version");
    let said = dpkg_with_systemd(&scratch, &["-i", infra.to_str().expect("path")]);
    assert!(
        said.contains("sightline-infra: installed but not started"),
        "{said}"
    );
    assert_eq!(systemctl_calls(&scratch), "daemon-reload\n");
    let dropin = fs::read_to_string(infra_dropin).expect("the drop-in on systemd 219");
    assert!(
        dropin.contains("\n[Service]\nSystemCallFilter=\n"),
        "{dropin}"
    );
    fs::write(scratch.join("systemd-version"), "252").expect("version");
    let mut conf = fs::read_to_string("/etc/sightline/infra.conf").expect("conf");
    conf = conf.replace("\nlicense=\n", &format!("\nlicense={}\n", creds.license));
    fs::write("/etc/sightline/infra.conf", conf).expect("license");
    let said = dpkg_with_systemd(&scratch, &["-i", infra.to_str().expect("path")]);
    assert!(
        said.contains("sightline-infra: not enabled, so not started"),
        "{said}"
    );
    assert!(
        !infra_dropin.exists() && !infra_dropin.parent().expect("dir").exists(),
        "no drop-in on systemd 252"
    );
    fs::write(scratch.join("enabled"), "sightline-infra.service\n").expect("enable");
    fs::write(scratch.join("systemctl.log"), "").expect("clear");
    dpkg_with_systemd(&scratch, &["-i", next.to_str().expect("path")]);
    let calls = systemctl_calls(&scratch);
    assert!(
        calls
            .lines()
            .any(|l| l == "restart sightline-infra.service"),
        "an upgrade restarts a licensed, enabled agent:\n{calls}"
    );
    // A running agent is restarted on the new binary even when its
    // license is gone from the config.
    let licensed = fs::read_to_string("/etc/sightline/infra.conf").expect("conf");
    let mut unlicensed = String::new();
    for line in licensed.lines() {
        unlicensed.push_str(if line.starts_with("license=") {
            "license="
        } else {
            line
        });
        unlicensed.push('\n');
    }
    fs::write("/etc/sightline/infra.conf", unlicensed).expect("no license");
    fs::write(scratch.join("active"), "sightline-infra.service\n").expect("active");
    fs::write(scratch.join("systemctl.log"), "").expect("clear");
    dpkg_with_systemd(&scratch, &["-i", next.to_str().expect("path")]);
    let calls = systemctl_calls(&scratch);
    assert!(
        calls
            .lines()
            .any(|l| l == "try-restart sightline-infra.service"),
        "an upgrade restarts a running agent whatever its license:\n{calls}"
    );
    fs::write("/etc/sightline/infra.conf", licensed).expect("license back");
    fs::remove_file(scratch.join("active")).expect("inactive");
    fs::write(scratch.join("systemctl.log"), "").expect("clear");
    fs::write(scratch.join("systemd-version"), "229").expect("version");
    let said = dpkg_with_systemd(&scratch, &["-i", collector_deb.to_str().expect("path")]);
    let collector_dropin = Path::new(
        "/etc/systemd/system/sightline-collector.service.d/00-sightline-old-systemd.conf",
    );
    assert!(collector_dropin.exists(), "the drop-in on systemd 229");
    let calls = systemctl_calls(&scratch);
    assert!(
        calls
            .lines()
            .any(|l| l == "enable --quiet sightline-collector.service")
            && calls
                .lines()
                .any(|l| l == "start sightline-collector.service"),
        "{calls}"
    );
    assert!(said.contains("sightline-collector: started"), "{said}");
    // Removed (config kept), then installed again: enabled again and
    // started, as before the removal.
    dpkg_with_systemd(&scratch, &["--remove", "sightline-collector"]);
    let enabled_units = || fs::read_to_string(scratch.join("enabled")).expect("enabled");
    assert!(
        !enabled_units().contains("sightline-collector.service"),
        "remove disables"
    );
    fs::write(scratch.join("systemctl.log"), "").expect("clear");
    dpkg_with_systemd(&scratch, &["-i", collector_deb.to_str().expect("path")]);
    let calls = systemctl_calls(&scratch);
    assert!(
        enabled_units().contains("sightline-collector.service")
            && calls
                .lines()
                .any(|l| l == "restart sightline-collector.service"),
        "a reinstall after remove enables and starts again:\n{calls}"
    );
    fs::write(scratch.join("systemctl.log"), "").expect("clear");
    dpkg_with_systemd(
        &scratch,
        &["--purge", "sightline-infra", "sightline-collector"],
    );
    let calls = systemctl_calls(&scratch);
    for package in ["sightline-infra", "sightline-collector"] {
        assert!(
            calls
                .lines()
                .any(|l| l == format!("stop {package}.service"))
                && calls
                    .lines()
                    .any(|l| l == format!("disable --quiet {package}.service")),
            "{package}:\n{calls}"
        );
    }
    assert!(!user_exists("sightline"));
    assert!(
        !collector_dropin.parent().expect("dir").exists(),
        "purge removed the drop-in and its folder"
    );
    drop(collector);
}

/// Every key the packaged configs set or show commented out is one its
/// product reads: the files are uncommented line by line and parsed with
/// the product's key list, which warns about any other key.
#[test]
fn every_key_in_the_packaged_configs_is_one_the_product_reads() {
    use agent_core::cli::all_keys;
    use agent_core::config::{Config, KeySpec};
    let products: [(&str, &[KeySpec]); 5] = [
        ("infra", all_keys::<sightline_infra::InfraConfig>()),
        ("db", all_keys::<sightline_db::DbConfig>()),
        ("log", all_keys::<sightline_log::LogConfig>()),
        ("url", all_keys::<sightline_url::UrlConfig>()),
        ("collector", sightline_collector::settings::COLLECTOR_KEYS),
    ];
    for (name, keys) in products {
        let path = workspace().join(format!("deploy/config/{name}.conf"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}.conf: {e}"));
        // `#key=value` lines are examples; prose comments have a space or
        // no `=` before any space.
        let mut examples = 0;
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest
                        .split_once('=')
                        .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ')) =>
                {
                    examples += 1;
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        let config = Config::from_text(&path, &uncommented, keys)
            .unwrap_or_else(|e| panic!("{name}.conf does not parse: {e}"));
        let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
        assert!(warnings.is_empty(), "{name}.conf: {warnings:?}");
        assert!(config.len() > 2, "{name}.conf sets keys");
        assert!(
            examples > 0 || name == "collector",
            "{name}.conf has examples"
        );
        if name != "collector" {
            assert!(
                text.lines().any(|l| l == "license="),
                "{name}.conf has an empty license line for the scripts' check"
            );
        }
    }
}
