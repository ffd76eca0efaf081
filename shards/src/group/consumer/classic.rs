//! Online migration between the protocols (KIP-848, `group.consumer.migration.policy`), as
//! Kafka's `GroupMetadataManager` does it:
//!
//! - **Upgrade** (`convertToConsumerGroup`): a ConsumerGroupHeartbeat joining a live classic
//!   group whose members speak the consumer embedded protocol turns it into a consumer group.
//!   Every classic member stays, at the group's generation, with the subscription and the
//!   partitions of its last assignment (also its target), so nothing moves until the new
//!   target is computed; waiting JoinGroups and SyncGroups are answered REBALANCE_IN_PROGRESS.
//! - **Classic members of a consumer group** keep speaking JoinGroup, SyncGroup, Heartbeat and
//!   LeaveGroup (`classicGroupJoinToConsumerGroup` and the others): the coordinator assigns
//!   them as any member, a JoinGroup is its reconciliation step (the owned partitions of its
//!   subscription tell what it gave up) and is answered at once with its member epoch as the
//!   generation, SyncGroup hands out its assigned partitions, and Heartbeat answers
//!   REBALANCE_IN_PROGRESS whenever it must rejoin to move on.
//! - **Downgrade** (`convertToClassicGroup`): when the last consumer-protocol member leaves
//!   or expires and classic members remain, the group becomes a classic group at the group
//!   epoch, each member's assignment its target, and a rebalance is prepared so that they all
//!   rejoin it.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::sync_group_response::SyncGroupResponse;

use super::assignor::{Assignment, TopicId};
use super::reconcile::{CurrentAssignment, MemberState, reconcile};
use super::{ConsumerGroup, ConsumerMember};
use crate::group::state::{Group, GroupState, Member};
use crate::group::{GroupSettings, answer_removed, prepare_rebalance};

/// The protocol type of consumers' classic groups (Kafka's `ConsumerProtocol.PROTOCOL_TYPE`).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Highest ConsumerProtocolAssignment version: an assignment is written in the version of
/// the member's subscription, at most this one (Kafka's `checkAssignmentVersion`).
const ASSIGNMENT_VERSION_MAX: i16 = 3;

/// What a member speaking the classic protocol keeps in a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMember {
    /// Its session timeout (it is expired by it, not by group.consumer.session.timeout.ms).
    pub session_timeout_ms: i32,
    /// Its JoinGroup protocols (name, ConsumerProtocolSubscription), in its order.
    pub protocols: Vec<(String, Bytes)>,
}

/// A member's ConsumerProtocolSubscription (v0–3), the parts the coordinator uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// Topics subscribed to, by name.
    pub topics: Vec<String>,
    /// Partitions it owns (v1+; cooperative members report them when they rejoin).
    pub owned: Vec<(String, Vec<i32>)>,
    /// Its rack (v3+).
    pub rack_id: Option<String>,
}

/// A JoinGroup of a classic member to a consumer group, checked by the caller.
pub struct ClassicJoin {
    pub version: i16,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
}

/// Why a live classic group cannot become a consumer group, if it cannot (Kafka's
/// `validateOnlineUpgrade`); the caller answers GROUP_ID_NOT_FOUND.
pub fn upgrade_refusal(
    group: &Group,
    settings: GroupSettings,
    members_max: usize,
) -> Option<&'static str> {
    if !settings.migration_policy.upgrade_enabled() {
        Some("the online upgrade is disabled (group.consumer.migration.policy)")
    } else if group.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
        Some("the group does not use the consumer embedded protocol")
    } else if group.members.len() > members_max {
        Some("the group size exceeds the consumer group maximum size")
    } else {
        None
    }
}

/// Turns the live classic `group` into a consumer group (Kafka's `ConsumerGroup.fromClassicGroup`):
/// every member at the group's generation, holding its last assignment, which is also its
/// target. Fails, changing nothing, when a member's subscription or assignment does not parse.
pub fn upgrade(group: &mut Group, image: &MetadataImage, now: Instant) -> Result<(), ErrorCode> {
    let generation = group.generation_id;
    let mut consumer = ConsumerGroup {
        group_epoch: generation,
        assignment_epoch: generation,
        ..ConsumerGroup::default()
    };
    let mut currents = Vec::with_capacity(group.members.len());
    for member in group.members.values() {
        let metadata = match &group.protocol_name {
            Some(protocol) => member.metadata_for(protocol),
            None => member
                .protocols
                .first()
                .map(|(_, m)| m.clone())
                .unwrap_or_default(),
        };
        let subscription = decode_subscription(&metadata).ok_or(ErrorCode::GroupIdNotFound)?;
        let assigned = decode_assignment(&member.assignment).ok_or(ErrorCode::GroupIdNotFound)?;
        let assigned = topic_ids(&assigned, image);
        let mut upgraded = ConsumerMember::new(member.member_id.clone(), now);
        upgraded.instance_id = member.group_instance_id.clone();
        upgraded.rack_id = subscription.rack_id;
        upgraded.client_id = member.client_id.clone();
        upgraded.client_host = member.client_host.clone();
        upgraded.rebalance_timeout_ms = member.rebalance_timeout_ms;
        upgraded.subscribed_topic_names = sorted(subscription.topics);
        upgraded.last_seen = member.last_seen;
        upgraded.classic = Some(ClassicMember {
            session_timeout_ms: member.session_timeout_ms,
            protocols: member.protocols.clone(),
        });
        consumer
            .target
            .insert(member.member_id.clone(), assigned.clone());
        consumer.members.insert(member.member_id.clone(), upgraded);
        currents.push((
            member.member_id.clone(),
            CurrentAssignment {
                state: MemberState::Stable,
                member_epoch: generation,
                previous_member_epoch: generation,
                assigned,
                pending_revocation: Assignment::new(),
            },
        ));
    }
    for (member_id, current) in currents {
        consumer.set_current(&member_id, current);
    }
    // The members waiting in a rebalance rejoin: they are classic members of the consumer
    // group from now on.
    for member in group.members.values_mut() {
        answer_removed(member, ErrorCode::RebalanceInProgress);
    }
    group.members.clear();
    group.pending_members.clear();
    group.state = GroupState::Empty;
    group.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
    group.protocol_name = None;
    group.leader = None;
    group.rebalance_deadline = None;
    group.initial_delay_until = None;
    group.sync_deadline = None;
    group.consumer = Some(consumer);
    Ok(())
}

/// Whether removing consumer-protocol member `leaving_id` leaves only classic members, which
/// the policy lets the group downgrade to (Kafka's `validateOnlineDowngradeWithFencedMember`).
pub fn downgrades_without(
    consumer: &ConsumerGroup,
    leaving_id: &str,
    settings: GroupSettings,
    members_max: usize,
) -> bool {
    let leaving_is_consumer = consumer
        .members
        .get(leaving_id)
        .is_some_and(|m| m.classic.is_none());
    leaving_is_consumer
        && consumer.members.len() > 1
        && consumer
            .members
            .values()
            .all(|m| m.member_id == leaving_id || m.classic.is_some())
        && settings.migration_policy.downgrade_enabled()
        && consumer.members.len() - 1 <= members_max
}

/// Turns `group`'s consumer side, without `leaving_id`, back into a classic group (Kafka's
/// `ClassicGroup.fromConsumerGroup`): at the group epoch, each member's assignment its
/// target, then a rebalance is prepared so that every member rejoins.
pub fn downgrade(group: &mut Group, leaving_id: &str, now: Instant, settings: GroupSettings) {
    let Some(consumer) = group.consumer.take() else {
        return;
    };
    let names = consumer.topic_names();
    group.members.clear();
    for member in consumer.members.values() {
        let Some(classic) = &member.classic else {
            continue;
        };
        if member.member_id == leaving_id {
            continue;
        }
        let target = consumer
            .target
            .get(&member.member_id)
            .unwrap_or(&member.current.assigned);
        group.members.insert(
            member.member_id.clone(),
            Member {
                member_id: member.member_id.clone(),
                group_instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                session_timeout_ms: classic.session_timeout_ms,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                protocols: classic.protocols.clone(),
                assignment: encode_assignment(classic.assignment_version(), target, &names),
                awaiting_join: None,
                awaiting_sync: None,
                last_seen: member.last_seen,
            },
        );
    }
    group.generation_id = consumer.group_epoch;
    group.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
    group.protocol_name = group.select_protocol();
    group.leader = group.members.keys().next().cloned();
    group.state = GroupState::Stable;
    prepare_rebalance(group, now, settings);
    tracing::info!(group = %group.id, members = group.members.len(), "consumer group downgraded to a classic group");
}

impl ClassicMember {
    /// The ConsumerProtocolAssignment version this member reads: its subscription's.
    fn assignment_version(&self) -> i16 {
        self.protocols
            .first()
            .and_then(|(_, metadata)| metadata.get(..2))
            .map_or(0, |v| i16::from_be_bytes([v[0], v[1]]))
            .clamp(0, ASSIGNMENT_VERSION_MAX)
    }
}

impl ConsumerGroup {
    /// Whether a classic member with `protocol_type` and `protocols` may join (Kafka's
    /// `supportsClassicProtocols`): the consumer embedded protocol, and a protocol every
    /// classic member has too.
    fn supports_classic_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        protocol_type == CONSUMER_PROTOCOL_TYPE
            && !protocols.is_empty()
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .filter_map(|m| m.classic.as_ref())
                    .all(|c| c.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// JoinGroup of a classic member (Kafka's `classicGroupJoinToConsumerGroup`): joins or
    /// updates it, computes a new target when its subscription changed, and takes its step
    /// towards it; answered at once.
    pub fn classic_join(
        &mut self,
        join: ClassicJoin,
        image: &MetadataImage,
        now: Instant,
        members_max: usize,
    ) -> JoinGroupResponse {
        let refuse = |code: ErrorCode, member_id: String| JoinGroupResponse {
            error_code: code.code(),
            generation_id: -1,
            member_id,
            ..Default::default()
        };
        let mut member_id = join.member_id.clone();
        if member_id.is_empty()
            && let Some(instance_id) = &join.instance_id
            && let Some(owner) = self.member_by_instance(instance_id)
        {
            // A static member restarting takes its identity back (KIP-345).
            member_id = owner.member_id.clone();
        }
        if let Some(instance_id) = &join.instance_id
            && let Some(owner) = self.member_by_instance(instance_id)
            && owner.member_id != member_id
        {
            return refuse(ErrorCode::FencedInstanceId, join.member_id);
        }
        let new_member = member_id.is_empty() || !self.members.contains_key(&member_id);
        if new_member && self.members.len() >= members_max {
            return refuse(ErrorCode::GroupMaxSizeReached, String::new());
        }
        if !self.supports_classic_protocols(&join.protocol_type, &join.protocols) {
            return refuse(ErrorCode::InconsistentGroupProtocol, join.member_id);
        }
        if member_id.is_empty() {
            member_id = format!("{}-{}", join.client_id, crate::group::unique_suffix());
            if join.version >= 4 && join.instance_id.is_none() {
                // KIP-394: the member comes back with the id it is given.
                return refuse(ErrorCode::MemberIdRequired, member_id);
            }
        }
        if self
            .members
            .get(&member_id)
            .is_some_and(|m| m.classic.is_none())
        {
            return refuse(ErrorCode::UnknownMemberId, member_id);
        }
        // All of a member's protocols carry one subscription: Kafka reads the first.
        let Some(subscription) = join
            .protocols
            .first()
            .and_then(|(_, metadata)| decode_subscription(metadata))
        else {
            return refuse(ErrorCode::InconsistentGroupProtocol, member_id);
        };
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| ConsumerMember::new(member_id.clone(), now));
        let topics = sorted(subscription.topics);
        let mut changed = new_member || member.subscribed_topic_names != topics;
        member.subscribed_topic_names = topics;
        if let Some(instance_id) = join.instance_id {
            member.instance_id = Some(instance_id);
        }
        if subscription.rack_id.is_some() {
            member.rack_id = subscription.rack_id;
        }
        // Kafka takes the join's rebalance timeout unless it is the -1 sentinel.
        if join.rebalance_timeout_ms != -1 {
            member.rebalance_timeout_ms = join.rebalance_timeout_ms.max(0);
        }
        // A classic member has no server assignor of its own.
        changed |= member.server_assignor.take().is_some();
        member.client_id = join.client_id;
        member.client_host = join.client_host;
        member.last_seen = now;
        member.classic = Some(ClassicMember {
            session_timeout_ms: join.session_timeout_ms,
            protocols: join.protocols,
        });
        let topics_changed = self.refresh_subscriptions(image, changed);
        if changed || topics_changed {
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target();
        }
        let owned = topic_ids(&subscription.owned, image);
        let member = &self.members[&member_id];
        let previous = member.current.clone();
        let target = self.target.get(&member_id).cloned().unwrap_or_default();
        let next = reconcile(
            &previous,
            self.assignment_epoch,
            &target,
            Some(&owned),
            |topic, partition| self.held_by_other(&member_id, (topic, partition)),
        );
        let revoking = next.state == MemberState::UnrevokedPartitions;
        self.set_current(&member_id, next);
        let member = self
            .members
            .get_mut(&member_id)
            .expect("joined or found above");
        member.revocation_deadline = match (revoking, member.revocation_deadline) {
            (true, Some(deadline)) => Some(deadline),
            (true, None) => Some(now + Duration::from_millis(member.rebalance_timeout_ms as u64)),
            (false, _) => None,
        };
        let protocol_name = member
            .classic
            .as_ref()
            .and_then(|c| c.protocols.first())
            .map(|(name, _)| name.clone());
        JoinGroupResponse {
            error_code: 0,
            generation_id: member.current.member_epoch,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name,
            member_id,
            ..Default::default()
        }
    }

    /// SyncGroup of a classic member (Kafka's `classicGroupSyncToConsumerGroup`): its
    /// assigned partitions, unless a rebalance it must rejoin for is under way.
    pub fn classic_sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        protocol: (Option<&str>, Option<&str>),
        now: Instant,
    ) -> Result<SyncGroupResponse, ErrorCode> {
        let group_epoch = self.group_epoch;
        let names = self.topic_names();
        let member = self.classic_member_mut(member_id, instance_id)?;
        if generation_id != member.current.member_epoch {
            return Err(ErrorCode::IllegalGeneration);
        }
        let classic = member.classic.as_ref().ok_or(ErrorCode::UnknownMemberId)?;
        let protocol_name = classic.protocols.first().map(|(name, _)| name.as_str());
        if protocol.0.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || protocol.1.is_some_and(|n| Some(n) != protocol_name)
        {
            return Err(ErrorCode::InconsistentGroupProtocol);
        }
        // A member still revoking gets what it keeps now; one behind the group rejoins.
        if group_epoch > member.current.member_epoch
            && member.current.state != MemberState::UnrevokedPartitions
        {
            return Err(ErrorCode::RebalanceInProgress);
        }
        member.last_seen = now;
        Ok(SyncGroupResponse {
            error_code: 0,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
            protocol_name: protocol_name.map(str::to_string),
            assignment: encode_assignment(
                classic.assignment_version(),
                &member.current.assigned,
                &names,
            ),
            ..Default::default()
        })
    }

    /// Heartbeat of a classic member (Kafka's `classicGroupHeartbeatToConsumerGroup`):
    /// REBALANCE_IN_PROGRESS when it must rejoin to move on.
    pub fn classic_heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now: Instant,
    ) -> ErrorCode {
        let group_epoch = self.group_epoch;
        let Some(waiting) = self
            .members
            .get(member_id)
            .map(|member| self.waits_on_unreleased_partition(member))
        else {
            return ErrorCode::UnknownMemberId;
        };
        let member = match self.classic_member_mut(member_id, instance_id) {
            Ok(member) => member,
            Err(code) => return code,
        };
        if generation_id != member.current.member_epoch {
            return ErrorCode::IllegalGeneration;
        }
        member.last_seen = now;
        // It rejoins to catch up with the group epoch, to confirm a revocation, or to take
        // partitions that other members released meanwhile.
        let state = member.current.state;
        if member.current.member_epoch < group_epoch
            || state == MemberState::UnrevokedPartitions
            || (state == MemberState::UnreleasedPartitions && !waiting)
        {
            // Kafka's join timeout: a member that kept heartbeating without rejoining would
            // hold its partitions for good; it has its rebalance timeout to rejoin.
            let timeout = Duration::from_millis(member.rebalance_timeout_ms.max(0) as u64);
            member.revocation_deadline.get_or_insert(now + timeout);
            ErrorCode::RebalanceInProgress
        } else {
            ErrorCode::None
        }
    }

    /// LeaveGroup of a classic member: it goes, its partitions free for the others.
    pub fn classic_leave(&mut self, member_id: &str, instance_id: Option<&str>) -> ErrorCode {
        let member_id = match (instance_id, member_id.is_empty()) {
            // An admin removing a static member names only its instance id.
            (Some(instance_id), true) => match self.member_by_instance(instance_id) {
                Some(member) => member.member_id.clone(),
                None => return ErrorCode::UnknownMemberId,
            },
            _ => member_id.to_string(),
        };
        if let Err(code) = self.classic_member_mut(&member_id, instance_id) {
            return code;
        }
        self.remove_member(&member_id);
        ErrorCode::None
    }

    /// The classic member `member_id`, checked against its static instance id: a
    /// consumer-protocol member is unknown to the classic requests, as in Kafka.
    fn classic_member_mut(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&mut ConsumerMember, ErrorCode> {
        if let Some(instance_id) = instance_id {
            let owner = self
                .member_by_instance(instance_id)
                .ok_or(ErrorCode::UnknownMemberId)?;
            if owner.member_id != member_id {
                return Err(ErrorCode::FencedInstanceId);
            }
        }
        self.members
            .get_mut(member_id)
            .filter(|m| m.classic.is_some())
            .ok_or(ErrorCode::UnknownMemberId)
    }

    /// Whether `member` waits for a partition of its target that another member still holds.
    fn waits_on_unreleased_partition(&self, member: &ConsumerMember) -> bool {
        self.target.get(&member.member_id).is_some_and(|target| {
            target.iter().any(|(topic, partitions)| {
                partitions.iter().any(|&partition| {
                    !member
                        .current
                        .assigned
                        .get(topic)
                        .is_some_and(|a| a.contains(&partition))
                        && self.held_by_other(&member.member_id, (*topic, partition))
                })
            })
        })
    }

    /// Topic id → name of the subscribed topics: every topic a member may be assigned.
    fn topic_names(&self) -> std::collections::BTreeMap<TopicId, String> {
        self.subscribed_topics
            .iter()
            .map(|(name, (id, _))| (*id, name.clone()))
            .collect()
    }
}

/// Decodes a ConsumerProtocolSubscription (any version; fields a version lacks are left
/// empty). None when it is malformed.
pub fn decode_subscription(metadata: &Bytes) -> Option<Subscription> {
    let mut bytes = metadata.clone();
    let version = read_i16(&mut bytes)?;
    if version < 0 {
        return None;
    }
    let topics = read_array(&mut bytes, read_string)?;
    skip_nullable_bytes(&mut bytes)?;
    let mut subscription = Subscription {
        topics,
        ..Subscription::default()
    };
    if version >= 1 && bytes.has_remaining() {
        subscription.owned = read_array(&mut bytes, read_topic_partitions)?;
    }
    if version >= 2 && bytes.has_remaining() {
        read_i32(&mut bytes)?; // the generation, which the coordinator knows
    }
    if version >= 3 && bytes.has_remaining() {
        subscription.rack_id = read_nullable_string(&mut bytes)?;
    }
    Some(subscription)
}

/// Decodes a ConsumerProtocolAssignment: its partitions by topic name. An empty assignment (a
/// member that has not synced yet) holds nothing. None when it is malformed.
pub fn decode_assignment(assignment: &Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let mut bytes = assignment.clone();
    if read_i16(&mut bytes)? < 0 {
        return None;
    }
    read_array(&mut bytes, read_topic_partitions)
}

/// Encodes `assigned` as a ConsumerProtocolAssignment of `version` (no user data), topics by
/// name; a topic without a name (deleted meanwhile) is left out.
pub fn encode_assignment(
    version: i16,
    assigned: &Assignment,
    names: &std::collections::BTreeMap<TopicId, String>,
) -> Bytes {
    let topics: Vec<(&String, &std::collections::BTreeSet<i32>)> = assigned
        .iter()
        .filter_map(|(id, partitions)| Some((names.get(id)?, partitions)))
        .collect();
    let mut out = BytesMut::new();
    out.put_i16(version);
    out.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        out.put_i16(name.len() as i16);
        out.put_slice(name.as_bytes());
        out.put_i32(partitions.len() as i32);
        for partition in partitions {
            out.put_i32(*partition);
        }
    }
    out.put_i32(-1); // null user data
    out.freeze()
}

/// Partitions by topic name → by topic id, leaving out topics that do not exist.
fn topic_ids(partitions: &[(String, Vec<i32>)], image: &MetadataImage) -> Assignment {
    let mut assignment = Assignment::new();
    for (name, list) in partitions {
        if let Some(topic) = image.topic(name) {
            assignment
                .entry(topic.id)
                .or_default()
                .extend(list.iter().copied());
        }
    }
    assignment
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

fn read_i16(bytes: &mut Bytes) -> Option<i16> {
    (bytes.remaining() >= 2).then(|| bytes.get_i16())
}

fn read_i32(bytes: &mut Bytes) -> Option<i32> {
    (bytes.remaining() >= 4).then(|| bytes.get_i32())
}

fn read_string(bytes: &mut Bytes) -> Option<String> {
    read_nullable_string(bytes)?
}

fn read_nullable_string(bytes: &mut Bytes) -> Option<Option<String>> {
    let length = read_i16(bytes)?;
    if length < 0 {
        return Some(None);
    }
    let length = length as usize;
    if bytes.remaining() < length {
        return None;
    }
    String::from_utf8(bytes.split_to(length).to_vec())
        .ok()
        .map(Some)
}

fn skip_nullable_bytes(bytes: &mut Bytes) -> Option<()> {
    let length = read_i32(bytes)?;
    if length < 0 {
        return Some(());
    }
    let length = length as usize;
    (bytes.remaining() >= length).then(|| bytes.advance(length))
}

fn read_topic_partitions(bytes: &mut Bytes) -> Option<(String, Vec<i32>)> {
    Some((read_string(bytes)?, read_array(bytes, read_i32)?))
}

/// An array: its i32 count (-1: null, read as empty), then its items. The count is checked
/// against the bytes left (every item takes at least two), so a bad count allocates nothing.
fn read_array<T>(
    bytes: &mut Bytes,
    mut read: impl FnMut(&mut Bytes) -> Option<T>,
) -> Option<Vec<T>> {
    let count = read_i32(bytes)?;
    if count < 0 {
        return Some(Vec::new());
    }
    let count = count as usize;
    if count > bytes.remaining() / 2 {
        return None;
    }
    (0..count).map(|_| read(bytes)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use sluice_metadata::{ConsumerGroupMigrationPolicy, PartitionImage, TopicImage};

    use super::*;

    const T: TopicId = [7; 16];

    fn image() -> MetadataImage {
        let mut image = MetadataImage::empty("c".to_string(), 0);
        let partitions = (0..4)
            .map(|index| PartitionImage {
                index,
                shard: 0,
                stream_id: 100 + u64::from(index),
                log_start_offset: 0,
            })
            .collect();
        image.topics.insert(
            "t".to_string(),
            TopicImage {
                name: "t".to_string(),
                id: T,
                partitions,
                configs: BTreeMap::new(),
            },
        );
        image
    }

    fn settings(policy: ConsumerGroupMigrationPolicy) -> GroupSettings {
        GroupSettings {
            migration_policy: policy,
            ..GroupSettings::from_image(&MetadataImage::empty("c".to_string(), 0))
        }
    }

    fn put_string(out: &mut BytesMut, s: &str) {
        out.put_i16(s.len() as i16);
        out.put_slice(s.as_bytes());
    }

    /// A ConsumerProtocolSubscription v1 of topic `t`, owning `owned` of it.
    fn subscription(owned: &[i32]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(1);
        out.put_i32(1);
        put_string(&mut out, "t");
        out.put_i32(-1);
        out.put_i32(1);
        put_string(&mut out, "t");
        out.put_i32(owned.len() as i32);
        for partition in owned {
            out.put_i32(*partition);
        }
        out.freeze()
    }

    fn names() -> BTreeMap<TopicId, String> {
        BTreeMap::from([(T, "t".to_string())])
    }

    fn parts(list: &[i32]) -> Assignment {
        BTreeMap::from([(T, list.iter().copied().collect::<BTreeSet<i32>>())])
    }

    fn classic_member(id: &str, assigned: &[i32]) -> Member {
        Member {
            member_id: id.to_string(),
            group_instance_id: None,
            client_id: "client".to_string(),
            client_host: "host".to_string(),
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 60_000,
            protocols: vec![("cooperative-sticky".to_string(), subscription(&[]))],
            assignment: encode_assignment(1, &parts(assigned), &names()),
            awaiting_join: None,
            awaiting_sync: None,
            last_seen: Instant::now(),
        }
    }

    /// A Stable classic group at generation 5: m1 holds partitions 0 and 1, m2 2 and 3.
    fn stable_classic_group() -> Group {
        let mut group = Group::new("g".to_string(), Instant::now());
        group.state = GroupState::Stable;
        group.generation_id = 5;
        group.protocol_type = Some(CONSUMER_PROTOCOL_TYPE.to_string());
        group.protocol_name = Some("cooperative-sticky".to_string());
        group.leader = Some("m1".to_string());
        for (id, assigned) in [("m1", &[0, 1][..]), ("m2", &[2, 3][..])] {
            group
                .members
                .insert(id.to_string(), classic_member(id, assigned));
        }
        group
    }

    fn rejoin(member_id: &str, owned: &[i32]) -> ClassicJoin {
        ClassicJoin {
            version: 9,
            member_id: member_id.to_string(),
            instance_id: None,
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            protocols: vec![("cooperative-sticky".to_string(), subscription(owned))],
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 60_000,
            client_id: "client".to_string(),
            client_host: "host".to_string(),
        }
    }

    fn assigned(consumer: &ConsumerGroup, member_id: &str) -> Vec<i32> {
        consumer.members[member_id]
            .current
            .assigned
            .get(&T)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn subscriptions_and_assignments_decode_and_bad_bytes_are_refused() {
        let decoded = decode_subscription(&subscription(&[0, 2])).expect("valid");
        assert_eq!(decoded.topics, vec!["t".to_string()]);
        assert_eq!(decoded.owned, vec![("t".to_string(), vec![0, 2])]);
        // v3 with a rack; v0 without owned partitions.
        let mut v3 = BytesMut::new();
        v3.put_i16(3);
        v3.put_i32(1);
        put_string(&mut v3, "t");
        v3.put_i32(0);
        v3.put_i32(0);
        v3.put_i32(7);
        put_string(&mut v3, "rack-a");
        let decoded = decode_subscription(&v3.freeze()).expect("valid");
        assert_eq!(decoded.rack_id.as_deref(), Some("rack-a"));
        let full = subscription(&[1]);
        for cut in 1..full.len() - 4 {
            // Cut inside a field: refused, never a panic.
            let _ = decode_subscription(&full.slice(..cut));
        }
        let mut huge = BytesMut::new();
        huge.put_i16(0);
        huge.put_i32(i32::MAX);
        assert_eq!(decode_subscription(&huge.freeze()), None);

        let bytes = encode_assignment(3, &parts(&[0, 2]), &names());
        assert_eq!(&bytes[..2], &3i16.to_be_bytes());
        assert_eq!(
            decode_assignment(&bytes),
            Some(vec![("t".to_string(), vec![0, 2])])
        );
        assert_eq!(decode_assignment(&Bytes::new()), Some(Vec::new()));
        assert_eq!(decode_assignment(&bytes.slice(..9)), None);
    }

    #[test]
    fn the_policy_decides_whether_a_live_classic_group_upgrades() {
        let group = stable_classic_group();
        let upgrade = settings(ConsumerGroupMigrationPolicy::Upgrade);
        assert_eq!(upgrade_refusal(&group, upgrade, 10), None);
        for policy in [
            ConsumerGroupMigrationPolicy::Disabled,
            ConsumerGroupMigrationPolicy::Downgrade,
        ] {
            assert!(upgrade_refusal(&group, settings(policy), 10).is_some());
        }
        assert!(
            upgrade_refusal(&group, upgrade, 1).is_some(),
            "over members_max"
        );
        let mut other = stable_classic_group();
        other.protocol_type = Some("connect".to_string());
        assert!(upgrade_refusal(&other, upgrade, 10).is_some());
    }

    /// An upgraded group's classic members keep their partitions at the generation, then a
    /// new member makes them rejoin and give partitions up, one step at a time, never two
    /// holders for one partition; the last consumer-protocol member leaving downgrades it.
    #[test]
    fn classic_members_of_an_upgraded_group_reconcile_through_rejoins_then_downgrade() {
        let image = image();
        let now = Instant::now();
        let mut group = stable_classic_group();
        upgrade(&mut group, &image, now).expect("upgraded");
        assert!(group.members.is_empty() && group.state == GroupState::Empty);
        let consumer = group.consumer.as_mut().expect("a consumer group");
        assert_eq!((consumer.group_epoch, consumer.assignment_epoch), (5, 5));
        assert_eq!(assigned(consumer, "m1"), vec![0, 1]);
        assert_eq!(consumer.members["m2"].current.member_epoch, 5);
        assert_eq!(
            consumer.classic_heartbeat("m1", None, 5, now),
            ErrorCode::None
        );
        assert_eq!(
            consumer.classic_heartbeat("m1", None, 4, now),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            consumer.classic_heartbeat("x", None, 5, now),
            ErrorCode::UnknownMemberId
        );

        // A third member: the group epoch moves and the others learn it at their heartbeat.
        let joined = consumer.classic_join(rejoin("m3", &[]), &image, now, 10);
        assert_eq!(joined.error_code, 0);
        assert_eq!(joined.generation_id, 6);
        assert_eq!(joined.protocol_name.as_deref(), Some("cooperative-sticky"));
        assert!(assigned(consumer, "m3").is_empty(), "nothing is free yet");
        for round in 0..10 {
            let mut settled = true;
            for id in ["m1", "m2", "m3"] {
                let epoch = consumer.members[id].current.member_epoch;
                let code = consumer.classic_heartbeat(id, None, epoch, now);
                if code == ErrorCode::None {
                    continue;
                }
                assert_eq!(code, ErrorCode::RebalanceInProgress, "round {round} {id}");
                settled = false;
                // A cooperative member rejoins owning what it was last given.
                let owned = assigned(consumer, id);
                let joined = consumer.classic_join(rejoin(id, &owned), &image, now, 10);
                assert_eq!(joined.error_code, 0);
                let synced = consumer
                    .classic_sync(id, None, joined.generation_id, (None, None), now)
                    .expect("synced");
                let partitions: Vec<i32> = decode_assignment(&synced.assignment)
                    .expect("an assignment")
                    .into_iter()
                    .flat_map(|(_, partitions)| partitions)
                    .collect();
                assert_eq!(partitions, assigned(consumer, id));
                let mut held = BTreeSet::new();
                for member in ["m1", "m2", "m3"] {
                    for partition in consumer.members[member].current.held() {
                        assert!(held.insert(partition), "{partition:?} held twice");
                    }
                }
            }
            if settled {
                break;
            }
        }
        let mut all: Vec<i32> = ["m1", "m2", "m3"]
            .iter()
            .flat_map(|id| assigned(consumer, id))
            .collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3]);
        for id in ["m1", "m2", "m3"] {
            assert_eq!(consumer.members[id].current.member_epoch, 6, "{id}");
            assert!(!assigned(consumer, id).is_empty(), "{id}");
        }

        // A consumer-protocol member, then it leaves: back to a classic group, rebalancing.
        consumer
            .members
            .insert("c".to_string(), ConsumerMember::new("c".to_string(), now));
        let bidirectional = settings(ConsumerGroupMigrationPolicy::Bidirectional);
        assert!(!downgrades_without(consumer, "m1", bidirectional, 10));
        assert!(!downgrades_without(
            consumer,
            "c",
            settings(ConsumerGroupMigrationPolicy::Upgrade),
            10
        ));
        assert!(downgrades_without(consumer, "c", bidirectional, 10));
        let targets: BTreeMap<String, Vec<i32>> = ["m1", "m2", "m3"]
            .iter()
            .map(|id| (id.to_string(), assigned(consumer, id)))
            .collect();
        let epoch = consumer.group_epoch;
        downgrade(&mut group, "c", now, bidirectional);
        assert!(group.consumer.is_none());
        assert_eq!(group.generation_id, epoch);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.protocol_name.as_deref(), Some("cooperative-sticky"));
        for (id, partitions) in targets {
            let assignment = decode_assignment(&group.members[&id].assignment).expect("valid");
            assert_eq!(assignment, vec![("t".to_string(), partitions)], "{id}");
        }
    }

    #[test]
    fn classic_requests_to_a_consumer_group_are_checked_like_kafka() {
        let image = image();
        let now = Instant::now();
        let mut consumer = ConsumerGroup::default();
        consumer
            .members
            .insert("c".to_string(), ConsumerMember::new("c".to_string(), now));
        // A consumer-protocol member is unknown to the classic requests.
        assert_eq!(
            consumer.classic_heartbeat("c", None, 0, now),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            consumer.classic_leave("c", None),
            ErrorCode::UnknownMemberId
        );
        let mut other = rejoin("", &[]);
        other.protocol_type = "connect".to_string();
        assert_eq!(
            consumer.classic_join(other, &image, now, 10).error_code,
            ErrorCode::InconsistentGroupProtocol.code()
        );
        let first = consumer.classic_join(rejoin("", &[]), &image, now, 10);
        assert_eq!(first.error_code, ErrorCode::MemberIdRequired.code());
        assert_eq!(
            consumer
                .classic_join(rejoin("", &[]), &image, now, 1)
                .error_code,
            ErrorCode::GroupMaxSizeReached.code()
        );
        let joined = consumer.classic_join(rejoin(&first.member_id, &[]), &image, now, 10);
        assert_eq!(joined.error_code, 0);
        assert_eq!(
            consumer
                .classic_sync(
                    &first.member_id,
                    None,
                    joined.generation_id + 1,
                    (None, None),
                    now
                )
                .err(),
            Some(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            consumer
                .classic_sync(
                    &first.member_id,
                    None,
                    joined.generation_id,
                    (None, Some("range")),
                    now
                )
                .err(),
            Some(ErrorCode::InconsistentGroupProtocol)
        );
        assert_eq!(
            consumer.validate_offset_commit(&first.member_id, joined.generation_id, 2, false),
            Ok(())
        );
        assert_eq!(
            consumer.validate_offset_commit(&first.member_id, joined.generation_id + 1, 9, false),
            Err(ErrorCode::IllegalGeneration)
        );
        // Told to rejoin (the group epoch moved), it has its rebalance timeout to do so.
        consumer.group_epoch += 1;
        assert_eq!(
            consumer.classic_heartbeat(&first.member_id, None, joined.generation_id, now),
            ErrorCode::RebalanceInProgress
        );
        // Heartbeating on without rejoining keeps its session, not its partitions.
        let beat = now + Duration::from_secs(50);
        assert_eq!(
            consumer.classic_heartbeat(&first.member_id, None, joined.generation_id, beat),
            ErrorCode::RebalanceInProgress
        );
        let session = Duration::from_secs(45);
        let in_time = now + Duration::from_millis(59_999);
        assert!(
            !consumer
                .expired(in_time, session)
                .contains(&first.member_id)
        );
        let late = now + Duration::from_millis(60_000);
        assert!(consumer.expired(late, session).contains(&first.member_id));
        let rejoined = consumer.classic_join(rejoin(&first.member_id, &[]), &image, now, 10);
        assert_eq!(rejoined.error_code, 0);
        assert!(
            consumer.members[&first.member_id]
                .revocation_deadline
                .is_none()
        );
        assert_eq!(
            consumer.classic_leave(&first.member_id, None),
            ErrorCode::None
        );
        assert!(!consumer.members.contains_key(&first.member_id));
    }
}
