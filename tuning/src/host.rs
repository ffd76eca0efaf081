//! What every tuner reads from: a root under which /proc and /sys are found (so tests can
//! point at a fake tree), the data directory, and the shard count.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{Finding, Status};

/// Why a tuner could not produce a value; turned into a finding of the same status.
#[derive(Debug)]
pub(crate) enum Gap {
    /// The host lacks the knob (missing file, no block device, a container): nothing to fix.
    Unsupported(String),
    /// The knob exists but reading it failed or its content made no sense.
    Error(String),
}

impl Gap {
    /// The finding that reports this gap for `tuner`.
    pub(crate) fn into_finding(self, tuner: &'static str) -> Finding {
        let (status, reason) = match self {
            Gap::Unsupported(reason) => (Status::Unsupported, reason),
            Gap::Error(reason) => (Status::Error, reason),
        };
        Finding {
            tuner,
            status,
            current: String::new(),
            recommended: String::new(),
            advice: reason,
            fix: Vec::new(),
        }
    }
}

/// The machine as the tuners see it.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Prefix of every /proc and /sys path: "/" for the real machine.
    pub root: PathBuf,
    /// The broker's data directory (it may not exist yet).
    pub data_dir: PathBuf,
    /// Shards the broker will run.
    pub shards: usize,
}

/// The whole disk that holds the data directory (the parent of a partition).
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    /// Kernel name, e.g. `nvme0n1`, `vda`, `dm-0`.
    pub name: String,
    /// The disk's directory in sysfs, resolved (under the root).
    pub sys_dir: PathBuf,
}

impl Disk {
    /// The host path of a file in the disk's `queue/` directory, for advice and fixes.
    pub(crate) fn queue_path(&self, file: &str) -> String {
        format!("/sys/block/{}/queue/{file}", self.name)
    }

    /// Whether the kernel reports the disk as rotational (`queue/rotational` is 1).
    pub(crate) fn rotational(&self, host: &Host) -> Result<bool, Gap> {
        Ok(host.read_u64_at(&self.sys_dir.join("queue/rotational"))? == 1)
    }
}

impl Host {
    /// `abs` (a host path such as "/proc/sys/vm/swappiness") under the root.
    pub(crate) fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// The trimmed content of a host path.
    pub(crate) fn read(&self, abs: &str) -> Result<String, Gap> {
        self.read_at(&self.path(abs))
    }

    /// A host path's content as an unsigned integer.
    pub(crate) fn read_u64(&self, abs: &str) -> Result<u64, Gap> {
        self.read_u64_at(&self.path(abs))
    }

    /// The trimmed content of a file already under the root.
    pub(crate) fn read_at(&self, path: &Path) -> Result<String, Gap> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text.trim().to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Gap::Unsupported(format!(
                "{} does not exist here",
                self.shown(path)
            ))),
            Err(e) => Err(Gap::Error(format!("reading {}: {e}", self.shown(path)))),
        }
    }

    /// A file under the root, parsed as an unsigned integer.
    pub(crate) fn read_u64_at(&self, path: &Path) -> Result<u64, Gap> {
        let text = self.read_at(path)?;
        text.parse()
            .map_err(|_| Gap::Error(format!("{} holds {text:?}, not a number", self.shown(path))))
    }

    /// A path under the root as the host would name it, for messages.
    pub(crate) fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rest) => format!("/{}", rest.display()),
            Err(_) => path.display().to_string(),
        }
    }

    /// The data directory, or its nearest existing ancestor when it does not exist yet
    /// (`sluice start` creates it; `tune` must not).
    pub(crate) fn existing_data_dir(&self) -> Result<PathBuf, Gap> {
        let mut dir = self.data_dir.as_path();
        loop {
            if dir.is_dir() {
                return Ok(dir.to_path_buf());
            }
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
                // A relative path's last ancestor is the current directory.
                _ => return Ok(PathBuf::from(".")),
            }
        }
    }

    /// The disk holding the data directory: st_dev → /sys/dev/block/MAJ:MIN, up to the whole
    /// disk when that is a partition.
    pub(crate) fn wal_disk(&self) -> Result<Disk, Gap> {
        let dir = self.existing_data_dir()?;
        let meta = std::fs::metadata(&dir)
            .map_err(|e| Gap::Error(format!("stat {}: {e}", dir.display())))?;
        let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let link = self.path(&format!("/sys/dev/block/{major}:{minor}"));
        let mut sys_dir = match std::fs::canonicalize(&link) {
            Ok(path) => path,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Gap::Unsupported(format!(
                    "{} is on device {major}:{minor}, which is not a block device \
                     (overlay, tmpfs, btrfs, a network filesystem, or a container without /sys)",
                    dir.display()
                )));
            }
            Err(e) => return Err(Gap::Error(format!("resolving {}: {e}", self.shown(&link)))),
        };
        if sys_dir.join("partition").exists() {
            // Queue settings live on the whole disk, the partition's parent directory.
            if let Some(parent) = sys_dir.parent() {
                sys_dir = parent.to_path_buf();
            }
        }
        let name = sys_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Gap::Error(format!("{} has no device name", self.shown(&sys_dir))))?;
        Ok(Disk { name, sys_dir })
    }
}

/// Parses a kernel CPU list such as "0-3,8,10-11"; `None` on anything else.
pub(crate) fn parse_cpu_list(text: &str) -> Option<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
                // Bounded by the kernel's CPU count in practice; refuse absurd ranges anyway.
                if last < first || last - first > MAX_CPUS {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => {
                cpus.insert(part.parse().ok()?);
            }
        }
    }
    Some(cpus)
}

/// Formats CPUs as the kernel's compact list ("0-3,8").
pub(crate) fn format_cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

/// More CPUs than any kernel supports (CONFIG_NR_CPUS tops out at 8192).
const MAX_CPUS: usize = 1 << 16;

/// The running process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Reads a process resource limit (soft, hard); `None` if the call fails.
pub(crate) fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    let ok = unsafe { libc::getrlimit(resource, &mut limit) } == 0;
    ok.then_some((limit.rlim_cur, limit.rlim_max))
}

/// A limit for people: "unlimited" or bytes in the largest whole binary unit.
pub(crate) fn show_limit_bytes(bytes: u64) -> String {
    if bytes == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        show_bytes(bytes)
    }
}

/// Bytes in the largest binary unit not above them, whole when it divides them, else with
/// one decimal.
pub(crate) fn show_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match UNITS.iter().find(|(_, size)| bytes >= *size) {
        Some((unit, size)) if bytes.is_multiple_of(*size) => format!("{}{unit}", bytes / size),
        Some((unit, size)) => format!("{:.1}{unit}", bytes as f64 / *size as f64),
        None => format!("{bytes}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        let cpus = parse_cpu_list("0-3,8,10-11").expect("valid list");
        assert_eq!(cpus.len(), 7);
        assert_eq!(format_cpu_list(&cpus), "0-3,8,10-11");
        assert_eq!(parse_cpu_list(""), Some(BTreeSet::new()));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("0-99999999999"), None);
    }

    #[test]
    fn sizes_are_shown_in_units() {
        assert_eq!(show_bytes(8 << 20), "8MiB");
        assert_eq!(show_bytes(60 << 20), "60MiB");
        assert_eq!(show_bytes(512), "512B");
        assert_eq!(show_bytes(44_936_736_768), "41.9GiB");
        assert_eq!(show_bytes(1536), "1.5KiB");
        assert_eq!(show_limit_bytes(libc::RLIM_INFINITY), "unlimited");
    }
}
