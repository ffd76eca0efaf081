//! The segmented layout: the ring kept in a directory of equal segment files instead of one
//! file, so that a closed segment can become an object by a hard link instead of a second
//! write of its bytes (README.md, "Segmented WAL").
//!
//! ```text
//! <dir>/layout          "segment_bytes=N\n", written once when the directory is created
//! <dir>/header          the two header blocks (bytes 0..8192 of the one-file layout)
//! <dir>/segment-<i>     ring bytes [i * N, (i + 1) * N), i < capacity / N
//! ```
//!
//! A segment file that someone else also links (its link count is above one: an object holds
//! it) is never written again: once the trim has passed its segment, [`SegmentFiles::release`]
//! unlinks it from the WAL and creates a fresh file under its name, before the ring may reuse
//! that space.

use std::cell::{Cell, RefCell};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, ReadResult};

use crate::device::{c_path, open_dma, preallocate};
use crate::format::{BLOCK_SIZE, RING_OFFSET};
use crate::recovery::RECOVERY_READ_BYTES;
use crate::{Durability, WalError};

/// The file holding the segment size of a directory.
const LAYOUT_FILE: &str = "layout";
/// The file holding the header blocks.
const HEADER_FILE: &str = "header";

/// The open files of a segmented WAL, shared by its device handles.
pub(crate) struct SegmentFiles {
    dir: PathBuf,
    segment_bytes: u64,
    durability: Durability,
    header: Rc<TrackedFile>,
    segments: RefCell<Vec<Rc<TrackedFile>>>,
    /// Counts completed writes; a file's `written` is this count at its latest write.
    writes_completed: Cell<u64>,
}

/// One open file and what its fdatasync must cover.
struct TrackedFile {
    file: Rc<DmaFile>,
    /// `writes_completed` when a write to this file last completed.
    written: Cell<u64>,
    /// Every write counted up to this is durable.
    synced: Cell<u64>,
    /// The end of the furthest write to this file since it was opened; `None` if unknown (a
    /// file found at open), so that nothing of it is ever punched.
    written_end: Cell<Option<u64>>,
}

impl TrackedFile {
    fn new(file: DmaFile, written_end: Option<u64>) -> TrackedFile {
        TrackedFile {
            file: Rc::new(file),
            written: Cell::new(0),
            synced: Cell::new(0),
            written_end: Cell::new(written_end),
        }
    }
}

/// What [`SegmentFiles::open`] found.
pub(crate) struct OpenedSegments {
    pub files: SegmentFiles,
    /// The header file did not exist: a new WAL.
    pub created: bool,
}

impl SegmentFiles {
    /// Opens the segmented WAL in `dir`, creating it with segments of
    /// `segment_bytes_if_new` if it does not exist (`None`: it must exist); a directory made
    /// earlier keeps the segment size it was made with. A segment file missing (a crash while
    /// replacing it) is created.
    pub(crate) async fn open(
        dir: &Path,
        capacity_bytes: u64,
        segment_bytes_if_new: Option<u64>,
        durability: Durability,
    ) -> Result<OpenedSegments, WalError> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::io("create directory", dir, e))?;
        let segment_bytes = read_or_write_layout(dir, segment_bytes_if_new)?;
        check_layout(capacity_bytes, segment_bytes).map_err(WalError::InvalidConfig)?;
        let header_path = dir.join(HEADER_FILE);
        let created = !header_path.exists();
        if created {
            // Writes zeros over the header blocks: glommio probes polled I/O by reading the
            // first file it opens on a device, which must not be an unwritten extent.
            preallocate(&header_path, RING_OFFSET, true)?;
        }
        let header = open_dma(&header_path, durability, false).await?;
        let count = capacity_bytes / segment_bytes;
        let mut segments = Vec::with_capacity(count as usize);
        for index in 0..count {
            let path = segment_path(dir, index);
            // What a file found here holds is not known: it is never punched.
            let (file, written_end) = match std::fs::metadata(&path) {
                Ok(meta) => {
                    if meta.len() < segment_bytes {
                        preallocate(&path, segment_bytes, false)?;
                    }
                    (open_dma(&path, durability, false).await?, None)
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => (
                    create_segment_file(&path, segment_bytes, durability).await?,
                    Some(0),
                ),
                Err(error) => return Err(WalError::io("stat", &path, error)),
            };
            let file = TrackedFile::new(file, written_end);
            // Counted as written: what a crash left unsynced in them (recovery returns it as
            // durable) is synced by the open's first fdatasync.
            file.written.set(1);
            segments.push(Rc::new(file));
        }
        sync_dir(dir).await?;
        Ok(OpenedSegments {
            files: SegmentFiles {
                dir: dir.to_path_buf(),
                segment_bytes,
                durability,
                header: Rc::new(TrackedFile::new(header, None)),
                segments: RefCell::new(segments),
                writes_completed: Cell::new(1),
            },
            created,
        })
    }

    pub(crate) fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The path of the file holding ring offset `ring_offset`.
    pub(crate) fn path_of(&self, ring_offset: u64) -> PathBuf {
        segment_path(&self.dir, ring_offset / self.segment_bytes)
    }

    /// The file holding byte `position` of the one-file layout, and the byte in that file.
    fn locate(&self, position: u64) -> (Rc<TrackedFile>, u64, Option<u64>) {
        if position < RING_OFFSET {
            return (self.header.clone(), position, None);
        }
        let ring_offset = position - RING_OFFSET;
        let index = (ring_offset / self.segment_bytes) as usize;
        let file = self.segments.borrow()[index].clone();
        let offset = ring_offset % self.segment_bytes;
        (file, offset, Some(self.segment_bytes - offset))
    }

    pub(crate) fn alloc_dma_buffer(&self, size: usize) -> DmaBuffer {
        self.header.file.alloc_dma_buffer(size)
    }

    /// Writes `buf` at byte `position` of the one-file layout; the write must not cross a
    /// segment's end (the WAL never places one that does).
    pub(crate) async fn write_at(&self, buf: DmaBuffer, position: u64) -> std::io::Result<usize> {
        let len = buf.len() as u64;
        let (file, offset, room) = self.locate(position);
        if room.is_some_and(|room| len > room) {
            return Err(std::io::Error::other(format!(
                "a write of {len} bytes at {position} crosses a segment's end"
            )));
        }
        let written = file.file.write_at(buf, offset).await?;
        let count = self.writes_completed.get() + 1;
        self.writes_completed.set(count);
        file.written.set(count);
        if room.is_some()
            && let Some(furthest) = file.written_end.get()
        {
            file.written_end
                .set(Some(furthest.max(offset + written as u64)));
        }
        Ok(written)
    }

    /// Reads `len` bytes at `position` (both block-aligned), within one file.
    pub(crate) async fn read_at_aligned(
        &self,
        position: u64,
        len: usize,
    ) -> std::io::Result<ReadResult> {
        let (file, offset, room) = self.locate(position);
        let len = room.map_or(len as u64, |room| room.min(len as u64));
        Ok(file.file.read_at_aligned(offset, len as usize).await?)
    }

    /// Bytes from ring offset `ring_offset` to the end of its segment: one read never crosses
    /// a file.
    pub(crate) fn contiguous_bytes(&self, ring_offset: u64) -> u64 {
        self.segment_bytes - ring_offset % self.segment_bytes
    }

    /// Makes every write completed before this call durable: an fdatasync of each file written
    /// since its last sync (usually one segment, two at a segment's end).
    pub(crate) async fn fdatasync(&self) -> std::io::Result<()> {
        let covered = self.writes_completed.get();
        let dirty: Vec<Rc<TrackedFile>> = self
            .segments
            .borrow()
            .iter()
            .filter(|f| f.written.get() > f.synced.get())
            .cloned()
            .collect();
        let header_dirty = self.header.written.get() > self.header.synced.get();
        for file in &dirty {
            file.file.fdatasync().await?;
            file.synced.set(file.synced.get().max(covered));
        }
        if header_dirty || dirty.is_empty() {
            // With nothing written a sync still has to be a barrier for the caller (a header
            // write, or a sync asked for at open): the header file's is the cheapest.
            self.header.file.fdatasync().await?;
            self.header
                .synced
                .set(self.header.synced.get().max(covered));
        }
        Ok(())
    }

    /// Replaces each segment file in `[first, end)` (logical segment numbers) that something
    /// else links too, after punching out the part of it that holds no data: the trim has
    /// passed those segments, and the ring is about to reuse them. Done before the trim takes
    /// effect, so no write ever reaches a file an object holds.
    pub(crate) async fn release(&self, first: u64, end: u64) -> Result<(), WalError> {
        let count = self.segments.borrow().len() as u64;
        // A trim past a whole lap still has each file at most once to look at.
        let end = end.min(first + count);
        for segment in first..end {
            self.release_one((segment % count) as usize).await?;
        }
        Ok(())
    }

    /// Replaces segment file `index` if an object links it (see [`SegmentFiles::release`]).
    pub(crate) async fn release_one(&self, index: usize) -> Result<(), WalError> {
        let path = segment_path(&self.dir, index as u64);
        let links = std::fs::metadata(&path)
            .map_err(|e| WalError::io("stat", &path, e))?
            .nlink();
        if links <= 1 {
            return Ok(());
        }
        let old = self.segments.borrow()[index].clone();
        if let Some(written_end) = old.written_end.get() {
            // The objects hold only data records, all below the furthest write; what lies
            // after it is fallocated space that would stay allocated as long as they live.
            let from = written_end.next_multiple_of(BLOCK_SIZE);
            if from < self.segment_bytes {
                old.file
                    .deallocate(from, self.segment_bytes - from)
                    .await
                    .map_err(|e| WalError::io("punch hole", &path, e.into()))?;
            }
        }
        std::fs::remove_file(&path).map_err(|e| WalError::io("unlink", &path, e))?;
        let fresh = create_segment_file(&path, self.segment_bytes, self.durability).await?;
        // The new name must survive a crash before any write lands in the file.
        sync_dir(&self.dir).await?;
        self.segments.borrow_mut()[index] = Rc::new(TrackedFile::new(fresh, Some(0)));
        if let Ok(old) = Rc::try_unwrap(old)
            && let Ok(file) = Rc::try_unwrap(old.file)
        {
            file.close()
                .await
                .map_err(|e| WalError::io("close", &path, e.into()))?;
        }
        Ok(())
    }

    /// Counts every segment as never written (a new WAL's, after its zeroing), so that a
    /// release punches out all that its data does not hold.
    pub(crate) fn forget_written_ends(&self) {
        for file in self.segments.borrow().iter() {
            file.written_end.set(Some(0));
        }
    }

    /// Closes every file.
    pub(crate) async fn close(&self) -> std::io::Result<()> {
        let segments = std::mem::take(&mut *self.segments.borrow_mut());
        for segment in segments {
            if let Ok(segment) = Rc::try_unwrap(segment)
                && let Ok(file) = Rc::try_unwrap(segment.file)
            {
                file.close().await?;
            }
        }
        Ok(())
    }
}

/// Checks that `capacity_bytes` splits into at least two segments of `segment_bytes`, a
/// multiple of a recovery read.
pub(crate) fn check_layout(capacity_bytes: u64, segment_bytes: u64) -> Result<(), String> {
    if segment_bytes == 0
        || !segment_bytes.is_multiple_of(RECOVERY_READ_BYTES)
        || !capacity_bytes.is_multiple_of(segment_bytes)
        || capacity_bytes / segment_bytes < 2
    {
        return Err(format!(
            "segment_bytes {segment_bytes} must be a multiple of {RECOVERY_READ_BYTES} that \
             divides capacity_bytes {capacity_bytes} into two segments or more"
        ));
    }
    Ok(())
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("segment-{index}"))
}

/// The segment size the directory was made with, or `segment_bytes` written as its layout
/// when it has none yet (durably, before any other file).
fn read_or_write_layout(dir: &Path, segment_bytes: Option<u64>) -> Result<u64, WalError> {
    let path = dir.join(LAYOUT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .strip_prefix("segment_bytes=")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                WalError::io(
                    "parse",
                    &path,
                    std::io::Error::other(format!("not a WAL layout: {text:?}")),
                )
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let Some(segment_bytes) = segment_bytes.filter(|_| !dir.join(HEADER_FILE).exists())
            else {
                // The layout is written before the header: a header without it is not ours,
                // and a directory no one asked to create segments in is not a WAL.
                return Err(WalError::UnsupportedTarget {
                    path: dir.to_path_buf(),
                });
            };
            let temporary = dir.join(format!("{LAYOUT_FILE}.new"));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&temporary)?;
                std::io::Write::write_all(
                    &mut file,
                    format!("segment_bytes={segment_bytes}\n").as_bytes(),
                )?;
                file.sync_all()?;
                std::fs::rename(&temporary, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|e| WalError::io("write layout", &path, e))?;
            Ok(segment_bytes)
        }
        Err(error) => Err(WalError::io("read", &path, error)),
    }
}

/// Creates a segment file of `segment_bytes` (allocated, not written: the first lap through
/// it converts its extents as it goes, which the segment's fdatasyncs then also persist).
async fn create_segment_file(
    path: &Path,
    segment_bytes: u64,
    durability: Durability,
) -> Result<DmaFile, WalError> {
    // Checks the name converts before anything is created.
    c_path(path)?;
    let file = open_dma(path, durability, true).await?;
    if let Err(error) = file.pre_allocate(segment_bytes, false).await {
        let error = std::io::Error::from(error);
        if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(WalError::io("fallocate", path, error));
        }
        // File systems without fallocate: a sparse file of the right size.
        file.truncate(segment_bytes)
            .await
            .map_err(|e| WalError::io("ftruncate", path, e.into()))?;
    }
    Ok(file)
}

async fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| WalError::io("open directory", dir, e.into()))?;
    directory
        .sync()
        .await
        .map_err(|e| WalError::io("sync directory", dir, e.into()))?;
    directory
        .close()
        .await
        .map_err(|e| WalError::io("close directory", dir, e.into()))
}
