//! The broker runtime: one pinned glommio executor per core, partitions owned by shards,
//! the produce pipeline (parse → order → persist) and fetch long-poll.
//!
//! Start here: [`Broker::start`] in `runtime.rs`; a request's path is `connection.rs` (read,
//! parse) → `api/` (one file per Kafka API) → `shard.rs` (routing to the owner shard) →
//! `partition.rs` (order, persist through the WAL, read).

pub mod admin_http;
pub mod affinity;
pub mod api;
pub mod chunk_pool;
pub mod config;
pub mod connection;
pub mod connection_limits;
pub mod controller;
pub mod errors;
pub mod group;
pub mod in_process;
pub mod internal_stream;
pub mod log_codec;
pub mod metrics;
pub mod partition;
pub mod partition_log;
pub mod producer_state;
pub mod runtime;
pub mod shard;
pub mod shard_wal;
pub mod tier;
pub mod txn;

pub use config::BrokerConfig;
pub use runtime::{Broker, StartError};

/// The most bytes a batch may decompress to when the broker must read its records
/// (ListOffsets by timestamp); larger batches are answered at batch granularity.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;
