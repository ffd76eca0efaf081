//! Fake /proc and /sys trees for the tuners' tests.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::host::Host;

/// A temporary root with a `data/` directory; files are written as host paths.
pub(crate) struct FakeRoot {
    dir: tempfile::TempDir,
}

/// The PCI device directory the fake disks and NICs hang off.
pub(crate) const PCI_DEVICE: &str = "/sys/devices/pci0000:00/0000:00:04.0";

impl FakeRoot {
    /// An empty root with an empty data directory.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        Self { dir }
    }

    /// The root directory.
    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory (inside the root, so on the tempdir's filesystem).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A host for this root with `shards` shards.
    pub(crate) fn host(&self, shards: usize) -> Host {
        Host {
            root: self.root().to_path_buf(),
            data_dir: self.data_dir(),
            shards,
        }
    }

    /// Writes `content` to the host path `path`, creating directories.
    pub(crate) fn file(&self, path: &str, content: &str) -> &Self {
        let full = self.full(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
        self
    }

    /// Makes host path `link` a symlink to `target` (relative, as sysfs links are).
    pub(crate) fn symlink(&self, link: &str, target: &str) -> &Self {
        let full = self.full(link);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, full).expect("symlink");
        self
    }

    /// The trimmed content of a host path.
    pub(crate) fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.full(path))
            .expect("read")
            .trim()
            .to_owned()
    }

    /// Adds a disk named `name` holding the data directory, on partition `name`p1 when
    /// `partitioned`, with the given `queue/` files.
    pub(crate) fn disk(&self, name: &str, partitioned: bool, queue: &[(&str, &str)]) -> &Self {
        let meta = std::fs::metadata(self.data_dir()).expect("stat data dir");
        let dev = format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev()));
        let disk_dir = format!("{PCI_DEVICE}/nvme/nvme0/{name}");
        for (file, content) in queue {
            self.file(&format!("{disk_dir}/queue/{file}"), content);
        }
        self.file(&format!("{disk_dir}/dev"), "259:0");
        let holder = if partitioned {
            let part = format!("{disk_dir}/{name}p1");
            self.file(&format!("{part}/partition"), "1");
            part
        } else {
            disk_dir.clone()
        };
        self.symlink(
            &format!("/sys/dev/block/{dev}"),
            &format!("../../..{holder}"),
        );
        self.symlink(&format!("/sys/block/{name}"), &format!("../..{disk_dir}"));
        self
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }
}
