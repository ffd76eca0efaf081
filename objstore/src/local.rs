//! The local-directory backend (the embedded default, under the data dir).
//!
//! A key is a relative path under the root (`validate_key` keeps it there).
//! A put writes a temporary file in `<root>/.tmp/`, fsyncs it, renames it
//! into place (a conditional create hard-links instead, which fails
//! atomically if the key exists) and fsyncs the directory: an object is
//! either absent or whole, also after a crash. Blocking file I/O runs on the
//! store runtime's blocking threads, never on an executor.
//!
//! Several brokers may share one root (a cluster on a shared file system), so
//! a store removes the temporary files a crash left only when it opens alone
//! (`TMP_LOCK`), and names its own so that no other process's can collide.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::{ObjectStoreError, object_range};
use crate::io_pacer::{IoClass, IoPacer, PacedSlot};
use crate::limits::{LIST_KEYS_MAX, LOCAL_WRITE_CHUNK_BYTES};
use crate::spare_buffer::{SPARE_BUFFER_ALIGN, SpareBuffer};
use crate::stats::Stats;
use crate::store::{BoxFuture, LinkedTail, ObjectBackend, ObjectMeta, Result};

const TMP_DIR: &str = ".tmp";

/// The file every open store holds a shared lock (flock) on for its lifetime, beside
/// `TMP_DIR`. A store that gets it exclusively at open is the only one using the root, so the
/// temporary files are a crash's leftovers and it removes them. While another store holds it,
/// they stay (garbage, never a loss) until a store opens alone, as orphaned objects do:
/// removing them then would take the temporary file of another broker's put in flight, whose
/// rename would then fail.
const TMP_LOCK: &str = ".tmp.lock";

#[derive(Clone)]
pub(crate) struct LocalBackend {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    root: PathBuf,
    /// Held (shared) while the store is open: see `TMP_LOCK`.
    _tmp_lock: File,
    /// Starts every temporary file's name: the pid and a random number, so that two processes
    /// with the same pid (in two containers sharing the root) never write the same file.
    tmp_prefix: String,
    next_tmp: AtomicU64,
    pacer: Arc<IoPacer>,
    stats: Arc<Stats>,
}

impl LocalBackend {
    /// Opens (creating) the root; removes temporary files a crash left if no other store has
    /// the root open (`TMP_LOCK`). Every chunk read or written with O_DIRECT waits first for
    /// what `pacer` says.
    pub(crate) fn open(
        root: PathBuf,
        pacer: Arc<IoPacer>,
        stats: Arc<Stats>,
    ) -> Result<LocalBackend> {
        let err = |e| ObjectStoreError::io("open", "", e);
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(err)?;
        let tmp_lock = lock_tmp_dir(&root, &tmp).map_err(err)?;
        sync_dir(&root).map_err(err)?;
        let random = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        Ok(LocalBackend {
            inner: Arc::new(LocalInner {
                root,
                _tmp_lock: tmp_lock,
                tmp_prefix: format!("{}-{random:016x}", std::process::id()),
                next_tmp: AtomicU64::new(0),
                pacer,
                stats,
            }),
        })
    }

    fn blocking<T, F>(&self, f: F) -> BoxFuture<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&LocalInner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&inner))
                .await
                .unwrap_or_else(|e| {
                    Err(ObjectStoreError::Other {
                        operation: "local",
                        key: String::new(),
                        message: format!("blocking task failed: {e}"),
                    })
                })
        })
    }
}

impl ObjectBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn put(&self, key: String, data: Bytes) -> BoxFuture<Result<()>> {
        self.blocking(move |inner| inner.put(&key, &data, false))
    }

    fn put_if_absent(&self, key: String, data: Bytes) -> BoxFuture<Result<()>> {
        self.blocking(move |inner| inner.put(&key, &data, true))
    }

    fn get(&self, key: String, range: Option<Range<u64>>) -> BoxFuture<Result<Bytes>> {
        self.blocking(move |inner| inner.get(&key, range))
    }

    fn head(&self, key: String) -> BoxFuture<Result<u64>> {
        self.blocking(move |inner| {
            let meta = fs::metadata(inner.root.join(&key))
                .map_err(|e| ObjectStoreError::io("head", &key, e))?;
            if !meta.is_file() {
                return Err(ObjectStoreError::NotFound { key });
            }
            Ok(meta.len())
        })
    }

    fn list(&self, prefix: String) -> BoxFuture<Result<Vec<ObjectMeta>>> {
        self.blocking(move |inner| inner.list(&prefix))
    }

    fn put_linked(&self, key: String, source: PathBuf, tail: LinkedTail) -> BoxFuture<Result<u64>> {
        self.blocking(move |inner| inner.put_linked(&key, &source, &tail))
    }

    fn delete(&self, keys: Vec<String>) -> BoxFuture<Result<()>> {
        self.blocking(move |inner| {
            let mut dirs = BTreeSet::new();
            for key in &keys {
                let path = inner.root.join(key);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        dirs.insert(path.parent().map(Path::to_path_buf));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ObjectStoreError::io("delete", key, e)),
                }
            }
            for dir in dirs.into_iter().flatten() {
                sync_dir(&dir).map_err(|e| ObjectStoreError::io("delete", "", e))?;
            }
            Ok(())
        })
    }
}

impl LocalInner {
    /// Waits for the pacer before a chunk of O_DIRECT I/O, and counts its pause; the chunk
    /// runs while the returned slot is held.
    fn pace<'a>(&'a self, class: IoClass) -> impl Fn() -> Option<PacedSlot<'a>> + 'a {
        move || {
            let slot = self.pacer.wait(class);
            Stats::add(
                &self.stats.paced_us,
                u64::try_from(slot.paused.as_micros()).unwrap_or(u64::MAX),
            );
            Some(slot)
        }
    }

    /// A name in the temporary directory that no other put, here or in another process, uses.
    fn tmp_path(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(TMP_DIR)
            .join(format!("{}-{n}", self.tmp_prefix))
    }

    fn put(&self, key: &str, data: &[u8], if_absent: bool) -> Result<()> {
        let operation = if if_absent { "put_if_absent" } else { "put" };
        let err = |e| ObjectStoreError::io(operation, key, e);
        let target = self.root.join(key);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&parent).map_err(err)?;
        let tmp = self.tmp_path();
        let written =
            write_direct(&tmp, data, &self.pace(IoClass::Write)).and_then(
                |written| match written {
                    true => Ok(()),
                    false => File::create(&tmp).and_then(|mut file| {
                        write_trickled(&mut file, data)?;
                        file.sync_all()
                    }),
                },
            );
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        let placed = if if_absent {
            // link(2) fails with EEXIST if the key exists: atomic.
            fs::hard_link(&tmp, &target).and_then(|()| fs::remove_file(&tmp))
        } else {
            fs::rename(&tmp, &target)
        };
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        sync_dir(&parent).map_err(err)
    }

    /// [`ObjectBackend::put_linked`]: a second name for `source` in the temporary directory,
    /// the tail written at its end and synced, then renamed into place. The file may be
    /// linked by others (the WAL, and earlier objects of the same segment): each object's
    /// tail goes after everything already in it, so none overwrites another's.
    fn put_linked(&self, key: &str, source: &Path, tail: &LinkedTail) -> Result<u64> {
        let err = |e| ObjectStoreError::io("put_linked", key, e);
        let target = self.root.join(key);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&parent).map_err(err)?;
        let tmp = self.tmp_path();
        fs::hard_link(source, &tmp).map_err(err)?;
        let written = (|| -> io::Result<u64> {
            let file = fs::OpenOptions::new().write(true).open(&tmp)?;
            let size = file.metadata()?.len();
            let tail = tail(size);
            std::os::unix::fs::FileExt::write_all_at(&file, &tail, size)?;
            file.sync_data()?;
            Ok(size + tail.len() as u64)
        })();
        let placed = written.and_then(|size| fs::rename(&tmp, &target).map(|()| size));
        match placed {
            Ok(size) => {
                sync_dir(&parent).map_err(err)?;
                Ok(size)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(err(e))
            }
        }
    }

    /// Creates the missing directories down to `dir`, fsyncing each parent
    /// so the new entries survive a crash.
    fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().unwrap_or(&self.root);
        self.create_dirs(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(parent),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let err = |e| ObjectStoreError::io("get", key, e);
        let (mut file, direct) = open_for_reading(&self.root.join(key)).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let Range { start, end } = object_range(key, range, size)?;
        let len = usize::try_from(end.saturating_sub(start)).map_err(|_| {
            ObjectStoreError::InvalidRange {
                key: key.to_string(),
                start,
                end,
                size,
            }
        })?;
        if direct {
            return read_direct(&file, start, len, &self.pace(IoClass::Read)).map_err(err);
        }
        let mut buf = SpareBuffer::filled(len);
        file.seek(SeekFrom::Start(start)).map_err(err)?;
        file.read_exact(buf.as_mut_slice()).map_err(err)?;
        Ok(buf.freeze())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Walk from the deepest directory the prefix names in full.
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut found = Vec::new();
        let mut pending = vec![(self.root.join(base), base.to_string())];
        while let Some((dir, rel)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ObjectStoreError::io("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| ObjectStoreError::io("list", prefix, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let key = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| ObjectStoreError::io("list", &key, e))?;
                if meta.is_dir() {
                    if prefix.starts_with(&key) || key.starts_with(prefix) {
                        pending.push((entry.path(), key));
                    }
                } else if key.starts_with(prefix) {
                    if found.len() >= LIST_KEYS_MAX {
                        return Err(ObjectStoreError::Other {
                            operation: "list",
                            key: prefix.to_string(),
                            message: format!("more than {LIST_KEYS_MAX} keys (LIST_KEYS_MAX)"),
                        });
                    }
                    found.push(ObjectMeta {
                        key,
                        size: meta.len(),
                    });
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Writes `data` to a new file at `path` with O_DIRECT, a chunk at a time through one aligned
/// buffer, and fsyncs it. Returns false, having created nothing, when the file system refuses
/// O_DIRECT (tmpfs): the caller then writes through the page cache.
///
/// Why: a buffered put copies every object into the page cache (`copy_folio_from_iter`) and
/// leaves the kernel to write it back. Profiled at 50k msg/s after a backlog, that copy was a
/// third of the broker's CPU, on a 2-core box where the shards need it. With O_DIRECT the only
/// copy is into a small buffer that stays in the CPU cache, each chunk goes to the device
/// synchronously (never more than one queued ahead of the WAL's flushes), and the fsync has
/// only metadata left to write. `pace` runs before each chunk (the I/O pacer's wait), and the
/// chunk is written while the slot it returns is held.
fn write_direct<'p>(
    path: &Path,
    data: &[u8],
    pace: &impl Fn() -> Option<PacedSlot<'p>>,
) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
        Err(e) => return Err(e),
    };
    // O_DIRECT needs the buffer, offsets and lengths aligned to the logical block size; 4 KiB
    // covers 512 B and 4 KiB devices. Data in an aligned buffer (an object built in a
    // `SpareBuffer`) is written from where it is, but for its tail; anything else goes through
    // an aligned bounce buffer. The tail is padded, then cut off with set_len.
    let direct = if data.as_ptr().align_offset(DIRECT_IO_ALIGN) == 0 {
        data.len() / DIRECT_IO_ALIGN * DIRECT_IO_ALIGN
    } else {
        0
    };
    // The slot sets each chunk's size: larger while uploads have a backlog (`io_pacer.rs`).
    let mut written = 0;
    while written < direct {
        let slot = pace();
        let chunk_bytes = slot
            .as_ref()
            .map_or(LOCAL_WRITE_CHUNK_BYTES, |slot| slot.chunk_bytes);
        let end = (written + chunk_bytes).min(direct);
        file.write_all(&data[written..end])?;
        drop(slot);
        written = end;
    }
    let rest = &data[direct..];
    if !rest.is_empty() {
        let mut bounce = SpareBuffer::filled(
            rest.len()
                .min(LOCAL_WRITE_CHUNK_BYTES)
                .next_multiple_of(DIRECT_IO_ALIGN),
        );
        let buffer = bounce.as_mut_slice();
        for chunk in rest.chunks(LOCAL_WRITE_CHUNK_BYTES) {
            let padded = chunk.len().next_multiple_of(DIRECT_IO_ALIGN);
            buffer[..chunk.len()].copy_from_slice(chunk);
            buffer[chunk.len()..padded].fill(0);
            let _slot = pace();
            file.write_all(&buffer[..padded])?;
        }
    }
    if !data.len().is_multiple_of(DIRECT_IO_ALIGN) {
        file.set_len(data.len() as u64)?;
    }
    file.sync_all()?;
    Ok(true)
}

/// Opens `path` for reading with O_DIRECT, or through the page cache where the file system
/// refuses O_DIRECT (tmpfs); true when it is O_DIRECT.
fn open_for_reading(path: &Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match opened {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((File::open(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Reads `len` bytes at `start` of `file`, opened with O_DIRECT (`open_for_reading`), a chunk
/// at a time.
///
/// Why: objects are written with O_DIRECT, so a buffered read finds nothing cached; it only
/// copies every byte through the page cache and leaves it there for the kernel to reclaim.
/// Reading the aligned range around the bytes asked for, one chunk (`LOCAL_WRITE_CHUNK_BYTES`) per request, also keeps
/// compaction's reads from queueing tens of MiB on the device ahead of the WAL's writes; `pace`
/// runs before each request, which runs while the slot it returns is held.
fn read_direct<'p>(
    file: &File,
    start: u64,
    len: usize,
    pace: &impl Fn() -> Option<PacedSlot<'p>>,
) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let align = DIRECT_IO_ALIGN as u64;
    let aligned_start = start / align * align;
    let skip = (start - aligned_start) as usize;
    let mut buf = SpareBuffer::filled((skip + len).next_multiple_of(DIRECT_IO_ALIGN));
    let wanted = skip + len;
    let mut filled = 0;
    while filled < wanted {
        let chunk_end = (filled + LOCAL_WRITE_CHUNK_BYTES).min(buf.as_mut_slice().len());
        let slot = pace();
        let read = file.read_at(
            &mut buf.as_mut_slice()[filled..chunk_end],
            aligned_start + filled as u64,
        )?;
        drop(slot);
        if read == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        filled += read;
        // Only the file's last block may come back short; a read ending elsewhere off a
        // block boundary would make the next one unaligned.
        if filled < wanted && !filled.is_multiple_of(DIRECT_IO_ALIGN) {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
    }
    Ok(buf.freeze().slice(skip..wanted))
}

/// Alignment of O_DIRECT buffers, offsets and lengths.
const DIRECT_IO_ALIGN: usize = SPARE_BUFFER_ALIGN;

/// Writes `data` chunk by chunk, starting each chunk's writeback as soon as it is written and
/// waiting for the one before: at most two chunks are dirty or in flight at once.
///
/// Why: the embedded store usually shares its disk with the WAL. A put that left a whole
/// object dirty and then fsynced it would queue tens of MiB on the device at once, and every
/// WAL flush issued meanwhile (and, on ext4 in data=ordered mode, every journal commit) would
/// wait behind them: the produce p99 rose from 2 to 19 ms at 50k msg/s. Trickling the writes
/// bounds that wait to a chunk or two; the final fsync then has almost nothing left to do.
fn write_trickled(file: &mut File, data: &[u8]) -> io::Result<()> {
    let mut previous: Option<(u64, usize)> = None;
    let mut offset = 0u64;
    for chunk in data.chunks(LOCAL_WRITE_CHUNK_BYTES) {
        file.write_all(chunk)?;
        sync_file_range(file, offset, chunk.len(), libc::SYNC_FILE_RANGE_WRITE)?;
        if let Some((start, len)) = previous {
            sync_file_range(
                file,
                start,
                len,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
        }
        previous = Some((offset, chunk.len()));
        offset += chunk.len() as u64;
    }
    Ok(())
}

/// sync_file_range(2) on a range of `file`; file systems without it are left to the fsync.
fn sync_file_range(file: &File, offset: u64, len: usize, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Ok(());
    };
    // SAFETY: the fd is open for the duration of the call, which touches no user memory.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => Ok(()),
        _ => Err(error),
    }
}

/// Takes the shared lock on `TMP_LOCK`; first, if the lock can be had exclusively (no other
/// store has `root` open), empties `tmp` of what a crash left. On a file system without
/// flock, whether another store uses the root cannot be known: nothing is removed.
fn lock_tmp_dir(root: &Path, tmp: &Path) -> io::Result<File> {
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(root.join(TMP_LOCK))?;
    match lock.try_lock() {
        Ok(()) => {
            for entry in fs::read_dir(tmp)? {
                let path = entry?.path();
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Not made by a store (a directory someone put there): left alone.
                    Err(_) if path.is_dir() => {}
                    Err(e) => return Err(e),
                }
            }
            // Another store opening meanwhile may take the lock exclusively in between, which
            // is harmless: this one has nothing in `tmp` yet.
            lock.unlock()?;
        }
        Err(fs::TryLockError::WouldBlock) => {}
        Err(fs::TryLockError::Error(e)) if lock_unsupported(&e) => return Ok(lock),
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    lock.lock_shared()?;
    Ok(lock)
}

/// flock(2)'s answers on a file system that has no locks (some FUSE and network ones).
fn lock_unsupported(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Unsupported
        || matches!(
            error.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOLCK)
        )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io_pacer::UploadBacklog;

    #[test]
    fn direct_writes_keep_every_byte_of_a_partial_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4096, LOCAL_WRITE_CHUNK_BYTES * 5 / 2 + 17] {
            let path = dir.path().join(format!("object-{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            // The temp dir is on a file system with O_DIRECT here (the WAL needs it too).
            assert!(
                write_direct(&path, &data, &|| None).unwrap(),
                "O_DIRECT refused"
            );
            assert_eq!(fs::read(&path).unwrap(), data);
            // From an aligned buffer: written in place, but for the tail.
            let mut aligned = SpareBuffer::with_capacity(len);
            aligned.extend_from_slice(&data);
            assert_eq!(aligned.as_ptr().align_offset(DIRECT_IO_ALIGN), 0);
            let path = dir.path().join(format!("aligned-{len}"));
            assert!(
                write_direct(&path, &aligned, &|| None).unwrap(),
                "O_DIRECT refused"
            );
            assert_eq!(fs::read(&path).unwrap(), data);
        }
    }

    #[test]
    fn direct_reads_return_exactly_the_range_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        for size in [1, 4096, 4097, LOCAL_WRITE_CHUNK_BYTES * 5 / 2 + 17] {
            let path = dir.path().join(format!("object-{size}"));
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            fs::write(&path, &data).unwrap();
            let (file, direct) = open_for_reading(&path).unwrap();
            assert!(direct, "O_DIRECT refused");
            let ranges = [
                (0, size),
                (1, size - 1),
                (size / 2, size - size / 2),
                (size - 1, 1),
                (4095.min(size - 1), 2.min(size - 4095.min(size - 1))),
            ];
            for (start, len) in ranges {
                let read = read_direct(&file, start as u64, len, &|| None).unwrap();
                assert_eq!(&read[..], &data[start..start + len], "{size} {start} {len}");
            }
            let past_the_end = read_direct(&file, size as u64 - 1, 2, &|| None);
            assert!(past_the_end.is_err(), "{size}: {past_the_end:?}");
        }
    }

    #[test]
    fn direct_io_waits_for_the_pacer_and_counts_the_wait() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let pacer = IoPacer::new();
        let stats = Arc::new(Stats::default());
        let backend =
            LocalBackend::open(dir.path().to_path_buf(), pacer.clone(), stats.clone()).unwrap();
        let paced = || stats.paced_us.load(Ordering::Relaxed);
        let shard = pacer.shard();
        shard.report(Some(Duration::from_millis(1)), UploadBacklog::Small);
        shard.report(Some(Duration::from_millis(9)), UploadBacklog::Small);
        let data = vec![7u8; 3 * LOCAL_WRITE_CHUNK_BYTES];
        backend.inner.put("a/b", &data, false).unwrap();
        assert_eq!(
            paced(),
            1_000 + 2_000 + 4_000,
            "a pause before each of three chunks"
        );
        assert_eq!(backend.inner.get("a/b", None).unwrap(), data);
        assert_eq!(paced(), 7_000 + 8_000 + 16_000 + 20_000, "reads wait too");
        // Uploads falling behind: no more waiting.
        shard.report(Some(Duration::from_millis(9)), UploadBacklog::Behind);
        backend.inner.put("a/c", &data, false).unwrap();
        assert_eq!(paced(), 51_000);
    }

    #[test]
    fn direct_writes_take_larger_chunks_while_uploads_have_a_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let pacer = IoPacer::new();
        let shard = pacer.shard();
        let len = 5 * LOCAL_WRITE_CHUNK_BYTES + 17;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut aligned = SpareBuffer::with_capacity(len);
        aligned.extend_from_slice(&data);
        let chunks_written = |name: &str| {
            let slots = std::cell::Cell::new(0);
            let pace = || {
                slots.set(slots.get() + 1);
                Some(pacer.wait(IoClass::Write))
            };
            let path = dir.path().join(name);
            assert!(
                write_direct(&path, &aligned, &pace).unwrap(),
                "O_DIRECT refused"
            );
            assert_eq!(fs::read(&path).unwrap(), data, "{name}");
            slots.get()
        };
        assert_eq!(
            chunks_written("normal"),
            5 + 1,
            "five chunks, then the tail"
        );
        shard.report(None, UploadBacklog::Large);
        assert_eq!(
            chunks_written("backlog"),
            2 + 1,
            "1 MiB, the rest of the aligned part, then the tail"
        );
    }

    /// Two brokers sharing a root: the second one opening must not take the first one's
    /// temporary file of a put in flight (its rename would fail); the leftovers go once a
    /// store opens alone.
    #[test]
    fn temporary_files_are_removed_only_by_a_store_that_opens_alone() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            LocalBackend::open(dir.path().to_path_buf(), IoPacer::new(), Arc::default()).unwrap()
        };
        let first = open();
        let in_flight = dir
            .path()
            .join(TMP_DIR)
            .join(format!("{}-7", first.inner.tmp_prefix));
        fs::write(&in_flight, b"a put in flight").unwrap();
        let second = open();
        assert!(in_flight.exists(), "another store's temporary file removed");
        assert_ne!(first.inner.tmp_prefix, second.inner.tmp_prefix);
        second
            .inner
            .put("a/b", b"while both are open", false)
            .unwrap();
        assert_eq!(
            &second.inner.get("a/b", None).unwrap()[..],
            b"while both are open"
        );
        drop(first);
        drop(second);
        let alone = open();
        assert!(!in_flight.exists(), "a crash's leftover kept");
        assert_eq!(
            &alone.inner.get("a/b", None).unwrap()[..],
            b"while both are open"
        );
    }

    #[test]
    fn trickled_writes_keep_every_byte_of_a_partial_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let data: Vec<u8> = (0..LOCAL_WRITE_CHUNK_BYTES * 5 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut file = File::create(&path).unwrap();
        write_trickled(&mut file, &data).unwrap();
        file.sync_all().unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
    }
}
