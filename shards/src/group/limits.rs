//! Caps on what the group coordinators hold: members per group (Kafka's `group.max.size`) and
//! groups per broker (no Kafka equivalent), and the answer and log line hitting each produces.
//!
//! - `group_members_max`: a JoinGroup that would make a group larger is answered
//!   GROUP_MAX_SIZE_REACHED, exactly where Kafka's classic coordinator answers it
//!   ([`super::state::Group::accepts_joining_member`]).
//! - `groups_max`: a JoinGroup, OffsetCommit or TxnOffsetCommit that would create a group beyond
//!   it is answered GROUP_MAX_SIZE_REACHED too (see [`GROUPS_MAX_ERROR`] for why), and the shard
//!   logs one WARN line naming the limit and its flag, at most every [`WARN_INTERVAL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_net::ErrorCode;

use crate::config::BrokerConfig;

/// The answer to a request that would create a group beyond `groups_max`.
///
/// Kafka has no cap on groups, so no code of its own for it. GROUP_MAX_SIZE_REACHED is the
/// clearest of the codes clients know: its name says a group limit was reached, clients treat
/// it as fatal and show it to the application (the Java consumer raises
/// GroupMaxSizeReachedException from poll(), librdkafka reports it as a consumer error), and
/// it is the one answer the operator's remedy is the same for: raise a limit. The others
/// mislead: COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR make clients rediscover the coordinator
/// and retry forever in silence, GROUP_AUTHORIZATION_FAILED points at ACLs, INVALID_GROUP_ID at
/// the name, POLICY_VIOLATION and THROTTLING_QUOTA_EXCEEDED are not answers of the group APIs.
/// The broker's WARN line names `groups_max` and `--groups-max`, so nobody mistakes it for
/// `group_members_max`.
pub const GROUPS_MAX_ERROR: ErrorCode = ErrorCode::GroupMaxSizeReached;

/// The shortest time between two WARN lines of one shard about `groups_max`.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The caps, and the count of groups every coordinator of the broker holds. Cloned into each
/// shard's coordinator; the clones share the count.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    /// Most members in one group (Kafka's `group.max.size`).
    pub group_members_max: usize,
    /// Most groups the broker coordinates, all shards together.
    pub groups_max: usize,
    /// Groups held by all coordinators of the broker. Touched only when a group is created or
    /// removed (JoinGroup or OffsetCommit of a new group, expiry, DeleteGroups), never per
    /// message, so one shared atomic costs nothing on the request path.
    groups: Arc<AtomicUsize>,
}

impl GroupLimits {
    /// Limits with these caps and a count of its own: create it once per broker and clone it
    /// into every shard's coordinator, so that `groups_max` holds for the broker.
    pub fn new(group_members_max: usize, groups_max: usize) -> GroupLimits {
        assert!(
            group_members_max >= 1,
            "group_members_max must be at least 1"
        );
        assert!(groups_max >= 1, "groups_max must be at least 1");
        GroupLimits {
            group_members_max,
            groups_max,
            groups: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The limits of `config` (`--group-members-max`, `--groups-max`).
    pub fn from_config(config: &BrokerConfig) -> GroupLimits {
        GroupLimits::new(config.group_members_max, config.groups_max)
    }

    /// Groups the broker coordinates now.
    pub fn groups(&self) -> usize {
        self.groups.load(Ordering::Relaxed)
    }

    /// Takes the count of one new group; false (and nothing taken) when the broker already
    /// coordinates `groups_max` groups.
    pub fn try_add_group(&self) -> bool {
        self.groups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.groups_max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a group that exists whatever the cap: replayed from the WAL at start-up, or the
    /// offsets of a transaction that already committed.
    pub fn add_group_over_cap(&self) {
        self.groups.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back the count of `removed` groups.
    pub fn remove_groups(&self, removed: usize) {
        if removed == 0 {
            return;
        }
        let before = self.groups.fetch_sub(removed, Ordering::Relaxed);
        debug_assert!(
            before >= removed,
            "removed {removed} groups of {before} counted"
        );
    }
}

impl Default for GroupLimits {
    /// The defaults of [`BrokerConfig`], with a count of its own.
    fn default() -> GroupLimits {
        GroupLimits::from_config(&BrokerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_counted_up_to_the_cap_and_given_back() {
        let limits = GroupLimits::new(5, 3);
        let other_shard = limits.clone();
        assert!(limits.try_add_group());
        assert!(other_shard.try_add_group());
        assert!(limits.try_add_group());
        assert_eq!(limits.groups(), 3);
        // The cap holds for every clone: they share the count.
        assert!(!limits.try_add_group());
        assert!(!other_shard.try_add_group());
        assert_eq!(other_shard.groups(), 3);
        other_shard.remove_groups(1);
        assert!(limits.try_add_group());
        assert!(!other_shard.try_add_group());
    }

    #[test]
    fn groups_that_must_exist_are_counted_over_the_cap() {
        let limits = GroupLimits::new(5, 2);
        for _ in 0..3 {
            limits.add_group_over_cap();
        }
        assert_eq!(limits.groups(), 3);
        assert!(!limits.try_add_group());
        limits.remove_groups(2);
        assert!(limits.try_add_group());
        assert_eq!(limits.groups(), 2);
    }

    #[test]
    fn independent_limits_do_not_share_a_count() {
        let a = GroupLimits::new(5, 1);
        let b = GroupLimits::new(5, 1);
        assert!(a.try_add_group());
        assert!(b.try_add_group());
    }

    #[test]
    fn the_count_is_exact_under_concurrent_shards() {
        let limits = GroupLimits::new(5, 100);
        let taken: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limits = limits.clone();
                    scope.spawn(move || (0..1000).filter(|_| limits.try_add_group()).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 100);
        assert_eq!(limits.groups(), 100);
    }

    #[test]
    fn defaults_follow_the_broker_config() {
        let limits = GroupLimits::default();
        let config = BrokerConfig::default();
        assert_eq!(limits.group_members_max, config.group_members_max);
        assert_eq!(limits.groups_max, config.groups_max);
        assert_eq!(limits.groups(), 0);
    }
}
