//! DescribeCluster and DescribeLogDirs.

use std::rc::Rc;

use sluice_net::messages::describe_cluster_request::DescribeClusterRequest;
use sluice_net::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use sluice_net::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use sluice_net::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};

use crate::messaging::ShardRequest;
use crate::shard::Shard;
use crate::storage::request::PartitionRequest;

/// This one-node cluster: its id, its controller and its broker.
pub fn describe_cluster(
    shard: &Shard,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = shard.image();
    DescribeClusterResponse {
        cluster_id: image.cluster_id.clone(),
        controller_id: image.node_id,
        brokers: vec![DescribeClusterBroker {
            broker_id: image.node_id,
            host: shard.advertised.0.clone(),
            port: shard.advertised.1,
            rack: None,
        }],
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
