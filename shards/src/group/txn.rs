//! The group coordinator's part in transactions: TxnOffsetCommit's member check, and the
//! offsets of a committed transaction becoming the group's committed offsets. The offsets are
//! staged by the transaction coordinator meanwhile (`crate::txn`), so an aborted transaction
//! never reaches the group.

use std::time::Instant;

use sluice_net::ErrorCode;

use super::limits::GROUPS_MAX_ERROR;
use super::log::{CommittedOffset, GroupLogEntry};
use super::state::{Group, GroupState};
use super::{GroupCoordinator, check_member};

impl GroupCoordinator {
    /// Checks the member that sends TxnOffsetCommit (Kafka's `doTxnCommitOffsets`): the member
    /// id and generation are enforced when given (v3+, KIP-447), not for a standalone producer.
    pub fn check_txn_member(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        let groups = self.groups.borrow();
        let Some(group) = groups.get(group_id) else {
            return if !member_id.is_empty() {
                ErrorCode::UnknownMemberId
            } else if self.limits.groups() >= self.limits.groups_max {
                // The offsets would create the group when the transaction commits, when they
                // can no longer be refused: refused now, as an OffsetCommit would be.
                self.refuse_new_group(group_id, "TxnOffsetCommit");
                GROUPS_MAX_ERROR
            } else {
                ErrorCode::None
            };
        };
        if group.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if let Some(consumer) = &group.consumer {
            return consumer
                .validate_offset_commit(member_id, generation_id, i16::MAX, true)
                .err()
                .unwrap_or(ErrorCode::None);
        }
        if !member_id.is_empty()
            && let Err(code) = check_member(group, member_id, group_instance_id)
        {
            return code;
        }
        if generation_id >= 0 && generation_id != group.generation_id {
            return ErrorCode::IllegalGeneration;
        }
        ErrorCode::None
    }

    /// Makes a committed transaction's offsets the group's, durably (applied in call order so
    /// the latest commit wins, as for OffsetCommit).
    pub async fn commit_txn_offsets(
        &self,
        group_id: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Result<(), ErrorCode> {
        let entries: Vec<GroupLogEntry> = {
            let mut groups = self.groups.borrow_mut();
            // Counted whatever the cap: the transaction has committed. TxnOffsetCommit checked
            // the cap (`check_txn_member`), so only groups created since go over it.
            let group = groups.entry(group_id.to_string()).or_insert_with(|| {
                self.limits.add_group_over_cap();
                Group::new(group_id.to_string(), Instant::now())
            });
            offsets
                .into_iter()
                .map(|(topic, partition, committed)| {
                    group
                        .offsets
                        .insert((topic.clone(), partition), committed.clone());
                    GroupLogEntry::Commit {
                        group: group_id.to_string(),
                        topic,
                        partition,
                        committed,
                    }
                })
                .collect()
        };
        self.persist(&entries).await
    }
}
