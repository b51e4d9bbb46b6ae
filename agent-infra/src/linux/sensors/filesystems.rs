//! Use of every real mounted filesystem, computed as `df` computes it.
//!
//! A hung network mount must never stall the agent. `statfs` on a network
//! or FUSE filesystem runs on a thread of its own, and the sensor waits
//! for it only briefly ([`FIRST_WAIT`]) in the cycle that started it; an
//! answer that comes later is used in the next cycle. A probe still
//! unanswered after `fs.timeout` makes the mount unresponsive
//! (`disk.responsive` 0 and one `mount.unresponsive` event), and no second
//! probe is started until it returns, so stuck threads never pile up and a
//! hung mount costs the other metrics nothing. Local filesystems are probed
//! inline; the sensor's own deadline covers them.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use agent_core::Sample;
use agent_core::domain::{Event, Severity};

use crate::linux::mounts::{FsStat, Mount, is_remote, parse_mountinfo, select, statvfs};
use crate::linux::{KeptFile, ProcFs};
use crate::sensor::{ReadError, Reading, Sensor};

/// How `statfs` is done: the real call, or a stand-in in tests.
pub type StatFs = Arc<dyn Fn(&Path) -> io::Result<FsStat> + Send + Sync>;

/// The real `statvfs`.
pub fn real_statfs() -> StatFs {
    Arc::new(|path: &Path| statvfs(path))
}

/// Which filesystems and how.
#[derive(Clone)]
pub struct FsOptions {
    /// Host root, prefixed to mount points (`/host/root` in a container).
    pub host_root: PathBuf,
    /// Types skipped.
    pub exclude_types: Vec<String>,
    /// Mount points skipped.
    pub exclude_mounts: Vec<String>,
    /// Bound on `statfs` of a remote filesystem.
    pub timeout: Duration,
    /// The `statfs` to use.
    pub statfs: StatFs,
}

impl std::fmt::Debug for FsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsOptions")
            .field("host_root", &self.host_root)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How long a cycle waits for the probes it started.
pub const FIRST_WAIT: Duration = Duration::from_millis(500);

/// One remote mount's `statfs` in flight.
#[derive(Debug)]
struct InFlight {
    started: Instant,
    answer: mpsc::Receiver<io::Result<FsStat>>,
}

#[derive(Debug, Default)]
struct Probe {
    in_flight: Option<InFlight>,
    /// Reported unresponsive (the event was raised).
    unresponsive: bool,
}

/// What is known of a mount in this cycle.
enum Answer {
    Stat(io::Result<FsStat>),
    /// Asked, no answer yet, not yet past the timeout.
    Pending,
    /// No answer for longer than the timeout.
    Unresponsive,
}

/// Reads the mount table and `statfs` of each real filesystem.
#[derive(Debug)]
pub struct FsSensor {
    mountinfo: KeptFile,
    options: FsOptions,
    /// The selected mounts, kept until the kernel says the table changed.
    mounts: Option<Vec<Mount>>,
    probes: HashMap<String, Probe>,
}

impl FsSensor {
    /// A sensor reading `proc`'s mount table.
    pub fn new(proc: ProcFs, options: FsOptions) -> FsSensor {
        // pid 1's view is the host's, even when systemd gave the agent a
        // private mount namespace.
        let host_view = KeptFile::new(&proc, "1/mountinfo");
        let mountinfo = if std::fs::File::open(host_view.path()).is_ok() {
            host_view
        } else {
            KeptFile::new(&proc, "self/mountinfo")
        };
        FsSensor {
            mountinfo,
            options,
            mounts: None,
            probes: HashMap::new(),
        }
    }

    /// The mounts to report. The kernel flags `mountinfo` (POLLPRI) on every
    /// mount and unmount, so the table, expensive to generate on a host with
    /// many mounts, is read only then.
    fn mounts(&mut self) -> Result<Vec<Mount>, ReadError> {
        if let Some(mounts) = &self.mounts
            && !self.mountinfo.changed()
        {
            return Ok(mounts.clone());
        }
        let table = parse_mountinfo(&self.mountinfo.read()?)?;
        let chosen: Vec<Mount> = select(
            &table,
            &self.options.exclude_types,
            &self.options.exclude_mounts,
        )
        .into_iter()
        .cloned()
        .collect();
        self.mounts = Some(chosen.clone());
        Ok(chosen)
    }

    /// Starts a `statfs` of a remote mount on a thread of its own, unless
    /// one is already in flight. Returns whether it started one.
    fn start_probe(&mut self, mount: &Mount, path: PathBuf) -> bool {
        let probe = self.probes.entry(mount.mount_point.clone()).or_default();
        if probe.in_flight.is_some() {
            return false;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let statfs = self.options.statfs.clone();
        let spawned = std::thread::Builder::new()
            .name("sightline-statfs".into())
            .spawn(move || {
                let _ = tx.send(statfs(&path));
            });
        match spawned {
            Ok(_) => {
                probe.in_flight = Some(InFlight {
                    started: Instant::now(),
                    answer: rx,
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "Cannot start a statfs thread.");
                false
            }
        }
    }

    /// Collects the answer of a remote mount's probe, waiting until `until`.
    fn answer(&mut self, mount_point: &str, until: Option<Instant>) -> Answer {
        let timeout = self.options.timeout;
        let Some(probe) = self.probes.get_mut(mount_point) else {
            return Answer::Pending;
        };
        let Some(flight) = &probe.in_flight else {
            return Answer::Pending;
        };
        let received = match until {
            Some(t) => flight
                .answer
                .recv_timeout(t.saturating_duration_since(Instant::now())),
            None => flight.answer.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
            }),
        };
        match received {
            Ok(result) => {
                probe.in_flight = None;
                Answer::Stat(result)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                probe.in_flight = None;
                Answer::Stat(Err(io::Error::other("the statfs thread died")))
            }
            Err(mpsc::RecvTimeoutError::Timeout) if flight.started.elapsed() >= timeout => {
                Answer::Unresponsive
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Answer::Pending,
        }
    }

    fn report(&mut self, mount: &Mount, answer: Answer, out: &mut Reading) {
        let labels = |sample: Sample| {
            sample
                .label("mount", mount.mount_point.clone())
                .label("device", mount.source.clone())
                .label("fstype", mount.fs_type.clone())
        };
        match answer {
            Answer::Stat(Ok(stat)) => {
                let u = stat.usage();
                for (name, value) in [
                    ("disk.total_bytes", u.total as f64),
                    ("disk.used_bytes", u.used as f64),
                    ("disk.avail_bytes", u.avail as f64),
                    ("disk.used_pct", u.used_pct),
                    ("disk.inodes_total", u.inodes_total as f64),
                    ("disk.inodes_used", u.inodes_used as f64),
                    ("disk.inodes_used_pct", u.inodes_used_pct),
                    ("disk.responsive", 1.0),
                ] {
                    out.samples.push(labels(Sample::new(name, value)));
                }
                if let Some(probe) = self.probes.get_mut(&mount.mount_point)
                    && probe.unresponsive
                {
                    probe.unresponsive = false;
                    tracing::info!(mount = %mount.mount_point, "Mount answers again.");
                }
            }
            Answer::Stat(Err(e)) => {
                tracing::debug!(mount = %mount.mount_point, error = %e, "Cannot statfs a mount; skipped.");
            }
            Answer::Pending => {}
            Answer::Unresponsive => {
                out.samples
                    .push(labels(Sample::new("disk.responsive", 0.0)));
                let probe = self.probes.entry(mount.mount_point.clone()).or_default();
                if !probe.unresponsive {
                    probe.unresponsive = true;
                    tracing::warn!(mount = %mount.mount_point, fstype = %mount.fs_type, "Mount does not answer statfs.");
                    out.events.push(
                        Event::now(
                            crate::event_names::MOUNT_UNRESPONSIVE,
                            Severity::Warning,
                            format!(
                                "{} ({} from {}) did not answer statfs within {:?}.",
                                mount.mount_point,
                                mount.fs_type,
                                mount.source,
                                self.options.timeout
                            ),
                        )
                        .attr("mount", &mount.mount_point)
                        .attr("fstype", &mount.fs_type)
                        .attr("device", &mount.source),
                    );
                }
            }
        }
    }
}

impl Sensor for FsSensor {
    fn name(&self) -> &'static str {
        "filesystems"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let chosen = self.mounts()?;
        let host_root = self.options.host_root.clone();
        let mut answers: Vec<(usize, Answer)> = Vec::new();
        let mut started = Vec::new();
        for (i, mount) in chosen.iter().enumerate() {
            let path = host_root.join(mount.mount_point.trim_start_matches('/'));
            if !is_remote(&mount.fs_type) {
                answers.push((i, Answer::Stat((self.options.statfs)(&path))));
                continue;
            }
            // An answer that came after the last cycle's wait.
            match self.answer(&mount.mount_point, None) {
                Answer::Pending => {}
                answer => answers.push((i, answer)),
            }
            if self.start_probe(mount, path) {
                started.push(i);
            }
        }
        let until = Instant::now() + FIRST_WAIT.min(self.options.timeout);
        for i in started {
            match self.answer(&chosen[i].mount_point, Some(until)) {
                Answer::Pending => {}
                // A fresh answer replaces the late one.
                answer => {
                    answers.retain(|(j, _)| *j != i);
                    answers.push((i, answer));
                }
            }
        }
        answers.sort_by_key(|(i, _)| *i);
        for (i, answer) in answers {
            self.report(&chosen[i], answer, out);
        }
        // Forget mounts that are gone (but keep a stuck probe's state).
        self.probes.retain(|point, probe| {
            probe.in_flight.is_some() || chosen.iter().any(|m| &m.mount_point == point)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A stand-in for a hung NFS server: `statfs` of `/mnt/hung` blocks
    /// while `hold` is set; every other mount answers at once.
    fn blocking_statfs(hold: Arc<AtomicBool>, calls: Arc<AtomicU32>) -> StatFs {
        Arc::new(move |path: &Path| {
            if path.ends_with("mnt/hung") {
                calls.fetch_add(1, Ordering::SeqCst);
                while hold.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Ok(FsStat {
                fragment_size: 4096,
                blocks: 100,
                blocks_free: 50,
                blocks_avail: 40,
                files: 10,
                files_free: 5,
                files_avail: 5,
            })
        })
    }

    fn proc_with_mounts(dir: &Path) -> ProcFs {
        std::fs::create_dir_all(dir.join("self")).expect("dir");
        std::fs::write(
            dir.join("self/mountinfo"),
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:40 / /mnt/hung rw - nfs4 server:/x rw\n3 1 0:41 / /mnt/ok rw - nfs4 server:/y rw\n",
        )
        .expect("write");
        ProcFs::new(dir)
    }

    #[test]
    fn a_hung_mount_is_reported_once_and_never_probed_twice() {
        let dir = std::env::temp_dir().join(format!("sl-fs-{}", std::process::id()));
        let hold = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicU32::new(0));
        let mut sensor = FsSensor::new(
            proc_with_mounts(&dir),
            FsOptions {
                host_root: PathBuf::from("/"),
                exclude_types: vec![],
                exclude_mounts: vec![],
                timeout: Duration::from_millis(50),
                statfs: blocking_statfs(hold.clone(), calls.clone()),
            },
        );
        for cycle in 0..3 {
            let mut reading = Reading::default();
            let started = std::time::Instant::now();
            sensor.read(&mut reading).expect("collects");
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "never waits past the timeout"
            );
            let value = |name: &str, mount: &str| {
                reading
                    .samples
                    .iter()
                    .find(|s| {
                        s.name == name && s.labels.iter().any(|(k, v)| k == "mount" && v == mount)
                    })
                    .map(|s| s.value)
            };
            assert_eq!(value("disk.responsive", "/mnt/hung"), Some(0.0));
            assert_eq!(value("disk.used_pct", "/mnt/hung"), None);
            assert_eq!(value("disk.responsive", "/mnt/ok"), Some(1.0));
            assert_eq!(value("disk.used_pct", "/"), Some(50.0 * 100.0 / 90.0));
            assert_eq!(
                reading.events.len(),
                usize::from(cycle == 0),
                "one event per episode"
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the stuck probe was not repeated"
        );
        hold.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("collects");
        assert!(
            reading.samples.iter().any(
                |s| s.name == "disk.used_pct" && s.labels.iter().any(|(_, v)| v == "/mnt/hung")
            )
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
