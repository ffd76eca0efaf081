//! One process per data dir: an exclusive flock on `DATA_DIR/.lock`, and on the WAL when
//! `--wal-path` puts it elsewhere, taken before the broker binds a port or writes a byte and
//! held until it has stopped. Two brokers on one data dir would write one WAL and one metadata
//! log, and on one port (SO_REUSEPORT) the kernel would split the clients between them.
//!
//! A flock rather than a pid file checked by hand: the kernel drops it when the holder's last
//! descriptor of the file closes, so a broker killed with `kill -9` never leaves a stale lock,
//! and a reused pid never makes a dead holder look alive. The file holds the holder's pid and
//! when it took the lock only so that a process that finds it held can say who holds it.
//!
//! A busy lock is waited for (`--lock-wait-ms`), not refused at once: a supervisor may start
//! the new broker while the killed one is still closing its descriptors, and nothing seen
//! from outside tells a process that is exiting from one that is not going to. A second
//! broker started by mistake fails after the same wait, naming the holder.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::is_block_device;
use crate::startup_wait::retry_while_busy;

/// The lock file's name, in the data dir and in a WAL directory outside it.
pub const LOCK_FILE_NAME: &str = ".lock";

/// The locks this process holds; dropping it closes their descriptors, which releases them.
#[derive(Debug)]
pub struct DataDirLock {
    // Only held, never read: the open descriptors are the locks.
    _held: Vec<File>,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file or device could not be created, opened, locked or written.
    #[error("{path}: {source}")]
    Io {
        /// The lock file or WAL device.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another process held the lock for the whole wait.
    #[error(
        "{path} is locked by {holder}: another process uses this {what}; waited {waited_ms} ms \
         for it (--lock-wait-ms)"
    )]
    Held {
        /// The lock file or WAL device.
        path: PathBuf,
        /// What the lock guards: "data dir", "WAL directory" or "WAL device".
        what: &'static str,
        /// Who holds it, as far as can be told.
        holder: LockHolder,
        /// How long this process waited.
        waited_ms: u128,
    },
}

/// Who holds a lock, as far as can be told: from the lock file, else from `/proc/locks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: Option<u32>,
    /// When the holder took the lock, in milliseconds since the Unix epoch.
    pub locked_unix_ms: Option<u64>,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.locked_unix_ms) {
            (Some(pid), Some(locked)) => {
                let age_ms = unix_ms_now().saturating_sub(locked);
                write!(f, "pid {pid} (locked {:.1} s ago)", age_ms as f64 / 1000.0)
            }
            (Some(pid), None) => write!(f, "pid {pid}"),
            (None, _) => f.write_str("an unknown process"),
        }
    }
}

impl DataDirLock {
    /// Locks `data_dir` (creating it) and, when `wal_path` is a directory elsewhere or a block
    /// device, the WAL too; waits up to `wait` in all for a lock another process holds.
    pub fn acquire(
        data_dir: &Path,
        wal_path: Option<&Path>,
        wait: Duration,
    ) -> Result<DataDirLock, LockError> {
        let deadline = Instant::now() + wait;
        let data_dir_lock = lock_file_in(data_dir)?;
        let file = lock(
            &data_dir_lock,
            "data dir",
            open_lock_file(&data_dir_lock)?,
            deadline,
        )?;
        let mut held = vec![record_holder(&data_dir_lock, file)?];
        let Some(wal_path) = wal_path else {
            return Ok(DataDirLock { _held: held });
        };
        if is_block_device(wal_path) {
            // The device's own descriptor, not a file beside it: that would be in /dev
            // (devtmpfs, emptied at boot), and every opener of the device node, through any
            // symlink (/dev/disk/by-id/...), locks the same inode. It is also the lock that
            // systemd-udevd honours: it does not probe a whole disk locked LOCK_EX.
            let device = File::open(wal_path).map_err(|source| LockError::Io {
                path: wal_path.to_path_buf(),
                source,
            })?;
            held.push(lock(wal_path, "WAL device", device, deadline)?);
            return Ok(DataDirLock { _held: held });
        }
        let wal_lock = lock_file_in(wal_path)?;
        // `--wal-path` may be the data dir itself: its lock is held already, and a second
        // descriptor of the same file would find it busy.
        if same_file(&wal_lock, &data_dir_lock) {
            return Ok(DataDirLock { _held: held });
        }
        let file = lock(
            &wal_lock,
            "WAL directory",
            open_lock_file(&wal_lock)?,
            deadline,
        )?;
        held.push(record_holder(&wal_lock, file)?);
        Ok(DataDirLock { _held: held })
    }
}

/// `dir/.lock`, creating `dir` first.
fn lock_file_in(dir: &Path) -> Result<PathBuf, LockError> {
    std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(dir.join(LOCK_FILE_NAME))
}

/// Opens (creating) a lock file without truncating it: until the lock is ours, its contents
/// name the holder.
fn open_lock_file(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Takes an exclusive flock on `file`, waiting until `deadline` while another process holds it.
fn lock(path: &Path, what: &'static str, file: File, deadline: Instant) -> Result<File, LockError> {
    let start = Instant::now();
    let taken = retry_while_busy(
        deadline.saturating_duration_since(start),
        || format!("{} is locked by {}", path.display(), holder(path, &file)),
        || match file.try_lock() {
            Ok(()) => Ok(Some(())),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io {
                path: path.to_path_buf(),
                source,
            }),
        },
    )?;
    match taken {
        Some(()) => Ok(file),
        None => Err(LockError::Held {
            path: path.to_path_buf(),
            what,
            holder: holder(path, &file),
            waited_ms: start.elapsed().as_millis(),
        }),
    }
}

/// Writes this process's pid and the time into a lock file it holds.
fn record_holder(path: &Path, file: File) -> Result<File, LockError> {
    let record = format!(
        "pid={}\nlocked_unix_ms={}\n",
        std::process::id(),
        unix_ms_now()
    );
    file.set_len(0)
        .and_then(|()| file.write_all_at(record.as_bytes(), 0))
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(file)
}

/// Who holds the lock on `file`: the record in the lock file (empty while the holder is
/// between taking the lock and writing it, and never written into a device), else the pid
/// `/proc/locks` gives.
fn holder(path: &Path, file: &File) -> LockHolder {
    let recorded = if is_block_device(path) {
        LockHolder::default()
    } else {
        std::fs::read_to_string(path)
            .map(|text| parse_holder(&text))
            .unwrap_or_default()
    };
    if recorded.pid.is_some() {
        return recorded;
    }
    LockHolder {
        pid: flock_holder_pid(file),
        locked_unix_ms: None,
    }
}

/// The `pid=` and `locked_unix_ms=` lines of a lock file; anything else is ignored.
fn parse_holder(text: &str) -> LockHolder {
    let mut holder = LockHolder::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("pid", pid)) => holder.pid = pid.trim().parse().ok(),
            Some(("locked_unix_ms", ms)) => holder.locked_unix_ms = ms.trim().parse().ok(),
            _ => {}
        }
    }
    holder
}

/// The pid of the process holding a flock on `file`'s inode, from `/proc/locks`, whose lines
/// read `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1311 0 EOF` (major and minor in hex, then the
/// inode); a waiter's line has `->` after the number and does not match.
fn flock_holder_pid(file: &File) -> Option<u32> {
    let metadata = file.metadata().ok()?;
    let inode = format!(
        "{:02x}:{:02x}:{}",
        libc::major(metadata.dev()),
        libc::minor(metadata.dev()),
        metadata.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            // pid 0 or -1: a holder outside this pid namespace.
            [_, "FLOCK", _, _, pid, id, ..] if *id == inode => {
                pid.parse().ok().filter(|pid| *pid > 0)
            }
            _ => None,
        }
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // flock locks belong to an open file description: a second acquire in this process opens
    // the file again and meets the first one's lock as another process would.

    #[test]
    fn a_held_data_dir_is_refused_after_the_wait_naming_the_holder() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let _first = DataDirLock::acquire(dir.path(), None, Duration::ZERO).expect("free");
        let start = Instant::now();
        let error = DataDirLock::acquire(dir.path(), None, Duration::from_millis(100))
            .expect_err("held by the first");
        assert!(start.elapsed() >= Duration::from_millis(100));
        let LockError::Held { path, holder, .. } = &error else {
            panic!("not Held: {error}");
        };
        assert_eq!(path, &dir.path().join(LOCK_FILE_NAME));
        assert_eq!(holder.pid, Some(std::process::id()));
        assert!(holder.locked_unix_ms.is_some());
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id()))
                && message.contains(".lock")
                && message.contains("--lock-wait-ms"),
            "{message}"
        );
    }

    #[test]
    fn a_lock_released_during_the_wait_is_taken() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = DataDirLock::acquire(dir.path(), None, Duration::ZERO).expect("free");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(first);
        });
        DataDirLock::acquire(dir.path(), None, Duration::from_secs(30))
            .expect("taken once the first lets go");
        release.join().expect("no panic");
    }

    #[test]
    fn a_wal_directory_elsewhere_is_locked_too_and_the_data_dir_itself_only_once() {
        let data = tempfile::tempdir().expect("a temporary directory");
        let wal = tempfile::tempdir().expect("a temporary directory");
        let _first =
            DataDirLock::acquire(data.path(), Some(wal.path()), Duration::ZERO).expect("both free");
        let other_data = tempfile::tempdir().expect("a temporary directory");
        let error = DataDirLock::acquire(other_data.path(), Some(wal.path()), Duration::ZERO)
            .expect_err("the WAL directory is held");
        assert!(
            matches!(&error, LockError::Held { path, what: "WAL directory", .. }
                if path == &wal.path().join(LOCK_FILE_NAME)),
            "{error}"
        );
        // The failed attempt released the other data dir's lock with its descriptor.
        DataDirLock::acquire(other_data.path(), None, Duration::ZERO).expect("released");

        let alone = tempfile::tempdir().expect("a temporary directory");
        DataDirLock::acquire(alone.path(), Some(alone.path()), Duration::ZERO)
            .expect("the WAL in the data dir itself is one lock");
    }

    #[test]
    fn the_holder_pid_is_found_in_proc_locks_when_the_file_names_none() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("device-like");
        let held = open_lock_file(&path).expect("created");
        held.try_lock().expect("free");
        let other = open_lock_file(&path).expect("opened");
        assert_eq!(flock_holder_pid(&other), Some(std::process::id()));
        assert_eq!(
            holder(&path, &other),
            LockHolder {
                pid: Some(std::process::id()),
                locked_unix_ms: None
            }
        );
    }

    #[test]
    fn lock_file_records_parse_and_unknown_lines_are_ignored() {
        assert_eq!(
            parse_holder("pid=42\nlocked_unix_ms=1700000000000\nnext=1\n"),
            LockHolder {
                pid: Some(42),
                locked_unix_ms: Some(1_700_000_000_000)
            }
        );
        assert_eq!(parse_holder(""), LockHolder::default());
        assert_eq!(parse_holder("pid=x"), LockHolder::default());
        assert_eq!(
            LockHolder {
                pid: None,
                locked_unix_ms: Some(1)
            }
            .to_string(),
            "an unknown process"
        );
    }
}
