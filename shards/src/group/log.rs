//! The durable form of group state: committed offsets and group deletions, written to the
//! group log of the group's coordinator partition (an internal stream, see
//! `internal_stream.rs`: WAL, then object storage) and replayed at start-up.
//!
//! Format (big-endian), one WAL record holds a batch of entries:
//! `u8 version (0)`, then entries until the end:
//! `u8 kind` (1 commit, 2 offset delete, 3 group delete), `group: u16 len + UTF-8`, then for
//! a commit `topic: u16 len + UTF-8, partition i32, offset i64, leader_epoch i32,
//! metadata: i32 len (-1 null) + UTF-8, commit_timestamp_ms i64`; for an offset delete
//! `topic, partition`; for a group delete nothing more.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::log_codec::{get_committed, get_str, need, put_committed, put_str};

const FORMAT_VERSION: u8 = 0;
const KIND_COMMIT: u8 = 1;
const KIND_OFFSET_DELETE: u8 = 2;
const KIND_GROUP_DELETE: u8 = 3;

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Leader epoch of the committed record, or -1.
    pub leader_epoch: i32,
    /// Client-supplied metadata string.
    pub metadata: Option<String>,
    /// When the commit happened (broker clock, ms).
    pub commit_timestamp_ms: i64,
}

/// One change to a group's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLogEntry {
    /// An offset commit.
    Commit {
        /// Group id.
        group: String,
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
        /// What was committed.
        committed: CommittedOffset,
    },
    /// OffsetDelete of one partition.
    OffsetDelete {
        /// Group id.
        group: String,
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
    /// DeleteGroups or offset expiry of a whole group.
    GroupDelete {
        /// Group id.
        group: String,
    },
}

impl GroupLogEntry {
    /// The group the entry is about.
    pub fn group(&self) -> &str {
        match self {
            GroupLogEntry::Commit { group, .. }
            | GroupLogEntry::OffsetDelete { group, .. }
            | GroupLogEntry::GroupDelete { group } => group,
        }
    }

    /// True when every string of the entry fits the record format.
    pub fn fits(&self) -> bool {
        let topic_len = match self {
            GroupLogEntry::Commit { topic, .. } | GroupLogEntry::OffsetDelete { topic, .. } => {
                topic.len()
            }
            GroupLogEntry::GroupDelete { .. } => 0,
        };
        self.group().len().max(topic_len) <= crate::log_codec::STR_BYTES_MAX
    }
}

/// A group-log record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("group log record is malformed: {0}")]
pub struct GroupLogError(&'static str);

impl From<&'static str> for GroupLogError {
    fn from(reason: &'static str) -> GroupLogError {
        GroupLogError(reason)
    }
}

/// Encodes `entries` as one WAL record payload.
pub fn encode(entries: &[GroupLogEntry]) -> Bytes {
    let mut out = BytesMut::with_capacity(64 * entries.len() + 1);
    out.put_u8(FORMAT_VERSION);
    for entry in entries {
        match entry {
            GroupLogEntry::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                out.put_u8(KIND_COMMIT);
                put_str(&mut out, group);
                put_committed(&mut out, topic, *partition, committed);
            }
            GroupLogEntry::OffsetDelete {
                group,
                topic,
                partition,
            } => {
                out.put_u8(KIND_OFFSET_DELETE);
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.put_i32(*partition);
            }
            GroupLogEntry::GroupDelete { group } => {
                out.put_u8(KIND_GROUP_DELETE);
                put_str(&mut out, group);
            }
        }
    }
    out.freeze()
}

/// Decodes a WAL record payload written by [`encode`].
pub fn decode(mut payload: Bytes) -> Result<Vec<GroupLogEntry>, GroupLogError> {
    if payload.is_empty() || payload.get_u8() != FORMAT_VERSION {
        return Err(GroupLogError("unknown format version"));
    }
    let mut entries = Vec::new();
    while payload.has_remaining() {
        let kind = payload.get_u8();
        let group = get_str(&mut payload)?;
        entries.push(match kind {
            KIND_COMMIT => {
                let (topic, partition, committed) = get_committed(&mut payload)?;
                GroupLogEntry::Commit {
                    group,
                    topic,
                    partition,
                    committed,
                }
            }
            KIND_OFFSET_DELETE => {
                let topic = get_str(&mut payload)?;
                need(&payload, 4)?;
                GroupLogEntry::OffsetDelete {
                    group,
                    topic,
                    partition: payload.get_i32(),
                }
            }
            KIND_GROUP_DELETE => GroupLogEntry::GroupDelete { group },
            _ => return Err(GroupLogError("unknown entry kind")),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncation_is_an_error() {
        let entries = vec![
            GroupLogEntry::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                committed: CommittedOffset {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: Some("meta".into()),
                    commit_timestamp_ms: 7,
                },
            },
            GroupLogEntry::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 4,
                committed: CommittedOffset {
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                    commit_timestamp_ms: 8,
                },
            },
            GroupLogEntry::OffsetDelete {
                group: "g".into(),
                topic: "t".into(),
                partition: 4,
            },
            GroupLogEntry::GroupDelete { group: "h".into() },
        ];
        let encoded = encode(&entries);
        assert_eq!(decode(encoded.clone()).unwrap(), entries);
        for cut in 1..encoded.len() {
            let partial = encoded.slice(..cut);
            if let Ok(decoded) = decode(partial) {
                assert!(decoded.len() < entries.len());
            }
        }
    }
}
