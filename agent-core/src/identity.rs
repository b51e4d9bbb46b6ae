//! Who the agent is: host name, operating system, boot time, and two ids:
//! the spool instance (chosen here, once, kept in the spool's folder) and
//! the agent id (given by the collector's `Hello`, kept in `data.dir`).
//!
//! The agent id stays the same across restarts because the collector keys
//! it by project, product and `oname`; the instance changes only when the
//! spool folder is wiped, which is exactly when sequence numbers restart.

use std::io;
use std::path::Path;

use crate::spool::SpoolError;
use crate::state::write_atomic;

const INSTANCE_FILE: &str = "instance";
const AGENT_ID_FILE: &str = "agent_id";

/// The host's name, as `uname -n` prints it.
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    uname.nodename().to_string_lossy().into_owned()
}

/// Operating system and kernel: `linux 6.1.0-18-amd64`.
pub fn os() -> String {
    let uname = rustix::system::uname();
    format!(
        "{} {}",
        uname.sysname().to_string_lossy().to_ascii_lowercase(),
        uname.release().to_string_lossy()
    )
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
    0
}

/// The spool instance id: read from `dir` (the spool's folder), or made
/// and saved there.
pub fn instance_id(dir: &Path) -> Result<String, SpoolError> {
    let path = dir.join(INSTANCE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if is_instance_id(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "Instance file is damaged; starting a new instance.")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(SpoolError::Io { path, source }),
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| SpoolError::Io {
        path: path.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

fn is_instance_id(text: &str) -> bool {
    text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// The agent id the collector gave last time, if any.
pub fn saved_agent_id(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(data_dir.join(AGENT_ID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Remembers the agent id the collector gave.
pub fn save_agent_id(data_dir: &Path, id: u64) -> Result<(), SpoolError> {
    if saved_agent_id(data_dir) == Some(id) {
        return Ok(());
    }
    write_atomic(&data_dir.join(AGENT_ID_FILE), format!("{id}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("sl-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = instance_id(&dir).expect("made");
        assert!(is_instance_id(&first));
        assert_eq!(instance_id(&dir).expect("read"), first);
        std::fs::write(dir.join(INSTANCE_FILE), "garbage").expect("write");
        assert_ne!(instance_id(&dir).expect("remade"), first);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn host_facts_are_filled() {
        assert!(!hostname().is_empty());
        assert!(os().starts_with(std::env::consts::OS));
        #[cfg(target_os = "linux")]
        assert!(boot_time_ms() > 1_000_000_000_000);
    }
}
