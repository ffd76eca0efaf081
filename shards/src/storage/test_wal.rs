//! Shard WALs for tests of the logs written through one (test builds only).

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
    Rc::new(ShardWal::new(wal))
}

/// Takes the durable records queued for upload: each one's first offset, in WAL order.
pub fn take_first_offsets(wal: &ShardWal) -> Vec<i64> {
    let mut offsets = Vec::new();
    while let Some(taken) = wal.take_durable(|record| {
        offsets.push(record.first_offset);
        Ok::<(), (sluice_objstore::AppendedRecord, ())>(())
    }) {
        taken.expect("nothing refuses a record");
    }
    offsets
}
