//! The server agent on Windows and its MSI, under wine: the cross-built
//! `sightline-infra.exe` answers `--version` and `test`, runs and reports
//! real numbers to a collector on loopback, stops on Ctrl-C; the MSI built
//! by `cargo xtask package --msi` carries the service, the properties and
//! the upgrade code (`msiinfo`), installs with `LICENSE` and `SERVER` (the
//! service then reports), upgrades to 99.0.0 keeping the license and a
//! hand-edited config, and uninstalls.
//!
//! Everything runs in a private `WINEPREFIX` in a scratch folder, made
//! once (`wineboot -i`, timed) and removed with the folder; its
//! `wineserver` is kept alive while the test runs (so wine's service
//! manager keeps the service running) and killed at the end.
//!
//! Wine 8 (Debian 12) lacks `bcryptprimitives.dll`, whose `ProcessPrng`
//! Rust's standard library calls for random numbers on Windows 10 and
//! later: the test compiles a stand-in with mingw (`ProcessPrng` over
//! `RtlGenRandom`) into the prefix's `system32`. The shipped exe and MSI
//! are untouched; every supported Windows has the real DLL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sightline_e2e::packages::{
    TEST_NEXT_VERSION, TEST_PACKAGES, TEST_PACKAGES_NEXT, VERSION, built, msi, workspace,
};
use sightline_e2e::{Api, Collector, Scratch, create_project, wait_for};

/// The cross-built agent.
const WINDOWS_EXE: &str = "target/x86_64-pc-windows-gnu/debug/sightline-infra.exe";

/// `ProcessPrng` for wine 8, which has no `bcryptprimitives.dll`.
const PROCESS_PRNG_C: &str = r#"
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
"#;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `msiinfo export MSI TABLE`.
fn table(msi: &Path, name: &str) -> String {
    let out = Command::new("msiinfo")
        .arg("export")
        .arg(msi)
        .arg(name)
        .output()
        .expect("runs msiinfo (apt-get install msitools)");
    assert!(
        out.status.success(),
        "msiinfo export {name}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The MSI holds what Windows Installer needs to install the agent as a
/// service with its license, and to find the old version on upgrades.
#[test]
fn the_msi_carries_the_service_the_properties_the_upgrade_code_and_the_files() {
    let msi = msi(TEST_PACKAGES, VERSION);
    let next = msi_path_next();
    let tables = Command::new("msiinfo")
        .arg("tables")
        .arg(&msi)
        .output()
        .expect("msiinfo tables");
    let tables = text(&tables);
    for name in [
        "ServiceInstall",
        "ServiceControl",
        "Registry",
        "Upgrade",
        "File",
    ] {
        assert!(
            tables.lines().any(|l| l == name),
            "no {name} table: {tables}"
        );
    }

    // C:\ProgramData\Sightline (config, data, log) and the registry key
    // holding the license are locked to SYSTEM and the Administrators:
    // a user could otherwise write infra.conf and send the license away.
    let locks = table(&msi, "LockPermissions");
    let registry = table(&msi, "Registry");
    let created = table(&msi, "CreateFolder");
    assert!(
        created.lines().any(|l| l.starts_with("DATADIR\t")),
        "the MSI creates the data folder: {created}"
    );
    let mut objects: Vec<(String, &str)> = vec![("DATADIR".to_string(), "CreateFolder")];
    for row in registry.lines().skip(3) {
        objects.push((
            row.split('\t').next().unwrap_or_default().to_string(),
            "Registry",
        ));
    }
    for (object, table_name) in &objects {
        let users: Vec<(&str, &str)> = locks
            .lines()
            .skip(3)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols.len() == 5 && cols[0] == object && cols[1] == *table_name)
                    .then(|| (cols[3], cols[4]))
            })
            .collect();
        let mut names: Vec<&str> = users.iter().map(|u| u.0).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["Administrators", "SYSTEM"],
            "only SYSTEM and Administrators on {object}: {locks}"
        );
        assert!(
            users.iter().all(|u| u.1 == "268435456"),
            "GENERIC_ALL: {locks}"
        );
    }

    let service = table(&msi, "ServiceInstall");
    let row = service
        .lines()
        .find(|l| l.starts_with("Service\t"))
        .unwrap_or_else(|| panic!("no service row: {service}"));
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!(cols[1], "sightline-infra", "service name: {row}");
    assert_eq!(cols[3], "16", "own process: {row}");
    assert_eq!(cols[4], "2", "automatic start: {row}");
    assert_eq!(
        cols[10], "service",
        "the command line holds no license: {row}"
    );
    // Stopped (and waited for) on install and removal, deleted on
    // removal; started on install without waiting.
    let control = table(&msi, "ServiceControl");
    assert!(
        control
            .lines()
            .any(|l| l == "StopService\tsightline-infra\t162\t\t1\tProgram"),
        "{control}"
    );
    assert!(
        control
            .lines()
            .any(|l| l == "StartService\tsightline-infra\t1\t\t0\tProgram"),
        "{control}"
    );

    let registry = table(&msi, "Registry");
    for (name, value) in [("license", "[LICENSE]"), ("server.host", "[SERVER]")] {
        assert!(
            registry.lines().any(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                c.len() > 4 && c[2] == r"SOFTWARE\Sightline\Infra" && c[3] == name && c[4] == value
            }),
            "registry value {name}={value}: {registry}"
        );
    }
    let property = table(&msi, "Property");
    let prop = |name: &str| {
        property
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("no property {name}: {property}"))
            .to_string()
    };
    assert_eq!(prop("ProductVersion"), VERSION);
    let secure = prop("SecureCustomProperties");
    assert!(secure.split(';').any(|p| p == "LICENSE"), "{secure}");
    assert!(secure.split(';').any(|p| p == "SERVER"), "{secure}");
    assert!(prop("MsiHiddenProperties").contains("LICENSE"));
    let upgrade = prop("UpgradeCode");
    assert_eq!(upgrade, "{8B1860C5-6217-8BCE-8A33-9F6C635762C0}");
    let upgrades = table(&msi, "Upgrade");
    assert!(upgrades.contains(&upgrade), "{upgrades}");
    let next_property = table(&next, "Property");
    assert!(
        next_property.contains(&format!("UpgradeCode\t{upgrade}")),
        "the next version has the same upgrade code"
    );
    let code = |p: &str| {
        p.lines()
            .find_map(|l| l.strip_prefix("ProductCode\t"))
            .map(str::to_string)
    };
    assert_ne!(
        code(&property),
        code(&next_property),
        "a new product code per version"
    );

    let files = table(&msi, "File");
    assert!(files.contains("sightline-infra.exe"), "{files}");
    assert!(files.contains("infra.conf.example"), "{files}");
    let dirs = table(&msi, "Directory");
    assert!(dirs.contains("ProgramFiles64Folder"), "{dirs}");
    assert!(
        dirs.contains("Sightline") && dirs.contains("Infra"),
        "{dirs}"
    );
}

fn msi_path_next() -> PathBuf {
    msi(TEST_PACKAGES_NEXT, TEST_NEXT_VERSION)
}

/// Built twice (a second apart: wixl writes the clock), the MSI is the
/// same bytes.
#[test]
fn building_the_msi_twice_gives_the_same_bytes() {
    msi(TEST_PACKAGES, VERSION);
    let scratch = Scratch::new("msi-again");
    let build = |out: &Path| {
        let started = Instant::now();
        let output = Command::new(env!("CARGO"))
            .args(["run", "--quiet", "-p", "xtask", "--", "package", "--msi"])
            .args(["--profile", "dev", "--out"])
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .current_dir(workspace())
            .output()
            .expect("runs cargo xtask package");
        assert!(
            output.status.success(),
            "xtask package --msi: {}",
            text(&output)
        );
        println!("msi built in {:?}", started.elapsed());
        std::fs::read(out.join(format!("sightline-infra-{VERSION}-x64.msi"))).expect("msi")
    };
    let first = build(&scratch.join("first"));
    std::thread::sleep(Duration::from_millis(1100));
    let second = build(&scratch.join("second"));
    assert_eq!(first.len(), second.len(), "same size");
    assert!(first == second, "the MSI differs between two builds");
    let info = Command::new("msiinfo")
        .arg("suminfo")
        .arg(
            scratch
                .join("first")
                .join(format!("sightline-infra-{VERSION}-x64.msi")),
        )
        .output()
        .expect("msiinfo suminfo");
    let info = text(&info);
    // 1700000000 is 2023-11-14 22:13:20 UTC (shown in local time).
    let created = info
        .lines()
        .find(|l| l.starts_with("Created:"))
        .unwrap_or_else(|| panic!("no creation time: {info}"));
    assert!(
        created.ends_with("2023"),
        "SOURCE_DATE_EPOCH, not the clock: {created}"
    );
}

/// A private wine prefix; its wineserver is killed when dropped.
struct Wine {
    prefix: PathBuf,
    log: PathBuf,
}

impl Wine {
    fn new(scratch: &Scratch) -> Wine {
        let wine = Wine {
            prefix: scratch.join("prefix"),
            log: scratch.join("wine.log"),
        };
        let started = Instant::now();
        std::fs::create_dir_all(&wine.prefix).expect("prefix folder");
        // Wine's processes may outlive the command: they get a file, never
        // a pipe this process would wait on for its end.
        let status = wine
            .command("wineboot")
            .arg("-i")
            .stdout(wine.log_file())
            .stderr(wine.log_file())
            .status()
            .expect("runs wineboot");
        assert!(
            status.success(),
            "wineboot -i failed: see {}",
            wine.log.display()
        );
        // Then a persistent wineserver, once wineboot's has ended (one
        // started before wineboot leaves two service managers fighting
        // over the service database): it keeps the service manager, and
        // the service, alive between two wine commands until dropped.
        let status = wine
            .command("wineserver")
            .arg("-w")
            .status()
            .expect("wineserver -w");
        assert!(status.success(), "wineserver -w");
        let status = wine
            .command("wineserver")
            .arg("-p")
            .stdout(wine.log_file())
            .stderr(wine.log_file())
            .status()
            .expect("wineserver -p");
        assert!(
            status.success(),
            "wineserver -p failed: see {}",
            wine.log.display()
        );
        // The first wine command starts the system processes (the service
        // manager among them), which inherit its output: a file, again.
        let status = wine
            .command("wineboot")
            .stdout(wine.log_file())
            .stderr(wine.log_file())
            .status()
            .expect("runs wineboot");
        assert!(
            status.success(),
            "wineboot failed: see {}",
            wine.log.display()
        );
        println!(
            "wineboot -i (and the wait for its wineserver) took {:?}",
            started.elapsed()
        );

        let source = scratch.join("process_prng.c");
        std::fs::write(&source, PROCESS_PRNG_C).expect("write c");
        let dll = wine
            .prefix
            .join("drive_c/windows/system32/bcryptprimitives.dll");
        let out = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-O2", "-s", "-o"])
            .arg(&dll)
            .arg(&source)
            .arg("-ladvapi32")
            .output()
            .expect("runs x86_64-w64-mingw32-gcc (apt-get install gcc-mingw-w64-x86-64)");
        assert!(
            out.status.success(),
            "building the ProcessPrng stand-in: {}",
            text(&out)
        );
        wine
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer prompts during wineboot.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY");
        command
    }

    fn wine(&self, args: &[&str]) -> Output {
        self.command("wine")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("runs wine")
    }

    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("wine log")
    }

    /// Spawns `wine args`, its output appended to the wine log.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command("wine")
            .args(args)
            .stdin(Stdio::null())
            .stdout(self.log_file())
            .stderr(self.log_file())
            .spawn()
            .expect("spawns wine")
    }

    /// `C:\<path>` in the prefix, as a Linux path.
    fn c(&self, path: &str) -> PathBuf {
        self.prefix.join("drive_c").join(path.replace('\\', "/"))
    }

    /// `reg query KEY`: the values shown.
    fn reg_query(&self, key: &str) -> String {
        text(&self.wine(&["reg", "query", key]))
    }

    fn service_state(&self) -> String {
        let out = text(&self.wine(&["sc", "query", "sightline-infra"]));
        out.lines()
            .find(|l| l.contains("STATE"))
            .map_or_else(|| out.clone(), |l| l.trim().to_string())
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = self.command("wineserver").arg("-k").status();
        let _ = self.command("wineserver").arg("-w").status();
    }
}

/// The newest value of `name` (with `label=value`, when given) for `oid`.
fn latest(api: &Api, oid: i64, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let body = api.ok(&format!(
        "/api/v1/agents/{oid}/metrics?name={name}&from={}",
        sightline_e2e::now_ms() - 3_600_000
    ));
    body["series"]
        .as_array()?
        .iter()
        .filter(|s| match label {
            Some((k, v)) => s["labels"][k] == v,
            None => s["labels"].as_object().is_none_or(|l| l.is_empty()),
        })
        .filter_map(|s| s["points"].as_array()?.last()?[1].as_f64())
        .next()
}

fn agent_named(api: &Api, oname: &str) -> Option<Value> {
    api.agents().into_iter().find(|a| a["oname"] == oname)
}

fn mem_total() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    kib * 1024.0
}

/// The exe runs under wine: `--version`, `test` against a collector on
/// loopback, `run` reporting real numbers, a clean stop on Ctrl-C; then
/// the MSI installs it as a service that reports, upgrades keeping the
/// license and the config, and uninstalls.
#[test]
fn the_agent_runs_under_wine_and_the_msi_installs_upgrades_and_removes_it() {
    let exe = built(WINDOWS_EXE, "msi");
    let msi_now = msi(TEST_PACKAGES, VERSION);
    let msi_next = msi_path_next();
    let scratch = Scratch::new("windows");
    let data = scratch.join("collector");
    let run_creds = create_project(&data, "wine-run");
    let msi_creds = create_project(&data, "wine-msi");
    let collector = Collector::start(&data);
    let wine = Wine::new(&scratch);
    let exe_arg = exe.to_str().expect("utf-8 path");

    // --version
    let out = wine.wine(&[exe_arg, "--version"]);
    assert!(out.status.success(), "--version: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sightline-infra {VERSION}")
    );

    // test, against the collector on loopback.
    std::fs::write(
        wine.c("infra.conf"),
        format!(
            "license={}\r\nserver.host={}\r\ninterval=1s\r\noname=wine-run\r\ndata.dir=C:\\sl\\data\r\n",
            run_creds.license, collector.grpc
        ),
    )
    .expect("conf");
    let out = wine.wine(&[exe_arg, "test", "--conf", r"C:\infra.conf"]);
    let report = text(&out);
    assert!(out.status.success(), "test: {report}");
    for check in ["config", "license", "tcp", "hello", "clock"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("OK") && l.split_whitespace().nth(1) == Some(check)),
            "`test` passes {check}: {report}"
        );
    }
    assert!(
        !report.contains(&run_creds.license),
        "the license is masked: {report}"
    );

    // run: real numbers arrive.
    let api = collector.api(&run_creds.token);
    let mut agent = wine.spawn(&[exe_arg, "run", "--conf", r"C:\infra.conf"]);
    let registered = wait_for("the agent under wine", Duration::from_secs(30), || {
        agent_named(&api, "wine-run")
    });
    let oid = registered["oid"].as_i64().expect("oid");
    assert!(
        registered["os"]
            .as_str()
            .is_some_and(|os| os.starts_with("windows ")),
        "{registered}"
    );
    let usage = wait_for("cpu.usage per core", Duration::from_secs(20), || {
        latest(&api, oid, "cpu.usage", Some(("cpu", "0")))
    });
    let total_usage = latest(&api, oid, "cpu.usage", None).expect("total cpu.usage");
    for value in [usage, total_usage] {
        assert!((0.0..=100.0).contains(&value), "cpu.usage {value}");
    }
    let cores = latest(&api, oid, "cpu.cores", None).expect("cpu.cores");
    assert_eq!(
        cores as usize,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let memory = latest(&api, oid, "mem.total_bytes", None).expect("mem.total_bytes");
    let host = mem_total();
    assert!(
        (memory - host).abs() < 1024.0 * 1024.0,
        "mem.total_bytes {memory} is the host's {host} (wine reports /proc/meminfo)"
    );
    let used = latest(&api, oid, "mem.used_pct", None).expect("mem.used_pct");
    assert!(used > 0.0 && used < 100.0, "mem.used_pct {used}");
    let c_size = latest(&api, oid, "disk.total_bytes", Some(("mount", "C:"))).expect("C: size");
    let c_used = latest(&api, oid, "disk.used_pct", Some(("mount", "C:"))).expect("C: use");
    assert!(
        c_size > 0.0 && (0.0..=100.0).contains(&c_used),
        "C: {c_size} bytes, {c_used}%"
    );
    let processes = wait_for("a process snapshot", Duration::from_secs(10), || {
        let body = api.ok(&format!("/api/v1/agents/{oid}/processes"));
        let list = body["snapshot"]["processes"].as_array()?.clone();
        (!list.is_empty()).then_some(list)
    });
    let me = processes
        .iter()
        .find(|p| p["name"] == "sightline-infra.exe")
        .unwrap_or_else(|| panic!("the agent among the processes: {processes:?}"));
    assert!(me["pid"].as_u64().is_some_and(|p| p > 0), "{me}");
    assert!(me["rss_bytes"].as_f64().is_some_and(|r| r > 1e6), "{me}");
    assert!(
        me["cmdline"]
            .as_str()
            .is_some_and(|c| c.ends_with("sightline-infra.exe")),
        "{me}"
    );
    let names: Vec<String> = api.ok(&format!("/api/v1/agents/{oid}/metrics"))["names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    println!("metrics under wine: {}", names.join(" "));

    // Ctrl-C (wine turns SIGINT into the console's Ctrl-C) stops it.
    let stop = Instant::now();
    let pid = rustix::process::Pid::from_raw(i32::try_from(agent.id()).expect("pid")).expect("pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    let status = sightline_e2e::wait_exit(&mut agent, Duration::from_secs(10));
    println!("stopped by Ctrl-C in {:?}", stop.elapsed());
    assert!(
        status.is_some_and(|s| s.success()),
        "exit on Ctrl-C: {status:?}"
    );
    let log = std::fs::read_to_string(&wine.log).unwrap_or_default();
    assert!(log.contains("Agent stopped."), "{log}");

    // The MSI: files, registry, service.
    let api = collector.api(&msi_creds.token);
    let server = collector.grpc.to_string();
    let started = Instant::now();
    let msi_arg = format!("Z:{}", msi_now.display()).replace('/', "\\");
    let out = wine.wine(&[
        "msiexec",
        "/i",
        &msi_arg,
        "/qn",
        &format!("LICENSE={}", msi_creds.license),
        &format!("SERVER={server}"),
    ]);
    assert!(out.status.success(), "msiexec /i: {}", text(&out));
    println!("msiexec /i took {:?}", started.elapsed());
    let installed = wine.c(r"Program Files\Sightline\Infra\sightline-infra.exe");
    assert!(installed.exists(), "{} installed", installed.display());
    assert!(
        wine.c(r"Program Files\Sightline\Infra\infra.conf.example")
            .exists()
    );
    let key = r"HKLM\SOFTWARE\Sightline\Infra";
    let values = wine.reg_query(key);
    assert!(
        values.contains(&msi_creds.license),
        "license in the registry: {values}"
    );
    assert!(values.contains(&server), "server in the registry: {values}");

    let reported = wait_for("the service to report", Duration::from_secs(30), || {
        api.agents().into_iter().next()
    });
    println!("service reported {:?} after msiexec", started.elapsed());
    assert_eq!(reported["version"], VERSION, "{reported}");
    assert!(
        wine.service_state().contains("RUNNING"),
        "{}",
        wine.service_state()
    );

    // Copy the example as README says, and edit it: the upgrade must keep
    // it, and the new version reads it (its own name) with the license and
    // the collector (SERVER) the registry kept: the example sets neither.
    let conf = wine.c(r"ProgramData\Sightline\infra.conf");
    assert!(
        conf.parent().expect("dir").is_dir(),
        "the MSI creates C:\\ProgramData\\Sightline"
    );
    let example =
        std::fs::read_to_string(wine.c(r"Program Files\Sightline\Infra\infra.conf.example"))
            .expect("the example");
    let edit = format!("{example}# edited by hand\r\noname=edited-by-hand\r\ninterval=1s\r\n");
    std::fs::write(&conf, &edit).expect("edit conf");
    let started = Instant::now();
    let next_arg = format!("Z:{}", msi_next.display()).replace('/', "\\");
    let out = wine.wine(&["msiexec", "/i", &next_arg, "/qn"]);
    assert!(out.status.success(), "msiexec /i (upgrade): {}", text(&out));
    println!("upgrade took {:?}", started.elapsed());
    assert_eq!(std::fs::read_to_string(&conf).expect("conf kept"), edit);
    let values = wine.reg_query(key);
    assert!(
        values.contains(&msi_creds.license),
        "license kept on upgrade: {values}"
    );
    let upgraded = wait_for(
        "the upgraded service to report",
        Duration::from_secs(30),
        || agent_named(&api, "edited-by-hand"),
    );
    // (The 99.0.0 package carries the same exe: only the products'
    // versions differ, checked below.)
    assert_eq!(upgraded["status"], "up", "{upgraded}");
    let products = text(&wine.wine(&[
        "reg",
        "query",
        r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall",
        "/s",
    ]));
    let versions: Vec<&str> = products
        .lines()
        .filter(|l| l.contains("DisplayVersion"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert!(
        versions.contains(&TEST_NEXT_VERSION) && !versions.contains(&VERSION),
        "only the new version is installed: {versions:?}"
    );

    // A stop request ends the service within a second or so.
    let stop = Instant::now();
    let out = wine.wine(&["sc", "stop", "sightline-infra"]);
    assert!(out.status.success(), "sc stop: {}", text(&out));
    wait_for("the service to stop", Duration::from_secs(5), || {
        wine.service_state().contains("STOPPED").then_some(())
    });
    let stopped = stop.elapsed();
    println!("service stopped in {stopped:?}");
    // README: within a second (plus the time `sc` and the polling take).
    assert!(
        stopped < Duration::from_millis(1500),
        "service stopped in {stopped:?}"
    );

    // Uninstall: the program goes, the hand-edited config stays.
    let out = wine.wine(&["msiexec", "/x", &next_arg, "/qn"]);
    assert!(out.status.success(), "msiexec /x: {}", text(&out));
    assert!(!installed.exists(), "program files removed");
    let values = wine.reg_query(key);
    assert!(
        !values.contains(&msi_creds.license),
        "license removed: {values}"
    );
    assert!(conf.exists(), "the config file is the user's: kept");
    // `sc query` of a deleted service fails (wine's prints nothing), and
    // its key under Services is gone.
    let query = wine.wine(&["sc", "query", "sightline-infra"]);
    assert!(
        !query.status.success() && !text(&query).contains("STATE"),
        "service deleted: {:?} {}",
        query.status,
        text(&query)
    );
    let key = text(&wine.wine(&[
        "reg",
        "query",
        r"HKLM\SYSTEM\CurrentControlSet\Services\sightline-infra",
    ]));
    assert!(!key.contains("ImagePath"), "service key deleted: {key}");
}
