//! One consumer group of the classic protocol: its members and rebalance state.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_net::messages::join_group_response::JoinGroupResponse;
use sluice_net::messages::sync_group_response::SyncGroupResponse;

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
        }
    }

    /// The member with this static instance id.
    pub fn member_by_instance(&self, instance: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.group_instance_id.as_deref() == Some(instance))
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
