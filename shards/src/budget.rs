//! How a shard's share of `--memory` is split, in one place. A shard's budget is
//! `memory_bytes / shards`:
//!
//! - three quarters are its chunk pool (a buddy allocator allocated at start): request
//!   frames, the log cache and the batches produced since the last upload live in it;
//! - within the pool, request frames in flight may use a quarter of the budget and the log
//!   cache three eighths, which leaves room a buddy allocator needs to find large blocks;
//! - an eighth is the block cache of cold reads;
//! - a sixteenth bounds one compaction step (shard 0 only).

use crate::config::BrokerConfig;

/// The byte figures of one shard's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardBudget {
    /// The shard's whole share.
    pub shard_bytes: u64,
    /// The chunk pool.
    pub memory_pool_bytes: usize,
    /// Request frames read but not answered; past it the shard stops reading sockets.
    pub request_bytes: u64,
    /// Recent batches kept in memory for fetches.
    pub log_cache_bytes: u64,
    /// Object blocks kept for cold reads.
    pub block_cache_bytes: usize,
    /// Bytes of objects one compaction step may read (it holds about twice that at its peak).
    pub compaction_step_bytes: usize,
    /// Bytes a shard uploads at once: `--upload-size`, at most a quarter of its WAL and half
    /// its log cache. The batches waiting for an upload and those of the upload in flight are
    /// in the pool and cannot be evicted: past half the log cache each, a large
    /// `--upload-size` with a long `--upload-interval-ms` filled the pool before any upload
    /// was due, and produce stalled for good.
    pub upload_bytes: usize,
}

impl ShardBudget {
    /// The budget of each of `shards` shards under `config`.
    pub fn of(config: &BrokerConfig, shards: usize) -> ShardBudget {
        let shard_bytes = config.memory_bytes / shards.max(1) as u64;
        ShardBudget {
            shard_bytes,
            memory_pool_bytes: (shard_bytes / 4 * 3) as usize,
            // A frame larger than a quarter of the budget must still be readable.
            request_bytes: (shard_bytes / 4)
                .max(config.max_frame_bytes as u64 / 4)
                .max(1 << 20),
            log_cache_bytes: shard_bytes / 8 * 3,
            block_cache_bytes: (shard_bytes / 8) as usize,
            compaction_step_bytes: (shard_bytes / 16).max(1 << 20) as usize,
            upload_bytes: config
                .upload_bytes
                .min((config.wal_bytes_per_shard / 4) as usize)
                .min((shard_bytes / 8 * 3 / 2) as usize)
                .max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_fit_the_share() {
        let config = BrokerConfig {
            memory_bytes: 2 << 30,
            ..BrokerConfig::default()
        };
        let budget = ShardBudget::of(&config, 2);
        assert_eq!(budget.shard_bytes, 1 << 30);
        assert_eq!(budget.memory_pool_bytes, 768 << 20);
        assert_eq!(budget.log_cache_bytes, 384 << 20);
        assert_eq!(budget.request_bytes, 256 << 20);
        assert_eq!(budget.block_cache_bytes, 128 << 20);
        assert_eq!(budget.compaction_step_bytes, 64 << 20);
        // Frames and the log cache fit the pool with room to spare.
        assert!(budget.request_bytes + budget.log_cache_bytes < budget.memory_pool_bytes as u64);
        // An upload waiting and one in flight fit the log cache, whatever --upload-size says.
        let large_upload = ShardBudget::of(
            &BrokerConfig {
                upload_bytes: 3 << 30,
                wal_bytes_per_shard: 64 << 30,
                ..config
            },
            2,
        );
        assert_eq!(large_upload.upload_bytes, 192 << 20);
        assert!(2 * large_upload.upload_bytes as u64 <= large_upload.log_cache_bytes);
        assert!(budget.memory_pool_bytes + budget.block_cache_bytes <= budget.shard_bytes as usize);
    }

    #[test]
    fn tiny_budgets_keep_their_floors() {
        let config = BrokerConfig {
            memory_bytes: 1 << 20,
            ..BrokerConfig::default()
        };
        let budget = ShardBudget::of(&config, 4);
        assert_eq!(budget.compaction_step_bytes, 1 << 20);
        assert!(budget.request_bytes >= config.max_frame_bytes as u64 / 4);
        assert!(budget.upload_bytes >= 1);
    }
}
