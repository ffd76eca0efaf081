//! The WAL target: opening a regular file (created and preallocated) or a raw
//! block device, always with O_DIRECT, refusing clearly what cannot work; and
//! [`Device`], the one seam every WAL read, write and sync goes through.
//!
//! The opening syscalls are one-off (stat, open, fallocate, ioctl); the hot
//! path never comes here.

use std::ffi::CString;
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use crate::format::{BLOCK_SIZE, RING_OFFSET};
use crate::{Durability, WalError};

/// `_IO(0x12, 104)`: logical sector size of a block device.
const BLKSSZGET: libc::c_ulong = 0x1268;
/// `_IOR(0x12, 114, size_t)`: size of a block device in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// Where the WAL's bytes live. An enum, not a trait object: the broker's build
/// has the one `File` variant (the `sim` feature, on only in the simulator's
/// test build, adds the in-memory disk), so every call is a direct call on the
/// `DmaFile` with no vtable and no copy.
#[derive(Clone)]
pub(crate) enum Device {
    File(Rc<DmaFile>),
    /// The segmented layout (`segments.rs`): one file per segment and one for the header.
    Segments(Rc<crate::segments::SegmentFiles>),
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimDisk),
}

/// Bytes read from a [`Device`].
pub(crate) enum DeviceRead {
    File(ReadResult),
    #[cfg(feature = "sim")]
    Sim(bytes::Bytes),
}

impl Deref for DeviceRead {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            DeviceRead::File(read) => read,
            #[cfg(feature = "sim")]
            DeviceRead::Sim(bytes) => bytes,
        }
    }
}

impl Device {
    /// A buffer for [`Device::write_at`] (registered with io_uring when it has room).
    pub(crate) fn alloc_dma_buffer(&self, size: usize) -> DmaBuffer {
        match self {
            Device::File(file) => file.alloc_dma_buffer(size),
            Device::Segments(files) => files.alloc_dma_buffer(size),
            #[cfg(feature = "sim")]
            Device::Sim(_) => glommio::allocate_dma_buffer(size),
        }
    }

    /// Writes `buf` at byte `position`; returns the bytes written.
    pub(crate) async fn write_at(&self, buf: DmaBuffer, position: u64) -> std::io::Result<usize> {
        match self {
            Device::File(file) => Ok(file.write_at(buf, position).await?),
            Device::Segments(files) => files.write_at(buf, position).await,
            #[cfg(feature = "sim")]
            Device::Sim(disk) => disk.write_at(buf.as_bytes(), position).await,
        }
    }

    /// Reads `len` bytes at `position` (both block-aligned); fewer at the end of the device.
    pub(crate) async fn read_at_aligned(
        &self,
        position: u64,
        len: usize,
    ) -> std::io::Result<DeviceRead> {
        match self {
            Device::File(file) => Ok(DeviceRead::File(file.read_at_aligned(position, len).await?)),
            Device::Segments(files) => Ok(DeviceRead::File(
                files.read_at_aligned(position, len).await?,
            )),
            #[cfg(feature = "sim")]
            Device::Sim(disk) => Ok(DeviceRead::Sim(disk.read_at(position, len).await?)),
        }
    }

    pub(crate) async fn fdatasync(&self) -> std::io::Result<()> {
        match self {
            Device::File(file) => Ok(file.fdatasync().await?),
            Device::Segments(files) => files.fdatasync().await,
            #[cfg(feature = "sim")]
            Device::Sim(disk) => disk.fdatasync().await,
        }
    }

    /// The segmented layout's files, if this is one.
    pub(crate) fn segments(&self) -> Option<&crate::segments::SegmentFiles> {
        match self {
            Device::Segments(files) => Some(files),
            _ => None,
        }
    }

    /// Bytes from ring offset `ring_offset` that one read may cover: to the end of the ring,
    /// or of the segment file holding it.
    pub(crate) fn contiguous_bytes(&self, ring_offset: u64, capacity_bytes: u64) -> u64 {
        match self {
            Device::Segments(files) => files.contiguous_bytes(ring_offset),
            _ => capacity_bytes - ring_offset,
        }
    }

    /// Closes the file once this is its last handle (a handle still held elsewhere, e.g.
    /// by a recovery read, closes it when dropped).
    pub(crate) async fn close(self) -> std::io::Result<()> {
        match self {
            Device::File(file) => match Rc::try_unwrap(file) {
                Ok(file) => Ok(file.close().await?),
                Err(_) => Ok(()),
            },
            Device::Segments(files) => files.close().await,
            #[cfg(feature = "sim")]
            Device::Sim(_) => Ok(()),
        }
    }
}

/// What `open_target` found.
pub(crate) struct Target {
    pub file: DmaFile,
    /// True if the file did not exist and was created by this open.
    pub created: bool,
}

/// Opens `path` for O_DIRECT reads and writes, creating and preallocating a
/// regular file of `RING_OFFSET + capacity_bytes` if it is absent.
pub(crate) async fn open_target(
    path: &Path,
    capacity_bytes: u64,
    durability: Durability,
) -> Result<Target, WalError> {
    let size_needed = RING_OFFSET + capacity_bytes;
    let created = match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => {
            check_block_device(path, size_needed)?;
            false
        }
        Ok(meta) if meta.is_file() => {
            if meta.len() < size_needed {
                // A file that exists but is shorter than the ring (e.g. created
                // by an open that crashed before fallocate): extend it.
                preallocate(path, size_needed, false)?;
            }
            false
        }
        Ok(_) => {
            return Err(WalError::UnsupportedTarget {
                path: path.to_path_buf(),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            preallocate(path, size_needed, true)?;
            true
        }
        Err(error) => return Err(WalError::io("stat", path, error)),
    };
    // glommio probes polled-I/O support by reading the first block of the first
    // file it opens on a device; the file is never empty here (preallocated above).
    let file = open_dma(path, durability, false).await?;
    let alignment = file.alignment();
    if alignment > BLOCK_SIZE || !BLOCK_SIZE.is_multiple_of(alignment) {
        return Err(WalError::BadAlignment {
            path: path.to_path_buf(),
            alignment,
        });
    }
    Ok(Target { file, created })
}

/// Creates (if `create`) and preallocates a regular file, checking first that
/// the file system accepts O_DIRECT on it.
pub(crate) fn preallocate(path: &Path, size: u64, create: bool) -> Result<(), WalError> {
    let c_path = c_path(path)?;
    let create_flags = if create {
        libc::O_CREAT | libc::O_EXCL
    } else {
        0
    };
    // SAFETY: c_path is a valid NUL-terminated string; the fd is closed below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC | create_flags,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        let error = open_error(path, std::io::Error::last_os_error());
        if create && matches!(error, WalError::ODirectUnsupported { .. }) {
            // O_CREAT may have made the file before O_DIRECT was refused; O_EXCL
            // guarantees it is ours to remove.
            let _ = std::fs::remove_file(path);
        }
        return Err(error);
    }
    // SAFETY: fd is open; fallocate reserves the blocks and sets the size.
    let rc = unsafe { libc::fallocate(fd, 0, 0, size as libc::off_t) };
    let result = if rc == 0 {
        Ok(())
    } else {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // File systems without fallocate: a sparse file of the right size.
            // SAFETY: fd is open.
            if unsafe { libc::ftruncate(fd, size as libc::off_t) } == 0 {
                Ok(())
            } else {
                Err(WalError::io(
                    "ftruncate",
                    path,
                    std::io::Error::last_os_error(),
                ))
            }
        } else {
            Err(WalError::io("fallocate", path, error))
        }
    };
    let result = result.and_then(|()| {
        if create {
            write_header_area(fd, path)
        } else {
            Ok(())
        }
    });
    // SAFETY: fd is open and owned here.
    unsafe { libc::close(fd) };
    result
}

/// Writes zeros over the header blocks of a new file. glommio probes polled
/// I/O with a read of the first block; on a block that was never written
/// (an unwritten extent) the file system answers without any I/O, the probe
/// wrongly succeeds and every later read fails with EOPNOTSUPP.
fn write_header_area(fd: libc::c_int, path: &Path) -> Result<(), WalError> {
    let layout = std::alloc::Layout::from_size_align(RING_OFFSET as usize, BLOCK_SIZE as usize)
        .expect("valid layout");
    // SAFETY: non-zero size; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buf.is_null(), "allocation of {} bytes failed", RING_OFFSET);
    // SAFETY: buf holds RING_OFFSET initialised, block-aligned bytes.
    let written = unsafe { libc::pwrite(fd, buf.cast(), RING_OFFSET as usize, 0) };
    let error = std::io::Error::last_os_error();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    if written != RING_OFFSET as isize {
        return Err(WalError::io("write header area", path, error));
    }
    // SAFETY: fd is open.
    if unsafe { libc::fdatasync(fd) } != 0 {
        return Err(WalError::io(
            "fdatasync",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn check_block_device(path: &Path, size_needed: u64) -> Result<(), WalError> {
    let c_path = c_path(path)?;
    // SAFETY: valid path; the fd is closed below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(open_error(path, std::io::Error::last_os_error()));
    }
    let mut size_bytes: u64 = 0;
    let mut sector_bytes: libc::c_int = 0;
    // SAFETY: the ioctls write a u64 and an int to the pointers given.
    let rc_size = unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut size_bytes as *mut u64) };
    let rc_sector =
        unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut sector_bytes as *mut libc::c_int) };
    let error = std::io::Error::last_os_error();
    // SAFETY: fd is open and owned here.
    unsafe { libc::close(fd) };
    if rc_size != 0 || rc_sector != 0 {
        return Err(WalError::io("ioctl(BLKGETSIZE64/BLKSSZGET)", path, error));
    }
    let alignment = sector_bytes as u64;
    if alignment == 0 || alignment > BLOCK_SIZE || !BLOCK_SIZE.is_multiple_of(alignment) {
        return Err(WalError::BadAlignment {
            path: path.to_path_buf(),
            alignment,
        });
    }
    if size_bytes < size_needed {
        return Err(WalError::DeviceTooSmall {
            path: path.to_path_buf(),
            size_bytes,
            size_needed_bytes: size_needed,
        });
    }
    Ok(())
}

/// Opens `path` for O_DIRECT reads and writes in `durability`'s mode; with `create_new` the
/// file must not exist yet.
pub(crate) async fn open_dma(
    path: &Path,
    durability: Durability,
    create_new: bool,
) -> Result<DmaFile, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create_new)
        .custom_flags(open_flags(durability))
        .dma_open(path)
        .await
        .map_err(|error| open_error(path, std::io::Error::from(error)))
}

/// The open(2) flags, beyond O_DIRECT, of a WAL file written in `durability` mode.
fn open_flags(durability: Durability) -> libc::c_int {
    match durability {
        Durability::Dsync => libc::O_DSYNC,
        Durability::Fdatasync => 0,
    }
}

/// open(2) with O_DIRECT fails with EINVAL on file systems without direct I/O.
fn open_error(path: &Path, error: std::io::Error) -> WalError {
    if error.raw_os_error() == Some(libc::EINVAL) {
        WalError::ODirectUnsupported {
            path: path.to_path_buf(),
        }
    } else {
        WalError::io("open", path, error)
    }
}

pub(crate) fn c_path(path: &Path) -> Result<CString, WalError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| WalError::UnsupportedTarget {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn einval_on_open_names_the_path_as_odirect_unsupported() {
        let path = Path::new("/mnt/no-direct-io/wal");
        let error = open_error(path, std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(&error, WalError::ODirectUnsupported { path: p } if p == path));
        assert!(error.to_string().contains("/mnt/no-direct-io/wal"));
        let other = open_error(path, std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(other, WalError::Io { .. }));
    }
}
