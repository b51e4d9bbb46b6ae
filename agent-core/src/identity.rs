//! Who the agent is: host name, operating system, boot time and boot id,
//! and the oid (the agent's id, given by the collector's `Hello`, kept in
//! `data.dir`). The spool instance is the spool's own ([`crate::spool`]).
//! Reads only; never writes anything but the oid file.
//!
//! The oid stays the same across restarts because the collector keys it
//! by project, product and `oname`.

use std::path::Path;

use crate::spool::SpoolError;
use crate::state::write_atomic;

/// The file keeping the oid (named before the oid had its name).
const OID_FILE: &str = "agent_id";

/// The host's name, as `uname -n` prints it (on Windows, the computer's
/// DNS host name).
#[cfg(unix)]
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    uname.nodename().to_string_lossy().into_owned()
}

/// The host's name, as `uname -n` prints it (on Windows, the computer's
/// DNS host name).
#[cfg(windows)]
pub fn hostname() -> String {
    crate::windows::hostname()
}

/// Operating system and kernel: `linux 6.1.0-18-amd64`, `windows 10.0.19045`.
#[cfg(unix)]
pub fn os() -> String {
    let uname = rustix::system::uname();
    format!(
        "{} {}",
        uname.sysname().to_string_lossy().to_ascii_lowercase(),
        uname.release().to_string_lossy()
    )
}

/// Operating system and kernel: `linux 6.1.0-18-amd64`, `windows 10.0.19045`.
#[cfg(windows)]
pub fn os() -> String {
    crate::windows::os()
}

/// When the host booted, unix milliseconds (0 when unknown).
pub fn boot_time_ms() -> i64 {
    #[cfg(target_os = "linux")]
    {
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            for line in stat.lines() {
                if let Some(secs) = line.strip_prefix("btime ") {
                    return secs.trim().parse::<i64>().map_or(0, |s| s * 1000);
                }
            }
        }
    }
    #[cfg(windows)]
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let uptime = i64::try_from(crate::windows::uptime_ms()).unwrap_or(0);
        if now > uptime {
            return now - uptime;
        }
    }
    0
}

/// The kernel's random id of the current boot (`boot_id` on Linux; on
/// Windows its count of boots, `boot-<n>`); on other systems the boot
/// time, which also changes with every boot (on Windows, where it is
/// computed from the uptime and so moves by a few milliseconds between
/// calls, rounded to the minute). Empty when neither is known.
pub fn boot_id() -> String {
    #[cfg(target_os = "linux")]
    {
        if let Ok(id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            return id.trim().to_string();
        }
    }
    #[cfg(windows)]
    {
        if let Some(n) = crate::windows::boot_count() {
            return format!("boot-{n}");
        }
        return match boot_time_ms() {
            0 => String::new(),
            ms => format!("boot-time-{}", (ms + 30_000) / 60_000 * 60_000),
        };
    }
    #[allow(unreachable_code)]
    match boot_time_ms() {
        0 => String::new(),
        ms => format!("boot-time-{ms}"),
    }
}

/// The oid (the agent's id) the collector gave last time, if any.
pub fn saved_oid(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(OID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Remembers the oid the collector gave.
pub fn save_oid(data_dir: &Path, oid: u64) -> Result<(), SpoolError> {
    if saved_oid(data_dir) == Some(oid) {
        return Ok(());
    }
    write_atomic(&data_dir.join(OID_FILE), format!("{oid}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_filled() {
        assert!(!hostname().is_empty());
        assert!(os().starts_with(std::env::consts::OS));
        #[cfg(target_os = "linux")]
        {
            assert!(boot_time_ms() > 1_000_000_000_000);
            assert_eq!(boot_id().len(), 36, "a uuid: {}", boot_id());
        }
    }
}
