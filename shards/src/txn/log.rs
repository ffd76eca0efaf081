//! The durable form of transaction state, written to the coordinator shard's transaction log
//! (an internal stream, `crate::internal_stream::txn_log_stream`: WAL, then object storage)
//! and replayed at start-up (Kafka's `__transaction_state`).
//!
//! Every change of a transactional id writes its whole [`TxnMetadata`], so replay keeps the
//! last record of each id. Offsets staged by TxnOffsetCommit are records of their own, kept
//! while the transaction that staged them is open or prepared.
//!
//! Format (big-endian), one WAL record holds a batch of entries: `u8 version (0)`, then
//! entries until the end, each `u8 kind` + `transactional_id: u16 len + UTF-8`, then:
//! - kind 1, metadata: `producer_id i64, last_producer_id i64, producer_epoch i16,
//!   last_producer_epoch i16, timeout_ms i32, state u8, start_timestamp_ms i64,
//!   last_update_timestamp_ms i64, partitions: u32 count × (topic str, partition i32),
//!   groups: u32 count × str`;
//! - kind 2, staged offsets: `producer_id i64, producer_epoch i16, group str,
//!   u32 count × (topic str, partition i32, offset i64, leader_epoch i32,
//!   metadata: i32 len (-1 null) + UTF-8, commit_timestamp_ms i64)`;
//! - kind 3, expired id: nothing more.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::log_codec::{get_committed, get_str, need, put_committed, put_str};

use super::state::{TxnMetadata, TxnState};
use crate::group::log::CommittedOffset;

const FORMAT_VERSION: u8 = 0;
const KIND_METADATA: u8 = 1;
const KIND_OFFSETS: u8 = 2;
const KIND_EXPIRED: u8 = 3;

/// One offset staged by TxnOffsetCommit: (topic, partition, what to commit).
pub type StagedOffset = (String, i32, CommittedOffset);

/// One change to the durable transaction state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnLogEntry {
    /// The whole state of a transactional id after a transition.
    Metadata {
        /// The transactional id.
        transactional_id: String,
        /// Its state.
        metadata: TxnMetadata,
    },
    /// Offsets the open transaction of (producer id, epoch) commits for a group.
    Offsets {
        /// The transactional id.
        transactional_id: String,
        /// Producer id of the transaction.
        producer_id: i64,
        /// Producer epoch of the transaction.
        producer_epoch: i16,
        /// The consumer group.
        group: String,
        /// The offsets.
        offsets: Vec<StagedOffset>,
    },
    /// The transactional id was idle past its expiration and is forgotten.
    Expired {
        /// The transactional id.
        transactional_id: String,
    },
}

impl TxnLogEntry {
    /// The transactional id the entry is about (it routes the entry to its coordinator).
    pub fn transactional_id(&self) -> &str {
        match self {
            TxnLogEntry::Metadata {
                transactional_id, ..
            }
            | TxnLogEntry::Offsets {
                transactional_id, ..
            }
            | TxnLogEntry::Expired { transactional_id } => transactional_id,
        }
    }
}

/// A transaction-log record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("transaction log record is malformed: {0}")]
pub struct TxnLogError(&'static str);

impl From<&'static str> for TxnLogError {
    fn from(reason: &'static str) -> TxnLogError {
        TxnLogError(reason)
    }
}

/// Encodes `entries` as one WAL record payload.
pub fn encode(entries: &[TxnLogEntry]) -> Bytes {
    let mut out = BytesMut::with_capacity(128 * entries.len() + 1);
    out.put_u8(FORMAT_VERSION);
    for entry in entries {
        match entry {
            TxnLogEntry::Metadata {
                transactional_id,
                metadata: m,
            } => {
                out.put_u8(KIND_METADATA);
                put_str(&mut out, transactional_id);
                out.put_i64(m.producer_id);
                out.put_i64(m.last_producer_id);
                out.put_i16(m.producer_epoch);
                out.put_i16(m.last_producer_epoch);
                out.put_i32(m.timeout_ms);
                out.put_u8(m.state.code());
                out.put_i64(m.start_timestamp_ms);
                out.put_i64(m.last_update_timestamp_ms);
                out.put_u32(m.partitions.len() as u32);
                for (topic, partition) in &m.partitions {
                    put_str(&mut out, topic);
                    out.put_i32(*partition);
                }
                out.put_u32(m.groups.len() as u32);
                for group in &m.groups {
                    put_str(&mut out, group);
                }
            }
            TxnLogEntry::Offsets {
                transactional_id,
                producer_id,
                producer_epoch,
                group,
                offsets,
            } => {
                out.put_u8(KIND_OFFSETS);
                put_str(&mut out, transactional_id);
                out.put_i64(*producer_id);
                out.put_i16(*producer_epoch);
                put_str(&mut out, group);
                out.put_u32(offsets.len() as u32);
                for (topic, partition, committed) in offsets {
                    put_committed(&mut out, topic, *partition, committed);
                }
            }
            TxnLogEntry::Expired { transactional_id } => {
                out.put_u8(KIND_EXPIRED);
                put_str(&mut out, transactional_id);
            }
        }
    }
    out.freeze()
}

/// Decodes a WAL record payload written by [`encode`].
pub fn decode(mut payload: Bytes) -> Result<Vec<TxnLogEntry>, TxnLogError> {
    if payload.is_empty() || payload.get_u8() != FORMAT_VERSION {
        return Err(TxnLogError("unknown format version"));
    }
    let mut entries = Vec::new();
    while payload.has_remaining() {
        let kind = payload.get_u8();
        let transactional_id = get_str(&mut payload)?;
        entries.push(match kind {
            KIND_METADATA => TxnLogEntry::Metadata {
                transactional_id,
                metadata: get_metadata(&mut payload)?,
            },
            KIND_OFFSETS => {
                need(&payload, 8 + 2)?;
                let producer_id = payload.get_i64();
                let producer_epoch = payload.get_i16();
                let group = get_str(&mut payload)?;
                need(&payload, 4)?;
                let count = payload.get_u32();
                let mut offsets = Vec::new();
                for _ in 0..count {
                    offsets.push(get_committed(&mut payload)?);
                }
                TxnLogEntry::Offsets {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    group,
                    offsets,
                }
            }
            KIND_EXPIRED => TxnLogEntry::Expired { transactional_id },
            _ => return Err(TxnLogError("unknown entry kind")),
        });
    }
    Ok(entries)
}

fn get_metadata(payload: &mut Bytes) -> Result<TxnMetadata, TxnLogError> {
    need(payload, 8 + 8 + 2 + 2 + 4 + 1 + 8 + 8 + 4)?;
    let producer_id = payload.get_i64();
    let last_producer_id = payload.get_i64();
    let producer_epoch = payload.get_i16();
    let last_producer_epoch = payload.get_i16();
    let timeout_ms = payload.get_i32();
    let state = TxnState::from_code(payload.get_u8()).ok_or(TxnLogError("unknown state"))?;
    let start_timestamp_ms = payload.get_i64();
    let last_update_timestamp_ms = payload.get_i64();
    let mut partitions = std::collections::BTreeSet::new();
    for _ in 0..payload.get_u32() {
        let topic = get_str(payload)?;
        need(payload, 4)?;
        partitions.insert((topic, payload.get_i32()));
    }
    need(payload, 4)?;
    let mut groups = std::collections::BTreeSet::new();
    for _ in 0..payload.get_u32() {
        groups.insert(get_str(payload)?);
    }
    Ok(TxnMetadata {
        producer_id,
        last_producer_id,
        producer_epoch,
        last_producer_epoch,
        timeout_ms,
        state,
        partitions,
        groups,
        start_timestamp_ms,
        last_update_timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncation_is_an_error() {
        let metadata = TxnMetadata {
            producer_id: 5,
            last_producer_id: -1,
            producer_epoch: 3,
            last_producer_epoch: 2,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [("a".to_string(), 0), ("b".to_string(), 7)].into(),
            groups: ["g".to_string()].into(),
            start_timestamp_ms: 100,
            last_update_timestamp_ms: 200,
        };
        let entries = vec![
            TxnLogEntry::Metadata {
                transactional_id: "tx".into(),
                metadata,
            },
            TxnLogEntry::Offsets {
                transactional_id: "tx".into(),
                producer_id: 5,
                producer_epoch: 3,
                group: "g".into(),
                offsets: vec![
                    (
                        "a".into(),
                        0,
                        CommittedOffset {
                            offset: 42,
                            leader_epoch: -1,
                            metadata: Some("m".into()),
                            commit_timestamp_ms: 9,
                        },
                    ),
                    (
                        "b".into(),
                        7,
                        CommittedOffset {
                            offset: 1,
                            leader_epoch: 0,
                            metadata: None,
                            commit_timestamp_ms: 10,
                        },
                    ),
                ],
            },
            TxnLogEntry::Expired {
                transactional_id: "old".into(),
            },
        ];
        let encoded = encode(&entries);
        assert_eq!(decode(encoded.clone()).unwrap(), entries);
        for cut in 1..encoded.len() {
            if let Ok(decoded) = decode(encoded.slice(..cut)) {
                assert!(decoded.len() < entries.len());
            }
        }
    }
}
