//! Group requests as messages to the coordinator shard, and their answers.

use std::time::Duration;

use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;
use sluice_net::messages::consumer_group_describe_response::DescribedGroup as ConsumerDescribedGroup;
use sluice_net::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use sluice_net::messages::consumer_group_heartbeat_response::ConsumerGroupHeartbeatResponse;
use sluice_net::messages::describe_groups_response::DescribedGroup;
use sluice_net::messages::heartbeat_request::HeartbeatRequest;
use sluice_net::messages::join_group_request::JoinGroupRequest;
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::leave_group_request::LeaveGroupRequest;
use sluice_net::messages::leave_group_response::LeaveGroupResponse;
use sluice_net::messages::list_groups_response::ListedGroup;
use sluice_net::messages::offset_commit_request::OffsetCommitRequest;
use sluice_net::messages::offset_commit_response::OffsetCommitResponse;
use sluice_net::messages::offset_delete_request::OffsetDeleteRequest;
use sluice_net::messages::offset_delete_response::OffsetDeleteResponse;
use sluice_net::messages::sync_group_request::SyncGroupRequest;
use sluice_net::messages::sync_group_response::SyncGroupResponse;

use super::log::GroupLogEntry;
use super::{GroupCoordinator, GroupSettings, OffsetsByTopic, Pending};

/// A group request for the coordinator shard.
pub enum GroupCall {
    /// JoinGroup, with the connection's client id and host.
    Join {
        /// Request version.
        version: i16,
        /// The request.
        request: JoinGroupRequest,
        /// Client id from the request header.
        client_id: String,
        /// Peer host of the connection.
        client_host: String,
    },
    /// SyncGroup.
    Sync {
        /// Request version.
        version: i16,
        /// The request.
        request: SyncGroupRequest,
    },
    /// Heartbeat.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup.
    Leave {
        /// Request version.
        version: i16,
        /// The request.
        request: LeaveGroupRequest,
    },
    /// OffsetCommit.
    Commit {
        /// Request version.
        version: i16,
        /// The request.
        request: OffsetCommitRequest,
    },
    /// OffsetFetch of one group (`None`: every partition with a commit).
    FetchOffsets {
        /// Group id.
        group_id: String,
        /// Topics and partitions asked for.
        topics: Option<Vec<(String, Vec<i32>)>>,
        /// Member id (OffsetFetch v9+, consumer-protocol members).
        member_id: Option<String>,
        /// Member epoch (-1: none).
        member_epoch: i32,
    },
    /// ConsumerGroupHeartbeat, with the connection's client id and host.
    ConsumerHeartbeat {
        /// Request version.
        version: i16,
        /// The request.
        request: ConsumerGroupHeartbeatRequest,
        /// Client id from the request header.
        client_id: String,
        /// Peer host of the connection.
        client_host: String,
    },
    /// ConsumerGroupDescribe of one group.
    ConsumerDescribe(String),
    /// ListGroups of this shard.
    List {
        /// State names to keep (empty: all).
        states: Vec<String>,
        /// Group types to keep (empty: all).
        types: Vec<String>,
    },
    /// DescribeGroups of one group.
    Describe(String),
    /// DeleteGroups of one group.
    Delete(String),
    /// OffsetDelete.
    DeleteOffsets(OffsetDeleteRequest),
    /// Group-log entries replayed by another shard at start-up.
    Restore(Vec<GroupLogEntry>),
}

/// The coordinator's answer to a [`GroupCall`].
pub enum GroupReply {
    /// For Join.
    Join(JoinGroupResponse),
    /// For Sync.
    Sync(SyncGroupResponse),
    /// For Heartbeat.
    Heartbeat(ErrorCode),
    /// For Leave.
    Leave(LeaveGroupResponse),
    /// For Commit.
    Commit(OffsetCommitResponse),
    /// For FetchOffsets (the group's error code when the member check fails).
    Offsets(Result<OffsetsByTopic, ErrorCode>),
    /// For ConsumerHeartbeat: the answer, and how long to hold it back (see
    /// [`GroupCoordinator::consumer_group_heartbeat`]).
    ConsumerHeartbeat(ConsumerGroupHeartbeatResponse, Duration),
    /// For ConsumerDescribe.
    ConsumerDescribe(ConsumerDescribedGroup),
    /// For List.
    List(Vec<ListedGroup>),
    /// For Describe.
    Describe(DescribedGroup),
    /// For Delete.
    Delete(ErrorCode),
    /// For DeleteOffsets.
    DeleteOffsets(OffsetDeleteResponse),
    /// For Restore.
    Restored,
}

impl GroupCoordinator {
    /// Serves one call; JoinGroup and SyncGroup may wait for the rest of the group.
    pub async fn call(&self, call: GroupCall, image: &MetadataImage) -> GroupReply {
        let settings = GroupSettings::from_image(image);
        match call {
            GroupCall::Join {
                version,
                request,
                client_id,
                client_host,
            } => {
                let member_id = request.member_id.clone();
                GroupReply::Join(
                    match self.join(version, request, client_id, client_host, image, settings) {
                        Pending::Ready(response) => response,
                        Pending::Waiting(answer) => {
                            answer.await.unwrap_or_else(|_| JoinGroupResponse {
                                error_code: ErrorCode::UnknownMemberId.code(),
                                generation_id: -1,
                                member_id,
                                ..Default::default()
                            })
                        }
                    },
                )
            }
            GroupCall::Sync { version, request } => {
                GroupReply::Sync(match self.sync(version, request) {
                    Pending::Ready(response) => response,
                    Pending::Waiting(answer) => {
                        answer.await.unwrap_or_else(|_| SyncGroupResponse {
                            error_code: ErrorCode::RebalanceInProgress.code(),
                            ..Default::default()
                        })
                    }
                })
            }
            GroupCall::Heartbeat(request) => GroupReply::Heartbeat(self.heartbeat(request)),
            GroupCall::Leave { version, request } => {
                GroupReply::Leave(self.leave(version, request, settings))
            }
            GroupCall::Commit { version, request } => {
                GroupReply::Commit(self.commit(version, request, image).await)
            }
            GroupCall::FetchOffsets {
                group_id,
                topics,
                member_id,
                member_epoch,
            } => GroupReply::Offsets(self.fetch_offsets(
                &group_id,
                topics,
                (member_id.as_deref(), member_epoch),
            )),
            GroupCall::ConsumerHeartbeat {
                version,
                request,
                client_id,
                client_host,
            } => {
                let (response, hold) = self.consumer_group_heartbeat(
                    version,
                    request,
                    (client_id, client_host),
                    image,
                    settings,
                );
                GroupReply::ConsumerHeartbeat(response, hold)
            }
            GroupCall::ConsumerDescribe(group_id) => {
                GroupReply::ConsumerDescribe(self.consumer_group_describe(&group_id, image))
            }
            GroupCall::List { states, types } => GroupReply::List(self.list(&states, &types)),
            GroupCall::Describe(group_id) => GroupReply::Describe(self.describe(&group_id)),
            GroupCall::Delete(group_id) => GroupReply::Delete(self.delete(&group_id).await),
            GroupCall::DeleteOffsets(request) => {
                GroupReply::DeleteOffsets(self.delete_offsets(request).await)
            }
            GroupCall::Restore(entries) => {
                self.restore(entries);
                GroupReply::Restored
            }
        }
    }
}
