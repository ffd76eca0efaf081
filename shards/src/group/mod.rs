//! The group coordinator of one shard: the groups of the coordinator partitions it serves
//! (`coordinator_partitions.rs`), their
//! rebalances (classic protocol here, the consumer protocol of KIP-848 in `consumer/`), and
//! their committed offsets, made durable through the WAL.

pub mod call;
pub mod census;
pub mod consumer;
pub mod limits;
pub mod log;
pub mod state;
pub mod txn;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use futures::channel::oneshot;
use sluice_metadata::{ConsumerGroupMigrationPolicy, MetadataImage};
use sluice_net::ErrorCode;
use sluice_net::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use sluice_net::messages::heartbeat_request::HeartbeatRequest;
use sluice_net::messages::join_group_request::JoinGroupRequest;
use sluice_net::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use sluice_net::messages::leave_group_request::LeaveGroupRequest;
use sluice_net::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use sluice_net::messages::list_groups_response::ListedGroup;
use sluice_net::messages::offset_commit_request::OffsetCommitRequest;
use sluice_net::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_net::messages::offset_delete_request::OffsetDeleteRequest;
use sluice_net::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use sluice_net::messages::sync_group_request::SyncGroupRequest;
use sluice_net::messages::sync_group_response::SyncGroupResponse;

use self::consumer::classic::ClassicJoin;
use self::limits::{GROUPS_MAX_ERROR, GroupLimits};
use self::log::{CommittedOffset, GroupLogEntry};
use self::state::{Group, GroupState, Member};
use crate::clock::now_ms;
use crate::coordinator_partitions::{CoordinatorLogs, CoordinatorPlacement};
use crate::storage::shard_wal::ShardWal;
use crate::warn_throttle::WarnThrottle;

/// Committed offsets by topic, then partition (`None`: nothing committed).
pub type OffsetsByTopic = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// Largest metadata string accepted with a commit (Kafka's offset.metadata.max.bytes).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// How often the coordinator checks session, rebalance and retention timers.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// How long a group with no members, no committed offsets and no member ids handed out is
/// kept before it is forgotten: Kafka removes such a group at its next
/// offsets.retention.check.interval.ms pass (10 minutes by default). Without it every group
/// id ever joined would count against `groups_max` for good.
pub const EMPTY_GROUP_RETENTION: Duration = Duration::from_secs(600);

/// Broker settings the coordinator applies, read from the broker configs.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay: Duration,
    /// group.min.session.timeout.ms
    pub min_session_timeout_ms: i32,
    /// group.max.session.timeout.ms
    pub max_session_timeout_ms: i32,
    /// offsets.retention.minutes, as a duration
    pub offsets_retention: Duration,
    /// group.consumer.heartbeat.interval.ms
    pub consumer_heartbeat_interval_ms: i32,
    /// group.consumer.session.timeout.ms, as a duration
    pub consumer_session_timeout: Duration,
    /// group.consumer.migration.policy
    pub migration_policy: ConsumerGroupMigrationPolicy,
    /// group.coordinator.append.linger.ms, as a duration
    pub coordinator_append_linger: Duration,
}

impl GroupSettings {
    /// The settings in force in `image`.
    pub fn from_image(image: &MetadataImage) -> GroupSettings {
        let broker = image.broker_config();
        GroupSettings {
            initial_rebalance_delay: Duration::from_millis(
                broker.group_initial_rebalance_delay_ms.max(0) as u64,
            ),
            min_session_timeout_ms: broker.group_min_session_timeout_ms,
            max_session_timeout_ms: broker.group_max_session_timeout_ms,
            offsets_retention: Duration::from_secs(
                broker.offsets_retention_minutes.max(1) as u64 * 60,
            ),
            consumer_heartbeat_interval_ms: broker.group_consumer_heartbeat_interval_ms,
            consumer_session_timeout: Duration::from_millis(
                broker.group_consumer_session_timeout_ms.max(1) as u64,
            ),
            migration_policy: broker.group_consumer_migration_policy,
            coordinator_append_linger: Duration::from_millis(
                broker.group_coordinator_append_linger_ms.max(0) as u64,
            ),
        }
    }
}

/// An answer now, or later (a JoinGroup or SyncGroup waiting for the rest of the group).
pub enum Pending<T> {
    /// The answer is ready.
    Ready(T),
    /// The answer arrives on this channel (dropped: the member was removed).
    Waiting(oneshot::Receiver<T>),
}

/// The groups coordinated by one shard.
pub struct GroupCoordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// The group logs of the coordinator partitions this shard serves.
    logs: CoordinatorLogs,
    limits: GroupLimits,
    /// This shard's WARN lines about `groups_max`, at most one per [`limits::WARN_INTERVAL`].
    groups_max_warnings: WarnThrottle,
}

impl GroupCoordinator {
    /// A coordinator persisting through `wal` into its partitions' group logs, with
    /// `limits`: one [`GroupLimits`] per broker, cloned into every shard's coordinator, so
    /// that `groups_max` counts the groups of all of them.
    pub fn new(
        wal: Rc<ShardWal>,
        placement: CoordinatorPlacement,
        limits: GroupLimits,
    ) -> GroupCoordinator {
        GroupCoordinator {
            groups: RefCell::new(HashMap::new()),
            logs: CoordinatorLogs::new(
                wal,
                placement,
                crate::internal_stream::group_log_stream,
                "group log",
            ),
            limits,
            groups_max_warnings: WarnThrottle::new(limits::WARN_INTERVAL),
        }
    }

    /// The limits this coordinator applies.
    pub fn limits(&self) -> &GroupLimits {
        &self.limits
    }

    /// Re-applies durable entries (WAL replay at start-up).
    pub fn restore(&self, entries: Vec<GroupLogEntry>) {
        let now = Instant::now();
        let mut groups = self.groups.borrow_mut();
        for entry in entries {
            match entry {
                GroupLogEntry::Commit {
                    group,
                    topic,
                    partition,
                    committed,
                } => {
                    // Durable groups come back whatever the cap: it refuses only new ones.
                    groups
                        .entry(group.clone())
                        .or_insert_with(|| {
                            self.limits.add_group_over_cap();
                            Group::new(group, now)
                        })
                        .offsets
                        .insert((topic, partition), committed);
                }
                GroupLogEntry::OffsetDelete {
                    group,
                    topic,
                    partition,
                } => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
                GroupLogEntry::GroupDelete { group } => {
                    if groups.remove(&group).is_some() {
                        self.limits.remove_groups(1);
                    }
                }
            }
        }
        if self.limits.groups() > self.limits.groups_max {
            tracing::warn!(
                groups = self.limits.groups(),
                "the groups restored from the WAL are more than groups_max = {} (--groups-max N): \
                 no new group is created until enough of them expire or are deleted",
                self.limits.groups_max
            );
        }
    }

    /// JoinGroup: adds or refreshes the member and prepares a rebalance when one is needed.
    pub fn join(
        &self,
        version: i16,
        request: JoinGroupRequest,
        client_id: String,
        client_host: String,
        image: &MetadataImage,
        settings: GroupSettings,
    ) -> Pending<JoinGroupResponse> {
        let now = Instant::now();
        let refuse = |code: ErrorCode, member_id: String| {
            Pending::Ready(JoinGroupResponse {
                error_code: code.code(),
                generation_id: -1,
                member_id,
                ..Default::default()
            })
        };
        if request.group_id.is_empty() {
            return refuse(ErrorCode::InvalidGroupId, request.member_id);
        }
        if request.session_timeout_ms < settings.min_session_timeout_ms
            || request.session_timeout_ms > settings.max_session_timeout_ms
        {
            return refuse(ErrorCode::InvalidSessionTimeout, request.member_id);
        }
        let rebalance_timeout_ms = if version == 0 || request.rebalance_timeout_ms <= 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        };
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return refuse(ErrorCode::UnknownMemberId, request.member_id);
            }
            // Refused before the group exists, so that a refused JoinGroup leaves none behind
            // (an empty group's check in `supports_protocols`).
            if request.protocol_type.is_empty() || protocols.is_empty() {
                return refuse(ErrorCode::InconsistentGroupProtocol, request.member_id);
            }
            if !self.try_create_group(&mut groups, &request.group_id, "JoinGroup", now) {
                return refuse(GROUPS_MAX_ERROR, String::new());
            }
        }
        let group = groups
            .get_mut(&request.group_id)
            .expect("found or inserted above");
        if let Some(consumer) = &mut group.consumer {
            if !consumer.members.is_empty() {
                // A classic member of a live consumer group (online migration, KIP-848).
                let join = ClassicJoin {
                    version,
                    member_id: request.member_id,
                    instance_id: request.group_instance_id,
                    protocol_type: request.protocol_type,
                    protocols,
                    session_timeout_ms: request.session_timeout_ms,
                    rebalance_timeout_ms,
                    client_id,
                    client_host,
                };
                let members_max = self.limits.group_members_max;
                return Pending::Ready(consumer.classic_join(join, image, now, members_max));
            }
            // An empty consumer group becomes a classic group, its offsets kept.
            group.consumer = None;
        }
        let members_max = self.limits.group_members_max;
        if !group.accepts_joining_member(&request.member_id, members_max) {
            // Kafka's classicGroupJoinToClassicGroup: the member goes (an existing member that
            // had not rejoined yet is the last to rejoin: it is the one left out) and is told
            // GROUP_MAX_SIZE_REACHED with no member id; clients treat it as fatal.
            if let Some(mut member) = group.members.remove(&request.member_id) {
                answer_removed(&mut member, ErrorCode::UnknownMemberId);
            }
            group.pending_members.remove(&request.member_id);
            tracing::debug!(group = %group.id, members_max, "JoinGroup refused: group_members_max");
            return refuse(ErrorCode::GroupMaxSizeReached, String::new());
        }
        if group.state == GroupState::Dead {
            return refuse(ErrorCode::CoordinatorNotAvailable, request.member_id);
        }
        if !group.supports_protocols(&request.protocol_type, &protocols) {
            return refuse(ErrorCode::InconsistentGroupProtocol, request.member_id);
        }
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        let (sender, receiver) = oneshot::channel();
        let fresh = |member_id: String| Member {
            member_id,
            group_instance_id: request.group_instance_id.clone(),
            client_id: client_id.clone(),
            client_host: client_host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            last_seen: now,
        };

        if request.member_id.is_empty() {
            let new_id = format!("{}-{}", client_id, unique_suffix());
            if let Some(instance) = &request.group_instance_id
                && let Some(old_id) = group
                    .member_by_instance(instance)
                    .map(|m| m.member_id.clone())
            {
                // A static member restarting: it takes over its old identity (KIP-345).
                let mut member = group.members.remove(&old_id).expect("found by instance");
                answer_removed(&mut member, ErrorCode::FencedInstanceId);
                // As Kafka: a Stable group is not rebalanced when the member still speaks the
                // group's protocol, whatever its metadata (a restarted member's subscription
                // bytes may differ, its assignment does not).
                let keeps_protocol = group
                    .protocol_name
                    .as_ref()
                    .is_some_and(|name| protocols.iter().any(|(p, _)| p == name));
                member.member_id = new_id.clone();
                member.client_id = client_id.clone();
                member.client_host = client_host.clone();
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = rebalance_timeout_ms;
                member.protocols = protocols.clone();
                member.last_seen = now;
                let previous_leader = group.leader.clone();
                if previous_leader.as_deref() == Some(old_id.as_str()) {
                    group.leader = Some(new_id.clone());
                }
                if group.state == GroupState::Stable && keeps_protocol {
                    // The answer names the leader as it was, so that a restarted leader does
                    // not take itself for the leader and assign again: a Stable group would
                    // not hand out that assignment (Kafka does the same).
                    let mut response = current_generation_response(group, &new_id);
                    response.leader = previous_leader.unwrap_or_default();
                    response.members = Vec::new();
                    group.members.insert(new_id, member);
                    return Pending::Ready(response);
                }
                member.awaiting_join = Some(sender);
                group.members.insert(new_id, member);
            } else if version >= 4 && request.group_instance_id.is_none() {
                // KIP-394: the member must come back with the id we give it. Kafka hands out
                // ids without bound while the group is Empty; Sluice stops at twice
                // group_members_max, so Kafka's answers hold for up to twice as many members
                // starting at once as the group can take, and a flood of JoinGroups without a
                // member id cannot grow the set.
                if group.pending_members.len() >= members_max.saturating_mul(2) {
                    return refuse(ErrorCode::GroupMaxSizeReached, String::new());
                }
                let expiry = now + Duration::from_millis(request.session_timeout_ms as u64);
                group.pending_members.insert(new_id.clone(), expiry);
                return refuse(ErrorCode::MemberIdRequired, new_id);
            } else {
                let mut member = fresh(new_id.clone());
                member.awaiting_join = Some(sender);
                group.members.insert(new_id, member);
            }
        } else if group.pending_members.remove(&request.member_id).is_some() {
            let mut member = fresh(request.member_id.clone());
            member.awaiting_join = Some(sender);
            group.members.insert(request.member_id.clone(), member);
        } else {
            if let Some(instance) = &request.group_instance_id
                && let Some(owner) = group.member_by_instance(instance)
                && owner.member_id != request.member_id
            {
                return refuse(ErrorCode::FencedInstanceId, request.member_id);
            }
            let Some(member) = group.members.get_mut(&request.member_id) else {
                return refuse(ErrorCode::UnknownMemberId, request.member_id);
            };
            let unchanged = member.protocols == protocols;
            member.protocols = protocols.clone();
            member.session_timeout_ms = request.session_timeout_ms;
            member.rebalance_timeout_ms = rebalance_timeout_ms;
            member.last_seen = now;
            let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
            match group.state {
                GroupState::Empty | GroupState::Dead => {
                    return refuse(ErrorCode::UnknownMemberId, request.member_id);
                }
                GroupState::CompletingRebalance | GroupState::Stable
                    if unchanged && !(is_leader && group.state == GroupState::Stable) =>
                {
                    // Nothing changed for this member: it gets the current generation again.
                    return Pending::Ready(current_generation_response(group, &request.member_id));
                }
                _ => {
                    // The member gave up on its earlier JoinGroup. REBALANCE_IN_PROGRESS, not
                    // UNKNOWN_MEMBER_ID: a client still listening retries with its member id
                    // instead of rejoining as a second member beside this one.
                    if let Some(old) = member.awaiting_join.replace(sender) {
                        let _ = old.send(JoinGroupResponse {
                            error_code: ErrorCode::RebalanceInProgress.code(),
                            generation_id: -1,
                            member_id: request.member_id.clone(),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        if group.state != GroupState::PreparingRebalance {
            prepare_rebalance(group, now, settings);
        } else if let Some(until) = group.initial_delay_until {
            // New members keep extending a new group's initial delay (bounded by the deadline).
            let extended = now + settings.initial_rebalance_delay;
            group.initial_delay_until = Some(until.max(extended));
        }
        try_complete_join(group, now);
        Pending::Waiting(receiver)
    }

    /// SyncGroup: the leader hands out assignments; followers wait for them.
    pub fn sync(&self, version: i16, request: SyncGroupRequest) -> Pending<SyncGroupResponse> {
        let now = Instant::now();
        let refuse = |code: ErrorCode| {
            Pending::Ready(SyncGroupResponse {
                error_code: code.code(),
                ..Default::default()
            })
        };
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&request.group_id) else {
            return refuse(ErrorCode::UnknownMemberId);
        };
        if let Some(consumer) = &mut group.consumer {
            let answer = consumer.classic_sync(
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                (
                    request.protocol_type.as_deref(),
                    request.protocol_name.as_deref(),
                ),
                now,
            );
            return answer.map_or_else(refuse, Pending::Ready);
        }
        if let Err(code) = check_member(
            group,
            &request.member_id,
            request.group_instance_id.as_deref(),
        ) {
            return refuse(code);
        }
        if request.generation_id != group.generation_id {
            return refuse(ErrorCode::IllegalGeneration);
        }
        if version >= 5
            && (request
                .protocol_type
                .as_ref()
                .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
                || request
                    .protocol_name
                    .as_ref()
                    .is_some_and(|n| Some(n) != group.protocol_name.as_ref()))
        {
            return refuse(ErrorCode::InconsistentGroupProtocol);
        }
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let answer = |assignment: Bytes| SyncGroupResponse {
            error_code: 0,
            protocol_type: protocol_type.clone(),
            protocol_name: protocol_name.clone(),
            assignment,
            ..Default::default()
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => refuse(ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => refuse(ErrorCode::RebalanceInProgress),
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.last_seen = now;
                Pending::Ready(answer(member.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.last_seen = now;
                member.awaiting_sync = Some(sender);
                if group.leader.as_deref() == Some(request.member_id.as_str()) {
                    let mut assignments: HashMap<String, Bytes> = request
                        .assignments
                        .into_iter()
                        .map(|a| (a.member_id, a.assignment))
                        .collect();
                    for member in group.members.values_mut() {
                        member.assignment =
                            assignments.remove(&member.member_id).unwrap_or_default();
                        if let Some(waiting) = member.awaiting_sync.take() {
                            let _ = waiting.send(answer(member.assignment.clone()));
                        }
                    }
                    group.state = GroupState::Stable;
                    group.sync_deadline = None;
                }
                Pending::Waiting(receiver)
            }
        }
    }

    /// Heartbeat: keeps the member's session alive and tells it about rebalances.
    pub fn heartbeat(&self, request: HeartbeatRequest) -> ErrorCode {
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&request.group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if let Some(consumer) = &mut group.consumer {
            return consumer.classic_heartbeat(
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                Instant::now(),
            );
        }
        if let Err(code) = check_member(
            group,
            &request.member_id,
            request.group_instance_id.as_deref(),
        ) {
            return code;
        }
        if request.generation_id != group.generation_id {
            return ErrorCode::IllegalGeneration;
        }
        if let Some(member) = group.members.get_mut(&request.member_id) {
            member.last_seen = Instant::now();
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
        }
    }

    /// LeaveGroup: removes members (v0–2 one, v3+ a batch) and rebalances the rest.
    pub fn leave(
        &self,
        version: i16,
        request: LeaveGroupRequest,
        settings: GroupSettings,
    ) -> LeaveGroupResponse {
        let now = Instant::now();
        let leaving: Vec<(String, Option<String>)> = if version < 3 {
            vec![(request.member_id.clone(), None)]
        } else {
            request
                .members
                .iter()
                .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
                .collect()
        };
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&request.group_id) else {
            return LeaveGroupResponse {
                error_code: if version < 3 {
                    ErrorCode::UnknownMemberId.code()
                } else {
                    0
                },
                members: leaving
                    .into_iter()
                    .map(|(member_id, group_instance_id)| MemberResponse {
                        member_id,
                        group_instance_id,
                        error_code: ErrorCode::UnknownMemberId.code(),
                    })
                    .collect(),
                ..Default::default()
            };
        };
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed_any = false;
        for (member_id, instance) in leaving {
            if let Some(consumer) = &mut group.consumer {
                let code = consumer.classic_leave(&member_id, instance.as_deref());
                if consumer.members.is_empty() {
                    group.empty_since = now;
                }
                results.push(MemberResponse {
                    member_id,
                    group_instance_id: instance,
                    error_code: code.code(),
                });
                continue;
            }
            let target = match (&instance, member_id.is_empty()) {
                (Some(instance), true) => group
                    .member_by_instance(instance)
                    .map(|m| m.member_id.clone()),
                _ => Some(member_id.clone()),
            };
            let code = match target {
                None => ErrorCode::UnknownMemberId,
                Some(target) => match check_member(group, &target, instance.as_deref()) {
                    Err(code) => code,
                    Ok(()) => {
                        if let Some(mut member) = group.members.remove(&target) {
                            answer_removed(&mut member, ErrorCode::UnknownMemberId);
                        }
                        removed_any = true;
                        ErrorCode::None
                    }
                },
            };
            results.push(MemberResponse {
                member_id,
                group_instance_id: instance,
                error_code: code.code(),
            });
        }
        if removed_any {
            members_changed(group, now, settings);
        }
        let error_code = if version < 3 {
            results[0].error_code
        } else {
            0
        };
        LeaveGroupResponse {
            error_code,
            members: if version < 3 { Vec::new() } else { results },
            ..Default::default()
        }
    }

    /// OffsetCommit: checks the member's generation, then persists the offsets.
    pub async fn commit(
        &self,
        version: i16,
        request: OffsetCommitRequest,
        image: &MetadataImage,
    ) -> OffsetCommitResponse {
        if request.group_id.is_empty() {
            return offset_commit_error(&request, ErrorCode::InvalidGroupId);
        }
        let now = Instant::now();
        let timestamp_ms = now_ms();
        let mut entries = Vec::new();
        let mut topics = Vec::with_capacity(request.topics.len());
        {
            let mut groups = self.groups.borrow_mut();
            let generation = request.generation_id_or_member_epoch;
            if !groups.contains_key(&request.group_id) {
                if generation >= 0 {
                    // A member of a group that does not exist (what the checks below answer
                    // for a new, memberless group), without creating it.
                    return offset_commit_error(&request, ErrorCode::UnknownMemberId);
                }
                if !self.try_create_group(&mut groups, &request.group_id, "OffsetCommit", now) {
                    return offset_commit_error(&request, GROUPS_MAX_ERROR);
                }
            }
            let group = groups
                .get_mut(&request.group_id)
                .expect("found or inserted above");
            let verdict = if group.state == GroupState::Dead {
                Err(ErrorCode::CoordinatorNotAvailable)
            } else if let Some(consumer) = &group.consumer {
                consumer.validate_offset_commit(&request.member_id, generation, version, false)
            } else if generation < 0 && group.state == GroupState::Empty {
                Ok(()) // a standalone (assign()) consumer or an admin tool
            } else if group.state == GroupState::CompletingRebalance {
                Err(ErrorCode::RebalanceInProgress)
            } else {
                let generation_matches = if generation == group.generation_id {
                    Ok(())
                } else {
                    Err(ErrorCode::IllegalGeneration)
                };
                check_member(
                    group,
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                )
                .and(generation_matches)
            };
            if let Err(code) = verdict {
                return offset_commit_error(&request, code);
            }
            if let Some(member) = group.members.get_mut(&request.member_id) {
                member.last_seen = now;
            }
            for topic in &request.topics {
                let mut partitions = Vec::with_capacity(topic.partitions.len());
                for p in &topic.partitions {
                    let exists = u32::try_from(p.partition_index)
                        .ok()
                        .and_then(|i| image.partition(&topic.name, i))
                        .is_some();
                    let code = if !exists {
                        ErrorCode::UnknownTopicOrPartition
                    } else if p
                        .committed_metadata
                        .as_ref()
                        .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
                    {
                        ErrorCode::OffsetMetadataTooLarge
                    } else {
                        let committed = CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.clone(),
                            commit_timestamp_ms: timestamp_ms,
                        };
                        // Applied in call order so the latest commit wins, answered once durable.
                        group
                            .offsets
                            .insert((topic.name.clone(), p.partition_index), committed.clone());
                        entries.push(GroupLogEntry::Commit {
                            group: request.group_id.clone(),
                            topic: topic.name.clone(),
                            partition: p.partition_index,
                            committed,
                        });
                        ErrorCode::None
                    };
                    partitions.push(OffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code.code(),
                    });
                }
                topics.push(OffsetCommitResponseTopic {
                    name: topic.name.clone(),
                    partitions,
                });
            }
        }
        if !entries.is_empty()
            && let Err(code) = self.persist(&entries).await
        {
            return offset_commit_error(&request, code);
        }
        OffsetCommitResponse {
            topics,
            ..Default::default()
        }
    }

    /// Committed offsets of a group: the asked partitions, or all of them (`None`).
    /// A partition without a commit gets offset -1, as in Kafka. `member` (OffsetFetch v9+:
    /// member id and epoch) is checked against a consumer-protocol group.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: (Option<&str>, i32),
    ) -> Result<OffsetsByTopic, ErrorCode> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        if let Some(consumer) = group.and_then(|g| g.consumer.as_ref()) {
            consumer.validate_offset_fetch(member.0, member.1)?;
        }
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| {
                            let committed =
                                group.and_then(|g| g.offsets.get(&(topic.clone(), p)).cloned());
                            (p, committed)
                        })
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: OffsetsByTopic = Vec::new();
                for ((topic, partition), committed) in
                    group.map(|g| g.offsets.iter()).into_iter().flatten()
                {
                    match by_topic.last_mut() {
                        Some((t, list)) if t == topic => {
                            list.push((*partition, Some(committed.clone())))
                        }
                        _ => by_topic
                            .push((topic.clone(), vec![(*partition, Some(committed.clone()))])),
                    }
                }
                by_topic
            }
        })
    }

    /// The groups of this shard, filtered by state names and types (empty filter: all).
    pub fn list(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        self.groups
            .borrow()
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(consumer::describe::listed_group)
            .filter(|listed| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(&listed.group_state))
            })
            .filter(|listed| {
                types.is_empty()
                    || types
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case(&listed.group_type))
            })
            .collect()
    }

    /// DescribeGroups of one group (state Dead when unknown, as Kafka answers).
    pub fn describe(&self, group_id: &str) -> DescribedGroup {
        let groups = self.groups.borrow();
        // A consumer-protocol group is not a classic group: DescribeGroups v0-5 answers it as
        // Kafka does, like an unknown group (clients describe it with ConsumerGroupDescribe).
        let Some(group) = groups.get(group_id).filter(|g| g.consumer.is_none()) else {
            return DescribedGroup {
                group_id: group_id.to_string(),
                group_state: GroupState::Dead.name().to_string(),
                ..Default::default()
            };
        };
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let stable = group.state == GroupState::Stable;
        DescribedGroup {
            error_code: 0,
            group_id: group.id.clone(),
            group_state: group.state.name().to_string(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: group
                .members
                .values()
                .map(|m| DescribedGroupMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    member_metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    member_assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
            ..Default::default()
        }
    }

    /// DeleteGroups of one group: only an empty group can go.
    pub async fn delete(&self, group_id: &str) -> ErrorCode {
        {
            let mut groups = self.groups.borrow_mut();
            match groups.get(group_id) {
                None => return ErrorCode::GroupIdNotFound,
                Some(g) if !g.is_empty() => return ErrorCode::NonEmptyGroup,
                Some(_) => {
                    groups.remove(group_id);
                    self.limits.remove_groups(1);
                }
            }
        }
        match self
            .persist(&[GroupLogEntry::GroupDelete {
                group: group_id.to_string(),
            }])
            .await
        {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group no longer consumes.
    pub async fn delete_offsets(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let mut entries = Vec::new();
        let topics;
        {
            let mut groups = self.groups.borrow_mut();
            let Some(group) = groups.get_mut(&request.group_id) else {
                return OffsetDeleteResponse {
                    error_code: ErrorCode::GroupIdNotFound.code(),
                    ..Default::default()
                };
            };
            let subscribed = match group.state {
                _ if group.consumer.is_some() => group
                    .consumer
                    .iter()
                    .flat_map(|c| c.subscribed_topic_names())
                    .map(str::to_string)
                    .collect(),
                GroupState::Empty => Vec::new(),
                _ if group.protocol_type.as_deref() == Some("consumer") => subscribed_topics(group),
                _ => {
                    return OffsetDeleteResponse {
                        error_code: ErrorCode::NonEmptyGroup.code(),
                        ..Default::default()
                    };
                }
            };
            topics = request
                .topics
                .iter()
                .map(|t| OffsetDeleteResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let code = if subscribed.contains(&t.name) {
                                ErrorCode::GroupSubscribedToTopic
                            } else {
                                if group
                                    .offsets
                                    .remove(&(t.name.clone(), p.partition_index))
                                    .is_some()
                                {
                                    entries.push(GroupLogEntry::OffsetDelete {
                                        group: request.group_id.clone(),
                                        topic: t.name.clone(),
                                        partition: p.partition_index,
                                    });
                                }
                                ErrorCode::None
                            };
                            OffsetDeleteResponsePartition {
                                partition_index: p.partition_index,
                                error_code: code.code(),
                            }
                        })
                        .collect(),
                })
                .collect();
        }
        let error_code = match self.persist(&entries).await {
            Ok(()) => 0,
            Err(code) => code.code(),
        };
        OffsetDeleteResponse {
            error_code,
            topics,
            ..Default::default()
        }
    }

    /// Runs the timers: expired sessions, rebalance and sync deadlines, offsets retention.
    /// Returns the groups whose offsets expired; the caller deletes them durably.
    pub fn sweep(&self, settings: GroupSettings) -> Vec<String> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut forgotten = Vec::new();
        for group in self.groups.borrow_mut().values_mut() {
            consumer::heartbeat::expire_members(
                group,
                now,
                settings,
                self.limits.group_members_max,
            );
            group.pending_members.retain(|_, expiry| *expiry > now);
            let timed_out: Vec<String> = group
                .members
                .values()
                .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
                .filter(|m| {
                    now >= m.last_seen + Duration::from_millis(m.session_timeout_ms.max(0) as u64)
                })
                .map(|m| m.member_id.clone())
                .collect();
            if !timed_out.is_empty() {
                // Members waiting on a JoinGroup or SyncGroup are not among them: no answers owed.
                for id in &timed_out {
                    group.members.remove(id);
                }
                tracing::info!(group = %group.id, members = ?timed_out, "session timeout: members removed");
                members_changed(group, now, settings);
            }
            match group.state {
                GroupState::PreparingRebalance => {
                    if group.rebalance_deadline.is_some_and(|d| now >= d) {
                        complete_join(group, now);
                    } else {
                        try_complete_join(group, now);
                    }
                }
                GroupState::CompletingRebalance
                    if group.sync_deadline.is_some_and(|d| now >= d) =>
                {
                    // The leader never sent the assignment: start over without the laggards.
                    let laggards: Vec<String> = group
                        .members
                        .values()
                        .filter(|m| m.awaiting_sync.is_none())
                        .map(|m| m.member_id.clone())
                        .collect();
                    for id in laggards {
                        group.members.remove(&id);
                    }
                    members_changed(group, now, settings);
                }
                GroupState::Empty
                    if group.is_empty()
                        && !group.offsets.is_empty()
                        && now >= group.empty_since + settings.offsets_retention =>
                {
                    expired.push(group.id.clone());
                }
                GroupState::Empty
                    if group.is_empty()
                        && group.offsets.is_empty()
                        && group.pending_members.is_empty()
                        && now >= group.empty_since + EMPTY_GROUP_RETENTION =>
                {
                    // Nothing durable to delete: the group is forgotten, not logged.
                    forgotten.push(group.id.clone());
                }
                _ => {}
            }
        }
        if !expired.is_empty() || !forgotten.is_empty() {
            let mut groups = self.groups.borrow_mut();
            let removed = expired
                .iter()
                .chain(&forgotten)
                .filter(|id| groups.remove(*id).is_some())
                .count();
            self.limits.remove_groups(removed);
        }
        expired
    }

    /// Writes group-log entries through the WAL and waits until they are durable.
    pub async fn persist(&self, entries: &[GroupLogEntry]) -> Result<(), ErrorCode> {
        if entries.is_empty() {
            return Ok(());
        }
        if !entries.iter().all(GroupLogEntry::fits) {
            return Err(ErrorCode::InvalidGroupId);
        }
        // One record per run of entries of one group: a group's entries go to its partition's
        // log (a sweep expires several groups at once).
        for run in entries.chunk_by(|a, b| a.group() == b.group()) {
            self.logs.append(run[0].group(), &log::encode(run)).await?;
        }
        Ok(())
    }

    /// The group logs of this shard's coordinator partitions.
    pub fn logs(&self) -> &CoordinatorLogs {
        &self.logs
    }

    /// Creates the empty group `group_id` for `api` if the broker's groups cap allows one
    /// more; false (after a rate-limited WARN) when it does not.
    fn try_create_group(
        &self,
        groups: &mut HashMap<String, Group>,
        group_id: &str,
        api: &str,
        now: Instant,
    ) -> bool {
        if !self.limits.try_add_group() {
            self.refuse_new_group(group_id, api);
            return false;
        }
        groups.insert(group_id.to_string(), Group::new(group_id.to_string(), now));
        true
    }

    /// Logs that `groups_max` kept `group_id` from being created: one WARN line per shard at
    /// most every [`limits::WARN_INTERVAL`], with the refusals it did not log.
    fn refuse_new_group(&self, group_id: &str, api: &str) {
        let Some(unlogged) = self.groups_max_warnings.ready(Instant::now()) else {
            return;
        };
        tracing::warn!(
            group = group_id,
            api,
            error_code = GROUPS_MAX_ERROR.code(),
            refused_since_last_warning = unlogged,
            "group not created: the broker coordinates groups_max = {} groups \
             (--groups-max N); answered GROUP_MAX_SIZE_REACHED",
            self.limits.groups_max
        );
    }
}

impl Drop for GroupCoordinator {
    /// Gives back this shard's groups to the broker's count.
    fn drop(&mut self) {
        self.limits.remove_groups(self.groups.get_mut().len());
    }
}

/// An OffsetCommit answer with `code` for every partition of `request`.
pub fn offset_commit_error(request: &OffsetCommitRequest, code: ErrorCode) -> OffsetCommitResponse {
    OffsetCommitResponse {
        topics: request
            .topics
            .iter()
            .map(|t| OffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: code.code(),
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// A JoinGroup answer for the generation in progress, for a member whose metadata is unchanged.
fn current_generation_response(group: &Group, member_id: &str) -> JoinGroupResponse {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let is_leader = group.leader.as_deref() == Some(member_id);
    JoinGroupResponse {
        error_code: 0,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: if is_leader {
            member_list(group, &protocol)
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

fn member_list(group: &Group, protocol: &str) -> Vec<JoinGroupResponseMember> {
    group
        .members
        .values()
        .map(|m| JoinGroupResponseMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            metadata: m.metadata_for(protocol),
        })
        .collect()
}

/// Checks that `member_id` belongs to the group and, for static members, that the instance id
/// still maps to it.
fn check_member(group: &Group, member_id: &str, instance: Option<&str>) -> Result<(), ErrorCode> {
    if let Some(instance) = instance
        && let Some(owner) = group.member_by_instance(instance)
        && owner.member_id != member_id
    {
        return Err(ErrorCode::FencedInstanceId);
    }
    if group.members.contains_key(member_id) {
        Ok(())
    } else {
        Err(ErrorCode::UnknownMemberId)
    }
}

/// Answers a removed member's waiting requests with `code`: UNKNOWN_MEMBER_ID tells a member
/// that left or expired to rejoin afresh; FENCED_INSTANCE_ID tells a replaced static member
/// that its instance id now belongs to another process (KIP-345).
fn answer_removed(member: &mut Member, code: ErrorCode) {
    if let Some(join) = member.awaiting_join.take() {
        let _ = join.send(JoinGroupResponse {
            error_code: code.code(),
            generation_id: -1,
            member_id: member.member_id.clone(),
            ..Default::default()
        });
    }
    if let Some(sync) = member.awaiting_sync.take() {
        let _ = sync.send(SyncGroupResponse {
            error_code: code.code(),
            ..Default::default()
        });
    }
}

/// After members left or expired: rebalance the rest, or empty the group.
fn members_changed(group: &mut Group, now: Instant, settings: GroupSettings) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now, settings)
        }
        _ => {}
    }
    if group.state == GroupState::PreparingRebalance {
        try_complete_join(group, now);
    }
}

fn prepare_rebalance(group: &mut Group, now: Instant, settings: GroupSettings) {
    if group.state == GroupState::CompletingRebalance {
        for member in group.members.values_mut() {
            if let Some(sync) = member.awaiting_sync.take() {
                let _ = sync.send(SyncGroupResponse {
                    error_code: ErrorCode::RebalanceInProgress.code(),
                    ..Default::default()
                });
            }
        }
    }
    let timeout = Duration::from_millis(group.rebalance_timeout_ms().max(0) as u64);
    group.initial_delay_until =
        (group.state == GroupState::Empty).then(|| now + settings.initial_rebalance_delay);
    group.rebalance_deadline = Some(now + timeout);
    group.sync_deadline = None;
    group.state = GroupState::PreparingRebalance;
}

fn try_complete_join(group: &mut Group, now: Instant) {
    if group.state == GroupState::PreparingRebalance
        && group.all_members_joined()
        && group.initial_delay_until.is_none_or(|until| now >= until)
    {
        complete_join(group, now);
    }
}

fn complete_join(group: &mut Group, now: Instant) {
    group.members.retain(|_, m| m.awaiting_join.is_some());
    group.pending_members.clear();
    group.rebalance_deadline = None;
    group.initial_delay_until = None;
    group.generation_id += 1;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.protocol_name = None;
        group.leader = None;
        group.empty_since = now;
        return;
    }
    group.protocol_name = group.select_protocol();
    if !group
        .leader
        .as_ref()
        .is_some_and(|l| group.members.contains_key(l))
    {
        group.leader = group.members.keys().next().cloned();
    }
    group.state = GroupState::CompletingRebalance;
    let timeout = Duration::from_millis(group.rebalance_timeout_ms().max(0) as u64);
    group.sync_deadline = Some(now + timeout);
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let leader = group.leader.clone().unwrap_or_default();
    let members = member_list(group, &protocol);
    for member in group.members.values_mut() {
        member.last_seen = now;
        if let Some(join) = member.awaiting_join.take() {
            let _ = join.send(JoinGroupResponse {
                error_code: 0,
                generation_id: group.generation_id,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                leader: leader.clone(),
                member_id: member.member_id.clone(),
                members: if member.member_id == leader {
                    members.clone()
                } else {
                    Vec::new()
                },
                ..Default::default()
            });
        }
    }
}

/// Topics the members subscribe to, read from the consumer protocol's subscription
/// (version i16, then an array of topic names), for OffsetDelete.
fn subscribed_topics(group: &Group) -> Vec<String> {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let mut topics = Vec::new();
    for member in group.members.values() {
        let mut metadata = member.metadata_for(&protocol);
        if metadata.remaining() < 6 {
            continue;
        }
        let _version = metadata.get_i16();
        let count = metadata.get_i32();
        for _ in 0..count.max(0) {
            if metadata.remaining() < 2 {
                break;
            }
            let length = metadata.get_i16().max(0) as usize;
            if metadata.remaining() < length {
                break;
            }
            if let Ok(topic) = String::from_utf8(metadata.split_to(length).to_vec()) {
                topics.push(topic);
            }
        }
    }
    topics
}

/// A random-enough suffix for member ids: time and a per-process counter, like a UUID's role.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}
