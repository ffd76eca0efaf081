//! Helpers shared by the WAL's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use glommio::{LocalExecutorBuilder, Placement};

/// Registered I/O memory per test executor: small, so tests run under the
/// default RLIMIT_MEMLOCK (8 MiB) without CAP_IPC_LOCK.
pub const TEST_IO_MEMORY_BYTES: usize = 512 << 10;

/// Runs `future` to completion on a fresh glommio executor on this thread.
pub fn run<T>(future: impl Future<Output = T>) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(TEST_IO_MEMORY_BYTES)
        .make()
        .expect("glommio executor (raise RLIMIT_MEMLOCK if this fails)")
        .run(future)
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-wal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// SplitMix64: tiny, seedable, good enough for test data.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// The deterministic record number `index` of a test run with `seed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub stream_id: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub payload: Vec<u8>,
}

pub fn test_record(seed: u64, index: u64, payload_bytes_max: u64) -> TestRecord {
    let mut rng = Rng(seed ^ index.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let len = match rng.below(100) {
        0 => rng.below(payload_bytes_max + 1),
        1..=9 => rng.below(64 << 10),
        _ => rng.below(4 << 10),
    };
    let mut payload = vec![0u8; len as usize];
    rng.fill(&mut payload);
    TestRecord {
        stream_id: rng.below(16),
        first_offset: index,
        last_offset: index + rng.below(100),
        payload,
    }
}

/// Physical byte offset in the file of logical WAL position `position`.
pub fn file_offset(capacity_bytes: u64, position: u64) -> u64 {
    sluice_wal::format::RING_OFFSET + position % capacity_bytes
}

/// Overwrites bytes of a closed WAL file (a buffered write; the next O_DIRECT
/// open reads it back after the kernel writes the page cache out).
pub fn overwrite(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for corruption");
    file.write_all_at(bytes, offset).expect("corrupt");
    file.sync_all().expect("sync corruption");
}
