//! ConsumerGroupHeartbeat on the coordinator: joins, leaves, subscription changes and each
//! member's step towards its target, as Kafka's `GroupMetadataManager.consumerGroupHeartbeat`
//! does them.

use std::time::{Duration, Instant};

use sluice_metadata::MetadataImage;
use sluice_net::messages::consumer_group_heartbeat_request::{
    ConsumerGroupHeartbeatRequest, TopicPartitions as OwnedTopicPartitions,
};
use sluice_net::messages::consumer_group_heartbeat_response::{
    Assignment as ResponseAssignment, ConsumerGroupHeartbeatResponse, TopicPartitions,
};
use sluice_net::{ErrorCode, Uuid};

use super::assignor::{Assignment, Assignor};
use super::reconcile::{CurrentAssignment, MemberState, reconcile};
use super::{
    ConsumerGroup, ConsumerMember, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    SUBSCRIBED_TOPIC_NAMES_MAX, TopicRegex, classic,
};
use crate::group::limits::GROUPS_MAX_ERROR;
use crate::group::state::Group;
use crate::group::{GroupCoordinator, GroupSettings, unique_suffix};

/// The first version in which the client must send its own member id (KIP-1082).
const CLIENT_MEMBER_ID_REQUIRED_VERSION: i16 = 1;

/// An error answer: its code and Kafka's message.
struct Refusal {
    code: ErrorCode,
    message: Option<String>,
}

impl Refusal {
    fn code(code: ErrorCode) -> Refusal {
        Refusal {
            code,
            message: None,
        }
    }

    fn invalid(message: &str) -> Refusal {
        Refusal {
            code: ErrorCode::InvalidRequest,
            message: Some(message.to_string()),
        }
    }
}

/// What a member's heartbeat asks for, once checked.
struct Heartbeat {
    member_id: String,
    member_epoch: i32,
    instance_id: Option<String>,
    rack_id: Option<String>,
    rebalance_timeout_ms: i32,
    subscribed_topic_names: Option<Vec<String>>,
    /// `Some(None)`: the member cleared its regex.
    subscribed_topic_regex: Option<Option<TopicRegex>>,
    server_assignor: Option<Assignor>,
    owned: Option<Assignment>,
    client_id: String,
    client_host: String,
}

/// An answer, and whether the heartbeat changed the group (Kafka would write records for it).
type Answer = (ConsumerGroupHeartbeatResponse, bool);

impl GroupCoordinator {
    /// ConsumerGroupHeartbeat: joins, heartbeats and leaves of consumer-protocol members.
    /// Returns the answer and how long to hold it back before sending it.
    ///
    /// Kafka answers a heartbeat that changed the group (a join, a leave, a new subscription,
    /// a new target or member epoch) only once its records are written, and its coordinator
    /// lingers `group.coordinator.append.linger.ms` (10 ms by default) to batch them. Sluice
    /// writes nothing for membership, so it would answer in microseconds; clients are only
    /// tested against Kafka's pace. librdkafka 2.12's KIP-848 consumer, for one, loses its
    /// rejoin when the answer to a subscription change lands between an application's
    /// `subscribe()` and `unsubscribe()` (test 0045 `subscribe_many_updates`): its revocation
    /// and its unsubscribe merge, it leaves while in join state steady, and it never sends
    /// the next subscription. The answer to a change is therefore held back as long as
    /// Kafka's linger; the change itself applies at once, as in Kafka's in-memory state.
    pub fn consumer_group_heartbeat(
        &self,
        version: i16,
        request: ConsumerGroupHeartbeatRequest,
        client: (String, String),
        image: &MetadataImage,
        settings: GroupSettings,
    ) -> (ConsumerGroupHeartbeatResponse, Duration) {
        let group_id = request.group_id.clone();
        let answer = check(version, request, client).and_then(|heartbeat| {
            let leaving = [LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH];
            if leaving.contains(&heartbeat.member_epoch) {
                self.leave_consumer_group(&group_id, heartbeat, settings)
            } else {
                self.heartbeat_consumer_group(&group_id, heartbeat, image, settings)
            }
        });
        match answer {
            Ok((response, changed)) => {
                let hold = if changed {
                    settings.coordinator_append_linger
                } else {
                    Duration::ZERO
                };
                (response, hold)
            }
            Err(refusal) => {
                tracing::debug!(
                    group = group_id,
                    code = ?refusal.code,
                    message = refusal.message.as_deref().unwrap_or(""),
                    "ConsumerGroupHeartbeat refused"
                );
                // Nothing was written: Kafka answers a refusal at once.
                let response = ConsumerGroupHeartbeatResponse {
                    error_code: refusal.code.code(),
                    error_message: refusal.message,
                    ..Default::default()
                };
                (response, Duration::ZERO)
            }
        }
    }

    fn leave_consumer_group(
        &self,
        group_id: &str,
        heartbeat: Heartbeat,
        settings: GroupSettings,
    ) -> Result<Answer, Refusal> {
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .get_mut(group_id)
            .ok_or(Refusal::code(ErrorCode::UnknownMemberId))?;
        let consumer = group
            .consumer
            .as_mut()
            .ok_or_else(|| not_a_consumer_group(group_id))?;
        let member_id = match &heartbeat.instance_id {
            Some(instance_id) => {
                let member = consumer
                    .member_by_instance(instance_id)
                    .ok_or(Refusal::code(ErrorCode::UnknownMemberId))?;
                if member.member_id != heartbeat.member_id {
                    return Err(Refusal::code(ErrorCode::FencedInstanceId));
                }
                member.member_id.clone()
            }
            None => heartbeat.member_id.clone(),
        };
        if heartbeat.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            // The static member will be back: it keeps its partitions, and nobody else gets
            // them, until its session times out or its instance id rejoins.
            let mut away = consumer
                .members
                .get(&member_id)
                .map(|m| m.current.clone())
                .ok_or(Refusal::code(ErrorCode::UnknownMemberId))?;
            away.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            away.state = MemberState::Stable;
            away.pending_revocation.clear();
            consumer.set_current(&member_id, away);
            if let Some(member) = consumer.members.get_mut(&member_id) {
                member.revocation_deadline = None;
                member.last_seen = Instant::now();
            }
            tracing::info!(group = group_id, member = %member_id, "static member left for now");
        } else if classic::downgrades_without(
            consumer,
            &member_id,
            settings,
            self.limits.group_members_max,
        ) {
            // The last consumer-protocol member leaves classic members behind.
            tracing::info!(group = group_id, member = %member_id, "member left the consumer group");
            classic::downgrade(group, &member_id, Instant::now(), settings);
        } else {
            consumer
                .remove_member(&member_id)
                .ok_or(Refusal::code(ErrorCode::UnknownMemberId))?;
            tracing::info!(group = group_id, member = %member_id, "member left the consumer group");
            if consumer.members.is_empty() {
                group.empty_since = Instant::now();
            }
        }
        let response = ConsumerGroupHeartbeatResponse {
            member_id: Some(heartbeat.member_id),
            member_epoch: heartbeat.member_epoch,
            heartbeat_interval_ms: settings.consumer_heartbeat_interval_ms,
            ..Default::default()
        };
        Ok((response, true))
    }

    fn heartbeat_consumer_group(
        &self,
        group_id: &str,
        mut heartbeat: Heartbeat,
        image: &MetadataImage,
        settings: GroupSettings,
    ) -> Result<Answer, Refusal> {
        let now = Instant::now();
        let joining = heartbeat.member_epoch == 0;
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !joining {
                // Unknown after a restart too (membership is not durable): the member rejoins.
                return Err(Refusal::code(ErrorCode::UnknownMemberId));
            }
            if !self.try_create_group(&mut groups, group_id, "ConsumerGroupHeartbeat", now) {
                return Err(Refusal::code(GROUPS_MAX_ERROR));
            }
        }
        let group = groups.get_mut(group_id).expect("found or inserted above");
        let members_max = self.limits.group_members_max;
        let consumer = consumer_side(group, joining, image, settings, members_max, now)?;
        if consumer.members.len() >= members_max
            && !consumer.members.contains_key(&heartbeat.member_id)
        {
            tracing::debug!(
                group = group_id,
                members_max,
                "heartbeat refused: group_members_max"
            );
            return Err(Refusal {
                code: ErrorCode::GroupMaxSizeReached,
                message: Some(format!(
                    "The consumer group has reached its maximum capacity of {members_max} members."
                )),
            });
        }
        if heartbeat.member_id.is_empty() {
            heartbeat.member_id = format!("{}-{}", heartbeat.client_id, unique_suffix());
        }
        let member_id = heartbeat.member_id.clone();
        let mut subscription_changed = false;
        if joining {
            subscription_changed = true;
            join(consumer, &heartbeat, now)?;
        } else {
            let member = match &heartbeat.instance_id {
                Some(instance_id) => {
                    let member = consumer
                        .member_by_instance(instance_id)
                        .ok_or(Refusal::code(ErrorCode::UnknownMemberId))?;
                    if member.member_id != member_id {
                        return Err(Refusal::code(ErrorCode::FencedInstanceId));
                    }
                    member
                }
                None => consumer
                    .members
                    .get(&member_id)
                    .ok_or(Refusal::code(ErrorCode::UnknownMemberId))?,
            };
            check_epoch(member, heartbeat.member_epoch, heartbeat.owned.as_ref())?;
        }
        let member = consumer
            .members
            .get_mut(&member_id)
            .expect("joined or found above");
        subscription_changed |= update_member(member, &mut heartbeat, now);
        let topics_changed = consumer.refresh_subscriptions(image, subscription_changed);
        consumer.resolve_new_regexes();
        let group_changed = subscription_changed || topics_changed;
        if group_changed {
            consumer.group_epoch += 1;
        }
        if consumer.group_epoch > consumer.assignment_epoch {
            consumer.compute_target();
            tracing::info!(
                group = group_id,
                group_epoch = consumer.group_epoch,
                members = consumer.members.len(),
                "consumer group target assignment computed"
            );
        }
        let previous = consumer.members[&member_id].current.clone();
        let target = consumer.target.get(&member_id).cloned().unwrap_or_default();
        let next = reconcile(
            &previous,
            consumer.assignment_epoch,
            &target,
            heartbeat.owned.as_ref(),
            |topic, partition| consumer.held_by_other(&member_id, (topic, partition)),
        );
        let assigned_changed = next.assigned != previous.assigned;
        let member_changed = next != previous;
        let revoking = next.state == MemberState::UnrevokedPartitions;
        consumer.set_current(&member_id, next);
        let member = consumer
            .members
            .get_mut(&member_id)
            .expect("joined or found above");
        member.revocation_deadline = match (revoking, member.revocation_deadline) {
            (true, Some(deadline)) => Some(deadline),
            (true, None) => Some(now + Duration::from_millis(member.rebalance_timeout_ms as u64)),
            (false, _) => None,
        };
        // Kafka sends the assignment on a full heartbeat (a join, or one that repeats every
        // field) and whenever it changed.
        let full = joining
            || (heartbeat.rebalance_timeout_ms != -1
                && heartbeat.subscribed_topic_names.is_some()
                && heartbeat.owned.is_some());
        let response = ConsumerGroupHeartbeatResponse {
            member_id: Some(member_id),
            member_epoch: member.current.member_epoch,
            heartbeat_interval_ms: settings.consumer_heartbeat_interval_ms,
            assignment: (full || assigned_changed).then(|| response_assignment(&member.current)),
            ..Default::default()
        };
        Ok((response, joining || group_changed || member_changed))
    }
}

/// Kafka's request checks (`throwIfConsumerGroupHeartbeatRequestIsInvalid`).
fn check(
    version: i16,
    request: ConsumerGroupHeartbeatRequest,
    (client_id, client_host): (String, String),
) -> Result<Heartbeat, Refusal> {
    if request.group_id.is_empty() {
        return Err(Refusal::invalid("GroupId can't be empty."));
    }
    if request.instance_id.as_deref() == Some("") {
        return Err(Refusal::invalid("InstanceId can't be empty."));
    }
    if request.rack_id.as_deref() == Some("") {
        return Err(Refusal::invalid("RackId can't be empty."));
    }
    let epoch = request.member_epoch;
    let member_id_required = epoch != 0 || version >= CLIENT_MEMBER_ID_REQUIRED_VERSION;
    if member_id_required && request.member_id.is_empty() {
        return Err(Refusal::invalid("MemberId can't be empty."));
    }
    match epoch {
        0 => {
            if request.rebalance_timeout_ms == -1 {
                return Err(Refusal::invalid(
                    "RebalanceTimeoutMs must be provided in first request.",
                ));
            }
            if request
                .topic_partitions
                .as_ref()
                .is_none_or(|t| !t.is_empty())
            {
                return Err(Refusal::invalid(
                    "TopicPartitions must be empty when (re-)joining.",
                ));
            }
            let names = request
                .subscribed_topic_names
                .as_ref()
                .is_some_and(|n| !n.is_empty());
            let regex = request
                .subscribed_topic_regex
                .as_ref()
                .is_some_and(|r| !r.is_empty());
            if !names && !regex {
                return Err(Refusal::invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                ));
            }
        }
        LEAVE_GROUP_STATIC_MEMBER_EPOCH if request.instance_id.is_none() => {
            return Err(Refusal::invalid("InstanceId can't be null."));
        }
        e if e < LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
            return Err(Refusal::invalid("MemberEpoch is invalid."));
        }
        _ => {}
    }
    if request
        .subscribed_topic_names
        .as_ref()
        .is_some_and(|n| n.len() > SUBSCRIBED_TOPIC_NAMES_MAX)
    {
        return Err(Refusal::invalid(&format!(
            "SubscribedTopicNames holds more than {SUBSCRIBED_TOPIC_NAMES_MAX} topics."
        )));
    }
    let subscribed_topic_regex = match request.subscribed_topic_regex.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(source) => Some(Some(TopicRegex::compile(source).map_err(|code| {
            Refusal {
                code,
                message: Some(format!(
                    "SubscribedTopicRegex `{source}` is not a valid regular expression."
                )),
            }
        })?)),
    };
    let server_assignor = match request.server_assignor.as_deref() {
        None => None,
        Some(name) => Some(Assignor::from_name(name).ok_or_else(|| Refusal {
            code: ErrorCode::UnsupportedAssignor,
            message: Some(format!(
                "ServerAssignor {name} is not supported. Supported assignors: {}, {}.",
                Assignor::Uniform.name(),
                Assignor::Range.name()
            )),
        })?),
    };
    Ok(Heartbeat {
        member_id: request.member_id,
        member_epoch: epoch,
        instance_id: request.instance_id,
        rack_id: request.rack_id,
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request.subscribed_topic_names,
        subscribed_topic_regex,
        server_assignor,
        owned: request
            .topic_partitions
            .map(|owned| owned_assignment(&owned)),
        client_id,
        client_host,
    })
}

/// The consumer side of `group`, converting a classic group into a consumer group when a
/// member joins: an empty one always, a live one as `group.consumer.migration.policy` allows
/// (Kafka's `getOrMaybeCreateConsumerGroup`).
fn consumer_side<'g>(
    group: &'g mut Group,
    joining: bool,
    image: &MetadataImage,
    settings: GroupSettings,
    members_max: usize,
    now: Instant,
) -> Result<&'g mut ConsumerGroup, Refusal> {
    if group.consumer.is_none() {
        if !joining {
            return Err(if group.is_empty() {
                Refusal::code(ErrorCode::UnknownMemberId)
            } else {
                not_a_consumer_group(&group.id)
            });
        }
        if group.is_empty() {
            group.consumer = Some(ConsumerGroup::default());
            group.protocol_type = Some(classic::CONSUMER_PROTOCOL_TYPE.to_string());
            group.protocol_name = None;
        } else {
            if let Some(reason) = classic::upgrade_refusal(group, settings, members_max) {
                tracing::info!(group = %group.id, "classic group not upgraded to a consumer group: {reason}");
                return Err(not_a_consumer_group(&group.id));
            }
            classic::upgrade(group, image, now).map_err(|code| Refusal {
                code,
                message: Some(format!(
                    "Cannot upgrade the classic group {} to consumer group because the \
                     embedded consumer protocol is malformed.",
                    group.id
                )),
            })?;
            tracing::info!(group = %group.id, "classic group upgraded to a consumer group");
        }
    }
    Ok(group.consumer.as_mut().expect("set above"))
}

fn not_a_consumer_group(group_id: &str) -> Refusal {
    Refusal {
        code: ErrorCode::GroupIdNotFound,
        message: Some(format!("Group {group_id} is not a consumer group.")),
    }
}

/// A member joins (epoch 0): a new member, a member rejoining after it was fenced (it starts
/// over, its partitions released), or a static member taking over its instance id.
fn join(consumer: &mut ConsumerGroup, heartbeat: &Heartbeat, now: Instant) -> Result<(), Refusal> {
    let member_id = &heartbeat.member_id;
    let replaced = match &heartbeat.instance_id {
        Some(instance_id) => match consumer.member_by_instance(instance_id) {
            Some(existing) if existing.member_id == *member_id => None,
            Some(existing) if !existing.is_away() => {
                return Err(Refusal {
                    code: ErrorCode::UnreleasedInstanceId,
                    message: Some(format!(
                        "Static member {member_id} with instance id {instance_id} cannot join \
                         the group because the instance id is owned by {} member.",
                        existing.member_id
                    )),
                });
            }
            Some(existing) => Some(existing.member_id.clone()),
            None => None,
        },
        None => None,
    };
    if consumer.members.contains_key(member_id) {
        consumer.remove_member(member_id);
    }
    let mut member = ConsumerMember::new(member_id.clone(), now);
    if let Some(old_id) = replaced {
        // The static member's new incarnation keeps its subscription and partitions.
        let old = consumer
            .members
            .remove(&old_id)
            .expect("found by its instance id");
        consumer.release(&old_id, &old.current);
        let target = consumer.target.remove(&old_id);
        member.subscribed_topic_names = old.subscribed_topic_names;
        member.subscribed_topic_regex = old.subscribed_topic_regex;
        member.server_assignor = old.server_assignor;
        member.rebalance_timeout_ms = old.rebalance_timeout_ms;
        member.resolved_topics = old.resolved_topics;
        consumer.members.insert(member_id.clone(), member);
        consumer.set_current(
            member_id,
            CurrentAssignment {
                member_epoch: 0,
                previous_member_epoch: 0,
                ..old.current
            },
        );
        if let Some(target) = target {
            consumer.target.insert(member_id.clone(), target);
        }
        tracing::info!(member = %member_id, replaced = %old_id, "static member rejoined");
    } else {
        consumer.members.insert(member_id.clone(), member);
    }
    Ok(())
}

/// Kafka's epoch check: a member may lag by one epoch only if the answer that moved it may
/// have been lost (it reports a subset of its assignment); anything else is fenced.
fn check_epoch(
    member: &ConsumerMember,
    received: i32,
    owned: Option<&Assignment>,
) -> Result<(), Refusal> {
    let current = &member.current;
    let lost_answer = received == current.previous_member_epoch
        && owned.is_some_and(|owned| {
            owned.iter().all(|(topic, set)| {
                current
                    .assigned
                    .get(topic)
                    .is_some_and(|assigned| set.is_subset(assigned))
            })
        });
    if received > current.member_epoch || (received < current.member_epoch && !lost_answer) {
        return Err(Refusal {
            code: ErrorCode::FencedMemberEpoch,
            message: Some(format!(
                "The consumer group member has a member epoch ({received}) other than the one \
                 known by the group coordinator ({}). The member must abandon all its \
                 partitions and rejoin.",
                current.member_epoch
            )),
        });
    }
    Ok(())
}

/// Applies the heartbeat's non-null fields to the member; true when its subscription changed.
fn update_member(member: &mut ConsumerMember, heartbeat: &mut Heartbeat, now: Instant) -> bool {
    let mut changed = false;
    if let Some(instance_id) = &heartbeat.instance_id {
        member.instance_id = Some(instance_id.clone());
    }
    if let Some(rack_id) = &heartbeat.rack_id {
        member.rack_id = Some(rack_id.clone());
    }
    if heartbeat.rebalance_timeout_ms != -1 {
        member.rebalance_timeout_ms = heartbeat.rebalance_timeout_ms.max(0);
    }
    if let Some(assignor) = heartbeat.server_assignor {
        changed |= member.server_assignor != Some(assignor);
        member.server_assignor = Some(assignor);
    }
    if let Some(names) = &heartbeat.subscribed_topic_names {
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        changed |= sorted != member.subscribed_topic_names;
        member.subscribed_topic_names = sorted;
    }
    if let Some(regex) = heartbeat.subscribed_topic_regex.take() {
        let before = member.subscribed_topic_regex.as_ref().map(|r| &r.source);
        let new_regex = before != regex.as_ref().map(|r| &r.source);
        changed |= new_regex;
        if new_regex {
            member.regex_resolved = false;
        }
        member.subscribed_topic_regex = regex;
    }
    member.client_id = heartbeat.client_id.clone();
    member.client_host = heartbeat.client_host.clone();
    member.last_seen = now;
    changed
}

fn owned_assignment(owned: &[OwnedTopicPartitions]) -> Assignment {
    let mut assignment = Assignment::new();
    for topic in owned {
        assignment
            .entry(topic.topic_id.0)
            .or_default()
            .extend(topic.partitions.iter().copied());
    }
    assignment
}

fn response_assignment(current: &CurrentAssignment) -> ResponseAssignment {
    ResponseAssignment {
        topic_partitions: current
            .assigned
            .iter()
            .map(|(topic, partitions)| TopicPartitions {
                topic_id: Uuid(*topic),
                partitions: partitions.iter().copied().collect(),
            })
            .collect(),
    }
}

/// The coordinator's sweep of one group: removes the members of a consumer group whose
/// session or rebalance timeout passed; when the last consumer-protocol member goes and
/// classic members remain, the group is downgraded as the policy allows.
pub fn expire_members(
    group: &mut Group,
    now: Instant,
    settings: GroupSettings,
    members_max: usize,
) {
    let Some(consumer) = group.consumer.as_mut() else {
        return;
    };
    let expired = consumer.expired(now, settings.consumer_session_timeout);
    if expired.is_empty() {
        return;
    }
    tracing::info!(group = %group.id, members = ?expired, "consumer group members expired: session or rebalance timeout");
    for member_id in &expired {
        if classic::downgrades_without(consumer, member_id, settings, members_max) {
            // The classic members that expired too go with the classic group's own sweep.
            classic::downgrade(group, member_id, now, settings);
            return;
        }
        consumer.remove_member(member_id);
    }
    if consumer.members.is_empty() {
        group.empty_since = now;
    }
}
