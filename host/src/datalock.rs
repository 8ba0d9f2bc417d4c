//! The data-folder lock: at most one sync (or resolution) at a time on one
//! data folder, across every davsync process on this machine (the CLI and
//! `davsync serve` alike).
//!
//! It is an OS advisory lock (`flock` on Unix) on `<data>/davsync.lock`, so it
//! dies with the process that holds it: a killed sync never leaves a stale
//! lock behind. The file itself stays; only the lock on it matters. The file
//! holds the holder's process id, for the error message only. The lock is per
//! open file, so it also excludes a second sync within the same process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data folder.
pub const LOCK_FILE_NAME: &str = "davsync.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataLockError {
    /// Another sync holds it.
    #[error("another davsync sync is running on this data folder (lock {} held{})", lock.display(), holder_text(*pid))]
    Busy {
        /// The lock file.
        lock: PathBuf,
        /// The holder's process id, when it could be read.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot use the lock file {}: {source}", lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    pid.map_or_else(String::new, |p| format!(" by process {p}"))
}

/// A held data-folder lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct DataDirLock {
    // Holding the open file is what holds the lock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` (created if missing) without waiting.
    pub fn try_acquire(data_dir: &Path) -> Result<DataDirLock, DataLockError> {
        let path = data_dir.join(LOCK_FILE_NAME);
        let io_err = |source| DataLockError::Io { lock: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
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
                return Err(DataLockError::Busy { pid: read_pid(&mut file), lock: path });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // Best effort: the pid only makes the "busy" message more useful.
        let _ = write_pid(&mut file);
        // Holding the lock, no other davsync process writes in this data
        // folder: temporary files there were left by a killed one.
        let files_dir = data_dir.join("files");
        match crate::folder::remove_stale_temp_files(&files_dir) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed temporary files left by an interrupted run"),
            Err(e) => {
                tracing::warn!(error = %e, dir = %files_dir.display(), "could not sweep temporary files")
            }
        }
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    // A pid is a few digits; never read more than a line's worth.
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_the_lock_sweeps_temporary_files_a_killed_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("files").join("ab");
        std::fs::create_dir_all(&shard).unwrap();
        let stale = [dir.path().join("files/.davsync-part-1-2-3"), shard.join(".davsync-part-4-5-6")];
        for p in &stale {
            std::fs::write(p, b"half a download").unwrap();
        }
        let blob = shard.join("ab".repeat(32) + ".pdf");
        std::fs::write(&blob, b"a blob").unwrap();
        let _lock = DataDirLock::try_acquire(dir.path()).unwrap();
        for p in &stale {
            assert!(!p.exists(), "{} is still there", p.display());
        }
        assert!(blob.exists(), "a blob was removed");
    }

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::try_acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE_NAME));
        match DataDirLock::try_acquire(dir.path()) {
            Err(DataLockError::Busy { lock, pid }) => {
                assert_eq!(lock, dir.path().join(LOCK_FILE_NAME));
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        DataDirLock::try_acquire(dir.path()).expect("free again after drop");
    }

    #[test]
    fn the_busy_message_names_the_lock_file_and_the_holder() {
        let e = DataLockError::Busy { lock: PathBuf::from("/d/davsync.lock"), pid: Some(42) };
        let text = e.to_string();
        assert!(text.contains("/d/davsync.lock") && text.contains("process 42"), "{text}");
    }

    #[test]
    fn locks_on_different_folders_are_independent() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let _la = DataDirLock::try_acquire(a.path()).unwrap();
        let _lb = DataDirLock::try_acquire(b.path()).unwrap();
    }

    #[test]
    fn a_missing_data_folder_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new/data");
        let _l = DataDirLock::try_acquire(&data).unwrap();
        assert!(data.join(LOCK_FILE_NAME).is_file());
    }
}
