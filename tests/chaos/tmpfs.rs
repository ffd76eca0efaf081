//! A tmpfs mounted for one scenario (the tests run as root), unmounted when dropped: a file
//! system that fills up on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB at `path` (created if missing).
    pub fn mount(path: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let size = format!("size={size_mib}m");
        mount(&["-t", "tmpfs", "-o", &size, "tmpfs"], path)?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Grows (or shrinks) the file system in place; its files stay.
    pub fn resize(&self, size_mib: u64) -> Result<(), String> {
        mount(&["-o", &format!("remount,size={size_mib}m")], &self.path)
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes())
            .expect("a path without NUL");
        // SAFETY: statvfs(3) with a NUL-terminated path and a zeroed out-struct.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let status = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(status, 0, "statvfs {}", self.path.display());
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file (a broker that has not exited yet): detach it, the
            // kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn mount(args: &[&str], path: &Path) -> Result<(), String> {
    let output = Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?} {} failed (the chaos suite mounts tmpfs and needs root): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
