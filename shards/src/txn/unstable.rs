//! The partitions of each group with offsets staged by a transaction that is not complete
//! yet (Kafka's pending transactional offset commits). OffsetFetch with require_stable
//! (KIP-447) answers UNSTABLE_OFFSET_COMMIT for them, so a consumer taking over a partition
//! waits for the transaction's outcome instead of reading the offset it is about to replace.
//!
//! Kept by the shard coordinating the group; marked before TxnOffsetCommit is answered (and
//! again at start-up from the restored transactions), cleared when the transaction's outcome
//! reaches the group.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// The (topic, partition) pairs one group has staged offsets for, by producer id.
type StagedByProducer = HashMap<i64, BTreeSet<(String, i32)>>;

/// Staged partitions by group, then by producer id.
#[derive(Debug, Default)]
pub struct UnstableOffsets {
    groups: RefCell<HashMap<String, StagedByProducer>>,
}

impl UnstableOffsets {
    /// `producer_id`'s transaction staged offsets of `partitions` for `group`.
    pub fn mark(&self, group: &str, producer_id: i64, partitions: Vec<(String, i32)>) {
        self.groups
            .borrow_mut()
            .entry(group.to_string())
            .or_default()
            .entry(producer_id)
            .or_default()
            .extend(partitions);
    }

    /// `producer_id`'s transaction is complete for `group`.
    pub fn clear(&self, group: &str, producer_id: i64) {
        let mut groups = self.groups.borrow_mut();
        if let Some(producers) = groups.get_mut(group) {
            producers.remove(&producer_id);
            if producers.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// The partitions of `group` some transaction has staged offsets for.
    pub fn partitions(&self, group: &str) -> BTreeSet<(String, i32)> {
        self.groups
            .borrow()
            .get(group)
            .map(|producers| producers.values().flatten().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_stays_unstable_until_every_transaction_staging_it_is_complete() {
        let unstable = UnstableOffsets::default();
        unstable.mark("g", 1, vec![("t".into(), 0)]);
        unstable.mark("g", 2, vec![("t".into(), 0), ("t".into(), 1)]);
        unstable.clear("g", 1);
        assert_eq!(
            unstable.partitions("g"),
            [("t".to_string(), 0), ("t".to_string(), 1)].into()
        );
        unstable.clear("g", 2);
        assert!(unstable.partitions("g").is_empty());
        assert!(unstable.partitions("other").is_empty());
    }
}
