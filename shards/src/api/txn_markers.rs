//! WriteTxnMarkers: the transaction coordinator, on another broker of the cluster, ends a
//! transaction on partitions this broker leads (`txn::completion` sends it). Each partition
//! gets the marker through its owner shard, as the coordinator's own partitions do.

use std::rc::Rc;

use sluice_net::ErrorCode;
use sluice_net::messages::write_txn_markers_request::WriteTxnMarkersRequest;
use sluice_net::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    WriteTxnMarkersResponse,
};

use crate::shard::Shard;
use crate::txn::marker::Marker;
use crate::txn::serve::write_markers_on_owners;

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
        // Every partition's code, in request order, and (index, owner shard, stream id) of
        // those that exist.
        let mut codes: Vec<ErrorCode> = Vec::new();
        let mut targets = Vec::new();
        for topic in &written.topics {
            for &partition in &topic.partition_indexes {
                match shard.locate(&image, &topic.name, partition) {
                    Some((owner, stream_id)) => {
                        targets.push((codes.len(), owner, stream_id));
                        codes.push(ErrorCode::None);
                    }
                    None => codes.push(ErrorCode::UnknownTopicOrPartition),
                }
            }
        }
        for (index, result) in write_markers_on_owners(shard, targets, marker).await {
            codes[index] = result.err().unwrap_or(ErrorCode::None);
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
