//! The transaction APIs of admin tools (kafka-transactions.sh): DescribeProducers (from the
//! partitions' owners), DescribeTransactions and ListTransactions (from the coordinators).

use std::rc::Rc;

use futures::future::join_all;
use sluice_net::ErrorCode;
use sluice_net::messages::describe_producers_request::DescribeProducersRequest;
use sluice_net::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use sluice_net::messages::describe_transactions_request::DescribeTransactionsRequest;
use sluice_net::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TransactionState,
};
use sluice_net::messages::list_transactions_request::ListTransactionsRequest;
use sluice_net::messages::list_transactions_response::ListTransactionsResponse;

use crate::shard::Shard;
use crate::txn::call::{TxnCall, TxnReply};
use crate::txn::serve::ask;
use crate::txn::state::STATE_NAMES;

/// DescribeProducers: the producers each partition remembers, with their open transactions.
pub async fn describe_producers(
    shard: &Rc<Shard>,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let image = shard.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for partition_index in topic.partition_indexes {
            let result = match shard.locate(&image, &topic.name, partition_index) {
                None => Err(ErrorCode::UnknownTopicOrPartition),
                Some((owner, stream_id)) => {
                    match ask(shard, owner, TxnCall::DescribeProducers { stream_id }).await {
                        Some(TxnReply::Producers(result)) => result,
                        _ => Err(ErrorCode::UnknownServerError),
                    }
                }
            };
            partitions.push(match result {
                Ok(producers) => PartitionResponse {
                    partition_index,
                    error_code: 0,
                    error_message: None,
                    active_producers: producers
                        .into_iter()
                        .map(|p| ProducerState {
                            producer_id: p.producer_id,
                            producer_epoch: i32::from(p.epoch),
                            last_sequence: p.last_sequence,
                            last_timestamp: p.last_timestamp,
                            coordinator_epoch: p.coordinator_epoch,
                            current_txn_start_offset: p.current_txn_start_offset,
                        })
                        .collect(),
                },
                Err(code) => PartitionResponse {
                    partition_index,
                    error_code: code.code(),
                    error_message: Some(code.message().to_string()),
                    active_producers: Vec::new(),
                },
            });
        }
        topics.push(TopicResponse {
            name: topic.name,
            partitions,
        });
    }
    DescribeProducersResponse {
        topics,
        ..Default::default()
    }
}

/// DescribeTransactions: each id's state from its coordinator.
pub async fn describe_transactions(
    shard: &Rc<Shard>,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut transaction_states = Vec::with_capacity(request.transactional_ids.len());
    for transactional_id in request.transactional_ids {
        if transactional_id.is_empty() {
            transaction_states.push(TransactionState {
                error_code: ErrorCode::InvalidRequest.code(),
                transactional_id,
                ..Default::default()
            });
            continue;
        }
        let owner = shard.coordinator_shard(&transactional_id);
        let call = TxnCall::Describe(transactional_id.clone());
        transaction_states.push(match ask(shard, owner, call).await {
            Some(TxnReply::Described(state)) => state,
            _ => TransactionState {
                error_code: ErrorCode::CoordinatorNotAvailable.code(),
                transactional_id,
                ..Default::default()
            },
        });
    }
    DescribeTransactionsResponse {
        transaction_states,
        ..Default::default()
    }
}

/// ListTransactions: every shard's transactional ids, filtered by state, producer id and (v1)
/// how long their transaction has been open. Unknown state names are reported back.
pub async fn list_transactions(
    shard: &Rc<Shard>,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let (states, unknown_state_filters): (Vec<String>, Vec<String>) = request
        .state_filters
        .into_iter()
        .partition(|s| STATE_NAMES.contains(&s.as_str()));
    if states.is_empty() && !unknown_state_filters.is_empty() {
        // Every filter names a state that does not exist: nothing can match.
        return ListTransactionsResponse {
            unknown_state_filters,
            ..Default::default()
        };
    }
    let asks = (0..shard.count).map(|owner| {
        let call = TxnCall::List {
            states: states.clone(),
            producer_ids: request.producer_id_filters.clone(),
            min_duration_ms: request.duration_filter,
        };
        async move {
            match ask(shard, owner, call).await {
                Some(TxnReply::Listed(listed)) => listed,
                _ => Vec::new(),
            }
        }
    });
    let mut transaction_states: Vec<_> = join_all(asks).await.into_iter().flatten().collect();
    transaction_states.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    ListTransactionsResponse {
        unknown_state_filters,
        transaction_states,
        ..Default::default()
    }
}
