//! Shard WALs for tests of the logs written through one (test builds only).

use std::future::Future;
use std::rc::Rc;

use sluice_wal::sim::{SimDisk, SimDiskConfig};
use sluice_wal::{Wal, WalConfig};

use crate::storage::shard_wal::ShardWal;

/// A shard WAL over a simulated disk whose operations finish after a number of scheduler
/// turns `seed` chooses, with one write in flight and 8 KiB group commits, so appends
/// often find the write window full and wait for it.
pub async fn contended(seed: u64) -> Rc<ShardWal> {
    const CAPACITY_BYTES: u64 = 4 << 20;
    let disk = SimDisk::new(
        sluice_wal::format::RING_OFFSET + CAPACITY_BYTES,
        SimDiskConfig {
            seed,
            latency_turns_max: 8,
            ..SimDiskConfig::default()
        },
    );
    let config = WalConfig {
        inflight_writes_max: 1,
        group_commit_bytes_max: 8 << 10,
        ..WalConfig::new("sim", CAPACITY_BYTES)
    };
    let (wal, _) = Wal::open_simulated(disk, config)
        .await
        .expect("a blank simulated disk opens");
    Rc::new(ShardWal::new(wal, usize::MAX))
}

/// Runs `test` for each of 20 seeds, each on an executor of its own over a fresh [`contended`]
/// WAL of that seed (for the test's failure message).
pub fn for_each_seed<F, T>(test: F)
where
    F: Fn(u64, Rc<ShardWal>) -> T + Copy + 'static,
    T: Future<Output = ()>,
{
    for seed in 0..20u64 {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor");
        executor.run(async move { test(seed, contended(seed).await).await });
    }
}

/// Waits until everything appended is durable, then takes the records queued for upload:
/// each one's first offset, in WAL order.
pub async fn take_first_offsets(wal: &ShardWal) -> Vec<i64> {
    wal.wait_durable(wal.stats().append_position)
        .await
        .expect("durable");
    let mut offsets = Vec::new();
    while let Some(taken) = wal.take_durable(|record| {
        offsets.push(record.first_offset);
        Ok::<(), (sluice_objstore::AppendedRecord, ())>(())
    }) {
        taken.expect("nothing refuses a record");
    }
    offsets
}
