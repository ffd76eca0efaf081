//! The transaction index of a shard's partitions: where each producer's transaction began on
//! a partition and how it ended. Partitions rebuild their open transactions and aborted ranges
//! from their data in the WAL, but data that was uploaded and trimmed is not replayed; this
//! index (an internal stream, `crate::internal_stream::txn_index_stream`, WAL then objects) is
//! what a restart reads instead, with the indexes of the other brokers that led its
//! partitions (`storage/txn_history.rs`).
//!
//! Format (big-endian), one entry per record: `u8 version (0)`, `u8 kind` (1 begin, 2 end),
//! `stream_id u64, producer_id i64, producer_epoch i16, offset i64` (the transaction's first
//! offset for a begin, its marker's for an end), then for an end `coordinator_epoch i32,
//! commit u8`.

use std::cell::Cell;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_net::ErrorCode;
use sluice_wal::{WalPosition, WhenFull};

use crate::storage::shard_wal::ShardWal;
use crate::storage::turnstile::Turnstile;

const FORMAT_VERSION: u8 = 0;
const KIND_BEGIN: u8 = 1;
const KIND_END: u8 = 2;

/// One change to a partition's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnIndexEntry {
    /// A producer's first transactional batch on the partition, at `first_offset`.
    Begin {
        /// The partition's stream.
        stream_id: u64,
        /// The producer.
        producer_id: i64,
        /// Its epoch.
        producer_epoch: i16,
        /// The transaction's first offset here.
        first_offset: i64,
    },
    /// The marker that ended it, at `marker_offset`.
    End {
        /// The partition's stream.
        stream_id: u64,
        /// The producer.
        producer_id: i64,
        /// The marker's producer epoch.
        producer_epoch: i16,
        /// The marker's offset.
        marker_offset: i64,
        /// The coordinator epoch the marker carries.
        coordinator_epoch: i32,
        /// Commit (true) or abort.
        commit: bool,
    },
}

/// A transaction-index record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("transaction index record is malformed")]
pub struct TxnIndexError;

impl TxnIndexEntry {
    /// The partition the entry is about.
    pub fn stream_id(&self) -> u64 {
        match self {
            TxnIndexEntry::Begin { stream_id, .. } | TxnIndexEntry::End { stream_id, .. } => {
                *stream_id
            }
        }
    }

    /// Where in the partition it happened: a begin's first offset, an end's marker offset.
    pub fn offset(&self) -> i64 {
        match self {
            TxnIndexEntry::Begin { first_offset, .. } => *first_offset,
            TxnIndexEntry::End { marker_offset, .. } => *marker_offset,
        }
    }

    fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(40);
        out.put_u8(FORMAT_VERSION);
        match *self {
            TxnIndexEntry::Begin {
                stream_id,
                producer_id,
                producer_epoch,
                first_offset,
            } => {
                out.put_u8(KIND_BEGIN);
                out.put_u64(stream_id);
                out.put_i64(producer_id);
                out.put_i16(producer_epoch);
                out.put_i64(first_offset);
            }
            TxnIndexEntry::End {
                stream_id,
                producer_id,
                producer_epoch,
                marker_offset,
                coordinator_epoch,
                commit,
            } => {
                out.put_u8(KIND_END);
                out.put_u64(stream_id);
                out.put_i64(producer_id);
                out.put_i16(producer_epoch);
                out.put_i64(marker_offset);
                out.put_i32(coordinator_epoch);
                out.put_u8(u8::from(commit));
            }
        }
        out.freeze()
    }

    /// Decodes one entry.
    pub fn decode(mut data: Bytes) -> Result<TxnIndexEntry, TxnIndexError> {
        if data.remaining() < 2 + 8 + 8 + 2 + 8 || data.get_u8() != FORMAT_VERSION {
            return Err(TxnIndexError);
        }
        let kind = data.get_u8();
        let stream_id = data.get_u64();
        let producer_id = data.get_i64();
        let producer_epoch = data.get_i16();
        let offset = data.get_i64();
        match kind {
            KIND_BEGIN => Ok(TxnIndexEntry::Begin {
                stream_id,
                producer_id,
                producer_epoch,
                first_offset: offset,
            }),
            KIND_END if data.remaining() >= 5 => Ok(TxnIndexEntry::End {
                stream_id,
                producer_id,
                producer_epoch,
                marker_offset: offset,
                coordinator_epoch: data.get_i32(),
                commit: data.get_u8() != 0,
            }),
            _ => Err(TxnIndexError),
        }
    }
}

/// Where a shard appends its transaction-index entries.
pub struct TxnIndexLog {
    wal: Rc<ShardWal>,
    stream_id: u64,
    sequence: Cell<u64>,
    /// One append at a time takes its sequence and places its entry in the WAL (appends come
    /// from every partition's order stage): the WAL does not keep waiting appends in order,
    /// and the uploader skips a stream's records from the first one out of order.
    order: Turnstile,
}

impl TxnIndexLog {
    /// The index of one shard, persisted through `wal` as internal stream `stream_id`.
    pub fn new(wal: Rc<ShardWal>, stream_id: u64) -> TxnIndexLog {
        TxnIndexLog {
            wal,
            stream_id,
            sequence: Cell::new(0),
            order: Turnstile::default(),
        }
    }

    /// Appends an entry after the data it is about; durable once its position is. Waits while
    /// the WAL is full, even when no upload can trim it: the entry belongs to data already
    /// appended, which a client retrying it would find there (a duplicate) without the entry.
    pub async fn append(&self, entry: TxnIndexEntry) -> Result<WalPosition, ErrorCode> {
        let _turn = self.order.ticket().turn().await;
        let sequence = self.sequence.get();
        let payload = crate::internal_stream::frame(sequence, &entry.encode());
        let position = self
            .wal
            .append(
                self.stream_id,
                sequence as i64,
                sequence as i64,
                payload,
                WhenFull::Wait,
            )
            .await
            .map_err(|error| {
                tracing::error!(%error, "transaction index append failed");
                ErrorCode::KafkaStorageError
            })?;
        self.sequence.set(sequence + 1);
        Ok(position)
    }

    /// The internal stream it writes.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Continues the sequence after the records found at start-up.
    pub fn resume_sequence(&self, next: u64) {
        self.sequence.set(self.sequence.get().max(next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_wal;

    #[test]
    fn entries_round_trip() {
        for entry in [
            TxnIndexEntry::Begin {
                stream_id: 7,
                producer_id: 9,
                producer_epoch: 2,
                first_offset: 100,
            },
            TxnIndexEntry::End {
                stream_id: 7,
                producer_id: 9,
                producer_epoch: 3,
                marker_offset: 120,
                coordinator_epoch: 0,
                commit: false,
            },
        ] {
            assert_eq!(TxnIndexEntry::decode(entry.encode()).unwrap(), entry);
        }
        assert!(TxnIndexEntry::decode(Bytes::from_static(&[0, 1, 2])).is_err());
    }

    /// Entries appended at once from several partitions' order stages while the WAL's write
    /// window is often full reach the WAL in sequence order (else the uploader would skip the
    /// index from the first one out of order).
    #[test]
    fn concurrent_appends_reach_the_wal_in_sequence_order() {
        test_wal::for_each_seed(|seed, wal| async move {
            let index = Rc::new(TxnIndexLog::new(wal.clone(), 5));
            let partitions = (0..8u64).map(|stream_id| {
                let index = index.clone();
                glommio::spawn_local(async move {
                    for producer_id in 0..16 {
                        let entry = TxnIndexEntry::Begin {
                            stream_id,
                            producer_id,
                            producer_epoch: 0,
                            first_offset: 0,
                        };
                        index.append(entry).await.expect("appended");
                    }
                })
            });
            futures::future::join_all(partitions).await;
            let expected: Vec<i64> = (0..128).collect();
            assert_eq!(
                test_wal::take_first_offsets(&wal).await,
                expected,
                "seed {seed}: WAL order is sequence order"
            );
        });
    }
}
