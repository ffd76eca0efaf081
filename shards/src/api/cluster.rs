//! DescribeCluster, DescribeQuorum and DescribeLogDirs.

use std::rc::Rc;

use sluice_net::ErrorCode;
use sluice_net::messages::describe_cluster_request::DescribeClusterRequest;
use sluice_net::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use sluice_net::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use sluice_net::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use sluice_net::messages::describe_quorum_request::DescribeQuorumRequest;
use sluice_net::messages::describe_quorum_response::{
    DescribeQuorumResponse, Listener, Node, PartitionData, ReplicaState, TopicData,
};

use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::request::PartitionRequest;

/// The cluster: its id and the brokers clients may use (as Metadata lists them).
pub fn describe_cluster(
    shard: &Shard,
    _request: DescribeClusterRequest,
    advertised: &(String, i32),
) -> DescribeClusterResponse {
    let image = shard.image();
    DescribeClusterResponse {
        cluster_id: image.cluster_id.clone(),
        controller_id: image.node_id,
        brokers: super::metadata::brokers(&image, advertised)
            .into_iter()
            .map(|b| DescribeClusterBroker {
                broker_id: b.node_id,
                host: b.host,
                port: b.port,
                rack: b.rack,
            })
            .collect(),
        ..Default::default()
    }
}

/// The metadata log's topic, as Kafka names it in DescribeQuorum.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// The metadata quorum (Kafka's `kafka-metadata-quorum describe --status`): with a controller
/// quorum, as its leader sees it (log positions are Raft indexes); a single node is the sole
/// voter and leader of its own log (positions are metadata epochs).
pub async fn describe_quorum(
    shard: &Shard,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let asks_for_metadata_log = request.topics.len() == 1
        && request.topics[0].topic_name == METADATA_TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    if !asks_for_metadata_log {
        return DescribeQuorumResponse {
            error_code: ErrorCode::UnknownTopicOrPartition.code(),
            error_message: Some(format!("only {METADATA_TOPIC}-0 has a quorum")),
            ..Default::default()
        };
    }
    let replica = |id: u64, log_end: Option<u64>| ReplicaState {
        replica_id: i32::try_from(id).unwrap_or(-1),
        log_end_offset: log_end.map_or(-1, |end| end as i64),
        ..Default::default()
    };
    let (partition, nodes) = match shard.controller.describe_quorum().await {
        None => {
            let image = shard.image();
            let epoch = image.epoch as i64;
            (
                PartitionData {
                    leader_id: image.node_id,
                    leader_epoch: 1,
                    high_watermark: epoch,
                    current_voters: vec![replica(image.node_id.max(0) as u64, Some(image.epoch))],
                    ..Default::default()
                },
                Vec::new(),
            )
        }
        Some(Err(error)) => {
            return DescribeQuorumResponse {
                error_code: error.kafka_error_code(),
                error_message: Some(error.to_string()),
                ..Default::default()
            };
        }
        Some(Ok(quorum)) => {
            let nodes = quorum
                .voters
                .iter()
                .filter_map(|(id, _)| {
                    let (host, port) = super::metadata::split_endpoint(quorum.addrs.get(id)?)?;
                    Some(Node {
                        node_id: i32::try_from(*id).ok()?,
                        listeners: vec![Listener {
                            name: "CONTROLLER".to_string(),
                            host,
                            port,
                        }],
                    })
                })
                .collect();
            (
                PartitionData {
                    leader_id: i32::try_from(quorum.leader).unwrap_or(-1),
                    leader_epoch: i32::try_from(quorum.term).unwrap_or(i32::MAX),
                    high_watermark: quorum.applied_index as i64,
                    current_voters: quorum
                        .voters
                        .iter()
                        .map(|(id, end)| replica(*id, *end))
                        .collect(),
                    observers: quorum
                        .observers
                        .iter()
                        .map(|(id, end)| replica(*id, *end))
                        .collect(),
                    ..Default::default()
                },
                nodes,
            )
        }
    };
    DescribeQuorumResponse {
        topics: vec![TopicData {
            topic_name: METADATA_TOPIC.to_string(),
            partitions: vec![partition],
        }],
        nodes,
        ..Default::default()
    }
}

/// The data directory with the size of every requested partition (all when the list is null).
pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    version: i16,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let image = shard.image();
    let wanted: Vec<(String, Vec<i32>)> = match request.topics {
        None => image
            .topics
            .values()
            .map(|t| {
                (
                    t.name.clone(),
                    t.partitions.iter().map(|p| p.index as i32).collect(),
                )
            })
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic, t.partitions))
            .collect(),
    };
    let mut topics = Vec::new();
    for (name, indexes) in wanted {
        let mut partitions = Vec::new();
        for index in indexes {
            let Some(part) = u32::try_from(index)
                .ok()
                .and_then(|i| image.partition(&name, i))
            else {
                continue;
            };
            let stream_id = part.stream_id;
            let answer = shard
                .mesh
                .ask(shard.owner_of(part), |reply| {
                    ShardRequest::Partition(PartitionRequest::Size { stream_id, reply })
                })
                .await;
            if let Ok(Ok(size)) = answer.await {
                partitions.push(DescribeLogDirsPartition {
                    partition_index: index,
                    partition_size: size as i64,
                    offset_lag: 0,
                    is_future_key: false,
                });
            }
        }
        if !partitions.is_empty() {
            topics.push(DescribeLogDirsTopic { name, partitions });
        }
    }
    let (total_bytes, usable_bytes) = disk_space(&shard.config.data_dir).unwrap_or((-1, -1));
    DescribeLogDirsResponse {
        error_code: 0,
        results: vec![DescribeLogDirsResult {
            error_code: 0,
            log_dir: shard.config.data_dir.display().to_string(),
            topics,
            total_bytes: if version >= 4 { total_bytes } else { -1 },
            usable_bytes: if version >= 4 { usable_bytes } else { -1 },
        }],
        ..Default::default()
    }
}

/// Total and free bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to writable memory
    // of the right type; statvfs only writes into it. Exercised by the DescribeLogDirs test.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize as i64;
    Some((stat.f_blocks as i64 * block, stat.f_bavail as i64 * block))
}
