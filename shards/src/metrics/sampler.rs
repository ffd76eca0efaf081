//! The per-shard task that copies figures held in single-threaded structures (the WAL, the
//! pools, the group coordinator) to where the admin HTTP thread can read them.

use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use glommio::sync::Semaphore;

use super::ShardSample;
use crate::shard::Shard;
use crate::stop::StopSignal;

/// How often a shard samples; `/metrics` shows these figures at most this old.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Samples `shard` every [`SAMPLE_INTERVAL`] until the broker stops; `memory` is the request
/// memory pool of `memory_capacity_bytes`.
pub async fn run_sampler(
    shard: Rc<Shard>,
    memory: Rc<Semaphore>,
    memory_capacity_bytes: u64,
    stop: StopSignal,
) {
    loop {
        shard.metrics.store_sample(ShardSample {
            wal: shard.storage.wal.stats(),
            partitions: shard.storage.partition_count() as u64,
            request_memory_used_bytes: memory_capacity_bytes.saturating_sub(memory.available()),
            request_memory_capacity_bytes: memory_capacity_bytes,
            memory_pool_used_bytes: shard.memory_pool.used_bytes() as u64,
            memory_pool_capacity_bytes: shard.memory_pool.capacity_bytes() as u64,
            memory_pool_waits_total: shard.memory_pool.waits_total(),
            log_cache_bytes: shard.storage.log_cache_bytes(),
            log_cache_capacity_bytes: shard.storage.tier.log_cache_budget_bytes(),
            block_cache_bytes: shard.storage.tier.block_cache_bytes() as u64,
            groups: shard.groups.census(),
        });
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(SAMPLE_INTERVAL).fuse() => {}
        }
    }
}
