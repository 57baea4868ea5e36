//! The pid file `DATA/run/{id}.json`: what a later run needs to re-adopt or clean up an instance.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{DriverError, InstanceInfo};

/// Contents of a pid file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PidRecord {
    #[serde(flatten)]
    pub info: InstanceInfo,
    /// Process group of the instance (equal to the leader's pid).
    pub pgid: i32,
    /// Leader start time, field 22 of `/proc/PID/stat`; tells our process from a recycled pid.
    pub start_time: u64,
}

/// Writes the record atomically (temp file + rename), so a crash never leaves half a file.
pub(crate) fn write(path: &Path, record: &PidRecord) -> Result<(), DriverError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| DriverError::Io {
        action: "encode pid file",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| DriverError::Io {
            action: "write pid file",
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a record; `Ok(None)` when the file holds something that is not a pid record.
pub(crate) fn read(path: &Path) -> io::Result<Option<PidRecord>> {
    let bytes = std::fs::read(path)?;
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Removes a pid file; a missing file is fine.
pub(crate) fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "Cannot remove pid file.");
        }
    }
}

/// Every `*.json` file in the run dir; stale `*.json.tmp` files are deleted on the way.
pub(crate) fn list(run_dir: &Path) -> Result<Vec<PathBuf>, DriverError> {
    let entries = std::fs::read_dir(run_dir).map_err(|source| DriverError::Io {
        action: "list pid files in",
        path: run_dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json.tmp") {
            remove(&path);
        } else if name.ends_with(".json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
