//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete, and the
//! consumer protocol's ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848).
//! Each group is served by the shard its id hashes to; these handlers route there.

use std::rc::Rc;

use futures::future::join_all;
use sluice_net::ErrorCode;
use sluice_net::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use sluice_net::messages::consumer_group_describe_response::{
    ConsumerGroupDescribeResponse, DescribedGroup as ConsumerDescribedGroup,
};
use sluice_net::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use sluice_net::messages::consumer_group_heartbeat_response::ConsumerGroupHeartbeatResponse;
use sluice_net::messages::delete_groups_request::DeleteGroupsRequest;
use sluice_net::messages::delete_groups_response::{DeletableGroupResult, DeleteGroupsResponse};
use sluice_net::messages::describe_groups_request::DescribeGroupsRequest;
use sluice_net::messages::describe_groups_response::DescribeGroupsResponse;
use sluice_net::messages::find_coordinator_request::FindCoordinatorRequest;
use sluice_net::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use sluice_net::messages::heartbeat_request::HeartbeatRequest;
use sluice_net::messages::heartbeat_response::HeartbeatResponse;
use sluice_net::messages::join_group_request::JoinGroupRequest;
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::leave_group_request::LeaveGroupRequest;
use sluice_net::messages::leave_group_response::LeaveGroupResponse;
use sluice_net::messages::list_groups_request::ListGroupsRequest;
use sluice_net::messages::list_groups_response::ListGroupsResponse;
use sluice_net::messages::offset_commit_request::OffsetCommitRequest;
use sluice_net::messages::offset_commit_response::OffsetCommitResponse;
use sluice_net::messages::offset_delete_request::OffsetDeleteRequest;
use sluice_net::messages::offset_delete_response::OffsetDeleteResponse;
use sluice_net::messages::offset_fetch_request::OffsetFetchRequest;
use sluice_net::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_net::messages::sync_group_request::SyncGroupRequest;
use sluice_net::messages::sync_group_response::SyncGroupResponse;

use crate::group::OffsetsByTopic;
use crate::group::call::{GroupCall, GroupReply};
use crate::messaging::ShardRequest;
use crate::shard::Shard;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The broker that coordinates every group and transactional id: this one for a single node,
/// the first broker registered in a cluster (COORDINATOR_NOT_AVAILABLE while it is fenced).
pub fn find_coordinator(
    shard: &Shard,
    version: i16,
    request: FindCoordinatorRequest,
    advertised: &(String, i32),
) -> FindCoordinatorResponse {
    let image = shard.image();
    // Where Metadata sends clients to that broker; absent while it is fenced.
    let coordinator = image
        .coordinator()
        .and_then(|node| {
            super::metadata::brokers(&image, advertised)
                .into_iter()
                .find(|b| b.node_id == node)
        })
        .map(|b| (b.node_id, (b.host, b.port)))
        .ok_or(ErrorCode::CoordinatorNotAvailable);
    let found = match request.key_type {
        KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => coordinator,
        _ => Err(ErrorCode::InvalidRequest),
    };
    let (error, node, (host, port)) = match found {
        Ok((node, address)) => (ErrorCode::None, node, address),
        Err(code) => (code, -1, (String::new(), -1)),
    };
    if version < 4 {
        return FindCoordinatorResponse {
            error_code: error.code(),
            error_message: (error != ErrorCode::None).then(|| error.message().to_string()),
            node_id: node,
            host,
            port,
            ..Default::default()
        };
    }
    FindCoordinatorResponse {
        coordinators: request
            .coordinator_keys
            .into_iter()
            .map(|key| Coordinator {
                key,
                node_id: node,
                host: host.clone(),
                port,
                error_code: error.code(),
                error_message: None,
            })
            .collect(),
        ..Default::default()
    }
}

async fn call(shard: &Rc<Shard>, group_id: &str, call: GroupCall) -> Option<GroupReply> {
    if !shard.coordinates() {
        return None; // answered COORDINATOR_NOT_AVAILABLE: the client finds the coordinator
    }
    let owner = shard.coordinator_shard(group_id);
    let answer = shard
        .mesh
        .ask(owner, |reply| ShardRequest::Group { call, reply })
        .await;
    answer.await.ok()
}

/// JoinGroup.
pub async fn join_group(
    shard: &Rc<Shard>,
    version: i16,
    request: JoinGroupRequest,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group_id = request.group_id.clone();
    let member_id = request.member_id.clone();
    match call(
        shard,
        &group_id,
        GroupCall::Join {
            version,
            request,
            client_id,
            client_host,
        },
    )
    .await
    {
        Some(GroupReply::Join(response)) => response,
        _ => JoinGroupResponse {
            error_code: ErrorCode::CoordinatorNotAvailable.code(),
            generation_id: -1,
            member_id,
            ..Default::default()
        },
    }
}

/// SyncGroup.
pub async fn sync_group(
    shard: &Rc<Shard>,
    version: i16,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let group_id = request.group_id.clone();
    match call(shard, &group_id, GroupCall::Sync { version, request }).await {
        Some(GroupReply::Sync(response)) => response,
        _ => SyncGroupResponse {
            error_code: ErrorCode::CoordinatorNotAvailable.code(),
            ..Default::default()
        },
    }
}

/// Heartbeat.
pub async fn heartbeat(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.clone();
    let code = match call(shard, &group_id, GroupCall::Heartbeat(request)).await {
        Some(GroupReply::Heartbeat(code)) => code,
        _ => ErrorCode::CoordinatorNotAvailable,
    };
    HeartbeatResponse {
        error_code: code.code(),
        ..Default::default()
    }
}

/// LeaveGroup.
pub async fn leave_group(
    shard: &Rc<Shard>,
    version: i16,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group_id = request.group_id.clone();
    match call(shard, &group_id, GroupCall::Leave { version, request }).await {
        Some(GroupReply::Leave(response)) => response,
        _ => LeaveGroupResponse {
            error_code: ErrorCode::CoordinatorNotAvailable.code(),
            ..Default::default()
        },
    }
}

/// OffsetCommit.
pub async fn offset_commit(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group_id = request.group_id.clone();
    let unanswered =
        crate::group::offset_commit_error(&request, ErrorCode::CoordinatorNotAvailable);
    match call(shard, &group_id, GroupCall::Commit { version, request }).await {
        Some(GroupReply::Commit(response)) => response,
        _ => unanswered,
    }
}

/// Committed offsets as the response's topic and partition structs (which differ between
/// OffsetFetch v0–7 and v8+ but have the same fields); -1 and "" where nothing is committed.
macro_rules! offset_topics {
    ($offsets:expr, $topic:ident, $partition:ident) => {
        $offsets
            .into_iter()
            .map(|(name, partitions)| $topic {
                name,
                partitions: partitions
                    .into_iter()
                    .map(|(partition_index, committed)| {
                        let committed: Option<crate::group::log::CommittedOffset> = committed;
                        $partition {
                            partition_index,
                            committed_offset: committed.as_ref().map_or(-1, |c| c.offset),
                            committed_leader_epoch: committed
                                .as_ref()
                                .map_or(-1, |c| c.leader_epoch),
                            metadata: Some(committed.and_then(|c| c.metadata).unwrap_or_default()),
                            error_code: 0,
                        }
                    })
                    .collect(),
            })
            .collect()
    };
}

/// OffsetFetch: v0–7 one group, v8+ several.
pub async fn offset_fetch(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version < 8 {
        let topics = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect::<Vec<_>>()
        });
        let (offsets, error) = fetch_group(shard, &request.group_id, topics, (None, -1)).await;
        return OffsetFetchResponse {
            topics: offset_topics!(
                offsets,
                OffsetFetchResponseTopic,
                OffsetFetchResponsePartition
            ),
            error_code: error.code(),
            ..Default::default()
        };
    }
    let mut groups = Vec::with_capacity(request.groups.len());
    for group in request.groups {
        let topics = group.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect::<Vec<_>>()
        });
        let member = (group.member_id, group.member_epoch);
        let (offsets, error) = fetch_group(shard, &group.group_id, topics, member).await;
        groups.push(OffsetFetchResponseGroup {
            group_id: group.group_id,
            topics: offset_topics!(
                offsets,
                OffsetFetchResponseTopics,
                OffsetFetchResponsePartitions
            ),
            error_code: error.code(),
        });
    }
    OffsetFetchResponse {
        groups,
        ..Default::default()
    }
}

/// One group's committed offsets; `member` (id, epoch) is checked for consumer-protocol
/// groups (OffsetFetch v9+).
async fn fetch_group(
    shard: &Rc<Shard>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: (Option<String>, i32),
) -> (OffsetsByTopic, ErrorCode) {
    let request = GroupCall::FetchOffsets {
        group_id: group_id.to_string(),
        topics,
        member_id: member.0,
        member_epoch: member.1,
    };
    match call(shard, group_id, request).await {
        Some(GroupReply::Offsets(Ok(offsets))) => (offsets, ErrorCode::None),
        Some(GroupReply::Offsets(Err(code))) => (Vec::new(), code),
        _ => (Vec::new(), ErrorCode::CoordinatorNotAvailable),
    }
}

/// ListGroups: every shard's groups.
pub async fn list_groups(shard: &Rc<Shard>, request: ListGroupsRequest) -> ListGroupsResponse {
    let asks = (0..shard.count).map(|owner| {
        let states = request.states_filter.clone();
        let types = request.types_filter.clone();
        async move {
            let answer = shard
                .mesh
                .ask(owner, |reply| ShardRequest::Group {
                    call: GroupCall::List { states, types },
                    reply,
                })
                .await;
            match answer.await {
                Ok(GroupReply::List(groups)) => groups,
                _ => Vec::new(),
            }
        }
    });
    let mut groups: Vec<_> = join_all(asks).await.into_iter().flatten().collect();
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse {
        groups,
        ..Default::default()
    }
}

/// DescribeGroups.
pub async fn describe_groups(
    shard: &Rc<Shard>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        match call(shard, &group_id, GroupCall::Describe(group_id.clone())).await {
            Some(GroupReply::Describe(described)) => groups.push(described),
            _ => groups.push(
                sluice_net::messages::describe_groups_response::DescribedGroup {
                    error_code: ErrorCode::CoordinatorNotAvailable.code(),
                    group_id,
                    ..Default::default()
                },
            ),
        }
    }
    DescribeGroupsResponse {
        groups,
        ..Default::default()
    }
}

/// DeleteGroups.
pub async fn delete_groups(
    shard: &Rc<Shard>,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let code = match call(shard, &group_id, GroupCall::Delete(group_id.clone())).await {
            Some(GroupReply::Delete(code)) => code,
            _ => ErrorCode::CoordinatorNotAvailable,
        };
        results.push(DeletableGroupResult {
            group_id,
            error_code: code.code(),
        });
    }
    DeleteGroupsResponse {
        results,
        ..Default::default()
    }
}

/// OffsetDelete.
pub async fn offset_delete(
    shard: &Rc<Shard>,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.clone();
    match call(shard, &group_id, GroupCall::DeleteOffsets(request)).await {
        Some(GroupReply::DeleteOffsets(response)) => response,
        _ => OffsetDeleteResponse {
            error_code: ErrorCode::CoordinatorNotAvailable.code(),
            ..Default::default()
        },
    }
}

/// ConsumerGroupHeartbeat (KIP-848).
pub async fn consumer_group_heartbeat(
    shard: &Rc<Shard>,
    version: i16,
    request: ConsumerGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.clone();
    let heartbeat = GroupCall::ConsumerHeartbeat {
        version,
        request,
        client_id,
        client_host,
    };
    match call(shard, &group_id, heartbeat).await {
        Some(GroupReply::ConsumerHeartbeat(response, hold)) => {
            // Held here, on the connection's shard, so that the coordinator's task and its
            // permit are free meanwhile; the connection's later answers wait behind it.
            if !hold.is_zero() {
                glommio::timer::sleep(hold).await;
            }
            response
        }
        _ => ConsumerGroupHeartbeatResponse {
            error_code: ErrorCode::CoordinatorNotAvailable.code(),
            ..Default::default()
        },
    }
}

/// ConsumerGroupDescribe (KIP-848).
pub async fn consumer_group_describe(
    shard: &Rc<Shard>,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let describe = GroupCall::ConsumerDescribe(group_id.clone());
        groups.push(match call(shard, &group_id, describe).await {
            Some(GroupReply::ConsumerDescribe(described)) => described,
            _ => ConsumerDescribedGroup {
                error_code: ErrorCode::CoordinatorNotAvailable.code(),
                group_id,
                ..Default::default()
            },
        });
    }
    ConsumerGroupDescribeResponse {
        groups,
        ..Default::default()
    }
}
