//! Consumer groups of the consumer group protocol (KIP-848, `group.protocol=consumer`): the
//! coordinator assigns partitions itself and every member reconciles towards its target
//! through ConsumerGroupHeartbeat, without the classic protocol's stop-the-world rebalance.
//!
//! A group's membership lives in memory only: after a restart its members are unknown, get
//! UNKNOWN_MEMBER_ID at their next heartbeat and rejoin at epoch 0. Its committed offsets are
//! the group's [`super::state::Group::offsets`], durable through the group log like a classic
//! group's.
//!
//! - `assignor.rs`: the server-side assignors (`uniform`, `range`);
//! - `reconcile.rs`: one member's way from its current assignment to its target;
//! - `heartbeat.rs`: ConsumerGroupHeartbeat on the coordinator;
//! - `describe.rs`: ConsumerGroupDescribe, and how ListGroups sees these groups;
//! - `classic.rs`: online migration between the protocols, and the classic members of a
//!   consumer group.

pub mod assignor;
pub mod classic;
pub mod describe;
pub mod heartbeat;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;

use self::assignor::{Assignment, Assignor, MemberSpec, TopicId};
use self::classic::ClassicMember;
use self::reconcile::{CurrentAssignment, MemberState};

/// Most topic names one member may subscribe to by name (Kafka has no cap): a longer list is
/// answered INVALID_REQUEST, so that members × subscriptions stays bounded.
pub const SUBSCRIBED_TOPIC_NAMES_MAX: usize = 10_000;

/// Largest compiled SubscribedTopicRegex, in bytes (the `regex` crate's size limit; RE2
/// semantics, linear-time matching): a larger one is answered INVALID_REGULAR_EXPRESSION.
pub const TOPIC_REGEX_COMPILED_BYTES_MAX: usize = 1 << 20;

/// Member epoch of a heartbeat that leaves the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;

/// Member epoch of a static member's heartbeat that leaves for now and will come back.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// A subscription by regular expression (full-match, as Kafka's RE2J `matches()`).
pub struct TopicRegex {
    /// The expression as the member sent it.
    pub source: String,
    compiled: regex::Regex,
}

impl TopicRegex {
    /// Compiles `source`; INVALID_REGULAR_EXPRESSION when it is not valid or too large.
    pub fn compile(source: &str) -> Result<TopicRegex, ErrorCode> {
        let build = |pattern: &str| {
            regex::RegexBuilder::new(pattern)
                .size_limit(TOPIC_REGEX_COMPILED_BYTES_MAX)
                .build()
                .map_err(|_| ErrorCode::InvalidRegularExpression)
        };
        // Checked alone first: only a whole expression may be wrapped into the anchors
        // (`a)|(b` would otherwise compile into another expression).
        build(source)?;
        Ok(TopicRegex {
            source: source.to_string(),
            compiled: build(&format!("^(?:{source})$"))?,
        })
    }

    /// Whether topic `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.compiled.is_match(name)
    }
}

/// One member of a consumer group.
pub struct ConsumerMember {
    /// The member id (the client's UUID, or one the coordinator gave a v0 client).
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// The rack the member said it is in.
    pub rack_id: Option<String>,
    /// Client id of the member's connection.
    pub client_id: String,
    /// Client host of the member's connection.
    pub client_host: String,
    /// How long the member may take to revoke partitions.
    pub rebalance_timeout_ms: i32,
    /// Topics subscribed by name.
    pub subscribed_topic_names: Vec<String>,
    /// Topics subscribed by regular expression.
    pub subscribed_topic_regex: Option<TopicRegex>,
    /// The assignor the member asked for.
    pub server_assignor: Option<Assignor>,
    /// Where the member's reconciliation is.
    pub current: CurrentAssignment,
    /// Last heartbeat, for the session timeout.
    pub last_seen: Instant,
    /// When a member asked to revoke partitions (a classic member: to rejoin) must have done
    /// so (its rebalance timeout); past it, the member is removed.
    pub revocation_deadline: Option<Instant>,
    /// The existing topics its subscription resolves to, as of the last metadata refresh.
    resolved_topics: BTreeSet<TopicId>,
    /// Whether its regex is taken into the subscription yet. Kafka resolves a new regex in the
    /// background: the heartbeat that brings it is answered for the named topics only, the
    /// regex's topics come at a later one (librdkafka's tests expect exactly that).
    regex_resolved: bool,
    /// Set for a member that speaks the classic protocol (JoinGroup, SyncGroup, Heartbeat):
    /// a member of the classic group this group was upgraded from, or one that joined since.
    pub classic: Option<ClassicMember>,
}

impl ConsumerMember {
    /// A member joining now, with nothing subscribed yet.
    pub fn new(member_id: String, now: Instant) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            current: CurrentAssignment::joining(),
            last_seen: now,
            revocation_deadline: None,
            resolved_topics: BTreeSet::new(),
            regex_resolved: false,
            classic: None,
        }
    }

    /// True while a static member is away after leaving with epoch -2.
    pub fn is_away(&self) -> bool {
        self.current.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
    }
}

/// The state of a consumer group as ListGroups and ConsumerGroupDescribe name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    /// No members.
    Empty,
    /// The group epoch moved past the target assignment's.
    Assigning,
    /// Some member has not reached the target yet.
    Reconciling,
    /// Every member holds its target.
    Stable,
}

impl ConsumerGroupState {
    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

/// The consumer-protocol side of a group: members, epochs and assignments.
#[derive(Default)]
pub struct ConsumerGroup {
    /// Bumped at every change of membership, subscriptions or subscribed topics' metadata.
    pub group_epoch: i32,
    /// The group epoch the target assignment was computed at.
    pub assignment_epoch: i32,
    /// Members by member id.
    pub members: BTreeMap<String, ConsumerMember>,
    /// The target assignment of each member, at `assignment_epoch`.
    pub target: BTreeMap<String, Assignment>,
    /// The assignor of the last target.
    pub assignor: Option<Assignor>,
    /// The subscribed topics by name, with their id and partition count, as of the last
    /// refresh; a change bumps the group epoch.
    pub subscribed_topics: BTreeMap<String, (TopicId, i32)>,
    /// The metadata image epoch of the last refresh (`None`: refresh at the next heartbeat).
    refreshed_at_image_epoch: Option<u64>,
    /// Which member holds each partition (assigned or pending revocation): one at most.
    holders: HashMap<(TopicId, i32), String>,
}

impl ConsumerGroup {
    /// The group's state.
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            !m.is_away()
                && (m.current.state != MemberState::Stable
                    || m.current.member_epoch != self.assignment_epoch)
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The member holding `instance_id`.
    pub fn member_by_instance(&self, instance_id: &str) -> Option<&ConsumerMember> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// The topic names the members subscribe to (by name or regex) that exist.
    pub fn subscribed_topic_names(&self) -> impl Iterator<Item = &str> {
        self.subscribed_topics.keys().map(String::as_str)
    }

    /// OffsetCommit's check (Kafka's `ConsumerGroup.validateOffsetCommit`): a commit without
    /// a member epoch only while the group is empty, else from a member at its epoch, with
    /// OffsetCommit v9 or later.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: i16,
        transactional: bool,
    ) -> Result<(), ErrorCode> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        // A classic member commits with its generation (its member epoch), in any version.
        if member.classic.is_some() {
            return if member_epoch == member.current.member_epoch {
                Ok(())
            } else {
                Err(ErrorCode::IllegalGeneration)
            };
        }
        if !transactional && version < 9 {
            return Err(ErrorCode::UnsupportedVersion);
        }
        check_member_epoch(member, member_epoch)
    }

    /// OffsetFetch's check (v9+ with a member id): the member exists and is at its epoch.
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ErrorCode> {
        let Some(member_id) = member_id else {
            return Ok(());
        };
        let member = self
            .members
            .get(member_id)
            .ok_or(ErrorCode::UnknownMemberId)?;
        check_member_epoch(member, member_epoch)
    }

    /// The members whose session expired (a classic member's own session timeout, the
    /// others' `session_timeout`) or who did not revoke in time.
    pub fn expired(&self, now: Instant, session_timeout: Duration) -> Vec<String> {
        self.members
            .values()
            .filter(|m| {
                let timeout = m.classic.as_ref().map_or(session_timeout, |c| {
                    Duration::from_millis(c.session_timeout_ms.max(0) as u64)
                });
                now >= m.last_seen + timeout
                    || m.revocation_deadline
                        .is_some_and(|deadline| now >= deadline)
            })
            .map(|m| m.member_id.clone())
            .collect()
    }

    /// Removes a member: its partitions are free again and the group epoch moves.
    fn remove_member(&mut self, member_id: &str) -> Option<ConsumerMember> {
        let member = self.members.remove(member_id)?;
        self.release(&member.member_id, &member.current);
        self.target.remove(member_id);
        self.group_epoch += 1;
        // Its subscription no longer counts: resolve the others' again at the next heartbeat.
        self.refreshed_at_image_epoch = None;
        Some(member)
    }

    /// Gives `member_id` its next current assignment, keeping `holders` exact.
    fn set_current(&mut self, member_id: &str, next: CurrentAssignment) {
        let Some(member) = self.members.get(member_id) else {
            return;
        };
        let previous = member.current.clone();
        self.release(member_id, &previous);
        for partition in next.held() {
            let earlier = self.holders.insert(partition, member_id.to_string());
            // reconcile gives a member only partitions nobody else holds.
            debug_assert!(
                earlier.as_deref().is_none_or(|holder| holder == member_id),
                "{partition:?} held by {earlier:?} and given to {member_id}"
            );
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.current = next;
        }
    }

    fn release(&mut self, member_id: &str, current: &CurrentAssignment) {
        for partition in current.held() {
            if self.holders.get(&partition).map(String::as_str) == Some(member_id) {
                self.holders.remove(&partition);
            }
        }
    }

    /// Whether `partition` is held by a member other than `member_id`.
    fn held_by_other(&self, member_id: &str, partition: (TopicId, i32)) -> bool {
        self.holders
            .get(&partition)
            .is_some_and(|holder| holder != member_id)
    }

    /// Re-resolves every member's subscription against `image` (when the image changed since
    /// the last time, or `force`); true when the subscribed topics or their partition counts
    /// changed (topics created, deleted or grown), which must change the target.
    fn refresh_subscriptions(&mut self, image: &MetadataImage, force: bool) -> bool {
        if !force && self.refreshed_at_image_epoch == Some(image.epoch) {
            return false;
        }
        self.refreshed_at_image_epoch = Some(image.epoch);
        let mut subscribed = BTreeMap::new();
        for member in self.members.values_mut() {
            let mut resolved = BTreeSet::new();
            let by_name = member
                .subscribed_topic_names
                .iter()
                .filter_map(|name| image.topic(name));
            let by_regex = member
                .subscribed_topic_regex
                .iter()
                .filter(|_| member.regex_resolved)
                .flat_map(|regex| image.topics.values().filter(|t| regex.matches(&t.name)));
            for topic in by_name.chain(by_regex) {
                resolved.insert(topic.id);
                subscribed.insert(
                    topic.name.clone(),
                    (topic.id, topic.partitions.len() as i32),
                );
            }
            member.resolved_topics = resolved;
        }
        let changed = subscribed != self.subscribed_topics;
        self.subscribed_topics = subscribed;
        changed
    }

    /// Takes the regexes left out of this heartbeat's subscription into the next refresh
    /// (the background resolution Kafka does between heartbeats).
    fn resolve_new_regexes(&mut self) {
        let mut any = false;
        for member in self.members.values_mut() {
            if member.subscribed_topic_regex.is_some() && !member.regex_resolved {
                member.regex_resolved = true;
                any = true;
            }
        }
        if any {
            self.refreshed_at_image_epoch = None;
        }
    }

    /// Computes the target assignment at the group epoch, with the assignor most members
    /// asked for (ties: `uniform`; none asked: `uniform`), as Kafka picks it.
    fn compute_target(&mut self) {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for assignor in self.members.values().filter_map(|m| m.server_assignor) {
            *votes.entry(assignor).or_default() += 1;
        }
        let assignor = votes
            .iter()
            .rev()
            .max_by_key(|(_, count)| **count)
            .map(|(assignor, _)| *assignor)
            .unwrap_or(Assignor::DEFAULT);
        let partitions: BTreeMap<TopicId, i32> = self.subscribed_topics.values().copied().collect();
        let specs: Vec<MemberSpec<'_>> = self
            .members
            .values()
            .map(|m| MemberSpec {
                member_id: &m.member_id,
                subscribed: m.resolved_topics.clone(),
                previous: self.target.get(&m.member_id),
            })
            .collect();
        let target = assignor.assign(&specs, &partitions);
        self.target = target;
        self.assignor = Some(assignor);
        self.assignment_epoch = self.group_epoch;
    }
}

/// A member's epoch check for offset requests: any other epoch is stale (Kafka answers
/// STALE_MEMBER_EPOCH both ways for consumer-protocol members).
fn check_member_epoch(member: &ConsumerMember, member_epoch: i32) -> Result<(), ErrorCode> {
    if member_epoch == member.current.member_epoch {
        Ok(())
    } else {
        Err(ErrorCode::StaleMemberEpoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_regexes_match_whole_names_and_refuse_bad_expressions() {
        let regex = TopicRegex::compile("hand.*|orders").expect("valid");
        assert!(regex.matches("handover"));
        assert!(regex.matches("orders"));
        assert!(!regex.matches("xhandover"));
        assert!(!regex.matches("orders-2"));
        for bad in ["(", "a)|(b", "[z-a]"] {
            assert_eq!(
                TopicRegex::compile(bad).err(),
                Some(ErrorCode::InvalidRegularExpression),
                "{bad}"
            );
        }
        let huge = "(a|b|c){1000}".repeat(20);
        assert_eq!(
            TopicRegex::compile(&huge).err(),
            Some(ErrorCode::InvalidRegularExpression),
            "over TOPIC_REGEX_COMPILED_BYTES_MAX"
        );
    }

    #[test]
    fn offset_requests_need_the_member_at_its_epoch() {
        let mut group = ConsumerGroup::default();
        assert_eq!(group.validate_offset_commit("", -1, 9, false), Ok(()));
        let mut member = ConsumerMember::new("m".into(), Instant::now());
        member.current.member_epoch = 3;
        group.members.insert("m".into(), member);
        assert_eq!(
            group.validate_offset_commit("", -1, 9, false),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(group.validate_offset_commit("m", 3, 9, false), Ok(()));
        assert_eq!(
            group.validate_offset_commit("m", 3, 8, false),
            Err(ErrorCode::UnsupportedVersion)
        );
        assert_eq!(
            group.validate_offset_commit("m", 2, 9, false),
            Err(ErrorCode::StaleMemberEpoch)
        );
        assert_eq!(group.validate_offset_fetch(None, -1), Ok(()));
        assert_eq!(group.validate_offset_fetch(Some("m"), 3), Ok(()));
        assert_eq!(
            group.validate_offset_fetch(Some("x"), 3),
            Err(ErrorCode::UnknownMemberId)
        );
    }
}
