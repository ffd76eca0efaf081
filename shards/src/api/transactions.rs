//! The transactional producer's APIs: AddPartitionsToTxn (v0–3 from clients, v4+ batched),
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn. Each is served by the shard coordinating the
//! transactional id (`crate::txn`); these handlers validate and route. And OffsetFetch's
//! require_stable, which waits for the transactions that staged offsets.

use std::collections::BTreeSet;
use std::rc::Rc;

use std::time::{SystemTime, UNIX_EPOCH};

use sluice_metadata::MetadataImage;
use sluice_net::ErrorCode;
use sluice_net::messages::add_offsets_to_txn_request::AddOffsetsToTxnRequest;
use sluice_net::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use sluice_net::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use sluice_net::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnResult,
    AddPartitionsToTxnTopicResult,
};
use sluice_net::messages::end_txn_request::EndTxnRequest;
use sluice_net::messages::end_txn_response::EndTxnResponse;
use sluice_net::messages::offset_fetch_request::OffsetFetchRequest;
use sluice_net::messages::offset_fetch_response::OffsetFetchResponse;

use sluice_net::messages::txn_offset_commit_request::TxnOffsetCommitRequest;
use sluice_net::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};

use crate::group::log::CommittedOffset;
use crate::shard::Shard;
use crate::txn::call::{TxnCall, TxnReply};
use crate::txn::serve::ask;

/// Longest transactional or group id accepted: the transaction log stores ids with a u16 length.
pub const ID_BYTES_MAX: usize = u16::MAX as usize;

/// INVALID_REQUEST for an empty or oversized transactional id (Kafka refuses the empty one).
pub fn check_transactional_id(transactional_id: &str) -> Result<(), ErrorCode> {
    if transactional_id.is_empty() || transactional_id.len() > ID_BYTES_MAX {
        Err(ErrorCode::InvalidRequest)
    } else {
        Ok(())
    }
}

/// AddPartitionsToTxn: v0–3 carry one transaction, v4+ (broker to broker) several, each of
/// which may only verify that its partitions are already in the transaction.
pub async fn add_partitions_to_txn(
    shard: &Rc<Shard>,
    version: i16,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let image = shard.image();
    if version < 4 {
        let results = add_partitions(
            shard,
            &image,
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            request.v3_and_below_topics,
            false,
        )
        .await;
        return AddPartitionsToTxnResponse {
            results_by_topic_v3_and_below: results,
            ..Default::default()
        };
    }
    let mut results_by_transaction = Vec::with_capacity(request.transactions.len());
    for transaction in request.transactions {
        let transactional_id = transaction.transactional_id.clone();
        let topic_results = add_partitions(
            shard,
            &image,
            transaction.transactional_id,
            transaction.producer_id,
            transaction.producer_epoch,
            transaction.topics,
            transaction.verify_only,
        )
        .await;
        results_by_transaction.push(AddPartitionsToTxnResult {
            transactional_id,
            topic_results,
        });
    }
    AddPartitionsToTxnResponse {
        results_by_transaction,
        ..Default::default()
    }
}

/// One transaction's partitions: unknown ones get UNKNOWN_TOPIC_OR_PARTITION and the rest
/// OPERATION_NOT_ATTEMPTED (as Kafka answers); otherwise the coordinator decides.
async fn add_partitions(
    shard: &Rc<Shard>,
    image: &MetadataImage,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    topics: Vec<AddPartitionsToTxnTopic>,
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p)))
        .collect();
    let exists = |(topic, partition): &(String, i32)| {
        u32::try_from(*partition)
            .ok()
            .and_then(|index| image.partition(topic, index))
            .is_some()
    };
    let codes: Vec<ErrorCode> = if let Err(code) = check_transactional_id(&transactional_id) {
        vec![code; partitions.len()]
    } else if !shard.coordinates() {
        // Before the partitions' checks: the client must first find the coordinator.
        vec![ErrorCode::CoordinatorNotAvailable; partitions.len()]
    } else if !partitions.iter().all(exists) {
        partitions
            .iter()
            .map(|p| {
                if exists(p) {
                    ErrorCode::OperationNotAttempted
                } else {
                    ErrorCode::UnknownTopicOrPartition
                }
            })
            .collect()
    } else {
        let owner = shard.coordinator_shard(&transactional_id);
        let count = partitions.len();
        let call = if verify_only {
            TxnCall::Verify {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            }
        } else {
            TxnCall::Add {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                group: None,
            }
        };
        match ask(shard, owner, call).await {
            Some(TxnReply::Code(code)) => vec![code; count],
            Some(TxnReply::Codes(codes)) if codes.len() == count => codes,
            _ => vec![ErrorCode::CoordinatorNotAvailable; count],
        }
    };
    let mut codes = codes.into_iter();
    topics
        .into_iter()
        .map(|t| AddPartitionsToTxnTopicResult {
            name: t.name,
            results_by_partition: t
                .partitions
                .into_iter()
                .map(|partition_index| AddPartitionsToTxnPartitionResult {
                    partition_index,
                    partition_error_code: codes
                        .next()
                        .unwrap_or(ErrorCode::UnknownServerError)
                        .code(),
                })
                .collect(),
        })
        .collect()
}

/// AddOffsetsToTxn: the group's offsets join the transaction (Kafka adds the group's
/// `__consumer_offsets` partition).
pub async fn add_offsets_to_txn(
    shard: &Rc<Shard>,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = if let Err(code) = check_transactional_id(&request.transactional_id) {
        code
    } else if request.group_id.is_empty() || request.group_id.len() > ID_BYTES_MAX {
        ErrorCode::InvalidGroupId
    } else {
        let owner = shard.coordinator_shard(&request.transactional_id);
        let call = TxnCall::Add {
            transactional_id: request.transactional_id,
            producer_id: request.producer_id,
            producer_epoch: request.producer_epoch,
            partitions: Vec::new(),
            group: Some(request.group_id),
        };
        match ask(shard, owner, call).await {
            Some(TxnReply::Code(code)) => code,
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    };
    AddOffsetsToTxnResponse {
        error_code: code.code(),
        ..Default::default()
    }
}

/// TxnOffsetCommit: the group checks the member, then the transaction stages the offsets.
pub async fn txn_offset_commit(
    shard: &Rc<Shard>,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let image = shard.image();
    let commit_timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let refusal = if let Err(code) = check_transactional_id(&request.transactional_id) {
        Some(code)
    } else if request.group_id.is_empty() || request.group_id.len() > ID_BYTES_MAX {
        Some(ErrorCode::InvalidGroupId)
    } else {
        None
    };
    // Per partition: a refusal of its own, or staged (answered with the transaction's code).
    let mut codes: Vec<Option<ErrorCode>> = Vec::new();
    let mut staged = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let exists = u32::try_from(p.partition_index)
                .ok()
                .and_then(|index| image.partition(&topic.name, index))
                .is_some();
            let metadata_too_large = p
                .committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > crate::group::OFFSET_METADATA_BYTES_MAX);
            codes.push(if let Some(code) = refusal {
                Some(code)
            } else if !exists {
                Some(ErrorCode::UnknownTopicOrPartition)
            } else if metadata_too_large {
                Some(ErrorCode::OffsetMetadataTooLarge)
            } else {
                staged.push((
                    topic.name.clone(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.clone(),
                        commit_timestamp_ms,
                    },
                ));
                None
            });
        }
    }
    let staged_code = if staged.is_empty() {
        ErrorCode::None
    } else {
        stage_offsets(shard, &request, staged).await
    };
    let mut codes = codes.into_iter();
    TxnOffsetCommitResponse {
        topics: request
            .topics
            .iter()
            .map(|t| TxnOffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: codes.next().flatten().unwrap_or(staged_code).code(),
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

async fn stage_offsets(
    shard: &Rc<Shard>,
    request: &TxnOffsetCommitRequest,
    offsets: Vec<crate::txn::log::StagedOffset>,
) -> ErrorCode {
    let group_owner = shard.coordinator_shard(&request.group_id);
    let check = TxnCall::CheckGroupMember {
        group: request.group_id.clone(),
        member_id: request.member_id.clone(),
        group_instance_id: request.group_instance_id.clone(),
        generation_id: request.generation_id,
    };
    match ask(shard, group_owner, check).await {
        Some(TxnReply::Code(ErrorCode::None)) => {}
        Some(TxnReply::Code(code)) => return code,
        _ => return ErrorCode::CoordinatorNotAvailable,
    }
    let partitions = offsets.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let owner = shard.coordinator_shard(&request.transactional_id);
    let call = TxnCall::StageOffsets {
        transactional_id: request.transactional_id.clone(),
        producer_id: request.producer_id,
        producer_epoch: request.producer_epoch,
        group: request.group_id.clone(),
        offsets,
    };
    match ask(shard, owner, call).await {
        Some(TxnReply::Code(ErrorCode::None)) => {}
        Some(TxnReply::Code(code)) => return code,
        _ => return ErrorCode::CoordinatorNotAvailable,
    }
    // The group answers UNSTABLE_OFFSET_COMMIT for these partitions until the outcome arrives.
    let mark = TxnCall::MarkUnstable {
        group: request.group_id.clone(),
        producer_id: request.producer_id,
        partitions,
    };
    match ask(shard, group_owner, mark).await {
        Some(TxnReply::Done) => ErrorCode::None,
        _ => ErrorCode::CoordinatorNotAvailable,
    }
}

/// OffsetFetch (served by `groups.rs`); with require_stable (v7+, KIP-447), partitions with
/// offsets staged by an incomplete transaction answer UNSTABLE_OFFSET_COMMIT and no offset, so
/// the consumer retries until the transaction's outcome is in place.
pub async fn offset_fetch(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version < 7 || !request.require_stable {
        return super::groups::offset_fetch(shard, version, request).await;
    }
    // Asked before the offsets are read: an outcome arriving in between is then reported
    // unstable (and retried), never as the offset it replaced.
    let group_ids: Vec<String> = if version < 8 {
        vec![request.group_id.clone()]
    } else {
        request.groups.iter().map(|g| g.group_id.clone()).collect()
    };
    let mut unstable = Vec::with_capacity(group_ids.len());
    for group_id in &group_ids {
        unstable.push(unstable_partitions(shard, group_id).await);
    }
    let mut response = super::groups::offset_fetch(shard, version, request).await;
    let unstable_code = ErrorCode::UnstableOffsetCommit.code();
    if version < 8 {
        for topic in &mut response.topics {
            for p in &mut topic.partitions {
                if unstable[0].contains(&(topic.name.clone(), p.partition_index)) {
                    p.committed_offset = -1;
                    p.error_code = unstable_code;
                }
            }
        }
    } else {
        for (group, unstable) in response.groups.iter_mut().zip(&unstable) {
            for topic in &mut group.topics {
                for p in &mut topic.partitions {
                    if unstable.contains(&(topic.name.clone(), p.partition_index)) {
                        p.committed_offset = -1;
                        p.error_code = unstable_code;
                    }
                }
            }
        }
    }
    response
}

async fn unstable_partitions(shard: &Rc<Shard>, group_id: &str) -> BTreeSet<(String, i32)> {
    let owner = shard.coordinator_shard(group_id);
    match ask(shard, owner, TxnCall::Unstable(group_id.to_string())).await {
        Some(TxnReply::Partitions(partitions)) => partitions,
        _ => BTreeSet::new(),
    }
}

/// EndTxn: commit or abort. Answered once the decision is durable; the markers follow.
pub async fn end_txn(shard: &Rc<Shard>, request: EndTxnRequest) -> EndTxnResponse {
    let code = if let Err(code) = check_transactional_id(&request.transactional_id) {
        code
    } else {
        let owner = shard.coordinator_shard(&request.transactional_id);
        let call = TxnCall::End {
            transactional_id: request.transactional_id,
            producer_id: request.producer_id,
            producer_epoch: request.producer_epoch,
            commit: request.committed,
        };
        match ask(shard, owner, call).await {
            Some(TxnReply::Code(code)) => code,
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    };
    EndTxnResponse {
        error_code: code.code(),
        ..Default::default()
    }
}
