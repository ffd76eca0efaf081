//! The server-side assignors of the consumer group protocol (KIP-848): from each member's
//! subscribed topics and the topics' partition counts, the group's target assignment.
//!
//! `uniform` (Kafka's default) spreads all subscribed partitions so that members' counts
//! differ by at most one where their subscriptions allow it, keeping each member's earlier
//! partitions where it can (fewer partitions move, so fewer revocations). `range` splits each
//! topic into contiguous ranges among its subscribers in member-id order, as Kafka's range
//! assignor does, so co-partitioned topics land together.

use std::collections::{BTreeMap, BTreeSet};

/// A topic id (the metadata image's 16-byte UUID).
pub type TopicId = [u8; 16];

/// Partitions by topic id.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

/// The assignors a member may name in ServerAssignor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assignor {
    /// Balanced and sticky (Kafka's `uniform`, the default).
    Uniform,
    /// Contiguous ranges per topic (Kafka's `range`).
    Range,
}

/// One member as the assignor sees it.
pub struct MemberSpec<'a> {
    /// The member id; members are assigned in this order.
    pub member_id: &'a str,
    /// Topics the member subscribes to (only those that exist).
    pub subscribed: BTreeSet<TopicId>,
    /// The member's previous target, which `uniform` keeps where it can.
    pub previous: Option<&'a Assignment>,
}

impl Assignor {
    /// The assignor used when no member names one.
    pub const DEFAULT: Assignor = Assignor::Uniform;

    /// The assignor called `name`, as ServerAssignor spells it.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// Its name in ServerAssignor and ConsumerGroupDescribe.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment of every member (each member has an entry, possibly empty).
    /// `partitions` holds the partition count of every topic some member subscribes to.
    pub fn assign(
        self,
        members: &[MemberSpec<'_>],
        partitions: &BTreeMap<TopicId, i32>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => assign_uniform(members, partitions),
            Assignor::Range => assign_range(members, partitions),
        }
    }
}

/// Range: per topic, its subscribers in member-id order take contiguous ranges, the first
/// `count % subscribers` one partition more.
fn assign_range(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut ordered: Vec<&MemberSpec<'_>> = members.iter().collect();
    ordered.sort_by_key(|m| m.member_id);
    let mut result: BTreeMap<String, Assignment> = ordered
        .iter()
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect();
    for (topic, &count) in partitions {
        let subscribers: Vec<&str> = ordered
            .iter()
            .filter(|m| m.subscribed.contains(topic))
            .map(|m| m.member_id)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let share = count / subscribers.len() as i32;
        let extra = count % subscribers.len() as i32;
        let mut next = 0;
        for (index, member_id) in subscribers.iter().enumerate() {
            let take = share + i32::from((index as i32) < extra);
            if take > 0
                && let Some(assignment) = result.get_mut(*member_id)
            {
                assignment.insert(*topic, (next..next + take).collect());
            }
            next += take;
        }
    }
    result
}

/// Uniform: each member first keeps what it had (up to its fair share), the rest goes to the
/// least loaded subscriber, then partitions move from the most to the least loaded member
/// while that narrows a gap of more than one.
fn assign_uniform(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut ordered: Vec<&MemberSpec<'_>> = members.iter().collect();
    ordered.sort_by_key(|m| m.member_id);
    let mut owned: Vec<BTreeSet<(TopicId, i32)>> = vec![BTreeSet::new(); ordered.len()];
    if !ordered.is_empty() {
        let assignable: usize = partitions
            .iter()
            .filter(|(topic, _)| ordered.iter().any(|m| m.subscribed.contains(*topic)))
            .map(|(_, &count)| count.max(0) as usize)
            .sum();
        // Fair shares: `floor` each, and `extra` members may keep one more.
        let floor = assignable / ordered.len();
        let mut extra = assignable % ordered.len();
        let mut taken: BTreeSet<(TopicId, i32)> = BTreeSet::new();
        for (index, member) in ordered.iter().enumerate() {
            let Some(previous) = member.previous else {
                continue;
            };
            let kept = previous
                .iter()
                .filter(|(topic, _)| member.subscribed.contains(*topic))
                .flat_map(|(topic, set)| set.iter().map(move |p| (*topic, *p)))
                .filter(|(topic, p)| partitions.get(topic).is_some_and(|count| p < count));
            for partition in kept {
                let limit = floor + usize::from(extra > 0);
                if owned[index].len() >= limit || !taken.insert(partition) {
                    continue;
                }
                owned[index].insert(partition);
            }
            if owned[index].len() > floor {
                extra -= 1;
            }
        }
        for (topic, &count) in partitions {
            let subscribers: Vec<usize> = (0..ordered.len())
                .filter(|&i| ordered[i].subscribed.contains(topic))
                .collect();
            for partition in 0..count.max(0) {
                if taken.contains(&(*topic, partition)) {
                    continue;
                }
                if let Some(&least) = subscribers.iter().min_by_key(|&&i| owned[i].len()) {
                    owned[least].insert((*topic, partition));
                }
            }
        }
        balance(&ordered, &mut owned, assignable);
    }
    ordered
        .iter()
        .zip(owned)
        .map(|(member, set)| {
            let mut assignment = Assignment::new();
            for (topic, partition) in set {
                assignment.entry(topic).or_default().insert(partition);
            }
            (member.member_id.to_string(), assignment)
        })
        .collect()
}

/// Moves partitions from the most to the least loaded member that subscribes to them while
/// some gap exceeds one; at most `moves_max` moves (each narrows a gap, so it ends sooner).
fn balance(members: &[&MemberSpec<'_>], owned: &mut [BTreeSet<(TopicId, i32)>], moves_max: usize) {
    for _ in 0..moves_max {
        let mut by_load: Vec<usize> = (0..members.len()).collect();
        by_load.sort_by_key(|&i| owned[i].len());
        let (Some(&least), Some(&most)) = (by_load.first(), by_load.last()) else {
            return;
        };
        if owned[most].len() <= owned[least].len() + 1 {
            return; // every gap is at most one
        }
        let mut moved = None;
        'search: for &to in &by_load {
            for &from in by_load.iter().rev() {
                if owned[from].len() <= owned[to].len() + 1 {
                    break;
                }
                if let Some(partition) = owned[from]
                    .iter()
                    .find(|(topic, _)| members[to].subscribed.contains(topic))
                {
                    moved = Some((from, to, *partition));
                    break 'search;
                }
            }
        }
        let Some((from, to, partition)) = moved else {
            return; // the subscriptions allow no better balance
        };
        owned[from].remove(&partition);
        owned[to].insert(partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> TopicId {
        [n; 16]
    }

    fn spec<'a>(
        id: &'a str,
        topics: &[TopicId],
        previous: Option<&'a Assignment>,
    ) -> MemberSpec<'a> {
        MemberSpec {
            member_id: id,
            subscribed: topics.iter().copied().collect(),
            previous,
        }
    }

    fn count(assignment: &Assignment) -> usize {
        assignment.values().map(BTreeSet::len).sum()
    }

    /// Every partition of `partitions` is assigned exactly once.
    fn assert_complete(result: &BTreeMap<String, Assignment>, partitions: &BTreeMap<TopicId, i32>) {
        let mut seen = BTreeSet::new();
        for assignment in result.values() {
            for (topic, set) in assignment {
                for p in set {
                    assert!(seen.insert((*topic, *p)), "{topic:?}/{p} assigned twice");
                }
            }
        }
        let expected: usize = partitions.values().map(|&c| c as usize).sum();
        assert_eq!(seen.len(), expected, "every partition assigned");
    }

    #[test]
    fn uniform_balances_within_one_partition_per_member() {
        for members_count in 1..=7usize {
            for (a, b) in [(4, 0), (5, 3), (1, 1), (13, 6)] {
                let partitions = BTreeMap::from([(topic(1), a), (topic(2), b)]);
                let ids: Vec<String> = (0..members_count).map(|i| format!("m{i}")).collect();
                let members: Vec<MemberSpec<'_>> = ids
                    .iter()
                    .map(|id| spec(id, &[topic(1), topic(2)], None))
                    .collect();
                let result = Assignor::Uniform.assign(&members, &partitions);
                assert_complete(&result, &partitions);
                let counts: Vec<usize> = result.values().map(count).collect();
                let (min, max) = (counts.iter().min(), counts.iter().max());
                assert!(
                    max.unwrap() - min.unwrap() <= 1,
                    "{members_count} members, {a}+{b} partitions: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn uniform_keeps_partitions_and_moves_only_what_balance_needs() {
        let partitions = BTreeMap::from([(topic(1), 6)]);
        let two = [spec("a", &[topic(1)], None), spec("b", &[topic(1)], None)];
        let before = Assignor::Uniform.assign(&two, &partitions);
        let three = [
            spec("a", &[topic(1)], before.get("a")),
            spec("b", &[topic(1)], before.get("b")),
            spec("c", &[topic(1)], None),
        ];
        let after = Assignor::Uniform.assign(&three, &partitions);
        assert_complete(&after, &partitions);
        for id in ["a", "b"] {
            let kept = &after[id][&topic(1)];
            assert_eq!(kept.len(), 2);
            assert!(kept.is_subset(&before[id][&topic(1)]), "{id} keeps its own");
        }
        assert_eq!(count(&after["c"]), 2);
    }

    #[test]
    fn uniform_gives_each_topic_only_to_its_subscribers() {
        let partitions = BTreeMap::from([(topic(1), 10), (topic(2), 2)]);
        let members = [
            spec("a", &[topic(1)], None),
            spec("b", &[topic(1), topic(2)], None),
            spec("c", &[topic(2)], None),
        ];
        let result = Assignor::Uniform.assign(&members, &partitions);
        assert_complete(&result, &partitions);
        assert!(!result["a"].contains_key(&topic(2)));
        assert!(!result["c"].contains_key(&topic(1)));
        assert!(count(&result["c"]) >= 1);
    }

    #[test]
    fn range_splits_each_topic_into_ranges_in_member_order() {
        let partitions = BTreeMap::from([(topic(1), 5), (topic(2), 2)]);
        let members = [
            spec("b", &[topic(1), topic(2)], None),
            spec("a", &[topic(1), topic(2)], None),
        ];
        let result = Assignor::Range.assign(&members, &partitions);
        assert_complete(&result, &partitions);
        assert_eq!(result["a"][&topic(1)], BTreeSet::from([0, 1, 2]));
        assert_eq!(result["b"][&topic(1)], BTreeSet::from([3, 4]));
        assert_eq!(result["a"][&topic(2)], BTreeSet::from([0]));
        assert_eq!(result["b"][&topic(2)], BTreeSet::from([1]));
    }

    #[test]
    fn a_member_without_subscribed_topics_gets_nothing() {
        let partitions = BTreeMap::from([(topic(1), 3)]);
        for assignor in [Assignor::Uniform, Assignor::Range] {
            let members = [spec("a", &[topic(1)], None), spec("b", &[], None)];
            let result = assignor.assign(&members, &partitions);
            assert_complete(&result, &partitions);
            assert!(result["b"].is_empty(), "{assignor:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for assignor in [Assignor::Uniform, Assignor::Range] {
            assert_eq!(Assignor::from_name(assignor.name()), Some(assignor));
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }
}
