//! One group: its classic-protocol members and rebalance state, its consumer-protocol side
//! (`super::consumer`) when it has one, and its committed offsets.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::sync_group_response::SyncGroupResponse;

use super::consumer::ConsumerGroup;
use super::log::CommittedOffset;

/// The states of Kafka's classic group state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups / DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// One member of a group.
pub struct Member {
    /// Broker-assigned member id.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id of the member's connection.
    pub client_id: String,
    /// Client host of the member's connection.
    pub client_host: String,
    /// Session timeout the member asked for.
    pub session_timeout_ms: i32,
    /// Rebalance timeout the member asked for.
    pub rebalance_timeout_ms: i32,
    /// Protocols the member supports, in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// The assignment the leader gave this member.
    pub assignment: Bytes,
    /// The pending JoinGroup answer while a rebalance is prepared.
    pub awaiting_join: Option<oneshot::Sender<JoinGroupResponse>>,
    /// The pending SyncGroup answer while the leader's assignment is awaited.
    pub awaiting_sync: Option<oneshot::Sender<SyncGroupResponse>>,
    /// Last heartbeat (or join / sync), for session expiry.
    pub last_seen: Instant,
}

impl Member {
    /// The metadata this member sent for `protocol`.
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// A group and its committed offsets.
pub struct Group {
    /// Group id.
    pub id: String,
    /// Current state.
    pub state: GroupState,
    /// Protocol type of the members ("consumer" for consumers).
    pub protocol_type: Option<String>,
    /// The protocol (assignor) chosen for the current generation.
    pub protocol_name: Option<String>,
    /// Current generation.
    pub generation_id: i32,
    /// Member id of the leader.
    pub leader: Option<String>,
    /// Members by member id.
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED and not joined yet, with their expiry.
    pub pending_members: HashMap<String, Instant>,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// When a prepared rebalance completes at the latest.
    pub rebalance_deadline: Option<Instant>,
    /// When the initial delay of a new group's first rebalance ends.
    pub initial_delay_until: Option<Instant>,
    /// When the leader's SyncGroup must have arrived.
    pub sync_deadline: Option<Instant>,
    /// Since when the group has had no members (for offsets retention).
    pub empty_since: Instant,
    /// Set while the group is a consumer group of the consumer protocol (KIP-848); the
    /// classic fields above then stay those of an empty group.
    pub consumer: Option<ConsumerGroup>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: String, now: Instant) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            offsets: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            empty_since: now,
            consumer: None,
        }
    }

    /// True when the group has no members of either protocol.
    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
            && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// The member with this static instance id.
    pub fn member_by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.group_instance_id.as_deref() == Some(instance))
    }

    /// Whether `member_id` (empty: a new member) may join a group capped at `members_max`
    /// members: Kafka's `acceptJoiningMember` (GroupMetadataManager). While a rebalance is
    /// prepared the members already rejoined are counted, not all members: the last of the
    /// old members to rejoin are the ones left out when the cap is below the group's size.
    pub fn accepts_joining_member(&self, member_id: &str, members_max: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members
                    .get(member_id)
                    .is_some_and(|m| m.awaiting_join.is_some())
                    || self
                        .members
                        .values()
                        .filter(|m| m.awaiting_join.is_some())
                        .count()
                        < members_max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < members_max
            }
        }
    }

    /// True when every member has sent its JoinGroup for the rebalance being prepared.
    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// The longest rebalance timeout among the members.
    pub fn rebalance_timeout_ms(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    pub fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<Vec<&String>> = None;
        for member in self.members.values() {
            let names: Vec<&String> = member.protocols.iter().map(|(n, _)| n).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n))
                && let Some(vote) = votes.iter_mut().find(|(_, c)| *c == name)
            {
                vote.0 += 1;
            }
        }
        // The first candidate wins ties: max_by_key keeps the last maximum, so reverse.
        votes
            .iter()
            .rev()
            .max_by_key(|(count, _)| *count)
            .map(|(_, name)| (*name).clone())
    }

    /// True when `protocols` has a protocol in common with every current member.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, awaiting_join: bool) -> Member {
        Member {
            member_id: id.to_string(),
            group_instance_id: None,
            client_id: "client".to_string(),
            client_host: "host".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocols: vec![("range".to_string(), Bytes::new())],
            assignment: Bytes::new(),
            awaiting_join: awaiting_join.then(|| oneshot::channel().0),
            awaiting_sync: None,
            last_seen: Instant::now(),
        }
    }

    /// A group in `state` with members `a`, `b`, `c`; `a` and `b` have rejoined.
    fn group(state: GroupState) -> Group {
        let mut group = Group::new("g".to_string(), Instant::now());
        group.state = state;
        for (id, awaiting) in [("a", true), ("b", true), ("c", false)] {
            group.members.insert(id.to_string(), member(id, awaiting));
        }
        group
    }

    #[test]
    fn an_empty_group_accepts_anyone_as_kafka_does() {
        let empty = Group::new("g".to_string(), Instant::now());
        assert!(empty.accepts_joining_member("", 1));
        assert!(empty.accepts_joining_member("unknown", 1));
    }

    #[test]
    fn a_stable_group_accepts_its_members_and_new_ones_below_the_cap() {
        for state in [GroupState::Stable, GroupState::CompletingRebalance] {
            let group = group(state);
            assert!(
                group.accepts_joining_member("c", 3),
                "a member rejoins a full group"
            );
            assert!(
                !group.accepts_joining_member("", 3),
                "a new member of a full group"
            );
            assert!(!group.accepts_joining_member("pending", 3));
            assert!(group.accepts_joining_member("", 4), "room for one more");
            // A cap lowered below the group's size keeps its members, takes no new one.
            assert!(group.accepts_joining_member("a", 2));
            assert!(!group.accepts_joining_member("", 2));
        }
    }

    #[test]
    fn a_rebalancing_group_counts_the_members_that_rejoined() {
        let group = group(GroupState::PreparingRebalance);
        // Two have rejoined: a third place is left under a cap of 3, for anyone.
        assert!(group.accepts_joining_member("c", 3));
        assert!(group.accepts_joining_member("", 3));
        // Under a cap of 2, the member that has not rejoined yet is the one left out, and the
        // members already waiting are still accepted when they join again.
        assert!(!group.accepts_joining_member("c", 2));
        assert!(!group.accepts_joining_member("", 2));
        assert!(group.accepts_joining_member("a", 2));
        assert!(group.accepts_joining_member("b", 1));
    }
}
