//! A mount that stops answering does not delay the other metrics.
//!
//! A real FUSE filesystem (`hangfs`, in this crate) is mounted, reported,
//! then frozen with SIGSTOP: from then on every `statfs` on it blocks in the
//! kernel, as it does on an NFS mount whose server went away. Needs root
//! (to mount) and `/dev/fuse`; CI has both. Kept in its own test binary:
//! while the mount is frozen, anything on this machine that stats every
//! mount would hang too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sightline_e2e::{
    Agent, Collector, Scratch, agent_conf, binary, create_project, the_agent, wait_for,
};

/// The mounted filesystem; on drop, thawed, stopped and unmounted.
struct Mounted {
    server: Child,
    point: PathBuf,
}

impl Mounted {
    fn new(point: &Path) -> Mounted {
        std::fs::create_dir_all(point).expect("mount point");
        let mut server = Command::new(binary("hangfs"))
            .arg(point)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starts hangfs");
        let mut line = String::new();
        BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reads");
        assert_eq!(
            line.trim(),
            "ready",
            "hangfs could not mount (this test needs root and /dev/fuse)"
        );
        Mounted {
            server,
            point: point.to_path_buf(),
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.server.id()).expect("pid"))
            .expect("pid");
        rustix::process::kill_process(pid, signal).expect("signal hangfs");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.signal(rustix::process::Signal::CONT);
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::DETACH);
    }
}

fn latest(api: &sightline_e2e::Api, oid: i64, name: &str, mount: &str) -> Option<(i64, f64)> {
    let from = sightline_e2e::now_ms() - 3_600_000;
    let body = api.ok(&format!(
        "/api/v1/agents/{oid}/metrics?name={name}&from={from}"
    ));
    body["series"]
        .as_array()?
        .iter()
        .find(|s| s["labels"]["mount"] == mount)?["points"]
        .as_array()?
        .last()
        .and_then(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
}

#[test]
fn a_hung_mount_does_not_delay_the_other_metrics() {
    let scratch = Scratch::new("hung");
    let data = scratch.join("collector");
    let creds = create_project(&data, "hung");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let mounted = Mounted::new(&scratch.join("mnt"));
    let point = mounted.point.display().to_string();

    let agent_dir = scratch.join("agent");
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &agent_dir.join("data"),
        &[("fs.timeout", "1s")],
    );
    let agent = Agent::infra(&agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    let (_, used) = wait_for("the FUSE mount's use", Duration::from_secs(10), || {
        latest(&api, oid, "disk.used_pct", &point)
    });
    assert_eq!(used, 25.0, "hangfs reports a quarter used");

    mounted.signal(rustix::process::Signal::STOP);
    let frozen_at = sightline_e2e::now_ms();
    let watch = Instant::now();
    std::thread::sleep(Duration::from_secs(7));

    // CPU kept arriving once per interval (1 s) while the mount hung.
    let cpu: Vec<i64> = api
        .points(oid, "cpu.usage")
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t > frozen_at)
        .collect();
    assert!(cpu.len() >= 5, "{} CPU readings in 7 s: {cpu:?}", cpu.len());
    let widest = cpu.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(widest <= 2_000, "a gap of {widest} ms between readings");
    // The root filesystem kept being reported too.
    let (root_at, _) = latest(&api, oid, "disk.used_pct", "/").expect("root");
    assert!(root_at > frozen_at + 3_000);
    // The hung mount is reported as such, once.
    let (responsive_at, responsive) =
        latest(&api, oid, "disk.responsive", &point).expect("responsive");
    assert_eq!(responsive, 0.0);
    assert!(responsive_at > frozen_at);
    let events: Vec<serde_json::Value> = api
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "mount.unresponsive")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["attrs"]["mount"], point.as_str());
    assert!(watch.elapsed() < Duration::from_secs(15));

    // Thawed, it answers again.
    mounted.signal(rustix::process::Signal::CONT);
    wait_for("the mount to answer again", Duration::from_secs(10), || {
        latest(&api, oid, "disk.responsive", &point).filter(|(_, v)| *v == 1.0)
    });
    assert!(agent.log_text().contains("Mount does not answer statfs."));
    drop(agent);
}
