//! Start-up recovery of one shard: its internal streams (group log, transaction log and
//! index) from objects, then its WAL replayed into its partitions and coordinators, with the
//! records not yet in objects queued for upload.

use std::collections::HashMap;

use bytes::Bytes;
use sluice_metadata::MetadataImage;
use sluice_objstore::AppendedRecord;
use sluice_wal::WalPosition;

use crate::group::log::GroupLogEntry;
use crate::internal_stream;
use crate::shard::Shard;
use crate::txn::partition_index::TxnIndexEntry;

/// Replays WAL records into this shard's partitions at start-up and queues those not in
/// object storage yet for upload; returns how many batches were replayed, the group-log
/// entries found, in WAL order, after those already in objects, and the end of the WAL's
/// leading records that nothing needs any more (in objects already, of deleted topics, or
/// skipped), where the caller trims it.
///
/// Why that trim: uploads trim the WAL only past what they upload. A crash after an upload's
/// commit and before its trim was durable leaves records in the WAL that are in objects and
/// queued for nothing; if they fill it, no append finds room, no upload comes, and every
/// producer waits forever (found by the shard simulation, seed 1796445518787797458 with
/// SLUICE_SIM_DISK_FAULT_PPM=100000).
pub fn recover(
    shard: &Shard,
    records: Vec<sluice_wal::RecoveredRecord>,
) -> (usize, Vec<GroupLogEntry>, Option<WalPosition>) {
    let image = shard.image();
    let mut recovered = 0;
    let mut group_entries = Vec::new();
    let mut continuity = StreamContinuity::default();
    let mut released_end = None;
    let mut queued_any = false;
    for record in records {
        if !continuity.admits(&image, image.node_id, &record) {
            // Until a record is queued for upload, every record before it may be released.
            if !queued_any {
                released_end = Some(record.end_position);
            }
            continue;
        }
        queued_any = true;
        shard.storage.wal.queue_recovered(appended(&record));
        if internal_stream::is_internal_stream(record.stream_id) {
            resume_internal_sequence(shard, record.stream_id, record.last_offset + 1);
            let replayed = internal_stream::unframe(&record.payload)
                .map_err(|e| e.to_string())
                .and_then(|frames| {
                    frames.into_iter().try_for_each(|(offset, payload)| {
                        replay_internal(
                            shard,
                            record.stream_id,
                            offset,
                            payload,
                            &mut group_entries,
                        )
                    })
                });
            if let Err(error) = replayed {
                tracing::error!(
                    %error,
                    stream_id = record.stream_id,
                    "an internal-stream record in the WAL is malformed; skipped"
                );
            }
            continue;
        }
        let Some(partition) = shard.storage.partition(record.stream_id) else {
            continue; // a stream another shard owns now
        };
        match partition.recover(record.payload) {
            Ok(()) => recovered += 1,
            Err(error) => tracing::error!(
                %error,
                stream_id = record.stream_id,
                "a WAL record does not hold a valid batch; skipped"
            ),
        }
    }
    (recovered, group_entries, released_end)
}

/// Which WAL records continue their streams, the rule of start-up recovery and of a WAL
/// takeover (`takeover.rs`): a record is replayed and uploaded when it is above what objects
/// hold of its stream, of a stream that exists, and continues the records admitted before it.
#[derive(Default)]
pub struct StreamContinuity {
    /// Per stream, the next offset expected.
    next: HashMap<u64, i64>,
}

impl StreamContinuity {
    /// True when `record`, read from the WAL of broker `owner`, is to be replayed and uploaded
    /// (and the stream then continues after it). Skipped: records in objects already, of
    /// deleted topics, of partitions another broker holds now, of coordinator logs when
    /// another broker coordinates, or not continuing the stream.
    pub fn admits(
        &mut self,
        image: &MetadataImage,
        owner: i32,
        record: &sluice_wal::RecoveredRecord,
    ) -> bool {
        let first_offset = record.first_offset as i64;
        let last_offset = record.last_offset as i64;
        let next = self.next.entry(record.stream_id).or_insert_with(|| {
            image
                .stream_end_offset_in_objects(record.stream_id)
                .unwrap_or(first_offset)
        });
        if last_offset < *next {
            return false; // in objects already
        }
        if internal_stream::is_coordinator_log_stream(record.stream_id) {
            if image.coordinating_broker() != Some(owner) {
                // The coordinator moved: a taker uploaded this broker's logs before it did,
                // and what is left was never acknowledged (as for partitions below).
                return false;
            }
        } else if !internal_stream::is_internal_stream(record.stream_id) {
            if image.stream(record.stream_id).is_none() {
                return false; // a deleted topic
            }
            if image.held_by_another(record.stream_id, owner) {
                // A survivor took this WAL over while its broker was fenced and uploaded what
                // was acknowledged; the partition moved. What is left is unacknowledged
                // (written after the takeover's claim) and must not be uploaded over the new
                // leader's offsets.
                return false;
            }
        }
        if first_offset != *next {
            tracing::error!(
                stream_id = record.stream_id,
                first_offset,
                expected = *next,
                "a WAL record does not continue its stream; skipped"
            );
            return false;
        }
        *next = last_offset + 1;
        true
    }
}

/// A recovered WAL record as the uploader takes it.
pub fn appended(record: &sluice_wal::RecoveredRecord) -> AppendedRecord {
    AppendedRecord {
        stream_id: record.stream_id,
        first_offset: record.first_offset as i64,
        last_offset: record.last_offset as i64,
        payload: record.payload.clone(),
        payload_crc: record.payload_crc,
        wal_end_position: record.end_position.0,
    }
}

/// The group-log entries of this shard that are in object storage, oldest first; on the
/// way, applies its partitions' transaction history (`storage::txn_history`) and hands its
/// transaction-log records to the transaction coordinator, and continues every internal
/// stream's sequence. The coordinator partitions' logs are read only when this broker
/// coordinates.
pub async fn internal_state_in_objects(shard: &Shard) -> Result<Vec<GroupLogEntry>, String> {
    let image = shard.image();
    let history = crate::storage::txn_history::in_objects(&shard.storage, |stream_id| {
        image.leads(stream_id)
            && image
                .stream(stream_id)
                .is_some_and(|(_, part)| shard.owner_of(part) == shard.id)
    })
    .await?;
    for (stream_id, entries) in history {
        if let Some(partition) = shard.storage.partition(stream_id) {
            for entry in entries {
                partition.apply_txn_index(entry);
            }
        }
    }
    if !shard.coordinator_loaded() {
        return Ok(Vec::new());
    }
    coordinator_logs_in_objects(shard).await
}

/// The group-log entries of the coordinator partitions this shard serves, in objects; hands
/// their transaction-log records to the transaction coordinator (`TxnCoordinator::replay`)
/// and continues each log's sequence.
pub async fn coordinator_logs_in_objects(shard: &Shard) -> Result<Vec<GroupLogEntry>, String> {
    let mut group_entries = Vec::new();
    let streams = [
        shard.groups.logs().streams_of(shard.id),
        shard.txns.logs().streams_of(shard.id),
    ];
    for stream_id in streams.into_iter().flatten() {
        shard
            .storage
            .read_internal_stream(stream_id, |offset, payload| {
                replay_internal(shard, stream_id, offset, payload, &mut group_entries)
            })
            .await?;
    }
    Ok(group_entries)
}

/// Replays one record (unframed, at `offset`) of one of this shard's internal streams
/// found at start-up: the group log's entries are collected into `group_entries` (for
/// their coordinators), the transaction log's go to the transaction coordinator, the
/// transaction index's to the partitions; the stream's sequence continues after it.
fn replay_internal(
    shard: &Shard,
    stream_id: u64,
    offset: i64,
    payload: Bytes,
    group_entries: &mut Vec<GroupLogEntry>,
) -> Result<(), String> {
    let next = offset as u64 + 1;
    resume_internal_sequence(shard, stream_id, next);
    if internal_stream::is_group_log_stream(stream_id) {
        group_entries.extend(crate::group::log::decode(payload).map_err(|e| e.to_string())?);
    } else if internal_stream::is_txn_log_stream(stream_id) {
        shard.txns.replay(stream_id, next, payload);
    } else if internal_stream::is_txn_index_stream(stream_id) {
        match TxnIndexEntry::decode(payload) {
            Ok(entry) => {
                if let Some(partition) = shard.storage.partition(entry.stream_id()) {
                    partition.apply_txn_index(entry);
                }
            }
            Err(error) => tracing::error!(%error, "a transaction-index entry is malformed"),
        }
    }
    Ok(())
}

/// Continues a group log's or the transaction index's sequence at `next`, so a new record
/// never reuses the offset of one found at start-up (a transaction log's continues in
/// `TxnCoordinator::replay`).
fn resume_internal_sequence(shard: &Shard, stream_id: u64, next: u64) {
    if internal_stream::is_group_log_stream(stream_id) {
        shard.groups.logs().resume(stream_id, next);
    } else if internal_stream::is_txn_index_stream(stream_id) {
        shard.storage.txn_index.resume_sequence(next);
    }
}
