//! The server agent's numbers agree with the kernel, `df` and the real
//! node_exporter, each read at the same moment on this machine.
//!
//! These drive the collectors as a library, so every reading can be placed
//! within milliseconds of the reference it is compared with. A lock runs
//! them one at a time: a busy loop or a transfer in one would skew another.
//! The node_exporter test needs Debian's `prometheus-node-exporter`, which
//! `cargo xtask test` installs.
//!
//! Tolerances, and why:
//! - memory total: exact; available: 1 % (the kernel moves pages between reads);
//! - root filesystem use against `df`: 0.5 point (files change between reads);
//! - CPU of a busy loop pinned to one core: that core ≥ 90 %, the process 90–102 %;
//! - disk and network counters over a known transfer: 2 % of the kernel's
//!   own delta, and at least the bytes transferred;
//! - node_exporter: totals exact, rates and gauges within the stated bounds.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent_core::Sample;
use sightline_infra::linux::ProcFs;
use sightline_infra::linux::sensors::cpu::CpuSensor;
use sightline_infra::linux::sensors::disks::DiskSensor;
use sightline_infra::linux::sensors::filesystems::{FsOptions, FsSensor, real_statfs};
use sightline_infra::linux::sensors::memory::MemorySensor;
use sightline_infra::linux::sensors::network::{NetFilter, NetSensor, TcpOptions};
use sightline_infra::linux::sensors::processes::ProcessSensor;
use sightline_infra::sensor::{Reading, Sensor};
use sightline_infra::settings::{DISK_EXCLUDE, FS_EXCLUDE_MOUNTS, FS_EXCLUDE_TYPES};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn proc() -> ProcFs {
    ProcFs::new("/proc")
}

fn read(sensor: &mut dyn Sensor) -> Vec<Sample> {
    let mut reading = Reading::default();
    sensor.read(&mut reading).expect("collects");
    reading.samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

fn list(csv: &str) -> Vec<String> {
    csv.split(',').map(String::from).collect()
}

fn fs_sensor() -> FsSensor {
    FsSensor::new(
        proc(),
        FsOptions {
            host_root: "/".into(),
            exclude_types: list(FS_EXCLUDE_TYPES),
            exclude_mounts: list(FS_EXCLUDE_MOUNTS),
            timeout: Duration::from_secs(2),
            statfs: real_statfs(),
        },
    )
}

fn net_sensor(include: &[&str]) -> NetSensor {
    NetSensor::new(
        proc(),
        "/sys".into(),
        NetFilter {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: vec![],
            virtual_too: false,
        },
        // By state every reading, so each reading can be compared.
        Some(TcpOptions {
            states_every: Some(Duration::from_millis(1)),
        }),
    )
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("key present")
}

/// The first field of `/proc/<pid>/schedstat`: nanoseconds spent on a CPU.
fn schedstat_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .expect("schedstat")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field")
}

/// Kills its children when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn cpu_usage_agrees_with_a_busy_loop_on_one_core() {
    let _one = serial();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let core = cores - 1;
    let busy = Children(vec![
        Command::new("taskset")
            .args(["-c", &core.to_string(), "yes"])
            .stdout(Stdio::null())
            .spawn()
            .expect("taskset and yes"),
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let pid = busy.0[0].id();
    let mut cpu = CpuSensor::new(proc());
    let mut processes = ProcessSensor::new(proc(), Path::new("/etc"), 256);
    read(&mut cpu);
    // What the scheduler itself counts for the loop (`schedstat`, in
    // nanoseconds on a CPU: not the tick-based `stat` the agent reads),
    // over the same window as the agent's two readings. On a loaded
    // machine the loop gets less than its whole core; the agent must
    // report what it got.
    let (ran_before, at_before) = (schedstat_ns(pid), Instant::now());
    processes.read(&mut Reading::default()).expect("processes");
    std::thread::sleep(Duration::from_secs(2));
    let samples = read(&mut cpu);
    let mut reading = Reading::default();
    processes.read(&mut reading).expect("processes");
    let (ran_after, at_after) = (schedstat_ns(pid), Instant::now());
    let scheduled_pct =
        (ran_after - ran_before) as f64 / 1e9 / at_after.duration_since(at_before).as_secs_f64()
            * 100.0;

    let core_usage =
        value(&samples, "cpu.usage", &[("cpu", &core.to_string())]).expect("per-core usage");
    assert!(core_usage >= 90.0, "core {core} busy at {core_usage:.1}%");
    let total = value(&samples, "cpu.usage", &[]).expect("total usage");
    assert!(
        total >= 90.0 / cores as f64,
        "total {total:.1}% on {cores} cores"
    );
    let yes = reading
        .processes
        .expect("table")
        .processes
        .into_iter()
        .find(|p| p.pid == pid)
        .expect("the busy loop is listed");
    assert!(
        (yes.cpu_pct - scheduled_pct).abs() <= 8.0 && yes.cpu_pct <= 102.0,
        "the busy loop at {:.1}% of a core; the scheduler counted {scheduled_pct:.1}%",
        yes.cpu_pct
    );
    assert_eq!(value(&samples, "cpu.cores", &[]), Some(cores as f64));
}

#[test]
fn memory_agrees_with_proc_meminfo() {
    let _one = serial();
    let samples = read(&mut MemorySensor::new(proc()));
    let total = meminfo_kib("MemTotal") * 1024;
    let available = meminfo_kib("MemAvailable") * 1024;
    assert_eq!(value(&samples, "mem.total_bytes", &[]), Some(total as f64));
    let ours = value(&samples, "mem.available_bytes", &[]).expect("available");
    assert!(
        (ours - available as f64).abs() <= available as f64 * 0.01,
        "{ours} vs {available}"
    );
    let used_pct = (total - available) as f64 * 100.0 / total as f64;
    let ours = value(&samples, "mem.used_pct", &[]).expect("used %");
    assert!((ours - used_pct).abs() <= 0.5, "{ours} vs {used_pct}");
}

#[test]
fn root_filesystem_use_agrees_with_df() {
    let _one = serial();
    let samples = read(&mut fs_sensor());
    let out = Command::new("df")
        .args(["-P", "-B1", "/"])
        .output()
        .expect("df runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let fields: Vec<u64> = text
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .skip(1)
        .take(3)
        .map(|f| f.parse().expect("number"))
        .collect();
    let (size, used, avail) = (fields[0], fields[1], fields[2]);
    let df_pct = used as f64 * 100.0 / (used + avail) as f64;
    let labels: Vec<(&str, &str)> = samples
        .iter()
        .find(|s| {
            s.name == "disk.used_pct" && s.labels.iter().any(|(k, v)| k == "mount" && v == "/")
        })
        .map(|s| s.labels.iter().map(|(k, v)| (&**k, v.as_str())).collect())
        .expect("the root filesystem is reported");
    let ours = value(&samples, "disk.used_pct", &labels).expect("used %");
    assert!(
        (ours - df_pct).abs() <= 0.5,
        "ours {ours:.3}% vs df {df_pct:.3}%"
    );
    assert_eq!(
        value(&samples, "disk.total_bytes", &labels),
        Some(size as f64),
        "size as df"
    );
}

/// Bytes written per device, from the kernel's own counters.
fn raw_disk_written() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/diskstats")
        .expect("diskstats")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(2)?.to_string(), f.get(9)?.parse::<u64>().ok()? * 512))
        })
        .collect()
}

fn raw_net_rx(iface: &str) -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .expect("net/dev")
        .lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == iface).then(|| rest.split_whitespace().next()?.parse().ok())?
        })
        .expect("iface present")
}

/// Sends `bytes` over loopback TCP and waits until they are all received.
fn loopback_transfer(bytes: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < bytes {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0);
            total += n;
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 1 << 16];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    reader.join().expect("reader");
}

/// Writes `bytes` to a file on the root filesystem and syncs it.
fn disk_write(bytes: usize) {
    let path = std::env::temp_dir().join(format!("sl-agreement-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("create");
    let chunk = vec![1u8; 1 << 20];
    for _ in 0..bytes / chunk.len() {
        f.write_all(&chunk).expect("write");
    }
    f.sync_all().expect("sync");
    drop(f);
    std::fs::remove_file(&path).expect("remove");
}

fn root_device(samples: &[Sample]) -> String {
    // The busiest writer in this window is the root disk: we just wrote to it.
    samples
        .iter()
        .filter(|s| s.name == "diskio.write_bytes_per_sec")
        .max_by(|a, b| a.value.total_cmp(&b.value))
        .and_then(|s| {
            s.labels
                .iter()
                .find(|(k, _)| k == "device")
                .map(|(_, v)| v.clone())
        })
        .expect("a disk wrote")
}

#[test]
fn disk_and_network_counters_agree_over_a_known_transfer() {
    let _one = serial();
    const DISK_BYTES: usize = 32 << 20;
    const NET_BYTES: usize = 16 << 20;
    let mut disks = DiskSensor::new(proc(), "/sys".into(), list(DISK_EXCLUDE));
    let mut net = net_sensor(&["lo"]);
    read(&mut disks);
    read(&mut net);
    let t0 = Instant::now();
    let lo_before = raw_net_rx("lo");
    let disk_before = raw_disk_written();

    disk_write(DISK_BYTES);
    loopback_transfer(NET_BYTES);
    std::thread::sleep(Duration::from_millis(200));

    let disk_samples = read(&mut disks);
    let net_samples = read(&mut net);
    let secs = t0.elapsed().as_secs_f64();
    let lo_delta = (raw_net_rx("lo") - lo_before) as f64;

    let device = root_device(&disk_samples);
    let ours = value(
        &disk_samples,
        "diskio.write_bytes_per_sec",
        &[("device", &device)],
    )
    .expect("rate")
        * secs;
    let kernel = (raw_disk_written()[&device] - disk_before[&device]) as f64;
    assert!(
        (ours - kernel).abs() <= kernel * 0.02,
        "{device}: ours {ours:.0} B vs kernel {kernel:.0} B"
    );
    assert!(
        ours >= DISK_BYTES as f64 * 0.98,
        "{device}: {ours:.0} B written, {DISK_BYTES} expected"
    );

    let ours =
        value(&net_samples, "net.rx_bytes_per_sec", &[("iface", "lo")]).expect("lo rate") * secs;
    assert!(
        (ours - lo_delta).abs() <= lo_delta * 0.02,
        "lo: ours {ours:.0} B vs kernel {lo_delta:.0} B"
    );
    assert!(
        ours >= NET_BYTES as f64 * 0.98,
        "lo: {ours:.0} B received, {NET_BYTES} expected"
    );
    assert!(value(&net_samples, "net.rx_bytes_per_sec", &[("iface", "lo")]).is_some());
}

/// node_exporter's text format, as `name{labels}` → value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let body = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("node_exporter answers")
        .body_mut()
        .read_to_string()
        .expect("text");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn cpu_busy_pct(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> f64 {
    let delta = |mode: &str| -> f64 {
        b.iter()
            .filter(|(k, _)| {
                k.starts_with("node_cpu_seconds_total{") && k.contains(&format!("mode=\"{mode}\""))
            })
            .map(|(k, v)| v - a.get(k).copied().unwrap_or(*v))
            .sum()
    };
    let modes = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let total: f64 = modes.iter().map(|m| delta(m)).sum();
    (total - delta("idle") - delta("iowait") - delta("steal")) * 100.0 / total
}

/// Two threads handing a token back and forth: two context switches per
/// round, tens of thousands a second.
fn context_switch_storm(length: Duration) {
    let (to_echo, echo_rx) = std::sync::mpsc::sync_channel::<bool>(0);
    let (to_main, main_rx) = std::sync::mpsc::sync_channel::<()>(0);
    let echo = std::thread::spawn(move || {
        while let Ok(true) = echo_rx.recv() {
            if to_main.send(()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    while started.elapsed() < length {
        to_echo.send(true).expect("echo alive");
        main_rx.recv().expect("echo answers");
    }
    to_echo.send(false).expect("echo alive");
    echo.join().expect("echo");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Both read the same host in the same second; every figure is compared
/// within the tolerance its comment gives.
#[test]
fn node_exporter_agrees_in_the_same_second() {
    let _one = serial();
    let binary = "/usr/bin/prometheus-node-exporter";
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: `cargo xtask test` installs it (apt-get install prometheus-node-exporter)"
    );
    let port = free_port();
    let _exporter = Children(vec![
        Command::new(binary)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Loopback too, so a known transfer can be compared.
            .arg("--collector.netdev.device-exclude=^$")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts node_exporter"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .is_err()
    {
        assert!(Instant::now() < deadline, "node_exporter did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut cpu = CpuSensor::new(proc());
    let mut memory = MemorySensor::new(proc());
    let mut disks = DiskSensor::new(proc(), "/sys".into(), list(DISK_EXCLUDE));
    let mut net = net_sensor(&["lo"]);
    let a = scrape(port);
    let t0 = Instant::now();
    read(&mut cpu);
    read(&mut disks);
    read(&mut net);
    disk_write(16 << 20);
    loopback_transfer(8 << 20);
    // Enough context switches that the scrapes' own count for little.
    context_switch_storm(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(300));
    let b = scrape(port);
    let secs = t0.elapsed().as_secs_f64();
    let cpu_samples = read(&mut cpu);
    let mem_samples = read(&mut memory);
    let disk_samples = read(&mut disks);
    let net_samples = read(&mut net);
    let fs_samples = read(&mut fs_sensor());

    // Totals: exact.
    assert_eq!(
        value(&mem_samples, "mem.total_bytes", &[]),
        Some(b["node_memory_MemTotal_bytes"])
    );
    let cores = b
        .keys()
        .filter(|k| k.starts_with("node_cpu_seconds_total{") && k.contains("mode=\"idle\""))
        .count();
    assert_eq!(value(&cpu_samples, "cpu.cores", &[]), Some(cores as f64));
    let root_size = b
        .iter()
        .find(|(k, _)| {
            k.starts_with("node_filesystem_size_bytes{") && k.contains("mountpoint=\"/\"")
        })
        .map(|(_, v)| *v)
        .expect("root size");
    let ours_size = fs_samples
        .iter()
        .find(|s| {
            s.name == "disk.total_bytes" && s.labels.iter().any(|(k, v)| k == "mount" && v == "/")
        })
        .map(|s| s.value);
    assert_eq!(ours_size, Some(root_size));

    // Memory available: within 1 %.
    let theirs = b["node_memory_MemAvailable_bytes"];
    let ours = value(&mem_samples, "mem.available_bytes", &[]).expect("available");
    assert!(
        (ours - theirs).abs() <= theirs * 0.01,
        "available: {ours} vs {theirs}"
    );
    // Load: the kernel updates it every 5 s; within 0.1.
    let ours = value(&cpu_samples, "load.1m", &[]).expect("load");
    assert!(
        (ours - b["node_load1"]).abs() <= 0.1,
        "load: {ours} vs {}",
        b["node_load1"]
    );
    // Root filesystem available: within 0.1 % (files change).
    let root_avail = b
        .iter()
        .find(|(k, _)| {
            k.starts_with("node_filesystem_avail_bytes{") && k.contains("mountpoint=\"/\"")
        })
        .map(|(_, v)| *v)
        .expect("root avail");
    let ours = fs_samples
        .iter()
        .find(|s| {
            s.name == "disk.avail_bytes" && s.labels.iter().any(|(k, v)| k == "mount" && v == "/")
        })
        .map(|s| s.value)
        .expect("ours");
    assert!(
        (ours - root_avail).abs() <= root_avail * 0.001,
        "avail: {ours} vs {root_avail}"
    );

    // CPU over the window: within 5 points.
    let theirs = cpu_busy_pct(&a, &b);
    let ours = value(&cpu_samples, "cpu.usage", &[]).expect("usage");
    assert!(
        (ours - theirs).abs() <= 5.0,
        "cpu: {ours:.1}% vs {theirs:.1}%"
    );
    // Context switches per second: within 15 %.
    let theirs = (b["node_context_switches_total"] - a["node_context_switches_total"]) / secs;
    let ours = value(&cpu_samples, "cpu.context_switches_per_sec", &[]).expect("ctxt");
    assert!(
        (ours - theirs).abs() <= theirs * 0.15,
        "context switches: {ours:.0}/s vs {theirs:.0}/s"
    );

    // Disk writes and loopback traffic over the same window: within 10 %.
    let device = root_device(&disk_samples);
    let key = format!("node_disk_written_bytes_total{{device=\"{device}\"}}");
    let theirs = (b[&key] - a[&key]) / secs;
    let ours = value(
        &disk_samples,
        "diskio.write_bytes_per_sec",
        &[("device", &device)],
    )
    .expect("disk");
    assert!(
        (ours - theirs).abs() <= theirs * 0.10,
        "{device} writes: {ours:.0} B/s vs {theirs:.0} B/s"
    );
    let key = "node_network_receive_bytes_total{device=\"lo\"}";
    let theirs = (b[key] - a[key]) / secs;
    let ours = value(&net_samples, "net.rx_bytes_per_sec", &[("iface", "lo")]).expect("lo");
    assert!(
        (ours - theirs).abs() <= theirs * 0.10,
        "lo: {ours:.0} B/s vs {theirs:.0} B/s"
    );

    // Established TCP connections: both read the kernel's CurrEstab
    // (ESTABLISHED and CLOSE-WAIT); within 2 (connections come and go).
    let ours = value(&net_samples, "net.tcp.established", &[]).expect("established");
    let theirs = b["node_netstat_Tcp_CurrEstab"];
    assert!(
        (ours - theirs).abs() <= 2.0,
        "established: {ours} vs {theirs}"
    );
    // The by-state count (netlink) agrees with the kernel's own counter.
    let established = value(
        &net_samples,
        "net.tcp.connections",
        &[("state", "established")],
    )
    .expect("est");
    let close_wait = value(
        &net_samples,
        "net.tcp.connections",
        &[("state", "close-wait")],
    )
    .expect("cw");
    assert!(
        (established + close_wait - ours).abs() <= 2.0,
        "by state: {} vs {ours}",
        established + close_wait
    );
}
