//! How one member moves from its current assignment to its target (Kafka's
//! `CurrentAssignmentBuilder`): partitions it must give up are revoked first, and a partition
//! is handed to its new owner only once no other member holds it, so that no partition is ever
//! consumed by two members at once.

use super::assignor::{Assignment, TopicId};

/// Where a member is in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The member holds its whole target, at the target's epoch.
    Stable,
    /// The member was asked to revoke partitions and has not confirmed it yet.
    UnrevokedPartitions,
    /// The member waits for partitions other members still hold.
    UnreleasedPartitions,
}

/// A member's current assignment and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentAssignment {
    /// Where the reconciliation is.
    pub state: MemberState,
    /// The member epoch (the epoch of the target it last reached).
    pub member_epoch: i32,
    /// The epoch before the last change: a heartbeat with it is still accepted when its
    /// answer may have been lost (Kafka's rule).
    pub previous_member_epoch: i32,
    /// The partitions the member may consume.
    pub assigned: Assignment,
    /// Partitions the member was asked to revoke, still its own until it confirms.
    pub pending_revocation: Assignment,
}

impl CurrentAssignment {
    /// A member that just joined: epoch 0, nothing assigned.
    pub fn joining() -> CurrentAssignment {
        CurrentAssignment {
            state: MemberState::Stable,
            member_epoch: 0,
            previous_member_epoch: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        }
    }

    /// Every partition the member holds: assigned or pending revocation.
    pub fn held(&self) -> impl Iterator<Item = (TopicId, i32)> + '_ {
        self.assigned
            .iter()
            .chain(&self.pending_revocation)
            .flat_map(|(topic, set)| set.iter().map(move |p| (*topic, *p)))
    }
}

/// The member's next step towards `target` (at `target_epoch`). `owned` is what the member
/// reported it owns (`None`: not reported in this heartbeat); `held_by_other` tells whether a
/// partition is still held by another member.
pub fn reconcile(
    current: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    held_by_other: impl Fn(TopicId, i32) -> bool,
) -> CurrentAssignment {
    match current.state {
        MemberState::Stable if current.member_epoch == target_epoch => current.clone(),
        MemberState::UnrevokedPartitions if owns_any(owned, &current.pending_revocation) => {
            current.clone()
        }
        _ => next_assignment(current, target_epoch, target, owned, held_by_other),
    }
}

/// True when `owned` holds any partition of `partitions`, or is unknown.
fn owns_any(owned: Option<&Assignment>, partitions: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|(topic, set)| {
        partitions
            .get(topic)
            .is_some_and(|pending| !pending.is_disjoint(set))
    })
}

fn next_assignment(
    current: &CurrentAssignment,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    held_by_other: impl Fn(TopicId, i32) -> bool,
) -> CurrentAssignment {
    let mut kept = Assignment::new();
    let mut revoking = Assignment::new();
    let mut newly_assigned = Assignment::new();
    let mut unreleased = false;
    for (topic, assigned) in &current.assigned {
        let wanted = target.get(topic);
        for &partition in assigned {
            let destination = if wanted.is_some_and(|w| w.contains(&partition)) {
                &mut kept
            } else {
                &mut revoking
            };
            destination.entry(*topic).or_default().insert(partition);
        }
    }
    for (topic, wanted) in target {
        for &partition in wanted {
            if kept.get(topic).is_some_and(|k| k.contains(&partition)) {
                continue;
            }
            if held_by_other(*topic, partition) {
                unreleased = true;
            } else {
                newly_assigned.entry(*topic).or_default().insert(partition);
            }
        }
    }
    let advanced = |state: MemberState, assigned: Assignment| CurrentAssignment {
        state,
        member_epoch: target_epoch,
        previous_member_epoch: current.member_epoch,
        assigned,
        pending_revocation: Assignment::new(),
    };
    if !revoking.is_empty() && owns_any(owned, &revoking) {
        // The member keeps its epoch and gives up `revoking` first; nothing new until then.
        return CurrentAssignment {
            state: MemberState::UnrevokedPartitions,
            member_epoch: current.member_epoch,
            previous_member_epoch: current.previous_member_epoch,
            assigned: kept,
            pending_revocation: revoking,
        };
    }
    for (topic, partitions) in newly_assigned {
        kept.entry(topic).or_default().extend(partitions);
    }
    let state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    advanced(state, kept)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const T: TopicId = [7; 16];

    fn parts(list: &[i32]) -> Assignment {
        if list.is_empty() {
            return Assignment::new();
        }
        BTreeMap::from([(T, list.iter().copied().collect::<BTreeSet<i32>>())])
    }

    /// Two members and a simulated coordinator: every heartbeat applies `reconcile`, and the
    /// test checks after each step that no partition is held by both.
    struct Pair {
        members: [CurrentAssignment; 2],
        targets: [Assignment; 2],
        epoch: i32,
    }

    impl Pair {
        fn heartbeat(&mut self, index: usize, owned: Option<Assignment>) {
            let other = &self.members[1 - index];
            let held: BTreeSet<(TopicId, i32)> = other.held().collect();
            let next = reconcile(
                &self.members[index],
                self.epoch,
                &self.targets[index],
                owned.as_ref(),
                |t, p| held.contains(&(t, p)),
            );
            self.members[index] = next;
            let a: BTreeSet<_> = self.members[0].held().collect();
            let b: BTreeSet<_> = self.members[1].held().collect();
            assert!(a.is_disjoint(&b), "held by both: {a:?} {b:?}");
        }

        /// What the client owns after applying the coordinator's last answer.
        fn owned(&self, index: usize) -> Assignment {
            self.members[index].assigned.clone()
        }
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let mut pair = Pair {
            members: [CurrentAssignment::joining(), CurrentAssignment::joining()],
            targets: [parts(&[0, 1, 2, 3]), parts(&[])],
            epoch: 1,
        };
        pair.heartbeat(0, Some(parts(&[])));
        assert_eq!(pair.members[0].assigned, parts(&[0, 1, 2, 3]));
        assert_eq!(pair.members[0].member_epoch, 1);

        // A second member joins: the target moves 2 and 3 to it.
        pair.epoch = 2;
        pair.targets = [parts(&[0, 1]), parts(&[2, 3])];
        pair.heartbeat(1, Some(parts(&[])));
        assert_eq!(pair.members[1].state, MemberState::UnreleasedPartitions);
        assert!(
            pair.members[1].assigned.is_empty(),
            "2 and 3 are still held"
        );
        assert_eq!(pair.members[1].member_epoch, 2);

        // The first member is asked to revoke 2 and 3, keeping its epoch.
        pair.heartbeat(0, Some(parts(&[0, 1, 2, 3])));
        assert_eq!(pair.members[0].state, MemberState::UnrevokedPartitions);
        assert_eq!(pair.members[0].member_epoch, 1);
        assert_eq!(pair.members[0].pending_revocation, parts(&[2, 3]));

        // Until it confirms, the second member still waits, and an answer-less heartbeat
        // (owned partitions not reported) confirms nothing.
        pair.heartbeat(1, None);
        assert!(pair.members[1].assigned.is_empty());
        pair.heartbeat(0, None);
        assert_eq!(pair.members[0].state, MemberState::UnrevokedPartitions);

        // It confirms: it reaches epoch 2, and then the second member gets 2 and 3.
        let owned = pair.owned(0);
        pair.heartbeat(0, Some(owned));
        assert_eq!(pair.members[0].state, MemberState::Stable);
        assert_eq!(pair.members[0].member_epoch, 2);
        pair.heartbeat(1, Some(parts(&[])));
        assert_eq!(pair.members[1].assigned, parts(&[2, 3]));
        assert_eq!(pair.members[1].state, MemberState::Stable);
    }

    #[test]
    fn a_stable_member_at_the_target_epoch_is_left_alone() {
        let current = CurrentAssignment {
            state: MemberState::Stable,
            member_epoch: 3,
            previous_member_epoch: 2,
            assigned: parts(&[1]),
            pending_revocation: Assignment::new(),
        };
        let next = reconcile(&current, 3, &parts(&[1, 2]), Some(&parts(&[1])), |_, _| {
            false
        });
        assert_eq!(next, current);
    }

    #[test]
    fn a_member_that_no_longer_owns_what_it_loses_skips_revocation() {
        let current = CurrentAssignment {
            state: MemberState::Stable,
            member_epoch: 1,
            previous_member_epoch: 0,
            assigned: parts(&[0, 1]),
            pending_revocation: Assignment::new(),
        };
        let next = reconcile(&current, 2, &parts(&[0]), Some(&parts(&[0])), |_, _| false);
        assert_eq!(next.state, MemberState::Stable);
        assert_eq!(next.member_epoch, 2);
        assert_eq!(next.assigned, parts(&[0]));
    }

    #[test]
    fn reassignment_in_random_orders_never_double_assigns() {
        // A small deterministic walk: targets swap back and forth while the two members
        // heartbeat in a seeded order, each reporting what it owns (or nothing).
        let mut seed: u64 = 0x5eed;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut pair = Pair {
            members: [CurrentAssignment::joining(), CurrentAssignment::joining()],
            targets: [parts(&[0, 1]), parts(&[2, 3])],
            epoch: 1,
        };
        let layouts = [
            [parts(&[0, 1]), parts(&[2, 3])],
            [parts(&[2, 3]), parts(&[0, 1])],
            [parts(&[0, 1, 2, 3]), parts(&[])],
            [parts(&[]), parts(&[0, 1, 2, 3])],
            [parts(&[1, 3]), parts(&[0, 2])],
        ];
        for step in 0..2000 {
            if step % 7 == 0 {
                pair.epoch += 1;
                pair.targets = layouts[(next() % layouts.len() as u64) as usize].clone();
            }
            let index = (next() % 2) as usize;
            let owned = (next() % 4 != 0).then(|| pair.owned(index));
            pair.heartbeat(index, owned);
        }
        // Left alone with full reports, both converge on the last target.
        for _ in 0..4 {
            for index in 0..2 {
                let owned = pair.owned(index);
                pair.heartbeat(index, Some(owned));
            }
        }
        for index in 0..2 {
            assert_eq!(pair.members[index].assigned, pair.targets[index]);
            assert_eq!(pair.members[index].state, MemberState::Stable);
        }
    }
}
