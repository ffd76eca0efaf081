//! Transaction markers: the control batch that ends a producer's transaction on a partition
//! (Kafka's `EndTransactionMarker`). Its one record has key = version i16 + type i16 (0 abort,
//! 1 commit) and value = version i16 + coordinator epoch i32.

use bytes::{Buf, Bytes};
use sluice_net::record_batch::{ControlRecordType, RecordBatchBuilder, decode_records};

/// A marker's record is tiny and uncompressed; anything larger is not a marker we wrote.
const MARKER_BYTES_MAX: usize = 1024;

/// The outcome of a transaction, as its markers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The producer whose transaction ends.
    pub producer_id: i64,
    /// The producer epoch the marker is written with (bumped when the coordinator fences).
    pub producer_epoch: i16,
    /// Commit (true) or abort.
    pub commit: bool,
    /// The coordinator's epoch, fencing markers of an older coordinator.
    pub coordinator_epoch: i32,
}

impl Marker {
    /// The control batch for this marker, stamped `timestamp_ms`.
    pub fn batch(&self, timestamp_ms: i64) -> Bytes {
        let kind = if self.commit {
            ControlRecordType::Commit
        } else {
            ControlRecordType::Abort
        };
        RecordBatchBuilder::end_txn_marker(
            self.producer_id,
            self.producer_epoch,
            kind,
            self.coordinator_epoch,
            timestamp_ms,
        )
    }
}

/// Reads (commit, coordinator epoch) from a control batch; `None` when it is not a
/// transaction marker (an unknown control type, or malformed).
pub fn parse(batch: &Bytes) -> Option<(bool, i32)> {
    let records = decode_records(batch, MARKER_BYTES_MAX).ok()?;
    let record = records.first()?;
    let mut key = record.key.clone()?;
    let mut value = record.value.clone()?;
    if key.remaining() < 4 || value.remaining() < 6 {
        return None;
    }
    let _version = key.get_i16();
    let commit = match key.get_i16() {
        0 => false,
        1 => true,
        _ => return None,
    };
    let _version = value.get_i16();
    Some((commit, value.get_i32()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        for commit in [false, true] {
            let marker = Marker {
                producer_id: 9,
                producer_epoch: 3,
                commit,
                coordinator_epoch: 7,
            };
            let batch = marker.batch(1234);
            let header = sluice_net::record_batch::RecordBatchHeader::validate(&batch).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id(), header.producer_epoch()), (9, 3));
            assert_eq!(parse(&batch), Some((commit, 7)));
        }
    }
}
