//! The broker runtime: one pinned glommio executor per core, partitions owned by shards,
//! the produce pipeline (parse → order → persist) and fetch long-poll.
//!
//! Start here: ARCHITECTURE.md at the project root, and [`Broker::start`] in `runtime.rs`. A
//! request's path is `connection.rs` (read, parse) → `api/` (one file per Kafka API) →
//! `messaging.rs` (to the owner shard, this one included) → `router.rs` (the owner takes it
//! in arrival order) → a service: `storage/` (partitions: order, persist, read), `group/`,
//! `txn/`; `tier/` uploads to and reads from objects.

pub mod admin_http;
pub mod affinity;
pub mod api;
pub mod barrier;
pub mod broker_client;
pub mod budget;
pub mod builder;
pub mod chunk_pool;
pub mod clock;
pub mod config;
pub mod connection;
pub mod connection_limits;
pub mod controller;
pub mod coordinator_move;
pub mod coordinator_partitions;
pub mod data_dir_lock;
pub mod errors;
pub mod group;
pub mod in_process;
pub mod internal_stream;
pub mod log_codec;
pub mod log_levels;
pub mod messaging;
pub mod metrics;
pub mod partition_move;
pub mod producer_ids;
pub mod quota;
pub mod recovery;
pub mod router;
pub mod runtime;
pub mod security;
pub mod shard;
pub mod socket_write;
pub mod startup_wait;
pub mod stop;
pub mod storage;
pub mod takeover;
pub mod task_permits;
pub mod tier;
pub mod txn;
pub mod warn_throttle;

pub use config::{BrokerConfig, QuorumSettings};
pub use runtime::{Broker, ControllerOnly, StartError};

/// The most bytes a batch may decompress to when the broker must read its records
/// (ListOffsets by timestamp); larger batches are answered at batch granularity.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;
