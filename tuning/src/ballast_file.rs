//! A ballast file in the data directory: space reserved now that an operator can delete
//! when the disk fills, so the broker can write again (and delete data) while the real cause
//! is fixed. Sluice ignores unknown files at the top of its data directory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::host::{Gap, Host, show_bytes};
use crate::{Finding, Tuner};

/// The ballast check (advice only: it takes disk space).
pub(crate) struct BallastFile;

/// The ballast's name inside the data directory.
const NAME: &str = "ballast";

/// Its size, as `rpk`'s ballast_file tuner makes it.
const BALLAST_BYTES: u64 = 1 << 30;

impl Tuner for BallastFile {
    fn name(&self) -> &'static str {
        "ballast_file"
    }

    fn check(&self, host: &Host) -> Result<Finding, Gap> {
        let ballast = host.data_dir.join(NAME);
        let free = free_bytes(&host.existing_data_dir()?)?;
        let recommended = format!("{} {}", ballast.display(), show_bytes(BALLAST_BYTES));
        match std::fs::metadata(&ballast) {
            Ok(meta) => Ok(Finding::ok(
                self.name(),
                format!(
                    "{} ballast, {} free",
                    show_bytes(meta.len()),
                    show_bytes(free)
                ),
                recommended,
                format!(
                    "delete {} to free space when the disk fills",
                    ballast.display()
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Finding::advice(
                self.name(),
                format!("no ballast, {} free", show_bytes(free)),
                recommended,
                format!(
                    "`mkdir -p {dir} && fallocate -l 1G {path}`; delete it to get room back \
                     when the disk fills",
                    dir = host.data_dir.display(),
                    path = ballast.display()
                ),
            )),
            Err(e) => Err(Gap::Error(format!("stat {}: {e}", ballast.display()))),
        }
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Result<u64, Gap> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Gap::Error(format!("{} contains a NUL byte", dir.display())))?;
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(Gap::Error(format!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::testing::FakeRoot;

    #[test]
    fn ballast_is_advised_until_present() {
        let fake = FakeRoot::new();
        let finding = BallastFile.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Advice);
        assert!(
            finding.advice.contains("fallocate -l 1G"),
            "{}",
            finding.advice
        );
        assert!(finding.current.starts_with("no ballast, "));

        fake.file("/data/ballast", "x");
        let finding = BallastFile.check(&fake.host(1)).expect("readable");
        assert_eq!(finding.status, Status::Ok);
        assert!(
            finding.current.starts_with("1B ballast"),
            "{}",
            finding.current
        );
    }
}
