//! Internal streams: state kept as a stream of its own (group logs, transaction logs, the
//! transaction index), so it travels WAL → object storage like partition data and survives
//! the WAL being trimmed.
//!
//! Stream ids count down from `u64::MAX`, in metadata's internal range
//! (`sluice_metadata::INTERNAL_STREAM_ID_MIN` and up), which no partition gets: the group log
//! of key `n` is `u64::MAX - n`, the transaction log `u64::MAX - 65536 - n`, the transaction
//! index `u64::MAX - 131072 - n`. The logs' key is their coordinator partition
//! (`coordinator_partitions.rs`): only the coordinating broker writes them, and the next
//! coordinator continues them. The transaction index is per shard: its key is
//! `slot × 1024 + shard`, where the slot is its broker's in the cluster
//! (`MetadataImage::broker_slot`, 0 for a single node), so that brokers sharing an object
//! store never write the same one.
//! Each record is framed like a Kafka record batch's prefix, `[offset i64][length i32][payload]`
//! (big-endian), because the object tier's cold reader walks data blocks by that prefix.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the frame before the payload.
const FRAME_PREFIX_BYTES: usize = 12;

/// Shard keys an internal stream kind has room for (not the shards of one broker, which
/// `sluice_metadata::limits::SHARDS_MAX` bounds).
const KEYS_PER_KIND: u64 = 1 << 16;

/// The key of shard `shard` of the broker with `slot` (below `BROKERS_MAX`; the shard below
/// `sluice_metadata::limits::SHARDS_MAX`).
pub fn shard_key(slot: u32, shard: usize) -> usize {
    slot as usize * sluice_metadata::limits::SHARDS_MAX as usize + shard
}

/// The stream id of the group log of coordinator partition `key`.
pub fn group_log_stream(key: usize) -> u64 {
    u64::MAX - (key as u64 % KEYS_PER_KIND)
}

/// The stream id of the transaction log of coordinator partition `key`.
pub fn txn_log_stream(key: usize) -> u64 {
    u64::MAX - KEYS_PER_KIND - (key as u64 % KEYS_PER_KIND)
}

/// The stream id of the partition transaction index of the shard with key `key` (`shard_key`).
pub fn txn_index_stream(key: usize) -> u64 {
    u64::MAX - 2 * KEYS_PER_KIND - (key as u64 % KEYS_PER_KIND)
}

/// The ids of every shard's partition transaction index, of every broker.
pub fn txn_index_streams() -> std::ops::RangeInclusive<u64> {
    (u64::MAX - 3 * KEYS_PER_KIND + 1)..=(u64::MAX - 2 * KEYS_PER_KIND)
}

/// True for the id of any shard's partition transaction index.
pub fn is_txn_index_stream(stream_id: u64) -> bool {
    (2 * KEYS_PER_KIND..3 * KEYS_PER_KIND).contains(&(u64::MAX - stream_id))
}

/// True for the id of any shard's transaction log.
pub fn is_txn_log_stream(stream_id: u64) -> bool {
    (KEYS_PER_KIND..2 * KEYS_PER_KIND).contains(&(u64::MAX - stream_id))
}

/// True for the id of any shard's group log.
pub fn is_group_log_stream(stream_id: u64) -> bool {
    u64::MAX - stream_id < KEYS_PER_KIND
}

/// True for the id of a coordinator partition's log (group or transaction log).
pub fn is_coordinator_log_stream(stream_id: u64) -> bool {
    is_group_log_stream(stream_id) || is_txn_log_stream(stream_id)
}

/// True for the id of any internal stream (group log, transaction log, transaction index).
pub fn is_internal_stream(stream_id: u64) -> bool {
    u64::MAX - stream_id < 3 * KEYS_PER_KIND
}

/// A record of an internal stream at `offset`.
pub fn frame(offset: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_PREFIX_BYTES + payload.len());
    out.put_i64(offset as i64);
    out.put_i32(payload.len() as i32);
    out.put_slice(payload);
    out.freeze()
}

/// An internal-stream record that cannot be unframed.
#[derive(Debug, thiserror::Error)]
#[error("internal stream record is malformed at byte {0}")]
pub struct FrameError(usize);

/// The (offset, payload) records of `data`, one or more frames back to back.
pub fn unframe(data: &Bytes) -> Result<Vec<(i64, Bytes)>, FrameError> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let prefix = data
            .get(pos..pos + FRAME_PREFIX_BYTES)
            .ok_or(FrameError(pos))?;
        let offset = i64::from_be_bytes(prefix[..8].try_into().map_err(|_| FrameError(pos))?);
        let len = i32::from_be_bytes(prefix[8..].try_into().map_err(|_| FrameError(pos))?);
        let start = pos + FRAME_PREFIX_BYTES;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= data.len())
            .ok_or(FrameError(pos))?;
        records.push((offset, data.slice(start..end)));
        pos = end;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut both = BytesMut::new();
        both.extend_from_slice(&frame(7, b"seven"));
        both.extend_from_slice(&frame(8, b""));
        let records = unframe(&both.freeze()).unwrap();
        assert_eq!(records, vec![(7, Bytes::from("seven")), (8, Bytes::new())]);
    }

    #[test]
    fn truncated_frames_are_errors() {
        let framed = frame(1, b"payload");
        assert!(unframe(&framed.slice(..framed.len() - 1)).is_err());
        assert!(unframe(&framed.slice(..5)).is_err());
    }

    #[test]
    fn group_log_ids_are_per_shard() {
        assert_eq!(group_log_stream(0), u64::MAX);
        assert_eq!(group_log_stream(3), u64::MAX - 3);
        assert!(is_group_log_stream(u64::MAX - 3));
        assert!(!is_group_log_stream(42));
        assert!(sluice_metadata::is_internal_stream(group_log_stream(
            KEYS_PER_KIND as usize - 1
        )));
    }

    #[test]
    fn brokers_of_a_cluster_have_their_own_internal_streams() {
        // Slot 0 keeps a single node's ids.
        assert_eq!(shard_key(0, 3), 3);
        let last = shard_key(sluice_metadata::limits::BROKERS_MAX - 1, 1023);
        assert!(
            (last as u64) < KEYS_PER_KIND,
            "every key fits its kind's range"
        );
        assert_ne!(group_log_stream(shard_key(1, 0)), group_log_stream(0));
        assert!(is_group_log_stream(group_log_stream(last)));
        assert!(is_txn_log_stream(txn_log_stream(last)));
        assert!(is_txn_index_stream(txn_index_stream(last)));
        assert!(txn_index_streams().contains(&txn_index_stream(0)));
        assert!(txn_index_streams().contains(&txn_index_stream(last)));
        assert!(txn_index_streams().all(is_txn_index_stream));
    }
}
