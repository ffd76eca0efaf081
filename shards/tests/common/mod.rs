//! Set-up shared by the in-process shard tests.

use bytes::Bytes;
use sluice_net::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use sluice_net::{ApiKey, Request};
use sluice_shards::BrokerConfig;
use sluice_shards::in_process::request_frame;

/// The CreateTopics version of [`create_topics_frame`].
pub const CREATE_TOPICS_VERSION: i16 = 5;

/// A one-shard broker config on `dir` with a small WAL and memory budget, no admin port.
pub fn one_shard_config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        shards: 1,
        admin_listen: None,
        wal_bytes_per_shard: 16 << 20,
        memory_bytes: 64 << 20,
        ..BrokerConfig::default()
    }
}

/// An executor sized for one shard's io_memory.
pub fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(sluice_shards::runtime::io_memory_bytes(1))
        .make()
        .unwrap()
}

/// A CreateTopics (v5) frame for `topic` with `partitions` partitions.
pub fn create_topics_frame(topic: &str, partitions: i32) -> Bytes {
    request_frame(
        ApiKey::CreateTopics,
        CREATE_TOPICS_VERSION,
        &Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.to_string(),
                num_partitions: partitions,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            ..Default::default()
        }),
    )
    .unwrap()
}
