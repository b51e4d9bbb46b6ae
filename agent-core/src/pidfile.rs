//! The pid file in `data.dir`, held under an exclusive lock for the life of
//! the process, so two agents can never share one spool. A `kill -9` leaves
//! the file behind but releases the lock, so the next start succeeds.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the pid file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another agent holds it.
    #[error("another {binary} is running with data dir {dir} (pid {pid}); stop it or give this one its own data.dir", dir = dir.display())]
    Held {
        /// The binary's name.
        binary: String,
        /// The data folder.
        dir: PathBuf,
        /// The other process, as its pid file says.
        pid: String,
    },
    /// The file could not be created or written.
    #[error("pid file {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A held pid file; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _file: File,
}

impl PidFile {
    /// Creates `<data_dir>/<binary>.pid`, locks it and writes our pid.
    pub fn acquire(data_dir: &Path, binary: &str) -> Result<PidFile, PidFileError> {
        let path = data_dir.join(format!("{binary}.pid"));
        let io_err = |source| PidFileError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(PidFileError::Held {
                    binary: binary.to_string(),
                    dir: data_dir.to_path_buf(),
                    pid: pid.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        Ok(PidFile { path, _file: file })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("sl-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = PidFile::acquire(&dir, "sightline-test").expect("first");
        let written = std::fs::read_to_string(dir.join("sightline-test.pid")).expect("read");
        assert_eq!(written.trim(), std::process::id().to_string());
        let err = PidFile::acquire(&dir, "sightline-test").expect_err("held");
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        assert!(!dir.join("sightline-test.pid").exists());
        PidFile::acquire(&dir, "sightline-test").expect("free again");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
