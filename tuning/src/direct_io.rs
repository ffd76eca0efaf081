//! O_DIRECT on the data directory: the WAL writes 4 KiB blocks with O_DIRECT and O_DSYNC
//! (wal-direct/src/format.rs `BLOCK_SIZE`). Some filesystems refuse O_DIRECT (tmpfs, some
//! FUSE and network mounts) and some devices have larger logical blocks; this writes one
//! block exactly as the WAL would, reads it back, and removes the probe file.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::host::{Disk, Gap, Host, show_bytes};
use crate::{Finding, Tuner};

/// The O_DIRECT probe and block-size report.
pub(crate) struct DirectIo;

/// The WAL's block: its writes are this size and aligned to it.
const BLOCK_BYTES: usize = 4096;

impl Tuner for DirectIo {
    fn name(&self) -> &'static str {
        "direct_io"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let dir = host.existing_data_dir()?;
        if in_memory(&dir)? {
            return Ok(Finding::advice(
                self.name(),
                format!("{} is on tmpfs", dir.display()),
                "a disk-backed filesystem",
                "nothing on tmpfs survives a reboot, so acknowledged records would not: \
                 put --data-dir (or --wal-path) on ext4 or xfs on a local SSD",
            ));
        }
        // Block sizes are reported when the disk is found; the probe runs regardless.
        let sizes = host.wal_disk().ok().map(|disk| block_sizes(host, &disk));
        let probed = probe(&dir);
        Ok(evaluate(self.name(), &dir, sizes.as_deref(), probed))
    }
}

/// Whether `dir` is on tmpfs: it accepts O_DIRECT since Linux 6.6, but keeps nothing.
fn in_memory(dir: &Path) -> Result<bool, Gap> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Gap::Error(format!("{} contains a NUL byte", dir.display())))?;
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-parameter.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(Gap::Error(format!(
            "statfs {}: {}",
            dir.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(stat.f_type == libc::TMPFS_MAGIC)
}

/// "vda: logical 512B, physical 4KiB, rotational" (fields that cannot be read are left out).
fn block_sizes(host: &Host, disk: &Disk) -> String {
    let read = |file: &str| {
        host.read_u64_at(&disk.sys_dir.join("queue").join(file))
            .ok()
    };
    let mut parts = Vec::new();
    if let Some(bytes) = read("logical_block_size") {
        parts.push(format!("logical {}", show_bytes(bytes)));
    }
    if let Some(bytes) = read("physical_block_size") {
        parts.push(format!("physical {}", show_bytes(bytes)));
    }
    match read("rotational") {
        Some(1) => parts.push("rotational".to_owned()),
        Some(_) => parts.push("solid-state".to_owned()),
        None => {}
    }
    format!("{}: {}", disk.name, parts.join(", "))
}

/// Where a probe failed.
#[derive(Debug)]
enum ProbeError {
    Open(io::Error),
    Write(io::Error),
    Read(io::Error),
    Mismatch,
}

/// Writes one aligned block with O_DIRECT|O_DSYNC into a new file in `dir`, reads it back,
/// and removes the file whatever happened.
fn probe(dir: &Path) -> Result<(), ProbeError> {
    let path = dir.join(format!(".sluice-tune-direct-io-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(&path);
    // A refused O_DIRECT open may still have created the file.
    let _cleanup = RemoveOnDrop(path);
    let file: File = file.map_err(ProbeError::Open)?;
    let mut written = AlignedBlock::new();
    for (i, byte) in written.bytes().iter_mut().enumerate() {
        *byte = (i % 251) as u8; // a pattern that a zeroed or shifted block would not match
    }
    file.write_all_at(written.bytes(), 0)
        .map_err(ProbeError::Write)?;
    let mut read = AlignedBlock::new();
    file.read_exact_at(read.bytes(), 0)
        .map_err(ProbeError::Read)?;
    if read.bytes() != written.bytes() {
        return Err(ProbeError::Mismatch);
    }
    Ok(())
}

fn evaluate(
    tuner: &'static str,
    dir: &Path,
    sizes: Option<&str>,
    probed: Result<(), ProbeError>,
) -> Finding {
    let sizes = sizes.unwrap_or("block device unknown");
    let recommended = format!("O_DIRECT {} blocks", show_bytes(BLOCK_BYTES as u64));
    let refused = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
    match probed {
        Ok(()) => Finding::ok(
            tuner,
            format!("O_DIRECT ok; {sizes}"),
            recommended,
            format!("wrote and read back a 4KiB block in {}", dir.display()),
        ),
        Err(ProbeError::Open(e)) if refused(&e) => Finding::advice(
            tuner,
            format!("O_DIRECT refused; {sizes}"),
            recommended,
            format!(
                "the filesystem of {} does not support O_DIRECT (FUSE, some network mounts, \
                 tmpfs before Linux 6.6): put --data-dir (or --wal-path) on ext4 or xfs on a local SSD",
                dir.display()
            ),
        ),
        Err(ProbeError::Write(e) | ProbeError::Read(e)) if refused(&e) => Finding::advice(
            tuner,
            format!("4KiB O_DIRECT I/O refused; {sizes}"),
            recommended,
            "the device's logical block is larger than the WAL's 4KiB block: use a device \
             (or a namespace formatted) with 512B or 4KiB logical blocks",
        ),
        Err(ProbeError::Mismatch) => Finding {
            status: crate::Status::Error,
            ..Finding::advice(
                tuner,
                format!("O_DIRECT read-back differs; {sizes}"),
                recommended,
                "a 4KiB block read back differently from what was written: do not trust \
                 this device or filesystem with the WAL",
            )
        },
        Err(ProbeError::Open(e) | ProbeError::Write(e) | ProbeError::Read(e)) => Finding {
            status: crate::Status::Error,
            ..Finding::advice(
                tuner,
                format!("probe failed; {sizes}"),
                recommended,
                format!("O_DIRECT probe in {}: {e}", dir.display()),
            )
        },
    }
}

/// One WAL block in memory, aligned as O_DIRECT requires.
struct AlignedBlock {
    storage: Vec<u8>,
    start: usize,
}

impl AlignedBlock {
    fn new() -> Self {
        // Twice the size leaves room to start at an aligned address inside the allocation.
        let storage = vec![0u8; 2 * BLOCK_BYTES];
        let start = storage.as_ptr().align_offset(BLOCK_BYTES);
        assert!(start < BLOCK_BYTES, "u8 pointers can always be aligned");
        Self { storage, start }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + BLOCK_BYTES]
    }
}

/// Removes a probe file when the probe ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Nothing to do if it was never created.
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn probe_on_this_disk_leaves_nothing_behind() {
        let fake = FakeRoot::new();
        fake.disk(
            "nvme0n1",
            true,
            &[
                ("logical_block_size", "512\n"),
                ("physical_block_size", "4096\n"),
                ("rotational", "0\n"),
            ],
        );
        let finding = DirectIo.check(&fake.host(1)).expect("no gap");
        // The tempdir may be on tmpfs (advice); it must not be an error either way.
        assert_ne!(finding.status, Status::Error, "{finding:?}");
        if !in_memory(&fake.data_dir()).expect("statfs") {
            assert!(
                finding
                    .current
                    .ends_with("nvme0n1: logical 512B, physical 4KiB, solid-state"),
                "{}",
                finding.current
            );
        }
        let left: Vec<_> = std::fs::read_dir(fake.data_dir()).expect("ls").collect();
        assert!(left.is_empty(), "probe file left behind: {left:?}");
    }

    #[test]
    fn missing_data_dir_probes_its_parent() {
        let fake = FakeRoot::new();
        let mut host = fake.host(1);
        host.data_dir = fake.data_dir().join("not/yet");
        assert_eq!(host.existing_data_dir().expect("exists"), fake.data_dir());
        let finding = DirectIo.check(&host).expect("no gap");
        assert!(
            finding.current.ends_with("block device unknown"),
            "{finding:?}"
        );
    }

    #[test]
    fn tmpfs_is_not_durable() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() || !in_memory(shm).expect("statfs") {
            return; // no tmpfs mounted here
        }
        let host = Host {
            root: "/".into(),
            data_dir: shm.join("sluice-tune-test-absent"),
            shards: 1,
        };
        let finding = DirectIo.check(&host).expect("no gap");
        assert_eq!(finding.status, Status::Advice);
        assert!(finding.advice.contains("reboot"), "{}", finding.advice);
    }

    #[test]
    fn refusals_are_advice_and_other_failures_errors() {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let dir = Path::new("/data");
        let open = evaluate("direct_io", dir, None, Err(ProbeError::Open(einval())));
        assert_eq!(open.status, Status::Advice);
        assert!(open.advice.contains("tmpfs"));
        let write = evaluate("direct_io", dir, None, Err(ProbeError::Write(einval())));
        assert!(write.advice.contains("logical block"));
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        let denied = evaluate("direct_io", dir, None, Err(ProbeError::Open(eacces)));
        assert_eq!(denied.status, Status::Error);
        let mismatch = evaluate("direct_io", dir, None, Err(ProbeError::Mismatch));
        assert_eq!(mismatch.status, Status::Error);
    }
}
