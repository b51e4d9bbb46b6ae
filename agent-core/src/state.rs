//! Small files in `data.dir` that must survive a crash whole: the spool's
//! bookkeeping, the instance id and the oid, the last boot id.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::spool::SpoolError;

/// Writes `contents` to `path` so that a crash leaves either the old file
/// or the new one: temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), SpoolError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source: io::Error| SpoolError::Io { path: p, source }
    };
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_data().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        // Makes the rename itself durable. Some filesystems refuse to sync
        // a folder; the rename is still atomic there.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The text of a small state file, trimmed; `None` when it does not exist
/// or cannot be read.
pub fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|t| t.trim().to_string())
}
