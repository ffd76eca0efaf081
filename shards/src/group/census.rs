//! A read-only count of a coordinator's groups and members by state, for metrics.

use super::GroupCoordinator;
use super::consumer::ConsumerGroupState;
use super::state::GroupState;

/// Every state, in the order of [`GroupCensus`]'s arrays.
pub const STATES: [GroupState; 5] = [
    GroupState::Empty,
    GroupState::PreparingRebalance,
    GroupState::CompletingRebalance,
    GroupState::Stable,
    GroupState::Dead,
];

/// Groups and members per state, indexed like [`STATES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCensus {
    /// Groups in each state.
    pub groups: [u64; STATES.len()],
    /// Members of the groups in each state.
    pub members: [u64; STATES.len()],
}

impl GroupCoordinator {
    /// Counts this shard's groups and their members by state.
    pub fn census(&self) -> GroupCensus {
        let mut census = GroupCensus::default();
        for group in self.groups.borrow().values() {
            // A consumer-protocol group counts under the classic state closest to its own:
            // assigning or reconciling is rebalancing.
            let (state, members) = match &group.consumer {
                None => (group.state, group.members.len()),
                Some(consumer) => (
                    match consumer.state() {
                        ConsumerGroupState::Empty => GroupState::Empty,
                        ConsumerGroupState::Stable => GroupState::Stable,
                        ConsumerGroupState::Assigning | ConsumerGroupState::Reconciling => {
                            GroupState::PreparingRebalance
                        }
                    },
                    consumer.members.len(),
                ),
            };
            let index = STATES
                .iter()
                .position(|s| *s == state)
                .unwrap_or(STATES.len() - 1);
            census.groups[index] += 1;
            census.members[index] += members as u64;
        }
        census
    }
}

impl GroupCensus {
    /// Adds another shard's counts to these.
    pub fn merge(&mut self, other: &GroupCensus) {
        for (mine, theirs) in self.groups.iter_mut().zip(other.groups) {
            *mine += theirs;
        }
        for (mine, theirs) in self.members.iter_mut().zip(other.members) {
            *mine += theirs;
        }
    }
}
