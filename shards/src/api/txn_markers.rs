//! WriteTxnMarkers: the transaction coordinator, on another broker of the cluster, ends a
//! transaction on partitions this broker leads (`txn::completion` sends it). Each partition
//! gets the marker through its owner shard, as the coordinator's own partitions do.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures::future::join_all;
use sluice_net::ErrorCode;
use sluice_net::messages::write_txn_markers_request::WriteTxnMarkersRequest;
use sluice_net::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    WriteTxnMarkersResponse,
};

use crate::shard::Shard;
use crate::txn::call::{TxnCall, TxnReply};
use crate::txn::marker::Marker;

/// Writes each marker to its partitions; a partition this broker does not lead gets
/// NOT_LEADER_OR_FOLLOWER (the coordinator retries at its new leader).
pub async fn handle(shard: &Rc<Shard>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut markers = Vec::with_capacity(request.markers.len());
    for written in request.markers {
        let marker = Marker {
            producer_id: written.producer_id,
            producer_epoch: written.producer_epoch,
            commit: written.transaction_result,
            coordinator_epoch: written.coordinator_epoch,
        };
        let image = shard.image();
        // Every partition's code, in request order, and which shard writes each.
        let mut codes: Vec<ErrorCode> = Vec::new();
        let mut by_owner: BTreeMap<usize, Vec<(usize, u64)>> = BTreeMap::new();
        for topic in &written.topics {
            for &partition in &topic.partition_indexes {
                match shard.locate(&image, &topic.name, partition) {
                    Some((owner, stream_id)) => {
                        by_owner
                            .entry(owner)
                            .or_default()
                            .push((codes.len(), stream_id));
                        codes.push(ErrorCode::None);
                    }
                    None => codes.push(ErrorCode::UnknownTopicOrPartition),
                }
            }
        }
        let asks = by_owner.into_iter().map(|(owner, targets)| async move {
            let stream_ids = targets.iter().map(|(_, stream_id)| *stream_id).collect();
            let call = TxnCall::WriteMarkers { stream_ids, marker };
            let results = match crate::txn::serve::ask(shard, owner, call).await {
                Some(TxnReply::Markers(results)) if results.len() == targets.len() => results,
                _ => vec![Err(ErrorCode::UnknownServerError); targets.len()],
            };
            targets
                .into_iter()
                .zip(results)
                .map(|((index, _), result)| (index, result.err().unwrap_or(ErrorCode::None)))
                .collect::<Vec<_>>()
        });
        for (index, code) in join_all(asks).await.into_iter().flatten() {
            codes[index] = code;
        }
        let mut codes = codes.into_iter();
        markers.push(WritableTxnMarkerResult {
            producer_id: written.producer_id,
            topics: written
                .topics
                .into_iter()
                .map(|topic| WritableTxnMarkerTopicResult {
                    partitions: topic
                        .partition_indexes
                        .iter()
                        .map(|&partition_index| WritableTxnMarkerPartitionResult {
                            partition_index,
                            error_code: codes
                                .next()
                                .unwrap_or(ErrorCode::UnknownServerError)
                                .code(),
                        })
                        .collect(),
                    name: topic.name,
                })
                .collect(),
        });
    }
    WriteTxnMarkersResponse { markers }
}
